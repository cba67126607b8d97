"""Fixtures for the help desk's tests: actors of each role and a few customers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from helpdesk.models import Contact, Customer, Plan, SubscriptionStatus


def make_customer(key: str, company: str, **fields) -> Customer:
    now = timezone.now()
    defaults = {
        "domain": f"{key}.example",
        "email": f"billing@{key}.example",
        "plan": Plan.PRO,
        "status": SubscriptionStatus.ACTIVE,
        "trial_started_at": now - timedelta(days=40),
        "trial_ends_at": now - timedelta(days=26),
    }
    return Customer.objects.create(key=key, company_name=company, **{**defaults, **fields})


@pytest.fixture
def acme(db) -> Customer:
    customer = make_customer("acme-corp", "Acme Corp", domain="acme.com", email="ops@acme.com")
    Contact.objects.create(
        customer=customer, name="Wile E. Coyote", email="wile@acme.com", primary=True
    )
    return customer
