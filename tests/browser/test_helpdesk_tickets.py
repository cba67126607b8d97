"""Tickets in a real browser: an Operator creates a Zendesk ticket from Acme Corp's diagnosis on
the tickets panel, the outbox sends it to the fake Zendesk, a person solves it there, and the
signed webhook brings the status back to the page; changed on both sides, the page shows both
and keeps ours only when asked. At 375 px the panel fits.

Daphne serves the real ASGI app on the test database, with ZENDESK_* pointing at the fake, as
the Celery worker that sends is; Debian's Chromium through Playwright.
"""

from __future__ import annotations

import pytest
import requests

from helpdesk.models import Diagnosis, Ticket
from tests.browser.conftest import wait_for
from tests.helpdesk.conftest import make_customer

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_ticket_from_a_diagnosis_and_its_status_coming_back(
    browser, helpdesk_portal, fake_zendesk, operator, password, screenshot
):
    from django.db import connections

    acme = make_customer("acme-corp", "Acme Corp", domain="acme.com")

    try:
        _story(browser, helpdesk_portal, fake_zendesk, operator, password, acme, screenshot)
    finally:
        # While Playwright runs, the ORM's calls get a connection of their own (another
        # context): close it here, or the test database cannot be dropped at the end.
        connections.close_all()


def _story(browser, base, zendesk, operator, password, acme, screenshot) -> None:
    from django.contrib.auth.hashers import make_password
    from playwright.sync_api import expect

    operator.password = make_password(password, hasher="pbkdf2_sha256")
    operator.save(update_fields=["password"])
    diagnosis = Diagnosis.objects.create(
        customer=acme, symptom="agent not responding", top_cause="queue_backlog", confidence=0.92,
        causes=[{"cause": "queue_backlog", "title": "Queue backlog", "confidence": 0.92,
                 "evidence": [{"text": "1,200 messages waiting"}], "fix": "scale workers 2 → 5"}],
    )  # fmt: skip
    context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/login/")
    page.get_by_label("Email or username").fill(operator.get_username())
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url("**/")

    page.goto("/helpdesk/customers/acme-corp/tickets/")
    panel = page.locator("#hd-tickets")
    expect(panel).to_contain_text("No tickets linked to Acme Corp")
    page.get_by_text("Create or link a ticket").click()
    create = page.get_by_role("form", name="Create a ticket")
    create.get_by_label("From diagnosis").select_option(str(diagnosis.pk))
    create.get_by_role("button", name="Create ticket").click()
    expect(panel).to_contain_text("being created")
    expect(page.locator("#toasts")).to_contain_text("Creating")

    wait_for(lambda: zendesk.tickets, 30, "the worker to send the ticket")
    (remote,) = zendesk.tickets.values()
    ticket = wait_for(lambda: Ticket.objects.filter(external_id=str(remote["id"])).first(), 10,
                      "its Zendesk id stored")  # fmt: skip
    assert "1,200 messages waiting" in remote["description"]
    page.reload()
    expect(panel.get_by_role("link", name=ticket.number)).to_be_visible()

    # A person solves it on Zendesk; the signed webhook reaches Daphne.
    changed = requests.post(f"{zendesk.server_url}/_fake/change",
                            json={"ticket": ticket.number, "status": "solved"}, timeout=10)  # fmt: skip
    assert changed.json()["webhook_status"] == 200
    page.reload()
    expect(panel.locator(f"li[data-ticket='{ticket.pk}']")).to_contain_text("solved")

    # Changed on both sides: the page shows both and keeps ours only when asked.
    zendesk.change_behind(ticket.number, status="hold")
    page.set_viewport_size({"width": 375, "height": 812})
    page.get_by_text("Change status, assignee or comment").click()
    panel.get_by_label("Status").select_option("open")
    panel.get_by_role("button", name="Send").click()
    expect(panel.locator(f"li[data-ticket='{ticket.pk}']")).to_contain_text("Sending")
    wait_for(lambda: Ticket.objects.get(pk=ticket.pk).sync_state == "conflict", 30,
             "the worker to meet the conflict")  # fmt: skip
    assert zendesk.tickets[remote["id"]]["status"] == "hold"  # theirs, not overwritten
    page.reload()
    conflict = panel.locator(f"[data-conflict='{ticket.pk}']")
    expect(conflict).to_contain_text("Changed on both sides")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, "helpdesk-tickets-conflict-375")
    conflict.get_by_role("button", name="Keep ours (send again)").click()
    expect(page.locator("#toasts")).to_contain_text("kept ours")
    wait_for(lambda: zendesk.tickets[remote["id"]]["status"] == "open", 30, "ours sent again")
    assert not errors, errors
    context.close()
