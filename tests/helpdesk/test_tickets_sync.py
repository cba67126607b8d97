"""Tickets both ways against fake Zendesk and Jira servers speaking real HTTP: create (from a
diagnosis), link, update out and in, echoes, duplicates, signatures, rate limits, conflicts,
idempotency keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from helpdesk.models import (
    Diagnosis,
    OutboxStatus,
    SyncState,
    Ticket,
    TicketChange,
    WebhookDelivery,
)
from helpdesk.refusals import HelpdeskRefused
from helpdesk.tickets import outbox, services
from portal.models import AuditEntry
from tests.concurrency import at_once
from tests.helpdesk import tickets_kit
from tests.helpdesk.tickets_kit import EMAIL, HUMAN, deliver

# The fake servers' fixtures (kept in the kit, beside the fakes).
zendesk, jira, systems_off = tickets_kit.zendesk, tickets_kit.jira, tickets_kit.systems_off

pytestmark = pytest.mark.django_db


def _diagnosis(customer) -> Diagnosis:
    return Diagnosis.objects.create(
        customer=customer,
        symptom="agent not responding",
        top_cause="queue_backlog",
        confidence=0.92,
        causes=[
            {
                "cause": "queue_backlog",
                "title": "Queue backlog",
                "confidence": 0.92,
                "evidence": [
                    {"text": "1,200 messages waiting on acme-support"},
                    {"text": "oldest task waiting 14 min"},
                ],
                "fix": {"action": "scale", "title": "Scale workers 2 → 5"},
            },
            {
                "cause": "crash",
                "title": "Agent crashed",
                "confidence": 0.1,
                "evidence": [],
                "fix": "restart",
            },
        ],
    )


def _created(operator_actor, acme, system="zendesk", **kwargs) -> Ticket:
    ticket = services.create_ticket(
        operator_actor, acme, system, kwargs.pop("subject", "Agent down"), "It stopped.", **kwargs
    )
    results = outbox.send_due()
    assert [r.outcome for r in results] == ["sent"], results
    ticket.refresh_from_db()
    return ticket


# --- create, link ---------------------------------------------------------------------------


def test_a_ticket_created_from_a_diagnosis_carries_its_evidence(zendesk, operator_actor, acme):
    diagnosis = _diagnosis(acme)
    ticket = services.create_ticket(operator_actor, acme, "zendesk", "", "", diagnosis)
    assert ticket.sync_state == SyncState.PENDING and ticket.number == ""
    assert not zendesk.calls("POST")  # nothing sent before the outbox runs

    results = outbox.send_due()

    assert [r.outcome for r in results] == ["sent"]
    (call,) = zendesk.calls("POST", "/api/v2/tickets.json")
    body = call["body"]["ticket"]["comment"]["body"]
    assert "1,200 messages waiting on acme-support" in body
    assert "Queue backlog" in body and "92 %" in body and "Scale workers 2 → 5" in body
    assert call["body"]["ticket"]["subject"] == "Acme Corp: agent not responding"
    assert call["headers"]["Idempotency-Key"] == TicketChange.objects.get().idempotency_key
    ticket.refresh_from_db()
    remote = zendesk.tickets[int(ticket.external_id)]
    assert ticket.number == f"ZD-{remote['id']}" and ticket.diagnosis == diagnosis
    assert ticket.sync_state == SyncState.IN_SYNC and ticket.remote_version == remote["updated_at"]
    assert ticket.url.endswith(f"/agent/tickets/{remote['id']}")
    assert AuditEntry.objects.filter(action="helpdesk.ticket_create").count() == 1


def test_a_jira_issue_is_created_with_the_key_as_a_property(jira, operator_actor, acme):
    ticket = _created(operator_actor, acme, "jira", diagnosis=_diagnosis(acme))
    assert ticket.number == "SUP-1" and ticket.status == "to do"
    (call,) = jira.calls("POST", "/rest/api/3/issue$")
    text = str(call["body"]["fields"]["description"])
    assert "1,200 messages waiting on acme-support" in text
    key = TicketChange.objects.get().idempotency_key
    assert call["body"]["properties"][0]["value"] == {"idempotencyKey": key}


def test_linking_reads_the_ticket_and_its_comments(zendesk, operator_actor, acme):
    remote = zendesk.add_ticket("Billing page blank", status="open")
    ticket = services.link_ticket(operator_actor, acme, "zendesk", f"ZD-{remote['id']}")
    assert ticket.subject == "Billing page blank" and ticket.status == "open"
    assert ticket.remote_version == remote["updated_at"]
    assert ticket.comments.get().body == "Billing page blank"
    again = services.link_ticket(operator_actor, acme, "zendesk", str(remote["id"]))
    assert again.pk == ticket.pk  # idempotent


def test_a_ticket_linked_to_another_customer_is_refused(jira, operator_actor, acme):
    from tests.helpdesk.conftest import make_customer

    issue = jira.add_issue("Login loops")
    services.link_ticket(operator_actor, acme, "jira", issue["key"])
    other = make_customer("globex", "Globex")
    with pytest.raises(HelpdeskRefused) as refused:
        services.link_ticket(operator_actor, other, "jira", issue["key"].lower())
    assert refused.value.code == "conflict" and "another customer" in refused.value.message
    assert Ticket.objects.count() == 1


def test_linking_a_ticket_the_remote_does_not_have_is_not_found(zendesk, operator_actor, acme):
    with pytest.raises(HelpdeskRefused) as refused:
        services.link_ticket(operator_actor, acme, "zendesk", "ZD-1")
    assert refused.value.code == "not_found" and not Ticket.objects.exists()


# --- outgoing updates, 429, 5xx, idempotency --------------------------------------------------


def test_status_assignee_and_comment_go_out(zendesk, operator_actor, acme):
    ticket = _created(operator_actor, acme)
    services.update_ticket(
        operator_actor, ticket, status="pending", assignee="kim@support.example",
        comment="Scaled the workers.",
    )  # fmt: skip
    results = outbox.send_due()
    assert [r.outcome for r in results] == ["sent", "sent"]
    field_put, comment_put = zendesk.calls("PUT")
    assert field_put["body"]["ticket"]["safe_update"] is True
    assert field_put["body"]["ticket"]["updated_stamp"] == ticket.remote_version
    assert field_put["body"]["ticket"]["status"] == "pending"
    assert comment_put["body"]["ticket"]["comment"]["body"] == "Scaled the workers."
    assert "safe_update" not in comment_put["body"]["ticket"]
    remote = zendesk.tickets[int(ticket.external_id)]
    assert remote["status"] == "pending"
    ticket.refresh_from_db()
    assert ticket.assignee == "kim@support.example" and ticket.status == "pending"
    assert ticket.sync_state == SyncState.IN_SYNC and ticket.remote_version == remote["updated_at"]
    mine = ticket.comments.get(body="Scaled the workers.", from_portal=True)
    assert mine.external_id == str(zendesk.comments[remote["id"]][-1]["id"])


def test_jira_status_goes_by_transition_and_assignee_by_account(jira, operator_actor, acme):
    jira.user("kim@support.example")
    ticket = _created(operator_actor, acme, "jira")
    services.update_ticket(operator_actor, ticket, status="In Progress", assignee="kim@support.example",
                           comment="Looking.")  # fmt: skip
    assert [r.outcome for r in outbox.send_due()] == ["sent", "sent"]
    (transition,) = jira.calls("POST", "/transitions$")
    assert transition["body"] == {"transition": {"id": "21"}}
    issue = jira.issues[ticket.number]
    assert issue["fields"]["status"]["name"] == "In Progress"
    assert issue["fields"]["assignee"]["emailAddress"] == "kim@support.example"
    assert jira.comments[ticket.number][-1]["author"]["emailAddress"] == EMAIL
    ticket.refresh_from_db()
    assert ticket.status == "in progress" and ticket.remote_version == issue["fields"]["updated"]


def test_a_429_is_honoured_not_sent_before_retry_after_then_sent_once(
    zendesk, operator_actor, acme
):
    services.create_ticket(operator_actor, acme, "zendesk", "Slow", "Slow agent")
    zendesk.rate_limit_next(retry_after=30)
    change = TicketChange.objects.get()

    first = outbox.send_change(change.pk)
    assert first.outcome == "postponed" and "30" in first.detail
    change.refresh_from_db()
    assert change.status == OutboxStatus.PENDING
    assert 29 <= (change.next_attempt_at - timezone.now()).total_seconds() <= 31

    assert outbox.send_due() == []  # not due: nothing goes out
    assert outbox.send_change(change.pk).outcome == "not_due"
    assert len(zendesk.calls("POST")) == 1  # only the refused one

    later = timezone.now() + timedelta(seconds=31)
    assert [r.outcome for r in outbox.send_due(now=later)] == ["sent"]
    assert outbox.send_change(change.pk, now=later).outcome == "done"  # never twice
    assert len(zendesk.tickets) == 1
    assert [c["status"] for c in zendesk.calls("POST")] == [429, 201]


def test_a_retried_create_reuses_its_idempotency_key_and_makes_one_ticket(
    zendesk, operator_actor, acme
):
    ticket = services.create_ticket(operator_actor, acme, "zendesk", "Twice?", "x")
    change = TicketChange.objects.get()
    # The first try gets through, but its answer is lost (a 502 from a proxy, say): the
    # change stays pending and goes again with the same key.
    status, _, _ = zendesk.create({"ticket": {"subject": "Twice?"}}, change.idempotency_key)
    assert status == 201 and len(zendesk.tickets) == 1
    zendesk.fail_next(502)
    assert outbox.send_change(change.pk).outcome == "retry"
    change.refresh_from_db()
    assert change.attempts == 1 and change.next_attempt_at > timezone.now()

    assert outbox.send_change(change.pk, now=change.next_attempt_at).outcome == "sent"

    keys = [c["headers"]["Idempotency-Key"] for c in zendesk.calls("POST")]
    assert keys == [change.idempotency_key] * 2
    assert len(zendesk.tickets) == 1  # the fake de-duplicated by the key
    ticket.refresh_from_db()
    assert ticket.external_id == str(next(iter(zendesk.tickets)))


def test_a_retried_jira_create_finds_the_issue_it_made(jira, operator_actor, acme):
    services.create_ticket(operator_actor, acme, "jira", "Once", "x")
    change = TicketChange.objects.get()
    jira.fail_next(500)
    assert outbox.send_change(change.pk).outcome == "retry"
    # An earlier try that got through (its answer lost): the issue carries the key.
    with jira.lock:
        issue = jira._issue("Once", None, EMAIL)
        jira.properties[issue["key"]] = {
            "waooaw.portal": {"idempotencyKey": change.idempotency_key}
        }
    change.refresh_from_db()
    assert outbox.send_change(change.pk, now=change.next_attempt_at).outcome == "sent"
    assert len(jira.issues) == 1 and Ticket.objects.get().number == issue["key"]


def test_a_change_that_keeps_failing_is_given_up_and_shown(zendesk, operator_actor, acme):
    ticket = _created(operator_actor, acme)
    services.update_ticket(operator_actor, ticket, status="hold")
    zendesk.fail_next(422)
    (result,) = outbox.send_due()
    assert result.outcome == "failed"
    ticket.refresh_from_db()
    assert ticket.sync_state == SyncState.FAILED and "422" in ticket.sync_problem


# --- conflicts --------------------------------------------------------------------------------


def test_a_conflict_is_shown_not_overwritten_and_theirs_can_be_kept(zendesk, operator_actor, acme):
    ticket = _created(operator_actor, acme)
    zendesk.change_behind(int(ticket.external_id), status="hold", assignee="lee@support.example")
    services.update_ticket(operator_actor, ticket, status="solved")

    (result,) = outbox.send_due()

    assert result.outcome == "conflict"
    remote = zendesk.tickets[int(ticket.external_id)]
    assert remote["status"] == "hold"  # not overwritten
    ticket.refresh_from_db()
    assert ticket.sync_state == SyncState.CONFLICT
    assert ticket.conflict["ours"] == {"status": "solved"}
    assert ticket.conflict["theirs"]["status"] == "hold"
    assert ticket.conflict["theirs"]["assignee"] == "lee@support.example"
    with pytest.raises(HelpdeskRefused):  # no more changes until it is settled
        services.update_ticket(operator_actor, ticket, status="open")

    services.resolve_conflict(operator_actor, ticket, "theirs")

    ticket.refresh_from_db()
    assert ticket.sync_state == SyncState.IN_SYNC and ticket.status == "hold"
    assert ticket.remote_version == remote["updated_at"] and ticket.conflict == {}
    assert outbox.send_due() == [] and remote["status"] == "hold"


def test_a_conflict_resolved_as_ours_is_sent_against_their_version(jira, operator_actor, acme):
    ticket = _created(operator_actor, acme, "jira")
    jira.change_behind(ticket.number, status="In Progress")
    services.update_ticket(operator_actor, ticket, status="Done")
    assert [r.outcome for r in outbox.send_due()] == ["conflict"]
    assert jira.issues[ticket.number]["fields"]["status"]["name"] == "In Progress"
    ticket.refresh_from_db()
    assert services.conflict_sides(ticket) == [
        {"field": "status", "ours": "done", "theirs": "in progress"}
    ]

    services.resolve_conflict(operator_actor, ticket, "ours")

    assert [r.outcome for r in outbox.send_due()] == ["sent"]
    assert jira.issues[ticket.number]["fields"]["status"]["name"] == "Done"
    ticket.refresh_from_db()
    assert ticket.sync_state == SyncState.IN_SYNC and ticket.status == "done"
    assert AuditEntry.objects.filter(action="helpdesk.ticket_resolve").count() == 1


def test_resolving_a_ticket_not_in_conflict_is_refused(zendesk, operator_actor, acme):
    ticket = _created(operator_actor, acme)
    with pytest.raises(HelpdeskRefused) as refused:
        services.resolve_conflict(operator_actor, ticket, "ours")
    assert refused.value.code == "conflict"


# --- incoming webhooks ------------------------------------------------------------------------


def test_a_status_change_on_zendesk_comes_back(zendesk, operator_actor, acme):
    ticket = _created(operator_actor, acme)
    zendesk.change_behind(int(ticket.external_id), status="solved", assignee="lee@support.example")
    answer = deliver(Client(), "zendesk", zendesk.webhook(int(ticket.external_id)))
    assert answer.status_code == 200 and answer.json()["result"] == "applied"
    ticket.refresh_from_db()
    assert ticket.status == "solved" and ticket.assignee == "lee@support.example"
    entry = AuditEntry.objects.get(action="helpdesk.ticket_synced")
    assert entry.actor == "system:zendesk"
    assert entry.detail["changes"]["status"] == {"from": "new", "to": "solved"}
    assert outbox.send_due() == []  # nothing goes back out


def test_a_comment_made_on_jira_comes_back(jira, operator_actor, acme):
    ticket = _created(operator_actor, acme, "jira")
    jira.change_behind(ticket.number, comment="Customer confirms it works.")
    answer = deliver(Client(), "jira", jira.webhook(ticket.number, comment=True))
    assert answer.json()["result"] == "applied"
    comment = ticket.comments.get(from_portal=False)
    assert comment.body == "Customer confirms it works." and comment.author == HUMAN
    assert not comment.from_portal


def test_our_own_change_coming_back_is_ignored_as_an_echo(zendesk, jira, operator_actor, acme):
    for system, fake in (("zendesk", zendesk), ("jira", jira)):
        ticket = _created(operator_actor, acme, system)
        services.update_ticket(
            operator_actor, ticket, status="solved" if system == "zendesk" else "Done"
        )
        outbox.send_due()
        ref = int(ticket.external_id) if system == "zendesk" else ticket.number
        answer = deliver(Client(), system, fake.webhook(ref))
        assert answer.status_code == 200 and answer.json()["result"] == "echo", system
    assert not AuditEntry.objects.filter(action="helpdesk.ticket_synced").exists()
    assert outbox.send_due() == []  # and nothing went back out


def test_a_duplicate_delivery_is_ignored(zendesk, operator_actor, acme):
    ticket = _created(operator_actor, acme)
    zendesk.change_behind(int(ticket.external_id), comment="First reply")
    delivery = zendesk.webhook(int(ticket.external_id), comment=True, delivery_id="inv-1")
    assert deliver(Client(), "zendesk", delivery).json()["result"] == "applied"
    again = deliver(Client(), "zendesk", delivery)
    assert again.status_code == 200 and again.json()["result"] == "duplicate"
    assert ticket.comments.filter(from_portal=False).count() == 1
    assert WebhookDelivery.objects.filter(delivery_id="inv-1").count() == 1


def test_an_older_version_is_ignored_as_stale(zendesk, operator_actor, acme):
    ticket = _created(operator_actor, acme)
    zendesk.change_behind(int(ticket.external_id), status="open")
    old = zendesk.webhook(int(ticket.external_id))
    zendesk.change_behind(int(ticket.external_id), status="solved")
    assert (
        deliver(Client(), "zendesk", zendesk.webhook(int(ticket.external_id))).json()["result"]
        == "applied"
    )
    late = deliver(Client(), "zendesk", old)
    assert late.json()["result"] == "stale"
    ticket.refresh_from_db()
    assert ticket.status == "solved"


@pytest.mark.parametrize("spoil", ["tamper", "wrong_secret", "unsigned", "old"])
def test_a_bad_signature_is_refused_logged_and_changes_nothing(
    zendesk, jira, operator_actor, acme, spoil, caplog
):
    ticket = _created(operator_actor, acme, "jira")
    jira.change_behind(ticket.number, status="Done")
    kwargs = {"tamper": spoil == "tamper", "unsigned": spoil == "unsigned"}
    if spoil == "wrong_secret":
        kwargs["secret"] = "guessed"
    if spoil == "old":  # Jira signatures carry no time; Zendesk's do
        zticket = _created(operator_actor, acme, "zendesk")
        zendesk.change_behind(int(zticket.external_id), status="solved")
        delivery = zendesk.webhook(int(zticket.external_id), timestamp="2020-01-01T00:00:00Z")
        answer = deliver(Client(), "zendesk", delivery)
        zticket.refresh_from_db()
        assert zticket.status == "new"
    else:
        answer = deliver(Client(), "jira", jira.webhook(ticket.number, **kwargs))
    assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
    assert "signature" in answer.json()["detail"]
    ticket.refresh_from_db()
    assert ticket.status == "to do"
    refused = WebhookDelivery.objects.get()
    assert refused.result == WebhookDelivery.Result.REFUSED and "signature" in refused.detail
    assert "refused" in caplog.text
    assert not AuditEntry.objects.filter(action="helpdesk.ticket_synced").exists()


def test_an_incoming_change_during_a_conflict_updates_their_side_only(
    zendesk, operator_actor, acme
):
    ticket = _created(operator_actor, acme)
    zendesk.change_behind(int(ticket.external_id), status="hold")
    services.update_ticket(operator_actor, ticket, status="solved")
    outbox.send_due()
    zendesk.change_behind(int(ticket.external_id), status="open")
    assert (
        deliver(Client(), "zendesk", zendesk.webhook(int(ticket.external_id))).json()["result"]
        == "applied"
    )
    ticket.refresh_from_db()
    assert ticket.sync_state == SyncState.CONFLICT and ticket.status == "solved"
    assert ticket.conflict["theirs"]["status"] == "open"


@pytest.mark.django_db(transaction=True)
def test_the_fake_calls_our_webhook_over_real_http(zendesk, operator_actor, acme, live_server):
    import requests

    ticket = _created(operator_actor, acme)
    zendesk.webhook_url = f"{live_server.url}/api/platform/helpdesk/webhooks/zendesk"
    answer = requests.post(
        f"{settings.ZENDESK_URL}/_fake/change",
        json={"ticket": ticket.number, "status": "pending", "comment": "Waiting on the customer"},
        timeout=10,
    )
    assert answer.json()["webhook_status"] == 200
    ticket.refresh_from_db()
    assert ticket.status == "pending"
    assert ticket.comments.filter(body="Waiting on the customer", from_portal=False).exists()
    delivery = WebhookDelivery.objects.get()
    assert delivery.result == "applied" and delivery.source == "127.0.0.1"


# --- off ----------------------------------------------------------------------------------------


def test_a_system_that_is_off_says_so(systems_off, operator_actor, acme):
    for call in (
        lambda: services.create_ticket(operator_actor, acme, "zendesk", "x", "y"),
        lambda: services.link_ticket(operator_actor, acme, "jira", "SUP-1"),
    ):
        with pytest.raises(HelpdeskRefused) as refused:
            call()
        assert refused.value.code == "off" and "_URL is not set" in refused.value.message
    answer = Client().post("/api/platform/helpdesk/webhooks/jira", data=b"{}",
                           content_type="application/json")  # fmt: skip
    assert answer.status_code == 409 and answer.json()["code"] == "off"
    assert not Ticket.objects.exists() and not TicketChange.objects.exists()


# --- reads and sends that fail ------------------------------------------------------------------


def test_a_link_while_rate_limited_says_when_to_try_again(zendesk, operator_actor, acme):
    remote = zendesk.add_ticket("Slow")
    zendesk.rate_limit_next(retry_after=45)
    with pytest.raises(HelpdeskRefused) as refused:
        services.link_ticket(operator_actor, acme, "zendesk", str(remote["id"]))
    assert refused.value.code == "rate_limited" and "45 s" in refused.value.message
    assert not Ticket.objects.exists()


def test_a_read_retries_a_5xx_with_backoff(jira, operator_actor, acme):
    issue = jira.add_issue("Flaky")
    jira.fail_next(503, times=2)
    ticket = services.link_ticket(operator_actor, acme, "jira", issue["key"])
    assert ticket.number == issue["key"]
    assert [c["status"] for c in jira.calls("GET", "/issue/")][:3] == [503, 503, 200]


def test_a_send_to_an_unreachable_remote_is_retried_with_backoff(
    zendesk, settings, operator_actor, acme
):
    services.create_ticket(operator_actor, acme, "zendesk", "Down", "b")
    zendesk.stop()
    change = TicketChange.objects.get()
    first = outbox.send_change(change.pk)
    assert first.outcome == "retry" and "could not be reached" in first.detail
    change.refresh_from_db()
    wait = (change.next_attempt_at - timezone.now()).total_seconds()
    assert 10 < wait <= outbox.backoff(1)
    change.next_attempt_at = timezone.now()
    change.save()
    assert outbox.send_change(change.pk).outcome == "retry"
    change.refresh_from_db()
    assert change.attempts == 2 and (change.next_attempt_at - timezone.now()).total_seconds() > 20


def test_a_ticket_that_never_reached_the_remote_cannot_be_updated(zendesk, operator_actor, acme):
    ticket = services.create_ticket(operator_actor, acme, "zendesk", "Refused", "b")
    zendesk.fail_next(422)
    assert [r.outcome for r in outbox.send_due()] == ["failed"]
    ticket.refresh_from_db()
    assert ticket.sync_state == SyncState.FAILED
    with pytest.raises(HelpdeskRefused) as refused:
        services.update_ticket(operator_actor, ticket, status="open")
    assert "create it again" in refused.value.message


def test_an_update_queued_while_creating_goes_after_the_create(jira, operator_actor, acme):
    ticket = services.create_ticket(operator_actor, acme, "jira", "Fast", "b")
    services.update_ticket(operator_actor, ticket, status="In Progress")
    assert [r.outcome for r in outbox.send_due()] == ["sent", "sent"]
    ticket.refresh_from_db()
    assert jira.issues[ticket.number]["fields"]["status"]["name"] == "In Progress"
    assert ticket.sync_state == SyncState.IN_SYNC


# --- a real worker ------------------------------------------------------------------------------


def _wait_for(check, seconds: float = 15.0):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.django_db(transaction=True)
def test_a_worker_sends_on_commit_and_the_sweep_sends_after_retry_after(
    zendesk, operator_actor, acme, redis_client
):
    from celery.contrib.testing.worker import start_worker

    from helpdesk.tickets import tasks
    from portal.celery import app as celery_app

    with start_worker(celery_app, pool="solo", perform_ping_check=False):
        ticket = services.create_ticket(operator_actor, acme, "zendesk", "Via a worker", "b")
        assert _wait_for(
            lambda: Ticket.objects.filter(pk=ticket.pk, sync_state=SyncState.IN_SYNC).exists()
        )
        ticket.refresh_from_db()
        zendesk.rate_limit_next(retry_after=1)
        services.update_ticket(operator_actor, ticket, status="open")
        change = TicketChange.objects.get(kind="update")
        assert _wait_for(lambda: TicketChange.objects.get(pk=change.pk).attempts == 1)
        assert TicketChange.objects.get(pk=change.pk).status == OutboxStatus.PENDING
        assert len(zendesk.calls("PUT")) == 1  # the 429; not sent again before Retry-After
        tasks.sweep()  # too early: nothing is due
        assert _wait_for(lambda: False, 0.5) is False and len(zendesk.calls("PUT")) == 1
        assert _wait_for(
            lambda: timezone.now() >= TicketChange.objects.get(pk=change.pk).next_attempt_at, 3
        )
        tasks.sweep()
        assert _wait_for(lambda: TicketChange.objects.get(pk=change.pk).status == OutboxStatus.SENT)
    assert [c["status"] for c in zendesk.calls("PUT")] == [429, 200]
    assert zendesk.tickets[int(ticket.external_id)]["status"] == "open"


def test_unassigning_goes_out_as_no_assignee(zendesk, operator_actor, acme):
    ticket = _created(operator_actor, acme)
    services.update_ticket(operator_actor, ticket, assignee="kim@support.example")
    outbox.send_due()
    ticket.refresh_from_db()
    services.update_ticket(operator_actor, ticket, assignee="")
    assert [r.outcome for r in outbox.send_due()] == ["sent"]
    assert zendesk.calls("PUT")[-1]["body"]["ticket"]["assignee_id"] is None
    assert zendesk.tickets[int(ticket.external_id)]["assignee_id"] is None
    ticket.refresh_from_db()
    assert ticket.assignee == ""


def test_the_sweep_forgets_deliveries_older_than_a_month(zendesk, operator_actor, acme):
    from helpdesk.tickets import webhooks

    ticket = _created(operator_actor, acme)
    deliver(Client(), "zendesk", zendesk.webhook(int(ticket.external_id), delivery_id="old"))
    deliver(Client(), "zendesk", zendesk.webhook(int(ticket.external_id), delivery_id="new"))
    WebhookDelivery.objects.filter(delivery_id="old").update(
        received_at=timezone.now() - timedelta(days=31)
    )
    assert webhooks.prune_deliveries() == 1
    assert list(WebhookDelivery.objects.values_list("delivery_id", flat=True)) == ["new"]


def test_a_trigger_payload_with_an_email_and_the_latest_comment(zendesk, operator_actor, acme):
    from tests.helpdesk.tickets_kit import zendesk_delivery

    ticket = _created(operator_actor, acme)
    payload = {"ticket": {
        "id": int(ticket.external_id), "status": "Pending", "priority": "High",
        "subject": "Agent down (again)", "assignee_email": "lee@support.example",
        "updated_at": "2027-01-01T00:00:00Z",
        "latest_comment": {"id": 77, "body": "Customer replied", "author_email": HUMAN},
    }}  # fmt: skip
    answer = deliver(Client(), "zendesk", zendesk_delivery(payload))
    assert answer.json()["result"] == "applied"
    ticket.refresh_from_db()
    assert (ticket.status, ticket.priority, ticket.assignee) == (
        "pending",
        "high",
        "lee@support.example",
    )
    assert ticket.subject == "Agent down (again)"
    assert ticket.comments.get(external_id="77").author == HUMAN


def test_a_delivery_about_no_linked_ticket_is_kept_and_ignored(zendesk, acme):
    from tests.helpdesk.tickets_kit import zendesk_delivery

    payload = {"ticket": {"id": 123456, "status": "open", "updated_at": "2027-01-01T00:00:00Z"}}
    answer = deliver(Client(), "zendesk", zendesk_delivery(payload, delivery_id="lost-1"))
    assert answer.status_code == 200 and answer.json()["result"] == "unknown"
    assert WebhookDelivery.objects.get().delivery_id == "lost-1"


def test_a_signed_delivery_that_is_not_a_ticket_is_a_400(zendesk, jira):
    from tests.helpdesk.tickets_kit import zendesk_delivery

    answer = deliver(Client(), "zendesk", zendesk_delivery({"hello": "world"}))
    assert answer.status_code == 400 and "no ticket" in answer.json()["detail"]
    assert WebhookDelivery.objects.get().result == "refused"


@pytest.mark.django_db(transaction=True)
def test_two_senders_at_once_send_a_change_once(zendesk, operator_actor, acme):
    services.create_ticket(operator_actor, acme, "zendesk", "Raced", "b")
    change = TicketChange.objects.get()
    zendesk.delay = 0.5  # the first sender is still waiting for Zendesk when the second comes
    results = at_once(lambda: outbox.send_change(change.pk).outcome, 2)
    assert sorted(results) == ["busy", "sent"]
    assert len(zendesk.calls("POST")) == 1 and len(zendesk.tickets) == 1
