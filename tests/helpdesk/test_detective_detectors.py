"""Every detector of the Issue Detective: it speaks when its evidence is in the stores, with
figures, links and a fix, and stays silent when the evidence is not there (or is old, or below
its threshold)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import State
from helpdesk.detective import symptoms
from helpdesk.detective.detectors import DETECTORS, detect
from helpdesk.detective.signals import gather
from helpdesk.models import SubscriptionStatus
from portal.actors import Actor
from tests.helpdesk import detective_kit as kit


@pytest.fixture
def shop(db, redis_client):
    """A customer with two healthy agents, steady traffic, idle queues and calm metrics."""
    owner = kit.customer("shop-co", "Shop Co")
    worker = kit.agent(owner, "shop-worker")
    mailer = kit.agent(owner, "shop-mailer", replicas=1)
    for a in (worker, mailer):
        kit.traffic(owner, a, count=90)
        kit.idle_stream(redis_client, a)
        kit.metric(a)
    # Noise: an old resolved error and an old restart.
    kit.error(worker, "killed", ago=timedelta(days=3), status="resolved")
    kit.transition(mailer, "restart", State.RUNNING, State.RUNNING, ago=timedelta(days=2))
    return owner, worker, mailer


def found(owner, symptom: str = "agent not responding", category: str = "") -> dict:
    candidates = detect(gather(owner), symptoms.read(symptom, category))
    return {c.cause: c for c in candidates}


def test_a_healthy_customer_gives_no_cause_at_all(shop):
    owner, *_ = shop
    assert found(owner) == {}


def test_every_cause_has_a_detector():
    assert set(DETECTORS) >= {
        "queue_backlog", "crash", "out_of_memory", "dependency_down", "bad_config",
        "bad_version", "dead_letter_storm", "slow_performance", "auth_errors",
        "trial_not_activating", "payment_failure", "agent_stopped",
    }  # fmt: skip


# --- queue backlog -----------------------------------------------------------------------------


def test_a_backlog_is_found_with_a_scale_fix_from_the_throughput(shop, redis_client):
    owner, worker, _ = shop
    redis_client.delete(f"agents:{worker.slug}:tasks")
    kit.backlog(redis_client, worker, 1200, oldest=timedelta(minutes=12))
    causes = found(owner)
    backlog = causes["queue_backlog"]
    assert backlog.agent == worker.slug
    assert backlog.evidence[0]["figure"] == 1200
    assert backlog.evidence[0]["link"] == f"/queues/agents:{worker.slug}:tasks/"
    # 2 tasks/s over 2 replicas = 1/s each; 1200 messages in 10 min = 2/s: at least 3 replicas.
    assert backlog.fix["action"] == "scale-agent"
    assert backlog.fix["params"]["replicas"] >= 3
    assert "2 → " in backlog.fix["label"]


def test_a_short_queue_is_no_backlog(shop, redis_client):
    owner, worker, _ = shop
    redis_client.delete(f"agents:{worker.slug}:tasks")
    kit.backlog(redis_client, worker, 30, oldest=timedelta(seconds=20))
    assert "queue_backlog" not in found(owner)


# --- crash, out of memory, stopped -------------------------------------------------------------


def test_a_crashed_agent_is_found_with_a_restart(shop):
    owner, worker, _ = shop
    kit.crash(worker, times=3)
    kit.log(worker, "Traceback: ZeroDivisionError in handler")
    crash = found(owner)["crash"]
    assert crash.fix == {"action": "restart-agent", "agent": worker.slug, "params": {},
                         "label": f"Restart {worker.name}"}  # fmt: skip
    texts = " ".join(item["text"] for item in crash.evidence)
    assert "3 crash(es) in the last hour" in texts
    assert "ZeroDivisionError" in texts
    logged = next(item for item in crash.evidence if "ZeroDivisionError" in item["text"])
    assert logged["link"].startswith("/logs/?") and worker.slug in logged["link"]
    assert crash.evidence[0]["link"] == f"/agents/{worker.slug}/"


def test_an_old_crash_that_was_restarted_is_not_one(shop):
    owner, worker, _ = shop
    kit.transition(worker, "fail", State.RUNNING, State.ERRORED, ago=timedelta(hours=5))
    kit.transition(worker, "restart", State.ERRORED, State.RUNNING, ago=timedelta(hours=5))
    assert "crash" not in found(owner)


def test_out_of_memory_outranks_the_crash_it_caused(shop):
    owner, worker, _ = shop
    kit.crash(worker, oom=True, times=2)
    causes = found(owner)
    assert causes["out_of_memory"].score > causes["crash"].score
    assert "256 → 512 MiB" in causes["out_of_memory"].fix["label"]
    assert causes["out_of_memory"].fix["action"] == "raise-memory"
    assert causes["out_of_memory"].fix["params"] == {"memory_mb": 512}


def test_memory_near_its_limit_is_found_without_a_kill(shop):
    owner, _, mailer = shop
    kit.metric(mailer, memory_percent=97, ago=timedelta(seconds=5))
    oom = found(owner)["out_of_memory"]
    assert oom.agent == mailer.slug
    assert any(item.get("figure") == 97.0 for item in oom.evidence)


def test_memory_well_under_its_limit_says_nothing(shop):
    owner, _, mailer = shop
    kit.metric(mailer, memory_percent=70, ago=timedelta(seconds=5))
    assert "out_of_memory" not in found(owner)


def test_an_agent_stopped_by_someone_is_found(shop, operator):
    owner, _, mailer = shop
    kit.transition(mailer, "stop", State.RUNNING, State.STOPPED, ago=timedelta(minutes=20),
                   actor=Actor(kind="user", user=operator, source="x"), reason="maintenance")  # fmt: skip
    kit.set_fields(mailer, state=State.STOPPED)
    stopped = found(owner)["agent_stopped"]
    assert "stop by user:otto: maintenance" in stopped.evidence[1]["text"]
    # The fix starts it again (the start-agent quick action).
    assert stopped.fix == {"action": "start-agent", "agent": mailer.slug, "params": {},
                           "label": f"Start {mailer.name}"}  # fmt: skip
    # A stopped agent is not a crash, and its dependency checks are off.
    assert "crash" not in found(owner)


# --- dependencies ------------------------------------------------------------------------------


def test_a_dependency_down_is_found_and_its_restart_offered(shop):
    owner, worker, _ = shop
    cache = kit.agent(None, "wow-cache-dep", state=State.STOPPED, name="WowCacheDep")
    worker.dependencies.add(cache)
    kit.log(worker, "ConnectionError: connection refused wow-cache-dep:6379")
    dep = found(owner)["dependency_down"]
    assert dep.agent == worker.slug
    # A shared agent is not the customer's: brought back from its page, not by a quick action.
    assert dep.fix is None and dep.evidence[-1]["link"] == "/agents/wow-cache-dep/"
    assert "connection refused" in " ".join(i["text"] for i in dep.evidence)


def test_a_crashed_dependency_of_the_customers_own_is_restarted(shop):
    owner, worker, mailer = shop
    worker.dependencies.add(mailer)
    kit.crash(mailer)
    dep = found(owner)["dependency_down"]
    assert (dep.agent, dep.fix["action"], dep.fix["agent"]) == (
        worker.slug,
        "restart-agent",
        mailer.slug,
    )


def test_a_running_dependency_says_nothing(shop):
    owner, worker, _ = shop
    worker.dependencies.add(kit.agent(None, "wow-cache-ok", name="WowCacheOk"))
    assert "dependency_down" not in found(owner)


# --- changes -----------------------------------------------------------------------------------


def test_a_config_change_followed_by_failures_is_bad_config(shop):
    owner, worker, _ = shop
    kit.change_config(worker, ago=timedelta(minutes=40))
    kit.traffic(owner, worker, since=timedelta(minutes=38), count=40, failure_share=0.6,
                error="TimeoutError: task took over 1 s")  # fmt: skip
    bad = found(owner)["bad_config"]
    assert bad.fix["action"] == "rollback-config"
    assert "Failures since" in bad.evidence[1]["text"]


def test_a_config_change_without_failures_says_nothing(shop):
    owner, worker, _ = shop
    kit.change_config(worker, ago=timedelta(minutes=40))
    assert "bad_config" not in found(owner)


def test_an_upgrade_followed_by_failures_is_a_bad_version(shop):
    owner, worker, _ = shop
    made = kit.upgrade(worker, to_version="1.3.0", ago=timedelta(minutes=50))
    kit.traffic(owner, worker, since=timedelta(minutes=48), count=40, failure_share=0.5)
    bad = found(owner)["bad_version"]
    assert bad.fix["action"] == "rollback-version"
    assert "1.3.0 → 1.2.0" in bad.fix["label"]
    assert bad.evidence[0]["link"] == f"/servicing/upgrades/{made.pk}/"


def test_an_upgrade_that_went_well_says_nothing(shop):
    owner, worker, _ = shop
    kit.upgrade(worker, to_version="1.3.0", ago=timedelta(minutes=50))
    assert "bad_version" not in found(owner)


# --- failing work ------------------------------------------------------------------------------


def test_a_dead_letter_storm_counts_the_customers_share_and_groups(shop, redis_client):
    owner, worker, _ = shop
    kit.dead_letters(redis_client, worker, 150, customer_key=owner.key,
                     error="KeyError: 'sku' in order 1234", others=50)  # fmt: skip
    storm = found(owner)["dead_letter_storm"]
    assert storm.evidence[0]["figure"] == 150
    assert any("KeyError: 'sku'" in item["text"] for item in storm.evidence)
    assert storm.fix["action"] == "redrive-dead-letters"


def test_other_customers_dead_letters_are_not_this_ones_storm(shop, redis_client):
    owner, worker, _ = shop
    kit.dead_letters(redis_client, worker, 0, customer_key=owner.key, error="x", others=300)
    assert "dead_letter_storm" not in found(owner)


def test_slow_tasks_are_slow_performance(shop):
    owner, _, mailer = shop
    kit.traffic(owner, mailer, since=timedelta(minutes=25), count=40, latency_ms=(3000, 9000))
    kit.metric(mailer, cpu=95, ago=timedelta(seconds=5))
    slow = found(owner, "everything is slow")["slow_performance"]
    assert slow.agent == mailer.slug
    assert slow.fix["action"] == "scale-agent"


def test_fast_tasks_are_not_slow(shop):
    owner, *_ = shop
    assert "slow_performance" not in found(owner, "slow")


def test_credential_failures_are_auth_errors(shop):
    owner, worker, _ = shop
    kit.traffic(owner, worker, since=timedelta(minutes=20), count=20, failure_share=0.7,
                error="HTTPError: 401 Unauthorized from api.partner.example")  # fmt: skip
    auth = found(owner, "customers get login errors")["auth_errors"]
    assert "401 Unauthorized" in auth.evidence[0]["text"]
    assert auth.fix["action"] == "restart-agent"


def test_other_failures_are_not_auth_errors(shop):
    owner, worker, _ = shop
    kit.traffic(owner, worker, since=timedelta(minutes=20), count=20, failure_share=0.7,
                error="ValueError: author field missing")  # fmt: skip
    assert "auth_errors" not in found(owner)


# --- the account -------------------------------------------------------------------------------


def test_an_expired_trial_is_found_with_a_reset(db, redis_client):
    owner = kit.customer("trial-co", status=SubscriptionStatus.TRIALING,
                         trial_ends_at=timezone.now() - timedelta(days=2))  # fmt: skip
    trial = found(owner, "trial not activating")["trial_not_activating"]
    assert trial.fix["action"] == "reset-trial"


def test_a_trial_whose_agents_were_never_deployed_is_found(db, redis_client):
    owner = kit.customer("fresh-co", status=SubscriptionStatus.TRIALING,
                         trial_ends_at=timezone.now() + timedelta(days=10))  # fmt: skip
    kit.agent(owner, "fresh-bot", state=State.PROVISIONED)
    trial = found(owner)["trial_not_activating"]
    assert trial.fix["action"] == "resend-email"
    assert "No agent was ever deployed" in trial.evidence[0]["text"]


def test_a_running_trial_says_nothing(shop):
    owner, *_ = shop
    owner.status = SubscriptionStatus.TRIALING
    owner.trial_ends_at = timezone.now() + timedelta(days=5)
    owner.save()
    assert "trial_not_activating" not in found(owner)


def test_a_failed_payment_is_found(shop):
    owner, *_ = shop
    owner.last_payment_failed_at = timezone.now() - timedelta(days=1)
    owner.status = SubscriptionStatus.PAST_DUE
    owner.save()
    pay = found(owner, "payment failures")["payment_failure"]
    assert pay.fix["params"] == {"kind": "payment-failed"}


def test_a_payment_that_failed_long_ago_says_nothing(shop):
    owner, *_ = shop
    owner.last_payment_failed_at = timezone.now() - timedelta(days=90)
    owner.save()
    assert "payment_failure" not in found(owner)


def test_failures_that_began_hours_after_a_config_change_point_at_it_only_weakly(shop):
    owner, worker, _ = shop
    kit.change_config(worker, ago=timedelta(hours=5))
    kit.traffic(owner, worker, since=timedelta(minutes=40), count=40, failure_share=0.7)
    late = found(owner)["bad_config"].score
    kit.change_config(worker, ago=timedelta(minutes=45))
    prompt = found(owner)["bad_config"]
    assert late < prompt.score / 1.5
    assert any("after the change" in item["text"] for item in prompt.evidence)


def test_a_few_failures_after_a_change_are_not_a_rise(shop):
    owner, worker, _ = shop
    kit.change_config(worker, ago=timedelta(minutes=90))
    kit.traffic(owner, worker, since=timedelta(minutes=80), count=3, failure_share=1.0)
    assert "bad_config" not in found(owner)


def test_dead_letters_right_after_a_config_change_are_put_down_to_it(shop, redis_client):
    owner, worker, _ = shop
    kit.dead_letters(redis_client, worker, 120, customer_key=owner.key, error="ValueError: v2")
    kit.traffic(
        owner,
        worker,
        since=timedelta(minutes=30),
        count=40,
        failure_share=0.8,
        error="ValueError: v2",
    )
    alone = found(owner)["dead_letter_storm"].score
    kit.change_config(worker, ago=timedelta(minutes=35))
    causes = found(owner)
    assert causes["dead_letter_storm"].score < alone
    assert causes["bad_config"].score > causes["dead_letter_storm"].score


def test_a_one_off_burst_is_not_read_as_an_inflow_that_keeps_coming(shop, redis_client):
    from django.utils import timezone

    from observability.queues.models import QueueSample

    owner, worker, _ = shop
    redis_client.delete(f"agents:{worker.slug}:tasks")
    kit.backlog(redis_client, worker, 1200, oldest=timedelta(minutes=2))
    now, name = timezone.now(), f"agents:{worker.slug}:tasks"
    # A steady 1 task/s for five minutes, then the newest sample saw a burst of 1,500 tasks.
    QueueSample.objects.bulk_create(
        QueueSample(queue_name=name, ts=now - timedelta(seconds=5 * n), pending=0,
                    in_rate=300.0 if n == 0 else 1.0, out_rate=2.0)
        for n in range(60)
    )  # fmt: skip
    backlog = found(owner)["queue_backlog"]
    # Judged on 1/s (not 300/s): 2/s over 2 replicas, 1 + 1200/300 s = 5/s → 5 replicas.
    assert backlog.fix["params"]["replicas"] == 5
    assert "inflow 1.00/s" in backlog.evidence[-1]["text"]
