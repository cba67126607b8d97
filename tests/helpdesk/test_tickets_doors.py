"""The tickets' doors: the API, ``manage.py helpdesk tickets`` and the overview panel's htmx
views, each calling the same services; roles, bad input and the systems being off."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from helpdesk.models import Diagnosis, SyncState, Ticket, TicketChange, WebhookDelivery
from helpdesk.tickets import outbox
from helpdesk.tickets.panel import panel_context
from portal.models import AuditEntry
from tests.helpdesk import tickets_kit
from tests.helpdesk.conftest import make_customer
from tests.helpdesk.tickets_kit import deliver

zendesk, jira, systems_off = tickets_kit.zendesk, tickets_kit.jira, tickets_kit.systems_off

pytestmark = pytest.mark.django_db

API = "/api/platform/helpdesk"


def _diagnosis(customer) -> Diagnosis:
    return Diagnosis.objects.create(
        customer=customer, symptom="agent not responding", top_cause="queue_backlog",
        confidence=0.9, causes=[{"cause": "queue_backlog", "title": "Queue backlog",
                                 "confidence": 0.9, "evidence": [{"text": "1,200 waiting"}],
                                 "fix": "scale workers 2 → 5"}],
    )  # fmt: skip


def _post(client, path, data):
    return client.post(path, data=json.dumps(data), content_type="application/json")


def _patch(client, path, data):
    return client.patch(path, data=json.dumps(data), content_type="application/json")


def _sent_ticket(client, customer, system="zendesk") -> Ticket:
    answer = _post(client, f"{API}/customers/{customer.key}/tickets",
                   {"system": system, "subject": "Agent down", "body": "It stopped."})  # fmt: skip
    assert answer.status_code == 201, answer.content
    outbox.send_due()
    return Ticket.objects.get(pk=answer.json()["id"])


# --- API ----------------------------------------------------------------------------------------


def test_api_creates_from_a_diagnosis_lists_and_reads(zendesk, as_operator, as_viewer, acme):
    diagnosis = _diagnosis(acme)
    answer = _post(as_operator, f"{API}/customers/acme-corp/tickets",
                   {"system": "zendesk", "diagnosis_id": diagnosis.pk})  # fmt: skip
    assert answer.status_code == 201
    created = answer.json()
    assert created["sync_state"] == "pending" and created["diagnosis_id"] == diagnosis.pk
    assert created["changes"][0]["kind"] == "create" and created["external_id"] == ""
    outbox.send_due()

    listing = as_viewer.get(f"{API}/customers/acme-corp/tickets")
    assert listing.status_code == 200
    body = listing.json()
    assert body["customer_id"] == "acme-corp"
    assert [s["on"] for s in body["systems"]] == [True, False]
    (ticket,) = body["tickets"]
    assert ticket["number"].startswith("ZD-") and ticket["sync_state"] == "in_sync"

    one = as_viewer.get(f"{API}/tickets/{ticket['id']}").json()
    assert "1,200 waiting" in one["comments"][0]["body"]
    assert one["changes"][0]["status"] == "sent"


def test_api_links_updates_and_resolves(jira, as_operator, acme):
    issue = jira.add_issue("Login loops")
    linked = _post(as_operator, f"{API}/customers/acme-corp/tickets",
                   {"system": "jira", "number": issue["key"]})  # fmt: skip
    assert linked.status_code == 200 and linked.json()["number"] == issue["key"]
    ticket_id = linked.json()["id"]

    jira.change_behind(issue["key"], status="In Progress")
    changed = _patch(as_operator, f"{API}/tickets/{ticket_id}",
                     {"status": "Done", "comment": "Fixed by a restart."})  # fmt: skip
    assert changed.status_code == 200 and changed.json()["sync_state"] == "pending"
    assert [r.outcome for r in outbox.send_due()] == ["conflict", "sent"]
    conflicted = as_operator.get(f"{API}/tickets/{ticket_id}").json()
    assert conflicted["sync_state"] == "conflict"
    assert conflicted["conflict"]["ours"] == {"status": "done"}
    assert conflicted["conflict"]["theirs"]["status"] == "in progress"
    # The comment is additive: it went out beside the conflict.
    assert jira.comments[issue["key"]][-1]["body"]["content"][0]["content"][0]["text"] == (
        "Fixed by a restart."
    )

    blocked = _patch(as_operator, f"{API}/tickets/{ticket_id}", {"status": "To Do"})
    assert blocked.status_code == 409 and "keep theirs or ours" in blocked.json()["detail"]
    kept = _post(as_operator, f"{API}/tickets/{ticket_id}/resolve", {"keep": "theirs"})
    assert kept.status_code == 200 and kept.json()["status"] == "in progress"
    assert kept.json()["sync_state"] == "in_sync"


def test_viewer_cannot_create_and_outsider_cannot_read(zendesk, as_viewer, as_outsider, acme):
    refused = _post(as_viewer, f"{API}/customers/acme-corp/tickets",
                    {"system": "zendesk", "subject": "x"})  # fmt: skip
    assert refused.status_code == 403 and "Operator" in refused.json()["detail"]
    assert as_outsider.get(f"{API}/customers/acme-corp/tickets").status_code in (401, 403)
    assert not Ticket.objects.exists() and not zendesk.requests


def test_viewer_cannot_update_or_resolve(zendesk, as_operator, as_viewer, acme):
    ticket = _sent_ticket(as_operator, acme)
    assert _patch(as_viewer, f"{API}/tickets/{ticket.pk}", {"status": "open"}).status_code == 403
    assert (
        _post(as_viewer, f"{API}/tickets/{ticket.pk}/resolve", {"keep": "ours"}).status_code == 403
    )
    assert TicketChange.objects.count() == 1


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"system": "zendesk", "subject": 5}, "subject"),
        ({"system": "zendesk", "subject": "x" * 301}, "subject"),
        ({"system": ["zendesk"], "subject": "x"}, "system"),
        ({"system": "servicenow", "subject": "x"}, "system"),
        ({"system": "zendesk", "subject": ""}, "subject"),
        ({"system": "zendesk", "subject": "x", "diagnosis_id": 10**30}, "diagnosis_id"),
        ({"system": "zendesk", "subject": "x", "diagnosis_id": "abc"}, "diagnosis_id"),
        ({"system": "zendesk", "number": "not a number"}, "number"),
        ({"system": "jira", "number": 12}, "number"),
    ],
)
def test_api_bad_input_is_400_naming_the_field(zendesk, jira, as_operator, acme, payload, field):
    answer = _post(as_operator, f"{API}/customers/acme-corp/tickets", payload)
    assert answer.status_code == 400, answer.content
    assert answer.json()["detail"].startswith(f"{field}:") and answer.json()["code"] == "invalid"
    assert not Ticket.objects.exists() and not zendesk.requests and not jira.requests


def test_api_nul_and_unknown_things(zendesk, as_operator, acme):
    nul = _post(as_operator, f"{API}/customers/acme-corp/tickets",
                {"system": "zendesk", "subject": "a\x00b"})  # fmt: skip
    assert nul.status_code == 400
    assert _post(as_operator, f"{API}/customers/nobody/tickets",
                 {"system": "zendesk", "subject": "x"}).status_code == 404  # fmt: skip
    # "³" and "²" are digits to str.isdigit() that int() cannot read (a 500 the fuzzer found).
    for ticket_id in ("99999999999999999999999", "0", "abc", "7", "³", "1²"):
        assert as_operator.get(f"{API}/tickets/{ticket_id}").status_code == 404
    ticket = _sent_ticket(as_operator, acme)
    bad = _patch(as_operator, f"{API}/tickets/{ticket.pk}", {"status": "vanished"})
    assert bad.status_code == 400 and "not a Zendesk status" in bad.json()["detail"]
    nothing = _patch(as_operator, f"{API}/tickets/{ticket.pk}", {})
    assert nothing.status_code == 400 and "Nothing to change" in nothing.json()["detail"]
    keep = _post(as_operator, f"{API}/tickets/{ticket.pk}/resolve", {"keep": 1})
    assert keep.status_code == 400
    assert (
        TicketChange.objects.count() == 1
        and not Ticket.objects.filter(sync_state=SyncState.PENDING).exists()
    )


def test_api_says_when_a_system_is_off(systems_off, as_operator, acme):
    answer = _post(as_operator, f"{API}/customers/acme-corp/tickets",
                   {"system": "jira", "subject": "x"})  # fmt: skip
    assert answer.status_code == 409 and answer.json()["code"] == "off"
    assert "JIRA_URL is not set" in answer.json()["detail"]
    listing = as_operator.get(f"{API}/customers/acme-corp/tickets").json()
    assert [s["on"] for s in listing["systems"]] == [False, False]


def test_deliveries_are_for_admins_and_show_refused_ones(jira, as_admin, as_operator, client, acme):
    ticket = _sent_ticket(as_operator, acme, "jira")
    assert deliver(client, "jira", jira.webhook(ticket.number, tamper=True)).status_code == 401
    assert as_operator.get(f"{API}/webhooks/deliveries").status_code == 403
    answer = as_admin.get(f"{API}/webhooks/deliveries")
    assert answer.status_code == 200
    (refused,) = answer.json()["deliveries"]
    assert refused["result"] == "refused" and "signature" in refused["detail"]
    for limit in ("0", "abc", "99999999999999999999", "-1"):
        bad = as_admin.get(f"{API}/webhooks/deliveries?limit={limit}")
        assert bad.status_code == 400 and bad.json()["detail"].startswith("limit:")


def test_webhooks_need_no_session_but_a_secret(zendesk, settings, client, as_operator, acme):
    ticket = _sent_ticket(as_operator, acme)
    settings.ZENDESK_WEBHOOK_SECRET = ""
    answer = deliver(client, "zendesk", zendesk.webhook(int(ticket.external_id)))
    assert answer.status_code == 409 and "ZENDESK_WEBHOOK_SECRET" in answer.json()["detail"]
    assert WebhookDelivery.objects.get().result == "refused"


# --- CLI ----------------------------------------------------------------------------------------


def _cli(*args: str) -> str:
    out = io.StringIO()
    call_command("helpdesk", "tickets", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_cli_create_sync_list_update_and_resolve(zendesk, admin, acme):
    diagnosis = _diagnosis(acme)
    created = json.loads(_cli("create", "acme-corp", "--system", "zendesk", "--subject",
                              "Agent down", "--diagnosis", str(diagnosis.pk), "--json"))  # fmt: skip
    assert created["sync_state"] == "pending"
    said = _cli("sync")
    assert f"change {created['changes'][0]['id']}" in said and "sent" in said
    listing = json.loads(_cli("acme-corp", "--json"))
    (ticket,) = listing["tickets"]
    assert ticket["number"].startswith("ZD-")
    assert "Agent down" in _cli("acme-corp") and "Agent down" in _cli("list", "acme-corp")
    _cli("update", str(ticket["id"]), "--status", "open", "--comment", "On it")
    zendesk.change_behind(int(ticket["external_id"]), status="hold")
    _cli("sync")
    shown = _cli("show", str(ticket["id"]))
    assert "conflict status: ours 'open', theirs 'hold'" in shown
    resolved = json.loads(_cli("resolve", str(ticket["id"]), "--keep", "ours", "--json"))
    assert resolved["sync_state"] == "pending"
    assert "sent" in _cli("sync")
    assert zendesk.tickets[int(ticket["external_id"])]["status"] == "open"
    entry = AuditEntry.objects.filter(action="helpdesk.ticket_resolve").get()
    assert entry.actor.startswith("command:")


def test_cli_link_and_refusals(jira, viewer, acme):
    issue = jira.add_issue("Trial not activating")
    linked = json.loads(
        _cli("link", "acme-corp", "--system", "jira", "--number", issue["key"], "--json")
    )
    assert linked["number"] == issue["key"]
    for args in (
        ("create", "acme-corp", "--system", "jira", "--subject", "x", "--as", "vera"),
        ("create", "acme-corp", "--subject", "x"),
        ("update", "123456"),
        ("resolve", str(linked["id"])),
        ("nobody",),
        ("acme-corp", "extra"),
        ("link",),
    ):
        with pytest.raises(CommandError) as error:
            _cli(*args)
        assert error.value.returncode == 2, args
    assert Ticket.objects.count() == 1


def test_cli_says_when_off(systems_off, acme):
    with pytest.raises(CommandError) as error:
        _cli("create", "acme-corp", "--system", "zendesk", "--subject", "x")
    assert error.value.returncode == 2 and "ZENDESK_URL is not set" in str(error.value)
    assert "is off here" in _cli("acme-corp")


# --- the panel and its views --------------------------------------------------------------------


def _hx(client, name, *args, data=None):
    return client.post(
        reverse(f"helpdesk:{name}", args=args), data=data or {}, HTTP_HX_REQUEST="true"
    )


def test_panel_creates_links_and_answers_the_panel_with_a_toast(zendesk, as_operator, acme):
    answer = _hx(as_operator, "ticket-create", "acme-corp",
                 data={"system": "zendesk", "subject": "Billing page blank", "body": "help"})  # fmt: skip
    assert answer.status_code == 200
    html = answer.content.decode()
    assert 'id="hd-tickets"' in html and "Billing page blank" in html and "being created" in html
    assert 'id="toasts"' in html
    outbox.send_due()
    remote = zendesk.add_ticket("Old one")
    linked = _hx(
        as_operator,
        "ticket-link",
        "acme-corp",
        data={"system": "zendesk", "number": str(remote["id"])},
    )
    assert f"ZD-{remote['id']}" in linked.content.decode()
    assert Ticket.objects.count() == 2


def test_panel_from_diagnosis_puts_the_evidence_in(zendesk, as_operator, acme):
    diagnosis = _diagnosis(acme)
    answer = _hx(
        as_operator, "ticket-from-diagnosis", "acme-corp", diagnosis.pk, data={"system": "zendesk"}
    )
    assert answer.status_code == 200
    outbox.send_due()
    (remote,) = zendesk.tickets.values()
    assert "1,200 waiting" in remote["description"]
    other = make_customer("globex", "Globex")
    refused = _hx(
        as_operator, "ticket-from-diagnosis", other.key, diagnosis.pk, data={"system": "zendesk"}
    )
    assert refused.status_code == 400 and Ticket.objects.count() == 1


def test_panel_shows_a_conflict_with_both_sides_and_resolves_it(zendesk, as_operator, acme):
    ticket = _sent_ticket(as_operator, acme)
    zendesk.change_behind(int(ticket.external_id), status="hold")
    _hx(
        as_operator,
        "ticket-update",
        "acme-corp",
        ticket.pk,
        data={"status": "solved", "assignee": ""},
    )
    outbox.send_due()
    page = as_operator.get(reverse("helpdesk:ticket-panel", args=["acme-corp"])).content.decode()
    assert "Changed on both sides" in page and "Keep theirs" in page and "Keep ours" in page
    assert "solved" in page and "hold" in page
    answer = _hx(as_operator, "ticket-resolve", "acme-corp", ticket.pk, data={"keep": "theirs"})
    assert answer.status_code == 200 and "Changed on both sides" not in answer.content.decode()
    ticket.refresh_from_db()
    assert ticket.status == "hold" and ticket.sync_state == SyncState.IN_SYNC


def test_panel_refuses_viewers_with_a_toast_and_changes_nothing(zendesk, as_viewer, acme):
    answer = _hx(
        as_viewer, "ticket-create", "acme-corp", data={"system": "zendesk", "subject": "x"}
    )
    assert answer.status_code == 403 and "toast" in answer.content.decode()
    page = as_viewer.get(reverse("helpdesk:ticket-panel", args=["acme-corp"])).content.decode()
    assert "Create ticket" not in page
    assert not Ticket.objects.exists()


def test_panel_views_want_post_and_a_role(zendesk, as_operator, as_outsider, acme):
    url = reverse("helpdesk:ticket-create", args=["acme-corp"])
    assert as_operator.get(url).status_code == 405
    assert as_outsider.get(reverse("helpdesk:ticket-panel", args=["acme-corp"])).status_code == 403
    plain = as_operator.post(url, {"system": "zendesk", "subject": "x"})
    assert plain.status_code == 302 and plain["Location"].endswith("/helpdesk/customers/acme-corp/")


def test_panel_context_takes_a_fixed_number_of_queries(
    zendesk, jira, operator_actor, acme, django_assert_num_queries
):
    from helpdesk.tickets import services

    for n in range(6):
        ticket = services.create_ticket(
            operator_actor, acme, "zendesk" if n % 2 else "jira", f"T{n}", "b"
        )
    outbox.send_due()
    zendesk.change_behind(
        int(Ticket.objects.filter(system="zendesk").first().external_id), status="hold"
    )
    services.update_ticket(
        operator_actor, Ticket.objects.filter(system="zendesk").first(), status="solved"
    )
    outbox.send_due()
    assert ticket.pk
    with django_assert_num_queries(2):
        context = panel_context(operator_actor, acme)
    assert len(context["ticket_rows"]) == 6
    assert sum(1 for row in context["ticket_rows"] if row["sides"]) == 1


def test_a_change_is_enqueued_on_commit_and_the_sweep_sends_again(
    zendesk, operator_actor, acme, django_capture_on_commit_callbacks
):
    from helpdesk import tasks
    from helpdesk.tickets import services
    from helpdesk.tickets import tasks as ticket_tasks

    with django_capture_on_commit_callbacks() as callbacks:
        services.create_ticket(operator_actor, acme, "zendesk", "Queued", "b")
    assert len(callbacks) == 1  # the send is enqueued once the row is committed
    assert ticket_tasks.sweep in tasks.SWEEPS


def test_the_customer_overview_shows_the_tickets_panel(zendesk, as_operator, as_viewer, acme):
    ticket = _sent_ticket(as_operator, acme)
    page = as_operator.get(reverse("helpdesk:customer", args=["acme-corp"])).content.decode()
    assert 'id="hd-tickets"' in page and ticket.number in page and "Link ticket" in page
    seen = as_viewer.get(reverse("helpdesk:customer", args=["acme-corp"])).content.decode()
    assert ticket.number in seen and "Link ticket" not in seen
