"""The queues API's schemas and serializers, one per object: the API answers with them and the
``queues`` command can print them for ``--json``, so scripts can use either door.

The shapes come from the core: a queue's figures are ``figures.figures_json``, a dead letter is
``DeadLetter.as_json``; the serializers here add what the detail page adds (thresholds, stuck
consumers, pending entries, error groups, jobs).

Fields a client fills in are checked by the services (``observability.queues.services``), so a
bad value is answered with the same sentence at every door; the schema types only what needs no
sentence (text, true/false). Bodies are plain pydantic models: ninja's ``Schema`` reads its input
by attribute, so a JSON array would pass as a body of defaults instead of being refused (422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from ninja import Field, Schema
from pydantic import BaseModel, ConfigDict

from observability.queues import catalog, deadletters, figures, pending, services
from observability.queues.models import QueueThreshold, RedriveJob

API_ROOT = "/api/platform"

# Body fields the services check (so a bad value gets their sentence, not a schema error): typed
# here only for the OpenAPI document.
Whole = Annotated[Any, Field(json_schema_extra={"type": "integer", "minimum": 0})]
Number = Annotated[Any, Field(json_schema_extra={"type": "number", "minimum": 0})]
Rate = Annotated[Any, Field(json_schema_extra={"type": "number", "minimum": 0.1})]
Count = Annotated[Any, Field(json_schema_extra={"type": "integer", "minimum": 1, "maximum": 10000})]
Payload = Annotated[Any, Field(json_schema_extra={"type": ["object", "string"]})]
MessageIds = Annotated[Any, Field(json_schema_extra={"type": "array", "items": {"type": "string"}})]


# --- queues -------------------------------------------------------------------------------------


class QueueOut(Schema):
    """One queue's figures now (counts live, rates from the newest sample) and its health."""

    queue_name: str  # the name to put (URL-encoded) in /queues/{name}
    kind: str  # agent or celery
    title: str
    agent: str | None  # the agent's slug (agent streams)
    status: str  # healthy, degraded, critical or unknown
    reasons: list[str]  # each check past its threshold
    messages_pending: int  # waiting to be delivered
    in_flight: int  # delivered, not yet acknowledged
    length: int
    throughput_per_sec: float | None  # messages done per second
    throughput_in_per_sec: float | None
    consumer_lag: int  # in messages
    consumer_lag_seconds: float | None  # age of the oldest message not yet delivered
    oldest_age_seconds: float | None
    error_rate: float | None  # failed attempts, percent
    dlq_messages: int
    dlq_inflow_per_min: float | None
    consumers: dict[str, dict[str, Any]]  # pending entries (or tasks) per consumer
    sampled_at: datetime | None  # when the rates were measured; null: not sampled yet
    error: str | None  # Redis could not be asked
    url: str


def queue_url(queue_name: str, *rest: str) -> str:
    return "/".join([f"{API_ROOT}/queues/{quote(queue_name, safe='')}", *rest])


def queue_out(look: figures.Figures) -> dict[str, Any]:
    return {**figures.figures_json(look), "url": queue_url(look.name)}


class ThresholdsOut(Schema):
    """The thresholds a queue is graded by: its own (``source`` "own": some fields overridden)
    or the defaults from settings."""

    source: str  # own or default
    values: dict[str, float | None]  # what applies
    defaults: dict[str, float | None]
    overridden: list[str]  # the fields the queue sets itself


def thresholds_out(row: QueueThreshold | None) -> dict[str, Any]:
    defaults = figures.Thresholds.defaults()
    applied = figures.Thresholds.merged(row) if row is not None else defaults
    overridden = [
        name for name in figures.Thresholds.FIELDS if getattr(row, name, None) is not None
    ]
    return {
        "source": "own" if row is not None else "default",
        "values": applied.as_dict(),
        "defaults": defaults.as_dict(),
        "overridden": overridden,
    }


class ThresholdsIn(BaseModel):
    """A queue's own thresholds; an empty field (null or absent) takes the default, all empty
    removes the override. Values are checked by the service (numbers from 0 to 10^9, degraded not
    above critical); an unknown field is refused with the list of known ones, so it is kept."""

    model_config = ConfigDict(extra="allow")

    backlog_degraded: Whole = None
    backlog_critical: Whole = None
    age_degraded_seconds: Whole = None
    age_critical_seconds: Whole = None
    error_rate_degraded: Number = None
    error_rate_critical: Number = None
    dlq_inflow_degraded: Number = None
    dlq_inflow_critical: Number = None


class ConsumerOut(Schema):
    """A reader of the stream's consumer group and whether it is stuck."""

    name: str
    replica: int | None
    pending: int
    idle_ms: int
    oldest_idle_ms: int
    replica_gone: bool
    stuck: bool
    why: str


def consumer_out(state: pending.ConsumerState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in ConsumerOut.model_fields}


class PendingEntryOut(Schema):
    id: str
    consumer: str
    idle_ms: int
    deliveries: int


def pending_entry_out(entry: pending.PendingEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in PendingEntryOut.model_fields}


class GroupOut(Schema):
    """Dead letters that failed the same way (``fingerprint``), and how many there are."""

    fingerprint: str
    label: str
    count: int


def group_out(group: deadletters.Group) -> dict[str, Any]:
    return {"fingerprint": group.fingerprint, "label": group.label, "count": group.count}


# --- redrive jobs -------------------------------------------------------------------------------


class JobOut(Schema):
    """A redrive (retry) or delete job over a snapshot of dead letters fixed when it was
    confirmed: the ids listed, or every letter (of a group) up to ``upto_id``."""

    id: int
    queue_name: str
    action: str  # redrive or delete
    scope: str  # selected, group or all
    status: str  # pending, running, succeeded, failed or cancelled
    total: int
    done: int
    skipped: int  # already gone when reached
    held_back: int  # redriven too often already, and not forced
    percent: int
    rate_limit: float | None  # messages per second; null: as fast as possible
    force: bool
    fingerprint: str
    upto_id: str
    message_ids: list[str]
    message: str
    requested_by: str
    cancel_requested: bool
    cancelled_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str


def job_url(job_id: int) -> str:
    return f"{API_ROOT}/queues/jobs/{job_id}"


def job_out(job: RedriveJob) -> dict[str, Any]:
    plain = (
        "id", "queue_name", "action", "scope", "status", "total", "done", "skipped", "held_back",
        "percent", "rate_limit", "force", "fingerprint", "upto_id", "message_ids", "message",
        "cancel_requested", "cancelled_by", "created_at", "started_at", "finished_at",
    )  # fmt: skip
    return {
        **{name: getattr(job, name) for name in plain},
        "requested_by": job.actor,
        "url": job_url(job.pk),
    }


class QueueDetailOut(QueueOut):
    """One queue: its figures, the thresholds it is graded by, the consumers of its group (with
    stuck flags), the first pending entries, its dead letters' error groups, recent jobs."""

    thresholds: ThresholdsOut
    group_consumers: list[ConsumerOut]
    pending_entries: list[PendingEntryOut]
    dlq_groups: list[GroupOut]
    jobs: list[JobOut]


def queue_detail_out(
    look: figures.Figures,
    own: QueueThreshold | None,
    consumers: list[pending.ConsumerState],
    entries: list[pending.PendingEntry],
    groups: list[deadletters.Group],
    jobs: list[RedriveJob],
) -> dict[str, Any]:
    return {
        **queue_out(look),
        "thresholds": thresholds_out(own),
        "group_consumers": [consumer_out(c) for c in consumers],
        "pending_entries": [pending_entry_out(e) for e in entries],
        "dlq_groups": [group_out(g) for g in groups],
        "jobs": [job_out(job) for job in jobs],
    }


# --- history ------------------------------------------------------------------------------------


class PointOut(Schema):
    at: datetime
    value: float | None  # null: no sample in that bucket


class HistoryOut(Schema):
    """The sampled figures over a range ending now, in equal buckets (averages)."""

    queue_name: str
    range: str
    start: datetime
    end: datetime
    bucket_seconds: int
    series: dict[str, list[PointOut]]  # pending, in_flight, in_rate, out_rate, lag_seconds, ...


def history_out(
    queue_name: str,
    range_key: str,
    start: datetime,
    end: datetime,
    series: dict[str, list[tuple[datetime, float | None]]],
) -> dict[str, Any]:
    first = next(iter(series.values()), [])
    bucket = int((first[1][0] - first[0][0]).total_seconds()) if len(first) > 1 else 0
    return {
        "queue_name": queue_name,
        "range": range_key,
        "start": start,
        "end": end,
        "bucket_seconds": bucket,
        "series": {
            column: [{"at": at, "value": value} for at, value in points]
            for column, points in series.items()
        },
    }


# --- dead letters -------------------------------------------------------------------------------


class DeadLetterOut(Schema):
    """A dead letter as ``DeadLetter.as_json`` gives it (payload fields with secret-looking names
    masked for Viewers)."""

    message_id: str  # its id in the dead-letter queue
    original_id: str | None  # its id on the stream when it failed
    payload: Any  # the task's JSON (the raw text when it is not valid JSON: see payload_error)
    payload_error: str | None
    error: str  # the last attempt's error
    fingerprint: str
    retry_count: int  # failed attempts
    redrive_count: int  # times sent back already
    attempts: list[dict[str, Any]]
    producer: str | None
    customer: str | None
    replica: str | None
    first_failed_at: datetime | None
    last_failed_at: datetime
    timestamp: datetime  # when it was dead-lettered


class DeadLetterPageOut(Schema):
    """A keyset page, newest first: pass ``older`` as ``before`` for the next (older) page and
    ``newer`` as ``after`` for the one above it; each is null at its end."""

    messages: list[DeadLetterOut]
    total: int  # in the queue (in the group, with ``fingerprint``)
    newer: str | None
    older: str | None
    scanned_to: str | None  # a group page stopped reading here: pass it as ``before`` to go on


def page_out(page: deadletters.Page, letters: list[deadletters.DeadLetter]) -> dict[str, Any]:
    """A page of ``letters`` (the page's, as the caller may see them: ``services.read_letter``)."""
    return {
        "messages": [letter.as_json() for letter in letters],
        "total": page.total,
        "newer": page.newer,
        "older": page.older,
        "scanned_to": page.scanned_to,
    }


class SelectionIn(BaseModel):
    """Which dead letters: ``selected`` (the ``ids``, at most 1,000), an error ``group`` (its
    ``fingerprint``) or ``all``. A group or all is fixed when the request arrives: letters that
    come later are never touched. ``rate``: messages per second (empty: no cap)."""

    scope: Annotated[str, Field(json_schema_extra={"enum": list(RedriveJob.Scope.values)})] = ""
    ids: MessageIds = None
    fingerprint: str = ""
    rate: Rate = None
    force: bool = False  # also send back letters redriven QUEUE_MAX_REDRIVES times already


class DeleteIn(SelectionIn):
    confirm: str = ""  # deleting all: the agent's slug


class EditIn(BaseModel):
    """A dead letter's edited payload: a JSON object, or JSON text (a parse error names the line
    and column). ``preview``: answer the diff and send nothing."""

    payload: Payload = None
    preview: bool = False
    force: bool = False


class EditOut(Schema):
    message_id: str
    sent: bool  # false for a preview
    changed: bool
    original: str
    edited: str
    diff: list[str]  # unified diff, original to edited


def edit_out(edit: services.Edit, *, sent: bool) -> dict[str, Any]:
    return {
        "message_id": edit.letter.id,
        "sent": sent,
        "changed": edit.changed,
        "original": edit.original,
        "edited": edit.edited,
        "diff": edit.diff,
    }


# --- sending, claiming, purging -----------------------------------------------------------------


class SendIn(BaseModel):
    payload: Payload = None
    count: Count = 1
    customer: str = ""


class SentOut(Schema):
    queue_name: str
    count: int
    ids: list[str]


class ClaimIn(BaseModel):
    consumer: str = ""  # the consumer holding the entries
    mode: Annotated[str, Field(json_schema_extra={"enum": ["claim", "redeliver"]})] = "claim"
    target: str = ""  # claim: the consumer to hand them to (empty: a healthy replica)


class ClaimOut(Schema):
    mode: str
    consumer: str
    target: str | None
    ids: list[str]
    gone: int


class PurgeIn(BaseModel):
    confirm: str = ""  # the agent's slug


class PurgedOut(Schema):
    queue_name: str
    removed: int


def queue_detail(ref: Any, jobs: int = 10) -> dict:
    """One queue as the API answers it (``QueueDetailOut``), read now: figures, thresholds,
    the consumers of its group with stuck flags, the first pending entries, error groups and the
    ``jobs`` most recent jobs (the API and ``queues show --json`` both answer this)."""
    client = catalog.agent_redis()
    [look] = figures.with_rates(figures.look([ref], client, catalog.broker_redis()))
    consumers, entries, groups = [], [], []
    if ref.is_agent and not look.error:
        consumers = pending.consumers(client, ref)
        entries = pending.entries(client, ref)
        groups = deadletters.groups(client, ref)
    own = QueueThreshold.objects.filter(queue_name=ref.name).first()
    recent = list(RedriveJob.objects.filter(queue_name=ref.name)[:jobs])
    return queue_detail_out(look, own, consumers, entries, groups, recent)
