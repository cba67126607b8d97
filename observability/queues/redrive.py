"""Redrive jobs: dead letters sent back to their stream, or deleted, as one tracked job.

Each batch is one Lua script, so for every letter the move is atomic: it is back on the stream
and gone from the dead letters (with its group count taken off), or untouched, never both and
never neither. The same script adds the batch to the job's progress hash in Redis (done,
skipped, held back, and where it got to), so a job whose worker is SIGKILLed mid-batch resumes
exactly where the letters say it is: no letter is sent twice and none is lost. The database row
is a copy of that progress, written after each batch and read by the pages.

The snapshot: the ids listed, or every letter up to ``upto_id`` (the newest at confirmation).
A rate cap spaces batches so that n letters take n / rate seconds from the job's start.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.agentd import contract
from observability.queues import catalog, live
from observability.queues.models import RedriveJob
from portal import work

logger = logging.getLogger(__name__)

RUN_TASK = "observability.run_redrive"
RUNNER_LOCK = 7_401
PROGRESS_KEY = "observability:redrive:{job}"
PROGRESS_TTL = 7 * 24 * 3600
BATCH_MAX = 1000
SAVE_EVERY_SECONDS = 0.25
REDRIVEN_FROM = "redriven_from"
EDITED = "edited"

_MOVE = """
local function move(id, f, mode, maxr, force, payload)
  local t = {}
  for i = 1, #f, 2 do t[f[i]] = f[i + 1] end
  local redrives = tonumber(t['redrive_count'] or '0') or 0
  if mode == 'redrive' and redrives >= maxr and not force then return 'held' end
  if mode == 'redrive' then
    local out = {}
    for i = 1, #f, 2 do
      local k = f[i]
      if not STRIP[k] then
        local v = f[i + 1]
        if k == 'payload' and payload ~= '' then v = payload end
        table.insert(out, k); table.insert(out, v)
      end
    end
    if payload ~= '' and t['payload'] == nil then
      table.insert(out, 'payload'); table.insert(out, payload)
    end
    if payload ~= '' then table.insert(out, 'edited'); table.insert(out, '1') end
    table.insert(out, 'redrive_count'); table.insert(out, tostring(redrives + 1))
    table.insert(out, 'redriven_from'); table.insert(out, t['original_id'] or id)
    redis.call('XADD', KEYS[2], '*', unpack(out))
  end
  redis.call('XDEL', KEYS[1], id)
  local fp = t['fingerprint']
  if fp then
    local left = redis.call('HINCRBY', KEYS[3], fp, -1)
    if left <= 0 then redis.call('HDEL', KEYS[3], fp) end
  end
  return 'done'
end
"""
_STRIP = (
    "local STRIP = {"
    + ", ".join(
        f"['{name}'] = true"
        for name in (
            contract.DLQ_ERROR,
            contract.DLQ_FAILURES,
            contract.DLQ_ORIGINAL_ID,
            contract.DLQ_ATTEMPTS,
            contract.DLQ_FIRST_FAILED_AT,
            contract.DLQ_LAST_FAILED_AT,
            contract.DLQ_REPLICA,
            contract.DLQ_FINGERPRINT,
            contract.FIELD_REDRIVES,
            REDRIVEN_FROM,
            EDITED,
        )
    )
    + "}\n"
)

# KEYS: dlq, stream, groups, progress. ARGV: mode, max redrives, force, fingerprint, upto,
# after (exclusive; '' from the start), most letters to act on, most letters to read.
RANGE_SCRIPT = (
    _STRIP
    + _MOVE
    + """
local mode, maxr, force = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local fp, upto, after = ARGV[4], ARGV[5], ARGV[6]
local limit, scan = tonumber(ARGV[7]), tonumber(ARGV[8])
local start = '-'
if after ~= '' then start = '(' .. after end
local entries = redis.call('XRANGE', KEYS[1], start, upto, 'COUNT', scan)
local done, held, last, visited = 0, 0, after, 0
for _, e in ipairs(entries) do
  local id, f = e[1], e[2]
  local mine = fp == ''
  if not mine then
    for i = 1, #f, 2 do if f[i] == 'fingerprint' and f[i + 1] == fp then mine = true end end
  end
  if mine then
    if move(id, f, mode, maxr, force, '') == 'held' then held = held + 1 else done = done + 1 end
  end
  last = id
  visited = visited + 1
  if done >= limit then break end
end
-- Every letter up to the snapshot's end read and visited: the job has nothing left.
local finished = 0
if #entries < scan and visited == #entries then finished = 1 end
redis.call('HINCRBY', KEYS[4], 'done', done)
redis.call('HINCRBY', KEYS[4], 'held_back', held)
if finished == 1 then redis.call('HSET', KEYS[4], 'finished', '1') end
if last ~= '' then redis.call('HSET', KEYS[4], 'cursor', last) end
redis.call('EXPIRE', KEYS[4], ARGV[9])
return {done, held, last, #entries, finished}
"""
)

# KEYS: dlq, stream, groups, progress. ARGV: mode, max redrives, force, payload ('' keeps it),
# ttl, then the ids.
IDS_SCRIPT = (
    _STRIP
    + _MOVE
    + """
local mode, maxr, force, payload = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local done, held, skipped = 0, 0, 0
for i = 6, #ARGV do
  local rows = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1)
  if #rows == 0 then
    skipped = skipped + 1
  elseif move(rows[1][1], rows[1][2], mode, maxr, force, payload) == 'held' then
    held = held + 1
  else
    done = done + 1
  end
end
redis.call('HINCRBY', KEYS[4], 'done', done)
redis.call('HINCRBY', KEYS[4], 'held_back', held)
redis.call('HINCRBY', KEYS[4], 'skipped', skipped)
redis.call('HINCRBY', KEYS[4], 'position', #ARGV - 5)
redis.call('EXPIRE', KEYS[4], ARGV[5])
return {done, held, skipped}
"""
)


def _keys(job: RedriveJob) -> list[str]:
    ref = catalog.resolve(job.queue_name)
    return [
        ref.dead_letters,
        ref.stream,
        contract.dead_letter_groups(ref.slug),
        PROGRESS_KEY.format(job=job.pk),
    ]


def move_ids(
    client: redis.Redis,
    keys: list[str],
    ids: list[str],
    *,
    mode: str,
    max_redrives: int,
    force: bool,
    payload: str = "",
) -> tuple[int, int, int]:
    """Move (or delete) the letters ``ids`` in one atomic step: (done, held back, skipped)."""
    script = client.register_script(IDS_SCRIPT)
    done, held, skipped = script(
        keys=keys, args=[mode, max_redrives, "1" if force else "0", payload, PROGRESS_TTL, *ids]
    )
    return int(done), int(held), int(skipped)


# --- running a job ------------------------------------------------------------------------------


def run(job_id: int) -> RedriveJob | None:
    """Carry a job out (or on, after its worker died). A second runner finds the lock held and
    returns None; a finished job is returned untouched."""
    job = RedriveJob.objects.filter(pk=job_id).first()
    if job is None or job.finished:
        return job
    if work.has_runner(RUNNER_LOCK, job_id):
        return None
    with work.lease(RUNNER_LOCK, job_id):
        job = RedriveJob.objects.get(pk=job_id)  # as it is now that this runner holds it
        if job.finished:
            return job
        try:
            _work_through(job)
        except (redis.RedisError, OSError) as exc:
            # Redis went away: the job stays running and the sweep hands it out again.
            logger.warning("redrive job %s paused: Redis does not answer (%s)", job.pk, exc)
            raise
        except catalog.QueueNotFound as exc:
            _finish(job, RedriveJob.Status.FAILED, str(exc))
    return job


def _work_through(job: RedriveJob) -> None:
    client = catalog.agent_redis()
    keys = _keys(job)
    if job.status == RedriveJob.Status.PENDING:
        job.status = RedriveJob.Status.RUNNING
        job.started_at = timezone.now()
        job.save(update_fields=["status", "started_at"])
    progress = _progress(client, keys[3])
    started = time.monotonic()
    moved_at_start = progress["done"] + progress["skipped"] + progress["held_back"]
    last_save = 0.0
    rate = job.rate_limit
    batch = BATCH_MAX if not rate else max(1, min(BATCH_MAX, int(rate / 10) or 1))
    mode = job.action
    max_redrives = settings.QUEUE_MAX_REDRIVES
    while True:
        if _cancel_requested(job):
            _save_progress(job, _progress(client, keys[3]))
            _finish(
                job, RedriveJob.Status.CANCELLED, f"Cancelled by {job.cancelled_by or 'someone'}."
            )
            return
        worked = progress["done"] + progress["skipped"] + progress["held_back"] - moved_at_start
        if job.scope == RedriveJob.Scope.SELECTED:
            position = progress["position"]
            ids = list(job.message_ids[position : position + batch])
            if not ids:
                break
            _pace(rate, started, worked + len(ids))
            move_ids(client, keys, ids, mode=mode, max_redrives=max_redrives, force=job.force)
        else:
            _pace(rate, started, worked + batch)
            script = client.register_script(RANGE_SCRIPT)
            *_, finished = script(
                keys=keys,
                args=[
                    mode,
                    max_redrives,
                    "1" if job.force else "0",
                    job.fingerprint,
                    job.upto_id,
                    progress["cursor"],
                    batch,
                    BATCH_MAX,
                    PROGRESS_TTL,
                ],
            )
            # Stop as soon as the snapshot is read to its end (under a rate cap, rather than
            # wait a batch's time to read nothing).
            if int(finished):
                break
        progress = _progress(client, keys[3])
        if time.monotonic() - last_save >= SAVE_EVERY_SECONDS:
            _save_progress(job, progress)
            last_save = time.monotonic()
    _save_progress(job, _progress(client, keys[3]))
    _finish(job, RedriveJob.Status.SUCCEEDED, _summary(job))


def _pace(rate: float | None, started: float, after: int) -> None:
    """Under a rate cap, wait until ``after`` letters are due: n letters take n / rate seconds
    from the job's start."""
    if rate:
        wait = started + after / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)


def _progress(client: redis.Redis, key: str) -> dict:
    raw = client.hgetall(key)
    return {
        "done": int(raw.get("done", 0)),
        "skipped": int(raw.get("skipped", 0)),
        "held_back": int(raw.get("held_back", 0)),
        "position": int(raw.get("position", 0)),
        "cursor": raw.get("cursor", ""),
    }


def _cancel_requested(job: RedriveJob) -> bool:
    row = RedriveJob.objects.filter(pk=job.pk).values("cancel_requested", "cancelled_by").first()
    if row and row["cancel_requested"]:
        job.cancelled_by = row["cancelled_by"]
        return True
    return False


def _save_progress(job: RedriveJob, progress: dict) -> None:
    job.done, job.skipped, job.held_back = (
        progress["done"],
        progress["skipped"],
        progress["held_back"],
    )
    job.cursor = progress["cursor"] or str(progress["position"] or "")
    # The total of a range job is what was there at confirmation; letters deleted since by
    # someone else are neither done nor skipped, so the total follows what was found.
    if job.scope != RedriveJob.Scope.SELECTED and job.worked > job.total:
        job.total = job.worked
    RedriveJob.objects.filter(pk=job.pk).update(
        done=job.done,
        skipped=job.skipped,
        held_back=job.held_back,
        cursor=job.cursor,
        total=job.total,
    )
    _publish(job)


def _summary(job: RedriveJob) -> str:
    verb = "sent back" if job.action == RedriveJob.Action.REDRIVE else "deleted"
    parts = [f"{job.done:,} {verb}"]
    if job.skipped:
        parts.append(f"{job.skipped:,} already gone (skipped)")
    if job.held_back:
        parts.append(f"{job.held_back:,} held back: redriven too often already (force to include)")
    return "; ".join(parts) + "."


def _finish(job: RedriveJob, status: str, message: str) -> None:
    with transaction.atomic():
        job.status = status
        job.message = message[:500]
        job.finished_at = timezone.now()
        if status != RedriveJob.Status.CANCELLED and job.scope != RedriveJob.Scope.SELECTED:
            job.total = job.worked
        job.save(update_fields=["status", "message", "finished_at", "total"])
    _publish(job)


def _publish(job: RedriveJob) -> None:
    live.job_changed(job)


def sweep(older_than: timedelta) -> list[int]:
    """Hand out again the jobs that are unfinished with no runner (their worker died)."""
    cutoff = timezone.now() - older_than
    handed = []
    stalled = RedriveJob.objects.filter(
        status__in=(RedriveJob.Status.PENDING, RedriveJob.Status.RUNNING), created_at__lt=cutoff
    ).values_list("pk", flat=True)
    for job_id in stalled:
        if not work.has_runner(RUNNER_LOCK, job_id):
            work.send(RUN_TASK, job_id)
            handed.append(job_id)
    return handed
