"""Agents' log lines in the database: agentd's JSON lines parsed, stored fast, and searched.

The collector (``observability.collector``) feeds batches in (``observability.logs.ingest``); the
Logs page, the API and ``manage.py logs`` ask the questions below. Every question is answered
from indexes with keyset pagination (newest first, ``(ts, id)`` descending): no OFFSET and no
COUNT, so the millionth line costs what the first does.

- :func:`parse` turns one runtime line into the values of a :class:`~observability.models.LogEntry`;
- :func:`ingest` / :func:`write_rows` store many with one COPY (both in ``logs.ingest``);
- :func:`search` pages through lines, :func:`after` answers lines stored after an id (a live
  tail resuming), :func:`export` yields them as text for a download;
- :func:`purge` deletes old lines in batches (retention).

Bad input (an unknown level, a time that is not one, a malformed page cursor) raises
:class:`LogQueryError`, whose message says what was wrong and what to write instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from agents.models import Agent
from observability.logs.ingest import (  # the log store's whole API, going in and coming out
    LEVEL_NAMES,
    LEVELS_BY_NAME,
    ParsedLine,
    entries_for,
    ingest,
    parse,
    parse_timestamp,
    write_rows,
)
from observability.models import Level, LogEntry
from portal.refusals import BadRequest

__all__ = [
    "LEVEL_NAMES", "LogPage", "LogQueryError", "ParsedLine", "after", "check_text",
    "decode_cursor", "encode_cursor", "entries_for", "export", "format_line", "ingest",
    "like_pattern", "parse", "parse_level", "parse_time", "parse_timestamp", "purge",
    "resolve_agent", "search", "write_rows",
]  # fmt: skip

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
TAIL_LIMIT = 500
EXPORT_MAX_LINES = 200_000
EXPORT_PAGE = 2000
PURGE_BATCH = 10_000
TEXT_MAX_CHARS = 200
_DURATION = re.compile(r"^(\d+)\s*(s|m|min|h|d|w)$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}
_CURSOR = re.compile(r"^(-?\d{1,20})_(\d{1,19})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class LogQueryError(BadRequest, ValueError):
    """A question about logs that cannot be answered as asked; the message says what to change. A
    ``BadRequest`` (400) at every door; still the ``ValueError`` it always was."""


# --- asking ------------------------------------------------------------------------------------
#
# How each question reaches its rows in time whatever the data looks like (benchmarks/bench_logs.py
# prints the figures and the plans). Left to itself PostgreSQL often walks the (agent, ts) index
# newest first and filters, hoping to meet ``limit`` matches soon: fast when matches are common,
# but a walk over every line of the agent when a level and a text, each common, rarely come
# together. So:
#
# - a level without text: one index range per level at or above it (the (agent, level, ts)
#   index), each stopping after ``limit`` lines, merged: at most ``limit`` x 5 rows read, exact;
# - a text: first the newest WINDOW lines in scope, filtered (common matches end here); if they
#   hold fewer than ``limit`` matches the text is rare, and the question is asked again with the
#   index order defeated, so that PostgreSQL finds the rows through the trigram indexes (the
#   partial one on warning-and-above lines keeps "at least warning + text" small) and sorts the
#   few it finds.

WINDOW = 20_000
_TABLE = LogEntry._meta.db_table
_COLUMNS = "id, agent_id, replica, ts, level, event, message, fields"
_NEWEST_FIRST = "ORDER BY ts DESC, id DESC"
# The same order as an expression no index provides: the planner must find the rows another way.
_NEWEST_FIRST_UNINDEXED = "ORDER BY ts + interval '0 s' DESC, id DESC"
# Text the trigram indexes can look up: three letters or digits in a row.
_TRIGRAM = re.compile(r"[^\W_]{3}")


@dataclass
class LogPage:
    """One page of lines, newest first, and the cursor of the page of older lines (None when
    there is none)."""

    entries: list[LogEntry]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


@dataclass
class _Question:
    """A checked question as SQL: ``scope`` (agent, time window, page position) says which lines
    are looked at, :meth:`filters` (level, text) which of them answer."""

    scope: list[str] = field(default_factory=list)
    scope_params: list[Any] = field(default_factory=list)
    agent_id: int | None = None
    level: int | None = None
    pattern: str | None = None

    def narrow(self, condition: str, *params: Any) -> None:
        self.scope.append(condition)
        self.scope_params.extend(params)

    def filters(self) -> tuple[list[str], list[Any]]:
        conditions: list[str] = []
        params: list[Any] = []
        if self.level is not None:
            # A checked Level number in the SQL itself, so that PostgreSQL can prove that the
            # partial index of warning-and-above lines applies.
            conditions.append(f"level >= {int(self.level)}")
        if self.pattern is not None:
            conditions.append("message ILIKE %s")
            params.append(self.pattern)
        return conditions, params

    def everything(self) -> tuple[list[str], list[Any]]:
        conditions, params = self.filters()
        return self.scope + conditions, self.scope_params + params


def _select(conditions: list[str], params: list[Any], order: str, limit: int):
    where = " AND ".join(conditions) or "TRUE"
    return f"SELECT {_COLUMNS} FROM {_TABLE} WHERE {where} {order} LIMIT %s", [*params, limit]


def search(
    *,
    agent: Agent | str | None = None,
    level: Level | int | str | None = None,
    text: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    before: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> LogPage:
    """Lines newest first: of one agent (an Agent or its slug), at or above ``level``,
    containing ``text`` (any case; ``%`` and ``_`` are plain characters; at least three
    letters or digits in a row), written at or after ``since`` and before ``until``
    (datetimes, ISO 8601, or an age ago such as "15m", "2h", "7d"), older than the cursor
    ``before`` (a page's ``next_cursor``). At most ``limit`` lines."""
    limit = _check_limit(limit, MAX_LIMIT)
    question = _question(agent=agent, level=level, text=text, since=since, until=until)
    if before is not None:
        ts, entry_id = decode_cursor(before)
        # ``ts <= x`` bounds the index range; the OR sorts out the rows at exactly ``x``.
        question.narrow("ts <= %s AND (ts < %s OR id < %s)", ts, ts, entry_id)
    if question.pattern is not None:
        entries = _text_search(question, limit + 1)
    elif question.level is not None and question.agent_id is not None:
        entries = _level_search(question, limit + 1)
    else:
        entries = _rows(*_select(*question.everything(), _NEWEST_FIRST, limit + 1))
    more = len(entries) > limit
    entries = _with_agents(entries[:limit])
    return LogPage(entries, encode_cursor(entries[-1]) if more else None)


def _level_search(question: _Question, limit: int) -> list[LogEntry]:
    """Each level at or above the one asked for, newest first, merged."""
    minimum = question.level or Level.DEBUG
    branches, params = [], []
    for level in (value for value in Level.values if value >= minimum):
        sql, branch_params = _select(
            [*question.scope, f"level = {int(level)}"], question.scope_params, _NEWEST_FIRST, limit
        )
        branches.append(f"({sql})")
        params.extend(branch_params)
    merged = " UNION ALL ".join(branches)
    return _rows(f"SELECT * FROM ({merged}) AS by_level {_NEWEST_FIRST} LIMIT %s", [*params, limit])


def _text_search(question: _Question, limit: int) -> list[LogEntry]:
    """The newest WINDOW lines in scope first; when they hold too few matches, the trigram
    indexes."""
    filters, filter_params = question.filters()
    recent, recent_params = _select(question.scope, question.scope_params, _NEWEST_FIRST, WINDOW)
    found = _rows(
        f"SELECT * FROM ({recent}) AS recent WHERE {' AND '.join(filters)} "
        f"{_NEWEST_FIRST} LIMIT %s",
        [*recent_params, *filter_params, limit],
    )
    if len(found) >= limit:
        return found
    return _rows(*_select(*question.everything(), _NEWEST_FIRST_UNINDEXED, limit))


def after(
    entry_id: int,
    *,
    agent: Agent | str | None = None,
    level: Level | int | str | None = None,
    text: str | None = None,
    limit: int = TAIL_LIMIT,
) -> list[LogEntry]:
    """Lines stored after the line ``entry_id``, oldest first (what a live tail missed while
    it was away); at most ``limit``, so call again with the last id while it answers that
    many."""
    if isinstance(entry_id, bool) or not isinstance(entry_id, int) or entry_id < 0:
        raise LogQueryError(
            f"after={entry_id!r} is not a line id; use the id of the last line seen."
        )
    limit = _check_limit(limit, MAX_LIMIT)
    question = _question(agent=agent, level=level, text=text)
    question.narrow("id > %s", entry_id)
    return _with_agents(_rows(*_select(*question.everything(), "ORDER BY id", limit)))


def export(
    *,
    agent: Agent | str | None = None,
    level: Level | int | str | None = None,
    text: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    max_lines: int = EXPORT_MAX_LINES,
) -> Iterator[str]:
    """The lines :func:`search` would find, oldest first (as a log file reads), as text lines
    ending in a newline (see :func:`format_line`); at most ``max_lines``. Read in keyset pages,
    each going on where the last stopped (the whole export is one pass over the lines), so a
    long download holds no transaction open."""
    max_lines = _check_limit(max_lines, EXPORT_MAX_LINES, name="max_lines")
    question = _question(agent=agent, level=level, text=text, since=since, until=until)
    base, base_params = question.everything()
    conditions, params = base, base_params
    sent = 0
    while sent < max_lines:
        size = min(EXPORT_PAGE, max_lines - sent)
        entries = _with_agents(_rows(*_select(conditions, params, "ORDER BY ts, id", size)))
        if not entries:
            return
        for entry in entries:
            yield format_line(entry) + "\n"
        sent += len(entries)
        last = entries[-1]
        conditions = [*base, "ts >= %s AND (ts > %s OR id > %s)"]
        params = [*base_params, last.ts, last.ts, last.id]


def _rows(sql: str, params: list[Any]) -> list[LogEntry]:
    return list(LogEntry.objects.raw(sql, params))


def format_line(entry: LogEntry) -> str:
    """``2026-11-21T10:00:00.123Z  WARNING  wow-cache/0  message  key=value ...``: one line
    per entry, UTC, for terminals, downloads and grep."""
    moment = entry.ts.astimezone(UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    level = Level(entry.level).label.upper() if entry.level in Level.values else str(entry.level)
    slug = entry.agent.slug if entry.agent_id is not None else "?"
    parts = [stamp, f"{level:<7}", f"{slug}/{entry.replica}", entry.message.replace("\n", "\\n")]
    described = " ".join(
        f"{key}={_field_text(value)}" for key, value in (entry.fields or {}).items()
    )
    if entry.event:
        described = f"event={entry.event}" + (f" {described}" if described else "")
    if described:
        parts.append(described)
    return "  ".join(parts)


def lines_about(agent: str, text: str, limit: int = 20) -> list[str]:
    """The agent's newest lines containing ``text`` (a task's id, say), oldest first, as
    :func:`format_line` writes them; for other apps (a workflow step's log excerpt)."""
    return [format_line(entry) for entry in search(agent=agent, text=text, limit=limit).entries][
        ::-1
    ]


def _field_text(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def purge(older_than: datetime | timedelta) -> int:
    """Delete lines written before ``older_than`` (a time, or an age such as 7 days), in
    batches of :data:`PURGE_BATCH` so that neither a long lock nor a huge transaction holds up
    the collector; answers how many were deleted."""
    cutoff = timezone.now() - older_than if isinstance(older_than, timedelta) else older_than
    if not isinstance(cutoff, datetime):
        raise LogQueryError(f"older_than={older_than!r} is neither a time nor an age.")
    table = LogEntry._meta.db_table
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE ts < %s LIMIT %s)",
                [cutoff, PURGE_BATCH],
            )
            batch = cursor.rowcount
        deleted += batch
        if batch < PURGE_BATCH:
            return deleted


# --- validating what was asked --------------------------------------------------------------------


def _question(
    *,
    agent: Agent | str | None = None,
    level: Level | int | str | None = None,
    text: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
) -> _Question:
    """Check every part of a question; LogQueryError names the part that is wrong."""
    question = _Question()
    if agent is not None:
        question.agent_id = resolve_agent(agent).pk
        question.narrow("agent_id = %s", question.agent_id)
    minimum = parse_level(level)
    if minimum is not None and minimum > Level.DEBUG:
        question.level = int(minimum)
    if text is not None and text.strip():
        question.pattern = like_pattern(check_text(text))
    start = parse_time(since, "since")
    end = parse_time(until, "until")
    if start is not None and end is not None and start >= end:
        raise LogQueryError(
            f"since ({start.isoformat()}) is not before until ({end.isoformat()}); swap them or "
            "widen the window."
        )
    if start is not None:
        question.narrow("ts >= %s", start)
    if end is not None:
        question.narrow("ts < %s", end)
    return question


def check_text(text: str) -> str:
    """The text to search for, if the indexes can answer it."""
    if len(text) > TEXT_MAX_CHARS:
        raise LogQueryError(
            f"The text to search for is {len(text)} characters long; use at most {TEXT_MAX_CHARS}."
        )
    if not _TRIGRAM.search(text):
        raise LogQueryError(
            "Search for at least three letters or digits in a row (such as 'KeyError' or "
            f"'dlq'), not {text.strip()!r}: shorter text cannot use the message index and would "
            "read every line."
        )
    return text


def resolve_agent(agent: Agent | str) -> Agent:
    """The agent itself, or the one with this slug."""
    if isinstance(agent, Agent):
        return agent
    if not isinstance(agent, str) or not agent.strip():
        raise LogQueryError(f"agent={agent!r} is not an agent; give its slug, e.g. wow-cache.")
    found = Agent.objects.filter(slug=agent.strip()).first()
    if found is None:
        raise LogQueryError(
            f"There is no agent {agent.strip()!r}; `manage.py agents list` lists the slugs."
        )
    return found


def parse_level(level: Level | int | str | None) -> Level | None:
    """A level from its name (any case; warn, err and fatal too) or number; None for none."""
    if level is None or level == "":
        return None
    if isinstance(level, str):
        number = LEVELS_BY_NAME.get(level.strip().lower())
        if number is None and level.strip().isdecimal():
            number = int(level.strip())
    else:
        number = level if isinstance(level, int) else None
    if number not in Level.values:
        raise LogQueryError(f"Unknown level {level!r}; use one of {LEVEL_NAMES}.")
    return Level(number)


def parse_time(value: datetime | str | None, name: str = "time") -> datetime | None:
    """An aware datetime from a datetime (naive: the portal's time zone), an ISO 8601 text
    (``2026-11-21``, ``2026-11-21T10:00:00Z``) or an age ago (``90s``, ``15m``, ``2h``,
    ``7d``, ``1w``)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value)
    if not isinstance(value, str):
        raise LogQueryError(f"{name}={value!r} is not a time; {_TIME_HINT}")
    text = value.strip()
    duration = _DURATION.match(text)
    if duration:
        amount, unit = int(duration[1]), duration[2].lower()
        try:
            return timezone.now() - timedelta(seconds=amount * _DURATION_UNITS[unit])
        except (OverflowError, ValueError):
            raise LogQueryError(f"{name}={value!r} is too far back; {_TIME_HINT}") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise LogQueryError(f"{name}={value!r} is not a time; {_TIME_HINT}") from None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


_TIME_HINT = "use ISO 8601 (2026-11-21T10:00:00Z) or an age ago such as 15m, 2h or 7d."


def _check_limit(limit: object, maximum: int, name: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise LogQueryError(f"{name}={limit!r} is not between 1 and {maximum}.")
    return limit


def like_pattern(text: str) -> str:
    r"""``%text%`` for ILIKE, with ``\``, ``%`` and ``_`` in ``text`` matching themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def encode_cursor(entry: LogEntry) -> str:
    """The keyset position of ``entry``: microseconds since the epoch and id (exact: no float)."""
    return f"{(entry.ts - _EPOCH) // _MICROSECOND}_{entry.id}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    match = _CURSOR.match(cursor.strip()) if isinstance(cursor, str) else None
    if match is None:
        raise LogQueryError(
            f"before={cursor!r} is not a page cursor; pass the cursor the previous page gave "
            "(`older` in the API), or leave it out for the newest lines."
        )
    try:
        moment = _EPOCH + int(match[1]) * _MICROSECOND
    except OverflowError:
        raise LogQueryError(f"before={cursor!r} points outside any time there can be.") from None
    return moment, int(match[2])


def _with_agents(entries: list[LogEntry]) -> list[LogEntry]:
    """Attach each entry's agent with one query for all of them (at most 14 rows), so
    templates and formatters read ``entry.agent`` without a query per line."""
    wanted = {entry.agent_id for entry in entries}
    agents = Agent.objects.in_bulk(wanted) if wanted else {}
    for entry in entries:
        if entry.agent_id in agents:
            entry.agent = agents[entry.agent_id]
    return entries
