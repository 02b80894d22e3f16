"""Terminal output helpers: aligned fields and QR codes."""

from __future__ import annotations

import io
import sys
import unicodedata
from collections.abc import Sequence

import segno

__all__ = ["display_width", "print_fields", "print_qr"]


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def print_fields(fields: Sequence[tuple[str, str]]) -> None:
    """Print ``label  value`` lines with the values lined up."""
    width = max((display_width(label) for label, _ in fields), default=0)
    for label, value in fields:
        pad = " " * (width - display_width(label))
        print(f"  {label}{pad}  {value}")


def print_qr(text: str) -> None:
    """Print ``text`` as a QR code made of block characters, for a phone to read."""
    buffer = io.StringIO()
    segno.make(text, error="m").terminal(out=buffer, compact=True, border=2)
    sys.stdout.write(buffer.getvalue())
    print(f"  (QR code of {text})")
