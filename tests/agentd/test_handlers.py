"""agentd's handlers, one per factory template, chosen by the config's ``template`` and set up by
its ``settings``: real agentd processes against the session's Redis, with real HTTP and TCP
servers where a template talks to one. The rules themselves (settings, pipelines) are also
checked as plain functions, where that is quicker than a process per case."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agents.agentd import contract
from agents.agentd.config import ConfigError, parse_config
from agents.agentd.handlers.data import parse_pipeline, run_pipeline
from tests.agentd.conftest import dead_letters, queue_task, wait_until

FAST = {"task_retry_ms": 50, "task_block_ms": 50}


def ask(
    queue_redis, agent, payload: dict[str, Any], timeout: float = 5.0, **fields: str
) -> dict[str, Any]:
    """Send ``payload`` as a task that wants a reply (with more task ``fields`` if given);
    answer the reply, its output decoded."""
    task_id = uuid.uuid4().hex
    reply_to = contract.reply_stream(f"test-{task_id}")
    payload_text = json.dumps(payload)
    queue_task(
        queue_redis, agent, task_id=task_id, reply_to=reply_to, payload=payload_text, **fields
    )
    [(_, reply)] = wait_until(
        lambda: queue_redis.xrange(reply_to), timeout, f"no reply to {payload} in {timeout}s"
    )
    queue_redis.delete(reply_to)
    return {**reply, contract.REPLY_OUTPUT: json.loads(reply[contract.REPLY_OUTPUT])}


def output_of(queue_redis, agent, payload: dict[str, Any]) -> dict[str, Any]:
    """The output of a task that must succeed."""
    reply = ask(queue_redis, agent, payload)
    assert reply[contract.REPLY_STATUS] == contract.REPLY_SUCCEEDED, reply
    return reply[contract.REPLY_OUTPUT]


def error_of(queue_redis, agent, payload: dict[str, Any]) -> str:
    """The error of a task that must be dead-lettered (run it on an agent with
    task_max_failures 1, so the first failure answers)."""
    reply = ask(queue_redis, agent, payload)
    assert reply[contract.REPLY_STATUS] == contract.REPLY_DEAD_LETTERED, reply
    return reply[contract.REPLY_ERROR]


def settings_error(template: str, settings: object, slug: str = "me") -> str:
    with pytest.raises(ConfigError) as refused:
        parse_config({"template": template, "settings": settings}, slug=slug)
    return str(refused.value)


# The config


def test_the_default_template_is_blank_and_echoes_the_payload(start_agentd, queue_redis):
    agent = start_agentd(FAST)

    output = output_of(queue_redis, agent, {"hello": "world", "n": [1, 2]})

    assert output == {"hello": "world", "n": [1, 2]}
    assert agent.wait_for_log("handler_built")["template"] == "blank"


def test_settings_get_their_defaults_and_are_answered_by_get_config(start_agentd):
    agent = start_agentd({**FAST, "template": "memory", "settings": {"max_keys": 5}})

    config = agent.get("/config").json()

    assert config["template"] == "memory"
    assert config["settings"] == {
        "default_ttl_seconds": 300,
        "max_keys": 5,
        "max_value_bytes": 65536,
    }


def test_an_unknown_template_is_refused():
    with pytest.raises(ConfigError, match=r"template must be one of blank, memory"):
        parse_config({"template": "magic"}, slug="me")


@pytest.mark.parametrize(
    ("template", "settings", "message"),
    [
        ("blank", {"x": 1}, "settings has an unknown key 'x'; known keys: none"),
        ("blank", [], "settings must be a JSON object, got []"),
        ("memory", {"max_keys": 0}, "settings.max_keys must be an integer from 1 to 100000, got 0"),
        ("memory", {"ttl": 5}, "settings has an unknown key 'ttl'"),
        (
            "memory",
            {"default_ttl_seconds": 1.5},
            "settings.default_ttl_seconds must be an integer from 1 to 86400, got 1.5",
        ),
        ("data", {"max_records": 0}, "settings.max_records must be an integer from 1 to 100000"),
        ("data", {"pipeline": {}}, "settings.pipeline must be a list, got {}"),
        (
            "data",
            {"pipeline": [{"limit": 2}, {"sort": {"field": "a", "order": "up"}}]},
            "settings.pipeline[1].sort has an unknown key 'order'",
        ),
        (
            "data",
            {"pipeline": [{"select": ["a"], "limit": 1}]},
            'settings.pipeline[0] must have exactly one key (select, filter, group_by, count, '
            'sort or limit), got ["limit", "select"]',
        ),
        ("data", {"pipeline": [{"eval": "1+1"}]}, "settings.pipeline[0] is an unknown step 'eval'"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_naming_the_key(template, settings, message):
    assert message in settings_error(template, settings)


def test_bad_settings_stop_agentd_with_the_bad_config_status(run_agentd, redis_url):
    config = {"template": "memory", "settings": {"max_value_bytes": 0}}

    result = run_agentd(["--slug", "bad", "--redis-url", redis_url, "--config", json.dumps(config)])

    assert result.returncode == contract.EXIT_BAD_CONFIG
    assert contract.BAD_CONFIG_MARKER in result.stderr
    assert "settings.max_value_bytes must be an integer from 1 to 1048576, got 0" in result.stderr


def test_a_data_directory_that_cannot_be_made_stops_a_memory_agent(run_agentd, redis_url, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = {"template": "memory"}

    result = run_agentd(
        ["--slug", "bad", "--redis-url", redis_url, "--config", json.dumps(config)],
        env={"AGENT_DATA_DIR": str(blocker)},
    )

    assert result.returncode == contract.EXIT_BAD_CONFIG
    assert f"{blocker}/memory, which cannot be created" in result.stderr


def test_patching_the_template_switches_the_handler_live(start_agentd, queue_redis, tmp_path):
    agent = start_agentd(FAST, env={"AGENT_DATA_DIR": str(tmp_path)})
    records = {"records": [{"a": 1}, {"a": 2}, {"a": 3}]}
    assert output_of(queue_redis, agent, records) == records

    to_data = agent.patch_config(
        {"template": "data", "settings": {"pipeline": [{"filter": {"field": "a", "op": "gt", "value": 1}}]}}
    )  # fmt: skip
    assert to_data.status == 200
    assert output_of(queue_redis, agent, records) == {"records": [{"a": 2}, {"a": 3}], "count": 2}

    # A new template without settings starts from its defaults, not the data template's.
    to_memory = agent.patch_config({"template": "memory"})
    assert to_memory.json()["settings"]["max_keys"] == 10000
    assert output_of(queue_redis, agent, {"op": "keys"}) == {
        "op": "keys",
        "scope": "short",
        "keys": [],
    }

    refused = agent.patch_config({"settings": {"max_keys": -1}})
    assert refused.status == 400
    assert (
        "settings.max_keys must be an integer from 1 to 100000, got -1" in refused.json()["error"]
    )
    assert agent.get("/config").json()["settings"]["max_keys"] == 10000

    agent.patch_config({"template": "blank"})
    assert output_of(queue_redis, agent, {"op": "keys"}) == {"op": "keys"}
    built = [record["template"] for record in agent.events("handler_built")]
    assert built == ["blank", "data", "memory", "blank"]


# Memory


def test_memory_puts_gets_forgets_and_lists_keys_in_both_scopes(
    start_agentd, queue_redis, tmp_path
):
    agent = start_agentd(
        {**FAST, "template": "memory", "settings": {"default_ttl_seconds": 60}},
        env={"AGENT_DATA_DIR": str(tmp_path)},
    )

    def call(**payload: Any) -> dict[str, Any]:
        return output_of(queue_redis, agent, payload)

    assert call(op="put", key="b", value={"deep": [1, None]}) == {
        "op": "put", "key": "b", "scope": "short", "stored": True, "expires_in_seconds": 60,
    }  # fmt: skip
    assert call(op="put", key="a", value="x", ttl_seconds=30)["expires_in_seconds"] == 30
    assert call(op="put", key="a", value=7, scope="long") == {
        "op": "put", "key": "a", "scope": "long", "stored": True,
    }  # fmt: skip
    assert call(op="put", key="ünï/../c", value=None, scope="long")["stored"] is True
    assert call(op="get", key="b") == {
        "op": "get", "key": "b", "scope": "short", "found": True, "value": {"deep": [1, None]},
    }  # fmt: skip
    assert call(op="get", key="a", scope="long")["value"] == 7
    assert call(op="get", key="ünï/../c", scope="long") == {
        "op": "get", "key": "ünï/../c", "scope": "long", "found": True, "value": None,
    }  # fmt: skip
    assert call(op="get", key="nope") == {
        "op": "get", "key": "nope", "scope": "short", "found": False, "value": None,
    }  # fmt: skip
    assert call(op="keys") == {"op": "keys", "scope": "short", "keys": ["a", "b"]}
    assert call(op="keys", scope="long")["keys"] == ["a", "ünï/../c"]
    assert call(op="forget", key="a") == {
        "op": "forget", "key": "a", "scope": "short", "forgotten": True,
    }  # fmt: skip
    assert call(op="forget", key="a")["forgotten"] is False
    assert call(op="get", key="a", scope="long")["found"] is True
    assert call(op="forget", key="a", scope="long")["forgotten"] is True
    assert call(op="keys", scope="long")["keys"] == ["ünï/../c"]
    # One file per key, named by its hash, in <data dir>/memory; no temporary file left over.
    assert [path.name for path in (tmp_path / "memory").iterdir()] == [
        hashlib.sha256("ünï/../c".encode()).hexdigest() + ".json"
    ]


def test_memory_long_term_keys_survive_a_restart_and_short_term_ones_do_not(
    start_agentd, queue_redis, tmp_path
):
    config = {**FAST, "template": "memory"}
    env = {"AGENT_DATA_DIR": str(tmp_path)}
    first = start_agentd(config, env=env)
    output_of(queue_redis, first, {"op": "put", "key": "kept", "value": [1, 2], "scope": "long"})
    output_of(queue_redis, first, {"op": "put", "key": "lost", "value": 1})
    first.terminate()

    second = start_agentd(config, slug=first.slug, env=env)

    assert output_of(queue_redis, second, {"op": "get", "key": "kept", "scope": "long"})[
        "value"
    ] == [1, 2]
    assert output_of(queue_redis, second, {"op": "get", "key": "lost"})["found"] is False
    assert output_of(queue_redis, second, {"op": "keys", "scope": "long"})["keys"] == ["kept"]


def test_memory_short_term_keys_expire_after_their_ttl(start_agentd, queue_redis, tmp_path):
    agent = start_agentd(
        {**FAST, "template": "memory", "settings": {"default_ttl_seconds": 1}},
        env={"AGENT_DATA_DIR": str(tmp_path)},
    )
    output_of(queue_redis, agent, {"op": "put", "key": "brief", "value": 1})
    output_of(queue_redis, agent, {"op": "put", "key": "longer", "value": 2, "ttl_seconds": 60})
    assert output_of(queue_redis, agent, {"op": "get", "key": "brief"})["found"] is True

    wait_until(
        lambda: not output_of(queue_redis, agent, {"op": "get", "key": "brief"})["found"],
        timeout=3,
    )

    assert output_of(queue_redis, agent, {"op": "keys"})["keys"] == ["longer"]


def test_memory_refuses_bad_requests_with_clear_errors(start_agentd, queue_redis, tmp_path):
    agent = start_agentd(
        {
            **FAST,
            "task_max_failures": 1,
            "template": "memory",
            "settings": {"max_keys": 2, "max_value_bytes": 10},
        },
        env={"AGENT_DATA_DIR": str(tmp_path)},
    )
    for key in ("k1", "k2"):
        output_of(queue_redis, agent, {"op": "put", "key": key, "value": 1})
        output_of(queue_redis, agent, {"op": "put", "key": key, "value": 1, "scope": "long"})

    errors = {
        "op": {"op": "delete", "key": "k"},
        "no op": {"key": "k"},
        "key": {"op": "get", "key": ""},
        "long key": {"op": "get", "key": "k" * 201},
        "nul": {"op": "get", "key": "a\u0000b"},
        "scope": {"op": "get", "key": "k", "scope": "forever"},
        "value": {"op": "put", "key": "k"},
        "too big": {"op": "put", "key": "k1", "value": "x" * 20},
        "ttl on long": {"op": "put", "key": "k1", "value": 1, "scope": "long", "ttl_seconds": 5},
        "ttl": {"op": "put", "key": "k1", "value": 1, "ttl_seconds": 0},
        "full short": {"op": "put", "key": "k3", "value": 1},
        "full long": {"op": "put", "key": "k3", "value": 1, "scope": "long"},
    }
    found = {name: error_of(queue_redis, agent, payload) for name, payload in errors.items()}

    assert found == {
        "op": 'op must be one of put, get, forget, keys, got "delete"',
        "no op": "op must be one of put, get, forget, keys, got null",
        "key": 'key must be a string of 1 to 200 characters without NUL, got ""',
        "long key": f'key must be a string of 1 to 200 characters without NUL, got "{"k" * 201}"',
        "nul": 'key must be a string of 1 to 200 characters without NUL, got "a\\u0000b"',
        "scope": 'scope must be one of short, long, got "forever"',
        "value": "value is missing: put stores the payload's value (any JSON)",
        "too big": "value is 22 bytes as JSON; max_value_bytes allows 10",
        "ttl on long": "ttl_seconds applies to short-term keys only (scope short)",
        "ttl": "ttl_seconds must be an integer from 1 to 86400, got 0",
        "full short": "short-term memory holds 2 keys already (max_keys); forget one first",
        "full long": "long-term memory holds 2 keys already (max_keys); forget one first",
    }
    # Replacing a key is not a new key.
    assert output_of(queue_redis, agent, {"op": "put", "key": "k2", "value": 3})["stored"] is True
    assert len(dead_letters(queue_redis, agent)) == len(errors)


# Data


PEOPLE = [
    {"name": "ann", "age": 31, "country": "DE", "user": {"plan": "pro"}, "tags": ["a", "b"]},
    {"name": "bob", "age": "31", "country": "FR", "user": {"plan": "free"}},
    {"name": "cy", "age": 25, "country": "DE", "active": True},
    {"name": "dee", "country": None, "active": 1, "tags": "ab"},
    {"name": "eve", "age": 40.0, "country": "DE", "user": "not an object"},
]


def names(pipeline: list[dict[str, Any]], records: list[dict[str, Any]] = PEOPLE) -> list[str]:
    output = run_pipeline(records, parse_pipeline(pipeline, "pipeline"))
    return [record["name"] for record in output["records"]]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "age", "op": "eq", "value": 31}, ["ann"]),  # "31" is a string: not equal
        ({"field": "age", "op": "eq", "value": 40}, ["eve"]),  # 40.0 is 40
        ({"field": "age", "op": "ne", "value": 31}, ["bob", "cy", "eve"]),  # missing: no match
        ({"field": "age", "op": "gt", "value": 30}, ["ann", "eve"]),  # no error for "31"
        ({"field": "age", "op": "lte", "value": 31}, ["ann", "cy"]),
        ({"field": "name", "op": "lt", "value": "c"}, ["ann", "bob"]),
        ({"field": "name", "op": "gte", "value": 3}, []),
        ({"field": "active", "op": "eq", "value": True}, ["cy"]),  # true is not 1
        ({"field": "active", "op": "eq", "value": 1}, ["dee"]),
        ({"field": "country", "op": "eq", "value": None}, ["dee"]),
        ({"field": "country", "op": "in", "value": ["FR", None]}, ["bob", "dee"]),
        ({"field": "tags", "op": "contains", "value": "a"}, ["ann", "dee"]),  # list or substring
        ({"field": "tags", "op": "contains", "value": 1}, []),
        ({"field": "user.plan", "op": "eq", "value": "pro"}, ["ann"]),  # dotted path
        ({"field": "user.plan", "op": "exists"}, ["ann", "bob"]),  # "not an object" has none
        ({"field": "age", "op": "exists", "value": False}, ["dee"]),
    ],
)  # fmt: skip
def test_data_filters_compare_without_ever_raising(condition, expected):
    assert names([{"filter": condition}]) == expected


def test_data_sorts_with_missing_fields_last_in_either_direction():
    assert names([{"sort": {"field": "age"}}]) == ["cy", "ann", "eve", "bob", "dee"]
    assert names([{"sort": {"field": "age", "descending": True}}]) == [
        "bob", "eve", "ann", "cy", "dee",
    ]  # fmt: skip
    assert names([{"sort": {"field": "user.plan"}}, {"limit": 1}]) == ["bob"]


def test_data_groups_in_first_seen_order_and_counts():
    records = [{"c": "DE"}, {"c": "FR"}, {"c": "DE"}, {"x": 1}, {"c": True}, {"c": 1}]

    grouped = run_pipeline(records, parse_pipeline([{"group_by": {"field": "c"}}], "p"))
    renamed = run_pipeline(
        records,
        parse_pipeline(
            [{"group_by": {"field": "c", "count_as": "n"}}, {"sort": {"field": "n", "descending": True}}, {"limit": 1}],
            "p",
        ),
    )  # fmt: skip
    counted = run_pipeline(records, parse_pipeline([{"filter": {"field": "c", "op": "exists"}}, {"count": {}}], "p"))  # fmt: skip
    nothing = run_pipeline([], parse_pipeline([{"group_by": {"field": "c"}}], "p"))

    assert grouped == {
        "records": [
            {"c": "DE", "count": 2}, {"c": "FR", "count": 1}, {"c": None, "count": 1},
            {"c": True, "count": 1}, {"c": 1, "count": 1},
        ],
        "count": 5,
    }  # fmt: skip
    assert renamed == {"records": [{"c": "DE", "n": 2}], "count": 1}
    assert counted == {"count": 5}
    assert nothing == {"records": [], "count": 0}


def test_data_select_keeps_the_named_fields_that_are_there():
    output = run_pipeline(
        PEOPLE[:2], parse_pipeline([{"select": ["name", "user.plan", "tags"]}], "p")
    )

    assert output["records"] == [
        {"name": "ann", "user.plan": "pro", "tags": ["a", "b"]},
        {"name": "bob", "user.plan": "free"},
    ]


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ([{"count": {}}, {"limit": 1}], "pipeline[0] is a count step, which must be the last one"),
        ([{"count": {"x": 1}}], 'pipeline[0].count takes no options: write {}, got {"x": 1}'),
        ([{"limit": -1}], "pipeline[0].limit must be an integer from 0 to 1000000, got -1"),
        ([{"select": []}], "pipeline[0].select must have from 1 to 100 entries, got 0"),
        ([{"filter": {"field": "a", "op": "in", "value": 1}}], "pipeline[0].filter.value must be a list for op in"),
        ([{"filter": {"field": "a", "op": "gt", "value": [1]}}], "pipeline[0].filter.value must be a number or a string for op gt"),
        ([{"filter": {"field": "a", "op": "eq"}}], "pipeline[0].filter.value is missing"),
        ([{"filter": {"field": "", "op": "eq", "value": 1}}], "pipeline[0].filter.field must be a non-empty string"),
        ([{"group_by": {"field": "n", "count_as": "n"}}], "pipeline[0].group_by.count_as must differ from the field"),
        ([{"sort": {"field": "a", "descending": "yes"}}], "pipeline[0].sort.descending must be true or false"),
        ([{}] * 51, "pipeline must have from 0 to 50 entries, got 51"),
    ],
)  # fmt: skip
def test_data_refuses_a_bad_pipeline_naming_the_step(pipeline, message):
    with pytest.raises(ValueError) as refused:
        parse_pipeline(pipeline, "pipeline")

    assert message in str(refused.value)


def test_data_agent_runs_its_settings_pipeline_or_the_payloads(start_agentd, queue_redis):
    agent = start_agentd(
        {
            **FAST,
            "task_max_failures": 1,
            "template": "data",
            "settings": {
                "pipeline": [
                    {"filter": {"field": "status", "op": "eq", "value": "active"}},
                    {"group_by": {"field": "country", "count_as": "count"}},
                ],
                "max_records": 4,
            },
        }
    )
    records = [
        {"country": "DE", "status": "active"},
        {"country": "FR", "status": "active"},
        {"country": "DE", "status": "active"},
        {"country": "DE", "status": "closed"},
    ]

    grouped = output_of(queue_redis, agent, {"records": records})
    own = output_of(
        queue_redis,
        agent,
        {"records": records, "pipeline": [{"filter": {"field": "country", "op": "eq", "value": "DE"}}, {"count": {}}]},
    )  # fmt: skip
    unchanged = output_of(queue_redis, agent, {"records": records[:1], "pipeline": []})
    too_many = error_of(queue_redis, agent, {"records": records * 2})
    not_objects = error_of(queue_redis, agent, {"records": [{"a": 1}, 5]})
    missing = error_of(queue_redis, agent, {"rows": []})
    bad_step = error_of(
        queue_redis,
        agent,
        {"records": records, "pipeline": [{"limit": 1}, {"filter": {"field": "a", "op": "like", "value": "x"}}]},
    )  # fmt: skip

    assert grouped == {
        "records": [{"country": "DE", "count": 2}, {"country": "FR", "count": 1}],
        "count": 2,
    }
    assert own == {"count": 3}
    assert unchanged == {"records": records[:1], "count": 1}
    assert too_many == "records must have from 0 to 4 entries, got 8"
    assert not_objects == "records[1] must be a JSON object, got 5"
    assert missing == "records is missing: the list of JSON objects to transform"
    assert bad_step == (
        "pipeline[1].filter.op must be one of eq, ne, lt, lte, gt, gte, in, contains, exists, "
        'got "like"'
    )
    [*_, letter] = dead_letters(queue_redis, agent)
    assert letter[1][contract.DLQ_ERROR] == bad_step


# Orchestration


def test_orchestration_fans_out_to_real_agents_and_gathers_their_replies(
    start_agentd, queue_redis, tmp_path
):
    echo = start_agentd({**FAST, "task_max_failures": 1})
    memory = start_agentd(
        {**FAST, "task_max_failures": 1, "template": "memory"},
        env={"AGENT_DATA_DIR": str(tmp_path)},
    )
    settings = {"targets": [echo.slug, memory.slug], "timeout_seconds": 5}
    conductor = start_agentd({**FAST, "template": "orchestration", "settings": settings})
    put = {"op": "put", "key": "k", "value": [1], "scope": "long"}

    reply = ask(queue_redis, conductor, {"task": put}, customer="acme")
    only_memory = output_of(
        queue_redis, conductor, {"task": {"op": "get", "key": "k", "scope": "long"}, "targets": [memory.slug]}
    )  # fmt: skip

    assert reply[contract.REPLY_STATUS] == contract.REPLY_SUCCEEDED, reply
    output = reply[contract.REPLY_OUTPUT]
    assert [(r["agent"], r["status"], r["output"], r["error"]) for r in output["replies"]] == [
        (echo.slug, "succeeded", put, ""),
        (memory.slug, "succeeded", {"op": "put", "key": "k", "scope": "long", "stored": True}, ""),
    ]
    assert all(isinstance(r["duration_ms"], int) for r in output["replies"])
    assert (output["succeeded"], output["failed"], output["missing"]) == (2, 0, [])
    assert [r["output"]["value"] for r in only_memory["replies"]] == [[1]]
    # Each target took one task from the conductor, and answered it on the task's own stream,
    # which expires; the customer went along.
    assert queue_redis.hgetall(contract.producer_counts(echo.slug)) == {conductor.slug: "1"}
    assert queue_redis.hgetall(contract.producer_counts(memory.slug)) == {conductor.slug: "2"}
    message_id = reply[contract.REPLY_MESSAGE_ID]
    replies_stream = contract.orchestration_reply_stream(conductor.slug, message_id)
    sub_replies = [fields for _, fields in queue_redis.xrange(replies_stream)]
    assert sorted(r[contract.REPLY_TASK_ID] for r in sub_replies) == sorted(
        f"{conductor.slug}/{message_id}/{target}" for target in (echo.slug, memory.slug)
    )
    assert {r[contract.REPLY_CUSTOMER] for r in sub_replies} == {"acme"}
    assert 0 < queue_redis.ttl(replies_stream) <= 3600

    # A target that fails: "all" fails the orchestration with its error; "any" does not.
    failing = {"task": {"fail": True}, "targets": [echo.slug]}
    conductor.patch_config({**FAST, "task_max_failures": 1})
    error = ask(queue_redis, conductor, failing)[contract.REPLY_ERROR]
    assert error == f'{echo.slug} failed: the task asked to fail (payload "fail": true)'
    conductor.patch_config({"settings": {**settings, "require": "any"}})
    mixed = output_of(queue_redis, conductor, {"task": {"op": "bogus"}})
    assert (mixed["succeeded"], mixed["failed"]) == (1, 1)
    assert mixed["replies"][1]["error"] == 'op must be one of put, get, forget, keys, got "bogus"'


def test_orchestration_without_a_reply_fails_after_the_timeout_and_never_sends_twice(
    start_agentd, queue_redis, spare_slug
):
    echo = start_agentd(FAST)
    absent = spare_slug()
    settings = {"targets": [echo.slug, absent], "timeout_seconds": 0.3}
    conductor = start_agentd(
        {**FAST, "task_max_failures": 3, "template": "orchestration", "settings": settings}
    )

    reply = ask(queue_redis, conductor, {"task": {"n": 1}}, timeout=10)

    assert reply[contract.REPLY_STATUS] == contract.REPLY_DEAD_LETTERED
    assert reply[contract.REPLY_ERROR] == f"no reply from {absent} within 0.3 s"
    assert reply[contract.REPLY_ATTEMPTS] == "3"
    # Three attempts, one task each: the stopped target's stream holds it once, and the
    # running one processed it once (its reply to the first attempt counted for the others).
    [(_, sent)] = queue_redis.xrange(contract.task_stream(absent))
    assert (
        sent[contract.FIELD_TASK_ID]
        == f"{conductor.slug}/{reply[contract.REPLY_MESSAGE_ID]}/{absent}"
    )
    assert sent[contract.FIELD_PRODUCER] == conductor.slug
    assert json.loads(sent[contract.FIELD_PAYLOAD]) == {"n": 1}
    assert queue_redis.hget(contract.counters(echo.slug), contract.COUNTER_PROCESSED) == "1"
    assert len(conductor.events("task_failed")) == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "settings.targets is missing: the agents each task is sent to"),
        ({"targets": []}, "settings.targets must have from 1 to 16 entries, got 0"),
        ({"targets": ["a", "me"]}, "settings.targets[1] names this agent (me)"),
        ({"targets": ["a", "b", "a"]}, "settings.targets[2] names a a second time"),
        ({"targets": ["a b"]}, 'settings.targets[0] must be an agent slug'),
        ({"targets": ["a"], "timeout_seconds": 0}, "settings.timeout_seconds must be a number from 0.1 to 300, got 0"),
        ({"targets": ["a"], "require": "most"}, 'settings.require must be one of all, any, got "most"'),
    ],
)  # fmt: skip
def test_orchestration_settings_are_checked(settings, message):
    assert message in settings_error("orchestration", settings)


# API and monitoring, against a real HTTP server


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Service:
    """A real HTTP server in a thread: ``/status`` answers 200, ``/flaky`` 503 once and then
    200, ``/down`` always 503, ``/missing`` 404, ``/moved`` a redirect, ``/echo`` the body."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)

    def hits(self, path: str) -> int:
        return sum(1 for request in self.seen if request.path.split("?")[0] == path)


STATUS_BODY = b'{"status": "fine"}'


@pytest.fixture
def service() -> Iterator[Service]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ServiceHandler)
    server.daemon_threads = True
    server.service = Service(f"http://127.0.0.1:{server.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server.service  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join()


class _ServiceHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        service: Service = self.server.service  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        service.seen.append(Seen(self.command, self.path, dict(self.headers), body))
        path = self.path.split("?")[0]
        count = service.answered[path] = service.answered.get(path, 0) + 1
        if path == "/status":
            self._send(200, STATUS_BODY, "application/json")
        elif path == "/echo":
            self._send(200, body, "application/octet-stream")
        elif path == "/flaky" and count == 1:
            self._send(503, b"busy", headers={"Retry-After": "0"})
        elif path == "/flaky":
            self._send(200, b"ok")
        elif path == "/down":
            self._send(503, b"down")
        elif path == "/moved":
            self._send(302, b"", headers={"Location": "http://127.0.0.1:9/elsewhere"})
        else:
            self._send(404, b"no such thing")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain",
        headers: dict | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


SECRET = "s3cret-t0ken-value"


def test_api_calls_the_service_with_the_secret_and_retries_what_is_worth_it(
    start_agentd, queue_redis, service, unused_port
):
    settings = {
        "base_url": service.url + "/",
        "auth_secret": "TEST_API_TOKEN",
        "auth_scheme": "Bearer",
        "timeout_seconds": 2,
        "retries": 2,
        "methods": ["GET", "POST"],
    }
    agent = start_agentd(
        {**FAST, "task_max_failures": 1, "template": "api", "settings": settings},
        env={"TEST_API_TOKEN": SECRET},
    )

    status = output_of(queue_redis, agent, {"path": "/status", "query": {"q": "a b", "n": 2}})
    posted = output_of(
        queue_redis, agent, {"method": "POST", "path": "/echo", "body": {"a": [1, "ü"]}}
    )
    flaky = output_of(queue_redis, agent, {"method": "GET", "path": "/flaky"})
    moved = output_of(queue_redis, agent, {"path": "/moved"})
    missing = error_of(queue_redis, agent, {"path": "/missing"})
    down = error_of(queue_redis, agent, {"path": "/down"})
    refused = {
        "method": error_of(queue_redis, agent, {"method": "DELETE", "path": "/status"}),
        "path": error_of(queue_redis, agent, {"path": "http://elsewhere/"}),
        "relative": error_of(queue_redis, agent, {"path": "status"}),
        "query": error_of(queue_redis, agent, {"path": "/status", "query": {"q": [1]}}),
    }

    assert status == {
        "status": 200,
        "digest": "sha256:" + hashlib.sha256(STATUS_BODY).hexdigest(),
        "bytes": len(STATUS_BODY),
        "content_type": "application/json",
        "attempts": 1,
        "url": f"{service.url}/status?q=a+b&n=2",
    }
    first = service.seen[0]
    assert (first.method, first.path) == ("GET", "/status?q=a+b&n=2")
    assert first.headers["Authorization"] == f"Bearer {SECRET}"
    sent_body = json.dumps({"a": [1, "ü"]}).encode()
    assert posted["digest"] == "sha256:" + hashlib.sha256(sent_body).hexdigest()
    assert service.seen[1].headers["Content-Type"] == "application/json"
    assert (flaky["status"], flaky["attempts"]) == (200, 2)
    assert moved["status"] == 302  # answered, not followed: the token stays with us
    assert missing == f"GET {service.url}/missing answered 404 after 1 attempt"
    assert service.hits("/missing") == 1
    assert down == f"GET {service.url}/down answered 503 after 3 attempts"
    assert service.hits("/down") == 3
    assert refused == {
        "method": 'method must be one of GET, POST (settings.methods), got "DELETE"',
        "path": "path must start with '/' and hold no '://', spaces or control characters, "
        'got "http://elsewhere/"',
        "relative": "path must start with '/' and hold no '://', spaces or control characters, "
        'got "status"',
        "query": "query.q must be a string or a number, got [1]",
    }

    agent.patch_config({"settings": {**settings, "base_url": f"http://127.0.0.1:{unused_port}", "retries": 0}})  # fmt: skip
    unreachable = error_of(queue_redis, agent, {"path": "/status"})
    assert unreachable == (
        f"GET http://127.0.0.1:{unused_port}/status got no answer after 1 attempt: "
        "Connection refused"
    )

    # The secret is nowhere but in the request: not in the logs, the config, the dead letters.
    agent.terminate()
    assert SECRET not in agent.output()
    assert "answered 404 after 1 attempt" in agent.output()  # the errors are logged
    assert SECRET not in json.dumps(dead_letters(queue_redis, agent))


def test_api_needs_the_secret_it_names(run_agentd, redis_url):
    config = {"template": "api", "settings": {"base_url": "https://api.example.com", "auth_secret": "API_TOKEN"}}  # fmt: skip
    args = ["--slug", "bad", "--redis-url", redis_url, "--config", json.dumps(config)]

    unset = run_agentd(args)
    broken = run_agentd(args, env={"API_TOKEN": "line\nbreak-secret"})

    assert unset.returncode == broken.returncode == contract.EXIT_BAD_CONFIG
    assert (
        "settings.auth_secret names the environment variable API_TOKEN, which is not set or "
        "empty in the agent's environment"
    ) in unset.stderr
    assert (
        "the environment variable API_TOKEN (settings.auth_secret) holds characters"
        in broken.stderr
    )
    assert "break-secret" not in broken.stderr + broken.stdout


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "settings.base_url is missing"),
        ({"base_url": "ftp://x"}, 'settings.base_url must be an http:// or https:// URL, got "ftp://x"'),
        ({"base_url": "https://user:pw@x"}, "settings.base_url must not hold credentials"),
        ({"base_url": "https://x", "retries": 6}, "settings.retries must be an integer from 0 to 5, got 6"),
        ({"base_url": "https://x", "timeout_seconds": 61}, "settings.timeout_seconds must be a number from 0.1 to 60"),
        ({"base_url": "https://x", "methods": ["GET", "TRACE"]}, 'settings.methods[1] must be one of GET, POST'),
        ({"base_url": "https://x", "methods": []}, "settings.methods must have from 1 to 6 entries, got 0"),
        ({"base_url": "https://x", "auth_header": "Bad Header"}, "settings.auth_header must be an HTTP header name"),
        ({"base_url": "https://x", "auth_secret": "lower"}, "settings.auth_secret must be the name of an environment variable"),
        ({"base_url": "https://x", "token": "t"}, "settings has an unknown key 'token'"),
    ],
)  # fmt: skip
def test_api_settings_are_checked(settings, message):
    assert message in settings_error("api", settings)


def test_monitoring_probes_its_targets_and_exports_them_as_metrics(
    start_agentd, queue_redis, service, listening_port, unused_port
):
    settings = {
        "targets": [
            {"name": "web", "kind": "http", "url": f"{service.url}/status"},
            {"name": 'odd "name"', "kind": "http", "url": f"{service.url}/missing"},
            {"name": "db", "kind": "tcp", "host": "127.0.0.1", "port": listening_port},
            {"name": "closed", "kind": "tcp", "host": "127.0.0.1", "port": unused_port},
        ],
        "interval_seconds": 1,
        "timeout_seconds": 1,
    }
    agent = start_agentd({**FAST, "template": "monitoring", "settings": settings})

    metrics = wait_until(
        lambda: (e := agent.metrics()) and "agentd_probe_up" in e.names() and e, message="no probes"
    )
    report = output_of(queue_redis, agent, {"op": "report"})
    probed = output_of(queue_redis, agent, {"op": "probe"})

    assert {
        name: metrics.value("agentd_probe_up", target=name, kind=kind)
        for name, kind in [("web", "http"), ('odd \\"name\\"', "http"), ("db", "tcp"), ("closed", "tcp")]
    } == {"web": 1, 'odd \\"name\\"': 0, "db": 1, "closed": 0}  # fmt: skip
    assert metrics.value("agentd_probe_checks_total", target="web", result="up") >= 1
    assert metrics.value("agentd_probe_checks_total", target="web", result="down") == 0
    assert metrics.value("agentd_probe_checks_total", target="closed", result="down") >= 1
    assert 0 <= metrics.value("agentd_probe_latency_seconds", target="db", kind="tcp") < 1
    assert metrics.types["agentd_probe_up"] == "gauge"
    assert metrics.types["agentd_probe_checks_total"] == "counter"
    assert [(t["name"], t["kind"], t["up"], t["error"]) for t in report["targets"]] == [
        ("web", "http", True, ""),
        ('odd "name"', "http", False, "answered 404, expected 200"),
        ("db", "tcp", True, ""),
        ("closed", "tcp", False, "Connection refused"),
    ]
    assert (report["up"], report["down"]) == (2, 2)
    assert all(t["latency_ms"] >= 0 and t["checked_at"] > 0 for t in report["targets"])
    assert [t["checked_at"] >= r["checked_at"] for t, r in zip(probed["targets"], report["targets"], strict=True)] == [True] * 4  # fmt: skip
    assert (probed["up"], probed["down"]) == (2, 2)

    # The thread probes every interval, and stops when the config names another template.
    wait_until(lambda: service.hits("/status") >= 3, timeout=5)
    agent.patch_config({"template": "blank"})
    wait_until(lambda: "agentd_probe_up" not in agent.metrics().names())
    hits = service.hits("/status")
    time.sleep(1.3)
    assert service.hits("/status") == hits


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "settings.targets is missing"),
        ({"targets": []}, "settings.targets must have from 1 to 50 entries, got 0"),
        ({"targets": [{"name": "a", "kind": "udp"}]}, 'settings.targets[0].kind must be one of http, tcp, got "udp"'),
        ({"targets": [{"name": "a", "kind": "http"}]}, "settings.targets[0].url must be a non-empty string, got null"),
        ({"targets": [{"name": "a", "kind": "tcp", "host": "h", "port": 1}, {"name": "b", "kind": "tcp", "host": "h", "port": 0}]},
         "settings.targets[1].port must be an integer from 1 to 65535, got 0"),
        ({"targets": [{"name": "a", "kind": "tcp", "host": "h", "port": 1, "url": "http://x"}]},
         "settings.targets[0] has an unknown key 'url'"),
        ({"targets": [{"name": "a", "kind": "http", "url": "http://x"}] * 2}, "settings.targets[1].name is 'a' a second time"),
        ({"targets": [{"name": "a", "kind": "http", "url": "http://x", "expect_status": 99}]},
         "settings.targets[0].expect_status must be an integer from 100 to 599, got 99"),
        ({"targets": [{"name": "a", "kind": "http", "url": "http://x"}], "interval_seconds": 0.5},
         "settings.interval_seconds must be a number from 1 to 3600, got 0.5"),
    ],
)  # fmt: skip
def test_monitoring_settings_are_checked(settings, message):
    assert message in settings_error("monitoring", settings)


@pytest.mark.parametrize(
    ("template", "settings", "message"),
    [
        ("orchestration", {"targets": ["bad-config"]}, "settings.targets[0] names this agent (bad-config)"),
        ("api", {"base_url": "nope"}, 'settings.base_url must be an http:// or https:// URL, got "nope"'),
        ("data", {"pipeline": [{"limit": "ten"}]}, 'settings.pipeline[0].limit must be an integer from 0 to 1000000, got "ten"'),
        ("monitoring", {"targets": [{"name": "x", "kind": "tcp", "host": "h", "port": 70000}]},
         "settings.targets[0].port must be an integer from 1 to 65535, got 70000"),
        ("blank", {"anything": 1}, "settings has an unknown key 'anything'"),
    ],
)  # fmt: skip
def test_bad_settings_of_each_template_stop_agentd(
    run_agentd, redis_url, template, settings, message
):
    config = json.dumps({"template": template, "settings": settings})

    result = run_agentd(["--slug", "bad-config", "--redis-url", redis_url, "--config", config])

    assert result.returncode == contract.EXIT_BAD_CONFIG
    assert f"{contract.BAD_CONFIG_MARKER} {message}" in result.stderr
