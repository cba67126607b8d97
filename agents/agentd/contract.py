"""What agentd and the portal agree on, in one place: both sides read these names.

agentd writes them (its exit status, its stderr, its Redis keys, its metrics); the runtimes, the
error rules, the metrics scraper and the queue pages read them. Nothing here imports Django, so
the agent image can carry it alone.
"""

from __future__ import annotations

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


def dead_letters(slug: str) -> str:
    """The stream a task goes to once it has failed every retry."""
    return f"agents:{slug}:dlq"


def failure_counts(slug: str) -> str:
    """The hash of how often each task has failed so far."""
    return f"agents:{slug}:failures"


def consumer_name(slug: str, replica: int) -> str:
    return f"{slug}-{replica}"


# --- its metrics (GET /metrics, Prometheus text) --------------------------------------------------

METRIC_UP = "agentd_up"
METRIC_TASKS_PROCESSED = "agentd_tasks_processed_total"
METRIC_TASKS_FAILED = "agentd_tasks_failed_total"
METRIC_TASKS_DEAD_LETTERED = "agentd_tasks_dead_lettered_total"
METRIC_QUEUE_DEPTH = "agentd_queue_depth"
METRIC_QUEUE_PENDING = "agentd_queue_pending"
METRIC_DEAD_LETTER_DEPTH = "agentd_dead_letter_depth"
METRIC_CPU_SECONDS = "agentd_process_cpu_seconds_total"
METRIC_RESIDENT_MEMORY = "agentd_process_resident_memory_bytes"
METRIC_TASK_LATENCY = "agentd_task_latency_seconds"
