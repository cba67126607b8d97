"""Reading the operator's words: which kind of problem a symptom describes, and how much each
candidate cause fits it.

Plain keyword rules (no model): a picked category counts most, the words of the text add to it.
The fit only weights candidates; a cause with no evidence is never proposed, whatever the words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NOT_RESPONDING = "agent_not_responding"
SLOW = "slow_performance"
AUTH = "authentication_errors"
TRIAL = "trial_not_activating"
PAYMENT = "payment_failures"
OTHER = "other"

CATEGORIES: dict[str, str] = {
    NOT_RESPONDING: "Agent not responding",
    SLOW: "Slow performance",
    AUTH: "Authentication errors",
    TRIAL: "Trial not activating",
    PAYMENT: "Payment failures",
    OTHER: "Other",
}

# Words that point at each category (matched as word prefixes, any case).
_CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    NOT_RESPONDING: (
        "not respond",
        "unrespons",
        "no response",
        "no answer",
        "not answer",
        "down",
        "stuck",
        "hang",
        "frozen",
        "not working",
        "doesn't work",
        "does not work",
        "dead",
        "nothing happen",
        "not process",
        "no reply",
        "no replies",
        "stopped",
        "offline",
        "unavailable",
        "outage",
        "broken",
        "fail",
        "error",
        "crash",
        "timeout",
        "timing out",
        "time out",
        "not running",
        "silent",
        "idle",
        "queue",
        "pile",
    ),
    SLOW: (
        "slow",
        "latency",
        "takes long",
        "taking long",
        "takes ages",
        "sluggish",
        "delay",
        "lag",
        "laggy",
        "seconds to",
        "minutes to",
        "performance",
        "sluggish",
        "crawl",
        "speed",
        "p95",
        "p99",
    ),
    AUTH: (
        "auth",
        "login",
        "log in",
        "logging in",
        "sign in",
        "signin",
        "401",
        "403",
        "unauthori",
        "forbidden",
        "credential",
        "password",
        "api key",
        "apikey",
        "token",
        "permission",
        "access denied",
        "denied",
        "sso",
        "oauth",
    ),
    TRIAL: (
        "trial",
        "activat",
        "onboard",
        "sign up",
        "signup",
        "signed up",
        "registration",
        "never start",
        "can't start",
        "cannot start",
        "get started",
        "setup",
        "set up",
        "welcome",
        "verify",
        "verification",
    ),
    PAYMENT: (
        "payment",
        "billing",
        "card",
        "invoice",
        "charge",
        "declin",
        "paid",
        "pay ",
        "subscription",
        "past due",
        "overdue",
        "refund",
        "receipt",
    ),
}

# How well each cause explains each category of symptom (0 to 1).
AFFINITY: dict[str, dict[str, float]] = {
    "queue_backlog": {NOT_RESPONDING: 1.0, SLOW: 0.9, AUTH: 0.1, TRIAL: 0.1, PAYMENT: 0.05},
    "crash": {NOT_RESPONDING: 1.0, SLOW: 0.4, AUTH: 0.2, TRIAL: 0.2, PAYMENT: 0.05},
    "out_of_memory": {NOT_RESPONDING: 0.95, SLOW: 0.6, AUTH: 0.1, TRIAL: 0.1, PAYMENT: 0.05},
    "dependency_down": {NOT_RESPONDING: 0.95, SLOW: 0.5, AUTH: 0.3, TRIAL: 0.1, PAYMENT: 0.05},
    "bad_config": {NOT_RESPONDING: 0.85, SLOW: 0.5, AUTH: 0.6, TRIAL: 0.2, PAYMENT: 0.05},
    "bad_version": {NOT_RESPONDING: 0.85, SLOW: 0.7, AUTH: 0.4, TRIAL: 0.1, PAYMENT: 0.05},
    "dead_letter_storm": {NOT_RESPONDING: 0.8, SLOW: 0.3, AUTH: 0.3, TRIAL: 0.1, PAYMENT: 0.05},
    "slow_performance": {NOT_RESPONDING: 0.45, SLOW: 1.0, AUTH: 0.05, TRIAL: 0.05, PAYMENT: 0.05},
    "auth_errors": {NOT_RESPONDING: 0.35, SLOW: 0.1, AUTH: 1.0, TRIAL: 0.3, PAYMENT: 0.1},
    "trial_not_activating": {NOT_RESPONDING: 0.2, SLOW: 0.05, AUTH: 0.3, TRIAL: 1.0, PAYMENT: 0.4},
    "payment_failure": {NOT_RESPONDING: 0.1, SLOW: 0.05, AUTH: 0.2, TRIAL: 0.4, PAYMENT: 1.0},
    "agent_stopped": {NOT_RESPONDING: 1.0, SLOW: 0.2, AUTH: 0.1, TRIAL: 0.3, PAYMENT: 0.05},
}
NEUTRAL = 0.5

# Words that name one cause outright ("out of memory", "since the upgrade").
_CAUSE_WORDS: dict[str, tuple[str, ...]] = {
    "queue_backlog": ("backlog", "queue", "pile", "piling", "waiting"),
    "crash": ("crash", "restart", "keeps dying", "dies", "died", "exit"),
    "out_of_memory": ("memory", "oom", "ram"),
    "dependency_down": ("dependency", "depends", "downstream", "upstream", "connection refused"),
    "bad_config": ("config", "setting", "changed", "change"),
    "bad_version": ("upgrade", "new version", "release", "update", "deploy"),
    "dead_letter_storm": ("dead letter", "dead-letter", "dlq", "failed tasks", "lost"),
    "slow_performance": ("slow", "latency"),
    "auth_errors": ("401", "403", "credential", "api key", "token"),
    "trial_not_activating": ("trial",),
    "payment_failure": ("payment", "card", "billing"),
    "agent_stopped": ("stopped", "paused", "suspended", "switched off", "turned off"),
}
CAUSE_WORD_BONUS = 0.15


@dataclass
class Symptom:
    text: str
    category: str = ""
    weights: dict[str, float] = field(default_factory=dict)  # category -> share (sum 1)
    words: set[str] = field(default_factory=set)  # causes the text names

    def fit(self, cause: str) -> float:
        """How much the symptom fits ``cause``: 0.3 (not at all) to 1 (fully), plus a bonus
        when the text names the cause."""
        table = AFFINITY.get(cause, {})
        affinity = sum(
            share * table.get(category, NEUTRAL) if category != OTHER else share * NEUTRAL
            for category, share in self.weights.items()
        )
        bonus = CAUSE_WORD_BONUS if cause in self.words else 0.0
        return 0.3 + 0.7 * affinity + bonus


def _has(text: str, word: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(word), text) is not None


def read(text: str, category: str = "") -> Symptom:
    """The symptom's categories (a picked one counts as much as every word together)."""
    lowered = " ".join(text.lower().split())
    hits = {
        name: sum(1 for word in words if _has(lowered, word))
        for name, words in _CATEGORY_WORDS.items()
    }
    weights: dict[str, float] = {}
    found = {name: count for name, count in hits.items() if count}
    total = sum(found.values())
    for name, count in found.items():
        weights[name] = count / total
    if category and category != OTHER:
        weights = {name: share / 2 for name, share in weights.items()} if weights else {}
        weights[category] = weights.get(category, 0.0) + (0.5 if found else 1.0)
    if not weights:
        weights = {OTHER: 1.0}
    words = {cause for cause, said in _CAUSE_WORDS.items() if any(_has(lowered, w) for w in said)}
    return Symptom(text=text, category=category, weights=weights, words=words)
