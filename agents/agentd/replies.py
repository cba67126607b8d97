"""Answering tasks: the reply a task that names a stream (``reply_to``) gets when it is done or
dead-lettered, and the record of the task ids already answered.

A reply is added by a small script inside the same transaction as the task's acknowledgement,
and only if the task id was not answered before (``ZADD NX`` on ``contract.answered``): a task
redelivered after its answer (a replica died between answering and reading on, a producer sent
it twice) is answered once. Before processing, a task whose id is already answered is simply
acknowledged (:func:`already_answered`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from . import contract

# KEYS: the answered set, the reply stream ('' for none). ARGV: task id, now (ms), keep (ms),
# maxlen, then the reply's field/value pairs. Answers 1 when this is the first answer.
ANSWER_SCRIPT = """
local id = ARGV[1]
if id ~= '' then
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], id) == 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
end
if KEYS[2] ~= '' then
  local fields = {}
  for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
end
return 1
"""


@dataclass(frozen=True)
class Outcome:
    """How a task ended, as its reply says it."""

    status: str
    output: dict[str, Any]
    error: str
    duration_ms: int
    attempts: int


def wants_answer(fields: dict[str, str]) -> bool:
    return bool(fields.get(contract.FIELD_TASK_ID) or fields.get(contract.FIELD_REPLY_TO))


def already_answered(client: redis.Redis, slug: str, fields: dict[str, str]) -> bool:
    task_id = fields.get(contract.FIELD_TASK_ID) or ""
    return bool(task_id) and client.zscore(contract.answered(slug), task_id) is not None


def queue_answer(
    pipeline: Any,
    *,
    slug: str,
    consumer: str,
    version: str,
    message_id: str,
    fields: dict[str, str],
    outcome: Outcome,
    now_ms: int,
) -> None:
    """Add the answer script to ``pipeline`` (a transaction), for a task that wants one."""
    reply_to = fields.get(contract.FIELD_REPLY_TO, "")
    reply = {
        contract.REPLY_TASK_ID: fields.get(contract.FIELD_TASK_ID, ""),
        contract.REPLY_MESSAGE_ID: message_id,
        contract.REPLY_AGENT: slug,
        contract.REPLY_STATUS: outcome.status,
        contract.REPLY_OUTPUT: json.dumps(outcome.output, separators=(",", ":")),
        contract.REPLY_ERROR: outcome.error,
        contract.REPLY_DURATION_MS: str(outcome.duration_ms),
        contract.REPLY_VERSION: version,
        contract.REPLY_REPLICA: consumer,
        contract.REPLY_ATTEMPTS: str(outcome.attempts),
    }
    if fields.get(contract.FIELD_CUSTOMER):
        reply[contract.REPLY_CUSTOMER] = fields[contract.FIELD_CUSTOMER]
    pairs = [item for pair in reply.items() for item in pair]
    pipeline.eval(
        ANSWER_SCRIPT,
        2,
        contract.answered(slug),
        reply_to,
        fields.get(contract.FIELD_TASK_ID, ""),
        now_ms,
        contract.ANSWERED_KEEP_MS,
        contract.REPLY_MAXLEN,
        *pairs,
    )


def queue_outcome(pipeline: Any, *, template: str, **task: Any) -> None:
    """How a task ended, in ``pipeline``: its reply when it asked for one
    (:func:`queue_answer`), its interaction record when it was done for a customer
    (:func:`queue_interaction`). ``task``: slug, consumer, version, message_id, fields,
    outcome, now_ms."""
    if wants_answer(task["fields"]):
        queue_answer(pipeline, **task)
    queue_interaction(pipeline, template=template, **task)


def task_kind(fields: dict[str, str], template: str) -> str:
    """What a task was, in a word: its payload's ``kind`` or ``op``, else the template."""
    try:
        payload = json.loads(fields.get(contract.FIELD_PAYLOAD) or "{}")
    except (ValueError, TypeError):
        return template
    if isinstance(payload, dict):
        for name in ("kind", "op"):
            value = payload.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()[:60]
    return template


def queue_interaction(
    pipeline: Any,
    *,
    slug: str,
    consumer: str,
    version: str,
    template: str,
    message_id: str,
    fields: dict[str, str],
    outcome: Outcome,
    now_ms: int,
) -> None:
    """Add the task's record to :data:`contract.INTERACTIONS` when it was done for a customer
    (``pipeline`` is the transaction that acknowledges or dead-letters it)."""
    customer = fields.get(contract.FIELD_CUSTOMER, "")
    if not customer:
        return
    record = {
        contract.REPLY_CUSTOMER: customer,
        contract.REPLY_AGENT: slug,
        contract.REPLY_MESSAGE_ID: message_id,
        contract.REPLY_TASK_ID: fields.get(contract.FIELD_TASK_ID, ""),
        contract.REPLY_STATUS: outcome.status,
        contract.REPLY_ERROR: outcome.error[:500],
        contract.REPLY_DURATION_MS: str(outcome.duration_ms),
        contract.REPLY_ATTEMPTS: str(outcome.attempts),
        contract.REPLY_VERSION: version,
        contract.REPLY_REPLICA: consumer,
        contract.INTERACTION_KIND: task_kind(fields, template),
        contract.INTERACTION_PRODUCER: fields.get(contract.FIELD_PRODUCER, ""),
        contract.INTERACTION_AT: str(now_ms),
    }
    pipeline.xadd(
        contract.INTERACTIONS, record, maxlen=contract.INTERACTIONS_MAXLEN, approximate=True
    )
