"""The orchestration template: fan a task out to other agents and gather their replies.

Each target gets the task's ``task`` object as a task of its own on its stream, with a task id of
``<own slug>/<message id>/<target>`` and a reply stream of this task's own. A script sends each
sub-task only if its marker key is not set yet, setting it in the same step, so a retried
orchestration task (it failed, or its replica died) sends nothing twice; its replies are read
from the start of the reply stream, so replies to an earlier attempt count.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, cast

import redis

from .. import contract
from . import checks
from .base import Handler, HandlerContext, Invalid, Settings, Task, TaskError

SLUG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
SLUG_RULE = "an agent slug (letters, digits, '.', '_' or '-', at most 63 characters)"
MAX_TARGETS = 16
REQUIRE = ("all", "any")
DEFAULT_TIMEOUT_SECONDS = 10.0
# How long a sub-task's "sent" marker is kept: far longer than any retry of the task.
SENT_MARKER_SECONDS = 7 * 24 * 3600
# The reply stream is kept this long after a task gathered its replies, for a retry to read.
REPLY_STREAM_SECONDS = 3600
# Replies are waited for in slices, so the socket timeout stays short.
READ_SLICE_MS = 1000

# KEYS: the marker, the target's stream. ARGV: marker seconds, then the task's field/value pairs.
# Answers the new task's id, or false when the marker was set already (sent before).
SEND_ONCE_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""


def parse_settings(data: object, *, slug: str) -> dict[str, Any]:
    settings = checks.mapping("settings", data)
    checks.only_known("settings", settings, ("targets", "timeout_seconds", "require"))
    targets = checks.array(
        "settings.targets",
        checks.required("settings", settings, "targets", "the agents each task is sent to"),
        1,
        MAX_TARGETS,
    )
    for index, target in enumerate(targets):
        key = f"settings.targets[{index}]"
        checks.string(key, target, max_length=63, pattern=SLUG_PATTERN, rule=SLUG_RULE)
        if target == slug:
            raise Invalid(f"{key} names this agent ({slug}); an agent may not orchestrate itself")
        if target in targets[:index]:
            raise Invalid(f"{key} names {target} a second time; name each agent once")
    timeout = checks.value_of(settings, "timeout_seconds")
    require = checks.value_of(settings, "require")
    return {
        "targets": list(targets),
        "timeout_seconds": DEFAULT_TIMEOUT_SECONDS
        if timeout is None
        else checks.number("settings.timeout_seconds", timeout, 0.1, 300),
        "require": "all"
        if require is None
        else checks.choice("settings.require", require, REQUIRE),
    }


class OrchestrationHandler(Handler):
    template = "orchestration"

    def __init__(self, settings: Settings, context: HandlerContext) -> None:
        self._slug = context.slug
        self._targets: list[str] = settings["targets"]
        self._timeout = settings["timeout_seconds"]
        self._require = settings["require"]
        self._redis = context.connect_redis(READ_SLICE_MS / 1000 + 5)
        self._send_once = self._redis.register_script(SEND_ONCE_SCRIPT)

    def close(self) -> None:
        self._redis.close()

    def longest_task_seconds(self) -> float:
        return self._timeout + 1

    def handle(self, task: Task) -> dict[str, Any]:
        try:
            sub_task, targets = self._request(task.payload)
        except Invalid as exc:
            raise TaskError(str(exc)) from exc
        reply_to = contract.orchestration_reply_stream(self._slug, task.message_id)
        self._send(task, sub_task, targets, reply_to)
        try:
            replies = self._gather(task.message_id, targets, reply_to)
        finally:
            self._redis.expire(reply_to, REPLY_STREAM_SECONDS)
        return self._outcome(targets, replies)

    def _request(self, payload: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        sub_task = payload.get("task")
        sub_task = {} if sub_task is None else checks.mapping("task", sub_task)
        targets = payload.get("targets")
        if targets is None:
            return dict(sub_task), self._targets
        checks.array("targets", targets, 1, MAX_TARGETS)
        for index, target in enumerate(targets):
            if target not in self._targets:
                raise Invalid(
                    f"targets[{index}] is {checks.show(target)}, which is not one of this "
                    f"agent's targets ({', '.join(self._targets)})"
                )
        return dict(sub_task), [t for t in self._targets if t in targets]

    def _send(
        self, task: Task, sub_task: dict[str, Any], targets: list[str], reply_to: str
    ) -> None:
        pipeline = self._redis.pipeline(transaction=True)
        for target in targets:
            sub_task_id = self._sub_task_id(task.message_id, target)
            fields = {
                contract.FIELD_PRODUCER: self._slug,
                contract.FIELD_TASK_ID: sub_task_id,
                contract.FIELD_REPLY_TO: reply_to,
                contract.FIELD_SENT_AT: str(int(time.time() * 1000)),
                contract.FIELD_PAYLOAD: json.dumps(sub_task),
            }
            if task.customer:
                fields[contract.FIELD_CUSTOMER] = task.customer
            self._send_once(
                keys=[
                    contract.orchestration_sent(self._slug, sub_task_id),
                    contract.task_stream(target),
                ],
                args=[SENT_MARKER_SECONDS, *(item for pair in fields.items() for item in pair)],
                client=pipeline,
            )
        try:
            pipeline.execute()
        except redis.ResponseError as exc:
            # Say a target's key is not a stream: a fault of the setup, not of Redis.
            raise TaskError(f"could not send the sub-tasks: {exc}") from exc

    def _gather(
        self, message_id: str, targets: list[str], reply_to: str
    ) -> dict[str, dict[str, str]]:
        """The replies per target that arrived before the timeout."""
        expected = {self._sub_task_id(message_id, target): target for target in targets}
        replies: dict[str, dict[str, str]] = {}
        deadline = time.monotonic() + self._timeout
        last_id = "0-0"
        while len(replies) < len(targets):
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            answer = cast(
                "list[tuple[str, list[tuple[str, dict[str, str]]]]] | None",
                self._redis.xread(
                    {reply_to: last_id}, count=100, block=min(remaining_ms, READ_SLICE_MS)
                ),
            )
            for _stream, messages in answer or []:
                for reply_id, fields in messages:
                    last_id = reply_id
                    target = expected.get(fields.get(contract.REPLY_TASK_ID, ""))
                    if target is not None:
                        replies.setdefault(target, fields)
        return replies

    def _outcome(self, targets: list[str], replies: dict[str, dict[str, str]]) -> dict[str, Any]:
        answered = [_reply(target, replies[target]) for target in targets if target in replies]
        missing = [target for target in targets if target not in replies]
        succeeded = [r for r in answered if r["status"] == contract.REPLY_SUCCEEDED]
        failed = [r for r in answered if r["status"] != contract.REPLY_SUCCEEDED]
        problems = [f"{r['agent']} failed: {r['error']}" for r in failed]
        if missing:
            problems.append(f"no reply from {', '.join(missing)} within {self._timeout:g} s")
        if self._require == "all" and problems:
            raise TaskError("; ".join(problems))
        if self._require == "any" and not succeeded:
            raise TaskError("no target succeeded: " + "; ".join(problems))
        return {
            "replies": answered,
            "succeeded": len(succeeded),
            "failed": len(failed),
            "missing": missing,
        }

    def _sub_task_id(self, message_id: str, target: str) -> str:
        return f"{self._slug}/{message_id}/{target}"


def _reply(target: str, fields: dict[str, str]) -> dict[str, Any]:
    text = fields.get(contract.REPLY_OUTPUT, "{}")
    try:
        output = json.loads(text)
    except json.JSONDecodeError:
        output = text
    try:
        duration_ms = int(fields.get(contract.REPLY_DURATION_MS, "0"))
    except ValueError:
        duration_ms = 0
    return {
        "agent": target,
        "status": fields.get(contract.REPLY_STATUS, ""),
        "output": output,
        "error": fields.get(contract.REPLY_ERROR, ""),
        "duration_ms": duration_ms,
    }
