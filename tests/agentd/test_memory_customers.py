"""The memory template keeps the keys a customer's tasks put as that customer's, and forgets
exactly those on ``forget_customer`` (the help desk's "clear cache"): real agentd processes."""

from __future__ import annotations

import json
from typing import Any

from agents.agentd import contract
from tests.agentd.test_handlers import FAST, ask, output_of


def test_forget_customer_deletes_exactly_that_customers_keys_in_both_scopes(
    start_agentd, queue_redis, tmp_path
):
    agent = start_agentd(
        {**FAST, "template": "memory", "settings": {"default_ttl_seconds": 60}},
        env={"AGENT_DATA_DIR": str(tmp_path)},
    )

    def put(key: str, scope: str, customer: str = "") -> None:
        fields = {"customer": customer} if customer else {}
        reply = ask(
            queue_redis, agent, {"op": "put", "key": key, "value": [key], "scope": scope}, **fields
        )
        assert reply[contract.REPLY_STATUS] == contract.REPLY_SUCCEEDED, reply

    put("acme:session", "short", "acme")
    put("acme:profile", "long", "acme")
    put("acme:prefs", "long", "acme")
    put("globex:session", "short", "globex")
    put("globex:profile", "long", "globex")
    put("shared", "long")
    put("plain", "short")

    forgot = ask(queue_redis, agent, {"op": "forget_customer"}, customer="acme")

    assert forgot[contract.REPLY_STATUS] == contract.REPLY_SUCCEEDED, forgot
    assert forgot[contract.REPLY_OUTPUT] == {
        "op": "forget_customer", "customer": "acme", "short": 1, "long": 2, "deleted": 3,
    }  # fmt: skip
    assert output_of(queue_redis, agent, {"op": "keys"})["keys"] == ["globex:session", "plain"]
    assert output_of(queue_redis, agent, {"op": "keys", "scope": "long"})["keys"] == [
        "globex:profile", "shared",
    ]  # fmt: skip
    # The files of the keys kept say whose they are; acme's are gone from the disk.
    records = [json.loads(p.read_text()) for p in (tmp_path / "memory").iterdir()]
    assert sorted((r["key"], r.get("customer")) for r in records) == [
        ("globex:profile", "globex"), ("shared", None),
    ]  # fmt: skip
    # Asked again: nothing left to delete, and it says so.
    again = ask(queue_redis, agent, {"op": "forget_customer"}, customer="acme")
    assert again[contract.REPLY_OUTPUT]["deleted"] == 0


def test_a_key_is_one_key_whoever_reads_it_and_belongs_to_who_put_it_last(
    start_agentd, queue_redis, tmp_path
):
    agent = start_agentd({**FAST, "template": "memory"}, env={"AGENT_DATA_DIR": str(tmp_path)})

    def call(payload: dict[str, Any], customer: str = "") -> dict[str, Any]:
        fields = {"customer": customer} if customer else {}
        reply = ask(queue_redis, agent, payload, **fields)
        assert reply[contract.REPLY_STATUS] == contract.REPLY_SUCCEEDED, reply
        return reply[contract.REPLY_OUTPUT]

    call({"op": "put", "key": "k", "value": 1, "scope": "long"}, "acme")
    assert call({"op": "get", "key": "k", "scope": "long"})["value"] == 1
    call({"op": "put", "key": "k", "value": 2, "scope": "long"}, "globex")

    assert call({"op": "forget_customer"}, "acme")["deleted"] == 0
    assert call({"op": "forget_customer"}, "globex")["deleted"] == 1
    assert call({"op": "get", "key": "k", "scope": "long"})["found"] is False


def test_forget_customer_without_a_customer_fails_with_a_clear_error(
    start_agentd, queue_redis, tmp_path
):
    agent = start_agentd(
        {**FAST, "template": "memory", "task_max_failures": 1},
        env={"AGENT_DATA_DIR": str(tmp_path)},
    )
    output_of(queue_redis, agent, {"op": "put", "key": "kept", "value": 1, "scope": "long"})

    reply = ask(queue_redis, agent, {"op": "forget_customer"})

    assert reply[contract.REPLY_STATUS] == contract.REPLY_DEAD_LETTERED
    assert reply[contract.REPLY_ERROR] == (
        "forget_customer deletes the keys of the task's customer: send the task with a customer "
        "field"
    )
    assert output_of(queue_redis, agent, {"op": "keys", "scope": "long"})["keys"] == ["kept"]
