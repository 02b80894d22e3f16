"""The connection banner: shown while the node cannot be reached."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

__all__ = ["Banner"]


class Banner(Static):
    DEFAULT_CSS = """
    Banner { display: none; height: 1; background: $error; color: $text; text-style: bold;
             padding: 0 1; }
    Banner.-shown { display: block; }
    """

    def show(self, text: str) -> None:
        self.update(Text(text))
        self.add_class("-shown")

    def hide(self) -> None:
        self.remove_class("-shown")

    @property
    def shown(self) -> bool:
        return self.has_class("-shown")
