"""``manage.py monitor``: crash detection, health probes and automatic restarts (see agents.monitor)."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from agents.monitor import Monitor


class Command(BaseCommand):
    help = "Watch the agents: runtime events, health probes, reconciliation, automatic restarts."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="Probe and reconcile once, then exit."
        )

    def handle(self, *args, once: bool = False, **options) -> None:
        monitor = Monitor()
        if once:
            monitor.probe_all()
            monitor.reconcile()
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: monitor.stop())
        monitor.run()
