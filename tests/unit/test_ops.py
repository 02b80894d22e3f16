"""The op registry: argument kinds, checked arguments, topics, the registry itself."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from meshdesk.cases.model import Urgency
from meshdesk.errors import CallError, MeshdeskError, UsageError
from meshdesk.ops import (
    OPS,
    Args,
    Kind,
    Param,
    Registry,
    Topic,
    check_args,
    choice,
    date,
    flag,
    integer,
    text,
    texts,
)

ROOT = Path(__file__).resolve().parents[2]


def check(param: Param, value: object, *, error: type[MeshdeskError] = UsageError) -> object:
    """``value`` as ``param`` checks it (absent when ``value`` is the ``...`` marker)."""
    raw = {} if value is ... else {param.name: value}
    return check_args([param], raw, op="test", error=error)[param.name]


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        (text("name"), "山田", "山田"),
        (text("name"), ..., None),
        (text("name"), None, None),
        (text("name"), "", None),
        (text("media", default="synthetic"), ..., "synthetic"),
        (text("media", default="synthetic"), None, "synthetic"),
        (choice("urgency", Urgency), "high", "high"),
        (choice("urgency", Urgency), "", None),
        (choice("field", ["a", "b"]), "b", "b"),
        (integer("age", low=0, high=150), 0, 0),
        (integer("age", low=0, high=150), 150, 150),
        (integer("age"), None, None),
        (flag("audio_only"), ..., False),
        (flag("audio_only"), True, True),
        (flag("audio", default=None), None, None),
        (flag("audio", default=None), False, False),
        (texts("consent"), ..., []),
        (texts("consent"), ["福祉課", "住宅課"], ["福祉課", "住宅課"]),
        (texts("kinds", default=None), None, None),
        (date("birth_date"), "1947-03-01", dt.date(1947, 3, 1)),
        (date("birth_date"), "", None),
    ],
)
def test_good_values_pass_and_missing_ones_take_the_default(
    param: Param, value: object, expected: object
) -> None:
    assert check(param, value) == expected


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        (text("name", required=True), ..., "name is required"),
        (text("name", required=True), "", "name is required"),
        (text("name"), 3, "name must be text"),
        (text("name", max_len=3), "abcd", "name is longer than 3 characters"),
        (choice("urgency", Urgency, required=True), None, "urgency is required"),
        (
            choice("urgency", Urgency),
            "soon",
            "unknown urgency 'soon'; choose one of: immediate, high, normal, low",
        ),
        (choice("urgency", Urgency), 1, "unknown urgency 1; choose one of:"),
        (integer("age"), "72", "age must be a whole number"),
        (integer("age"), 7.5, "age must be a whole number"),
        (integer("age"), True, "age must be a whole number"),
        (integer("age", low=0), -1, "age must be at least 0, not -1"),
        (integer("age", high=150), 151, "age must be at most 150, not 151"),
        (integer("n", required=True), None, "n is required"),
        (flag("accept"), "yes", "accept must be true or false"),
        (flag("accept"), 1, "accept must be true or false"),
        (texts("consent"), "福祉課", "consent must be a list of non-empty texts"),
        (texts("consent"), ["福祉課", ""], "consent must be a list of non-empty texts"),
        (texts("consent"), [1], "consent must be a list of non-empty texts"),
        (texts("kinds", min_items=1, max_items=2), [], "kinds must list 1 to 2 texts"),
        (texts("kinds", max_items=2), ["a", "b", "c"], "kinds must list 0 to 2 texts"),
        (texts("kinds", max_len=2), ["abc"], "kinds holds a text longer than 2 characters"),
        (date("birth_date"), "1.3.1947", "birth_date '1.3.1947' is not a date (YYYY-MM-DD)"),
        (date("birth_date"), 1947, "birth_date must be a date, YYYY-MM-DD"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(param: Param, value: object, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        check(param, value)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_the_error_class_is_the_operations() -> None:
    with pytest.raises(CallError, match=r"^accept must be true or false$"):
        check(flag("accept"), "no", error=CallError)


def test_unknown_keys_are_refused_with_what_the_operation_takes() -> None:
    params = [text("id", required=True), text("text")]
    with pytest.raises(
        UsageError, match=r"^unknown argument 'txt' for note \(it takes: id, text\)$"
    ):
        check_args(params, {"id": "x", "txt": "y"}, op="note", error=UsageError)
    with pytest.raises(
        UsageError, match=r"^unknown argument 'x' for peers \(it takes: no arguments\)$"
    ):
        check_args([], {"x": 1}, op="peers", error=UsageError)


def test_client_input_is_repeated_only_in_part() -> None:
    long = "x" * 10_000
    for param, raw in [
        (choice("urgency", Urgency), {"urgency": long}),
        (date("birth_date"), {"birth_date": long}),
        (text("id"), {long: 1}),
    ]:
        with pytest.raises(UsageError) as refused:
            check_args([param], raw, op="t", error=UsageError)
        assert len(str(refused.value)) < 200
        assert "xxx…" in str(refused.value)
    with pytest.raises(UsageError, match=r"^unknown operation 'xxx") as refused:
        OPS.spec(long)
    assert long not in str(refused.value)


def test_checked_arguments_hold_every_declared_key() -> None:
    args = check_args(
        [text("id", required=True), integer("age"), texts("consent"), flag("urgent")],
        {"id": "0199"},
        op="t",
        error=UsageError,
    )
    assert dict(args) == {"id": "0199", "age": None, "consent": [], "urgent": False}
    assert args.text("id") == "0199"
    assert args.maybe("age", int) is None
    assert args.texts("consent") == []
    assert args.flag("urgent") is False
    # A handler asking for another type than the schema declares is a bug, not user input.
    with pytest.raises(TypeError, match="argument id is str, not int"):
        args.maybe("id", int)
    with pytest.raises(TypeError, match="argument age is missing"):
        args.text("age")


def test_defaults_are_fresh_lists() -> None:
    param = texts("consent")
    first = check(param, ...)
    assert isinstance(first, list)
    first.append("x")
    assert check(param, ...) == []


def test_positional_params_are_required_and_describe_their_values() -> None:
    assert text("id", positional=True).required
    assert choice("status", ["a", "b"], positional=True).required
    assert choice("s", ["a", "b"]).describe() == "one of: a, b"
    assert integer("age", low=0, high=150).describe() == "a whole number from 0 up to 150"
    assert date("d").describe() == "a date, YYYY-MM-DD"
    assert flag("f").kind is Kind.BOOL


# -- topics and registries -------------------------------------------------------------


def _topic(name: str = "t", *ops: str) -> Topic[None]:
    topic = Topic[None](name, "test")
    for op in ops:

        async def handler(_: None, args: Args) -> object:
            return None

        topic.op(op, "help")(handler)
    return topic


def test_names_are_unique_within_and_across_topics() -> None:
    with pytest.raises(ValueError, match="'x' is declared twice"):
        _topic("t", "x", "x")
    with pytest.raises(ValueError, match="'x' is declared by two topics"):
        Registry(_topic("t", "x"), _topic("u", "x"))
    topic = Topic[None]("t", "test")
    with pytest.raises(ValueError, match="'y' names an argument twice"):
        topic.stream("y", "help", text("a"), text("a"))


async def test_unknown_and_unserved_operations() -> None:
    registry = Registry(_topic("t", "a", "b"), _topic("u", "c"))
    assert registry.names() == ["a", "b", "c"]
    assert registry.names("u") == ["c"]
    with pytest.raises(UsageError, match=r"^unknown operation 'd' \(known: a, b, c\)$"):
        registry.spec("d")
    partial = registry.serve(complete=False)
    with pytest.raises(UsageError, match=r"^a is not served here$"):
        await partial.run("a", {})


def test_usage_lines_show_kinds_and_optional_keys() -> None:
    assert OPS.spec("case_note").usage() == "case_note id=text operator=text text=text"
    assert OPS.spec("call_mute").usage() == "call_mute call_id=text [audio=bool] [video=bool]"


# -- the registry of the control socket ------------------------------------------------


def test_every_operation_has_help_and_a_known_error_class() -> None:
    for spec in OPS:
        assert spec.help, spec.name
        assert issubclass(spec.error, MeshdeskError)
        assert spec.topic in ("node", "case", "call", "invite", "notice", "bundle")
    assert {s.error for s in OPS if s.topic == "call"} == {CallError}
    assert {s.error for s in OPS if s.topic != "call"} == {UsageError}
    assert [s.name for s in OPS if s.streams] == ["subscribe"]


def test_every_operation_is_named_in_the_architecture_doc() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [name for name in OPS.names() if f"`{name}`" not in doc]
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"


def test_case_operations_take_an_operator_when_they_write() -> None:
    for spec in OPS.topic("case"):
        names = [p.name for p in spec.params]
        writes = spec.name not in ("case_list", "case_show", "case_counts", "case_history")
        assert ("operator" in names) == writes, spec.name


def _kinds(name: str) -> dict[str, Any]:
    return {p.name: p.kind for p in OPS.spec(name).params}


def test_the_call_operations_keep_their_argument_shapes() -> None:
    assert _kinds("call_start") == {
        "peer": Kind.TEXT,
        "case": Kind.TEXT,
        "audio_only": Kind.BOOL,
        "media": Kind.TEXT,
    }
    assert _kinds("call_mute") == {"call_id": Kind.TEXT, "audio": Kind.BOOL, "video": Kind.BOOL}
    assert _kinds("calls") == {}
