"""Watching a workflow run from a command (``workflows ... --follow``, ``factory create
--follow``): a line per step as its status changes, the shared job watcher's progress, and the
sentence a run that did not succeed ends with."""

from __future__ import annotations

from django.core.management.base import CommandError
from rich.console import Console
from rich.text import Text

from agents.workflows.models import Role, RunStatus, StepRun, WorkflowRun
from portal.cli import JobProgress, watch_job

FOLLOW_POLL_SECONDS = 0.3
STYLES = {
    "succeeded": "green", "passed": "green", "failed": "red", "error": "red",
    "cancelled": "yellow", "rolled_back": "yellow", "rolling_back": "magenta", "running": "cyan",
    "paused": "yellow", "queued": "cyan", "skipped": "bright_black", "pending": "bright_black",
}  # fmt: skip


def status_text(status: str) -> Text:
    return Text(status, style=STYLES.get(status, ""))


def print_transition(console: Console, row: StepRun) -> None:
    who = row.step_id if row.role == Role.FORWARD else f"↶ {row.step_id}"
    text = Text.assemble(f"  {who} ({row.title}): ", status_text(row.status))
    if row.attempt > 1:
        text.append(f" (attempt {row.attempt})")
    if row.status == "failed" and row.error:
        text.append(f": {row.error}", style="red")
    console.print(text)


def follow_run(run: WorkflowRun, console: Console, *, goes_on: str = "it goes on") -> int:
    """Watch ``run`` until it ends, a line per step change on ``console``; answers the job
    watcher's exit status (0 only when it succeeded). Ctrl-C stops watching, not the run."""
    seen: dict[tuple[str, str], tuple[str, int]] = {}

    def poll() -> JobProgress:
        run.refresh_from_db()
        rows = StepRun.objects.filter(run=run, current=True).only(
            "step_id", "role", "title", "status", "attempt", "error", "started_at",
            "finished_at", "position",
        ).order_by("role", "position")  # fmt: skip
        for row in rows:
            key = (row.role, row.step_id)
            if seen.get(key) != (row.status, row.attempt):
                if key in seen or row.status != "pending":
                    print_transition(console, row)
                seen[key] = (row.status, row.attempt)
        return JobProgress(
            status=run.get_status_display().lower(),
            finished=run.is_finished,
            succeeded=run.status == RunStatus.SUCCEEDED,
            picked_up=run.is_finished or any(r.started_at for r in rows),
            done=run.completed_steps,
            total=run.total_steps or None,
            counts=f"✓ {run.completed_steps} ✗ {run.failed_steps}",
        )

    try:
        return watch_job(
            poll, console=console, label=f"#{run.pk} {run.title}",
            no_worker_hint="Its steps wait for a Celery worker.",
            poll_seconds=FOLLOW_POLL_SECONDS,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise CommandError(
            f"Stopped watching run #{run.pk}; {goes_on}. `manage.py workflows show {run.pk}` "
            f"shows it, `workflows cancel {run.pk}` stops it."
        ) from None


def run_failed(run: WorkflowRun, what: str) -> CommandError:
    """The error a followed run that did not succeed ends the command with (status 1)."""
    return CommandError(
        f"{what} {run.get_status_display().lower()}"
        + (f": {run.error}" if run.error else ".")
        + (
            f" `manage.py workflows retry {run.pk}` previews a retry."
            if run.status == RunStatus.FAILED
            else ""
        ),  # fmt: skip
        returncode=1,
    )
