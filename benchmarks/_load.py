"""A load of tasks for the benchmarks that change running agents (upgrades, restarts): tasks
sent at a steady rate to each agent's stream, and the count of what came back (none may be lost,
answered twice or failed)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

RATE = 20.0  # tasks a second to each agent


class FleetLoad:
    """Sends ``rate`` tasks a second to each agent's stream from one thread, with ids
    ``<tag>-<slug>-<n>`` and one reply stream per agent, and counts the answers."""

    def __init__(self, slugs: list[str], tag: str, rate: float = RATE) -> None:
        import redis
        from django.conf import settings

        self.slugs, self.tag, self.rate = list(slugs), tag, rate
        self.sent = dict.fromkeys(self.slugs, 0)
        self.redis = redis.Redis.from_url(settings.AGENT_REDIS_URL, decode_responses=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def reply_stream(self, slug: str) -> str:
        from agents.agentd import contract

        return contract.reply_stream(f"bench-{self.tag}-{slug}")

    def start(self) -> FleetLoad:
        self._thread.start()
        return self

    def _run(self) -> None:
        from agents.agentd import contract

        began = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - began) * self.rate)
            pipeline = self.redis.pipeline(transaction=False)
            for slug in self.slugs:
                while self.sent[slug] < due:
                    pipeline.xadd(contract.task_stream(slug), {
                        contract.FIELD_PRODUCER: f"bench:{self.tag}",
                        contract.FIELD_PAYLOAD: json.dumps({"n": self.sent[slug]}),
                        contract.FIELD_TASK_ID: f"{self.tag}-{slug}-{self.sent[slug]}",
                        contract.FIELD_REPLY_TO: self.reply_stream(slug),
                    })  # fmt: skip
                    self.sent[slug] += 1
            pipeline.execute()
            self._stop.wait(0.02)

    def answers(self, slug: str) -> list[tuple[str, dict[str, str]]]:
        return self.redis.xrange(self.reply_stream(slug))

    def settle(self, timeout: float = 60.0) -> dict[str, list[tuple[str, dict[str, str]]]]:
        """Stop sending, wait until every agent has as many answers as tasks sent (or the
        timeout); answers each agent's replies (entry id, fields)."""
        self._stop.set()
        self._thread.join(10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.redis.xlen(self.reply_stream(s)) >= self.sent[s] for s in self.slugs):
                break
            time.sleep(0.2)
        return {slug: self.answers(slug) for slug in self.slugs}

    def check(self, replies) -> dict[str, int]:
        """Tasks sent, lost (never answered), answered twice, failed; versions that answered."""
        from agents.agentd import contract

        totals = Counter()
        for slug in self.slugs:
            ids = Counter(fields.get(contract.REPLY_TASK_ID) for _id, fields in replies[slug])
            sent = self.sent[slug]
            totals["sent"] += sent
            totals["lost"] += sum(1 for n in range(sent) if f"{self.tag}-{slug}-{n}" not in ids)
            totals["twice"] += sum(1 for count in ids.values() if count > 1)
            totals["failed"] += sum(
                1 for _id, fields in replies[slug]
                if fields.get(contract.REPLY_STATUS) != contract.REPLY_SUCCEEDED
            )  # fmt: skip
            for _id, fields in replies[slug]:
                totals[f"v{fields.get(contract.REPLY_VERSION)}"] += 1
        return dict(totals)


def tasks_line(figures: dict[str, int]) -> str:
    versions = ", ".join(
        f"{key[1:]}: {value}" for key, value in sorted(figures.items()) if key.startswith("v")
    )
    return (
        f"{figures['sent']} tasks sent, {figures['lost']} lost, {figures['twice']} answered "
        f"twice, {figures['failed']} failed (answered by {versions})"
    )
