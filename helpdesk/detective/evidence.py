"""The pieces detectors build candidates from: a candidate cause, its evidence lines with links,
its fix, and the small readings of signals several detectors share."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.urls import reverse

from agents.models import Agent, State
from helpdesk.detective.signals import BUCKET_SECONDS, AgentSignals
from portal import extensions

# The fixes a diagnosis may offer, each done by ``helpdesk.actions.services.run_action``.
FIX_ACTIONS = (
    "restart-agent",
    "start-agent",
    "raise-memory",
    "scale-agent",
    "clear-cache",
    "reset-trial",
    "resend-email",
    "grant-access",
    "redrive-dead-letters",
    "rollback-version",
    "rollback-config",
)

AUTH_PATTERN = re.compile(
    r"\b(?:401|403)\b|unauthori[sz]ed|forbidden|invalid[ _-](?:api[ _-]?)?(?:key|token|credential)"
    r"|authenticat\w*[ _-](?:fail|error|required)|(?:token|credentials?|key)[ _-](?:expired|revoked)"
    r"|expired[ _-](?:token|credential|key)|access[ _-]denied|permission[ _-]denied"
    r"|bad credentials|not authenticated",
    re.IGNORECASE,
)


@dataclass
class Candidate:
    cause: str
    title: str
    score: float  # evidence strength (0..1+), before the symptom's weight
    evidence: list[dict] = field(default_factory=list)
    fix: dict | None = None
    agent: str = ""  # the agent the cause is about ("" for the customer's account)

    def as_dict(self, confidence: float) -> dict:
        return {
            "cause": self.cause,
            "title": self.title,
            "confidence": round(confidence, 3),
            "score": round(self.score, 3),
            "agent": self.agent,
            "evidence": self.evidence,
            "fix": self.fix,
        }


def line(text: str, figure: object = None, link: str = "") -> dict:
    item: dict = {"text": text}
    if figure is not None:
        item["figure"] = figure
    if link:
        item["link"] = link
    return item


def fix(action: str, agent: str, label: str, **params: object) -> dict:
    assert action in FIX_ACTIONS, action
    return {"action": action, "agent": agent, "params": params, "label": label}


def agent_link(agent: Agent) -> str:
    return reverse("agents:detail", args=[agent.slug])


def queue_link(agent: Agent) -> str:
    return reverse("queues:detail", args=[f"agents:{agent.slug}:tasks"])


def error_link(error_id: int) -> str:
    return reverse("agents:error", args=[error_id])


def upgrade_link(upgrade_id: int) -> str:
    return reverse("servicing:upgrade", args=[upgrade_id])


def ago(now: datetime, moment: datetime | None) -> str:
    if moment is None:
        return "never"
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86_400:.0f} days ago"


def expected_up(a: AgentSignals) -> bool:
    """The agent should be serving (it is running or fell over), as opposed to never deployed,
    stopped by someone, or revoked."""
    return a.agent.state in (State.RUNNING, State.ERRORED, State.DEPLOYED)


def log_link(agent: Agent) -> str:
    """The Logs page on the agent's lines (the agent's page when observability is not there)."""
    return extensions.link("agent_logs", agent=agent.slug) or agent_link(agent)


def log_lines(a: AgentSignals, lines: list[str]) -> list[dict]:
    return [line(text[:300], link=log_link(a.agent)) for text in lines]


def log_tail(a: AgentSignals, count: int = 3, pattern: re.Pattern | None = None) -> list[dict]:
    lines = [t for t in a.log_lines if pattern is None or pattern.search(t)]
    return log_lines(a, lines[-count:])


# Failure share assumed before a change when little traffic came before it: a platform-typical
# 2 %, worth PRIOR_TASKS tasks of evidence (so a quiet "before" does not make any failure a rise).
BASELINE_FAILURE_SHARE = 0.02
PRIOR_TASKS = 20
# How unlikely the failures since a change must be under the rate before it (a z-score).
RISE_Z = 3.0


def failure_rise(a: AgentSignals, moment: datetime) -> tuple[float, float, int, bool]:
    """(failure share before ``moment``, after it, failures after, whether the rise is real):
    real when at least five tasks failed since, and that many failures would be more than
    RISE_Z standard deviations above the rate before (smoothed towards the baseline)."""
    before, after = a.before(moment), a.since(moment)
    rate = (before.failed + BASELINE_FAILURE_SHARE * PRIOR_TASKS) / (before.total + PRIOR_TASKS)
    expected = after.total * rate
    spread = math.sqrt(max(after.total * rate * (1 - rate), 1e-9))
    real = after.failed >= 5 and (after.failed - expected) / spread >= RISE_Z
    return before.failure_share, after.failure_share, after.failed, real


# A change explains failures (or crashes) that begin within this long after it.
ONSET_WINDOW = timedelta(minutes=60)


def failure_onset(a: AgentSignals, moment: datetime) -> datetime | None:
    """When failures began after ``moment``: the first bucket since then whose failure share
    stands out from the rate before (at least 15 %, three times that rate, two failures)."""
    before = a.before(moment)
    rate = (before.failed + BASELINE_FAILURE_SHARE * PRIOR_TASKS) / (before.total + PRIOR_TASKS)
    for bucket in sorted(a.buckets, key=lambda b: b.start):
        if bucket.start + timedelta(seconds=BUCKET_SECONDS) <= moment or not bucket.total:
            continue
        if bucket.failed >= 2 and bucket.failed / bucket.total >= max(0.15, 3 * rate):
            return max(bucket.start, moment)
    return None


def follows(moment: datetime, later: datetime | None) -> bool:
    """``later`` came soon enough after ``moment`` to be its consequence."""
    return later is not None and timedelta(0) <= later - moment <= ONSET_WINDOW


def crashes_after(a: AgentSignals, now: datetime, moment: datetime) -> list:
    """Crashes within ONSET_WINDOW after ``moment``."""
    return [t for t in recent_crashes(a, now, timedelta(days=3)) if follows(moment, t.at)]


def recent_change_explains(a: AgentSignals, now: datetime) -> bool:
    """A config change or an upgrade of the last day that the agent's failures began soon
    after (or, without failing tasks to date them, one of the last hour)."""
    moments = [
        changed_config_at(a, now, timedelta(hours=24)),
        upgraded_at(a, now, timedelta(hours=24))[1],
    ]
    for moment in (m for m in moments if m is not None):
        onset = failure_onset(a, moment)
        if follows(moment, onset) or (onset is None and now - moment <= ONSET_WINDOW):
            return True
    return False


def recent_crashes(a: AgentSignals, now: datetime, within: timedelta = timedelta(hours=1)) -> list:
    return [t for t in a.transitions if t.action == "fail" and t.at >= now - within]


def had_oom(a: AgentSignals, now: datetime) -> bool:
    if (a.agent.last_exit or {}).get("oom") and a.agent.state == State.ERRORED:
        return True
    if any(e.rule == "out_of_memory" for e in a.errors):
        return True
    return any((t.details or {}).get("oom") for t in recent_crashes(a, now))


def changed_config_at(a: AgentSignals, now: datetime, within: timedelta) -> datetime | None:
    moment = a.agent.config_changed_at
    if moment is None or a.agent.previous_config is None or moment < now - within:
        return None
    return moment


def upgraded_at(a: AgentSignals, now: datetime, within: timedelta):
    """The newest upgrade that took the agent to the version it runs, and when it did."""
    for upgrade in a.upgrades:
        if upgrade.to_version != a.agent.version or upgrade.status in ("rolled_back", "aborted"):
            continue
        moment = upgrade.finished_at or upgrade.started_at or upgrade.created_at
        if moment >= now - within:
            return upgrade, moment
    return None, None
