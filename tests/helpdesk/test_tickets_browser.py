"""Tickets in a real browser: an Operator creates a Zendesk ticket from Acme Corp's diagnosis on
the tickets panel, the outbox sends it to the fake Zendesk, a person solves it there, and the
signed webhook brings the status back to the page. At 375 px the panel fits.

Daphne serves the real ASGI app (with ZENDESK_* pointing at the fake) on the test database;
Debian's Chromium through Playwright. Skipped without Chromium (CI installs it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from helpdesk.models import Diagnosis, Ticket
from helpdesk.tickets import outbox
from tests.helpdesk import tickets_kit
from tests.helpdesk.tickets_kit import EMAIL, HOOK_PATH, TOKEN, ZENDESK_SECRET

zendesk = tickets_kit.zendesk

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-results" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture
def chromium(monkeypatch):
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Chromium is missing.")
        pytest.skip("Chromium is not installed (apt-get install chromium); CI runs this test.")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls stay synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def portal_with_zendesk(zendesk, serve_portal, test_database_url, redis_url, tmp_path):
    env = {
        **os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": redis_url,
        "LOG_LEVEL": "WARNING", "ZENDESK_URL": zendesk.server_url, "ZENDESK_EMAIL": EMAIL,
        "ZENDESK_API_TOKEN": TOKEN, "ZENDESK_WEBHOOK_SECRET": ZENDESK_SECRET, "JIRA_URL": "",
    }  # fmt: skip
    with serve_portal(env, tmp_path) as base:
        zendesk.webhook_url = base + HOOK_PATH.format(system="zendesk")
        yield base


def test_a_ticket_from_a_diagnosis_and_its_status_coming_back(
    chromium, portal_with_zendesk, zendesk, operator, password, acme
):
    from django.db import connections

    try:
        _story(chromium, portal_with_zendesk, zendesk, operator, password, acme)
    finally:
        # While Playwright runs, the ORM's calls get a connection of their own (another
        # context): close it here, or the test database cannot be dropped at the end.
        connections.close_all()


def _story(chromium, portal_with_zendesk, zendesk, operator, password, acme) -> None:
    from django.contrib.auth.hashers import make_password
    from playwright.sync_api import expect

    operator.password = make_password(password, hasher="pbkdf2_sha256")
    operator.save(update_fields=["password"])
    diagnosis = Diagnosis.objects.create(
        customer=acme, symptom="agent not responding", top_cause="queue_backlog", confidence=0.92,
        causes=[{"cause": "queue_backlog", "title": "Queue backlog", "confidence": 0.92,
                 "evidence": [{"text": "1,200 messages waiting"}], "fix": "scale workers 2 → 5"}],
    )  # fmt: skip
    context = chromium.new_context(
        base_url=portal_with_zendesk, viewport={"width": 1280, "height": 900}
    )
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

    assert [r.outcome for r in outbox.send_due()] == ["sent"]  # what the worker would do
    ticket = Ticket.objects.get()
    (remote,) = zendesk.tickets.values()
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
    assert [r.outcome for r in outbox.send_due()] == ["conflict"]
    assert zendesk.tickets[remote["id"]]["status"] == "hold"
    page.reload()
    conflict = panel.locator(f"[data-conflict='{ticket.pk}']")
    expect(conflict).to_contain_text("Changed on both sides")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "helpdesk-tickets-conflict-375.png"), full_page=True)
    conflict.get_by_role("button", name="Keep ours (send again)").click()
    expect(page.locator("#toasts")).to_contain_text("kept ours")
    assert [r.outcome for r in outbox.send_due()] == ["sent"]
    assert zendesk.tickets[remote["id"]]["status"] == "open"
    assert not errors, errors
    context.close()
