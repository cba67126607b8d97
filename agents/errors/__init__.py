"""Agent errors: what went wrong, why, and the way out.

- ``record``: a failure seen (a failed action, a crash, failing health checks, repeated task
  failures) recorded once with its classification, root cause, evidence and ranked fixes
  (the rules in ``rules``, pure functions).
- ``recovery``: a one-click fix run through the lifecycle services and verified.
- ``reports``: patterns, the error rate, counts by agent and class.

Other code uses this package's names (``errors.record_error``...). ``record`` and ``rules``
sit below ``agents.services``; ``recovery`` above it (see ``agents/services/__init__.py``).
"""

# ruff: noqa: F401 (this package re-exports its modules' names)

from agents.errors.record import (
    AUTOMATIC_RESTART_CLASSES,
    CRASH_WINDOW,
    RecoveryRefused,
    allows_automatic_restart,
    automatic_recovery_on,
    check_task_failures,
    ignore_error,
    latest_open_error,
    record_automatic_attempt,
    record_error,
    resolve_by_itself,
    set_automatic_recovery,
)

# recovery last: it imports agents.services, whose modules import the record module above.
from agents.errors.recovery import (
    RECOVERY_LEASE,
    request_recovery,
    resume_stalled_recoveries,
    run_recovery,
    verify,
    verify_reconciled,
)
from agents.errors.reports import counts_by_agent_and_class, error_rate, patterns
