"""The quick-actions panel of a customer's overview: a row of buttons per agent and for the
customer (destructive ones confirm first), and the active temporary access grants with revoke.
Two queries whatever the number of agents and grants."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from helpdesk.actions import grants
from helpdesk.actions.account import EMAIL_KINDS
from helpdesk.actions.cache import MEMORY_TEMPLATE
from helpdesk.actions.services import SPECS
from helpdesk.customers import require_viewer
from helpdesk.models import Customer, CustomerAgent
from portal import roles
from portal.actors import Actor

AGENT_ACTIONS = (
    "restart-agent", "raise-memory", "redrive-dead-letters", "rollback-config", "rollback-version",
)  # fmt: skip


def panel_context(actor: Actor, customer: Customer) -> dict[str, Any]:
    require_viewer(actor)
    links = list(
        CustomerAgent.objects.filter(customer=customer)
        .select_related("agent")
        .order_by("agent__slug")
    )
    active = grants.active_grants(customer)
    user_id = getattr(actor.user, "pk", None)
    granted = not actor.has(roles.OPERATE) and any(
        g.grantee_id == user_id and g.role == roles.OPERATOR for g in active
    )
    return {
        "granted": granted,
        "action_agents": [
            {
                "agent": link.agent,
                "memory": (link.agent.config or {}).get("template") == MEMORY_TEMPLATE,
            }
            for link in links
        ],
        "agent_actions": [SPECS[name] for name in AGENT_ACTIONS],
        "active_grants": active,
        "email_kinds": EMAIL_KINDS,
        "trial_max_days": settings.HELPDESK_TRIAL_MAX_EXTENSION_DAYS,
        "grant_max_hours": settings.HELPDESK_GRANT_MAX_HOURS,
    }
