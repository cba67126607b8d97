"""``manage.py logs``: agents' log lines from the database, for on-call engineers.

logs tail <slug> [--level L] [--lines N] [--no-follow]
logs search <slug> [--level L] [--text T] [--since S] [--until U] [--before CURSOR] [--limit N]
logs collect (<slug>... | --all)

One line per entry: ``2026-11-21T10:00:00.123Z  WARNING  wow-cache/0  message  key=value``
(UTC). ``tail`` prints the last lines, then new ones as the collector stores them, until Ctrl-C.
Exit status 2 for an unknown agent, level or time (the reason on stderr).
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max

from agents.models import Agent
from agents.runtimes import RuntimeFailure
from observability import logs
from observability.collector import CATCH_UP_STATES, FOLLOWED_STATES, CollectorBusy, collect_once
from observability.models import LogEntry
from portal import inputs

BAD_INPUT = 2
POLL_SECONDS = 0.5
LEVELS_HELP = f"Only lines at or above this level: {logs.LEVEL_NAMES}."


class Command(BaseCommand):
    help = "Read agents' logs: tail one agent's (and follow it), search them, collect them now."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="command", required=True, metavar="{tail,search,collect}")
        tail = sub.add_parser("tail", help="The last lines of an agent's log, then new ones.")
        tail.add_argument("slug")
        tail.add_argument("--level", help=LEVELS_HELP)
        tail.add_argument(
            "--lines",
            type=int,
            default=20,
            help=f"How many to start with (default 20, at most {logs.MAX_LIMIT}).",
        )
        tail.add_argument("--no-follow", action="store_true", help="Print the last lines and stop.")
        search = sub.add_parser("search", help="An agent's lines, the newest page of matches.")
        search.add_argument("slug")
        search.add_argument("--level", help=LEVELS_HELP)
        search.add_argument("--text", help="Only lines containing this (any case).")
        search.add_argument(
            "--since", help="From this time: ISO 8601, or an age such as 15m, 2h, 7d."
        )
        search.add_argument("--until", help="Before this time (same forms).")
        search.add_argument("--before", help="The older page: the cursor the last search printed.")
        search.add_argument(
            "--limit",
            type=int,
            default=50,
            help=f"How many (default 50, at most {logs.MAX_LIMIT}).",
        )
        collect = sub.add_parser(
            "collect",
            help="Read new lines from the runtime now (when the collector is not running).",
        )
        collect.add_argument("slugs", nargs="*", metavar="slug")
        collect.add_argument(
            "--all", action="store_true", help="Every agent that has processes or had them."
        )

    def handle(self, *args, command: str, **options) -> None:
        for name, value in options.items():
            for text in value if isinstance(value, list) else [value]:
                if isinstance(text, str) and "\x00" in text:
                    problem = inputs.BadInput(name, inputs.NUL_REASON)
                    raise CommandError(str(problem), returncode=BAD_INPUT)
        try:
            if command == "tail":
                self.tail(options["slug"], options["level"], options["lines"], options["no_follow"])
            elif command == "search":
                self.search(options)
            else:
                self.collect(options["slugs"], options["all"])
        except logs.LogQueryError as problem:
            raise CommandError(str(problem), returncode=BAD_INPUT) from None

    # --- tail ------------------------------------------------------------------------------

    def tail(self, slug: str, level: str | None, lines: int, no_follow: bool) -> None:
        agent = logs.resolve_agent(slug)
        # Lines stored from here on are the new ones; the last ones printed may be among them.
        newest_before = LogEntry.objects.aggregate(newest=Max("id"))["newest"] or 0
        shown = logs.search(agent=agent, level=level, limit=lines).entries
        self._print(reversed(shown))
        if no_follow:
            return
        printed = {entry.pk for entry in shown}
        last = newest_before
        try:
            while True:
                batch = logs.after(last, agent=agent, level=level)
                self._print(entry for entry in batch if entry.pk not in printed)
                if batch:
                    last = batch[-1].pk
                if len(batch) < logs.TAIL_LIMIT:
                    time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            return

    # --- search ----------------------------------------------------------------------------

    def search(self, options: dict) -> None:
        page = logs.search(
            agent=logs.resolve_agent(options["slug"]),
            level=options["level"],
            text=options["text"],
            since=options["since"],
            until=options["until"],
            before=options["before"],
            limit=options["limit"],
        )
        self._print(reversed(page.entries))
        if not page.entries:
            self.stderr.write("No lines match.")
        elif page.next_cursor:
            self.stderr.write(f"Older lines: add --before {page.next_cursor}")

    # --- collect ---------------------------------------------------------------------------

    def collect(self, slugs: list[str], every: bool) -> None:
        if every == bool(slugs):
            raise CommandError("Name the agents to collect, or --all.", returncode=BAD_INPUT)
        if every:
            agents = list(Agent.objects.filter(state__in=FOLLOWED_STATES + CATCH_UP_STATES))
        else:
            agents = [logs.resolve_agent(slug) for slug in slugs]
        failed = 0
        for agent in agents:
            try:
                stored = collect_once(agent)
            except CollectorBusy as busy:
                raise CommandError(str(busy)) from None
            except RuntimeFailure as failure:
                self.stderr.write(f"{agent.slug}: cannot read its log: {failure.message}")
                failed += 1
                continue
            self.stdout.write(f"{agent.slug}: {stored} new line{'' if stored == 1 else 's'}")
        if failed:
            raise CommandError(f"{failed} of {len(agents)} logs could not be read.")

    def _print(self, entries) -> None:
        for entry in entries:
            self.stdout.write(logs.format_line(entry))
        self.stdout.flush()
