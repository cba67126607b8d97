"""Reading a dead-letter queue: newest first by keyset pages, one entry whole, the groups by
error fingerprint, and every entry of a selection for export.

Pages are keyset pages on the stream id (``before``: older than this id; ``after``: newer), so
any page of a queue of any length costs one range read. Groups come from the count hash agentd
and the redrive scripts keep exact (``contract.dead_letter_groups``); :func:`recount` rebuilds
it by reading the whole queue, for letters written before agentd kept it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from agents.agentd import contract
from observability.queues.catalog import QueueRef, QueueRefused

PAGE_DEFAULT = 50
PAGE_MAX = 500
SCAN_CHUNK = 1000
# A filtered page stops reading after this many letters, and says where it stopped.
FILTER_SCAN_BUDGET = 20_000
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|auth|credential|private[_-]?key|session|cookie",
    re.IGNORECASE,
)
MASK = "••••••"
# Fields agentd adds when it dead-letters a task; the rest are the task's own.
LETTER_FIELDS = {
    contract.DLQ_ERROR,
    contract.DLQ_FAILURES,
    contract.DLQ_ORIGINAL_ID,
    contract.DLQ_ATTEMPTS,
    contract.DLQ_FIRST_FAILED_AT,
    contract.DLQ_LAST_FAILED_AT,
    contract.DLQ_REPLICA,
    contract.DLQ_FINGERPRINT,
}


def check_id(value: str, what: str = "message id") -> str:
    """A stream id (``1733300000000-0``) or a refusal that shows the form."""
    value = (value or "").strip()
    if not STREAM_ID.match(value):
        raise QueueRefused(
            f"{value[:60]!r} is not a {what}: ids look like 1733300000000-0 (milliseconds, a "
            f"dash, a sequence number), as the dead-letter list shows them.",
            "invalid",
        )
    return value


@dataclass
class DeadLetter:
    """One dead letter as people read it."""

    id: str
    fields: dict[str, str]
    payload: Any = None
    payload_text: str = ""
    payload_error: str = ""
    attempts: list[dict] = field(default_factory=list)

    @classmethod
    def parse(cls, entry_id: str, fields: dict[str, str]) -> DeadLetter:
        letter = cls(id=entry_id, fields=fields)
        letter.payload_text = fields.get(contract.FIELD_PAYLOAD, "")
        if letter.payload_text:
            try:
                letter.payload = json.loads(letter.payload_text)
            except ValueError as exc:
                letter.payload_error = f"not valid JSON: {exc}"
        else:
            # A task without a payload field: its own fields are its input.
            letter.payload = {k: v for k, v in fields.items() if k not in LETTER_FIELDS}
            letter.payload_text = json.dumps(letter.payload)
        try:
            attempts = json.loads(fields.get(contract.DLQ_ATTEMPTS) or "[]")
            letter.attempts = [a for a in attempts if isinstance(a, dict)]
        except ValueError:
            letter.attempts = []
        if not letter.attempts and fields.get(contract.DLQ_ERROR):
            letter.attempts = [{"error": fields[contract.DLQ_ERROR]}]
        return letter

    @property
    def attempt_rows(self) -> list[dict]:
        """The attempts with their time as a moment (agentd writes epoch milliseconds)."""
        return [
            {**attempt, "when": _moment(str(attempt["at"])) if attempt.get("at") else None}
            for attempt in self.attempts
        ]

    @property
    def original_id(self) -> str:
        return self.fields.get(contract.DLQ_ORIGINAL_ID, "")

    @property
    def error(self) -> str:
        return self.fields.get(contract.DLQ_ERROR, "")

    @property
    def failures(self) -> int:
        return _int(self.fields.get(contract.DLQ_FAILURES)) or len(self.attempts)

    @property
    def redrive_count(self) -> int:
        return _int(self.fields.get(contract.FIELD_REDRIVES))

    @property
    def producer(self) -> str:
        return self.fields.get(contract.FIELD_PRODUCER, "")

    @property
    def customer(self) -> str:
        return self.fields.get(contract.FIELD_CUSTOMER, "")

    @property
    def replica(self) -> str:
        return self.fields.get(contract.DLQ_REPLICA, "")

    @property
    def fingerprint(self) -> str:
        return (
            self.fields.get(contract.DLQ_FINGERPRINT) or contract.error_fingerprint(self.error)[0]
        )

    @property
    def dead_lettered_at(self) -> datetime:
        return _moment(self.id.split("-")[0])

    @property
    def first_failed_at(self) -> datetime | None:
        value = self.fields.get(contract.DLQ_FIRST_FAILED_AT)
        return _moment(value) if value else None

    @property
    def last_failed_at(self) -> datetime:
        value = self.fields.get(contract.DLQ_LAST_FAILED_AT)
        return _moment(value) if value else self.dead_lettered_at

    def masked(self, show_secrets: bool) -> DeadLetter:
        """A copy whose payload fields with secret-looking names are masked (for Viewers)."""
        if show_secrets or self.payload_error:
            return self
        masked = mask(self.payload)
        if masked == self.payload:
            return self
        return DeadLetter(
            id=self.id,
            fields=self.fields,
            payload=masked,
            payload_text=json.dumps(masked),
            attempts=self.attempts,
        )

    def as_json(self) -> dict[str, Any]:
        """The API's shape of a dead letter."""
        return {
            "message_id": self.id,
            "original_id": self.original_id or None,
            "payload": self.payload if not self.payload_error else self.payload_text,
            "payload_error": self.payload_error or None,
            "error": self.error,
            "fingerprint": self.fingerprint,
            "retry_count": self.failures,
            "redrive_count": self.redrive_count,
            "attempts": self.attempts,
            "producer": self.producer or None,
            "customer": self.customer or None,
            "replica": self.replica or None,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
            "timestamp": self.dead_lettered_at,
        }


def mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: MASK if isinstance(key, str) and SECRET_NAME.search(key) else mask(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask(item) for item in value]
    return value


def _int(value: object) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _moment(millis: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, tz=UTC)


# --- pages --------------------------------------------------------------------------------------


@dataclass
class Page:
    letters: list[DeadLetter]
    total: int
    newer: str | None  # ``after`` for the page before (newer letters), None on the first
    older: str | None  # ``before`` for the next page (older letters), None on the last
    scanned_to: str | None = None  # a filtered page stopped reading here (budget)


def page(
    client: redis.Redis,
    ref: QueueRef,
    *,
    before: str | None = None,
    after: str | None = None,
    last: bool = False,
    limit: int = PAGE_DEFAULT,
    fingerprint: str = "",
) -> Page:
    """One page of dead letters, newest first: the newest, those ``before`` an id, those
    ``after`` an id (the page above), or the ``last`` (oldest) page; ``fingerprint`` keeps
    one error group."""
    if before and after:
        raise QueueRefused("Ask for letters before an id or after one, not both.", "invalid")
    limit = max(1, min(PAGE_MAX, limit))
    key = ref.dead_letters
    total = client.xlen(key)
    if fingerprint:
        return _filtered(
            client, ref, before=before, limit=limit, fingerprint=fingerprint, total=total
        )
    if after:
        rows = client.xrange(key, min=f"({check_id(after)}", count=limit + 1)
        more_newer = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        older = rows[-1][0] if rows and _exists_before(client, key, rows[-1][0]) else None
        return Page(_parse(rows), total, rows[0][0] if more_newer else None, older)
    if last:
        rows = list(reversed(client.xrange(key, count=limit)))
        newer = rows[0][0] if rows and _exists_after(client, key, rows[0][0]) else None
        return Page(_parse(rows), total, newer, None)
    top = f"({check_id(before)}" if before else "+"
    rows = client.xrevrange(key, max=top, count=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    newer = rows[0][0] if before and rows and _exists_after(client, key, rows[0][0]) else None
    return Page(_parse(rows), total, newer, rows[-1][0] if more else None)


# Newest first from ``top``: the letters of one group (and those without a fingerprint field,
# from an older agentd, which Python then checks), read inside Redis so that a rare group deep
# in a large queue costs one call, not every letter shipped to Python. ARGV: top, fingerprint,
# how many to find, how many to read at most, chunk.
_FILTER = """
local top, fp, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
local budget, chunk = tonumber(ARGV[4]), tonumber(ARGV[5])
local found, scanned, last = {}, 0, ''
while #found < want and scanned < budget do
  local rows = redis.call('XREVRANGE', KEYS[1], top, '-', 'COUNT', chunk)
  if #rows == 0 then last = '' break end
  for _, e in ipairs(rows) do
    last = e[1]
    local f, has, mine = e[2], false, false
    for i = 1, #f, 2 do
      if f[i] == 'fingerprint' then has = true mine = f[i + 1] == fp end
    end
    if mine or not has then table.insert(found, e) end
    if #found >= want then break end
  end
  scanned = scanned + #rows
  if #rows < chunk then
    if #found < want then last = '' end
    break
  end
  top = '(' .. rows[#rows][1]
end
return {found, last, scanned}
"""


def _filtered(
    client: redis.Redis,
    ref: QueueRef,
    *,
    before: str | None,
    limit: int,
    fingerprint: str,
    total: int,
) -> Page:
    top = f"({check_id(before)}" if before else "+"
    script = client.register_script(_FILTER)
    rows, last_id, scanned = cast(
        "list[Any]",
        script(
            keys=[ref.dead_letters],
            args=[top, fingerprint, limit + 1, FILTER_SCAN_BUDGET, SCAN_CHUNK],
        ),
    )
    found: list[tuple[str, dict[str, str]]] = []
    for entry_id, flat in rows:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        own = fields.get(contract.DLQ_FINGERPRINT)
        if (
            own or contract.error_fingerprint(fields.get(contract.DLQ_ERROR, ""))[0]
        ) == fingerprint:
            found.append((entry_id, fields))
    more = len(found) > limit
    found = found[:limit]
    older = found[-1][0] if more else None
    stopped = bool(last_id) and not more and int(scanned) >= FILTER_SCAN_BUDGET
    scanned_to = last_id if stopped else None
    count = group_count(client, ref, fingerprint)
    return Page(_parse(found), count if count is not None else total, None, older, scanned_to)


def _exists_before(client: redis.Redis, key: str, entry_id: str) -> bool:
    return bool(client.xrevrange(key, max=f"({entry_id}", count=1))


def _exists_after(client: redis.Redis, key: str, entry_id: str) -> bool:
    return bool(client.xrange(key, min=f"({entry_id}", count=1))


def _parse(rows: list) -> list[DeadLetter]:
    return [DeadLetter.parse(entry_id, fields) for entry_id, fields in rows]


def get(client: redis.Redis, ref: QueueRef, message_id: str) -> DeadLetter | None:
    rows = client.xrange(ref.dead_letters, min=check_id(message_id), max=message_id, count=1)
    return DeadLetter.parse(*rows[0]) if rows else None


# --- groups -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    fingerprint: str
    label: str
    count: int


def groups(client: redis.Redis, ref: QueueRef) -> list[Group]:
    """The error groups, largest first, from the count hash (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(contract.dead_letter_groups(ref.slug))
    pipe.hgetall(contract.dead_letter_labels(ref.slug))
    counts, labels = pipe.execute()
    rows = [
        Group(fp, labels.get(fp) or fp, _int(count))
        for fp, count in counts.items()
        if _int(count) > 0
    ]
    return sorted(rows, key=lambda g: (-g.count, g.label))


def group_count(client: redis.Redis, ref: QueueRef, fingerprint: str) -> int | None:
    value = client.hget(contract.dead_letter_groups(ref.slug), fingerprint)
    return None if value is None else _int(value)


def recount(client: redis.Redis, ref: QueueRef) -> list[Group]:
    """Rebuild the group hashes by reading every letter (letters of an older agentd carry no
    fingerprint: it is computed from their error). Replaces both hashes in one transaction."""
    counts: dict[str, int] = {}
    labels: dict[str, str] = {}
    for _, fields in iterate(client, ref):
        fp, label = contract.error_fingerprint(fields.get(contract.DLQ_ERROR, ""))
        fp = fields.get(contract.DLQ_FINGERPRINT) or fp
        counts[fp] = counts.get(fp, 0) + 1
        labels.setdefault(fp, label)
    pipe = client.pipeline(transaction=True)
    pipe.delete(contract.dead_letter_groups(ref.slug), contract.dead_letter_labels(ref.slug))
    if counts:
        pipe.hset(contract.dead_letter_groups(ref.slug), mapping=counts)
        pipe.hset(contract.dead_letter_labels(ref.slug), mapping=labels)
    pipe.execute()
    return groups(client, ref)


def iterate(
    client: redis.Redis,
    ref: QueueRef,
    *,
    upto: str = "+",
    fingerprint: str = "",
    ids: list[str] | None = None,
) -> Iterator[tuple[str, dict[str, str]]]:
    """Every letter (oldest first) up to ``upto``, of one group, or the ``ids`` listed."""
    if ids is not None:
        for message_id in ids:
            rows = client.xrange(ref.dead_letters, min=message_id, max=message_id, count=1)
            yield from rows
        return
    start = "-"
    while True:
        rows = client.xrange(ref.dead_letters, min=start, max=upto, count=SCAN_CHUNK)
        for entry_id, fields in rows:
            if not fingerprint or fields.get(contract.DLQ_FINGERPRINT) == fingerprint:
                yield entry_id, fields
        if len(rows) < SCAN_CHUNK:
            return
        start = f"({rows[-1][0]}"
