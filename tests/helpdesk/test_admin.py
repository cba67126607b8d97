"""The help desk in the Django admin: customers and contacts changed through the service
(audited), interactions, tickets, deliveries and diagnoses shown and never changed; Admins only."""

from __future__ import annotations

import pytest
from django.utils import timezone

from helpdesk.models import Customer, Interaction
from portal.models import AuditEntry

ADMIN = "/admin/helpdesk"


def inline_management(prefix: str, total: int = 0, initial: int = 0) -> dict:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}  # fmt: skip


def test_an_admin_changes_a_customer_and_it_is_audited(acme, as_admin):
    contact = acme.contacts.get()
    data = {
        "key": "acme-corp", "company_name": "Acme Corporation", "domain": "acme.com",
        "email": "ops@acme.com", "plan": "pro", "status": "active", "seats": "12",
        "monthly_amount_cents": "9900", "trial_resets": "0", "notes": "",
        "created_at_0": "2026-01-01", "created_at_1": "00:00:00",
        **inline_management("contacts", 1, 1),
        "contacts-0-id": str(contact.pk), "contacts-0-customer": str(acme.pk),
        "contacts-0-name": "Wile E. Coyote", "contacts-0-email": "wile@acme.com",
        "contacts-0-title": "", "contacts-0-primary": "on",
        **inline_management("links"),
    }  # fmt: skip
    response = as_admin.post(f"{ADMIN}/customer/{acme.pk}/change/", data)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Customer.objects.get().company_name == "Acme Corporation"
    entry = AuditEntry.objects.get(action="helpdesk.customer.change")
    assert entry.target == "acme-corp" and "company_name" in entry.detail["fields"]


def test_interactions_are_shown_never_changed(acme, as_admin):
    interaction = Interaction.objects.create(
        customer=acme, agent_slug="acme-x", message_id="1-1", outcome="succeeded",
        at=timezone.now(),
    )  # fmt: skip

    assert as_admin.get(f"{ADMIN}/interaction/").status_code == 200
    assert as_admin.get(f"{ADMIN}/interaction/add/").status_code == 403
    deleting = as_admin.post(f"{ADMIN}/interaction/{interaction.pk}/delete/", {"post": "yes"})
    assert deleting.status_code == 403 and Interaction.objects.count() == 1


@pytest.mark.parametrize("client_fixture", ["as_operator", "as_viewer"])
def test_only_admins_get_in(acme, request, client_fixture):
    client = request.getfixturevalue(client_fixture)
    response = client.get(f"{ADMIN}/customer/")
    assert response.status_code in (302, 403)
