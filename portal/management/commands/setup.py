"""``manage.py setup``: everything a fresh or upgraded installation needs before it serves.

Migrates, makes sure the role groups exist, creates or updates the first Admin, and runs the
apps' start-up steps (seeding the agent registry). Safe to run any number of times; ``up`` runs
it, and containers run it once per deploy (compose's ``migrate`` service).
"""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand

from portal import roles, services
from portal.actors import Actor
from portal.startup import STARTUP_STEPS


class Command(BaseCommand):
    help = "Migrate, create the roles and the first Admin, and run the apps' set-up steps (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--collectstatic",
            action="store_true",
            help="Also collect static files (development; images do it at build).",
        )

    def handle(self, *args, collectstatic: bool = False, **options) -> None:
        self.password = run_setup(self.stdout, collectstatic=collectstatic)
        if self.password:
            self.stdout.write("An Admin account was created. This password is shown only once:")
            self.stdout.write(f"    username: admin    password: {self.password}")


def run_setup(out, *, collectstatic: bool) -> str | None:
    """Returns the generated Admin password on a first start without PORTAL_ADMIN_*, else None."""
    out.write("Migrating the database…")
    call_command("migrate", interactive=False, verbosity=0)
    if collectstatic:
        call_command("collectstatic", interactive=False, verbosity=0)
    roles.ensure_roles()
    actor = Actor.command("setup")
    _, password = services.ensure_admin_user(actor)
    for step in STARTUP_STEPS:
        step(actor, out)
    return password
