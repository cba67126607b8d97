"""Zero-downtime restarts: a running agent of several replicas is restarted one replica at a
time behind a spare, so it never has fewer ready replicas than before, and a load of tasks sent
all along is answered in full, each task once and none failed. Real agentd processes (local
runtime) and the lifecycle service that picks the rolling restart."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid

import redis

from agents.agentd import contract
from agents.models import Agent, State
from tests.agents.test_replica_ops import root, runtime, started  # noqa: F401 (fixtures)


def ready_replicas(runtime, spec) -> int:  # noqa: F811 (not the fixture)
    ready = 0
    for replica in runtime.status(spec).replicas:
        if replica.state != "running" or not replica.port:
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{replica.port}/readyz", timeout=1) as r:
                ready += r.status == 200
        except OSError:
            pass
    return ready


class Load(threading.Thread):
    """Tasks to the agent's stream, each with its own id and a reply stream, until stopped."""

    def __init__(self, redis_url: str, slug: str, per_second: int = 50) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.slug, self.pause = slug, 1 / per_second
        self.replies = contract.reply_stream(f"rolling-{uuid.uuid4().hex[:8]}")
        self.sent: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            task_id = f"t-{len(self.sent)}"
            self.client.xadd(contract.task_stream(self.slug),
                             {"job": "noop", contract.FIELD_TASK_ID: task_id,
                              contract.FIELD_REPLY_TO: self.replies})  # fmt: skip
            self.sent.append(task_id)
            time.sleep(self.pause)

    def answers(self) -> list[dict[str, str]]:
        return [fields for _, fields in self.client.xrange(self.replies)]


def test_a_rolling_restart_never_has_fewer_ready_replicas_and_loses_no_task(
    runtime, started, redis_url  # noqa: F811 (the fixtures imported above)
):  # fmt: skip
    spec = started(version="1.0.0", replicas=2)
    before = {r.replica: r.pid for r in runtime.status(spec).replicas}
    samples: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            samples.append(ready_replicas(runtime, spec))
            time.sleep(0.02)

    load = Load(redis_url, spec.slug)
    sampler = threading.Thread(target=sample, daemon=True)
    load.start()
    time.sleep(0.5)
    sampler.start()
    result = runtime.rolling_restart(spec)
    sampling.set()
    sampler.join()
    time.sleep(0.5)
    load.halt.set()
    load.join()

    deadline = time.monotonic() + 30
    while len(load.answers()) < len(load.sent) and time.monotonic() < deadline:
        time.sleep(0.2)
    answers = load.answers()
    assert result["rolled"] and [r["replica"] for r in result["replicas"]] == [0, 1]
    assert min(samples) >= 2, samples  # never fewer ready replicas than before
    assert len(samples) > 10  # the restart was watched while it ran, not after
    assert sorted(a[contract.REPLY_TASK_ID] for a in answers) == sorted(load.sent)  # each once
    assert {a[contract.REPLY_STATUS] for a in answers} == {contract.REPLY_SUCCEEDED}
    after = {r.replica: (r.state, r.pid) for r in runtime.status(spec).replicas}
    assert sorted(after) == [0, 1]  # the spare is gone
    assert all(state == "running" and pid != before[n] for n, (state, pid) in after.items())
    # The spare's consumer took tasks while it ran and left the group when it was forgotten.
    consumers = load.client.xinfo_consumers(
        contract.task_stream(spec.slug), contract.CONSUMER_GROUP
    )
    assert sorted(c["name"] for c in consumers) == [f"{spec.slug}-0", f"{spec.slug}-1"]
    load.client.delete(load.replies)


def test_restarting_a_running_agent_of_two_replicas_rolls_and_one_of_one_does_not(
    seeded, act, bring_up
):
    agent = seeded["wow-cache"]
    Agent.objects.filter(pk=agent.pk).update(replicas=2)
    agent.refresh_from_db()
    bring_up(agent)

    rolled = act(agent, "restart")
    assert agent.runtime_details["pids"] == rolled.result["pids"]  # the new processes
    Agent.objects.filter(pk=agent.pk).update(replicas=1)
    agent.refresh_from_db()
    act(agent, "stop")
    act(agent, "start")
    whole = act(agent, "restart")

    assert rolled.result["rolled"] is True and len(rolled.result["replicas"]) == 2
    assert rolled.result["pids"] == [r["pid"] for r in rolled.result["replicas"]]
    assert "rolled" not in whole.result
    agent.refresh_from_db()
    assert agent.state == State.RUNNING
    act(agent, "stop")


def test_a_bulk_restart_rolls_each_agent_of_two_replicas_and_loses_no_task(
    transactional_db, seeded, bring_up, settings
):
    """The bulk runner restarts through the same lifecycle service: WowCache and WowEvent, two
    replicas each and a load on each, restarted as one bulk operation."""
    from agents import bulk
    from agents.models import BulkOperation, Operation
    from agents.placement import runtime_for, spec_for
    from portal.actors import Actor

    agents = [seeded["wow-cache"], seeded["wow-event"]]
    for agent in agents:
        Agent.objects.filter(pk=agent.pk).update(replicas=2)
        agent.refresh_from_db()
        bring_up(agent)
    watched = [(agent.slug, runtime_for(agent), spec_for(agent)) for agent in agents]
    samples: dict[str, list[int]] = {slug: [] for slug, _, _ in watched}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            for slug, runtime_, spec in watched:
                samples[slug].append(ready_replicas(runtime_, spec))
            time.sleep(0.02)

    loads = [Load(settings.AGENT_REDIS_URL, agent.slug) for agent in agents]
    for load in loads:
        load.start()
    time.sleep(0.5)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    operation = bulk.create_bulk_operation(
        "restart", Actor.command("test"), targets=[a.slug for a in agents], enqueue=False
    )
    done = bulk.run_bulk_operation(operation.pk)
    sampling.set()
    sampler.join()
    time.sleep(0.5)
    for load in loads:
        load.halt.set()
        load.join()

    assert done is not None and done.status == BulkOperation.Status.SUCCEEDED
    for agent, load in zip(agents, loads, strict=True):
        restart = Operation.objects.filter(agent=agent, action="restart").get()
        assert restart.result["rolled"] is True, restart.result
        assert min(samples[agent.slug]) >= 2, (agent.slug, samples[agent.slug])
        deadline = time.monotonic() + 30
        while len(load.answers()) < len(load.sent) and time.monotonic() < deadline:
            time.sleep(0.2)
        answers = load.answers()
        assert sorted(a[contract.REPLY_TASK_ID] for a in answers) == sorted(load.sent)
        assert {a[contract.REPLY_STATUS] for a in answers} == {contract.REPLY_SUCCEEDED}
        agent.refresh_from_db()
        assert agent.state == State.RUNNING
        load.client.delete(load.replies)
    assert len(samples["wow-cache"]) > 10  # watched while the restarts ran
