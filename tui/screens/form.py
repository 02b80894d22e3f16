"""Case form: create a case, or show one to edit, note, refer, consent and resolve."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.validation import Integer
from textual.widgets import Button, Input, Label, Select, SelectionList, Static

from meshdesk.cases.model import Category, Status, Urgency
from meshdesk.tui.console import Console, attempt, plain
from meshdesk.tui.i18n import N_, Lang, tr
from meshdesk.tui.index import label
from meshdesk.tui.screens._base import ConsoleScreen
from meshdesk.tui.screens.citizen import invite_citizen
from meshdesk.tui.screens.steward import EraseScreen, HistoryScreen
from meshdesk.tui.widgets.conflict import ConflictView

__all__ = ["CaseFormScreen", "case_details"]

_PERSONAL = (
    ("name", N_("Name (required)")),
    ("furigana", N_("Furigana")),
    ("age", N_("Age")),
    ("phone", N_("Phone")),
    ("shelter", N_("Shelter")),
)


def case_details(case: dict[str, Any], lang: Lang) -> str:
    """The case's fields as aligned lines (labels padded by cells, so Japanese lines up)."""
    from rich.cells import cell_len, set_cell_size

    personal = case.get("personal") or {}
    rows = [
        (tr("Case"), str(case.get("id"))),
        (tr("Urgency"), label("urgency", case.get("urgency"), lang)),
        (tr("Status"), label("status", case.get("status"), lang)),
        (tr("Category"), label("category", case.get("category"), lang)),
        (tr("Department"), str(case.get("department") or "-")),
        (tr("Site"), str(case.get("site") or "-")),
        (tr("Opened"), str(case.get("created_at") or "-")),
        (tr("Consent"), ", ".join(case.get("consent") or []) or "-"),
    ]
    if case.get("readable"):
        rows += [
            (tr(title.removesuffix(" (required)")), str(personal.get(key) or "-"))
            for key, title in _PERSONAL
        ]
    else:
        rows.append((tr("Personal data"), tr("sealed: this node is not in the case's audience")))
    width = max(cell_len(t) for t, _ in rows) + 1
    return "\n".join(f"{set_cell_size(t, width)} {v}" for t, v in rows)


class CaseFormScreen(ConsoleScreen):
    """``case_id`` None: a new case; else that case, live."""

    TITLE = N_("Case")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", N_("Save")),
        Binding("ctrl+o", "invite_citizen", N_("Invite citizen (QR)")),
        Binding("ctrl+e", "erase", N_("Erase personal data…")),
        Binding("ctrl+t", "history", N_("History")),
        Binding("escape", "close", N_("Back")),
    ]

    def __init__(self, console: Console, case_id: str | None) -> None:
        super().__init__(console)
        self.case_id = case_id
        self.case: dict[str, Any] | None = None

    def body(self) -> ComposeResult:
        lang = self.desk.lang
        depts = [(d, d) for d in self.desk.departments()]
        with VerticalScroll(id="form"):
            if self.case_id is None:
                yield Label(tr("New case"), classes="panel-title")
                for key, title in _PERSONAL:
                    validators = [Integer(0, 150)] if key == "age" else []
                    yield Input(placeholder=tr(title), id=f"f-{key}", validators=validators)
                yield Select(
                    [(c.label(lang), str(c)) for c in Category],
                    prompt=tr("Category"),
                    id="f-category",
                )
                yield Select(
                    [(u.label(lang), str(u)) for u in Urgency],
                    prompt=tr("Urgency"),
                    id="f-urgency",
                    value="normal",
                )
                yield Label(tr("Consent to share with departments"))
                yield SelectionList[str](*depts, id="f-consent")
                yield Input(placeholder=tr("Summary (first note)"), id="f-summary")
                yield Button(tr("Save (Ctrl+S)"), id="save", variant="primary")
            else:
                yield ConflictView(lang, id="conflicts")
                yield Static(id="details")
                yield Label(tr("Notes"), classes="panel-title")
                yield Static(id="notes")
                yield Input(placeholder=tr("Add a note and press Enter"), id="note")
                with Horizontal(classes="row"):
                    yield Select(
                        [(s.label(lang), str(s)) for s in Status], prompt=tr("Status"), id="status"
                    )
                    yield Select(depts, prompt=tr("Refer to department"), id="refer-dept")
                    yield Input(placeholder=tr("Reason"), id="refer-reason")
                    yield Button(tr("Refer"), id="refer")
                with Horizontal(classes="row"):
                    yield Select(
                        [(u.label(lang), str(u)) for u in Urgency],
                        prompt=tr("Urgency"),
                        id="e-urgency",
                    )
                    yield Select(
                        [(c.label(lang), str(c)) for c in Category],
                        prompt=tr("Category"),
                        id="e-category",
                    )
                    yield Select(depts, prompt=tr("Consent for department"), id="consent-dept")
                    yield Button(tr("Add consent"), id="consent")

    def on_mount(self) -> None:
        super().on_mount()
        if self.case_id is None:
            self.title = tr("New case")
            self.query_one("#f-name", Input).focus()
        else:
            self.load()

    def update_view(self, part: str | None) -> None:
        if part == "cases" and self.case_id is not None and self.is_mounted:
            changed = self.desk.changed_cases
            if self.case is not None and (changed is None or self.case_id in changed):
                self.load()

    @work(exclusive=True, group="form-load")
    async def load(self) -> None:
        assert self.case_id is not None
        case = await attempt(self, self.desk.api.case("show", {"id": self.case_id}))
        if case is not None:
            self.show_case(case)

    def show_case(self, case: dict[str, Any]) -> None:
        self.case = case
        lang = self.desk.lang
        self.title = tr("Case") + " " + case["id"][-8:]
        details = case_details(case, lang)
        if case.get("erasure"):
            details += "\n" + tr("Erased: {line}").format(line=case["erasure"]["line"])
        self.query_one("#details", Static).update(plain(details))
        sealed = tr("(sealed)")
        notes = [
            f"{n['at']}  {n['by']}: {n['text'] if not n['sealed'] else sealed}"
            for n in case.get("notes", [])
        ]
        notes += [
            tr("→ referred to {d} ({state}) by {by}: {reason}").format(
                d=r["department"], state=r["state"], by=r["by"], reason=r["reason"] or "-"
            )
            for r in case.get("referrals", [])
        ]
        self.query_one("#notes", Static).update(plain("\n".join(notes) or tr("No notes yet.")))
        view = self.query_one(ConflictView)
        view.show_conflicts(list(case.get("conflicts", [])))
        if view.conflicts:
            view.focus()

    # -- actions ---------------------------------------------------------------------

    def _value(self, selector: str) -> str:
        return self.query_one(selector, Input).value.strip()

    def new_case_args(self) -> dict[str, Any] | None:
        """The form as `new` arguments; None (with a notification) when it is not valid."""
        problems = []
        if not self._value("#f-name"):
            problems.append(tr("a name is required"))
        age_text = self._value("#f-age")
        if age_text and not (age_text.isdigit() and 0 <= int(age_text) <= 150):
            problems.append(tr("age must be a whole number from 0 to 150"))
        category = self.query_one("#f-category", Select).value
        urgency = self.query_one("#f-urgency", Select).value
        if not isinstance(category, str):
            problems.append(tr("choose a category"))
        if not isinstance(urgency, str):
            problems.append(tr("choose an urgency"))
        if problems:
            self.notify(
                "; ".join(problems), severity="error", title=tr("Check the form"), markup=False
            )
            return None
        args: dict[str, Any] = {
            "operator": self.desk.operator,
            "category": category,
            "urgency": urgency,
            "consent": list(self.query_one("#f-consent", SelectionList).selected),
        }
        for key, _ in _PERSONAL:
            text = self._value(f"#f-{key}")
            if text:
                args[key] = int(text) if key == "age" else text
        summary = self._value("#f-summary")
        if summary:
            args["summary"] = summary
        return args

    def action_save(self) -> None:
        if self.case_id is None:
            args = self.new_case_args()
            if args is not None:
                self.create(args)
        elif self._value("#note"):
            self.edit("note", {"text": self._value("#note")})

    def action_close(self) -> None:
        self.app.pop_screen()

    @work(exclusive=True, group="form-action")
    async def action_invite_citizen(self) -> None:
        """Invite the citizen's own phone into this case's consultation (a QR code)."""
        if self.case_id is None:
            self.notify(tr("Save the case first."), severity="warning", markup=False)
            return
        await invite_citizen(self, self.desk, case_id=self.case_id, call_id=None)

    @work(exclusive=True, group="form-action")
    async def action_erase(self) -> None:
        """Erase the citizen's data on every node, after the confirmation screen."""
        if self.case_id is None or self.case is None:
            return
        if self.case.get("erasure"):
            self.notify(str(self.case["erasure"]["line"]), markup=False)
            return
        name = self.case.get("name")
        reason = await self.app.push_screen_wait(EraseScreen(self.case_id, name))
        if reason:
            self.edit("erase", {"reason": reason})

    @work(exclusive=True, group="form-action")
    async def action_history(self) -> None:
        """Who did what to this case and when, from its signed events."""
        if self.case_id is None:
            return
        trail = await attempt(self, self.desk.api.case("history", {"id": self.case_id}))
        if isinstance(trail, dict):
            self.app.push_screen(HistoryScreen(self.case_id, list(trail["events"])))

    @work(exclusive=True, group="form-action")
    async def create(self, args: dict[str, Any]) -> None:
        case = await attempt(self, self.desk.api.case("new", args))
        if case is not None:
            self.desk.publish("cases")
            self.notify(tr("Case {id} created").format(id=case["id"][24:]), markup=False)
            self.app.pop_screen()

    @work(exclusive=True, group="form-action")
    async def edit(self, op: str, args: dict[str, Any]) -> None:
        assert self.case_id is not None
        full = {"id": self.case_id, "operator": self.desk.operator, **args}
        case = await attempt(self, self.desk.api.case(op, full))
        if case is not None:
            self.desk.window.replace([case])
            if op == "note":
                self.query_one("#note", Input).value = ""
            self.show_case(case)
            self.notify(tr("Saved"), markup=False)

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Input.Submitted, "#note")
    def _note_submitted(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#refer")
    def _refer(self) -> None:
        dept = self.query_one("#refer-dept", Select).value
        if not isinstance(dept, str):
            self.notify(tr("choose a department to refer to"), severity="error", markup=False)
            return
        self.edit("refer", {"department": dept, "reason": self._value("#refer-reason")})

    @on(Button.Pressed, "#consent")
    def _consent(self) -> None:
        dept = self.query_one("#consent-dept", Select).value
        if not isinstance(dept, str):
            self.notify(tr("choose a department"), severity="error", markup=False)
            return
        self.edit("consent", {"department": dept})

    @on(Select.Changed, "#e-urgency")
    @on(Select.Changed, "#e-category")
    def _field(self, event: Select.Changed) -> None:
        field = str(event.select.id).removeprefix("e-")
        if isinstance(event.value, str) and self.case and event.value != self.case.get(field):
            self.edit("set", {"field": field, "value": event.value})

    @on(Select.Changed, "#status")
    def _status(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and self.case and event.value != self.case.get("status"):
            self.edit("status", {"status": event.value})

    @on(ConflictView.Chosen)
    def _resolve(self, message: ConflictView.Chosen) -> None:
        self.edit("settle", {"field": message.field, "value": message.value})
