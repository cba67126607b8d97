"""``manage.py helpdesk playbook list|dry-run|run [CUSTOMER SLUG] [--steps a,b]``: the playbook
library, a dry run (what each step would do now) and a run on the workflow engine, through the
same services as the page and the API. A run's approvals are given on the workflow run's page
or with ``manage.py workflows approve``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from helpdesk.customers import get_customer
from helpdesk.playbooks import services
from helpdesk.playbooks.schemas import playbooks_out, run_out
from portal.cli import dumps

COMMANDS: tuple[str, ...] = ("playbook",)
VERBS = ("list", "dry-run", "run")


def add_parsers(sub, common) -> None:
    parser = sub.add_parser("playbook", help="Playbooks: list, dry-run or run one for a customer.")
    parser.add_argument("verb", choices=VERBS)
    parser.add_argument("customer", metavar="CUSTOMER", nargs="?", help="The customer id.")
    parser.add_argument("slug", metavar="SLUG", nargs="?", help="The playbook, e.g. crash-loop.")
    parser.add_argument("--steps", default="", help="Only these steps, by id: a,b,c.")
    common(parser)


def handle(command, name: str, options: dict[str, Any]) -> int:
    verb = options["verb"]
    if verb == "list":
        return _list(command, options["json"])
    if not options.get("customer") or not options.get("slug"):
        raise CommandError(
            f"helpdesk playbook {verb} needs CUSTOMER and SLUG, e.g. acme-corp crash-loop."
        )
    customer = get_customer(options["customer"])
    playbook = services.get_playbook(options["slug"])
    steps = options["steps"] or None
    if verb == "dry-run":
        record = services.dry_run(command.actor, customer, playbook, steps)
    else:
        record = services.run_playbook(command.actor, customer, playbook, steps)
    if options["json"]:
        command.stdout.write(dumps(run_out(record)))
        return 0
    console = command.console
    if record.dry_run:
        console.print(
            f"Dry run of {playbook.title} v{playbook.version} for {customer.company_name} (nothing changed):",
            markup=False,
        )
        for row in record.plan:
            mark = "" if row["kind"] != "check" else ("ok      " if row.get("ok") else "NOT OK  ")
            gate = " [approval]" if row.get("approval") else ""
            console.print(
                f"  {row['id']}: {mark}{row['title']}{gate} — {row.get('would', '')}", markup=False
            )
        return 0
    console.print(
        f"Started {playbook.title} v{playbook.version} for {customer.company_name} as workflow "
        f"run #{record.workflow_run_id} (steps: {', '.join(s['id'] for s in record.plan)}). "
        "Steps marked for approval wait for an Operator on the run's page.",
        markup=False,
    )
    return 0


def _list(command, json: bool) -> int:
    playbooks = services.list_playbooks(command.actor)
    if json:
        command.stdout.write(dumps(playbooks_out(playbooks)))
        return 0
    if not playbooks:
        command.console.print("No playbooks: `manage.py up` seeds the shipped ones.")
    for p in playbooks:
        command.console.print(
            f"{p.slug} v{p.version}: {p.title} — {', '.join(s['id'] for s in p.steps)}",
            markup=False,
        )
    return 0
