"""The observability app's part of the audit walk (``tests/audit_kit.py``): alerts and their
rules, objectives, the agent context and the queues, each called for real by an Admin and by a
Viewer (queues on this worker's Redis, dead letters written as agentd writes them)."""

from __future__ import annotations

from datetime import timedelta

from agents.agentd import contract
from agents.models import Agent
from observability import agent_rules, alerts, context, slo
from observability.models import Alert, AlertRule
from observability.queues import services as queues
from tests.audit_kit import Walk
from tests.observability.queues.conftest import dead_letter, queue_redis  # noqa: F401 (fixtures)

walk = Walk()

NOT_WALKED = {
    "observability.events.record": "writes an event for the caller (its actor is a label); "
    "each caller audits its own change",
    "observability.context.resolve": "reads ?agent= and calls choose, walked here",
    "observability.notify.on_agent_viewed": "opening an agent's page calls choose, walked here",
    "observability.alerts.seed_step": "manage.py setup's step: ensure_default_rules, walked here",
}

CACHE = "agents:wow-cache:tasks"


def _cache(w) -> Agent:
    return w.fixture("seeded")["wow-cache"]


def _alert(w) -> Alert:
    rule = AlertRule.objects.create(name="walk: backlog", kind=AlertRule.Kind.METRIC,
                                    metric="queue_backlog", threshold=1)  # fmt: skip
    return Alert.objects.create(rule=rule, agent=_cache(w), severity="warning", summary="walk")


@walk("observability.alerts.acknowledge")
def _(w, actor):
    alerts.acknowledge(_alert(w), actor, note="on it")


@walk("observability.alerts.resolve")
def _(w, actor):
    alerts.resolve(_alert(w), actor, note="fixed")


@walk("observability.alerts.silence")
def _(w, actor):
    alerts.silence(_alert(w), actor, timedelta(minutes=30))


@walk("observability.alerts.ensure_default_rules")
def _(w, actor):
    alerts.ensure_default_rules(actor)


@walk("observability.agent_rules.add_agent_rules")
def _(w, actor):
    agent_rules.add_agent_rules(_cache(w), [{"title": "backlog", "metric": "queue_backlog",
                                             "threshold": 100}], actor)  # fmt: skip


@walk("observability.agent_rules.remove_agent_rules")
def _(w, actor):
    ids = agent_rules.add_agent_rules(_cache(w), [{"metric": "queue_backlog"}], w.admin)
    agent_rules.remove_agent_rules("wow-cache", ids, actor)


@walk("observability.slo.set_objective")
def _(w, actor):
    slo.set_objective(_cache(w), "99.5", actor)


@walk("observability.context.choose", viewer_may="everyone picks the agent their pages show")
def _(w, actor):
    context.choose(actor, _cache(w))


@walk("observability.queues.services.send")
def _(w, actor):
    _cache(w)
    queues.send(actor, CACHE, {"key": "a"}, count=2)


def _letters(w, count: int = 2) -> list[str]:
    _cache(w)
    return [w.fixture("dead_letter")("wow-cache") for _ in range(count)]


@walk("observability.queues.services.start_job")
def _(w, actor):
    _letters(w)
    queues.start_job(actor, CACHE, "redrive", "all", enqueue=False)


@walk("observability.queues.services.cancel_job")
def _(w, actor):
    _letters(w)
    job = queues.start_job(w.admin, CACHE, "delete", "selected", ids=_letters(w, 1), enqueue=False)
    queues.cancel_job(actor, job.pk)


@walk("observability.queues.services.edit_and_retry")
def _(w, actor):
    (letter,) = _letters(w, 1)
    queues.edit_and_retry(actor, CACHE, letter, '{"key": "b"}')


@walk("observability.queues.services.claim")
def _(w, actor):
    _cache(w)
    redis = w.fixture("queue_redis")
    key = contract.task_stream("wow-cache")
    redis.xgroup_create(key, contract.CONSUMER_GROUP, id="0", mkstream=True)
    redis.xadd(key, {"n": "1"})
    redis.xreadgroup(contract.CONSUMER_GROUP, "wow-cache-7", {key: ">"}, count=1)
    queues.claim(actor, CACHE, "wow-cache-7", mode="redeliver")


@walk("observability.queues.services.purge")
def _(w, actor):
    _cache(w)
    w.fixture("queue_redis").xadd(contract.task_stream("wow-cache"), {"n": "1"})
    queues.purge(actor, CACHE, confirm="wow-cache")


@walk("observability.queues.services.set_thresholds")
def _(w, actor):
    _cache(w)
    queues.set_thresholds(actor, CACHE, {"backlog_degraded": 5})


@walk("observability.queues.services.recount_groups")
def _(w, actor):
    _letters(w)
    queues.recount_groups(actor, CACHE)


test_writes_an_audit_entry, test_a_viewers_refusal_is_audited = walk.tests()
