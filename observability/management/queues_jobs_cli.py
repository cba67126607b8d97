"""``manage.py queues`` subcommands for the jobs that retry or delete dead letters (mixed into
the command).

queues redrive <queue> (--ids ID... | --group FP | --all) [--rate N] [--force] [--yes]
               [--inline | --no-wait] [--json]
queues delete <queue> (--ids ID... | --group FP | --all) [--confirm SLUG] [--rate N] [--yes]
              [--inline | --no-wait] [--json]
queues jobs [ID] [--queue Q] [--status S] [--limit N] [--watch] [--json]
queues cancel <job id>

A redrive or delete shows the snapshot it will act on (how many letters, up to which id) and asks
before it starts; the job gets exactly that snapshot (``services.start_job(taken=...)``), so a
letter that arrives while the question is on screen is never touched. The job is watched with
the shared job watcher (``portal.cli.watch_job``); ``--inline`` runs it in this process
(``redrive.run``) when no worker is up.
"""

from __future__ import annotations

import sys
from functools import partial

from django.core.management.base import CommandError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agents.agentd import contract
from observability.management.queues_cli import (
    NOT_DONE,
    REFUSED,
    STATUS_STYLES,
    ask,
    fingerprint_of,
    refused,
    split_ids,
    stream_ref,
    when,
    whole,
)
from observability.queues import catalog, redrive, services
from observability.queues.catalog import QueueRef, QueueRefused
from observability.queues.models import RedriveJob
from observability.queues.schemas import job_out
from portal.actors import Actor
from portal.cli import InlineJob, JobProgress, dumps, refusals_as_command_errors, watch_job

JOB_POLL_SECONDS = 0.3
JOB_ID_MAX = 2**63 - 1
JOBS_LIMIT_MAX = 500
VERBS = {RedriveJob.Action.REDRIVE: "retry", RedriveJob.Action.DELETE: "delete"}
SUBCOMMANDS = {RedriveJob.Action.REDRIVE: "redrive", RedriveJob.Action.DELETE: "delete"}


# --- arguments ----------------------------------------------------------------------------------


def add_job_arguments(sub) -> None:
    for action, subcommand in SUBCOMMANDS.items():
        job = sub.add_parser(
            subcommand,
            help=(
                "Send dead letters back to their stream, as a tracked job."
                if action == RedriveJob.Action.REDRIVE
                else "Delete dead letters, as a tracked job (all: type the agent's slug)."
            ),
        )
        job.add_argument("queue", help="A queue name or an agent's slug.")
        which = job.add_mutually_exclusive_group(required=True)
        which.add_argument("--ids", nargs="+", metavar="ID", help="These letters (at most 1,000).")
        which.add_argument("--group", metavar="FINGERPRINT", help="Every letter of an error group.")
        which.add_argument(
            "--all", dest="everything", action="store_true", help="Every letter there is now."
        )
        job.add_argument("--rate", help="At most this many messages a second (default: no cap).")
        if action == RedriveJob.Action.REDRIVE:
            job.add_argument(
                "--force",
                action="store_true",
                help="Also send back letters already redriven QUEUE_MAX_REDRIVES times.",
            )
        else:
            job.add_argument("--confirm", metavar="SLUG", help="Deleting all: the agent's slug.")
        job.add_argument("--yes", action="store_true", help="Do not ask before starting.")
        job.add_argument(
            "--inline", action="store_true", help="Run the job in this process (no worker up)."
        )
        job.add_argument(
            "--no-wait", action="store_true", help="Print the job's id and return at once."
        )
        job.add_argument("--json", action="store_true", help="The finished job as JSON.")

    jobs = sub.add_parser("jobs", help="Redrive and delete jobs, newest first; or one job.")
    jobs.add_argument("job_id", nargs="?", metavar="id", help="One job in full.")
    jobs.add_argument("--queue", help="Only this queue's (a queue name or an agent's slug).")
    jobs.add_argument("--status", choices=RedriveJob.Status.values)
    jobs.add_argument("--limit", default="20", help=f"How many (1 to {JOBS_LIMIT_MAX}).")
    jobs.add_argument("--watch", action="store_true", help="With an id: follow it to its end.")
    jobs.add_argument("--json", action="store_true", help="JSON, as the API answers.")
    cancel = sub.add_parser("cancel", help="Cancel a job: it stops after the batch in hand.")
    cancel.add_argument("job_id", metavar="id")


# --- the handlers -------------------------------------------------------------------------------


class JobCommands:
    """The handlers; ``Command.handle`` dispatches ``redrive`` to ``_redrive`` and so on."""

    console: Console
    err: Console
    stdout: object

    # --- redrive and delete --------------------------------------------------------------------

    def _redrive(self, **options) -> None:
        self._dead_letter_job(RedriveJob.Action.REDRIVE, **options)

    def _delete(self, **options) -> None:
        self._dead_letter_job(RedriveJob.Action.DELETE, **options)

    def _dead_letter_job(
        self,
        action: str,
        queue: str,
        ids: list[str] | None,
        group: str | None,
        everything: bool,
        rate: str | None,
        yes: bool,
        inline: bool,
        no_wait: bool,
        json: bool,
        force: bool = False,
        confirm: str | None = None,
        **options,
    ) -> None:
        if inline and no_wait:
            raise refused(
                "--inline runs the job in this process, which must wait for it: drop --no-wait "
                "(or --inline, to hand it to a worker)."
            )
        verb = VERBS[action]
        ref = stream_ref(queue, f"{verb} dead letters")
        chosen = split_ids(ids)
        fingerprint = fingerprint_of(group)
        scope = (
            RedriveJob.Scope.SELECTED
            if ids is not None
            else RedriveJob.Scope.GROUP
            if group is not None
            else RedriveJob.Scope.ALL
        )
        with refusals_as_command_errors(REFUSED):
            rate_limit = services.parse_rate(rate)  # refused before anything is asked
            shot = services.snapshot(ref, scope, chosen, fingerprint)
        typed = self._confirm_job(ref, action, shot, rate_limit, yes=yes, confirm=confirm)
        actor = Actor.command(f"queues {SUBCOMMANDS[action]}")
        with refusals_as_command_errors(REFUSED):
            job = services.start_job(
                actor, ref.name, action, scope, ids=chosen, fingerprint=fingerprint, rate=rate,
                force=force, confirm=typed, taken=shot, enqueue=not inline,
            )  # fmt: skip
        if no_wait:
            self.stdout.write(str(job.pk))
            self.err.print(
                f"Job {job.pk} ({verb} {job.total:,} dead letters of {ref.slug}) is handed to a "
                f"worker; `manage.py queues jobs {job.pk} --watch` follows it, "
                f"`queues cancel {job.pk}` stops it.",
                markup=False,
            )
            return
        runner = None
        if inline:
            runner = InlineJob(f"redrive-{job.pk}-inline", partial(redrive.run, job.pk))
            runner.start()
        exit_status = self._watch_job(job, actor, runner)
        self._report_job(job, json=json)
        if exit_status:
            raise CommandError(
                f"Job {job.pk} {job.status}: {job.message or 'it did not finish.'}",
                returncode=NOT_DONE,
            )

    def _confirm_job(
        self,
        ref: QueueRef,
        action: str,
        shot: services.Snapshot,
        rate: float | None,
        *,
        yes: bool,
        confirm: str | None,
    ) -> str:
        """Ask before starting, showing the snapshot; answers the typed confirmation (the
        agent's slug) that deleting all needs."""
        verb = VERBS[action].capitalize()
        if shot.scope == RedriveJob.Scope.SELECTED:
            what = f"{shot.total:,} selected dead letters of {ref.title}"
        else:
            group = f" of error group {shot.fingerprint}" if shot.fingerprint else ""
            what = (
                f"{shot.total:,} dead letters{group} of {ref.title}: every one up to "
                f"{shot.upto_id}, none that arrives from now on"
            )
        pace = f" at {rate:g} msg/s" if rate else ""
        needs_slug = action == RedriveJob.Action.DELETE and shot.scope == RedriveJob.Scope.ALL
        if needs_slug and confirm is not None:
            return confirm
        if yes and not needs_slug:
            return ""
        if not sys.stdin.isatty():
            how = "--confirm <slug>" if needs_slug else "--yes"
            raise refused(
                f"{verb} {what}{pace}? This needs confirmation: run it at a terminal, or pass "
                f"{how}. Nothing was done."
            )
        if needs_slug:
            return ask(
                self.err, f"{verb} {what}{pace}. Type the agent's slug, {ref.slug}, to confirm: "
            ).strip()
        answer = ask(self.err, f"{verb} {what}{pace}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise refused("Not confirmed; nothing was done.")
        return ""

    def _watch_job(self, job: RedriveJob, actor: Actor, runner: InlineJob | None) -> int:
        """A progress bar (on stderr) until the job ends; its exit status. Ctrl-C on a job this
        process runs cancels it (again: stop watching); on a worker's job it stops watching and
        offers to cancel the job."""
        cancelling = False

        def poll() -> JobProgress:
            job.refresh_from_db()
            return JobProgress(
                status=job.status,
                # A runner that returned without error while the job goes on found another
                # runner on it (a worker): keep watching that one.
                finished=job.finished or (runner is not None and runner.error is not None),
                succeeded=job.status == RedriveJob.Status.SUCCEEDED,
                picked_up=runner is not None or job.status != RedriveJob.Status.PENDING,
                done=job.worked,
                total=job.total,
                counts=_progress_counts(job),
            )

        def cancel_here() -> bool:
            nonlocal cancelling
            if cancelling:
                return False
            self.err.print(
                f"[yellow]Cancelling job {job.pk}: it stops after the batch in hand. "
                "Ctrl-C again to stop watching.[/]"
            )
            with refusals_as_command_errors(REFUSED):
                services.cancel_job(actor, job.pk)
            cancelling = True
            return True

        try:
            exit_status = watch_job(
                poll,
                console=self.err,
                label=f"Job {job.pk}: {VERBS.get(job.action, job.action)} {_short(job)}",
                no_worker_hint=(
                    f"`queues cancel {job.pk}`, then run it again with --inline to run it here."
                ),
                on_interrupt=cancel_here if runner is not None else None,
                poll_seconds=JOB_POLL_SECONDS,
            )
        except KeyboardInterrupt:
            if runner is None and self._offer_cancel(job, actor):
                return self._watch_job(job, actor, None)
            raise CommandError(
                f"Stopped watching job {job.pk}; it goes on. `manage.py queues jobs {job.pk} "
                f"--watch` follows it, `queues cancel {job.pk}` stops it.",
                returncode=NOT_DONE,
            ) from None
        if runner is not None and (error := runner.finish()) is not None:
            raise CommandError(
                f"Job {job.pk} stopped on an unexpected error: {error!r}; it stays unfinished and "
                f"the sweep hands it to a worker (`queues jobs {job.pk}`).",
                returncode=NOT_DONE,
            )
        return exit_status

    def _offer_cancel(self, job: RedriveJob, actor: Actor) -> bool:
        """After Ctrl-C on a worker's job: cancel it? True when cancelled and worth watching
        to its end (a worker has it)."""
        if not sys.stdin.isatty():
            return False
        answer = ask(
            self.err,
            f"Stopped watching. Cancel job {job.pk} (letters already moved stay moved)? [y/N] ",
        )
        if answer.strip().lower() not in ("y", "yes"):
            return False
        try:
            services.cancel_job(actor, job.pk)
        except QueueRefused as refusal:
            if refusal.code != "finished":
                raise refused(refusal.message) from None
            return True  # it ended meanwhile: show how
        job.refresh_from_db()
        if job.status == RedriveJob.Status.PENDING:
            raise CommandError(
                f"Cancel requested: no worker has picked job {job.pk} up yet, and it stops, "
                "having moved nothing, as soon as one does.",
                returncode=NOT_DONE,
            )
        return True

    def _report_job(self, job: RedriveJob, *, json: bool) -> None:
        job.refresh_from_db()
        if json:
            self.stdout.write(dumps(job_out(job)))
            return
        took = ""
        if job.started_at and job.finished_at:
            took = f" in {(job.finished_at - job.started_at).total_seconds():.1f} s"
        style = STATUS_STYLES.get(job.status, "")
        self.console.print(
            f"Job {job.pk} ({VERBS.get(job.action, job.action)} {_short(job)}): "
            f"[{style}]{job.status}[/]{took}. {escape(job.message)}".rstrip()
        )

    # --- jobs ----------------------------------------------------------------------------------

    def _jobs(
        self,
        job_id: str | None,
        queue: str | None,
        status: str | None,
        limit: str,
        watch: bool,
        json: bool,
        **options,
    ) -> None:
        if job_id is not None:
            job = _job(job_id)
            if watch and not job.finished:
                exit_status = self._watch_job(job, Actor.command("queues jobs"), None)
                self._report_job(job, json=json)
                if exit_status:
                    raise CommandError(f"Job {job.pk} {job.status}.", returncode=NOT_DONE)
                return
            self._show_job(job, json=json)
            return
        if watch:
            raise refused("--watch follows one job: give its id (`queues jobs <id> --watch`).")
        size = whole(limit, "--limit", 1, JOBS_LIMIT_MAX)
        jobs = RedriveJob.objects.all()
        if queue:
            jobs = jobs.filter(queue_name=_job_queue_name(queue))
        if status:
            jobs = jobs.filter(status=status)
        found = list(jobs[:size])
        if json:
            self.stdout.write(dumps([job_out(job) for job in found]))
            return
        if not found:
            self.console.print("No redrive or delete jobs.")
            return
        table = Table(box=None, header_style="bold")
        for column in ("ID", "QUEUE", "ACTION", "SCOPE", "STATUS", "DONE", "SKIPPED", "HELD"):
            table.add_column(column)
        for column in ("RATE", "BY", "WHEN"):
            table.add_column(column)
        for job in found:
            table.add_row(
                str(job.pk), job.queue_name, VERBS.get(job.action, job.action), job.scope,
                Text(job.status, style=STATUS_STYLES.get(job.status, "")),
                f"{job.done:,}/{job.total:,}", f"{job.skipped:,}", f"{job.held_back:,}",
                f"{job.rate_limit:g}/s" if job.rate_limit else "-", job.actor, when(job.created_at),
            )  # fmt: skip
        self.console.print(table)

    def _show_job(self, job: RedriveJob, *, json: bool) -> None:
        if json:
            self.stdout.write(dumps(job_out(job)))
            return
        facts = Table.grid(padding=(0, 2))
        for label, value in (
            ("job", f"{job.pk}: {VERBS.get(job.action, job.action)} {_short(job)}"),
            ("queue", job.queue_name),
            ("status", job.status + (" (cancel requested)" if job.cancel_requested else "")),
            ("progress", f"{job.worked:,} of {job.total:,} ({job.percent} %)"),
            ("done", f"{job.done:,}"),
            ("skipped", f"{job.skipped:,} (already gone)"),
            ("held back", f"{job.held_back:,} (redriven too often, not forced)"),
            ("rate", f"{job.rate_limit:g} msg/s" if job.rate_limit else "no cap"),
            ("snapshot", f"up to {job.upto_id}" if job.upto_id else f"{len(job.message_ids)} ids"),
            ("by", job.actor),
            ("created", when(job.created_at)),
            ("started", when(job.started_at)),
            ("finished", when(job.finished_at)),
            ("message", job.message or "-"),
        ):
            facts.add_row(Text(label, style="bold"), Text(value))
        self.console.print(facts)

    def _cancel(self, job_id: str, **options) -> None:
        pk = _job(job_id).pk
        with refusals_as_command_errors(REFUSED):
            job = services.cancel_job(Actor.command("queues cancel"), pk)
        self.console.print(f"Cancelling job {job.pk}: it stops after the batch in hand.")


# --- helpers ------------------------------------------------------------------------------------


def _job(value: str) -> RedriveJob:
    pk = whole(value, "A job id", 1, JOB_ID_MAX)
    job = RedriveJob.objects.filter(pk=pk).first()
    if job is None:
        raise refused(f"There is no redrive job {pk}; `manage.py queues jobs` lists them.")
    return job


def _job_queue_name(value: str) -> str:
    """The queue a job list is narrowed to; a queue gone since still has its jobs."""
    text = value.strip()
    if not text or "\x00" in text or len(text) > 200:
        raise refused(f"{text[:60]!r} is not a queue name or an agent's slug.")
    return text if ":" in text else contract.task_stream(text)


def _short(job: RedriveJob) -> str:
    slug = catalog.slug_of_stream(job.queue_name) or job.queue_name
    if job.scope == RedriveJob.Scope.GROUP:
        return f"{slug}, group {job.fingerprint}"
    if job.scope == RedriveJob.Scope.SELECTED:
        return f"{slug}, {len(job.message_ids):,} selected"
    return f"{slug}, all"


def _progress_counts(job: RedriveJob) -> str:
    text = f"[green]✓ {job.done:,}[/]"
    if job.skipped:
        text += f" [yellow]↷ {job.skipped:,} gone[/]"
    if job.held_back:
        text += f" [red]⏸ {job.held_back:,} held back[/]"
    if job.rate_limit and not job.finished and job.total > job.worked:
        text += f" ~{(job.total - job.worked) / job.rate_limit:.0f} s left"
    return text
