"""The six templates the factory ships with, as data (``services.seed_templates`` loads them as
version 1; Admins change them in the admin, which saves new versions).

Each template's ``config_schema`` describes the settings its agentd handler reads (see
``agents/agentd/handlers``); agentd checks the same rules itself when it starts, and the sandbox
runs the template's ``test_tasks`` against a real agentd before anything is created.
"""

from __future__ import annotations

from typing import Any

SLUG = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}

ERROR_RATE_RULE = {
    "title": "error rate",
    "metric": "error_rate",
    "operator": "gt",
    "threshold": 5,
    "for_seconds": 120,
    "severity": "warning",
}
DEAD_LETTER_RULE = {
    "title": "dead letters",
    "metric": "dlq_inflow",
    "operator": "gt",
    "threshold": 0,
    "for_seconds": 0,
    "severity": "warning",
}
MEMORY_RULE = {
    "title": "memory",
    "metric": "memory_percent",
    "operator": "gt",
    "threshold": 90,
    "for_seconds": 300,
    "severity": "critical",
}
SMALL = {"cpu_millicores": 100, "memory_mb": 128, "storage_mb": 256, "replicas": 1}


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


MEMORY = {
    "key": "memory",
    "name": "Memory",
    "category": "Storage",
    "complexity": "low",
    "handler": "memory",
    "description": "Remembers for other agents: put, get and forget keys, short-term in memory "
    "with a time to live, or long-term on the agent's data volume, surviving restarts.",
    "capabilities": ["memory-storage", "context-retrieval"],
    "resources": SMALL,
    "settings": {"default_ttl_seconds": 300, "max_keys": 10000, "max_value_bytes": 65536},
    "config_schema": _schema(
        {
            "default_ttl_seconds": {
                "type": "integer",
                "minimum": 1,
                "maximum": 86400,
                "default": 300,
                "title": "Short-term TTL (s)",
                "description": "How long a short-term key lives.",
            },
            "max_keys": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100000,
                "default": 10000,
                "title": "Most keys",
                "description": "Keys kept per scope.",
            },
            "max_value_bytes": {
                "type": "integer",
                "minimum": 1,
                "maximum": 1048576,
                "default": 65536,
                "title": "Largest value (bytes)",
            },
        }
    ),  # fmt: skip
    "alert_rules": [ERROR_RATE_RULE, MEMORY_RULE],
    "cost_profile": {"tasks_per_month": 50000},
    "test_tasks": [
        {
            "name": "puts a long-term key",
            "payload": {"op": "put", "key": "greeting", "value": "hello", "scope": "long"},
            "expect": {"stored": True, "scope": "long"},
        },
        {
            "name": "gets it back",
            "payload": {"op": "get", "key": "greeting", "scope": "long"},
            "expect": {"found": True, "value": "hello"},
        },
        {
            "name": "short-term key with a TTL",
            "payload": {"op": "put", "key": "session", "value": {"n": 1}, "ttl_seconds": 60},
            "expect": {"stored": True, "scope": "short"},
        },
        {
            "name": "forgets a key",
            "payload": {"op": "forget", "key": "greeting", "scope": "long"},
            "expect": {"forgotten": True},
        },
        {
            "name": "a forgotten key is gone",
            "payload": {"op": "get", "key": "greeting", "scope": "long"},
            "expect": {"found": False},
            # Read-only, so a new agent's first task leaves nothing behind.
            "first_task": True,
        },
    ],
}

ORCHESTRATION = {
    "key": "orchestration",
    "name": "Orchestration",
    "category": "Coordination",
    "complexity": "high",
    "handler": "orchestration",
    "description": "Fans a task out to other agents' queues and gathers their replies, needing "
    "all of them or any one.",
    "capabilities": ["task-orchestration"],
    "resources": {**SMALL, "storage_mb": 0},
    "dependencies": [],
    "settings": {"targets": [], "timeout_seconds": 10, "require": "all"},
    "config_schema": _schema(
        {
            "targets": {
                "type": "array",
                "items": SLUG,
                "minItems": 1,
                "maxItems": 16,
                "uniqueItems": True,
                "title": "Target agents",
                "description": "The agents each task is sent to (slugs); they become dependencies.",
            },
            "timeout_seconds": {
                "type": "number",
                "minimum": 0.1,
                "maximum": 300,
                "default": 10,
                "title": "Reply timeout (s)",
            },
            "require": {
                "type": "string",
                "enum": ["all", "any"],
                "default": "all",
                "title": "Replies needed",
            },
        },
        ["targets"],
    ),  # fmt: skip
    "alert_rules": [ERROR_RATE_RULE, DEAD_LETTER_RULE],
    "cost_profile": {"tasks_per_month": 20000},
    "test_tasks": [
        {
            "name": "fans out and gathers every reply",
            "payload": {"task": {"ping": 1}},
            "expect": {"failed": 0, "missing": []},
        },
    ],
}

API = {
    "key": "api",
    "name": "API",
    "category": "Integration",
    "complexity": "medium",
    "handler": "api",
    "description": "Calls a configured HTTP endpoint (base URL, an auth header from a secret, "
    "timeout and retries) and answers its status and a digest of the body.",
    "capabilities": ["api-integration"],
    "resources": {**SMALL, "storage_mb": 0},
    "settings": {
        "base_url": "",
        "auth_header": "Authorization",
        "timeout_seconds": 5,
        "retries": 2,
        "methods": ["GET"],
    },
    "config_schema": _schema(
        {
            "base_url": {
                "type": "string",
                "pattern": "^https?://[^\\s/$.?#][^\\s]*$",
                "maxLength": 500,
                "title": "Base URL",
                "description": "Every call's path is joined to it.",
            },
            "auth_header": {
                "type": "string",
                "pattern": "^[A-Za-z0-9-]{1,60}$",
                "default": "Authorization",
                "title": "Auth header",
            },
            "auth_secret": {
                "type": "string",
                "pattern": "^[A-Z_][A-Z0-9_]{0,99}$",
                "title": "Secret holding the auth value",
                "description": "The name of a secret environment variable of this agent.",
            },
            "auth_scheme": {
                "type": "string",
                "pattern": "^[A-Za-z]{0,20}$",
                "title": "Auth scheme",
                "description": "Put before the secret, e.g. Bearer.",
            },
            "timeout_seconds": {
                "type": "number",
                "minimum": 0.1,
                "maximum": 60,
                "default": 5,
                "title": "Timeout (s)",
            },
            "retries": {
                "type": "integer",
                "minimum": 0,
                "maximum": 5,
                "default": 2,
                "title": "Retries",
            },
            "methods": {
                "type": "array",
                "uniqueItems": True,
                "minItems": 1,
                "title": "Allowed methods",
                "items": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
            },
        },
        ["base_url"],
    ),  # fmt: skip
    "alert_rules": [ERROR_RATE_RULE, DEAD_LETTER_RULE],
    "cost_profile": {"tasks_per_month": 30000},
    "test_tasks": [
        {
            "name": "the endpoint answers",
            "payload": {"method": "GET", "path": "/"},
            "expect": {"status": 200},
        },
    ],
}

DATA = {
    "key": "data",
    "name": "Data",
    "category": "Data",
    "complexity": "medium",
    "handler": "data",
    "description": "Transforms JSON records by a declared pipeline: select fields, filter by "
    "simple conditions, group and count, sort and limit. No code is evaluated.",
    "capabilities": ["data-transformation"],
    "resources": {**SMALL, "memory_mb": 256},
    "settings": {
        "pipeline": [
            {"filter": {"field": "status", "op": "eq", "value": "active"}},
            {"group_by": {"field": "country", "count_as": "count"}},
        ],
        "max_records": 10000,
    },
    "config_schema": _schema(
        {
            "pipeline": {
                "type": "array",
                "maxItems": 50,
                "title": "Pipeline",
                "description": "Steps, each one of select, filter, group_by, count, sort, limit.",
                "items": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 1,
                    "propertyNames": {
                        "enum": ["select", "filter", "group_by", "count", "sort", "limit"]
                    },
                },
            },
            "max_records": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100000,
                "default": 10000,
                "title": "Most records per task",
            },
        }
    ),  # fmt: skip
    "alert_rules": [ERROR_RATE_RULE, DEAD_LETTER_RULE],
    "cost_profile": {"tasks_per_month": 40000},
    "test_tasks": [
        {
            "name": "groups the active records by country",
            "payload": {
                "records": [
                    {"country": "DE", "status": "active"},
                    {"country": "FR", "status": "active"},
                    {"country": "DE", "status": "active"},
                    {"country": "DE", "status": "closed"},
                ]
            },
            "expect": {"records": [{"country": "DE", "count": 2}, {"country": "FR", "count": 1}]},
        },
        {
            "name": "counts with a pipeline of its own",
            "payload": {
                "records": [{"a": 1}, {"a": 2}, {"a": 3}],
                "pipeline": [{"filter": {"field": "a", "op": "gte", "value": 2}}, {"count": {}}],
            },
            "expect": {"count": 2},
        },  # fmt: skip
    ],
}

MONITORING = {
    "key": "monitoring",
    "name": "Monitoring",
    "category": "Operations",
    "complexity": "medium",
    "handler": "monitoring",
    "description": "Probes HTTP and TCP targets on an interval, exports up/down and latency as "
    "metrics, and answers a report.",
    "capabilities": ["health-monitoring"],
    "resources": {**SMALL, "storage_mb": 0},
    "settings": {"targets": [], "interval_seconds": 15, "timeout_seconds": 2},
    "config_schema": _schema(
        {
            "targets": {
                "type": "array",
                "minItems": 1,
                "maxItems": 50,
                "title": "Targets",
                "items": {
                    "type": "object",
                    "required": ["name", "kind"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 60},
                        "kind": {"enum": ["http", "tcp"]},
                        "url": {"type": "string", "pattern": "^https?://"},
                        "expect_status": {"type": "integer", "minimum": 100, "maximum": 599},
                        "host": {"type": "string", "minLength": 1},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    },
                    "additionalProperties": False,
                    "if": {"properties": {"kind": {"const": "http"}}},
                    "then": {"required": ["url"]},
                    "else": {"required": ["host", "port"]},
                },
            },
            "interval_seconds": {
                "type": "number",
                "minimum": 1,
                "maximum": 3600,
                "default": 15,
                "title": "Interval (s)",
            },
            "timeout_seconds": {
                "type": "number",
                "minimum": 0.1,
                "maximum": 30,
                "default": 2,
                "title": "Probe timeout (s)",
            },
        },
        ["targets"],
    ),  # fmt: skip
    "alert_rules": [ERROR_RATE_RULE],
    "cost_profile": {"tasks_per_month": 5000},
    "test_tasks": [
        {"name": "every target is up", "payload": {"op": "probe"}, "expect": {"down": 0}},
    ],
}

BLANK = {
    "key": "blank",
    "name": "Blank",
    "category": "General",
    "complexity": "low",
    "handler": "blank",
    "description": "Echoes its input: a starting point, and a stand-in for an agent still to be "
    "written.",
    "capabilities": [],
    "resources": {**SMALL, "storage_mb": 0},
    "settings": {},
    "config_schema": _schema({}),
    "alert_rules": [ERROR_RATE_RULE],
    "cost_profile": {"tasks_per_month": 10000},
    "test_tasks": [
        {"name": "echoes its input", "payload": {"hello": "world"}, "expect": {"hello": "world"}},
    ],
}

TEMPLATES: list[dict[str, Any]] = [MEMORY, ORCHESTRATION, API, DATA, MONITORING, BLANK]
