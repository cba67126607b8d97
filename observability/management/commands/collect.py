"""``manage.py collect``: the log collector (see observability.collector), started by ``up``."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from observability.collector import Collector


class Command(BaseCommand):
    help = (
        "Follow every agent's log into the database (and the live tail) until SIGTERM or "
        "Ctrl-C; lines written while it was stopped are read when it starts again."
    )

    def handle(self, *args, **options) -> None:
        collector = Collector()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: collector.stop())
        collector.run()
