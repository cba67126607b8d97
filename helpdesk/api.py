"""The help desk's API under /api/platform/helpdesk: customers (search, overview). The parts
(tickets, detective, actions, playbooks) mount their own routes from their ``setup``.

Reading needs a role; every refusal is ``{"detail", "code"}`` from ``portal.api``'s handler.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from helpdesk import customers, overview
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
def search(request: HttpRequest, q: str = "", limit: int = customers.SEARCH_LIMIT):
    actor = Actor.from_request(request)
    return search_out(customers.search_customers(actor, q, limit))


@router.get(
    f"{ROOT}/customers/{{customer_id}}/overview",
    response={200: Overview, **READ},
    summary="One customer: profile, agents, recent issues, the last 50 interactions, events",
)
def customer_overview(request: HttpRequest, customer_id: str, failures: bool = False):
    actor = Actor.from_request(request)
    customers.require_viewer(actor)
    found = customers.get_customer(customer_id)
    return overview_out(overview.customer_overview(actor, found, failures_only=failures))
