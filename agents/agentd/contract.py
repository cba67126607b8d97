"""What agentd and the portal agree on, in one place: both sides read these names.

agentd writes them (its exit status, its stderr, its Redis keys, its metrics); the runtimes, the
error rules, the metrics scraper and the queue pages read them. Nothing here imports Django, so
the agent image can carry it alone.
"""

from __future__ import annotations

import hashlib
import re

# --- how agentd ends ------------------------------------------------------------------------------

EXIT_OK = 0
# The configuration (file, environment, PATCH /config) could not be used; the stderr line that
# says why starts with BAD_CONFIG_MARKER.
EXIT_BAD_CONFIG = 2
# The HTTP port could not be bound (in use, or not allowed).
EXIT_BIND_FAILED = 3
BAD_CONFIG_MARKER = "bad configuration:"

# --- its task queue in Redis ----------------------------------------------------------------------

# The consumer group every replica of an agent reads the stream with.
CONSUMER_GROUP = "agentd"


def task_stream(slug: str) -> str:
    """The stream producers add an agent's tasks to."""
    return f"agents:{slug}:tasks"


def version_stream(slug: str, version: str) -> str:
    """The stream of tasks addressed to one version of the agent only: during an upgrade (two
    versions side by side) the portal's preview tests and the canary's share go here, and only
    replicas of that version read it."""
    return f"agents:{slug}:tasks:v{version}"


def routing_key(slug: str) -> str:
    """The hash that says which version takes which tasks of the agent's main stream (fields
    below). No hash, or one without ``serving``: every replica takes everything."""
    return f"agents:{slug}:routing"


# The version whose replicas read the main stream.
ROUTING_SERVING = "serving"
# A version that takes a share of the main stream's tasks, or "".
ROUTING_CANARY = "canary"
# The canary's share in percent, 0 to 100.
ROUTING_WEIGHT = "weight"


def canary_bucket(key: str) -> int:
    """The bucket, 0 to 99, of a task's key (its ``task_id``, else its message id): a task goes to
    the canary when its bucket is below the canary's weight. Derived from the key alone, so a
    redelivered task is routed the same way by every replica."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % 100


def routing_sequence(slug: str) -> str:
    """A counter the serving replicas draw a number from for each main-stream task while a
    canary takes a share: the numbers, spread by :func:`spread_bucket`, give the canary exactly
    its share of every hundred tasks."""
    return f"agents:{slug}:routing:seq"


def spread_bucket(sequence: int) -> int:
    """The bucket, 0 to 99, of the ``sequence``-th task: 61 is prime to 100, so every hundred
    consecutive numbers fill each bucket once, and the canary's buckets are spread among them
    rather than bunched."""
    return (sequence * 61) % 100


def dead_letters(slug: str) -> str:
    """The stream a task goes to once it has failed every retry."""
    return f"agents:{slug}:dlq"


def failure_counts(slug: str) -> str:
    """The hash of how often each task has failed so far."""
    return f"agents:{slug}:failures"


def consumer_name(slug: str, replica: int) -> str:
    return f"{slug}-{replica}"


def replica_of(consumer: str, slug: str) -> int | None:
    """The replica number a consumer name stands for, or None if it is not one of ours."""
    prefix = f"{slug}-"
    if not consumer.startswith(prefix) or not consumer[len(prefix) :].isdecimal():
        return None
    return int(consumer[len(prefix) :])


def attempt_log(slug: str) -> str:
    """The hash of each failing task's attempts so far: task id -> JSON list of
    ``{"at": <epoch ms>, "error": ..., "replica": <consumer name>}``. Emptied when the task is
    done or dead-lettered (its attempts then travel in the dead letter's ``attempts`` field)."""
    return f"agents:{slug}:attempts"


def counters(slug: str) -> str:
    """The hash of lifetime counts of the queue (the fields below). agentd increments
    processed, failed and dead_lettered in the same transaction as the move it counts; the
    portal increments purged when it deletes tasks from the stream. The stream keeps exactly the
    work not yet done, so what went in between two looks is its growth plus what left it."""
    return f"agents:{slug}:counters"


def producer_counts(slug: str) -> str:
    """The hash of how many tasks agentd took from each producer (its ``producer`` field; ""
    when a task has none): incremented when a task is done or dead-lettered, in the same
    transaction. The portal draws the flow diagram's edges from its growth."""
    return f"agents:{slug}:producers"


COUNTER_PROCESSED = "processed"
COUNTER_FAILED = "failed"
COUNTER_DEAD_LETTERED = "dead_lettered"
COUNTER_PURGED = "purged"


def dead_letter_groups(slug: str) -> str:
    """The hash of how many dead letters there are per error fingerprint. agentd adds 1 in the
    transaction that dead-letters a task; the portal takes 1 off in the script that redrives or
    deletes one, so the counts stay exact."""
    return f"agents:{slug}:dlq:groups"


def dead_letter_labels(slug: str) -> str:
    """The hash of fingerprint -> the normalised error text it stands for (a group's label)."""
    return f"agents:{slug}:dlq:labels"


# --- the fields of a task message -------------------------------------------------------------

# Who put the task on the stream: an agent slug, "portal:<user>", "workflow:<run>",
# "customer:<id>". A task without one was produced by something that predates the field.
FIELD_PRODUCER = "producer"
# The customer the task is for, where there is one.
FIELD_CUSTOMER = "customer"
# The task's own input, a JSON text (an object).
FIELD_PAYLOAD = "payload"
# How often the task was sent back from the dead letters to the stream.
FIELD_REDRIVES = "redrive_count"
# When the producer sent it, epoch milliseconds (the stream id says when Redis took it).
FIELD_SENT_AT = "sent_at"
# On a task an agent forwarded (config ``forward``): how many forwards led to it. agentd forwards
# a task that came through FORWARD_MAX_HOPS forwards no further, so a cycle of forwarding agents
# cannot keep traffic going round for ever.
FIELD_HOPS = "hops"
FORWARD_MAX_HOPS = 8

# The producer's own id for the task (a workflow's step attempt, say). agentd answers a task id
# once: a later message with an id it has already answered is acknowledged and not processed.
FIELD_TASK_ID = "task_id"
# A stream agentd adds the task's outcome to (the reply), when the task is done or dead-lettered.
FIELD_REPLY_TO = "reply_to"


def answered(slug: str) -> str:
    """The sorted set of the task ids the agent has answered, scored by when (epoch ms); ids
    older than ANSWERED_KEEP_MS are dropped as new ones come."""
    return f"agents:{slug}:answered"


ANSWERED_KEEP_MS = 7 * 24 * 3600 * 1000


def reply_stream(owner: str) -> str:
    """A stream replies are asked to go to: ``replies:workflow-step:<id>`` for one step attempt
    of a workflow (the portal reads it, then deletes it)."""
    return f"replies:{owner}"


# A reply stream keeps about this many replies (XADD MAXLEN ~).
REPLY_MAXLEN = 100_000

# The fields of a reply.
REPLY_TASK_ID = "task_id"  # the task's FIELD_TASK_ID ("" when it had none)
REPLY_MESSAGE_ID = "message_id"  # the task's id on the agent's stream
REPLY_AGENT = "agent"  # the agent's slug
REPLY_STATUS = "status"  # REPLY_SUCCEEDED or REPLY_DEAD_LETTERED
REPLY_OUTPUT = "output"  # JSON text: what the task produced ({} when it failed)
REPLY_ERROR = "error"  # the last attempt's error ("" when it succeeded)
REPLY_DURATION_MS = "duration_ms"  # the answering attempt's processing time
REPLY_VERSION = "version"  # the agentd version that answered
REPLY_REPLICA = "replica"  # the consumer name that answered
REPLY_ATTEMPTS = "attempts"  # how many attempts the task took
REPLY_CUSTOMER = "customer"  # the task's customer, when it had one
REPLY_SUCCEEDED = "succeeded"
REPLY_DEAD_LETTERED = "dead_lettered"

# Every task done for a customer (it has a FIELD_CUSTOMER), succeeded or dead-lettered, is also
# added to this one stream, in the transaction that acknowledges it: the portal's help desk reads
# it into its interactions (and deletes what it has stored). Its fields are the reply's (without
# the output) plus these.
INTERACTIONS = "customers:interactions"
INTERACTIONS_MAXLEN = 1_000_000
INTERACTION_KIND = "kind"  # the payload's "kind" or "op", else the agent's template
INTERACTION_PRODUCER = "producer"  # the task's FIELD_PRODUCER
INTERACTION_AT = "at"  # when it ended, epoch ms

# What agentd adds to a task when it dead-letters it (every field of the task is kept).
DLQ_ERROR = "error"  # the last attempt's error
DLQ_FAILURES = "failures"  # how many attempts failed
DLQ_ORIGINAL_ID = "original_id"  # the task's id on the stream
DLQ_ATTEMPTS = "attempts"  # JSON list, as in attempt_log
DLQ_FIRST_FAILED_AT = "first_failed_at"  # epoch ms
DLQ_LAST_FAILED_AT = "last_failed_at"  # epoch ms
DLQ_REPLICA = "replica"  # the consumer name that failed it last
DLQ_FINGERPRINT = "fingerprint"  # error_fingerprint(error)[0]

_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_STREAM_ID = re.compile(r"\b\d{10,}-\d+\b")
_HEX = re.compile(r"\b(?:0x)?[0-9a-fA-F]*\d[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\b|\b0x[0-9a-fA-F]+\b")
_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\d.])")
_LONG_NUMBER = re.compile(r"\b\d{6,}\b")
_SPACES = re.compile(r"\s+")
FINGERPRINT_LABEL_CHARS = 160


def error_fingerprint(error: str) -> tuple[str, str]:
    """(fingerprint, label) of an error text: the label is the text with what varies between
    occurrences of one fault (ids, hex, decimals, long numbers) replaced, so "ConnectionError:
    wow-cache:6379" stays whole while task ids and timings do not split a group; the
    fingerprint is 12 hex digits of its SHA-1."""
    label = _UUID.sub("<id>", error)
    label = _STREAM_ID.sub("<id>", label)
    label = _HEX.sub(lambda m: m.group(0) if len(m.group(0)) < 8 else "<hex>", label)
    label = _DECIMAL.sub("<n>", label)
    label = _LONG_NUMBER.sub("<n>", label)
    label = _SPACES.sub(" ", label).strip()[:FINGERPRINT_LABEL_CHARS] or "(no error text)"
    return hashlib.sha1(label.encode(), usedforsecurity=False).hexdigest()[:12], label


# --- its metrics (GET /metrics, Prometheus text) --------------------------------------------------

METRIC_UP = "agentd_up"
METRIC_TASKS_PROCESSED = "agentd_tasks_processed_total"
METRIC_TASKS_FAILED = "agentd_tasks_failed_total"
METRIC_TASKS_DEAD_LETTERED = "agentd_tasks_dead_lettered_total"
# Tasks handed on to another agent (config ``forward``), labelled ``to`` (its slug).
METRIC_TASKS_FORWARDED = "agentd_tasks_forwarded_total"
# Tasks of the main stream handed to another version's stream (see routing_key), labelled
# ``to_version``.
METRIC_TASKS_ROUTED = "agentd_tasks_routed_total"
# Always 1, labelled ``version``: the agentd version of the replica, so its figures can be
# attributed to a version.
METRIC_BUILD_INFO = "agentd_build_info"
METRIC_QUEUE_DEPTH = "agentd_queue_depth"
METRIC_QUEUE_PENDING = "agentd_queue_pending"
METRIC_DEAD_LETTER_DEPTH = "agentd_dead_letter_depth"
METRIC_CPU_SECONDS = "agentd_process_cpu_seconds_total"
METRIC_RESIDENT_MEMORY = "agentd_process_resident_memory_bytes"
METRIC_TASK_LATENCY = "agentd_task_latency_seconds"
# The monitoring template's probes, labelled ``target`` (its name) and ``kind`` (http or tcp); the
# checks counter is labelled ``target`` and ``result`` (up or down).
METRIC_PROBE_UP = "agentd_probe_up"
METRIC_PROBE_LATENCY = "agentd_probe_latency_seconds"
METRIC_PROBE_CHECKS = "agentd_probe_checks_total"

# --- the orchestration template -------------------------------------------------------------------


def orchestration_reply_stream(slug: str, message_id: str) -> str:
    """The stream the sub-tasks of one orchestration task (``message_id`` on the agent ``slug``'s
    stream) are answered on; it expires an hour after the task gathered its replies."""
    return reply_stream(f"orchestration:{slug}:{message_id}")


def orchestration_sent(slug: str, sub_task_id: str) -> str:
    """The marker that one sub-task of an orchestration was sent, set in the script that sends it,
    so a retried orchestration task sends each sub-task once."""
    return f"agents:{slug}:orchestration:sent:{sub_task_id}"
