"""``manage.py queues load``: the documented load driver for demos and benchmarks (mixed into
the command).

queues load [--rate MSG/S] [--duration S | --count N] [--agents SLUG,...] [--customer ID] [--json]

It sends tasks at a steady rate, round-robin over the agents (by default the entry agents of the
fleet's forwarding chains, so the agent-to-agent traffic behind them follows), through
``services.send``: the same permission check and audit as every other door, and the producer is
the command's actor (``portal:command:<user>``).

Batching: each tick (one second) every agent gets at most one ``services.send`` carrying that
tick's share (``count=k``), so the audit trail gains one entry per agent per second whatever the
rate (a minute at 5,000 msg/s over five agents: 300 entries, each with its count and first and
last id), and Redis one pipeline per agent per tick. The price: within a second the messages
arrive as a burst, and those of one send carry one payload, ``{"kind": "load", "n": <tick>}``.
"""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.table import Table

from agents.models import Agent, State
from observability.management.queues_cli import decimal, queue_ref, refused, stream_ref, whole
from observability.queues import services
from observability.queues.catalog import QueueRef
from portal.actors import Actor
from portal.cli import dumps
from portal.refusals import Refused

# queues load: the entry agents of the fleet's forwarding chains (agents.catalog's ``forward``
# configs), so one message sent to each also makes the agent-to-agent traffic behind it.
LOAD_AGENTS = ("wow-event", "wow-memory", "wow-search", "wow-support", "wow-integration")
# Each agent gets at most one services.send (one audit entry) per tick, carrying that tick's
# messages: the audit trail grows with the run's length, never with its rate.
LOAD_TICK_SECONDS = 1.0
LOAD_MAX_RATE = services.SEND_MAX  # one tick's messages fit in one send per agent
LOAD_MAX_COUNT = 10_000_000
LOAD_MAX_DURATION = 7 * 24 * 3600


def add_load_arguments(sub) -> None:
    load = sub.add_parser(
        "load",
        help="Send tasks at a steady rate to the entry agents of the forwarding chains "
        "(demos, benchmarks).",
    )
    load.add_argument("--rate", default="10", help="Messages a second in all (default 10).")
    until = load.add_mutually_exclusive_group()
    until.add_argument("--duration", help="Seconds to run (default: until Ctrl-C).")
    until.add_argument("--count", help="Messages to send in all.")
    load.add_argument(
        "--agents",
        help="Comma-separated slugs (default: " + ",".join(LOAD_AGENTS) + ").",
    )
    load.add_argument("--customer", default="", help="The customer the tasks are for.")
    load.add_argument("--json", action="store_true", help="The summary as JSON.")


class LoadCommand:
    """The handler; ``Command.handle`` dispatches ``load`` to ``_load``."""

    console: Console
    err: Console
    stdout: object

    def _load(
        self,
        rate: str,
        duration: str | None,
        count: str | None,
        agents: str | None,
        customer: str,
        json: bool,
        **options,
    ) -> None:
        """Send ``rate`` messages a second in all, round-robin over the agents, until the
        duration or count is reached (or Ctrl-C). Each tick every agent gets one
        ``services.send`` with its share (count=k, payload ``{"kind": "load", "n": tick}``), so
        permission and audit hold while the audit trail gains one entry per agent per second at
        most, whatever the rate."""
        per_second = decimal(rate, "--rate", 0.1, LOAD_MAX_RATE)
        seconds = (
            decimal(duration, "--duration", 0.1, LOAD_MAX_DURATION)
            if duration is not None
            else None
        )
        total = whole(count, "--count", 1, LOAD_MAX_COUNT) if count is not None else None
        refs = _load_targets(agents)
        actor = Actor.command("queues load")
        sent_to = {ref.slug: 0 for ref in refs}
        sends = 0
        sent = 0
        tick = 0
        interrupted = False
        refusal = None
        started = time.monotonic()
        with self.err.status("Sending…") as status:
            try:
                while True:
                    elapsed = time.monotonic() - started
                    # This tick's messages: what is due by its end (by the run's end at most).
                    horizon = (math.floor(elapsed / LOAD_TICK_SECONDS) + 1) * LOAD_TICK_SECONDS
                    if seconds is not None:
                        horizon = min(horizon, seconds)
                    due = math.floor(per_second * horizon + 1e-9)
                    if total is not None:
                        due = min(due, total)
                    shares = _round_robin(sent, due, len(refs))
                    for ref, share in zip(refs, shares, strict=True):
                        if share:
                            services.send(
                                actor, ref.name, {"kind": "load", "n": tick}, count=share,
                                customer=customer,
                            )  # fmt: skip
                            sent_to[ref.slug] += share
                            sends += 1
                            sent += share
                    tick += 1
                    took = time.monotonic() - started
                    status.update(
                        f"Sent {sent:,} · {sent / max(took, 1e-9):,.1f} msg/s · {took:.0f} s"
                    )
                    if (total is not None and sent >= total) or (
                        seconds is not None and horizon >= seconds
                    ):
                        break
                    time.sleep(max(0.0, started + horizon - time.monotonic()))
                # The last messages stand for the time they were due in: measure over it.
                end = started + (seconds if seconds is not None else sent / per_second)
                time.sleep(max(0.0, end - time.monotonic()))
            except KeyboardInterrupt:
                interrupted = True
            except Refused as problem:  # an agent revoked meanwhile, say
                refusal = problem.message
        took = max(time.monotonic() - started, 1e-9)
        summary = {
            "producer": services.producer_of(actor),
            "agents": sent_to,
            "sent": sent,
            "sends": sends,
            "seconds": round(took, 3),
            "rate_asked": per_second,
            "rate_measured": round(sent / took, 3),
            "interrupted": interrupted,
        }
        if json:
            self.stdout.write(dumps(summary))
        else:
            table = Table(box=None, header_style="bold")
            table.add_column("AGENT")
            table.add_column("SENT", justify="right")
            for slug, n in sent_to.items():
                table.add_row(slug, f"{n:,}")
            self.console.print(table)
            agents_sent_to = f"{len(refs)} agent{'' if len(refs) == 1 else 's'}"
            self.console.print(
                f"Sent {sent:,} messages to {agents_sent_to} in {took:.1f} s: "
                f"{sent / took:,.1f} msg/s measured ({per_second:g} asked), in {sends:,} sends "
                f"(one audit entry each), as {summary['producer']}"
                + (" (stopped by Ctrl-C)." if interrupted else "."),
                markup=False,
            )
        if refusal:
            raise refused(f"Stopped after {sent:,} messages: {refusal}")


def _load_targets(agents: str | None) -> list[QueueRef]:
    """The agents' streams, all resolved before anything is sent."""
    if agents is not None:
        slugs = [slug for slug in (part.strip() for part in agents.split(",")) if slug]
        if not slugs:
            raise refused("--agents names no agent; give slugs separated by commas.")
        refs = [stream_ref(slug, "send load") for slug in dict.fromkeys(slugs)]
        return refs
    present = set(
        Agent.objects.filter(slug__in=LOAD_AGENTS)
        .exclude(state=State.REVOKED)
        .values_list("slug", flat=True)
    )
    refs = [queue_ref(slug) for slug in LOAD_AGENTS if slug in present]
    if not refs:
        raise refused(
            "None of the default load agents (" + ", ".join(LOAD_AGENTS) + ") is registered; "
            "`manage.py agents seed` registers them, or name others with --agents."
        )
    return refs


def _round_robin(sent: int, due: int, agents: int) -> list[int]:
    """How many of messages ``sent``..``due - 1`` go to each agent, message m to agent m % n."""
    return [
        max(0, (due - 1 - j) // agents + 1) - max(0, (sent - 1 - j) // agents + 1)
        for j in range(agents)
    ]
