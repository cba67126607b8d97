"""``manage.py agents`` subcommands for errors and their recoveries (mixed into the command).

agents errors [--open | --status S] [--agent SLUG] [--class C] [--limit N] [--json]
agents errors show <id> [--json]      (also: agents error <id>)
agents errors ignore <id> [--reason TEXT]
agents errors patterns [--days N] [--agent SLUG] [--json]
agents errors stats [--days N] [--json]
agents recover <error-id> <action> [--inline | --no-wait]
agents auto-recovery [on | off | status]

``agents recover`` exits 0 when the recovery fixed the error (verified RUNNING and healthy), 1
when it ran but did not help or failed, and 2 when it was refused or the input is wrong (nothing
was tried), so scripts can tell the three apart.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from django.core.management.base import CommandError
from django.utils import timezone
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agents import errors, services
from agents.errors.rules import RECOVERIES
from agents.models import (
    Agent,
    AgentError,
    ErrorClass,
    Operation,
    RecoveryAttempt,
    RecoverySwitch,
)
from agents.schemas import error_out, errors_with_attempts, pattern_out
from portal.actors import Actor
from portal.cli import InlineJob, JobProgress, dumps, refusals_as_command_errors, watch_job
from portal.refusals import BadFilter

ERROR_VERBS = ["show", "patterns", "stats", "ignore"]
STATUS_STYLES = {
    AgentError.Status.OPEN: "red",
    AgentError.Status.RECOVERING: "yellow",
    AgentError.Status.RESOLVED: "green",
    AgentError.Status.IGNORED: "bright_black",
}
OUTCOME_STYLES = {
    RecoveryAttempt.Outcome.RUNNING: "yellow",
    RecoveryAttempt.Outcome.FIXED: "green",
    RecoveryAttempt.Outcome.DID_NOT_HELP: "red",
    RecoveryAttempt.Outcome.FAILED: "red",
}
RECOVERY_POLL_SECONDS = 0.3
# Exit statuses of ``agents recover`` beyond 0 (fixed).
NOT_FIXED = 1
REFUSED = 2


def add_error_arguments(sub) -> None:
    """The subcommands ``errors``, ``error``, ``recover`` and ``auto-recovery``."""
    listing = sub.add_parser(
        "errors",
        help="Errors the portal saw: list (default), show <id>, patterns, stats, ignore <id>.",
        description="Without a verb: the errors, newest first.",
    )
    listing.add_argument(
        "--open", dest="open_only", action="store_true", help="Only open and recovering ones."
    )
    listing.add_argument("--status", help="Only this status: " + ", ".join(AgentError.Status))
    listing.add_argument("--agent", help="Only this agent's (a slug).")
    listing.add_argument(
        "--class", dest="classification", help="Only this class: " + ", ".join(ErrorClass)
    )
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="JSON (as the API answers).")
    verbs = listing.add_subparsers(dest="errors_command", metavar="{" + ",".join(ERROR_VERBS) + "}")
    show = verbs.add_parser("show", help="One error: root cause, evidence, suggestions, attempts.")
    show.add_argument("error_id", type=int, metavar="id")
    show.add_argument("--json", action="store_true")
    patterns = verbs.add_parser("patterns", help="The same failure grouped, most frequent first.")
    patterns.add_argument("--days", type=int, default=7, help="How far back (default 7).")
    patterns.add_argument("--agent", help="Only this agent's (a slug).")
    patterns.add_argument("--json", action="store_true")
    stats = verbs.add_parser("stats", help="Error rate, open errors, counts per agent and class.")
    stats.add_argument("--days", type=int, default=7, help="How far back (default 7).")
    stats.add_argument("--json", action="store_true")

    ignore = verbs.add_parser("ignore", help="Close an open error without fixing it.")
    ignore.add_argument("error_id", type=int, metavar="id")
    ignore.add_argument("--reason", default="", help="Why; kept on the error and in the audit.")

    one = sub.add_parser("error", help="One error (same as `errors show <id>`).")
    one.add_argument("error_id", type=int, metavar="id")
    one.add_argument("--json", action="store_true")

    recover = sub.add_parser(
        "recover",
        help="Run a one-click recovery of an error and wait for the verdict.",
        description=(
            "Exit status: 0 fixed (RUNNING and healthy afterwards), 1 it did not help or "
            "failed, 2 refused (nothing was tried)."
        ),
    )
    recover.add_argument("error_id", type=int, metavar="error-id")
    recover.add_argument("action", metavar="action", help="One of: " + ", ".join(RECOVERIES))
    recover.add_argument(
        "--inline",
        action="store_true",
        help="Carry it out in this process instead of the worker (worker down).",
    )
    recover.add_argument(
        "--no-wait", action="store_true", help="Print the attempt's id and return at once."
    )

    switch = sub.add_parser(
        "auto-recovery", help="Whether the portal restarts failed agents by itself (kill switch)."
    )
    switch.add_argument("switch", nargs="?", choices=["on", "off", "status"], default="status")


class ErrorCommands:
    """The handlers; ``Command.handle`` dispatches ``errors`` to ``_errors`` and so on."""

    # --- reading ------------------------------------------------------------------------------

    def _errors(self, errors_command: str | None = None, **options) -> None:
        if errors_command is None:
            self._errors_list(**options)
        else:
            getattr(self, f"_errors_{errors_command}")(**options)

    def _errors_list(
        self,
        open_only: bool,
        status: str | None,
        agent: str | None,
        classification: str | None,
        limit: int,
        json: bool,
        **options,
    ) -> None:
        try:
            rows = errors_with_attempts().filtered(status=status, classification=classification)
        except BadFilter as bad:
            flag = {"classification": "--class "}.get(bad.field, f"--{bad.field} ")
            raise CommandError(bad.spelled(flag), returncode=2) from None
        if open_only:
            rows = rows.open()
        if agent:
            rows = rows.filter(agent=_agent(agent))
        found = list(rows[: max(1, limit)])
        if json:
            self.stdout.write(dumps([error_out(error) for error in found]))
            return
        if not found:
            self.console.print("No open errors." if open_only else "No errors.")
            return
        table = Table(box=None, header_style="bold")
        for column in ("ID", "LAST SEEN", "AGENT", "CLASS", "STATUS", "TIMES"):
            table.add_column(column)
        # One line per error; `errors show <id>` has the whole sentence.
        table.add_column("WHAT HAPPENED", no_wrap=True, overflow="ellipsis", max_width=90)
        table.add_column("ONE-CLICK FIXES")
        for error in found:
            table.add_row(
                str(error.pk), _when(error.last_seen_at), error.agent.slug, error.classification,
                Text(error.status, style=STATUS_STYLES.get(error.status, "")),
                str(error.occurrences), Text(error.summary),
                ", ".join(s["action"] for s in error.one_click) if error.is_open else "-",
            )  # fmt: skip
        self.console.print(table)

    def _error(self, error_id: int, json: bool, **options) -> None:
        self._errors_show(error_id, json)

    def _errors_show(self, error_id: int, json: bool, **options) -> None:
        error = _error(error_id)
        if json:
            self.stdout.write(dumps(error_out(error)))
            return
        say = self.console.print
        say(
            Text.assemble(
                (f"Error #{error.pk}", "bold"),
                f" on {error.agent.slug} ({error.agent.name}): ",
                (error.status, STATUS_STYLES.get(error.status, "")),
                f", {error.classification}, {error.occurrences} "
                f"time{'s' if error.occurrences != 1 else ''}",
            )
        )
        say(
            f"First seen {_when(error.occurred_at)}, last seen {_when(error.last_seen_at)}; "
            f"source {error.source}, rule {error.rule}"
            + (f", operation {error.operation_id}" if error.operation_id else "")
        )
        say(f"What happened: {error.summary}", markup=False)
        say(f"Root cause:    {error.root_cause}", markup=False)
        if error.evidence:
            say("Evidence (the last log lines before it):")
            for line in error.evidence:
                say(f"  {line}", markup=False)
        say("Suggestions:")
        for rank, suggestion in enumerate(error.suggestions, start=1):
            how = (
                f"  `manage.py agents recover {error.pk} {suggestion['action']}`"
                if suggestion["action"] and error.is_open
                else ""
            )
            say(f"  {rank}. {suggestion['label']}{how}", markup=False)
            say(f"     {suggestion['text']}", markup=False)
        attempts = list(error.attempts.all())
        if attempts:
            say("Attempts:")
            table = Table(box=None, header_style="bold", padding=(0, 1, 0, 2))
            for column in ("STARTED", "ACTION", "BY", "OUTCOME", "DETAIL"):
                table.add_column(column)
            for attempt in attempts:
                table.add_row(
                    _when(attempt.started_at), attempt.action,
                    attempt.actor + (" (automatic)" if attempt.automatic else ""),
                    Text(attempt.outcome, style=OUTCOME_STYLES.get(attempt.outcome, "")),
                    Text(attempt.detail or "-"),
                )  # fmt: skip
            say(table)
        if error.resolved_at:
            say(
                f"{error.get_status_display()} by {error.resolved_by} at "
                f"{_when(error.resolved_at)}: {error.resolution}",
                markup=False,
            )

    def _errors_patterns(self, days: int, agent: str | None, json: bool, **options) -> None:
        rows = errors.patterns(since=_since(days), agent=_agent(agent) if agent else None)
        if json:
            self.stdout.write(dumps([pattern_out(row) for row in rows]))
            return
        if not rows:
            self.console.print(f"No errors in the last {days} days.")
            return
        table = Table(box=None, header_style="bold")
        for column in ("TIMES", "AGENTS", "OPEN", "CLASS", "PATTERN", "FIRST", "LAST"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                str(row["times"]), str(row["agents"]), str(row["open"]), row["classification"],
                Text(row["pattern"]), _when(row["first"]), _when(row["last"]),
            )  # fmt: skip
        self.console.print(table)

    def _errors_stats(self, days: int, json: bool, **options) -> None:
        rate = errors.error_rate()
        counts = errors.counts_by_agent_and_class(since=_since(days))
        if json:
            # Not ``error_stats_out``: its rows name the agent ``agent``, these ``agent__slug``
            # (scripts read them so).
            self.stdout.write(dumps({**rate, "by_agent_and_class": counts}))
            return
        self.console.print(
            f"{rate['open']} open; {rate['last_hour']} seen in the last hour, "
            f"{rate['per_hour_24h']:g} an hour over the last 24 h."
        )
        if counts:
            table = Table(box=None, header_style="bold")
            for column in ("AGENT", "CLASS", "TIMES"):
                table.add_column(column)
            for row in counts:
                table.add_row(row["agent__slug"], row["classification"], str(row["times"]))
            self.console.print(table)

    def _errors_ignore(self, error_id: int, reason: str, **options) -> None:
        error = _error(error_id)
        with refusals_as_command_errors():
            error = errors.ignore_error(error, Actor.command("agents errors ignore"), reason)
        self.console.print(
            f"Error #{error.pk} ({error.agent.slug}) ignored: {escape(error.resolution)}"
        )

    # --- recovering ---------------------------------------------------------------------------

    def _recover(self, error_id: int, action: str, inline: bool, no_wait: bool, **options) -> None:
        if inline and no_wait:
            raise CommandError(
                "--inline carries the recovery out in this process, which must wait for it: "
                "drop --no-wait (or --inline, to hand it to a worker).",
                returncode=REFUSED,
            )
        error = _error(error_id, returncode=REFUSED)
        with refusals_as_command_errors(returncode=REFUSED):
            attempt = errors.request_recovery(
                error, action, Actor.command("agents recover"), enqueue=not inline
            )
        if no_wait:
            self.stdout.write(str(attempt.pk))
            self.err.print(
                f"{RECOVERIES[action]} of error #{error.pk} queued (attempt {attempt.pk}); "
                f"`manage.py agents errors show {error.pk}` shows its outcome."
            )
            return
        runner = (
            InlineJob(f"recovery-{attempt.pk}-inline", partial(errors.run_recovery, attempt.pk))
            if inline
            else None
        )
        if runner is not None:
            runner.start()
        attempt = self._watch_recovery(attempt, error.agent, runner)
        self._report_attempt(attempt, error.agent)
        if attempt.outcome != RecoveryAttempt.Outcome.FIXED:
            raise CommandError(
                f"Error #{error.pk} is still open; `manage.py agents errors show {error.pk}` shows "
                "the other suggestions.",
                returncode=NOT_FIXED,
            )

    def _watch_recovery(
        self, attempt: RecoveryAttempt, agent: Agent, runner: InlineJob | None
    ) -> RecoveryAttempt:
        """A spinner (on stderr) with the agent's state until the attempt has its verdict."""
        begun = runner is not None

        def poll() -> JobProgress:
            nonlocal begun
            attempt.refresh_from_db()
            if attempt.outcome != RecoveryAttempt.Outcome.RUNNING or (
                runner is not None and not runner.is_alive()
            ):
                return JobProgress(
                    status=attempt.outcome,
                    finished=True,
                    succeeded=attempt.outcome == RecoveryAttempt.Outcome.FIXED,
                )
            # A fresh row, not agent.refresh_from_db(): django-fsm's refresh lifts the state
            # field's protection for the whole process, racing a worker thread.
            now = Agent.objects.only("state", "pending_action").get(pk=agent.pk)
            doing = f", {now.pending_label}" if now.pending_action else ""
            begun = begun or _worker_began(attempt)
            return JobProgress(status=f"{now.state}{doing}", finished=False, picked_up=begun)

        try:
            watch_job(
                poll,
                console=self.err,
                label=f"{RECOVERIES[attempt.action]} ({agent.slug}, error #{attempt.error_id})",
                no_worker_hint="Ctrl-C stops watching (it stays queued); --inline carries a "
                "recovery out here.",
                poll_seconds=RECOVERY_POLL_SECONDS,
            )
        except KeyboardInterrupt:
            if runner is not None:
                self.err.print(
                    "[yellow]The recovery runs in this process; it finishes before the "
                    "command exits.[/]"
                )
                runner.join()
            raise CommandError(
                f"Stopped watching attempt {attempt.pk}; "
                f"`manage.py agents errors show {attempt.error_id}` shows its outcome.",
                returncode=NOT_FIXED,
            ) from None
        if runner is not None:
            if (error := runner.finish()) is not None:
                raise CommandError(
                    f"The recovery stopped on an unexpected error: {error!r}; error "
                    f"#{attempt.error_id} may stay 'recovering'.",
                    returncode=NOT_FIXED,
                )
            attempt.refresh_from_db()
        return attempt

    def _report_attempt(self, attempt: RecoveryAttempt, agent: Agent) -> None:
        took = (
            f" in {(attempt.finished_at - attempt.started_at).total_seconds():.1f} s"
            if attempt.finished_at
            else ""
        )
        mark = "[green]✓[/]" if attempt.outcome == RecoveryAttempt.Outcome.FIXED else "[red]✗[/]"
        outcome = attempt.get_outcome_display().lower()
        self.console.print(
            f"{mark} Error #{attempt.error_id} ({agent.slug}): {RECOVERIES[attempt.action]}: "
            f"{outcome}{took}: {escape(attempt.detail)}"
        )

    def _auto_recovery(self, switch: str, **options) -> None:
        if switch != "status":
            with refusals_as_command_errors():
                errors.set_automatic_recovery(switch == "on", Actor.command("agents auto-recovery"))
        on = errors.automatic_recovery_on()
        row = RecoverySwitch.objects.filter(pk=1).first()
        how = (
            f" (switched {'on' if on else 'off'} by {row.changed_by} at {_when(row.changed_at)})"
            if row is not None and row.changed_at
            else " (the AGENT_AUTO_RECOVERY setting)"
        )
        self.console.print(f"Automatic recovery is {'on' if on else 'off'}{how}.")


def _error(error_id: int, returncode: int = 1) -> AgentError:
    try:
        return errors_with_attempts().get(pk=error_id)
    except AgentError.DoesNotExist:
        raise CommandError(
            f"There is no error #{error_id}; `manage.py agents errors` lists them.",
            returncode=returncode,
        ) from None


def _agent(slug: str) -> Agent:
    try:
        return services.get_agent(slug)
    except Agent.DoesNotExist as missing:
        raise CommandError(str(missing)) from None


def _since(days: int):
    if not 1 <= days <= 366:
        raise CommandError(f"--days {days} is out of range; give a whole number from 1 to 366.")
    return timezone.now() - timedelta(days=days)


def _worker_began(attempt: RecoveryAttempt) -> bool:
    """Every recovery takes a lifecycle action on behalf of the requester: none yet means no
    worker has picked the attempt up."""
    return Operation.objects.filter(
        actor=attempt.actor, requested_at__gte=attempt.started_at
    ).exists()


def _when(moment) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S}" if moment else "-"
