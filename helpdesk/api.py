"""The help desk's API under /api/platform/helpdesk: customers (search, overview). The parts
(tickets, detective, actions, playbooks) mount their own routes from their ``setup``.

Reading needs a role; every refusal is ``{"detail", "code"}`` from ``portal.api``'s handler.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from helpdesk import customers, overview
from helpdesk.refusals import HelpdeskRefused
from helpdesk.schemas import Overview, SearchResults, overview_out, search_out
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["helpdesk"])
ROOT = "/helpdesk"
READ = {400: Problem, 403: Problem, 404: Problem}


@router.get(
    f"{ROOT}/customers/search",
    response={200: SearchResults, **READ},
    summary="Customers matching q (company, domain, email, contact, agent, ticket), best first",
)
def search(request: HttpRequest, q: str = "", limit: str = ""):
    actor = Actor.from_request(request)
    return search_out(customers.search_customers(actor, q, _whole(limit, customers.SEARCH_LIMIT)))


@router.get(
    f"{ROOT}/customers/{{customer_id}}/overview",
    response={200: Overview, **READ},
    summary="One customer: profile, agents, recent issues, the last 50 interactions, events",
)
def customer_overview(request: HttpRequest, customer_id: str, failures: str = ""):
    actor = Actor.from_request(request)
    customers.require_viewer(actor)
    found = customers.get_customer(customer_id)
    only = _flag(failures, "failures")
    return overview_out(overview.customer_overview(actor, found, failures_only=only))


# Query parameters arrive as text and are read here, so a bad one is a 400 that names it (never
# django-ninja's 422).
TRUE, FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def _flag(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text not in TRUE | FALSE:
        raise HelpdeskRefused(f"{name}: say true or false, not {value[:40]!r}.", "invalid")
    return text in TRUE


def _whole(value: str, default: int) -> object:
    """A whole number as ``search_customers`` checks it (its range); anything else as given,
    which it refuses with the range."""
    text = value.strip()
    if not text:
        return default
    return int(text) if text.lstrip("-").isdecimal() and len(text) < 12 else text
