"""``manage.py helpdesk search|show|load-demo``: finding customers, seeing one, and loading the
demo data set."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from helpdesk import customers, demo, overview
from helpdesk.schemas import overview_out, search_out
from portal.cli import dumps

COMMANDS = ("search", "show", "load-demo")


def add_parsers(sub, common) -> None:
    search = sub.add_parser("search", help="Customers matching TEXT, best first.")
    search.add_argument(
        "text", metavar="TEXT", help="Company, domain, email, contact, agent, ticket."
    )
    search.add_argument("--limit", type=int, default=customers.SEARCH_LIMIT)
    common(search)
    show = sub.add_parser("show", help="One customer: profile, agents, last interactions.")
    show.add_argument("customer", metavar="CUSTOMER", help="The customer id, e.g. acme-corp.")
    show.add_argument("--failures", action="store_true", help="Only failed interactions.")
    common(show)
    load = sub.add_parser("load-demo", help="Load the demo customers (Admin; idempotent).")
    load.add_argument("--customers", type=int, default=200, help="How many (1 to 2000).")
    common(load)


def handle(command, name: str, options: dict[str, Any]) -> int:
    return globals()[f"_{name.replace('-', '_')}"](command, **options)


def _search(command, text: str, limit: int, json: bool, **options) -> int:
    hits = customers.search_customers(command.actor, text, limit)
    if json:
        command.stdout.write(dumps(search_out(hits)))
        return 0
    if not hits:
        command.console.print(f"No customer matches {text!r}.", markup=False)
        return 0
    table = Table(box=None, header_style="bold")
    for column in ("ID", "COMPANY", "EMAIL", "PLAN", "STATUS", "AGENTS", "MATCHED"):
        table.add_column(column)
    for hit in hits:
        c = hit.customer
        table.add_row(
            c.key, c.company_name, c.email, c.plan, c.status, str(hit.agents_count),
            f"{hit.matched}: {hit.matched_text}",
        )  # fmt: skip
    command.console.print(table)
    return 0


def _load_demo(command, customers: int, json: bool, **options) -> int:
    loaded = demo.load_demo(command.actor, customers)
    if json:
        command.stdout.write(dumps({"customers": loaded.customers, "agents": loaded.agents,
                                    "interactions": loaded.interactions}))  # fmt: skip
        return 0
    if loaded.nothing_new:
        command.console.print("The demo data is loaded already; nothing to add.")
        return 0
    command.console.print(
        f"Added {loaded.customers} customers, {loaded.agents} agents and "
        f"{loaded.interactions} interactions. Open the Help Desk and search for “acme”."
    )
    return 0


def _show(command, customer: str, failures: bool, json: bool, **options) -> int:
    found = customers.get_customer(customer)
    view = overview.customer_overview(command.actor, found, failures_only=failures)
    if json:
        command.stdout.write(dumps(overview_out(view)))
        return 0
    c = view.customer
    console = command.console
    console.print(f"[bold]{c.company_name}[/bold] ({c.key}) · {c.get_plan_display()} · "
                  f"{c.get_status_display()} · {c.domain}")  # fmt: skip
    for contact in view.contacts:
        console.print(f"  {contact.name} <{contact.email}>{' (primary)' if contact.primary else ''}",
                      markup=False)  # fmt: skip
    t = view.totals
    console.print(
        f"{t['running']}/{t['agents']} agents running · {t['open_errors']} open errors · "
        f"{t['backlog']} waiting · {t['dead_letters']} dead letters · {t['open_tickets']} open "
        f"tickets · {t['interactions_30d']} tasks in 30 days ({t['failed_30d']} failed)"
    )
    if view.agents:
        table = Table(box=None, header_style="bold")
        for column in (
            "AGENT",
            "STATE",
            "HEALTH",
            "VERSION",
            "REPLICAS",
            "WAITING",
            "DLQ",
            "ERRORS",
        ):
            table.add_column(column)
        for row in view.agents:
            a = row.agent
            table.add_row(a.slug, a.state, a.health, a.version, str(a.replicas),
                          _n(row.backlog), _n(row.dead_letters), str(row.open_errors))  # fmt: skip
        console.print(table)
    title = "Last failed interactions" if failures else "Last interactions"
    console.print(f"[bold]{title}[/bold]")
    for i in view.interactions[:20]:
        line = f"  {i.at:%Y-%m-%d %H:%M:%S} {i.agent_slug} {i.kind or 'task'} {i.outcome} {i.latency_ms} ms"
        console.print(line + (f" · {i.error[:100]}" if i.error else ""), markup=False)
    if not view.interactions:
        console.print("  none yet", markup=False)
    return 0


def _n(value) -> str:
    return "?" if value is None else str(value)
