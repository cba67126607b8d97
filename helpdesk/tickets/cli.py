"""``manage.py helpdesk tickets``: Zendesk and Jira tickets, for on-call engineers and scripts.

helpdesk tickets CUSTOMER [--json]                       (also: tickets list CUSTOMER)
helpdesk tickets create CUSTOMER --system zendesk|jira --subject TEXT [--body TEXT]
                        [--diagnosis ID] [--json]
helpdesk tickets link CUSTOMER --system jira --number SUP-12 [--json]
helpdesk tickets show ID [--json]
helpdesk tickets update ID [--status S] [--assignee EMAIL] [--comment TEXT] [--json]
helpdesk tickets resolve ID --keep theirs|ours [--json]
helpdesk tickets sync [--json]          (send the due outbox changes now; what happened)

Each calls the same services as the pages and the API; ``--json`` prints what the API answers.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from helpdesk.customers import get_customer, require_viewer
from helpdesk.refusals import HelpdeskRefused
from helpdesk.tickets import outbox, services
from helpdesk.tickets.schemas import ticket_detail, tickets_out
from portal import roles
from portal.cli import dumps

COMMANDS = ("tickets",)
VERBS = ("list", "create", "link", "show", "update", "resolve", "sync")


def add_parsers(sub, common) -> None:
    tickets = sub.add_parser(
        "tickets",
        help="A customer's Zendesk and Jira tickets: list, create, link, update, resolve, sync.",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tickets.add_argument(
        "what", metavar="CUSTOMER|VERB",
        help=f"A customer id to list its tickets, or one of {', '.join(VERBS)}.",
    )  # fmt: skip
    tickets.add_argument("target", nargs="?", metavar="CUSTOMER|ID",
                         help="The customer (list, create, link) or the ticket id (show, update, resolve).")  # fmt: skip
    tickets.add_argument("--system", choices=("zendesk", "jira"), default=None)
    tickets.add_argument("--subject", default=None)
    tickets.add_argument("--body", default="")
    tickets.add_argument("--diagnosis", default=None, metavar="ID",
                         help="Create from this diagnosis: its causes and evidence go in the body.")  # fmt: skip
    tickets.add_argument("--number", default=None, help="The ticket to link: ZD-4312, SUP-12.")
    tickets.add_argument("--status", default=None)
    tickets.add_argument("--assignee", default=None, help="An email; '' unassigns.")
    tickets.add_argument("--comment", default=None)
    tickets.add_argument("--keep", choices=services.KEEP, default=None)
    common(tickets)


def handle(command, name: str, options: dict[str, Any]) -> int:
    what = options.pop("what")
    target = options.pop("target")
    if what not in VERBS:
        if target is not None:
            raise HelpdeskRefused(
                f"{what[:40]!r} is not a verb; use one of {', '.join(VERBS)}, or give only a "
                "customer id to list its tickets.",
                "invalid",
            )
        what, target = "list", what
    if what != "sync" and not target:
        noun = "ID" if what in ("show", "update", "resolve") else "CUSTOMER"
        raise HelpdeskRefused(f"helpdesk tickets {what} needs {noun}.", "invalid")
    return globals()[f"_{what}"](command, target, **options)


def _write(command, data: dict) -> int:
    command.stdout.write(dumps(data))
    return 0


def _list(command, target: str, json: bool, **options) -> int:
    customer = get_customer(target)
    found = services.list_tickets(command.actor, customer)
    if json:
        return _write(command, tickets_out(customer.key, found, services.systems()))
    for system in services.systems():
        if not system["on"]:
            command.console.print(f"[yellow]{system['off_reason']}[/]", markup=True)
    if not found:
        command.console.print(f"{customer.company_name} has no tickets.", markup=False)
        return 0
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NUMBER", "SYSTEM", "STATUS", "ASSIGNEE", "SYNC", "SUBJECT"):
        table.add_column(column)
    for t in found:
        sync = t.sync_state + (f" ({t.sync_problem[:50]})" if t.sync_problem else "")
        table.add_row(
            str(t.pk), t.number or "(creating)", t.system, t.status, t.assignee or "-", sync,
            t.subject[:60],
        )  # fmt: skip
    command.console.print(table)
    return 0


def _show_ticket(command, ticket, json: bool, said: str = "") -> int:
    if json:
        return _write(command, ticket_detail(ticket))
    if said:
        command.console.print(said, markup=False)
    command.console.print(
        f"#{ticket.pk} {ticket.number or '(creating)'} [{ticket.system}] {ticket.subject}\n"
        f"  status {ticket.status or '-'}, assignee {ticket.assignee or '-'}, "
        f"sync {ticket.sync_state}{': ' + ticket.sync_problem if ticket.sync_problem else ''}"
        + (f"\n  {ticket.url}" if ticket.url else ""),
        markup=False,
    )
    for side in services.conflict_sides(ticket) if ticket.conflict else []:
        command.console.print(
            f"  conflict {side['field']}: ours {side['ours']!r}, theirs {side['theirs']!r}",
            markup=False,
        )
    return 0


def _show(command, target: str, json: bool, **options) -> int:
    require_viewer(command.actor)
    return _show_ticket(command, services.get_ticket(target), json)


def _create(command, target: str, system, subject, body, diagnosis, json: bool, **options) -> int:
    customer = get_customer(target)
    if system is None:
        raise HelpdeskRefused("--system: give zendesk or jira.", "invalid")
    chosen = services.get_diagnosis(customer, diagnosis) if diagnosis is not None else None
    ticket = services.create_ticket(command.actor, customer, system, subject or "", body, chosen)
    return _show_ticket(
        command, ticket, json,
        f"Ticket #{ticket.pk} queued for {ticket.get_system_display()} "
        "(`helpdesk tickets sync` sends it now).",
    )  # fmt: skip


def _link(command, target: str, system, number, json: bool, **options) -> int:
    customer = get_customer(target)
    if system is None or number is None:
        raise HelpdeskRefused("link needs --system and --number.", "invalid")
    ticket = services.link_ticket(command.actor, customer, system, number)
    return _show_ticket(
        command, ticket, json, f"Linked {ticket.number} to {customer.company_name}."
    )


def _update(command, target: str, status, assignee, comment, json: bool, **options) -> int:
    ticket = services.get_ticket(target)
    ticket = services.update_ticket(
        command.actor, ticket, status=status, assignee=assignee, comment=comment
    )
    return _show_ticket(command, ticket, json, "Updated; the change is on its way.")


def _resolve(command, target: str, keep, json: bool, **options) -> int:
    if keep is None:
        raise HelpdeskRefused("resolve needs --keep theirs or --keep ours.", "invalid")
    ticket = services.resolve_conflict(command.actor, services.get_ticket(target), keep)
    return _show_ticket(command, ticket, json, f"Kept {keep}.")


def _sync(command, target: str | None, json: bool, **options) -> int:
    command.actor.require(roles.OPERATE, "send ticket changes")
    results = outbox.send_due()
    if json:
        return _write(command, {"results": [r.__dict__ for r in results]})
    if not results:
        command.console.print("Nothing to send.", markup=False)
        return 0
    for r in results:
        command.console.print(
            f"change {r.change_id} (ticket {r.ticket_id}): {r.outcome}"
            + (f": {r.detail}" if r.detail else ""),
            markup=False,
        )
    return 1 if any(r.outcome == "failed" for r in results) else 0
