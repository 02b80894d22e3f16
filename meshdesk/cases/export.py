"""Exports of cases for Excel, partners and scripts (``meshdesk export``).

Formats: ``csv`` (UTF-8 with a byte-order mark, so Excel reads Japanese; Japanese
headers), ``xlsx`` (openpyxl in write-only mode: Japanese headers, column widths, the
header row frozen), ``json`` (JSON lines, English keys) and ``hxl`` (CSV with the
Japanese header row, then the HXL hashtag row; mapping below and in
docs/ARCHITECTURE.md). Cases come page by page from the case index (never all in
memory), so an HQ of a million cases exports in constant memory with progress.
Personal fields only when asked, only where this node can read the case; the
caller (the case book) checks the node's role and records the export as an event.

HXL mapping (hxlstandard.org, 1.1): ``#meta+id`` case id, ``#date+reported`` opened,
``#date+updated`` last change, ``#loc+name`` site (a shelter or office: HXL's
``#adm1`` is a prefecture, which a city's cases share), ``#sector`` category,
``#severity`` urgency, ``#status`` status, ``#org+assigned`` department,
``#org+consent`` consented departments, ``#activity+referral`` referrals;
with personal fields ``#beneficiary+name``, ``#beneficiary+name+phonetic``,
``#beneficiary+age``, ``#contact+phone``, ``#loc+address``, ``#loc+shelter``,
``#beneficiary+num`` household size, ``#meta+lang``, ``#beneficiary+needs``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from meshdesk.cases.hlc import hlc_wall_ms
from meshdesk.cases.model import Category, Personal, Status, Urgency
from meshdesk.errors import UsageError
from meshdesk.store import CaseQuery
from meshdesk.store.records import CaseSummary

__all__ = [
    "COLUMNS",
    "FORMATS",
    "OPEN_COLUMNS",
    "PAGE",
    "Column",
    "ExportWriter",
    "open_writer",
    "row_of",
    "rows_of",
]

FORMATS = ("csv", "xlsx", "json", "hxl")
#: Cases read per page of the index while exporting.
PAGE = 1000


@dataclass(frozen=True, slots=True)
class Column:
    """One exported field: its key (JSON), Japanese header, HXL hashtag, width (XLSX)."""

    key: str
    ja: str
    hxl: str
    width: int
    personal: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("id", "相談ID", "#meta+id", 38),
    Column("created_at", "受付日時", "#date+reported", 21),
    Column("updated_at", "最終更新", "#date+updated", 21),
    Column("site", "拠点", "#loc+name", 18),
    Column("category", "分類", "#sector", 16),
    Column("urgency", "緊急度", "#severity", 8),
    Column("status", "状況", "#status", 10),
    Column("department", "担当課", "#org+assigned", 14),
    Column("consent", "同意した共有先", "#org+consent", 22),
    Column("referrals", "紹介先", "#activity+referral", 24),
    Column("name", "氏名", "#beneficiary+name", 16, True),
    Column("furigana", "ふりがな", "#beneficiary+name+phonetic", 18, True),
    Column("age", "年齢", "#beneficiary+age", 6, True),
    Column("birth_date", "生年月日", "#beneficiary+date+birth", 12, True),
    Column("phone", "電話", "#contact+phone", 15, True),
    Column("address", "住所", "#loc+address", 30, True),
    Column("shelter", "避難先", "#loc+shelter", 18, True),
    Column("household_size", "世帯人数", "#beneficiary+num", 8, True),
    Column("language", "言語", "#meta+lang", 8, True),
    Column("needs", "配慮事項", "#beneficiary+needs", 30, True),
)


#: The open columns (nothing personal): what may leave a city for the prefecture.
OPEN_COLUMNS = tuple(c for c in COLUMNS if not c.personal)


def _iso(hlc: int) -> str:
    """The wall time of ``hlc`` to the second in UTC, as ``2026-12-06T07:45:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hlc_wall_ms(hlc) // 1000))


def _label(enum_type: Any, value: str, lang: str) -> str:
    try:
        return str(enum_type(value).label(lang))
    except ValueError:
        return value


def row_of(
    summary: CaseSummary, personal: Personal | None, columns: Sequence[Column], lang: str
) -> dict[str, Any]:
    """One case as an export row: labels in ``lang`` ("en": the vocabulary's values,
    for JSON), personal fields from ``personal`` (None: left empty)."""
    category, urgency, status = summary.category, summary.urgency, summary.status
    if lang == "en":
        sep = ", "
    else:
        sep = "、"
        category = category and _label(Category, category, lang)
        urgency = urgency and _label(Urgency, urgency, lang)
        status = status and _label(Status, status, lang)
    values: dict[str, Any] = {
        "id": summary.case_id,
        "created_at": _iso(summary.created_hlc) if summary.opened else None,
        "updated_at": _iso(summary.updated_hlc),
        "site": summary.site or None,
        "category": category or None,
        "urgency": urgency or None,
        "status": status or None,
        "department": summary.department or None,
        "consent": sep.join(summary.consent) or None,
        "referrals": sep.join([f"{d} ({s})" for d, s in summary.referrals]) or None,
    }
    if personal is None and columns is OPEN_COLUMNS:
        return values  # already these columns, in their order
    if personal is not None:
        for column in columns:
            if column.personal:
                value = getattr(personal, column.key)
                values[column.key] = value.isoformat() if hasattr(value, "isoformat") else value
    get = values.get
    return {c.key: get(c.key) for c in columns}


class ExportWriter(Protocol):
    """Where rows go; ``close`` finishes the file (a failed export leaves none)."""

    def write(self, row: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class _CsvWriter:
    def __init__(self, file: io.TextIOBase, columns: Sequence[Column], *, hxl: bool) -> None:
        self._file = file
        self._csv = csv.writer(file)
        self._keys = [c.key for c in columns]
        self._csv.writerow([c.ja for c in columns])
        if hxl:
            self._csv.writerow([c.hxl for c in columns])

    def write(self, row: dict[str, Any]) -> None:
        self._csv.writerow(["" if row[k] is None else row[k] for k in self._keys])

    def close(self) -> None:
        self._file.close()


class _JsonWriter:
    def __init__(self, file: io.TextIOBase) -> None:
        self._file = file

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._file.close()


class _XlsxWriter:
    """openpyxl's write-only workbook: rows stream to a temporary file, not memory."""

    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.styles import Font
        from openpyxl.utils import get_column_letter

        self._path = path
        self._book = Workbook(write_only=True)
        self._sheet = self._book.create_sheet("相談記録")
        for i, column in enumerate(columns, start=1):
            self._sheet.column_dimensions[get_column_letter(i)].width = column.width
        self._sheet.freeze_panes = "A2"
        bold = Font(bold=True)
        header = []
        for column in columns:
            cell = WriteOnlyCell(self._sheet, value=column.ja)
            cell.font = bold
            header.append(cell)
        self._sheet.append(header)
        self._keys = [c.key for c in columns]

    def write(self, row: dict[str, Any]) -> None:
        self._sheet.append([row[k] for k in self._keys])

    def close(self) -> None:
        self._book.save(self._path)


@contextlib.contextmanager
def open_writer(path: Path, fmt: str, columns: Sequence[Column]) -> Iterator[ExportWriter]:
    """A writer of ``fmt`` whose file appears at ``path`` only when the block ends
    without an error (written beside it, owner-only, then renamed into place).

    Raises:
        UsageError: an unknown format, or the file cannot be written there.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: folder {folder} does not exist")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:
        raise UsageError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    temp = Path(name)
    writer: ExportWriter
    try:
        if fmt == "xlsx":
            os.close(fd)
            writer = _XlsxWriter(temp, columns)
        elif fmt == "json":
            writer = _JsonWriter(open(fd, "w", encoding="utf-8", newline="\n"))  # noqa: SIM115
        else:
            text = open(fd, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115
            writer = _CsvWriter(text, columns, hxl=fmt == "hxl")
        yield writer
        writer.close()
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


Reader = Callable[[CaseSummary], Awaitable[Personal | None]]


async def rows_of(
    page: Callable[[CaseQuery], Awaitable[Any]],
    query: CaseQuery,
    personal: Reader | None,
    columns: Sequence[Column],
    lang: str,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """Rows of every case the query selects, page after page of the index.

    An async generator of ``(row, readable)``; ``personal`` opens a case's details
    (None: no personal fields).
    """
    after: str | None = None
    done = 0
    while True:
        found = await page(_page_query(query, after))
        if found is None or not found.rows:
            return
        for summary in found.rows:
            details = None if personal is None else await personal(summary)
            yield row_of(summary, details, columns, lang), details is not None
        done += len(found.rows)
        if progress is not None:
            progress(done)
        if not found.more_after:
            return
        after = found.rows[-1].case_id


def _page_query(query: CaseQuery, after: str | None) -> CaseQuery:
    return dataclasses.replace(query, after=after, before=None, limit=PAGE)
