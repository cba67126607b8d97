"""``manage.py helpdesk action CUSTOMER ACTION [--agent SLUG] [--param k=v ...]`` and
``helpdesk grants CUSTOMER [--all]``: the quick actions and the temporary access grants, through
the same service as the page and the API. ``--dry-run`` says what the action would do. Exit
status 0 done, 1 carried out but did not work, 2 refused."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from helpdesk.actions import grants, services
from helpdesk.actions.schemas import action_out, grants_out
from helpdesk.customers import get_customer, require_viewer
from portal.cli import dumps

COMMANDS: tuple[str, ...] = ("action", "grants")


def add_parsers(sub, common) -> None:
    action = sub.add_parser(
        "action", help="Take a quick action for a customer (Operator; audited)."
    )
    action.add_argument("customer", metavar="CUSTOMER", help="The customer id, e.g. acme-corp.")
    action.add_argument("action", metavar="ACTION", help=", ".join(services.ACTIONS))
    action.add_argument("--agent", help="The customer's agent to act on (its slug).")
    action.add_argument(
        "--param", action="append", default=[], metavar="K=V",
        help="A param of the action, e.g. replicas=3, days=7, kind=welcome (repeatable).",
    )  # fmt: skip
    action.add_argument(
        "--dry-run", action="store_true", help="Say what it would do; change nothing."
    )
    common(action)
    listing = sub.add_parser("grants", help="A customer's temporary access grants.")
    listing.add_argument("customer", metavar="CUSTOMER", help="The customer id, e.g. acme-corp.")
    listing.add_argument("--all", action="store_true", help="The ended ones too.")
    common(listing)


def parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"--param {pair[:60]!r}: write it as NAME=VALUE, e.g. replicas=3.")
        params[name.strip()] = value
    return params


def handle(command, name: str, options: dict[str, Any]) -> int:
    if name == "grants":
        return _grants(command, **options)
    return _action(command, **options)


def _action(
    command, customer: str, action: str, agent: str | None, param: list[str], dry_run: bool,
    json: bool, **options,
) -> int:  # fmt: skip
    found = get_customer(customer)
    params = parse_params(param)
    if dry_run:
        require_viewer(command.actor)
        said = services.describe_action(found, action, agent=agent, params=params)
        command.stdout.write(dumps({"action": action, "would": said}) if json else said)
        return 0
    result = services.run_action(command.actor, found, action, agent=agent, params=params)
    if json:
        command.stdout.write(dumps(action_out(result, found.key, agent)))
    else:
        command.console.print(result.message, markup=False, style=None if result.ok else "red")
    return 0 if result.ok else 1


def _grants(command, customer: str, all: bool, json: bool, **options) -> int:
    require_viewer(command.actor)
    found = get_customer(customer)
    rows = (
        list(found.grants.select_related("grantee").order_by("-created_at", "-id")[:200])
        if all
        else grants.active_grants(found)
    )
    if json:
        command.stdout.write(dumps(grants_out(found.key, rows)))
        return 0
    if not rows:
        command.console.print(f"No {'' if all else 'active '}grants for {found.company_name}.")
    for g in rows:
        state = "active" if g.active else f"ended {g.revoked_at or g.expires_at:%Y-%m-%d %H:%M}"
        command.console.print(
            f"#{g.pk} {g.grantee.get_username()} {g.role} until {g.expires_at:%Y-%m-%d %H:%M} "
            f"UTC ({state}) by {g.actor}",
            markup=False,
        )
    return 0
