"""Which customer owns an agent: a Customer-tier agent the factory makes for an owner that names
a help-desk customer (its id or its company name) is linked to it, in the transaction that
registers the agent. The factory asks through the ``link_customer_agent`` lookup (it does not
import the help desk)."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q

from agents.choices import Tier
from helpdesk.models import Customer, CustomerAgent
from portal.services import record_audit


def customer_named(owner: str) -> Customer | None:
    text = (owner or "").strip()
    if not text or "\x00" in text or len(text) > 200:
        return None
    return Customer.objects.filter(Q(key=text.lower()) | Q(company_name__iexact=text)).first()


def link_customer_agent(*, agent, owner: str, actor) -> str:
    """Link ``agent`` to the customer ``owner`` names; answers that customer's id, or ""."""
    if agent.tier != Tier.CUSTOMER:
        return ""
    customer = customer_named(owner)
    if customer is None:
        return ""
    with transaction.atomic():  # a savepoint: a failure here must not spoil the caller's
        CustomerAgent.objects.get_or_create(agent=agent, defaults={"customer": customer})
        record_audit(actor, "helpdesk.link_agent", target=customer.key, agent=agent.slug)
    return customer.key
