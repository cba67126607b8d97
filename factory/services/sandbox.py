"""Sandbox runs: the agent as configured, run for real before it is created.

A sandbox is an agentd process of its own (the local runtime, rooted apart from the fleet's,
with its own port range and events stream), with streams and a data directory under a sandbox
name (``sbx-<run>-<template>``), so no page, monitor or collector of the fleet sees it. An
orchestrator's targets are replaced by blank stand-ins started beside it, so its fan-out is real
without touching the fleet. The template's test tasks are sent one after another and each reply
is checked against its expectation; the agent's log lines, latency and peak memory are kept; then
everything is torn down, also after a timeout. A worker that dies mid-run leaves a row the sweep
finds (no runner holds its lease) and tears down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.agentd import contract
from agents.runtimes import AgentSpec, RuntimeFailure, get_runtime
from factory.models import Draft, SandboxRun, Template
from factory.services import validation
from factory.services.refusals import FactoryRefused
from portal import roles, work
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

logger = logging.getLogger(__name__)

RUN_TASK = "factory.run_sandbox"
SANDBOX_LOCK = 7410
PORT_RANGE = (40000, 40999)
EVENTS_STREAM = "factory:sandbox:events"
TASK_TIMEOUT_SECONDS = 15.0
MAX_LOG_LINES = 200
PREFIX = "sbx-"


def sandbox_root() -> Path:
    return Path(settings.FACTORY_SANDBOX_ROOT)


def runtime():
    return get_runtime(
        "local",
        root=sandbox_root(),
        redis_url=settings.AGENT_REDIS_URL,
        events_stream=EVENTS_STREAM,
        port_range=PORT_RANGE,
    )


def agent_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.AGENT_REDIS_URL, decode_responses=True)


# --- asking for a run ----------------------------------------------------------------------------


@audits_refusals("factory.sandbox", target="template")
def start_sandbox(
    template: Template,
    values: Mapping[str, Any],
    secrets: Mapping[str, str],
    actor: Actor,
    *,
    draft: Draft | None = None,
) -> SandboxRun:
    """Check the configuration's own settings and queue a sandbox run of it. Refused (400, with
    the field errors) when the settings do not check out: a sandbox of a configuration that can
    never run would only say so later."""
    from factory.services.drafts import agent_config

    actor.require(roles.OPERATE, "run sandboxes")
    fields = ("environment", "secrets", "settings", "resources.replicas", "resources.memory_mb",
              "resources.cpu_millicores")  # fmt: skip
    errors = validation.validate(template, values, secrets, fields=fields, capacity=False)
    if errors:
        raise FactoryRefused(
            "The configuration does not check out: " + "; ".join(e.message for e in errors[:3]),
            "invalid",
            details={"errors": [e.as_dict() for e in errors]},
        )
    config = agent_config(template, values)
    with transaction.atomic():
        sandbox = SandboxRun.objects.create(
            **SandboxRun.stamp(actor),
            draft=draft,
            template=template,
            name="sbx-pending",
            config={
                "agent": config,
                "environment": dict(values.get("environment") or {}),
                "secret_names": sorted(secrets),
                "secrets_digest": secrets_digest(secrets),
                "resources": dict(values.get("resources") or {}),
            },
            secrets=dict(secrets),
        )
        sandbox.name = f"{PREFIX}{sandbox.pk}-{template.key}"[:63]
        sandbox.save(update_fields=["name"])
        record_audit(
            actor, "factory.sandbox", target=f"sandbox:{sandbox.pk}", template=template.label,
            draft=str(draft.pk) if draft else "",
        )  # fmt: skip
        work.send_after_commit(RUN_TASK, sandbox.pk, undo=lambda why: _give_up(sandbox.pk, why))
    return sandbox


def secrets_digest(secrets: Mapping[str, str]) -> str:
    """A digest of the secrets' names and values, to tell whether they changed since a run
    (the values themselves are not kept once it is torn down)."""
    text = json.dumps(sorted(secrets.items()))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _give_up(sandbox_id: int, why: str) -> None:
    SandboxRun.objects.filter(pk=sandbox_id, status=SandboxRun.Status.PENDING).update(
        status=SandboxRun.Status.ERROR, error=why, finished_at=timezone.now(), secrets={},
        torn_down_at=timezone.now(),
    )  # fmt: skip


def get_sandbox(sandbox_id: object, actor: Actor) -> SandboxRun:
    actor.require(roles.VIEW, "see sandbox runs")
    try:
        number = int(str(sandbox_id)[:20])
    except ValueError:
        raise FactoryRefused(
            f"{str(sandbox_id)[:20]!r} is not a sandbox number.", "invalid"
        ) from None
    sandbox = SandboxRun.objects.select_related("template").filter(pk=number).first()
    if sandbox is None:
        raise FactoryRefused(f"There is no sandbox run #{number}.", "not_found")
    return sandbox


# --- running it ------------------------------------------------------------------------------------


def run_sandbox(sandbox_id: int) -> SandboxRun | None:
    """Run the sandbox ``sandbox_id`` to its end (a worker's task); answers it, or ``None`` when
    another runner has it."""
    with work.try_lease(SANDBOX_LOCK, sandbox_id) as mine:
        if not mine:
            return None
        sandbox = SandboxRun.objects.select_related("template").get(pk=sandbox_id)
        if sandbox.status != SandboxRun.Status.PENDING:
            if sandbox.torn_down_at is None:
                tear_down(sandbox)
            return sandbox
        sandbox.status, sandbox.started_at = SandboxRun.Status.RUNNING, timezone.now()
        specs = _specs(sandbox)
        sandbox.resources = {"slugs": [spec.slug for spec in specs]}
        sandbox.save(update_fields=["status", "started_at", "resources"])
        try:
            _run(sandbox, specs)
        except Exception as exc:  # noqa: BLE001 - whatever happened, say it and tear down
            logger.exception("sandbox #%s failed", sandbox_id)
            sandbox.status, sandbox.error = SandboxRun.Status.ERROR, f"The sandbox broke: {exc!r}"
        finally:
            sandbox.finished_at = timezone.now()
            sandbox.logs = _logs(specs[0])
            sandbox.save()
            tear_down(sandbox)
        return sandbox


def _specs(sandbox: SandboxRun) -> list[AgentSpec]:
    """The sandbox agent's spec, and its stand-ins' first (an orchestrator needs them up)."""
    config = json.loads(json.dumps(sandbox.config["agent"]))
    # A test fails at its first failure rather than after the retries a live agent gets.
    config.update({"task_max_failures": 1, "task_retry_ms": 200})
    resources = sandbox.config.get("resources") or {}
    env = {**sandbox.config.get("environment", {}), **sandbox.secrets}
    stand_ins = []
    if config.get("template") == "orchestration":
        targets = list(config.get("settings", {}).get("targets") or [])
        renamed = []
        for number, _target in enumerate(targets):
            slug = f"{sandbox.name[:50]}-t{number}"
            renamed.append(slug)
            stand_ins.append(_spec(slug, f"stand-in {number}", {"template": "blank"}, {}, {}))
        config["settings"] = {**config.get("settings", {}), "targets": renamed}
    main = _spec(sandbox.name, f"sandbox {sandbox.pk}", config, resources, env)
    return [main, *stand_ins]


def _spec(slug: str, name: str, config: dict, resources: Mapping[str, Any], env: dict) -> AgentSpec:
    return AgentSpec(
        slug=slug,
        name=name,
        version="sandbox",
        redis_url=settings.AGENT_REDIS_URL,
        replicas=1,
        config=config,
        cpu_millicores=int(resources.get("cpu_millicores") or 100),
        memory_mb=int(resources.get("memory_mb") or 128),
        env={str(k): str(v) for k, v in env.items()},
        grace_seconds=2,
        ready_timeout=10,
    )


def _run(sandbox: SandboxRun, specs: list[AgentSpec]) -> None:
    deadline = time.monotonic() + settings.FACTORY_SANDBOX_TIMEOUT_SECONDS
    local = runtime()
    main = specs[0]
    try:
        for spec in [*specs[1:], main]:
            local.provision(spec)
            local.deploy(spec)
            local.start(spec)
    except RuntimeFailure as failure:
        sandbox.status = SandboxRun.Status.ERROR
        sandbox.error = f"The agent did not start: {failure.message}"
        return
    client = agent_redis()
    reply_stream = contract.reply_stream(f"sandbox:{sandbox.pk}")
    results, latencies, peak = [], [], 0
    try:
        for number, test in enumerate(sandbox.template.test_tasks):
            if time.monotonic() >= deadline:
                results.append(_result(test, passed=False, error="The sandbox's time ran out."))
                continue
            timeout = min(TASK_TIMEOUT_SECONDS, deadline - time.monotonic())
            result = _one_test(client, main.slug, sandbox.pk, number, test, reply_stream, timeout)
            results.append(result)
            if result.get("latency_ms") is not None:
                latencies.append(result["latency_ms"])
            peak = max(peak, _memory(local, main))
            sandbox.results = results
            SandboxRun.objects.filter(pk=sandbox.pk).update(results=results)
    finally:
        client.delete(reply_stream)
        client.close()
    sandbox.results = results
    sandbox.peak_memory_mb = round(peak / 2**20, 1) if peak else None
    if latencies:
        sandbox.latency_p50_ms = round(statistics.median(latencies), 1)
        ordered = sorted(latencies)
        sandbox.latency_p95_ms = round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1)
    passed = bool(results) and all(result["passed"] for result in results)
    sandbox.status = SandboxRun.Status.PASSED if passed else SandboxRun.Status.FAILED
    if not passed:
        failing = [result["name"] for result in results if not result["passed"]]
        sandbox.error = f"{len(failing)} of {len(results)} test(s) failed: {', '.join(failing)}."


def _one_test(
    client: redis.Redis, slug: str, sandbox_id: int, number: int, test: Mapping[str, Any],
    reply_stream: str, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    task_id = f"sbx{sandbox_id}-t{number}"
    sent = time.monotonic()
    client.xadd(
        contract.task_stream(slug),
        {
            contract.FIELD_PRODUCER: "portal:sandbox",
            contract.FIELD_TASK_ID: task_id,
            contract.FIELD_REPLY_TO: reply_stream,
            contract.FIELD_SENT_AT: str(int(time.time() * 1000)),
            contract.FIELD_PAYLOAD: json.dumps(test.get("payload") or {}),
        },
    )
    reply = _await_reply(client, reply_stream, task_id, timeout)
    if reply is None:
        return _result(test, passed=False, error=f"No reply within {timeout:.0f} s.")
    latency = round((time.monotonic() - sent) * 1000, 1)
    try:
        output = json.loads(reply.get(contract.REPLY_OUTPUT) or "{}")
    except ValueError:
        output = {"text": reply.get(contract.REPLY_OUTPUT, "")}
    status = reply.get(contract.REPLY_STATUS, "")
    want_status = test.get("status", contract.REPLY_SUCCEEDED)
    expect = test.get("expect") or {}
    mismatch = []
    if status != want_status:
        mismatch.append(f"status {status} (expected {want_status})")
    mismatch += differences(expect, output)
    return _result(
        test, passed=not mismatch, output=output, status=status, latency_ms=latency,
        duration_ms=_int(reply.get(contract.REPLY_DURATION_MS)),
        error=reply.get(contract.REPLY_ERROR, "") or "; ".join(mismatch),
        mismatch=mismatch,
    )  # fmt: skip


def _await_reply(
    client: redis.Redis, stream: str, task_id: str, timeout: float
) -> dict[str, str] | None:
    end = time.monotonic() + timeout
    last = "0-0"
    while (left := end - time.monotonic()) > 0:
        answer = cast(
            "list[tuple[str, list[tuple[str, dict[str, str]]]]] | None",
            client.xread({stream: last}, count=10, block=max(1, int(min(left, 1.0) * 1000))),
        )
        for _stream, messages in answer or []:
            for message_id, fields in messages:
                last = message_id
                if fields.get(contract.REPLY_TASK_ID) == task_id:
                    return fields
    return None


def differences(expect: Any, actual: Any, path: str = "output") -> list[str]:
    """Where ``actual`` does not hold what ``expect`` says: objects match by the keys named
    (more keys are fine), lists and values exactly."""
    if isinstance(expect, Mapping):
        if not isinstance(actual, Mapping):
            return [f"{path} is {_show(actual)}, expected an object"]
        found = []
        for key, value in expect.items():
            if key not in actual:
                found.append(f"{path}.{key} is missing (expected {_show(value)})")
            else:
                found += differences(value, actual[key], f"{path}.{key}")
        return found
    if isinstance(expect, list) and isinstance(actual, list) and len(expect) == len(actual):
        found = []
        for index, (want, got) in enumerate(zip(expect, actual, strict=True)):
            found += differences(want, got, f"{path}[{index}]")
        return found
    if expect != actual or type(expect) is bool and type(actual) is not bool:
        return [f"{path} is {_show(actual)}, expected {_show(expect)}"]
    return []


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _result(test: Mapping[str, Any], *, passed: bool, **more: Any) -> dict[str, Any]:
    return {
        "name": str(test.get("name") or "test"),
        "payload": test.get("payload") or {},
        "expect": test.get("expect") or {},
        "passed": passed,
        "output": more.get("output"),
        "status": more.get("status", ""),
        "error": more.get("error", ""),
        "mismatch": more.get("mismatch", []),
        "latency_ms": more.get("latency_ms"),
        "duration_ms": more.get("duration_ms"),
    }


def _memory(local, spec: AgentSpec) -> int:
    try:
        return max((replica.memory_bytes for replica in local.stats(spec)), default=0)
    except Exception:  # noqa: BLE001 - a figure missing is not a failed test
        return 0


def _logs(spec: AgentSpec) -> list[dict[str, str]]:
    try:
        lines = list(runtime().logs(spec, tail=MAX_LOG_LINES))
    except Exception:  # noqa: BLE001
        return []
    return [{"ts": line.ts, "text": line.text[:2000]} for line in lines[-MAX_LOG_LINES:]]


# --- tearing down ----------------------------------------------------------------------------------


def tear_down(sandbox: SandboxRun) -> None:
    """Stop and remove every process, directory and Redis key of the sandbox (idempotent)."""
    local = runtime()
    slugs = list((sandbox.resources or {}).get("slugs") or [sandbox.name])
    client = agent_redis()
    try:
        for slug in slugs:
            try:
                local.remove(_spec(slug, slug, {}, {}, {}), purge=True)
            except RuntimeFailure as failure:
                logger.warning("sandbox #%s: could not remove %s: %s", sandbox.pk, slug, failure)
            (sandbox_root() / ".locks" / f"agent-{slug}.lock").unlink(missing_ok=True)
            keys = list(client.scan_iter(match=f"agents:{slug}:*", count=500))
            if keys:
                client.delete(*keys)
        client.delete(contract.reply_stream(f"sandbox:{sandbox.pk}"))
    finally:
        client.close()
    SandboxRun.objects.filter(pk=sandbox.pk).update(torn_down_at=timezone.now(), secrets={})
    sandbox.torn_down_at, sandbox.secrets = timezone.now(), {}


def sweep(older_than) -> list[int]:
    """Sandboxes no runner holds: pending ones are handed out again, running ones (their worker
    died) are torn down and marked, finished ones left standing are torn down."""
    now = timezone.now()
    done = []
    timeout = settings.FACTORY_SANDBOX_TIMEOUT_SECONDS
    stale = SandboxRun.objects.filter(torn_down_at__isnull=True, created_at__lte=now - older_than)
    for sandbox in stale.select_related("template")[:20]:
        if work.has_runner(SANDBOX_LOCK, sandbox.pk):
            continue
        if sandbox.status == SandboxRun.Status.PENDING:
            work.send(RUN_TASK, sandbox.pk)
        else:
            if sandbox.status == SandboxRun.Status.RUNNING:
                SandboxRun.objects.filter(pk=sandbox.pk, status=SandboxRun.Status.RUNNING).update(
                    status=SandboxRun.Status.ERROR, finished_at=now,
                    error="The worker running this sandbox stopped; it was torn down. Run it again.",
                )  # fmt: skip
            tear_down(sandbox)
        done.append(sandbox.pk)
    # Directories nobody records (a crash before the row knew its slugs): older than a timeout.
    root = sandbox_root()
    if root.is_dir():
        known = set(
            SandboxRun.objects.filter(torn_down_at__isnull=True).values_list("name", flat=True)
        )
        for directory in root.iterdir():
            name = directory.name
            if not name.startswith(PREFIX) or any(name.startswith(k) for k in known):
                continue
            if time.time() - directory.stat().st_mtime > timeout * 2:
                try:
                    runtime().remove_orphan(name)
                except Exception:  # noqa: BLE001
                    logger.warning("could not remove the sandbox leftover %s", name)
    return done
