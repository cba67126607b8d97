"""The alert rules every fleet starts with; Admins change them in the admin."""

from django.db import migrations

DEFAULT_RULES = [
    {
        "name": "Agent errored",
        "description": "The agent crashed or failed and is ERRORED.",
        "kind": "state",
        "state": "ERRORED",
        "for_seconds": 0,
        "severity": "critical",
    },
    {
        "name": "High error rate",
        "description": "More than 5 % of task attempts failed, for five minutes.",
        "kind": "metric",
        "metric": "error_rate",
        "operator": "gt",
        "threshold": 5.0,
        "for_seconds": 300,
        "severity": "warning",
    },
    {
        "name": "Memory near limit",
        "description": "The agent uses more than 90 % of its memory limit, for two minutes.",
        "kind": "metric",
        "metric": "memory_percent",
        "operator": "gt",
        "threshold": 90.0,
        "for_seconds": 120,
        "severity": "warning",
    },
    {
        "name": "No heartbeat",
        "description": "A RUNNING agent has not answered /metrics for a minute.",
        "kind": "heartbeat",
        "for_seconds": 60,
        "severity": "critical",
    },
]


def add_rules(apps, schema_editor):
    AlertRule = apps.get_model("observability", "AlertRule")
    for rule in DEFAULT_RULES:
        AlertRule.objects.get_or_create(name=rule["name"], defaults=rule)


def remove_rules(apps, schema_editor):
    AlertRule = apps.get_model("observability", "AlertRule")
    AlertRule.objects.filter(name__in=[rule["name"] for rule in DEFAULT_RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("observability", "0001_initial")]

    operations = [migrations.RunPython(add_rules, remove_rules)]
