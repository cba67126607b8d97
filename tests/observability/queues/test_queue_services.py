"""The queue services against a real Redis and PostgreSQL: sending, the snapshot rule, redrive
and delete jobs, edits, claims, purges, thresholds; every refusal changes nothing."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied

from agents.agentd import contract
from observability.queues import catalog, deadletters, figures, redrive, services
from observability.queues.catalog import QueueNotFound, QueueRefused
from observability.queues.models import QueueThreshold, RedriveJob
from portal.actors import Actor
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db

CACHE = "agents:wow-cache:tasks"


def stream(queue_redis, slug="wow-cache"):
    return queue_redis.xrange(contract.task_stream(slug))


def letters(queue_redis, slug="wow-cache"):
    return queue_redis.xrange(contract.dead_letters(slug))


def run_job(job: RedriveJob) -> RedriveJob:
    redrive.run(job.pk)
    job.refresh_from_db()
    return job


# --- the catalog --------------------------------------------------------------------------------


def test_every_registered_agent_has_a_queue_and_the_celery_queue_is_listed(seeded, queue_redis):
    queue_redis.xadd(contract.task_stream("not-registered"), {"x": "1"})

    names = [ref.name for ref in catalog.discover()]

    assert len([n for n in names if n.startswith("agents:")]) == len(seeded) + 1
    assert "agents:not-registered:tasks" in names
    assert names[-1] == "celery:celery"
    assert catalog.resolve(CACHE).agent_name == "WowCache"


@pytest.mark.parametrize(
    "name", ["nope", "agents:nobody:tasks", "celery:other", "agents:\x00:tasks"]
)
def test_an_unknown_queue_is_not_found_with_what_names_look_like(seeded, queue_redis, name):
    with pytest.raises(QueueNotFound) as refused:
        catalog.resolve(name)
    assert refused.value.status == 404
    assert "agents:<slug>:tasks" in str(refused.value)


# --- sending ------------------------------------------------------------------------------------


def test_an_operator_sends_messages_that_carry_who_produced_them(
    seeded, queue_redis, operator_actor
):
    ids = services.send(operator_actor, CACHE, {"op": "get", "key": "a"}, count=3, customer="acme")

    entries = stream(queue_redis)
    assert [entry_id for entry_id, _ in entries] == ids
    fields = entries[0][1]
    assert fields[contract.FIELD_PRODUCER] == f"portal:{operator_actor.user.username}"
    assert json.loads(fields[contract.FIELD_PAYLOAD]) == {"op": "get", "key": "a"}
    assert fields[contract.FIELD_CUSTOMER] == "acme"
    entry = AuditEntry.objects.get(action="queues.send")
    assert entry.detail["count"] == 3 and entry.target == CACHE


@pytest.mark.parametrize(
    ("payload", "count", "says"),
    [
        ('{"a": 1,,}', 1, "line 1, column 9"),
        ("[1, 2]", 1, "must be a JSON object"),
        ({"a": "x\x00y"}, 1, "NUL"),
        ({"a": 1}, 0, "count must be from 1"),
        ({"a": 1}, 10**12, "count must be from 1"),
        ({"a": 1}, "many", "whole number"),
        ({"big": "x" * 70_000}, 1, "most a message may carry"),
    ],
)
def test_bad_sends_are_refused_and_send_nothing(
    seeded, queue_redis, operator_actor, payload, count, says
):
    with pytest.raises(QueueRefused) as refused:
        services.send(operator_actor, CACHE, payload, count=count)

    assert says in str(refused.value)
    assert refused.value.status == 400
    assert stream(queue_redis) == []
    assert not AuditEntry.objects.filter(action="queues.send").exists()


def test_a_viewer_cannot_send_and_nothing_is_sent(seeded, queue_redis, viewer_actor):
    with pytest.raises(PermissionDenied, match="Operator"):
        services.send(viewer_actor, CACHE, {"a": 1})
    assert stream(queue_redis) == []


def test_the_celery_queue_takes_no_messages_from_people(seeded, queue_redis, operator_actor):
    with pytest.raises(QueueRefused, match="Celery queue"):
        services.send(operator_actor, "celery:celery", {"a": 1})


# --- figures ------------------------------------------------------------------------------------


def test_figures_split_the_stream_into_waiting_and_in_flight_with_the_lag_in_seconds(
    seeded, queue_redis
):
    key = contract.task_stream("wow-cache")
    queue_redis.xgroup_create(key, contract.CONSUMER_GROUP, id="0", mkstream=True)
    old = queue_redis.xadd(key, {"n": "1"}, id="1000-0")  # 1970: very old, delivered below
    queue_redis.xadd(key, {"n": "2"}, id="2000-0")  # waiting, the oldest waiting
    queue_redis.xadd(key, {"n": "3"})
    queue_redis.xreadgroup(contract.CONSUMER_GROUP, "wow-cache-0", {key: ">"}, count=1)

    [look] = figures.look([catalog.resolve(CACHE)], catalog.agent_redis(), None)

    assert (look.length, look.in_flight, look.pending) == (3, 1, 2)
    assert look.lag_seconds == pytest.approx(look.at - 2, abs=1)
    assert look.oldest_age_seconds == pytest.approx(look.at - 1, abs=1)
    assert [(c.name, c.pending, c.replica) for c in look.consumers] == [("wow-cache-0", 1, 0)]
    assert old == "1000-0"


def test_health_is_the_worst_check_and_says_why(seeded, queue_redis):
    QueueThreshold.objects.create(queue_name=CACHE, backlog_degraded=2, backlog_critical=5)
    for n in range(3):
        queue_redis.xadd(contract.task_stream("wow-cache"), {"n": str(n)})

    [look] = figures.with_rates(figures.look([catalog.resolve(CACHE)], catalog.agent_redis(), None))

    assert look.status == figures.DEGRADED
    assert look.reasons == ["backlog 3 messages ≥ 2 messages (degraded)"]


# --- redrive: the snapshot rule -----------------------------------------------------------------


def test_a_letter_that_arrives_after_retry_all_was_confirmed_is_still_there(
    seeded, queue_redis, operator_actor, dead_letter
):
    before = [dead_letter("wow-cache") for _ in range(5)]
    job = services.start_job(operator_actor, CACHE, "redrive", "all")
    late = dead_letter("wow-cache")  # arrives after the confirmation, before the job runs

    job = run_job(job)

    assert job.status == RedriveJob.Status.SUCCEEDED
    assert (job.total, job.done) == (5, 5)
    assert [entry_id for entry_id, _ in letters(queue_redis)] == [late]
    sent_back = stream(queue_redis)
    assert len(sent_back) == 5
    assert {f["redriven_from"] for _, f in sent_back} and all(
        f[contract.FIELD_REDRIVES] == "1" and contract.DLQ_ERROR not in f for _, f in sent_back
    )
    assert before[0] not in {e for e, _ in letters(queue_redis)}
    groups = deadletters.groups(catalog.agent_redis(), catalog.resolve(CACHE))
    assert [(g.label, g.count) for g in groups] == [("ConnectionError: wow-cache:6379", 1)]


def test_retry_a_group_sends_back_only_that_group(seeded, queue_redis, operator_actor, dead_letter):
    for _ in range(3):
        dead_letter("wow-cache", error="ConnectionError: wow-cache:6379")
    other = dead_letter("wow-cache", error="KeyError: 'session'")
    ref = catalog.resolve(CACHE)
    fingerprint = contract.error_fingerprint("ConnectionError: wow-cache:6379")[0]

    job = run_job(
        services.start_job(operator_actor, CACHE, "redrive", "group", fingerprint=fingerprint)
    )

    assert (job.total, job.done, job.held_back) == (3, 3, 0)
    assert [e for e, _ in letters(queue_redis)] == [other]
    assert [(g.label, g.count) for g in deadletters.groups(catalog.agent_redis(), ref)] == [
        ("KeyError: 'session'", 1)
    ]


def test_selected_ids_already_gone_are_skipped_not_failed(
    seeded, queue_redis, operator_actor, dead_letter
):
    kept = dead_letter("wow-cache")
    gone = dead_letter("wow-cache")
    queue_redis.xdel(contract.dead_letters("wow-cache"), gone)

    job = run_job(
        services.start_job(operator_actor, CACHE, "redrive", "selected", ids=[kept, gone])
    )

    assert job.status == RedriveJob.Status.SUCCEEDED
    assert (job.done, job.skipped) == (1, 1)
    assert "1 already gone (skipped)" in job.message


def test_a_letter_redriven_too_often_is_refused_unless_forced(
    seeded, queue_redis, operator_actor, dead_letter
):
    tired = dead_letter("wow-cache", redrives=3)

    with pytest.raises(QueueRefused, match="sent back 3 times already"):
        services.start_job(operator_actor, CACHE, "redrive", "selected", ids=[tired])
    assert not RedriveJob.objects.exists()

    job = run_job(
        services.start_job(operator_actor, CACHE, "redrive", "selected", ids=[tired], force=True)
    )
    assert job.done == 1
    assert stream(queue_redis)[0][1][contract.FIELD_REDRIVES] == "4"


def test_retry_all_holds_back_the_tired_ones_and_says_so(
    seeded, queue_redis, operator_actor, dead_letter
):
    dead_letter("wow-cache")
    tired = dead_letter("wow-cache", redrives=5)

    job = run_job(services.start_job(operator_actor, CACHE, "redrive", "all"))

    assert (job.done, job.held_back) == (1, 1)
    assert "1 held back" in job.message
    assert [e for e, _ in letters(queue_redis)] == [tired]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"scope": "selected", "ids": ["not-an-id"]}, "not a message id"),
        ({"scope": "selected", "ids": []}, "Select at least one"),
        ({"scope": "group", "fingerprint": "zz"}, "not an error group"),
        ({"scope": "everything"}, "not a scope"),
        ({"scope": "all", "rate": "0.01"}, "rate must be from"),
        ({"scope": "all", "rate": "1e9"}, "rate must be from"),
        ({"scope": "all", "rate": "nan"}, "rate must be from"),
    ],
)
def test_bad_redrives_are_refused_and_change_nothing(
    seeded, queue_redis, operator_actor, dead_letter, kwargs, says
):
    dead_letter("wow-cache")
    scope = kwargs.pop("scope")

    with pytest.raises(QueueRefused, match=says):
        services.start_job(operator_actor, CACHE, "redrive", scope, **kwargs)

    assert len(letters(queue_redis)) == 1
    assert not RedriveJob.objects.exists()


def test_an_empty_dead_letter_queue_has_nothing_to_retry(seeded, queue_redis, operator_actor):
    with pytest.raises(QueueRefused, match="no dead letters"):
        services.start_job(operator_actor, CACHE, "redrive", "all")


# --- delete -------------------------------------------------------------------------------------


def test_delete_all_needs_the_slug_typed(seeded, queue_redis, operator_actor, dead_letter):
    dead_letter("wow-cache")

    with pytest.raises(QueueRefused, match="type the agent's slug, wow-cache"):
        services.start_job(operator_actor, CACHE, "delete", "all", confirm="yes")
    assert len(letters(queue_redis)) == 1

    job = run_job(services.start_job(operator_actor, CACHE, "delete", "all", confirm="wow-cache"))
    assert job.done == 1
    assert letters(queue_redis) == [] and stream(queue_redis) == []


def test_a_viewer_cannot_retry_or_delete(seeded, queue_redis, viewer_actor, dead_letter):
    letter = dead_letter("wow-cache")
    for action in ("redrive", "delete"):
        with pytest.raises(PermissionDenied):
            services.start_job(viewer_actor, CACHE, action, "selected", ids=[letter])
    assert len(letters(queue_redis)) == 1


def test_a_cancelled_job_stops_and_says_who(seeded, queue_redis, operator_actor, dead_letter):
    for _ in range(3):
        dead_letter("wow-cache")
    job = services.start_job(operator_actor, CACHE, "redrive", "all", rate="1")
    services.cancel_job(operator_actor, job.pk)

    job = run_job(job)

    assert job.status == RedriveJob.Status.CANCELLED
    assert operator_actor.user.username in job.message
    with pytest.raises(QueueRefused, match="already cancelled"):
        services.cancel_job(operator_actor, job.pk)


# --- edit, then retry ---------------------------------------------------------------------------


def test_edit_then_retry_sends_the_edit_and_keeps_both_in_the_audit(
    seeded, queue_redis, operator_actor, dead_letter
):
    letter = dead_letter("wow-cache", payload={"key": "a", "ttl": 5})

    preview = services.preview_edit(operator_actor, CACHE, letter, '{"key": "a", "ttl": 60}')
    assert '-  "ttl": 5' in preview.diff and '+  "ttl": 60' in preview.diff
    services.edit_and_retry(operator_actor, CACHE, letter, '{"key": "a", "ttl": 60}')

    assert letters(queue_redis) == []
    [(_, fields)] = stream(queue_redis)
    assert json.loads(fields[contract.FIELD_PAYLOAD]) == {"key": "a", "ttl": 60}
    assert fields["edited"] == "1"
    audit = AuditEntry.objects.get(action="queues.edit_and_retry")
    assert '"ttl": 5' in audit.detail["original"] and '"ttl": 60' in audit.detail["edited"]


def test_a_malformed_edit_says_where_it_broke_and_sends_nothing(
    seeded, queue_redis, operator_actor, dead_letter
):
    letter = dead_letter("wow-cache")

    with pytest.raises(QueueRefused) as refused:
        services.edit_and_retry(operator_actor, CACHE, letter, '{\n  "key": "a"\n  "ttl": 1\n}')

    assert "line 3, column 3" in str(refused.value)
    assert refused.value.details == {"line": 3, "column": 3}
    assert len(letters(queue_redis)) == 1 and stream(queue_redis) == []


# --- claims and purges --------------------------------------------------------------------------


def _held_by(queue_redis, consumer: str, count: int) -> list[str]:
    key = contract.task_stream("wow-cache")
    queue_redis.xgroup_create(key, contract.CONSUMER_GROUP, id="0", mkstream=True)
    ids = [queue_redis.xadd(key, {"n": str(n)}) for n in range(count)]
    queue_redis.xreadgroup(contract.CONSUMER_GROUP, consumer, {key: ">"}, count=count)
    return ids


def test_redeliver_puts_a_gone_replicas_entries_back_as_new_messages(
    seeded, queue_redis, operator_actor
):
    ids = _held_by(queue_redis, "wow-cache-7", 3)

    result = services.claim(operator_actor, CACHE, "wow-cache-7", mode="redeliver")

    assert result["ids"] == ids
    key = contract.task_stream("wow-cache")
    assert queue_redis.xpending(key, contract.CONSUMER_GROUP)["pending"] == 0
    assert [f["n"] for _, f in queue_redis.xrange(key)] == ["0", "1", "2"]
    assert not set(ids) & {e for e, _ in queue_redis.xrange(key)}


def test_claim_without_a_running_agent_is_refused(seeded, queue_redis, operator_actor):
    _held_by(queue_redis, "wow-cache-0", 1)

    with pytest.raises(QueueRefused, match="No healthy replica"):
        services.claim(operator_actor, CACHE, "wow-cache-0")


def test_claim_names_the_consumers_when_the_one_asked_for_is_unknown(
    seeded, queue_redis, operator_actor
):
    _held_by(queue_redis, "wow-cache-0", 1)
    with pytest.raises(QueueNotFound, match="its consumers: wow-cache-0"):
        services.claim(operator_actor, CACHE, "wow-cache-9")


def test_purge_is_admin_only_and_needs_the_slug(seeded, queue_redis, operator_actor, admin_actor):
    for n in range(4):
        queue_redis.xadd(contract.task_stream("wow-cache"), {"n": str(n)})

    with pytest.raises(PermissionDenied, match="Admin"):
        services.purge(operator_actor, CACHE, confirm="wow-cache")
    with pytest.raises(QueueRefused, match="type the agent's slug"):
        services.purge(admin_actor, CACHE, confirm="")
    assert len(stream(queue_redis)) == 4

    assert services.purge(admin_actor, CACHE, confirm="wow-cache") == 4
    assert stream(queue_redis) == []
    assert queue_redis.hget(contract.counters("wow-cache"), contract.COUNTER_PURGED) == "4"


# --- thresholds ---------------------------------------------------------------------------------


def test_thresholds_are_validated_and_an_all_empty_set_removes_the_override(seeded, operator_actor):
    services.set_thresholds(
        operator_actor, CACHE, {"backlog_degraded": "10", "backlog_critical": "50"}
    )
    assert QueueThreshold.objects.get(queue_name=CACHE).backlog_critical == 50

    with pytest.raises(QueueRefused, match="must not be above"):
        services.set_thresholds(operator_actor, CACHE, {"backlog_degraded": "100"})
    with pytest.raises(QueueRefused, match="Unknown threshold"):
        services.set_thresholds(operator_actor, CACHE, {"speed": "1"})
    with pytest.raises(QueueRefused, match="number from 0"):
        services.set_thresholds(operator_actor, CACHE, {"backlog_degraded": "-1"})

    services.set_thresholds(operator_actor, CACHE, dict.fromkeys(figures.Thresholds.FIELDS, ""))
    assert not QueueThreshold.objects.exists()


def test_viewers_see_secret_looking_payload_fields_masked(
    seeded, queue_redis, viewer_actor, dead_letter
):
    letter_id = dead_letter(
        "wow-cache", payload={"user": "ann", "api_key": "s3cr3t", "nested": {"password": "p"}}
    )
    ref = catalog.resolve(CACHE)
    letter = deadletters.get(catalog.agent_redis(), ref, letter_id)

    seen = services.read_letter(viewer_actor, ref, letter)
    operator_seen = services.read_letter(Actor.command("test"), ref, letter)

    assert seen.payload == {"user": "ann", "api_key": "••••••", "nested": {"password": "••••••"}}
    assert operator_seen.payload["api_key"] == "s3cr3t"


# --- alerts on queue figures --------------------------------------------------------------------


def test_dead_letter_inflow_fires_the_default_rule_for_that_agent(seeded, queue_redis, dead_letter):
    from datetime import timedelta

    from django.utils import timezone

    from observability import alerts
    from observability.models import Alert
    from observability.queues import sampler

    alerts.ensure_default_rules(Actor.command("test"))
    cache = seeded["wow-cache"]
    type(cache).objects.filter(pk=cache.pk).update(state="STOPPED")  # watched: not a draft
    earlier = timezone.now() - timedelta(seconds=10)
    sampler.sample_all(earlier, inspect_workers=False)
    dead_letter("wow-cache")
    dead_letter("wow-cache")
    # The previous look is kept with its own clock: make it 10 s old.
    previous = json.loads(queue_redis.hget(sampler.PREVIOUS_KEY, CACHE))
    previous["at"] -= 10
    queue_redis.hset(sampler.PREVIOUS_KEY, CACHE, json.dumps(previous))
    sampler.sample_all(inspect_workers=False)

    alerts.evaluate()

    alert = Alert.objects.get(rule__name="Dead letters arriving")
    assert alert.agent == cache
    assert alert.value == pytest.approx(12.0, rel=0.05)  # 2 letters in 10 s = 12 a minute
    assert "dead-letter inflow 12.0 /min" in alert.summary
