"""Bulk operations: one lifecycle action on many agents, previewed, then run by a Celery job
with bounded parallelism, in dependency order.

1. ``plan``: ``preview_bulk`` (or ``plan_bulk``) says, without changing anything, what each
   chosen agent would go through, which are skipped and why, and which agents outside the
   selection lose a dependency; it also names the phrase a dangerous run is confirmed with.
2. ``operations``: ``create_bulk_operation`` re-plans under row locks and records a
   ``BulkOperation`` with one ``BulkItem`` per agent, then hands it to a worker; retry, roll
   back and cancel.
3. ``runner``: ``run_bulk_operation`` (the task) works through the items: at most
   ``parallelism`` at a time, each holding one of ``AGENT_MAX_CONCURRENT_ACTIONS`` slots shared
   by every bulk job, an item starting only when the items it depends on have finished. Each
   step is an ordinary ``Operation`` through the lifecycle services, so permission checks,
   history and audit are the same as for one agent.
4. ``summary``: progress and the time left.

Crash safety: a runner holds a PostgreSQL advisory lock for its bulk operation, so two workers
never run the same one, and the lock goes away with the worker's connection if it dies. The
items record each step's operation before running it, so a runner picking the job up again
(Celery redelivery, the beat sweep, a worker starting) finishes the step in flight and goes on;
nothing finished is done twice. Slots are advisory locks too, freed by a dead worker's
connection.
"""

# ruff: noqa: F401 (this package re-exports its modules' names)

from agents.bulk.operations import (
    cancel_bulk_operation,
    create_bulk_operation,
    retry_failed,
    roll_back,
)
from agents.bulk.plan import (
    BULK_ACTION_LABELS,
    BULK_ACTIONS,
    ROLLBACK,
    SHORTCUT_LABELS,
    SHORTCUTS,
    BulkPlan,
    BulkRefused,
    PlannedItem,
    can_roll_back,
    check_parallelism,
    describe_filter,
    is_upward,
    needs_running_dependencies,
    plan_bulk,
    plan_rollback,
    preview_bulk,
    preview_rollback,
    resolve_targets,
    rollback_steps,
    steps_for,
)
from agents.bulk.runner import (
    RUN_TASK,
    RUNNER_LOCK,
    STALLED_AFTER,
    resume_stalled_bulk_operations,
    run_bulk_operation,
)
from agents.bulk.summary import bulk_summary, estimate_seconds_left
