"""``manage.py sweep``: hand accepted work whose runner died back to a worker, now.

Beat does this every ``WORK_SWEEP_SECONDS`` and a worker does it as it starts; on-call runs it
when beat is down, or to see at once whether anything is stranded. A running worker carries
out what it hands out.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from portal import work
from portal.actors import Actor
from portal.services import record_audit


class Command(BaseCommand):
    help = "Hand accepted work (actions, recoveries, bulk jobs) whose worker died back to a worker."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            metavar="SECONDS",
            help="Only work sent at least this long ago (default WORK_STALLED_AFTER_SECONDS; "
            "running work with no live runner is handed out whatever its age).",
        )

    def handle(self, *args, older_than: int | None = None, **options) -> None:
        if older_than is not None and not 0 <= older_than <= 86_400:
            raise CommandError(
                f"--older-than {older_than} is out of range; give 0 to 86400 seconds."
            )
        done = work.sweep(None if older_than is None else timedelta(seconds=older_than))
        if not done:
            self.stdout.write(
                "Nothing stranded: every unfinished piece of work has a live runner or was sent a moment ago."
            )
            return
        for kind, records in done.items():
            self.stdout.write(
                f"{kind}: handed {len(records)} out again: {', '.join(map(str, records))}"
            )
        handed_out = {
            kind.replace(" ", "_"): [str(r) for r in records] for kind, records in done.items()
        }
        record_audit(Actor.command("sweep"), "work.sweep", **handed_out)
