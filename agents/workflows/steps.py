"""The engine's own step kinds: a task to an agent answered by its reply, a lifecycle action, a
wait (for a time or a condition), a person's approval, a sub-workflow, and a no-op.

Other apps add theirs with ``kinds.register_kind``; these are registered by ``register_all``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from agents.agentd import contract
from agents.choices import Health
from agents.lifecycle import ACTIONS_BY_NAME, State
from agents.models import Agent, Operation
from portal import roles, work

from .kinds import Done, Failed, Result, StepContext, StepKind, Wait, register_kind

# --- a task to an agent ----------------------------------------------------------------------

# KEYS: the sent marker, the agent's stream. ARGV: keep (s), then the task's field/value pairs.
# Adds the task once per marker and answers its id on the stream either way.
SEND_ONCE = """
local sent = redis.call('GET', KEYS[1])
if sent then return sent end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[1], id, 'EX', tonumber(ARGV[1]))
return id
"""
SENT_KEEP_SECONDS = 7 * 24 * 3600
REPLY_KEEP_SECONDS = 3600


def sent_marker(task_id: str) -> str:
    return f"workflows:sent:{task_id}"


def agent_redis():
    import redis

    return redis.Redis.from_url(settings.AGENT_REDIS_URL, decode_responses=True)


def find_agent(inputs: Mapping[str, Any]) -> Agent:
    """The agent a step names (``agent``: a slug) or the one with the capability it needs
    (``capability``; a running one first); ``LookupError`` says which is missing."""
    slug = str(inputs.get("agent") or "")
    agents = Agent.objects.exclude(state=State.REVOKED)
    if slug:
        agent = agents.filter(slug=slug).first()
        if agent is None:
            raise LookupError(f"There is no agent {slug!r} (or it was revoked).")
        return agent
    capability = str(inputs.get("capability") or "")
    found = sorted(
        agents.filter(capabilities__contains=[capability]),
        key=lambda agent: (agent.state != State.RUNNING, agent.slug),
    )
    if not found:
        raise LookupError(f"No agent has the capability {capability!r}.")
    return found[0]


class AgentTask(StepKind):
    """Put a task on an agent's stream with a reply stream, then wait for the reply."""

    name = "agent_task"
    title = "Task to an agent"
    side_effects = "sends the task to the agent again"

    def check(self, inputs: Mapping[str, Any]) -> None:
        if not inputs.get("agent") and not inputs.get("capability"):
            raise ValueError("an agent task names an agent or a capability")

    def describe(self, inputs: Mapping[str, Any]) -> str:
        who = inputs.get("agent") or f"the agent with {inputs.get('capability')}"
        return f"sends a task to {who}"

    def start(self, ctx: StepContext) -> Result:
        if not ctx.state.get("message_id"):
            try:
                agent = find_agent(ctx.inputs)
            except LookupError as exc:
                return Failed(str(exc))
            reply_to = contract.reply_stream(f"workflow-step:{ctx.step.pk}")
            payload = ctx.inputs.get("payload") or {}
            fields = {
                contract.FIELD_PRODUCER: f"workflow:{ctx.run.pk}",
                contract.FIELD_PAYLOAD: json.dumps(payload, separators=(",", ":")),
                contract.FIELD_SENT_AT: str(int(time.time() * 1000)),
                contract.FIELD_TASK_ID: ctx.task_id,
                contract.FIELD_REPLY_TO: reply_to,
            }
            customer = ctx.inputs.get("customer")
            if customer:
                fields[contract.FIELD_CUSTOMER] = str(customer)[:200]
            flat = [item for pair in fields.items() for item in pair]
            message_id = agent_redis().eval(
                SEND_ONCE, 2, sent_marker(ctx.task_id), contract.task_stream(agent.slug),
                SENT_KEEP_SECONDS, *flat,
            )  # fmt: skip
            ctx.save_state(
                agent=agent.slug, agent_name=agent.name, message_id=message_id, reply_to=reply_to,
                sent_at=time.time(),
            )  # fmt: skip
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        if not ctx.state.get("message_id"):  # not sent yet (Redis was away when it started)
            return self.start(ctx)
        client = agent_redis()
        reply = None
        for _id, fields in client.xrange(ctx.state["reply_to"], count=20):
            if fields.get(contract.REPLY_TASK_ID) == ctx.task_id:
                reply = fields
                break
        if reply is None:
            waited = time.time() - float(ctx.state.get("sent_at") or time.time())
            return Wait(
                min(2.0, 0.2 + waited / 10),
                f"Waiting for {ctx.state.get('agent_name', ctx.state.get('agent'))}'s reply.",
            )
        # Kept a while rather than deleted: should this worker die before the step's end is
        # committed, the next one reads the same reply instead of waiting for one that is gone.
        client.expire(ctx.state["reply_to"], REPLY_KEEP_SECONDS)
        try:
            output = json.loads(reply.get(contract.REPLY_OUTPUT) or "{}")
        except ValueError:
            output = {"text": reply.get(contract.REPLY_OUTPUT, "")}
        if not isinstance(output, dict):
            output = {"value": output}
        replica = reply.get(contract.REPLY_REPLICA, "")
        log = (
            f"Sent {ctx.state['message_id']} to {contract.task_stream(ctx.state['agent'])}; "
            f"{reply.get(contract.REPLY_STATUS)} by {replica} (agentd "
            f"{reply.get(contract.REPLY_VERSION, '?')}) after "
            f"{reply.get(contract.REPLY_ATTEMPTS, '1')} attempt(s), "
            f"{reply.get(contract.REPLY_DURATION_MS, '?')} ms."
        )
        if reply.get(contract.REPLY_STATUS) == contract.REPLY_SUCCEEDED:
            return Done(output, worker=replica, log=log, reply=dict(reply))
        error = reply.get(contract.REPLY_ERROR) or "The agent dead-lettered the task."
        return Failed(f"{ctx.state.get('agent_name')}: {error}", worker=replica, log=log,
                      reply=dict(reply))  # fmt: skip

    def cancel(self, ctx: StepContext) -> str:
        message_id = ctx.state.get("message_id")
        if not message_id:
            return ""
        client = agent_redis()
        stream = contract.task_stream(ctx.state["agent"])
        try:
            groups = client.xinfo_groups(stream)
        except Exception:
            return ""
        delivered = next(
            (g["last-delivered-id"] for g in groups if g["name"] == contract.CONSUMER_GROUP), "0-0"
        )
        if _stream_id(message_id) > _stream_id(delivered):
            client.xdel(stream, message_id)
            client.delete(ctx.state["reply_to"])
            return "Its task was taken off the agent's queue before delivery."
        return "The agent had already taken its task; a late reply is ignored."


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = str(text).partition("-")
    return int(ms or 0), int(seq or 0)


# --- a lifecycle action ----------------------------------------------------------------------


class LifecycleAction(StepKind):
    """Take an agent through a lifecycle action, as an ordinary ``Operation``."""

    name = "lifecycle"
    title = "Lifecycle action"
    side_effects = "takes the lifecycle action on the agent again"

    def check(self, inputs: Mapping[str, Any]) -> None:
        action = inputs.get("action")
        if action not in ACTIONS_BY_NAME and "${" not in str(action):
            raise ValueError(f"action {action!r} is not one of {', '.join(ACTIONS_BY_NAME)}")

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"{inputs.get('action')}s {inputs.get('agent')}"

    def start(self, ctx: StepContext) -> Result:
        from agents.bulk.runner import ACTION_SLOTS
        from agents.services.actions import request_action, run_operation
        from agents.services.refusals import ActionRefused

        operation_id = ctx.state.get("operation_id")
        if not operation_id:
            try:
                agent = find_agent(ctx.inputs)
                action = str(ctx.inputs.get("action"))
                if ctx.inputs.get("unless_state") and agent.state == ctx.inputs["unless_state"]:
                    return Done({"agent": agent.slug, "state": agent.state, "skipped": True})
                with transaction.atomic():
                    operation = request_action(
                        agent, action, ctx.actor, reason=f"workflow run #{ctx.run.pk}",
                        confirm=True, enqueue=False,
                    )  # fmt: skip
                    ctx.save_state(operation_id=str(operation.pk), agent=agent.slug)
                operation_id = str(operation.pk)
            except LookupError as exc:
                return Failed(str(exc), retryable=False)
            except (ActionRefused, PermissionDenied) as refused:
                code = getattr(refused, "code", "forbidden")
                return Failed(getattr(refused, "message", str(refused)), retryable=code == "busy")
        slot = work.take_slot(ACTION_SLOTS, settings.AGENT_MAX_CONCURRENT_ACTIONS)
        try:
            operation = run_operation(operation_id)
        finally:
            if slot is not None:
                work.free_slot(ACTION_SLOTS, slot)
        agent = Agent.objects.get(pk=operation.agent_id)  # as the action left it
        output = {
            "agent": agent.slug,
            "action": operation.action,
            "operation": str(operation.pk),
            "state": agent.state,
        }
        if operation.status == Operation.Status.SUCCEEDED:
            return Done(output, worker=agent.slug)
        ctx.save_state(operation_id="")  # the next attempt asks again
        return Failed(f"{operation.action} of {agent.name} failed: {operation.error}",
                      output=output)  # fmt: skip


# --- waiting ---------------------------------------------------------------------------------

CONDITIONS = ("agent_healthy", "queue_drained")


class WaitFor(StepKind):
    """Wait ``seconds``, or until a condition holds (``until``: agent_healthy or
    queue_drained, of ``agent``), checking every ``every`` seconds."""

    name = "wait"
    title = "Wait"
    side_effects = "nothing (it only waits)"

    def check(self, inputs: Mapping[str, Any]) -> None:
        until = inputs.get("until")
        if until and until not in CONDITIONS:
            raise ValueError(f"until {until!r} is not one of {', '.join(CONDITIONS)}")
        if not until and inputs.get("seconds") is None:
            raise ValueError("a wait names seconds or a condition (until)")

    def describe(self, inputs: Mapping[str, Any]) -> str:
        if inputs.get("until"):
            return f"waits until {inputs.get('agent')} is {inputs['until'].split('_')[1]}"
        return f"waits {inputs.get('seconds')} s"

    def start(self, ctx: StepContext) -> Result:
        if not ctx.inputs.get("until") and "until_ts" not in ctx.state:
            ctx.save_state(until_ts=time.time() + float(ctx.inputs.get("seconds") or 0))
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        until = ctx.inputs.get("until")
        every = float(ctx.inputs.get("every") or 1.0)
        if not until and "until_ts" not in ctx.state:
            return self.start(ctx)
        if not until:
            left = float(ctx.state["until_ts"]) - time.time()
            if left <= 0:
                return Done({"waited_seconds": ctx.inputs.get("seconds")})
            return Wait(left, f"Waiting {left:.0f} s more.")
        try:
            agent = find_agent(ctx.inputs)
        except LookupError as exc:
            return Failed(str(exc), retryable=False)
        if until == "agent_healthy":
            if agent.state == State.RUNNING and agent.health == Health.HEALTHY:
                return Done({"agent": agent.slug, "health": agent.health})
            return Wait(every, f"Waiting for {agent.name} to be healthy ({agent.health}).")
        left = _backlog(agent.slug)
        if left == 0:
            return Done({"agent": agent.slug, "backlog": 0})
        return Wait(every, f"Waiting for {agent.name}'s queue to drain ({left} left).")


def _backlog(slug: str) -> int:
    """Tasks on the agent's stream not yet delivered or not yet acknowledged."""
    client = agent_redis()
    stream = contract.task_stream(slug)
    try:
        groups = client.xinfo_groups(stream)
    except Exception:  # no stream yet: nothing to drain
        return 0
    for group in groups:
        if group["name"] == contract.CONSUMER_GROUP:
            return int(group.get("lag") or 0) + int(group.get("pending") or 0)
    return int(client.xlen(stream))


# --- a person's approval ---------------------------------------------------------------------


class Approval(StepKind):
    """Wait for a person of at least ``role`` (Operator by default) to approve or reject."""

    name = "approval"
    title = "Approval"
    side_effects = "asks for the approval again"

    def check(self, inputs: Mapping[str, Any]) -> None:
        if inputs.get("role", roles.OPERATOR) not in (roles.OPERATOR, roles.ADMIN):
            raise ValueError("an approval is given by an Operator or an Admin")

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"waits for an {inputs.get('role', roles.OPERATOR)}'s approval"

    def start(self, ctx: StepContext) -> Result:
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        decision = ctx.state.get("decision")
        if decision == "approved":
            return Done({"approved_by": ctx.state.get("by"), "note": ctx.state.get("note", "")})
        if decision == "rejected":
            return Failed(
                f"Rejected by {ctx.state.get('by')}: {ctx.state.get('note') or 'no reason given'}",
                retryable=False,
            )
        role = ctx.inputs.get("role", roles.OPERATOR)
        return Wait(60, f"Waiting for approval by an {role}.")


# --- a sub-workflow --------------------------------------------------------------------------


class SubWorkflow(StepKind):
    """Start another definition as a child run and wait for it."""

    name = "workflow"
    title = "Sub-workflow"
    side_effects = "starts the sub-workflow again (a new child run)"

    def check(self, inputs: Mapping[str, Any]) -> None:
        if not inputs.get("definition"):
            raise ValueError("a sub-workflow names its definition")

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"runs the workflow {inputs.get('definition')}"

    def start(self, ctx: StepContext) -> Result:
        from . import engine, registry
        from .models import WorkflowRun

        child = WorkflowRun.objects.filter(parent_step=ctx.step).first()
        if child is None:
            try:
                definition = registry.get(str(ctx.inputs["definition"]))
                parameters = definition.parse_parameters(ctx.inputs.get("parameters") or {})
            except Exception as exc:
                return Failed(str(exc), retryable=False)
            with transaction.atomic():
                child = engine.create_run(
                    definition, parameters, ctx.actor, subject_kind=ctx.run.subject_kind,
                    subject=ctx.run.subject, parent_step=ctx.step,
                )  # fmt: skip
            ctx.save_state(child=child.pk)
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        from .models import RunStatus, StepRun, WorkflowRun

        if not ctx.state.get("child"):
            return self.start(ctx)
        child = WorkflowRun.objects.get(pk=ctx.state["child"])
        if child.status == RunStatus.SUCCEEDED:
            outputs = dict(
                StepRun.objects.filter(run=child, current=True, role="forward").values_list(
                    "step_id", "output"
                )
            )
            return Done({"run": child.pk, "outputs": outputs})
        if child.status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.ROLLED_BACK):
            return Failed(f"Sub-workflow #{child.pk} {child.get_status_display().lower()}: "
                          f"{child.error}".strip())  # fmt: skip
        return Wait(1.0, f"Waiting for sub-workflow #{child.pk} ({child.progress} %).")

    def cancel(self, ctx: StepContext) -> str:
        from . import services
        from .models import WorkflowRun

        child = WorkflowRun.objects.filter(pk=int(ctx.state.get("child") or 0)).first()
        if child is None or child.is_finished:
            return ""
        services.cancel_internal(child, "its parent run was cancelled")
        return f"Sub-workflow #{child.pk} cancelled."


# --- a no-op ---------------------------------------------------------------------------------


class NoOp(StepKind):
    """Does nothing and answers its inputs (for tests, benchmarks and placeholders)."""

    name = "noop"
    title = "No-op"
    side_effects = "nothing"
    inline = True

    def start(self, ctx: StepContext) -> Result:
        return Done({**ctx.inputs, "at": timezone.now().isoformat()})


# --- a wave of the fleet ---------------------------------------------------------------------


def waves(agents: list[Agent]) -> list[list[Agent]]:
    """The agents grouped by dependency depth among themselves: wave 1 depends on none of the
    others, wave 2 only on wave 1, and so on."""
    from agents.services.graph import DependencyGraph

    graph = DependencyGraph.load()
    ids = {agent.pk for agent in agents}
    depth: dict[int, int] = {}

    def depth_of(agent_id: int, seen: frozenset = frozenset()) -> int:
        if agent_id not in depth:
            deps = [d for d in graph.edges.get(agent_id, ()) if d in ids and d not in seen]
            depth[agent_id] = 1 + max((depth_of(d, seen | {agent_id}) for d in deps), default=-1)
        return depth[agent_id]

    grouped: dict[int, list[Agent]] = {}
    for agent in sorted(agents, key=lambda a: a.slug):
        grouped.setdefault(depth_of(agent.pk), []).append(agent)
    return [grouped[d] for d in sorted(grouped)]


class RestartWave(StepKind):
    """Restart the running agents of one dependency wave (``wave``: 1, 2...; ``and_deeper``
    takes every wave after it too) as a bulk operation, and wait for it."""

    name = "restart_wave"
    title = "Restart a wave"
    side_effects = "restarts the wave's agents again"

    def check(self, inputs: Mapping[str, Any]) -> None:
        if int(inputs.get("wave", 0)) < 1:
            raise ValueError("waves are numbered from 1")

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"restarts the running agents of wave {inputs.get('wave')}"

    def start(self, ctx: StepContext) -> Result:
        from agents.bulk import create_bulk_operation

        if "bulk_id" not in ctx.state:
            running = list(Agent.objects.filter(state=State.RUNNING))
            grouped = waves(running)
            index = int(ctx.inputs["wave"]) - 1
            chosen = grouped[index:] if ctx.inputs.get("and_deeper") else grouped[index : index + 1]
            slugs = [agent.slug for wave in chosen for agent in wave]
            if not slugs:
                return Done({"agents": [], "note": "No running agent is in this wave."})
            try:
                with transaction.atomic():
                    operation = create_bulk_operation(
                        "restart", ctx.actor, targets=slugs,
                        reason=f"workflow run #{ctx.run.pk}, wave {index + 1}",
                    )  # fmt: skip
                    ctx.save_state(bulk_id=operation.pk, agents=slugs)
            except Exception as exc:
                return Failed(getattr(exc, "message", str(exc)))
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        from agents.models import BulkOperation

        if "bulk_id" not in ctx.state:
            return self.start(ctx)
        bulk = BulkOperation.objects.get(pk=ctx.state["bulk_id"])
        output = {"agents": ctx.state["agents"], "bulk": bulk.pk, "succeeded": bulk.succeeded,
                  "failed": bulk.failed}  # fmt: skip
        if not bulk.is_finished:
            return Wait(1.0, f"Restarting {', '.join(ctx.state['agents'])} (bulk #{bulk.pk}).")
        if bulk.failed:
            return Failed(f"{bulk.failed} of {bulk.total} restarts failed (bulk #{bulk.pk}).",
                          output=output, retryable=False)  # fmt: skip
        return Done(output)


def register_all() -> None:
    for kind in (
        AgentTask(),
        LifecycleAction(),
        WaitFor(),
        Approval(),
        SubWorkflow(),
        NoOp(),
        RestartWave(),
    ):
        register_kind(kind)
