"""The conflict view: both (all) values of a conflicted field; one key picks one."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.markup import escape
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Static

from meshdesk.cases.model import CaseField
from meshdesk.tui.console import translate_bindings
from meshdesk.tui.i18n import N_, Lang, tr
from meshdesk.tui.index import label

__all__ = ["ConflictView", "value_label"]


def value_label(field: str, value: object, lang: Lang) -> str:
    if field in ("category", "urgency", "status"):
        return label(field, value, lang)
    return str(value) if value not in (None, "") else tr("(none)")


class ConflictView(Static, can_focus=True):
    """Shows the first unresolved conflict; 1–9 keep that value, k the shown one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "pick(0)", N_("Keep value 1")),
        Binding("2", "pick(1)", N_("Keep value 2")),
        *(Binding(str(n), f"pick({n - 1})", show=False) for n in range(3, 10)),
        Binding("k", "pick(0)", N_("Keep shown value")),
    ]

    class Chosen(Message):
        def __init__(self, field: str, value: str) -> None:
            super().__init__()
            self.field = field
            self.value = value

    def __init__(self, lang: Lang, *, id: str | None = None) -> None:
        super().__init__(id=id)
        translate_bindings(self)
        self.lang = lang
        self.conflicts: list[dict[str, Any]] = []

    def show_conflicts(self, conflicts: list[dict[str, Any]]) -> None:
        self.conflicts = [c for c in conflicts if not str(c.get("field")).startswith("personal")]
        self.display = bool(self.conflicts)
        if not self.conflicts:
            self.update("")
            return
        first = self.conflicts[0]
        field = str(first["field"])
        try:
            name = CaseField(field).label(self.lang)
        except ValueError:
            name = field
        lines = [
            tr("⚠ Conflict in {field}: these values were written at the same time").format(
                field=name
            )
        ]
        values = [value_label(field, c.get("value"), self.lang) for c in first["candidates"]]
        width = max(cell_len(v) for v in values)
        for n, (cand, value) in enumerate(zip(first["candidates"], values, strict=True), start=1):
            who = f"{cand.get('op')} @ {str(cand.get('node'))[:7]}, {cand.get('at')}"
            lines.append(f"  [b]{n}[/b]  {escape(set_cell_size(value, width))}   — {escape(who)}")
        lines.append(
            tr("Press 1–{n} to keep one value (k keeps the shown one).").format(
                n=len(first["candidates"])
            )
        )
        if len(self.conflicts) > 1:
            lines.append(tr("{n} more conflicts after this one.").format(n=len(self.conflicts) - 1))
        self.update("\n".join(lines))

    def action_pick(self, n: int) -> None:
        if not self.conflicts:
            return
        first = self.conflicts[0]
        candidates = first["candidates"]
        if n < len(candidates):
            value = candidates[n].get("value")
            self.post_message(self.Chosen(str(first["field"]), "" if value is None else str(value)))
