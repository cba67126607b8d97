"""JSON API for queues and dead letters under /api/platform/queues.

``{name}`` is a ``queue_name`` from ``GET /queues`` (``agents:wow-cache:tasks``,
``celery:celery``), URL-encoded or not. Reading needs a role (Viewers read, with payload fields
whose names look secret masked); every change calls one function of
``observability.queues.services``, which checks the role (Operator; purging a stream: Admin),
writes the audit entry and refuses with a sentence. A refusal answers its status with
``{"detail", "code", ...details}`` through ``portal.api``'s one handler: 400 bad input (a
malformed edited payload adds ``line`` and ``column``), 403 role, 404 no such queue, letter or
job, 409 the queue cannot do that now (nothing to do, confirmation needed, redriven too often),
503 Redis does not answer. A query parameter the API cannot use is a 400 naming the values it
takes; a body field of the wrong type is ninja's 422 naming the field.

Retry (redrive) and delete act on a snapshot fixed when the request arrives (the ids listed, or
every letter up to the newest at that moment), as a tracked job: 202 with the job, whose
``url`` shows its progress. Schemas and serializers: ``observability.queues.schemas``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import redis
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from ninja import Query, Router
from ninja.errors import HttpError
from ninja.responses import Status

from agents.models import Agent
from observability.metrics import RANGES
from observability.queues import (
    catalog,
    deadletters,
    figures,
    history,
    listing,
    schemas,
    services,
)
from observability.queues.catalog import QueueNotFound, QueueRef, QueueRefused
from observability.queues.models import RedriveJob
from portal.actors import Actor
from portal.refusals import BadFilter
from portal.schemas import Problem

router = Router(tags=["queues"])

STATUSES = [figures.HEALTHY, figures.DEGRADED, figures.CRITICAL, figures.UNKNOWN]
KINDS = [catalog.AGENT, catalog.CELERY]
# The columns ?sort= takes (the list's field names), and the Queues page's names for them.
UNSORTABLE = {"reasons", "consumers", "sampled_at", "error", "url"}
SORT_COLUMNS = [name for name in schemas.QueueOut.model_fields if name not in UNSORTABLE]
SORT_ALIASES = {
    "name": "title", "pending": "messages_pending", "in": "throughput_in_per_sec",
    "out": "throughput_per_sec", "lag": "consumer_lag_seconds", "errors": "error_rate",
    "dlq": "dlq_messages",
}  # fmt: skip
JOBS_DEFAULT, JOBS_MAX = 50, 500
DETAIL_JOBS = 10
TEXT_MAX = 200
BIGINT_MAX = 2**63 - 1

READ = {400: Problem, 404: Problem, 409: Problem, 503: Problem}
ACT = {400: Problem, 403: Problem, 404: Problem, 409: Problem, 503: Problem}


def answers_unavailable(view: Callable) -> Callable:
    """Redis going away mid-request is a 503 with a sentence, not a server error."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except (redis.RedisError, OSError) as exc:
            raise QueueRefused(
                f"Redis does not answer ({exc}); try again when it does.",
                "unavailable",
            ) from None

    return wrapper


# --- reading query parameters -------------------------------------------------------------------
# Query parameters arrive as text and are checked here, so a bad value is a 400 with a sentence.


def _text(name: str, value: str | None, most: int = TEXT_MAX) -> str:
    # A NUL character never gets here: the portal answers it 400 for every door (portal.inputs).
    value = (value or "").strip()
    if len(value) > most:
        raise HttpError(400, f"{name}= is {len(value):,} characters long; at most {most}.")
    return value


def _whole(name: str, value: str | None, default: int, low: int, high: int) -> int:
    text = _text(name, value, 40)
    if not text:
        return default
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise HttpError(
            400, f"{name}={text!r} is out of range; give a whole number from {low} to {high}."
        )
    return number


def _flag(name: str, value: str | None) -> bool:
    text = _text(name, value, 10).lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise HttpError(400, f"{name}={text!r} is not true or false; use {name}=true or {name}=false.")


def _choice(name: str, value: str | None, noun: str, choices: list[str]) -> str:
    text = _text(name, value, 40)
    if text and text not in choices:
        raise HttpError(400, BadFilter(name, text, noun, choices).spelled(f"{name}="))
    return text


def _fingerprint(value: str | None) -> str:
    text = _text("fingerprint", value, 60)
    if text and not services.FINGERPRINT.match(text):
        raise HttpError(
            400,
            f"fingerprint={text!r} is not an error group; GET /queues/{{name}}/dlq/groups lists "
            f"them.",
        )
    return text


# --- finding things -----------------------------------------------------------------------------


def _stream(name: str) -> QueueRef:
    """An agent's stream: only they have dead letters and pending entries."""
    ref = catalog.resolve(name)
    if not ref.is_agent:
        raise QueueRefused(
            f"{ref.name} has no dead letters: the Celery queue carries the portal's own jobs. "
            f"Choose an agent's stream.",
            "not_a_stream",
        )
    return ref


def _job(job_id: int) -> RedriveJob:
    job = RedriveJob.objects.filter(pk=job_id).first() if job_id <= BIGINT_MAX else None
    if job is None:
        raise QueueNotFound(
            f"There is no redrive job {job_id}; GET /api/platform/queues/jobs lists them."
        )
    return job


def _sort_key(column: str) -> Callable[[dict], tuple]:
    if column == "status":
        return lambda row: (figures.STATUS_ORDER[row["status"]],)
    # A missing figure (not sampled yet) sorts below every number.
    return lambda row: (
        row[column] is not None,
        row[column].lower() if isinstance(row[column], str) else row[column],
    )


# --- queues -------------------------------------------------------------------------------------


@router.get(
    "/queues/jobs",
    response={200: list[schemas.JobOut], **READ},
    summary="Redrive jobs, newest first",
)
def list_jobs(
    request: HttpRequest,
    queue: str | None = Query(None, description="a queue_name"),
    status: str | None = Query(None, description=", ".join(RedriveJob.Status.values)),
    limit: str | None = Query(None, description=f"1 to {JOBS_MAX}, default {JOBS_DEFAULT}"),
):
    jobs = RedriveJob.objects.all()
    if chosen := _text("queue", queue):
        jobs = jobs.filter(queue_name=chosen)
    if chosen := _choice("status", status, "job status", list(RedriveJob.Status.values)):
        jobs = jobs.filter(status=chosen)
    size = _whole("limit", limit, JOBS_DEFAULT, 1, JOBS_MAX)
    return [schemas.job_out(job) for job in jobs[:size]]


@router.get(
    "/queues/jobs/{job_id}", response={200: schemas.JobOut, **READ}, summary="A redrive job"
)
def get_job(request: HttpRequest, job_id: int):
    return schemas.job_out(_job(job_id))


@router.post(
    "/queues/jobs/{job_id}/cancel",
    response={202: schemas.JobOut, **ACT},
    summary="Cancel a redrive job: it stops after the batch in hand (Operator)",
)
def cancel_job(request: HttpRequest, job_id: int):
    job = services.cancel_job(Actor.from_request(request), _job(job_id).pk)
    return Status(202, schemas.job_out(job))


@router.get(
    "/queues",
    response={200: list[schemas.QueueOut], **READ},
    summary="Every queue with its health and figures: agents' streams and the Celery queue",
)
@answers_unavailable
def list_queues(
    request: HttpRequest,
    status: str | None = Query(None, description=", ".join(STATUSES)),
    kind: str | None = Query(None, description=", ".join(KINDS)),
    q: str | None = Query(None, description="text in the queue's name or title"),
    sort: str | None = Query(None, description="a column; a leading - sorts descending"),
    agent: str | None = Query(None, description="an agent's slug: only its stream"),
):
    wanted_status = _choice("status", status, "queue status", STATUSES)
    wanted_kind = _choice("kind", kind, "queue kind", KINDS)
    text = _text("q", q, 100).lower()
    order = _text("sort", sort, 40)
    column = SORT_ALIASES.get(order.lstrip("-"), order.lstrip("-"))
    if order and column not in SORT_COLUMNS:
        raise HttpError(
            400,
            f"sort={order!r} is not a column; use one of {', '.join(SORT_COLUMNS)} (a leading - "
            f"sorts descending).",
        )
    slug = _text("agent", agent, 100) or None
    if slug is not None and not Agent.objects.filter(slug=slug).exists():
        raise HttpError(
            400, f"agent={slug!r} is not an agent; GET /api/platform/agents lists them."
        )
    client = catalog.agent_redis()
    refs = catalog.discover(client, agent_slug=slug)
    looks = figures.with_rates(figures.look(refs, client, catalog.broker_redis()))
    chosen = listing.choose(
        looks,
        statuses={wanted_status} if wanted_status else None,
        kinds={wanted_kind} if wanted_kind else None,
        text=text,
        sort=None,
    )
    rows = [schemas.queue_out(look) for look in chosen]
    if order:
        rows.sort(key=_sort_key(column), reverse=order.startswith("-"))
    return rows


@router.get(
    "/queues/{name}",
    response={200: schemas.QueueDetailOut, **READ},
    summary="One queue: figures, thresholds, consumers (stuck or not), pending entries, "
    "dead-letter groups, recent jobs",
)
@answers_unavailable
def get_queue(request: HttpRequest, name: str):
    return schemas.queue_detail(catalog.resolve(name), jobs=DETAIL_JOBS)


@router.get(
    "/queues/{name}/history",
    response={200: schemas.HistoryOut, **READ},
    summary="A queue's sampled figures over 1h, 6h, 24h or 7d, in equal buckets",
)
@answers_unavailable
def queue_history(
    request: HttpRequest,
    name: str,
    window: str | None = Query(None, alias="range", description=", ".join(RANGES)),
):
    key = _text("range", window, 10) or "1h"
    if key not in RANGES:
        raise HttpError(400, f"range={key!r} is not a range; use one of {', '.join(RANGES)}.")
    ref = catalog.resolve(name)
    end = timezone.now()
    start = end - RANGES[key].span
    series = {
        column: history.series(ref.name, column, start, end, RANGES[key].points)
        for _, _, _, lines in history.CHARTS
        for column, _ in lines
    }
    return schemas.history_out(ref.name, key, start, end, series)


@router.post(
    "/queues/{name}/messages",
    response={201: schemas.SentOut, **ACT},
    summary='Send messages to an agent\'s stream: {"payload": {...}, "count": 1} (Operator)',
)
@answers_unavailable
def send_messages(request: HttpRequest, name: str, payload: schemas.SendIn | None = None):
    payload = payload or schemas.SendIn()
    actor = Actor.from_request(request)
    ids = services.send(
        actor, name, payload.payload, count=payload.count, customer=payload.customer
    )
    return Status(201, {"queue_name": catalog.resolve(name).name, "count": len(ids), "ids": ids})


@router.post(
    "/queues/{name}/claim",
    response={200: schemas.ClaimOut, **ACT},
    summary="Claim a (stuck) consumer's pending entries for a healthy replica, or redeliver "
    "them (Operator)",
)
@answers_unavailable
def claim_entries(request: HttpRequest, name: str, payload: schemas.ClaimIn | None = None):
    payload = payload or schemas.ClaimIn()
    actor = Actor.from_request(request)
    return services.claim(actor, name, payload.consumer, mode=payload.mode, target=payload.target)


@router.post(
    "/queues/{name}/purge",
    response={200: schemas.PurgedOut, **ACT},
    summary='Delete every message waiting on an agent\'s stream; {"confirm": "<slug>"} (Admin)',
)
@answers_unavailable
def purge_queue(request: HttpRequest, name: str, payload: schemas.PurgeIn | None = None):
    payload = payload or schemas.PurgeIn()
    removed = services.purge(Actor.from_request(request), name, confirm=payload.confirm)
    return {"queue_name": catalog.resolve(name).name, "removed": removed}


@router.put(
    "/queues/{name}/thresholds",
    response={200: schemas.ThresholdsOut, **ACT},
    summary="Set a queue's own health thresholds; a field left out or null takes the default "
    "(Operator)",
)
@answers_unavailable
def set_thresholds(request: HttpRequest, name: str, payload: schemas.ThresholdsIn | None = None):
    # PUT replaces: every field not given goes back to its default ({} removes the override).
    row = services.set_thresholds(
        Actor.from_request(request), name, (payload or schemas.ThresholdsIn()).model_dump()
    )
    return schemas.thresholds_out(row)


# --- dead letters -------------------------------------------------------------------------------


@router.get(
    "/queues/{name}/dlq",
    response={200: schemas.DeadLetterPageOut, **READ},
    summary="Dead letters, newest first, by keyset pages (before, after, last), of one error "
    "group with fingerprint",
)
@answers_unavailable
def dead_letter_page(
    request: HttpRequest,
    name: str,
    before: str | None = Query(None, description="older than this id (a page's 'older')"),
    after: str | None = Query(None, description="newer than this id (a page's 'newer')"),
    last: str | None = Query(None, description="true: the oldest page"),
    limit: str | None = Query(None, description=f"1 to {deadletters.PAGE_MAX}, default 50"),
    fingerprint: str | None = Query(None, description="one error group"),
):
    ref = _stream(name)
    older, newer = _text("before", before, 60) or None, _text("after", after, 60) or None
    oldest = _flag("last", last)
    group = _fingerprint(fingerprint)
    if oldest and (older or newer):
        raise HttpError(400, "last=true is the oldest page: give it without before or after.")
    if group and (newer or oldest):
        raise HttpError(
            400, "A group's pages go from the newest to older ones: use before=, not after or last."
        )
    size = _whole("limit", limit, deadletters.PAGE_DEFAULT, 1, deadletters.PAGE_MAX)
    page = deadletters.page(
        catalog.agent_redis(), ref, before=older, after=newer, last=oldest, limit=size,
        fingerprint=group,
    )  # fmt: skip
    actor = Actor.from_request(request)
    return schemas.page_out(page, [services.read_letter(actor, ref, x) for x in page.letters])


@router.get(
    "/queues/{name}/dlq/groups",
    response={200: list[schemas.GroupOut], **READ},
    summary="The dead letters' error groups, largest first",
)
@answers_unavailable
def dead_letter_groups(request: HttpRequest, name: str):
    ref = _stream(name)
    return [schemas.group_out(group) for group in deadletters.groups(catalog.agent_redis(), ref)]


@router.get(
    "/queues/{name}/dlq/export",
    response={200: None, **READ},
    summary="Dead letters as JSON lines (application/x-ndjson): selected ids, a group or all",
)
@answers_unavailable
def export_dead_letters(
    request: HttpRequest,
    name: str,
    scope: str | None = Query(None, description="selected, group or all (default)"),
    ids: str | None = Query(
        None, description="with scope=selected: ids, repeated or comma-separated"
    ),
    fingerprint: str | None = Query(None, description="with scope=group"),
):
    ref = _stream(name)
    chosen = _text("scope", scope, 40) or RedriveJob.Scope.ALL
    # Every ?ids= given (the parameter above documents it; ninja would keep only one).
    listed = [_text("ids", value, 20_000) for value in request.GET.getlist("ids")]
    try:
        shot = services.snapshot(ref, chosen, ",".join(listed), _fingerprint(fingerprint))
    except QueueRefused as refused:
        if refused.code != "empty":
            raise
        shot = None  # nothing to export: an empty file
    lines = services.export_lines(Actor.from_request(request), ref, shot)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="{ref.slug}-dead-letters.jsonl"'
    return response


@router.post(
    "/queues/{name}/dlq/redrive",
    response={202: schemas.JobOut, **ACT},
    summary="Send dead letters back to their stream as a tracked job: selected ids, a group or "
    "all, as they are now (Operator)",
)
@answers_unavailable
def redrive_dead_letters(
    request: HttpRequest, name: str, payload: schemas.SelectionIn | None = None
):
    return _start(request, name, RedriveJob.Action.REDRIVE, payload or schemas.SelectionIn())


@router.post(
    "/queues/{name}/dlq/delete",
    response={202: schemas.JobOut, **ACT},
    summary='Delete dead letters as a tracked job; all needs {"confirm": "<slug>"} (Operator)',
)
@answers_unavailable
def delete_dead_letters(request: HttpRequest, name: str, payload: schemas.DeleteIn | None = None):
    payload = payload or schemas.DeleteIn()
    return _start(request, name, RedriveJob.Action.DELETE, payload, confirm=payload.confirm)


def _start(
    request: HttpRequest, name: str, action: str, payload: schemas.SelectionIn, confirm: str = ""
):
    job = services.start_job(
        Actor.from_request(request), name, action, payload.scope, ids=payload.ids,
        fingerprint=payload.fingerprint, rate=payload.rate, force=payload.force, confirm=confirm,
    )  # fmt: skip
    return Status(202, schemas.job_out(job))


@router.post(
    "/queues/{name}/dlq/recount",
    response={200: list[schemas.GroupOut], **ACT},
    summary="Count the error groups again by reading every dead letter (Operator)",
)
@answers_unavailable
def recount_groups(request: HttpRequest, name: str):
    return [
        schemas.group_out(g) for g in services.recount_groups(Actor.from_request(request), name)
    ]


@router.get(
    "/queues/{name}/dlq/{message_id}",
    response={200: schemas.DeadLetterOut, **READ},
    summary="One dead letter: payload, each attempt's error, failures, redrives",
)
@answers_unavailable
def get_dead_letter(request: HttpRequest, name: str, message_id: str):
    ref = _stream(name)
    letter = deadletters.get(catalog.agent_redis(), ref, message_id)
    if letter is None:
        raise QueueNotFound(
            f"Dead letter {message_id} is not in {ref.dead_letters} any more: it was sent back "
            f"or deleted."
        )
    return services.read_letter(Actor.from_request(request), ref, letter).as_json()


@router.post(
    "/queues/{name}/dlq/{message_id}/edit",
    response={200: schemas.EditOut, **ACT},
    summary="Edit a dead letter's payload and send it back (preview: the diff only) (Operator)",
)
@answers_unavailable
def edit_dead_letter(
    request: HttpRequest, name: str, message_id: str, payload: schemas.EditIn | None = None
):
    payload = payload or schemas.EditIn()
    actor = Actor.from_request(request)
    if payload.preview:
        edit = services.preview_edit(actor, name, message_id, payload.payload)
    else:
        edit, _ = services.edit_and_retry(
            actor, name, message_id, payload.payload, force=payload.force
        )
    return schemas.edit_out(edit, sent=not payload.preview)
