"""What the ``manage.py queues`` subcommands share (finding a queue by name or slug, bounded
numbers, asking at the terminal), and the dead-letter reading subcommand (mixed into the
command).

queues dlq <queue> [--before ID | --after ID | --last] [--limit N] [--group FP] [--json]
queues dlq <queue> --groups | --recount | --show ID | --export FILE [--scope S] [--ids ID...]

Retrying and deleting them are in ``queues_jobs_cli``, the load driver in ``queues_load_cli``.
"""

from __future__ import annotations

from django.core.management.base import CommandError
from django.utils import timezone
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents.agentd import contract
from observability.queues import catalog, deadletters, services
from observability.queues.catalog import QueueRef, QueueRefused
from observability.queues.models import RedriveJob
from observability.queues.schemas import group_out, page_out
from portal.actors import Actor
from portal.cli import dumps, refusals_as_command_errors

# Exit statuses beyond 0 (done): a job that ran and did not succeed (failed, cancelled), and a
# refusal or bad input, where nothing was changed.
NOT_DONE = 1
REFUSED = 2
STATUS_STYLES = {
    "healthy": "green",
    "degraded": "yellow",
    "critical": "red",
    "unknown": "bright_black",
    RedriveJob.Status.SUCCEEDED: "green",
    RedriveJob.Status.RUNNING: "cyan",
    RedriveJob.Status.FAILED: "red",
    RedriveJob.Status.CANCELLED: "yellow",
}


# --- what every subcommand shares ---------------------------------------------------------------


def refused(message: str) -> CommandError:
    return CommandError(message, returncode=REFUSED)


def queue_ref(name_or_slug: str) -> QueueRef:
    """The queue named by its ``queue_name`` (``agents:wow-cache:tasks``, ``celery:celery``) or,
    more simply, by its agent's slug (``wow-cache``)."""
    text = (name_or_slug or "").strip()
    if not text:
        raise refused(
            "Name a queue: an agent's slug (wow-cache) or a queue name from `queues list`."
        )
    name = text if ":" in text else contract.task_stream(text)
    with refusals_as_command_errors(REFUSED):
        return catalog.resolve(name)


def stream_ref(name_or_slug: str, doing: str) -> QueueRef:
    """An agent's stream; the Celery queue has no dead letters or consumer group."""
    ref = queue_ref(name_or_slug)
    if not ref.is_agent:
        raise refused(
            f"Cannot {doing} on {ref.name}: the Celery queue carries the portal's own jobs and has "
            f"no dead letters; choose an agent's stream."
        )
    return ref


def whole(value: object, flag: str, low: int, high: int) -> int:
    """A whole number within bounds, or a refusal that names the option."""
    text = str(value).strip()
    if not text.isdecimal() or len(text) > 20 or not low <= int(text) <= high:
        raise refused(f"{flag} must be a whole number from {low:,} to {high:,}; got {text[:40]!r}.")
    return int(text)


def decimal(value: object, flag: str, low: float, high: float) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if not low <= number <= high:  # NaN fails too
        raise refused(
            f"{flag} must be a number from {low:g} to {high:,g}; got {str(value)[:40]!r}."
        )
    return number


def split_ids(values: list[str] | None) -> list[str]:
    """``--ids a b`` and ``--ids a,b`` alike."""
    return [part for value in values or [] for part in value.replace(",", " ").split()]


def when(moment) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S}" if moment else "-"


def ask(console: Console, question: str) -> str:
    """What someone typed at the terminal ("" at end of input or Ctrl-C)."""
    console.print(question, end="", markup=False)
    try:
        return input()
    except (EOFError, KeyboardInterrupt):
        console.print()
        return ""


# --- arguments ----------------------------------------------------------------------------------


def add_dead_letter_arguments(sub) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="A queue's dead letters, newest first (keyset pages); groups, one letter, export.",
    )
    dlq.add_argument("queue", help="A queue name or an agent's slug.")
    paging = dlq.add_mutually_exclusive_group()
    paging.add_argument("--before", metavar="ID", help="The page of letters older than this id.")
    paging.add_argument("--after", metavar="ID", help="The page of letters newer than this id.")
    paging.add_argument("--last", action="store_true", help="The oldest page.")
    dlq.add_argument(
        "--limit", default=str(deadletters.PAGE_DEFAULT), help="Letters a page (1 to 500)."
    )
    dlq.add_argument("--group", metavar="FINGERPRINT", help="Only this error group.")
    what = dlq.add_mutually_exclusive_group()
    what.add_argument("--groups", action="store_true", help="The error groups and their counts.")
    what.add_argument("--show", metavar="ID", help="One dead letter whole: payload, attempts.")
    what.add_argument(
        "--export", metavar="FILE", help="Write the letters as JSON lines (- for stdout)."
    )
    what.add_argument(
        "--recount", action="store_true", help="Rebuild the group counts by reading every letter."
    )
    dlq.add_argument(
        "--scope",
        choices=RedriveJob.Scope.values,
        help="With --export: selected (--ids), group (--group) or all (the default).",
    )
    dlq.add_argument("--ids", nargs="+", metavar="ID", help="With --export: these letters.")
    dlq.add_argument("--json", action="store_true", help="JSON, as the API answers.")


# --- the handlers -------------------------------------------------------------------------------


class DeadLetterCommands:
    """The handlers; ``Command.handle`` dispatches ``dlq`` to ``_dlq`` and so on."""

    console: Console
    err: Console
    stdout: object

    # --- reading -------------------------------------------------------------------------------

    def _dlq(
        self,
        queue: str,
        before: str | None,
        after: str | None,
        last: bool,
        limit: str,
        group: str | None,
        groups: bool,
        show: str | None,
        export: str | None,
        recount: bool,
        scope: str | None,
        ids: list[str] | None,
        json: bool,
        **options,
    ) -> None:
        ref = stream_ref(queue, "read dead letters")
        fingerprint = fingerprint_of(group)
        client = catalog.agent_redis()
        actor = Actor.command("queues dlq")
        if groups or recount:
            if recount:
                with refusals_as_command_errors(REFUSED):
                    found = services.recount_groups(actor, ref.name)
            else:
                found = deadletters.groups(client, ref)
            self._print_groups(ref, found, json=json)
        elif show:
            self._show_letter(ref, actor, show, json=json)
        elif export:
            self._export(ref, actor, export, scope, split_ids(ids), fingerprint)
        else:
            size = whole(limit, "--limit", 1, deadletters.PAGE_MAX)
            with refusals_as_command_errors(REFUSED):
                page = deadletters.page(
                    client, ref, before=before, after=after, last=last, limit=size,
                    fingerprint=fingerprint,
                )  # fmt: skip
            page.letters = [services.read_letter(actor, ref, letter) for letter in page.letters]
            self._print_page(ref, page, fingerprint, json=json)

    def _print_page(
        self, ref: QueueRef, page: deadletters.Page, fingerprint: str, *, json: bool
    ) -> None:
        if json:
            self.stdout.write(dumps(page_out(page, page.letters)))
            return
        what = f" in group {fingerprint}" if fingerprint else ""
        self.console.print(f"{ref.dead_letters}: {page.total:,} dead letters{what}.", markup=False)
        if not page.letters:
            return
        table = Table(box=None, header_style="bold")
        for column in ("ID", "DEAD-LETTERED", "FAILURES", "REDRIVES", "PRODUCER", "GROUP"):
            table.add_column(column)
        table.add_column("ERROR", no_wrap=True, overflow="ellipsis", max_width=70)
        for letter in page.letters:
            table.add_row(
                letter.id, when(letter.dead_lettered_at), str(letter.failures),
                str(letter.redrive_count), letter.producer or "-", letter.fingerprint,
                Text(letter.error),
            )  # fmt: skip
        self.console.print(table)
        more = []
        if page.newer:
            more.append(f"newer: --after {page.newer}")
        if page.older or page.scanned_to:
            more.append(f"older: --before {page.older or page.scanned_to}")
        if more:
            self.console.print("More: " + "; ".join(more) + ".")

    def _print_groups(self, ref: QueueRef, found: list[deadletters.Group], *, json: bool) -> None:
        if json:
            self.stdout.write(dumps([group_out(g) for g in found]))
            return
        if not found:
            self.console.print(f"{ref.dead_letters}: no error groups.", markup=False)
            return
        table = Table(box=None, header_style="bold")
        for column in ("GROUP", "LETTERS", "ERROR"):
            table.add_column(column)
        for g in found:
            table.add_row(g.fingerprint, f"{g.count:,}", Text(g.label))
        self.console.print(table)

    def _show_letter(self, ref: QueueRef, actor: Actor, message_id: str, *, json: bool) -> None:
        with refusals_as_command_errors(REFUSED):
            letter = deadletters.get(catalog.agent_redis(), ref, message_id)
        if letter is None:
            raise refused(
                f"Dead letter {message_id} is not in {ref.dead_letters} (sent back, deleted, or "
                f"never there); `queues dlq {ref.slug}` lists them."
            )
        letter = services.read_letter(actor, ref, letter)
        if json:
            self.stdout.write(dumps(letter.as_json()))
            return
        facts = Table.grid(padding=(0, 2))
        for label, value in (
            ("id", letter.id),
            ("original id", letter.original_id or "-"),
            ("producer", letter.producer or "-"),
            ("customer", letter.customer or "-"),
            ("failed by", letter.replica or "-"),
            ("failures", str(letter.failures)),
            ("redrives", str(letter.redrive_count)),
            ("first failed", when(letter.first_failed_at)),
            ("last failed", when(letter.last_failed_at)),
            ("group", letter.fingerprint),
            ("error", letter.error),
        ):
            facts.add_row(Text(label, style="bold"), Text(value))
        self.console.print(facts)
        if letter.attempts:
            attempts = Table(box=None, header_style="bold", title="Attempts", title_justify="left")
            for column in ("#", "AT", "REPLICA", "ERROR"):
                attempts.add_column(column)
            for number, attempt in enumerate(letter.attempts, 1):
                at = attempt.get("at")
                moment = deadletters._moment(str(at)) if isinstance(at, int | str) and at else None
                attempts.add_row(
                    str(number), when(moment), str(attempt.get("replica") or "-"),
                    Text(str(attempt.get("error") or "")),
                )  # fmt: skip
            self.console.print(attempts)
        self.console.print(Text("payload", style="bold"))
        if letter.payload_error:
            self.console.print(Text(f"({letter.payload_error})", style="yellow"))
            self.console.print(Text(letter.payload_text))
        else:
            self.console.print_json(data=letter.payload)

    def _export(
        self,
        ref: QueueRef,
        actor: Actor,
        target: str,
        scope: str | None,
        ids: list[str],
        fingerprint: str,
    ) -> None:
        scope = scope or (
            RedriveJob.Scope.SELECTED if ids else RedriveJob.Scope.GROUP if fingerprint else "all"
        )
        shot: services.Snapshot | None
        try:
            shot = services.snapshot(ref, scope, ids, fingerprint)
        except QueueRefused as refusal:
            if refusal.code != "empty":
                raise refused(refusal.message) from None
            shot = None  # nothing to export: an empty file, as the API answers

        def write(out) -> int:
            written = 0
            for line in services.export_lines(actor, ref, shot):
                out.write(line)
                written += 1
            return written

        if target == "-":
            written = write(self.stdout)
        else:
            try:
                with open(target, "w", encoding="utf-8") as out:
                    written = write(out)
            except (OSError, ValueError) as exc:
                raise refused(f"Cannot write {target[:200]!r}: {exc}.") from None
        where = "standard output" if target == "-" else target
        self.err.print(
            f"Exported {written:,} dead letters of {ref.dead_letters} to {where}.", markup=False
        )


# --- helpers ------------------------------------------------------------------------------------


def fingerprint_of(group: str | None) -> str:
    if group is None:
        return ""
    value = group.strip()
    if not services.FINGERPRINT.match(value):
        raise refused(
            f"{value[:60]!r} is not an error group; groups are the fingerprints "
            "`queues dlq <queue> --groups` lists."
        )
    return value
