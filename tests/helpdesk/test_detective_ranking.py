"""Ranking the candidates: root causes above their consequences, the symptom's words weighting
them, confidences that sum to less than one and move with the operators' verdicts, similar past
issues found by trigram similarity; and what ``gather`` costs, whatever the number of agents."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from helpdesk.detective import ranking, services
from helpdesk.detective.signals import gather
from helpdesk.models import Diagnosis, SubscriptionStatus, Ticket, Verdict
from tests.helpdesk import detective_kit as kit


@pytest.fixture
def shop(db, redis_client):
    owner = kit.customer("shop-co", "Shop Co")
    worker = kit.agent(owner, "shop-worker")
    mailer = kit.agent(owner, "shop-mailer", replicas=1)
    for a in (worker, mailer):
        kit.traffic(owner, a, count=90)
        kit.idle_stream(redis_client, a)
        kit.metric(a)
    return owner, worker, mailer


def causes(diagnosis: Diagnosis) -> list[str]:
    return [c["cause"] for c in diagnosis.causes]


def test_a_crash_outranks_the_backlog_it_leaves_behind(shop, redis_client, operator_actor):
    owner, worker, _ = shop
    kit.crash(worker, times=2)
    redis_client.delete(f"agents:{worker.slug}:tasks")
    kit.backlog(redis_client, worker, 900, consumers=0)
    diagnosis = services.diagnose(operator_actor, owner, "agent not responding")
    assert causes(diagnosis)[0] == "crash"
    assert "queue_backlog" in causes(diagnosis)


def test_a_config_change_outranks_the_dead_letters_it_causes(shop, redis_client, operator_actor):
    owner, worker, _ = shop
    kit.change_config(worker, ago=timedelta(minutes=45))
    kit.traffic(owner, worker, since=timedelta(minutes=44), count=60, failure_share=0.7,
                error="ValueError: template missing")  # fmt: skip
    kit.dead_letters(
        redis_client, worker, 40, customer_key=owner.key, error="ValueError: template missing"
    )
    diagnosis = services.diagnose(operator_actor, owner, "tasks keep failing since this morning")
    assert causes(diagnosis)[:2] == ["bad_config", "dead_letter_storm"]


def test_the_symptom_weights_two_real_causes(shop, redis_client, operator_actor):
    owner, worker, _ = shop
    owner.last_payment_failed_at = timezone.now() - timedelta(days=2)
    owner.save()
    redis_client.delete(f"agents:{worker.slug}:tasks")
    kit.backlog(redis_client, worker, 700)
    paying = services.diagnose(operator_actor, owner, "their card was declined")
    waiting = services.diagnose(operator_actor, owner, "the agent is not responding")
    assert causes(paying)[0] == "payment_failure"
    assert causes(waiting)[0] == "queue_backlog"


def test_confidences_sum_to_less_than_one_and_a_lone_cause_is_confident(shop, operator_actor):
    owner, worker, _ = shop
    kit.crash(worker, times=3)
    diagnosis = services.diagnose(operator_actor, owner, "agent not responding")
    total = sum(c["confidence"] for c in diagnosis.causes)
    assert total < 1
    assert diagnosis.confidence == diagnosis.causes[0]["confidence"] >= 0.8


def test_nothing_found_is_said_with_no_confidence(shop, operator_actor):
    owner, *_ = shop
    diagnosis = services.diagnose(operator_actor, owner, "agent not responding")
    assert diagnosis.causes == [] and diagnosis.top_cause == "" and diagnosis.confidence == 0


def test_verdicts_move_the_confidence_of_their_cause(shop, operator_actor):
    owner, worker, _ = shop
    kit.crash(worker, times=3)
    before = services.diagnose(operator_actor, owner, "agent not responding").confidence
    for _ in range(8):
        wrong = services.diagnose(operator_actor, owner, "agent not responding")
        services.record_verdict(operator_actor, wrong, "wrong", "dependency_down")
    lowered = services.diagnose(operator_actor, owner, "agent not responding").confidence
    assert lowered < before - 0.2
    for row in Diagnosis.objects.filter(verdict=Verdict.WRONG):
        services.record_verdict(operator_actor, row, "right")
    raised = services.diagnose(operator_actor, owner, "agent not responding").confidence
    assert raised > lowered
    assert raised <= 1 - ranking.RESIDUAL / 2


def test_the_track_record_is_laplace_smoothed():
    assert ranking.Record(0, 0).precision == 0.5
    assert ranking.Record(3, 1).precision == pytest.approx(4 / 6)
    assert ranking.calibrated(0.8, None) == 0.8
    assert ranking.calibrated(0.8, ranking.Record(0, 10)) < 0.5


def test_similar_past_issues_are_found_by_their_words(shop, operator_actor, acme):
    owner, worker, _ = shop
    kit.crash(worker)
    earlier = services.diagnose(operator_actor, acme, "agent not responding since noon")
    services.record_verdict(operator_actor, earlier, "wrong", "queue_backlog")
    services.diagnose(operator_actor, acme, "invoice shows the wrong amount")
    Ticket.objects.create(customer=acme, system="zendesk", external_id="77", number="ZD-77",
                          subject="Agent not responding at all", status="solved")  # fmt: skip
    now = services.diagnose(operator_actor, owner, "agent not responding")
    similar = services.similar_to(now)
    kinds = {(item["kind"], item["id"]) for item in similar["items"]}
    assert ("diagnosis", earlier.pk) in kinds
    assert any(kind == "ticket" for kind, _ in kinds)
    assert all("invoice" not in item.get("symptom", "") for item in similar["items"])
    assert similar["summary"] == "1 similar issue last week, most often queue_backlog."
    found = next(i for i in similar["items"] if i["id"] == earlier.pk)
    assert (found["verdict"], found["actual_cause"]) == ("wrong", "queue_backlog")


class CountingConnection(redis.Connection):
    """A real connection that counts its round trips (one send per command or pipeline)."""

    sent = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sent += 1
        return super().send_packed_command(command, check_health)


def _cost(owner, client) -> tuple[int, int]:
    CountingConnection.sent = 0
    with CaptureQueriesContext(connection) as queries:
        signals = gather(owner, client=client)
    assert len(signals.agents) == owner.links.count()
    return len(queries), CountingConnection.sent


def test_gather_costs_the_same_for_one_agent_and_five(
    db, redis_url, redis_client, django_assert_num_queries
):
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        redis_url, decode_responses=True, connection_class=CountingConnection))  # fmt: skip
    small, big = kit.customer("small-co"), kit.customer("big-co")
    one = kit.agent(small, "small-1")
    kit.traffic(small, one, count=20)
    dependency = kit.agent(None, "shared-dep")
    for number in range(5):
        made = kit.agent(big, f"big-{number}")
        made.dependencies.add(dependency)
        kit.traffic(big, made, count=20, failure_share=0.2)
        kit.metric(made)
        kit.crash(made) if number % 2 else kit.log(made, "warning: slow call", level=30)
        kit.dead_letters(redis_client, made, 3, customer_key=big.key, error="boom")
    _cost(small, client)  # the look script is loaded once
    queries, trips = _cost(small, client)
    with django_assert_num_queries(queries):
        gather(big, client=client)
    assert _cost(big, client) == (queries, trips)
    assert trips <= 4


def test_a_customer_on_trial_without_agents_costs_little(
    db, redis_client, django_assert_max_num_queries
):
    owner = kit.customer("empty-co", status=SubscriptionStatus.TRIALING,
                         trial_ends_at=timezone.now() - timedelta(days=1))  # fmt: skip
    with django_assert_max_num_queries(4):
        signals = gather(owner)
    assert signals.agents == [] and signals.traffic.total == 0
