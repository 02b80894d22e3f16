"""SQL helpers of the store: statements over many rows.

The store's write transactions run on a thread of their own while the event loop
thread decodes and verifies what arrives (``Store._in_thread``). SQLite releases the
GIL while it steps a statement; taking it back waits, while the loop thread is busy,
up to the interpreter's switch interval. ``executemany`` steps each row and takes the
GIL back each time, so a sync commit of a few hundred rows could take seconds; a
multi-row ``VALUES`` statement is one step for up to :data:`ROWS_PER_STATEMENT` rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

#: Most ids an ``IN (...)`` list holds in one statement.
CHUNK = 500
#: Most rows one multi-row ``VALUES`` statement inserts.
ROWS_PER_STATEMENT = 500


def _variable_limit() -> int:
    """Most SQL variables one statement may hold in this SQLite (999 before 3.32)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        return db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


VARIABLES = _variable_limit()


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def insert_rows(
    db: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = ""
) -> None:
    """``{head} VALUES (…), (…) {tail}`` over ``rows``, in as few statements as the
    variable limit allows. Rows are inserted in order, each seeing the ones before it
    (triggers included), as with ``executemany``.

    Args:
        head: ``INSERT [OR …] INTO table (columns)``.
        rows: Rows of equal width.
        tail: What follows the values, e.g. ``ON CONFLICT … DO UPDATE …``.
    """
    if not rows:
        return
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        raise ValueError(f"rows of unequal width for {head!r}")
    per = max(1, min(ROWS_PER_STATEMENT, VARIABLES // width))
    one = "(" + ", ".join("?" * width) + ")"
    for part in chunks(rows, per):
        values = ", ".join([one] * len(part))
        db.execute(f"{head} VALUES {values}{tail}", [v for row in part for v in row])
