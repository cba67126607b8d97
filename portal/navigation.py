"""The sidebar: every section of the portal, built or still to come."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse


@dataclass(frozen=True)
class Section:
    slug: str
    title: str
    icon: str  # the name of an icon in templates/portal/icons.html
    url_name: str
    summary: str

    @property
    def href(self) -> str:
        """Where the sidebar links: the section's own page, or a placeholder until it is built."""
        if self.url_name == "section":
            return reverse("section", args=[self.slug])
        return reverse(self.url_name)


SECTIONS = [
    Section("dashboard", "Dashboard", "grid", "dashboard", "The fleet at a glance."),
    Section(
        "agents",
        "Agents",
        "cpu",
        "section",
        "Deploy, start, stop and watch the 14 Platform CoE agents.",
    ),
    Section(
        "errors",
        "Errors",
        "alert",
        "agents:errors",
        "Every failure with its cause and fixes, and the patterns they make.",
    ),
    Section("logs", "Logs", "list", "observability:logs", "Search and tail every agent's logs."),
    Section(
        "alerts",
        "Alerts",
        "bell",
        "observability:alerts",
        "Firing alerts, acknowledgements and alert rules.",
    ),
    Section(
        "events",
        "Events",
        "activity",
        "observability:events",
        "Lifecycle, health, drift and deploy events.",
    ),
    Section(
        "metrics",
        "Metrics",
        "chart",
        "metrics:index",
        "CPU, memory, throughput, latency and uptime.",
    ),
    Section(
        "queues",
        "Queues",
        "inbox",
        "queues:index",
        "Task queues, dead letters, stuck consumers and the flow between agents.",
    ),
    Section(
        "workflows",
        "Workflows",
        "flow",
        "workflows:index",
        "Multi-step work across agents: runs, steps, retries and roll-backs.",
    ),
    Section(
        "factory",
        "Factory",
        "box",
        "factory:index",
        "Create new agents from templates, tested in a sandbox first.",
    ),
    Section(
        "servicing",
        "Servicing",
        "refresh",
        "servicing:index",
        "Versions, upgrades with gates and roll-back, windows, scaling.",
    ),
    Section(
        "helpdesk",
        "Help Desk",
        "life",
        "helpdesk:index",
        "Customers, their agents and interactions, diagnoses, quick fixes, playbooks, tickets.",
    ),
    Section(
        "audit",
        "Audit log",
        "shield",
        "audit:index",
        "Every change anyone made, through every door, and the compliance report.",
    ),
]

SECTIONS_BY_SLUG = {section.slug: section for section in SECTIONS}
