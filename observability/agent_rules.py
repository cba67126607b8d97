"""Alert rules of one agent's own: the ones a factory template gives the agents made from it,
added when the agent is created and removed when its creation is undone."""

from __future__ import annotations

from django.db import transaction

from agents.models import Agent
from observability.models import Alert, AlertRule, Severity
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit


@audits_refusals("alert_rule.create", target="agent")
def add_agent_rules(agent: Agent, rules: list[dict], actor: Actor) -> list[int]:
    """Give ``agent`` rules of its own (a factory template's): metric rules named
    ``"<agent>: <title>"``; a rule of that name already there is kept. Answers their ids."""
    actor.require(roles.OPERATE, "add alert rules for an agent")
    ids = []
    with transaction.atomic():
        for spec in rules:
            name = f"{agent.name}: {spec.get('title') or spec.get('metric')}"[:100]
            rule, made = AlertRule.objects.get_or_create(
                name=name,
                defaults={
                    "description": f"Made with {agent.name} by the factory.",
                    "kind": AlertRule.Kind.METRIC,
                    "metric": spec["metric"],
                    "operator": spec.get("operator", AlertRule.Operator.ABOVE),
                    "threshold": float(spec.get("threshold", 0)),
                    "for_seconds": int(spec.get("for_seconds", 0)),
                    "severity": spec.get("severity", Severity.WARNING),
                    "agent": agent,
                },
            )
            ids.append(rule.pk)
            if made:
                record_audit(actor, "alert_rule.create", target=name, agent=agent.slug)
    return ids


@audits_refusals("alert_rule.delete", target="agent_slug")
def remove_agent_rules(agent_slug: str, rule_ids: list[int], actor: Actor) -> int:
    """Remove rules made for an agent (a creation undone); answers how many went."""
    actor.require(roles.OPERATE, "remove alert rules of an agent")
    with transaction.atomic():
        rules = AlertRule.objects.filter(pk__in=rule_ids, agent__slug=agent_slug)
        names = list(rules.values_list("name", flat=True))
        Alert.objects.filter(rule__in=rules).delete()
        rules.delete()
        for name in names:
            record_audit(actor, "alert_rule.delete", target=name, agent=agent_slug)
    return len(names)
