"""``manage.py queues``: the agents' task streams and the portal's Celery queue, for on-call.

queues list [--status S[,S]] [--kind agent|celery] [--sort KEY] [--json]
queues show <queue> [--json]
queues dlq <queue> [--before ID | --after ID | --last] [--limit N] [--group FP] [--json]
queues dlq <queue> --groups | --recount | --show ID | --export FILE [--scope S] [--ids ID...]
queues redrive <queue> (--ids ID... | --group FP | --all) [--rate N] [--force] [--yes]
               [--inline | --no-wait] [--json]
queues delete <queue> (--ids ID... | --group FP | --all) [--confirm SLUG] [--rate N] [--yes]
              [--inline | --no-wait] [--json]
queues claim <queue> --consumer C [--redeliver | --to TARGET] [--json]
queues purge <queue> [--confirm SLUG] [--json]
queues send <queue> [--count N] [--payload JSON] [--customer ID] [--json]
queues jobs [ID] [--queue Q] [--status S] [--limit N] [--watch] [--json]
queues cancel <job id>
queues load [--rate MSG/S] [--duration S | --count N] [--agents SLUG,...] [--customer ID] [--json]
(dlq in observability/management/queues_cli.py, the jobs that retry or delete dead letters in
queues_jobs_cli.py, load in queues_load_cli.py)

``<queue>`` is a ``queue_name`` as ``queues list`` prints it (``agents:wow-cache:tasks``,
``celery:celery``) or simply an agent's slug (``wow-cache``). Every change goes through
``observability.queues.services`` as the pages and the API do, so it is permission-checked and
audited the same; the command acts as ``Actor.command`` (shell access implies Admin). ``--json``
prints what the API answers (``observability.queues.schemas``).

Exit status: 0 done; 1 a job that ran and did not succeed (failed, cancelled), or Redis did not
answer; 2 refused or bad input, with the service's sentence on stderr: nothing was changed.
"""

from __future__ import annotations

import sys

import redis
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from observability.management.queues_cli import (
    REFUSED,
    STATUS_STYLES,
    DeadLetterCommands,
    add_dead_letter_arguments,
    ask,
    queue_ref,
    refused,
    stream_ref,
    when,
)
from observability.management.queues_jobs_cli import JobCommands, add_job_arguments
from observability.management.queues_load_cli import LoadCommand, add_load_arguments
from observability.queues import catalog, services
from observability.queues import listing as queue_listing
from observability.queues.catalog import QueueRef
from observability.queues.schemas import queue_detail, queue_out
from portal.actors import Actor
from portal.cli import dumps, refusals_as_command_errors

SORTS, DEFAULT_SORT = queue_listing.SORTS, queue_listing.DEFAULT_SORT
STATUSES, KINDS = queue_listing.STATUSES, queue_listing.KINDS
SHOW_PENDING_ENTRIES = 20  # in the text; --json has the API's first 100
SHOW_JOBS = 10
REDIS_DOWN = 1


class Command(DeadLetterCommands, JobCommands, LoadCommand, BaseCommand):
    help = (
        "Queues and dead letters: list, show, dead letters (pages, groups, export), redrive and "
        "delete jobs, claim a stuck consumer's entries, purge, send messages, and a load driver. "
        "Exit status 1 when a job did not succeed, 2 when refused or for bad input."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        listing = sub.add_parser("list", help="Every queue with its health and figures.")
        listing.add_argument(
            "--status", help=f"Only these statuses (comma-separated): {', '.join(STATUSES)}."
        )
        listing.add_argument("--kind", help=f"Only this kind: {', '.join(KINDS)}.")
        listing.add_argument(
            "--sort",
            default=DEFAULT_SORT,
            help=f"One of {', '.join(SORTS)}; a - in front sorts biggest first, written "
            f"--sort=-dlq (default {DEFAULT_SORT}).",
        )
        listing.add_argument("--json", action="store_true", help="JSON, as the API answers.")
        show = sub.add_parser(
            "show",
            help="One queue: figures, health, thresholds, consumers, pending entries, dead-letter "
            "groups, jobs.",
        )
        show.add_argument("queue", help="A queue name or an agent's slug.")
        show.add_argument("--json", action="store_true", help="JSON, as the API answers.")
        add_dead_letter_arguments(sub)
        add_job_arguments(sub)
        claim = sub.add_parser(
            "claim", help="Hand a (stuck) consumer's pending entries to a healthy replica."
        )
        claim.add_argument("queue", help="A queue name or an agent's slug.")
        claim.add_argument("--consumer", required=True, help="The consumer holding the entries.")
        how = claim.add_mutually_exclusive_group()
        how.add_argument(
            "--redeliver",
            action="store_true",
            help="Put them back on the stream as new messages instead.",
        )
        how.add_argument("--to", metavar="TARGET", help="The consumer to hand them to.")
        claim.add_argument("--json", action="store_true")
        purge = sub.add_parser(
            "purge", help="Delete every message waiting on an agent's stream (Admin)."
        )
        purge.add_argument("queue", help="A queue name or an agent's slug.")
        purge.add_argument("--confirm", metavar="SLUG", help="The agent's slug, typed.")
        purge.add_argument("--json", action="store_true")
        send = sub.add_parser("send", help="Put messages on an agent's stream.")
        send.add_argument("queue", help="A queue name or an agent's slug.")
        send.add_argument("--count", default="1", help="How many (1 to 10,000).")
        send.add_argument("--payload", default="{}", help="A JSON object (default {}).")
        send.add_argument("--customer", default="", help="The customer they are for.")
        send.add_argument("--json", action="store_true")
        add_load_arguments(sub)

    def handle(self, *args, command: str, **options) -> None:
        out = self.stdout._out
        # Piped output (scripts, grep) gets wide lines rather than rich's 80-column wrapping.
        width = None if out.isatty() else 200
        self.console = Console(file=out, highlight=False, soft_wrap=True, width=width)
        self.err = Console(file=self.stderr._out, highlight=False, soft_wrap=True)
        try:
            getattr(self, f"_{command}")(**options)
        except (redis.RedisError, ConnectionError, TimeoutError) as exc:
            raise CommandError(
                f"Redis does not answer ({exc}); try again when it does.", returncode=REDIS_DOWN
            ) from None

    # --- reading ------------------------------------------------------------------------------

    def _list(self, status: str | None, kind: str | None, sort: str, json: bool, **options) -> None:
        statuses = _choices(status, "--status", STATUSES, "a queue status")
        kinds = _choices(kind, "--kind", KINDS, "a kind of queue")
        key, descending = _sort(sort)
        looks, problem = queue_listing.look_all()
        rows = queue_listing.choose(looks, statuses=statuses, kinds=kinds, sort=(key, descending))
        if problem:
            self.err.print(Text(problem, style="yellow"))
        if json:
            self.stdout.write(dumps([queue_out(f) for f in rows]))
            return
        table = Table(box=None, header_style="bold")
        for column in ("QUEUE", "STATUS", "WAITING", "IN FLIGHT", "IN/S", "OUT/S", "LAG MSG"):
            table.add_column(column, justify="left" if column in ("QUEUE", "STATUS") else "right")
        for column in ("LAG S", "ERR %", "DLQ"):
            table.add_column(column, justify="right")
        for f in rows:
            table.add_row(
                f.name, Text(f.status, style=STATUS_STYLES.get(f.status, "")), f"{f.pending:,}",
                f"{f.in_flight:,}", _rate(f.in_rate), _rate(f.out_rate), f"{f.pending:,}",
                _seconds(f.lag_seconds), _percent(f.error_rate), f"{f.dead_letters:,}",
            )  # fmt: skip
        self.console.print(table)
        counts = {s: sum(1 for f in rows if f.status == s) for s in STATUSES}
        self.console.print(
            f"{len(rows)} queues: "
            + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            + f"; {sum(f.pending for f in rows):,} waiting, "
            f"{sum(f.dead_letters for f in rows):,} dead letters.",
            markup=False,
        )

    def _show(self, queue: str, json: bool, **options) -> None:
        ref = queue_ref(queue)
        detail = _detail(ref)
        if json:
            self.stdout.write(dumps(detail))
            return
        say = self.console.print
        agent = (
            f" (agent {ref.slug}, {ref.agent_state or 'not registered'})" if ref.is_agent else ""
        )
        status = detail["status"]
        say(
            Text.assemble(
                (ref.title, "bold"),
                f" · {ref.name}{agent} · ",
                (status, STATUS_STYLES.get(status, "")),
            )  # fmt: skip
        )
        for reason in detail["reasons"]:
            say(Text(f"  {reason}"))
        facts = Table.grid(padding=(0, 2))
        sampled = detail["sampled_at"]
        for label, value in (
            ("waiting", f"{detail['messages_pending']:,} (the consumer lag in messages)"),
            ("in flight", f"{detail['in_flight']:,}"),
            ("oldest waiting", _seconds(detail["consumer_lag_seconds"])),
            (
                "in / out",
                f"{_rate(detail['throughput_in_per_sec'])} / {_rate(detail['throughput_per_sec'])}"
                " msg/s" + (f" (sampled {sampled})" if sampled else " (not sampled yet)"),
            ),
            ("error rate", _percent(detail["error_rate"])),
            (
                "dead letters",
                f"{detail['dlq_messages']:,} (inflow {_rate(detail['dlq_inflow_per_min'])}/min)",
            ),
        ):
            if ref.is_agent or label not in ("error rate", "dead letters"):
                facts.add_row(Text(label, style="bold"), Text(value))
        say(facts)
        self._print_thresholds(detail["thresholds"])
        if ref.is_agent:
            self._print_consumers(detail["group_consumers"])
            self._print_pending(detail["pending_entries"])
            groups = detail["dlq_groups"]
            if groups:
                table = _table("Error groups", "GROUP", "LETTERS", "ERROR")
                for g in groups:
                    table.add_row(g["fingerprint"], f"{g['count']:,}", Text(g["label"]))
                say(table)
        elif detail["consumers"]:
            table = _table("Workers", "WORKER", "ACTIVE", "RESERVED")
            for name, c in detail["consumers"].items():
                table.add_row(name, str(c.get("active", "-")), str(c.get("reserved", "-")))
            say(table)
        if detail["jobs"]:
            table = _table("Recent jobs", "ID", "ACTION", "SCOPE", "STATUS", "DONE", "BY", "WHEN")
            for job in detail["jobs"]:
                table.add_row(
                    str(job["id"]), job["action"], job["scope"],
                    Text(job["status"], style=STATUS_STYLES.get(job["status"], "")),
                    f"{job['done']:,}/{job['total']:,}", job["requested_by"],
                    when(job["created_at"]),
                )  # fmt: skip
            say(table)

    def _print_thresholds(self, thresholds: dict) -> None:
        table = _table(
            f"Thresholds ({'own' if thresholds['source'] == 'own' else 'the defaults'})",
            "CHECK",
            "DEGRADED",
            "CRITICAL",
        )
        values = thresholds["values"]
        for label, low, high in (
            ("backlog (messages)", "backlog_degraded", "backlog_critical"),
            ("oldest waiting (s)", "age_degraded_seconds", "age_critical_seconds"),
            ("error rate (%)", "error_rate_degraded", "error_rate_critical"),
            ("dead-letter inflow (/min)", "dlq_inflow_degraded", "dlq_inflow_critical"),
        ):
            table.add_row(label, _number(values[low]), _number(values[high]))
        self.console.print(table)

    def _print_consumers(self, consumers: list[dict]) -> None:
        if not consumers:
            self.console.print("No consumers yet (nobody has read the stream).")
            return
        table = _table("Consumers", "CONSUMER", "REPLICA", "PENDING", "IDLE", "OLDEST", "STUCK")
        for c in consumers:
            table.add_row(
                c["name"], "-" if c["replica"] is None else str(c["replica"]), f"{c['pending']:,}",
                _seconds(c["idle_ms"] / 1000), _seconds(c["oldest_idle_ms"] / 1000)
                if c["pending"] else "-",
                Text(f"stuck: {c['why']}", style="red") if c["stuck"] else Text("no"),
            )  # fmt: skip
        self.console.print(table)

    def _print_pending(self, entries: list[dict]) -> None:
        if not entries:
            return
        table = _table("Pending entries (oldest first)", "ID", "CONSUMER", "IDLE", "DELIVERIES")
        for e in entries[:SHOW_PENDING_ENTRIES]:
            table.add_row(
                e["id"], e["consumer"], _seconds(e["idle_ms"] / 1000), str(e["deliveries"])
            )
        self.console.print(table)
        if len(entries) > SHOW_PENDING_ENTRIES:
            self.console.print(f"… and more (--json lists the first {len(entries):,}).")

    # --- acting --------------------------------------------------------------------------------

    def _send(
        self, queue: str, count: str, payload: str, customer: str, json: bool, **options
    ) -> None:
        ref = queue_ref(queue)
        with refusals_as_command_errors(REFUSED):
            ids = services.send(
                Actor.command("queues send"), ref.name, payload, count=count, customer=customer
            )
        if json:
            self.stdout.write(dumps({"queue_name": ref.name, "count": len(ids), "ids": ids}))
            return
        span = ids[0] if len(ids) == 1 else f"{ids[0]} … {ids[-1]}"
        self.console.print(
            f"Sent {len(ids):,} message{_s(len(ids))} to {ref.stream} ({span}).", markup=False
        )

    def _claim(
        self,
        queue: str,
        consumer: str,
        redeliver: bool,
        to: str | None,
        json: bool,
        **options,
    ) -> None:
        ref = stream_ref(queue, "claim pending entries")
        with refusals_as_command_errors(REFUSED):
            result = services.claim(
                Actor.command("queues claim"),
                ref.name,
                consumer,
                mode="redeliver" if redeliver else "claim",
                target=to or "",
            )
        if json:
            self.stdout.write(dumps(result))
            return
        count = len(result["ids"])
        entries = f"{count:,} entr{'y' if count == 1 else 'ies'}"
        if result["mode"] == "claim":
            self.console.print(
                f"Claimed {entries} of {consumer} for {result['target']}.", markup=False
            )
        else:
            gone = f"; {result['gone']:,} were already gone" if result["gone"] else ""
            self.console.print(
                f"Redelivered {entries} of {consumer} as new messages{gone}.", markup=False
            )

    def _purge(self, queue: str, confirm: str | None, json: bool, **options) -> None:
        ref = stream_ref(queue, "purge")
        if confirm is None and sys.stdin.isatty():
            waiting = catalog.agent_redis().xlen(ref.stream)
            confirm = ask(
                self.err,
                f"Purging {ref.stream} deletes the {waiting:,} tasks waiting for {ref.title}. "
                f"Type the agent's slug, {ref.slug}, to confirm: ",
            ).strip()
        with refusals_as_command_errors(REFUSED):
            removed = services.purge(Actor.command("queues purge"), ref.name, confirm=confirm or "")
        if json:
            self.stdout.write(dumps({"queue_name": ref.name, "removed": removed}))
            return
        self.console.print(
            f"Purged {removed:,} waiting message{_s(removed)} from {ref.stream}.", markup=False
        )


# --- helpers ------------------------------------------------------------------------------------


def _detail(ref: QueueRef) -> dict:
    return queue_detail(ref, jobs=SHOW_JOBS)


def _choices(value: str | None, flag: str, allowed: list[str], what: str) -> set[str]:
    chosen = {part.strip().lower() for part in (value or "").split(",") if part.strip()}
    for choice in sorted(chosen):
        if choice not in allowed:
            raise refused(f"{flag} {choice[:40]!r} is not {what}; use one of {', '.join(allowed)}.")
    return chosen


def _sort(value: str) -> tuple[str, bool]:
    try:
        return queue_listing.parse_sort(value, example="--sort=-dlq")
    except queue_listing.ListFilterError as bad:
        raise refused(bad.message) from None


def _table(title: str, *columns: str) -> Table:
    table = Table(box=None, header_style="bold", title=title or None, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f} s" if value < 100 else f"{value:,.0f} s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def _number(value: float | None) -> str:
    return "off" if value is None else f"{value:,g}"


def _s(count: int) -> str:
    return "" if count == 1 else "s"
