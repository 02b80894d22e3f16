"""Every client of the op registry uses it: the console's fake node and the CLI.

(That the node serves every operation is checked on a real node in
tests/integration/test_node.py.)
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from meshdesk.cli import build_parser
from meshdesk.cli._cases import case_payload
from meshdesk.errors import CallError, MeshdeskError, UsageError
from meshdesk.ops import CASE_OPS, OPS
from meshdesk.tui.api import call_op, case_op
from meshdesk.tui.fake import FakeNode

NEW = {"operator": "tanaka", "category": "medical", "urgency": "high", "name": "山田 花子"}


def test_every_operation_is_served_by_the_fake_or_marked_not_offered() -> None:
    fake = FakeNode()
    offered = set(fake.handlers)
    streaming = {s.name for s in OPS if s.streams}  # the fake streams through events()
    assert offered <= set(OPS.names()), "the fake serves names the registry does not know"
    assert set(OPS.names()) >= FakeNode.NOT_OFFERED, "a stale NOT_OFFERED entry"
    assert not offered & FakeNode.NOT_OFFERED
    unaccounted = set(OPS.names()) - offered - FakeNode.NOT_OFFERED - streaming
    assert not unaccounted, f"the fake neither serves nor declines {sorted(unaccounted)}"


async def test_the_fake_declines_what_it_does_not_offer() -> None:
    with pytest.raises(UsageError, match=r"^the fake node does not offer digest$"):
        await FakeNode().request("digest", {})


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("case_new", {**NEW, "urgency": "soon"}),
        ("case_new", {**NEW, "age": "72"}),
        ("case_new", {**NEW, "consent": "welfare"}),
        ("case_new", {k: v for k, v in NEW.items() if k != "name"}),
        ("case_new", {**NEW, "nmae": "x"}),
        ("case_note", {"id": "0199", "operator": "x"}),
        ("case_status", {"id": "0199", "operator": "x", "status": "flying"}),
        ("case_list", {"operator": "x"}),
        ("call_start", {"peer": "x", "audio_only": "yes"}),
        ("call_mute", {"call_id": "c", "audio": 1}),
        ("call_hangup", {}),
        ("status", {"verbose": True}),
        ("case", {"op": "list", "args": {}}),
    ],
)
async def test_the_fake_refuses_bad_requests_as_the_registry_does(
    op: str, args: dict[str, Any]
) -> None:
    with pytest.raises(MeshdeskError) as expected:
        OPS.check(op, args)
    fake = FakeNode()
    with pytest.raises(MeshdeskError) as got:
        await fake.request(op, args)
    assert (type(got.value), str(got.value)) == (type(expected.value), str(expected.value))
    assert not fake.cases


async def test_the_console_names_operations_as_the_registry_does() -> None:
    fake = FakeNode()
    case = await fake.case("new", NEW)
    assert case_op("new") == "case_new"
    assert await fake.request("case_show", {"id": case["id"]}) == case
    assert await fake.call("calls", {}) == []
    with pytest.raises(UsageError, match=r"^unknown call operation 'case_new' "):
        call_op("case_new")
    with pytest.raises(UsageError, match=r"^unknown call operation 'dial' "):
        await fake.call("dial", {})
    with pytest.raises(CallError, match=r"^no peer 'nobody' to call$"):
        await fake.call("call_start", {"peer": "nobody"})


# -- the CLI -----------------------------------------------------------------------------


def _case_actions() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    case = commands.choices["case"]
    actions = next(a for a in case._actions if isinstance(a, argparse._SubParsersAction))
    return dict(actions.choices)


def test_meshdesk_case_has_one_action_per_case_operation() -> None:
    actions = _case_actions()
    assert list(actions) == [s.name.removeprefix("case_") for s in CASE_OPS]
    for spec in CASE_OPS:
        options = {
            o for a in actions[spec.name.removeprefix("case_")]._actions for o in a.option_strings
        }
        for param in spec.params:
            if not param.positional:
                assert "--" + param.name.replace("_", "-") in options, (spec.name, param.name)


def test_the_cli_sends_only_the_operations_arguments() -> None:
    parser = build_parser()
    argv = ["case", "new", "--category", "medical", "--urgency", "high", "--name", "山田"]
    args = parser.parse_args(
        [*argv, "--age", "72", "--consent", "福祉課", "--birth-date", "1950-01-02"]
    )
    payload = case_payload(args.case_op, args, {"MESHDESK_OPERATOR": "佐藤"})
    assert payload == {
        "operator": "佐藤",
        "category": "medical",
        "urgency": "high",
        "name": "山田",
        "age": 72,
        "birth_date": "1950-01-02",
        "consent": ["福祉課"],
    }
    OPS.check("case_new", payload)  # what the node or the store will accept
    listed = parser.parse_args(["case", "list", "--operator", "x", "--urgency", "high"])
    assert case_payload(listed.case_op, listed, {}) == {"urgency": "high"}
    status = parser.parse_args(["case", "status", "0199abcd", "in_progress", "--operator", "x"])
    assert case_payload(status.case_op, status, {}) == {
        "id": "0199abcd",
        "operator": "x",
        "status": "in_progress",
    }
