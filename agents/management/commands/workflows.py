"""``manage.py workflows``: workflow runs and definitions for on-call engineers.

workflows list [--status S[,S]] [--definition NAME] [--subject S] [--before ID] [--limit N] [--json]
workflows show ID [--json]
workflows start DEFINITION [-p name=value ...] [--version N] [--follow] [--json]
workflows pause|resume|cancel ID [--follow]
workflows retry ID [--from STEP] [--param name=value ...] [--dry-run] [--yes] [--follow] [--json]
workflows rollback ID [--reason TEXT] [--dry-run] [--yes] [--follow] [--json]
workflows mark ID STEP --status succeeded|skipped --reason TEXT
workflows approve ID STEP [--reject] [--note TEXT]
workflows bulk retry|cancel ID... [--json]
workflows definitions [--json]

Every control calls ``agents.workflows.services`` as ``Actor.command("workflows")``. ``--json``
prints what the API answers (``agents.workflows.schemas``). ``--follow`` watches the run to its
end with the shared job watcher, printing each step as it changes. Exit status: 0 done (or the run
succeeded), 1 the followed run failed, was cancelled or rolled back, 2 refused or bad input.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents.management.workflow_cli import follow_run, run_failed
from agents.management.workflow_cli import status_text as _status
from agents.workflows import registry, services
from agents.workflows.models import Role, WorkflowRun
from agents.workflows.schemas import (
    accepted_out,
    definition_out,
    list_runs,
    run_detail_out,
    run_out,
)
from portal.actors import Actor
from portal.cli import dumps, refusals_as_command_errors
from portal.refusals import BadFilter, Refused

REFUSED = 2
DEADLINE_LABELS = {"on_time": "on time", "at_risk": "at risk", "late": "late"}


class Command(BaseCommand):
    help = (
        "Workflow runs: list, show, start, pause, resume, cancel, retry (after a preview), roll "
        "back, mark a step, approve, bulk retry or cancel; the definitions. Exit status 1 when a "
        "followed run did not succeed, 2 when refused or for bad input."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        listing = sub.add_parser("list", help="Runs, newest first.")
        listing.add_argument("--status", help="Only these statuses (comma-separated).")
        listing.add_argument("--definition", help="Only runs of this definition (its name).")
        listing.add_argument("--subject", help="Only runs about this customer or agent.")
        listing.add_argument("--before", help="Runs older than this id (the next page).")
        listing.add_argument("--limit", default="50", help="How many (1 to 200, default 50).")
        listing.add_argument("--json", action="store_true", help="JSON, as the API answers.")
        show = sub.add_parser(
            "show", help="A run: its steps with status, attempt, duration, error."
        )
        show.add_argument("run_id", metavar="ID")
        show.add_argument("--json", action="store_true", help="JSON, as the API answers.")
        start = sub.add_parser("start", help="Start a run of a definition.")
        start.add_argument("definition", help="Its name; `workflows definitions` lists them.")
        start.add_argument(
            "-p", "--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
            help="A parameter (repeat for more).",
        )  # fmt: skip
        start.add_argument("--version", dest="definition_version", type=int, default=None)
        _follow_options(start)
        for verb, text in (
            ("pause", "No new step starts; running steps finish."),
            ("resume", "Go on with a paused run."),
            ("cancel", "Running steps are asked to stop; steps not started are skipped."),
        ):
            control = sub.add_parser(verb, help=text)
            control.add_argument("run_id", metavar="ID")
            _follow_options(control)
        retry = sub.add_parser(
            "retry", help="Run failed steps again (or from a step), after a preview."
        )
        retry.add_argument("run_id", metavar="ID")
        retry.add_argument("--from", dest="from_step", default="", metavar="STEP",
                           help="Retry from this step (and every step after it).")  # fmt: skip
        retry.add_argument(
            "--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
            help="A changed parameter (repeat for more).",
        )  # fmt: skip
        _confirm_options(retry)
        rollback = sub.add_parser(
            "rollback", help="Run the compensations of the finished steps, newest first."
        )
        rollback.add_argument("run_id", metavar="ID")
        rollback.add_argument("--reason", default="", help="Why; kept with the run.")
        _confirm_options(rollback)
        mark = sub.add_parser("mark", help="Mark a step succeeded or skipped by hand (Admin).")
        mark.add_argument("run_id", metavar="ID")
        mark.add_argument("step", metavar="STEP")
        mark.add_argument("--status", required=True, choices=["succeeded", "skipped"])
        mark.add_argument("--reason", required=True, help="Why; kept with the step.")
        approve = sub.add_parser("approve", help="Approve a step waiting for an approval.")
        approve.add_argument("run_id", metavar="ID")
        approve.add_argument("step", metavar="STEP")
        approve.add_argument("--reject", action="store_true", help="Refuse it instead.")
        approve.add_argument("--note", default="", help="Kept with the decision.")
        bulk = sub.add_parser("bulk", help="Retry (failed steps) or cancel each run named.")
        bulk.add_argument("action", choices=list(services.BULK_ACTIONS))
        bulk.add_argument("run_ids", nargs="+", metavar="ID")
        bulk.add_argument("--json", action="store_true")
        definitions = sub.add_parser("definitions", help="What can be started, with parameters.")
        definitions.add_argument("--json", action="store_true", help="JSON, as the API answers.")

    def handle(self, *args, command: str, **options) -> None:
        out = self.stdout._out
        width = None if out.isatty() else 200  # piped: wide lines, not 80-column wrapping
        self.console = Console(file=out, highlight=False, soft_wrap=True, width=width)
        self.err = Console(file=self.stderr._out, highlight=False, soft_wrap=True)
        self.actor = Actor.command("workflows")
        try:
            getattr(self, f"_{command}")(**options)
        except BadFilter as bad:
            raise CommandError(bad.spelled(f"--{bad.field} "), returncode=REFUSED) from None
        except Refused as refused:  # a refusal outside a service call (a filter, a run id)
            raise CommandError(refused.message, returncode=REFUSED) from None

    # --- reading ------------------------------------------------------------------------------

    def _list(self, status, definition, subject, before, limit, json: bool, **options) -> None:
        runs = list_runs(
            status=status, definition=definition, subject=subject, before=before, limit=limit
        )
        if json:
            self.stdout.write(dumps([run_out(run) for run in runs]))
            return
        table = Table(box=None, header_style="bold")
        for column in ("ID", "WORKFLOW", "SUBJECT", "STATUS", "STEPS", "STARTED", "DURATION",
                       "DEADLINE"):  # fmt: skip
            table.add_column(column)
        for run in runs:
            table.add_row(
                str(run.pk), run.title, run.subject or "-", _status(run.status),
                f"{run.completed_steps}/{run.total_steps}", _when(run.started_at),
                _seconds(run.duration_seconds), DEADLINE_LABELS.get(run.deadline_state, "-"),
            )  # fmt: skip
        self.console.print(table)
        if runs and len(runs) == int(limit):
            self.console.print(f"More with --before {runs[-1].pk}.", markup=False)

    def _show(self, run_id: str, json: bool, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            run = services.get_run(run_id)
        detail = run_detail_out(run)
        if json:
            self.stdout.write(dumps(detail))
            return
        say = self.console.print
        say(Text.assemble((f"#{run.pk} {run.title}", "bold"), " · ", _status(run.status),
                          f" · {run.completed_steps}/{run.total_steps} steps"))  # fmt: skip
        facts = Table.grid(padding=(0, 2))
        for label, value in (
            ("definition", f"{run.definition} v{run.version}"),
            ("subject", f"{run.subject_kind} {run.subject}".strip() or "-"),
            ("parameters", ", ".join(f"{k}={v}" for k, v in run.parameters.items()) or "-"),
            ("started", _when(run.started_at)),
            ("finished", _when(run.finished_at)),
            ("duration", _seconds(run.duration_seconds)),
            ("deadline", _deadline(detail.deadline_at, detail.deadline_state)),
            ("predicted finish", _when(detail.predicted_finish_at)),
            ("by", run.actor),
        ):
            facts.add_row(Text(label, style="bold"), Text(str(value)))
        say(facts)
        if run.error:
            say(Text(run.error, style="red"))
        table = Table(box=None, header_style="bold")
        for column in ("STEP", "TITLE", "STATUS", "ATTEMPT", "DURATION", "ERROR / REASON"):
            table.add_column(column)
        for task in detail.tasks:
            step = task.task_id if task.role == Role.FORWARD else f"↶ {task.task_id}"
            table.add_row(
                step, task.task_name, _status(task.status), str(task.attempt),
                _seconds(None if task.duration_ms is None else task.duration_ms / 1000),
                Text(task.error or task.reason or task.detail, style="red" if task.error else ""),
            )  # fmt: skip
        say(table)

    def _definitions(self, json: bool, **options) -> None:
        definitions = registry.definitions()
        if json:
            self.stdout.write(dumps([definition_out(d) for d in definitions]))
            return
        table = Table(box=None, header_style="bold")
        for column in ("NAME", "VERSION", "TITLE", "STEPS", "PARAMETERS"):
            table.add_column(column)
        for d in definitions:
            parameters = ", ".join(
                f"{p.name}:{p.type}" + ("" if p.required and p.default is None else "?")
                for p in d.parameters
            )
            table.add_row(d.name, str(d.version), d.title, str(len(d.steps)), parameters or "-")
        self.console.print(table)

    # --- acting --------------------------------------------------------------------------------

    def _start(self, definition: str, params: list[str], definition_version: int | None,
               follow: bool, json: bool, **options) -> None:  # fmt: skip
        values = _parameters(params)
        with refusals_as_command_errors(REFUSED):
            run = services.start(self.actor, definition, values, version=definition_version)
        self._done(run, f"Started {run.title} as run #{run.pk}.", follow=follow, json=json)

    def _pause(self, run_id: str, follow: bool, json: bool, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            run = services.pause(services.get_run(run_id), self.actor)
        self._done(run, f"Paused run #{run.pk}; steps already running finish.", follow, json)

    def _resume(self, run_id: str, follow: bool, json: bool, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            run = services.resume(services.get_run(run_id), self.actor)
        self._done(run, f"Resumed run #{run.pk}.", follow, json)

    def _cancel(self, run_id: str, follow: bool, json: bool, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            run = services.cancel(services.get_run(run_id), self.actor)
        self._done(run, f"Cancelled run #{run.pk}.", follow, json)

    def _retry(self, run_id: str, from_step: str, params: list[str], dry_run: bool, yes: bool,
               follow: bool, json: bool, **options) -> None:  # fmt: skip
        mode = "from" if from_step else "failed"
        changed = _parameters(params) or None
        with refusals_as_command_errors(REFUSED):
            run = services.get_run(run_id)
            plan = services.plan_retry(run, mode, from_step, changed).as_dict()
        if dry_run or not (yes and json):
            self._print_retry_plan(plan, json=json and dry_run)
        if dry_run:
            return
        self._confirm(f"Retry run #{run.pk}", yes)
        with refusals_as_command_errors(REFUSED):
            run = services.retry(run, self.actor, mode, from_step, changed)
        self._done(run, f"Retrying run #{run.pk}.", follow, json)

    def _rollback(self, run_id: str, reason: str, dry_run: bool, yes: bool, follow: bool,
                  json: bool, **options) -> None:  # fmt: skip
        with refusals_as_command_errors(REFUSED):
            run = services.get_run(run_id)
            plan = services.plan_rollback(run)
        if dry_run or not (yes and json):
            self._print_rollback_plan(plan, json=json and dry_run)
        if dry_run:
            return
        self._confirm(f"Roll back run #{run.pk}", yes)
        with refusals_as_command_errors(REFUSED):
            run = services.rollback(run, self.actor, reason)
        self._done(run, f"Rolling back run #{run.pk}.", follow, json)

    def _mark(self, run_id: str, step: str, status: str, reason: str, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            run = services.mark(services.get_run(run_id), step, status, self.actor, reason)
        self.console.print(f"Marked {step} of run #{run.pk} {status}.", markup=False)

    def _approve(self, run_id: str, step: str, reject: bool, note: str, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            run = services.get_run(run_id)
            services.approve(run, step, self.actor, approved=not reject, note=note)
        verb = "Rejected" if reject else "Approved"
        self.console.print(f"{verb} {step} of run #{run.pk}.", markup=False)

    def _bulk(self, action: str, run_ids: list[str], json: bool, **options) -> None:
        with refusals_as_command_errors(REFUSED):
            outcomes = services.bulk(self.actor, action, run_ids)
        if json:
            self.stdout.write(dumps(outcomes))
        else:
            for outcome in outcomes:
                result = "ok" if outcome["ok"] else f"refused: {outcome['detail']}"
                self.console.print(f"#{outcome['workflow_id']} {action}: {result}", markup=False)
        refused = [o for o in outcomes if not o["ok"]]
        if refused:
            raise CommandError(
                f"{len(refused)} of {len(outcomes)} runs refused the {action}.", returncode=REFUSED
            )

    # --- previews, confirmation, following -----------------------------------------------------

    def _print_retry_plan(self, plan: dict, *, json: bool) -> None:
        if json:
            self.stdout.write(dumps(plan))
            return
        say = self.console.print
        changed = ", ".join(f"{k}={plan['parameters'][k]}" for k in plan["changed_parameters"])
        say(f"Retry of run #{plan['workflow_id']}" + (f" with {changed}" if changed else "")
            + (" (continues the roll-back)" if plan["continues_rollback"] else "") + ":",
            markup=False)  # fmt: skip
        table = Table(box=None, header_style="bold")
        for column in ("STEP", "NOW", "WHAT HAPPENS", "WHY"):
            table.add_column(column)
        for step in plan["will_run"]:
            table.add_row(step["step"], _status(step["status"]), Text("runs again", "cyan"),
                          step["why"])  # fmt: skip
        for step in plan["reused"]:
            table.add_row(step["step"], _status(step["status"]), "output reused", step["why"])
        say(table)
        for effect in plan["side_effects"]:
            say(Text(f"Repeats: {effect}", style="yellow"))

    def _print_rollback_plan(self, plan: dict, *, json: bool) -> None:
        if json:
            self.stdout.write(dumps(plan))
            return
        say = self.console.print
        say(f"Roll-back of run #{plan['workflow_id']}: the compensations run in this order:",
            markup=False)  # fmt: skip
        for n, step in enumerate(plan["compensations"], 1):
            say(f"  {n}. {step['title']} (undoes {step['undoes']}): {step['does']}", markup=False)
        if plan["not_undone"]:
            kept = ", ".join(s["title"] for s in plan["not_undone"])
            say(Text(f"Nothing undoes: {kept}.", style="yellow"))
        if plan["cancels"]:
            say(Text(f"Stops first: {', '.join(plan['cancels'])}.", style="yellow"))

    def _confirm(self, doing: str, yes: bool) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise CommandError(
                f"{doing}: read the preview above, then run it at a terminal or pass --yes. "
                "Nothing was done.",
                returncode=REFUSED,
            )
        self.err.print(f"{doing}? [y/N] ", end="", markup=False)
        try:
            answer = input()
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("Not confirmed; nothing was done.", returncode=REFUSED)

    def _done(self, run: WorkflowRun, message: str, follow: bool, json: bool) -> None:
        """Say what was done (or answer the API's 202 body), then maybe follow the run."""
        if json and not follow:
            self.stdout.write(dumps(accepted_out(run)))
            return
        if not json:
            self.console.print(message, markup=False)
        if follow:
            self._follow(run, json=json)

    def _follow(self, run: WorkflowRun, *, json: bool) -> None:
        """Watch the run until it ends, printing each step as its status changes; exit 1 unless
        it succeeded."""
        exit_status = follow_run(run, self.err)
        if json:
            self.stdout.write(dumps(run_detail_out(run)))
        else:
            self.console.print(
                f"Run #{run.pk} {run.get_status_display().lower()} after "
                f"{_seconds(run.duration_seconds)}.",
                markup=False,
            )
        if exit_status:
            raise run_failed(run, f"Run #{run.pk}")


def _follow_options(parser) -> None:
    parser.add_argument("--follow", action="store_true", help="Watch the run until it ends.")
    parser.add_argument("--json", action="store_true", help="JSON, as the API answers.")


def _confirm_options(parser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="Print the preview; do nothing.")
    parser.add_argument("--yes", action="store_true", help="Do it without asking.")
    _follow_options(parser)


def _parameters(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise CommandError(
                f"{pair[:60]!r}: write a parameter as name=value, e.g. -p customer_name='Acme "
                "Corp'.",
                returncode=REFUSED,
            )
        values[name.strip()] = value
    return values


def _when(moment) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _deadline(at, state: str) -> str:
    if at is None:
        return "-"
    return f"{_when(at)} ({DEADLINE_LABELS.get(state, state)})"
