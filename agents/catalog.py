"""The 14 Platform CoE agents: the registry's seed data.

Dependencies form a graph without cycles, rooted in WowEvent (the event bus) and WowCache;
``tests/agents/test_registry.py`` checks that, and ``seed_platform_agents`` loads it.

``config`` is the agent's default agentd config. Its ``forward`` lists give the fleet real
agent-to-agent traffic out of the box: after a task, an agent hands that share of its work on to
the agents named (the event bus fanning out, memory and search asking the cache, ...).
``tests/agentd/test_forwarding.py`` checks they are valid agentd configs within the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AgentDefinition:
    slug: str
    name: str
    description: str
    capabilities: list[str]
    owner_team: str
    depends_on: list[str] = field(default_factory=list)
    cpu_millicores: int = 250
    memory_mb: int = 256
    config: dict[str, Any] = field(default_factory=dict)


def forwarding(*targets: tuple[str, float]) -> dict[str, Any]:
    """An agentd config that forwards ``share`` of the completed tasks to each ``(slug, share)``."""
    return {"forward": [{"to": slug, "share": share} for slug, share in targets]}


PLATFORM_AGENTS = [
    AgentDefinition(
        "wow-event", "WowEvent", "The event bus every other agent publishes to and listens on.",
        ["event-routing", "pub-sub", "event-replay"], "Platform Core", [], 500, 512,
        config=forwarding(("wow-notification", 0.5), ("wow-analytics", 0.3)),
    ),
    AgentDefinition(
        "wow-cache", "WowCache", "Shared low-latency cache for agent state and lookups.",
        ["key-value-cache", "ttl-eviction", "cache-invalidation"], "Platform Core", [], 250, 512,
    ),
    AgentDefinition(
        "wow-security", "WowSecurity", "Secrets, credentials and policy checks for every agent action.",
        ["secret-vault", "policy-enforcement", "audit-signing"], "Security", ["wow-event"],
    ),
    AgentDefinition(
        "wow-memory", "WowMemory", "Long-term memory: conversation history and learned context.",
        ["context-storage", "semantic-recall", "memory-compaction"], "Intelligence", ["wow-cache", "wow-event"], 500, 1024,
        config=forwarding(("wow-cache", 0.5)),
    ),
    AgentDefinition(
        "wow-communication", "WowCommunication", "Messaging between agents and with people: email, chat, webhooks.",
        ["message-delivery", "channel-adapters", "templating"], "Engagement", ["wow-event"],
        config=forwarding(("wow-notification", 0.3)),
    ),
    AgentDefinition(
        "wow-notification", "WowNotification", "Alerts and notifications with routing, batching and quiet hours.",
        ["alert-routing", "digest-batching", "escalation"], "Engagement", ["wow-event", "wow-communication"],
    ),
    AgentDefinition(
        "wow-domain", "WowDomain", "Domain models and business rules shared by customer agents.",
        ["domain-modeling", "rule-evaluation", "schema-registry"], "Platform Core", ["wow-event", "wow-memory"],
    ),
    AgentDefinition(
        "wow-search", "WowSearch", "Search across documents, memory and agent outputs.",
        ["full-text-search", "vector-search", "ranking"], "Intelligence", ["wow-event", "wow-memory"], 500, 1024,
        config=forwarding(("wow-cache", 0.3)),
    ),
    AgentDefinition(
        "wow-analytics", "WowAnalytics", "Usage, quality and cost analytics for the fleet.",
        ["metrics-aggregation", "reporting", "anomaly-detection"], "Intelligence", ["wow-event", "wow-memory"], 500, 768,
    ),
    AgentDefinition(
        "wow-integration", "WowIntegration", "Connectors to external systems: CRMs, ticketing, calendars.",
        ["api-connectors", "webhook-ingest", "data-sync"], "Integrations", ["wow-event", "wow-security"],
        config=forwarding(("wow-event", 0.2)),
    ),
    AgentDefinition(
        "wow-scaling", "WowScaling", "Capacity planning and autoscaling decisions for agents.",
        ["load-forecasting", "autoscaling", "quota-management"], "Platform Core", ["wow-event", "wow-analytics"],
    ),
    AgentDefinition(
        "wow-support", "WowSupport", "First-line support: answers, triage and hand-off to people.",
        ["ticket-triage", "answer-drafting", "escalation"], "Customer Success",
        ["wow-communication", "wow-search", "wow-notification"],
        config=forwarding(("wow-communication", 0.3)),
    ),
    AgentDefinition(
        "wow-agent-factory", "WowAgentFactory", "Builds, configures and tests new agents from templates.",
        ["agent-templating", "config-validation", "sandbox-testing"], "Platform Core",
        ["wow-event", "wow-domain", "wow-security"],
    ),
    AgentDefinition(
        "wow-vision", "WowVision Prime", "The guardian: reviews agent outputs against the platform's vision and rules.",
        ["quality-review", "policy-guardrails", "drift-detection"], "Platform Core",
        ["wow-event", "wow-memory", "wow-analytics"], 500, 768,
    ),
]  # fmt: skip

PLATFORM_SLUGS = [definition.slug for definition in PLATFORM_AGENTS]
