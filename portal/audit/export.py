"""Exports of a search, whole: CSV (for a spreadsheet) and JSON lines (for a script), written a
chunk at a time so a million entries never sit in memory at once."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from portal.audit.queries import AuditFilter, entry_dict, iterate

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
COLUMNS = ["id", "at", "actor", "user", "door", "app", "action", "target", "source", "outcome",
           "detail"]  # fmt: skip
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """A spreadsheet must not run what someone typed: text that starts like a formula is kept
    as text (a leading apostrophe, as OWASP advises for CSV)."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def csv_row(values: dict) -> dict:
    return {key: safe_cell(value) for key, value in values.items()}


def export_lines(wanted: AuditFilter, fmt: str, *, chunk: int = 2000) -> Iterator[str]:
    """The export of every entry ``wanted`` finds, newest first, as text pieces."""
    if fmt == "jsonl":
        for entry in iterate(wanted, chunk=chunk):
            yield json.dumps(entry_dict(entry), cls=DjangoJSONEncoder) + "\n"
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS)
    writer.writeheader()
    for count, entry in enumerate(iterate(wanted, chunk=chunk), start=1):
        row = entry_dict(entry)
        row["detail"] = json.dumps(row["detail"], cls=DjangoJSONEncoder, sort_keys=True)
        writer.writerow(csv_row(row))
        if count % 500 == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def export_filename(fmt: str) -> str:
    return f"audit-{timezone.now():%Y%m%d-%H%M%S}.{fmt}"
