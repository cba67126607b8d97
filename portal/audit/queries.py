"""Searching the audit log: the filters every door offers (actor, action, object, app, door,
outcome, time, words), newest first, a page at a time by keyset so the millionth entry costs
what the first does."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.models import AuditEntry
from portal.refusals import BadFilter, BadRequest

PAGE_SIZE = 50
MAX_LIMIT = 500
MAX_WORDS = 8
_RELATIVE = re.compile(r"^(\d{1,5})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_WORD = re.compile(r"[0-9a-z]+")


class AuditQueryError(BadRequest):
    """A filter the audit log cannot answer; the message says what to change (400)."""


@dataclass(frozen=True)
class AuditFilter:
    """What to look for; empty fields do not filter. ``actor`` is a username, an email or an
    actor label (``system:monitor``); ``target`` is the object (an agent's slug, a run...)."""

    actor: str = ""
    action: str = ""
    target: str = ""
    app: str = ""
    door: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None
    q: str = ""

    def as_params(self) -> dict[str, str]:
        """The filter as query parameters, to link to it or page on from it."""
        params = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            if value:
                params[item.name] = value
        return params


FILTER_NAMES = (
    "actor",
    "action",
    "target",
    "object",
    "app",
    "door",
    "outcome",
    "since",
    "until",
    "q",
)


def parse_filter(params: Mapping[str, str]) -> AuditFilter:
    """An ``AuditFilter`` from query parameters (a page, the API) or options (a command), all
    text. ``object`` is another name for ``target``. Raises ``AuditQueryError``/``BadFilter``."""

    def text(name: str, limit: int = 200) -> str:
        value = (params.get(name) or "").strip()
        if len(value) > limit:
            raise AuditQueryError(f"{name} is {len(value)} characters long; at most {limit}.")
        return value

    door = text("door")
    if door and door not in AuditEntry.Door.values:
        raise BadFilter("door", door, "door", AuditEntry.Door.values)
    outcome = text("outcome")
    if outcome and outcome not in AuditEntry.Outcome.values:
        raise BadFilter("outcome", outcome, "outcome", AuditEntry.Outcome.values)
    since = parse_moment(text("since", 40), "since")
    until = parse_moment(text("until", 40), "until")
    if since and until and since >= until:
        raise AuditQueryError("since is not before until: swap them.")
    return AuditFilter(
        actor=text("actor"),
        action=text("action", 100),
        target=text("target") or text("object"),
        app=text("app", 40),
        door=door,
        outcome=outcome,
        since=since,
        until=until,
        q=text("q"),
    )


def parse_period(params: Mapping[str, str]) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until`` alone (the compliance report's period)."""
    found = []
    for name in ("since", "until"):
        value = (params.get(name) or "").strip()
        if len(value) > 40:
            raise AuditQueryError(f"{name} is {len(value)} characters long; at most 40.")
        found.append(parse_moment(value, name))
    since, until = found
    if since and until and since >= until:
        raise AuditQueryError("since is not before until: swap them.")
    return since, until


def parse_moment(value: str, name: str) -> datetime | None:
    """``2026-12-04``, ``2026-12-04T09:30``, ``2026-12-04T09:30:00+01:00`` (local time when no
    offset is given) or a time ago: ``30m``, ``24h``, ``7d``."""
    if not value:
        return None
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative.group(1)), _UNITS[relative.group(2)]
        if amount > 36_500 and unit == "days" or amount > 99_999:
            raise AuditQueryError(f"{name}={value} reaches back too far; at most 36500d.")
        return timezone.now() - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(value)
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        moment.astimezone(UTC)  # an offset that pushes it out of range fails here
    except (ValueError, OverflowError):
        raise AuditQueryError(
            f"{name}={value!r} is not a time: give a date (2026-12-04), a date and time "
            f"(2026-12-04T09:30, local time unless an offset follows) or a time ago (30m, 24h, 7d)."
        ) from None
    if not 2000 <= moment.year <= 9000:
        raise AuditQueryError(f"{name}={value} is out of range: the year must be 2000 to 9000.")
    return moment


def _words_query(text: str) -> str:
    """Every word (letters and digits) as a prefix, all required: the generated ``search``
    column splits actions and slugs at their dots and dashes the same way."""
    words = _WORD.findall(text.lower())[:MAX_WORDS]
    return " & ".join(f"{word[:60]}:*" for word in words)


def filtered(wanted: AuditFilter) -> QuerySet[AuditEntry]:
    entries = AuditEntry.objects.all()
    if wanted.actor:
        # A user (by username or email) is their entries through every door; anything else is
        # an actor's label: "system:monitor", or just "monitor", "command:root".
        user_ids = list(
            get_user_model()
            .objects.filter(Q(username__iexact=wanted.actor) | Q(email__iexact=wanted.actor))
            .values_list("pk", flat=True)[:20]
        )
        if user_ids:
            entries = entries.filter(user_id__in=user_ids)
        else:
            labels = [wanted.actor, f"system:{wanted.actor}", f"command:{wanted.actor}"]
            entries = entries.filter(actor__in=labels)
    if wanted.action:
        entries = entries.filter(action=wanted.action)
    if wanted.target:
        entries = entries.filter(target=wanted.target)
    if wanted.app:
        entries = entries.filter(app=wanted.app)
    if wanted.door:
        entries = entries.filter(door=wanted.door)
    if wanted.outcome:
        entries = entries.filter(outcome=wanted.outcome)
    if wanted.since:
        entries = entries.filter(at__gte=wanted.since)
    if wanted.until:
        entries = entries.filter(at__lt=wanted.until)
    if wanted.q:
        words = _words_query(wanted.q)
        if words:
            entries = entries.extra(  # noqa: S610 (the column the model does not declare)
                where=["portal_auditentry.search @@ to_tsquery('simple', %s)"], params=[words]
            )
    return entries.order_by("-at", "-id")


def apps_in_use() -> list[str]:
    """The apps that have entries, by a skip scan of the (app, at) index: a handful of index
    probes rather than reading a million rows for DISTINCT."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH RECURSIVE apps AS (
                SELECT min(app) AS app FROM portal_auditentry
                UNION ALL
                SELECT (SELECT min(app) FROM portal_auditentry WHERE app > apps.app)
                FROM apps WHERE apps.app IS NOT NULL
            )
            SELECT app FROM apps WHERE app IS NOT NULL AND app <> '' LIMIT 200
            """
        )
        return [row[0] for row in cursor.fetchall()]


# --- keyset paging -------------------------------------------------------------------------------


def encode_cursor(entry: AuditEntry) -> str:
    raw = f"{entry.at.astimezone(UTC).isoformat()}|{entry.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, pk = raw.split("|")
        at = datetime.fromisoformat(stamp)
        if timezone.is_naive(at):
            raise ValueError(stamp)
        return at, int(pk)
    except (ValueError, UnicodeDecodeError, OverflowError, OSError):
        raise AuditQueryError(
            "cursor is not one this log gave out; start again from the first page."
        ) from None


def parse_limit(value: str | None, default: int = PAGE_SIZE) -> int:
    if value in (None, ""):
        return default
    if not value.isdecimal() or not 1 <= int(value) <= MAX_LIMIT:
        raise AuditQueryError(f"limit={value[:20]!r} must be a whole number from 1 to {MAX_LIMIT}.")
    return int(value)


@dataclass
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: str  # empty on the last page


RECENT_WINDOW = 20_000


def search(wanted: AuditFilter, *, cursor: str = "", limit: int = PAGE_SIZE) -> AuditPage:
    """One page of entries, newest first, after ``cursor`` (from the previous page)."""
    after = decode_cursor(cursor)
    older = Q(at__lt=after[0]) | Q(at=after[0], pk__lt=after[1]) if after is not None else Q()
    entries = filtered(wanted).select_related("user").filter(older)
    rows = None
    if wanted.q and (words := _words_query(wanted.q)):
        # Common words match much of the log: looked for among the newest entries first (an
        # index walk that stops early, fenced by its LIMIT so the planner cannot turn it into a
        # scan of every match), and in the whole log only when those hold too few.
        recent = filtered(replace(wanted, q="")).filter(older)
        recent = recent.extra(
            select={"words": "portal_auditentry.search"}
        ).values_list(  # noqa: S610
            "pk", "at", "words"
        )[:RECENT_WINDOW]
        inner, params = recent.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT pk FROM ({inner}) recent WHERE recent.words @@ to_tsquery('simple', %s)"  # noqa: S608
                " ORDER BY at DESC, pk DESC LIMIT %s",
                [*params, words, limit + 1],
            )
            ids = [row[0] for row in cursor.fetchall()]
        if len(ids) > limit:
            rows = list(entries.filter(pk__in=ids))
    if rows is None:
        rows = list(entries[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, encode_cursor(rows[-1]) if more and rows else "")


def iterate(wanted: AuditFilter, *, chunk: int = 2000) -> Iterator[AuditEntry]:
    """Every matching entry, newest first, a chunk at a time (for exports of any size)."""
    cursor = ""
    while True:
        page = search(wanted, cursor=cursor, limit=chunk)
        yield from page.entries
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def entry_dict(entry: AuditEntry) -> dict:
    """One entry as every door writes it (API, JSON lines, ``--json``)."""
    return {
        "id": entry.pk,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "user": entry.user.get_username() if entry.user_id and entry.user else None,
        "door": entry.door,
        "app": entry.app,
        "action": entry.action,
        "target": entry.target,
        "source": entry.source,
        "outcome": entry.outcome,
        "detail": entry.detail,
    }
