"""Agents' log lines going in: agentd's JSON lines parsed into ``LogEntry`` values and stored
with one COPY. The collector (``observability.collector``) calls :func:`parse` and
:func:`write_rows` for its batches; :func:`ingest` does both for one agent.

Parsing never refuses a line: one that is not JSON (a traceback, a crash message) is kept whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from django.db import connection, transaction
from django.utils import timezone

from agents.models import Agent
from agents.runtimes import LogLine
from observability.models import Level, LogEntry

# A line longer than this is cut: one runaway line must not bloat the trigram index.
MESSAGE_MAX_CHARS = 32_000
# agentd's keys that have columns of their own (slug and replica are known from the runtime).
OWN_KEYS = frozenset({"ts", "level", "slug", "replica", "event", "message"})
EVENT_MAX_CHARS = cast(int, LogEntry._meta.get_field("event").max_length)
LEVEL_NAMES = ", ".join(str(level.label) for level in Level)
# Level names as agentd and people write them (the questions read them too).
LEVELS_BY_NAME = {level.label: int(level) for level in Level} | {
    "warn": int(Level.WARNING),
    "err": int(Level.ERROR),
    "fatal": int(Level.CRITICAL),
}
_INFO = int(Level.INFO)


# --- parsing -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ParsedLine:
    """The values of one LogEntry, less its agent and id. (Not frozen: a frozen dataclass is
    slower to build, and the collector builds thousands a second.)"""

    replica: int
    ts: datetime
    level: int
    event: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)

    def fields_json(self) -> str:
        return _dump_fields(self.fields)


def parse(line: LogLine, now: datetime | None = None) -> ParsedLine:
    """One line as agentd wrote it (a JSON object with ts, level, event, message and extra keys)
    turned into LogEntry values: the level name as a :class:`Level`, the extra keys in
    ``fields``. A line that is not a JSON object (a traceback, a crash message) is kept whole
    as an info message. The time is agentd's own, else the runtime's, else ``now``."""
    text = line.text
    record = _json_object(text)
    if record is None:
        when = parse_timestamp(line.ts) or now or timezone.now()
        return ParsedLine(line.replica, when, _INFO, "", _clean(text), {})
    extra = {key: value for key, value in record.items() if key not in OWN_KEYS}
    level = _level_number(record.get("level"))
    if level is None:
        level = _INFO
        if record.get("level") is not None:
            extra["level"] = record["level"]  # kept, so an odd level is not silently lost
    event = record.get("event")
    message = record.get("message")
    return ParsedLine(
        line.replica,
        parse_timestamp(record.get("ts")) or parse_timestamp(line.ts) or now or timezone.now(),
        level,
        "" if event is None else _clean(str(event))[:EVENT_MAX_CHARS],
        _clean(message if isinstance(message, str) else _message_of(record, text)),
        extra,
    )


def _level_number(name: object) -> int | None:
    if not isinstance(name, str):
        return None
    return LEVELS_BY_NAME.get(name) or LEVELS_BY_NAME.get(name.strip().lower())


def _json_object(text: str) -> dict[str, Any] | None:
    if text[:1] != "{" and not text.lstrip().startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _message_of(record: dict[str, Any], text: str) -> str:
    """A JSON line without a string message: its message as text, else the whole line."""
    message = record.get("message")
    if message is not None:
        return json.dumps(message, default=str)
    return text


def parse_timestamp(value: object) -> datetime | None:
    """An ISO 8601 time (agentd writes ``2026-11-21T10:00:00.123Z``); naive means UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL; and one huge line is cut rather than indexed whole."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if len(text) > MESSAGE_MAX_CHARS:
        text = text[:MESSAGE_MAX_CHARS] + f"… [cut, {len(text)} characters]"
    return text


def _dump_fields(fields: dict[str, Any]) -> str:
    """JSON that PostgreSQL's jsonb accepts: no NaN or infinities, no NUL characters."""
    try:
        dumped = json.dumps(fields, default=str, ensure_ascii=False, allow_nan=False)
    except ValueError:
        dumped = json.dumps(_finite(fields), default=str, ensure_ascii=False)
    return dumped.replace("\\u0000", "\\ufffd")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# --- storing -----------------------------------------------------------------------------------


def ingest(agent_id: int, lines: Iterable[LogLine]) -> int:
    """Store ``lines`` of one agent with one COPY, in one transaction; answers how many."""
    rows = [(agent_id, parse(line)) for line in lines]
    with transaction.atomic():
        return len(write_rows(rows))


def write_rows(rows: Sequence[tuple[int, ParsedLine]]) -> list[int]:
    """COPY ``(agent_id, parsed line)`` pairs into the log table, in the caller's transaction;
    answers their ids, in order.

    The ids are drawn from the table's sequence first (one round trip), so the caller knows
    them without reading the rows back (the live tail renders them at once) and a single
    writer's ids grow in the order its lines were stored."""
    if not rows:
        return []
    table = LogEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, len(rows)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        columns = "id, agent_id, replica, ts, level, event, message, fields"
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for entry_id, (agent_id, row) in zip(ids, rows, strict=True):
                copy.write_row(
                    (
                        entry_id,
                        agent_id,
                        row.replica,
                        row.ts,
                        row.level,
                        row.event,
                        row.message,
                        row.fields_json(),
                    )
                )
    return ids


def entries_for(
    rows: Sequence[tuple[int, ParsedLine]], ids: Sequence[int], agents: Mapping[int, Agent]
) -> list[LogEntry]:
    """LogEntry objects for rows just written (without reading them back), their agents
    attached from ``agents`` (id → Agent)."""
    entries = []
    for entry_id, (agent_id, row) in zip(ids, rows, strict=True):
        entry = LogEntry(
            id=entry_id,
            agent_id=agent_id,
            replica=row.replica,
            ts=row.ts,
            level=row.level,
            event=row.event,
            message=row.message,
            fields=row.fields,
        )
        if agent_id in agents:
            entry.agent = agents[agent_id]
        entries.append(entry)
    return entries
