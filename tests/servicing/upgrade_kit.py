"""What the upgrade tests share: a running agent on the local runtime, releases, a load of
tasks that counts every answer, and driving an upgrade's workflow as a worker would."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import redis
from django.conf import settings

from agents.agentd import contract
from agents.models import Agent
from agents.runtimes.probe import endpoint_answer
from servicing.models import Upgrade
from servicing.upgrades import requests
from tests.agents.workflows.conftest import drive as drive_run


@dataclass
class Load:
    """Sends tasks with ids ``<tag>-<n>`` to an agent's stream at ``rate`` a second, each
    answered on one reply stream, and counts the answers: by task id, by version."""

    slug: str
    tag: str
    rate: float = 100.0
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def reply_stream(self) -> str:
        return contract.reply_stream(f"load-{self.tag}")

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(settings.AGENT_REDIS_URL, decode_responses=True)

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        client = self._client()
        began = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - began) * self.rate)
            pipeline = client.pipeline(transaction=False)
            while self.sent < due:
                pipeline.xadd(contract.task_stream(self.slug), {
                    contract.FIELD_PRODUCER: f"test:{self.tag}",
                    contract.FIELD_PAYLOAD: json.dumps({"n": self.sent}),
                    contract.FIELD_TASK_ID: f"{self.tag}-{self.sent}",
                    contract.FIELD_REPLY_TO: self.reply_stream,
                })  # fmt: skip
                self.sent += 1
            pipeline.execute()
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def answers(self) -> list[dict[str, str]]:
        return [fields for _id, fields in self._client().xrange(self.reply_stream)]

    def settle(self, timeout: float = 30.0) -> list[dict[str, str]]:
        """Stop sending and wait until every task sent has an answer; answers them all."""
        self.stop()
        deadline = time.monotonic() + timeout
        answers = self.answers()
        while len({a[contract.REPLY_TASK_ID] for a in answers}) < self.sent:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
            answers = self.answers()
        return answers

    def check_exactly_once(self, answers) -> Counter:
        """Every task sent answered exactly once; answers the versions that answered."""
        ids = Counter(a[contract.REPLY_TASK_ID] for a in answers)
        missing = [f"{self.tag}-{n}" for n in range(self.sent) if f"{self.tag}-{n}" not in ids]
        doubled = [task_id for task_id, count in ids.items() if count > 1]
        assert not missing, f"{len(missing)} of {self.sent} tasks never answered: {missing[:5]}"
        assert not doubled, f"{len(doubled)} tasks answered twice: {doubled[:5]}"
        return Counter(a[contract.REPLY_VERSION] for a in answers)


def drive(upgrade: Upgrade, timeout: float = 90.0, *, until=None) -> Upgrade:
    """Carry out the upgrade's due steps here, as a worker would, until its run ends (or
    ``until(upgrade)``)."""

    def reached(_run) -> bool:
        upgrade.refresh_from_db()
        return until is not None and until(upgrade)

    drive_run(upgrade.run, timeout, until=reached)
    upgrade.refresh_from_db()
    return requests.sync(upgrade)


def versions_running(agent: Agent) -> dict[int, str]:
    """Each live replica's version, as its /healthz says it."""
    from servicing.upgrades import traffic

    found = {}
    for item in traffic.live_replicas(agent):
        answer = endpoint_answer(item["port"], "/healthz")
        body = answer.get("body") if isinstance(answer.get("body"), dict) else {}
        found[item["replica"]] = body.get("version", "?")
    return found
