"""``manage.py helpdesk search|show|load-demo``: finding customers and seeing one."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from helpdesk import customers
from helpdesk.schemas import search_out
from portal.cli import dumps

COMMANDS = ("search",)


def add_parsers(sub, common) -> None:
    search = sub.add_parser("search", help="Customers matching TEXT, best first.")
    search.add_argument(
        "text", metavar="TEXT", help="Company, domain, email, contact, agent, ticket."
    )
    search.add_argument("--limit", type=int, default=customers.SEARCH_LIMIT)
    common(search)


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
