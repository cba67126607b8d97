"""Creating an agent, as a workflow on the engine: every step visible, retryable from where it
failed, and undone by compensations when cancelled or when it fails for good.

    sandbox → register → provision → queue and storage → monitoring rules → deploy → start
            → wait ready → first successful task

The sandbox step reuses the draft's sandbox run when it passed with this very configuration,
and otherwise runs one: nothing is created for a configuration whose tests fail. ``register``
is undone by revoking the agent and releasing its name, ``queue`` by deleting its streams,
``monitoring`` by removing its rules; the rest are undone by the revoke.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from agents import services as agent_services
from agents.agentd import contract
from agents.models import Agent, State
from agents.services import ActionRefused, NewAgent
from agents.workflows import registry
from agents.workflows.definitions import Definition, Parameter, Retry, Step
from agents.workflows.kinds import Done, Failed, Result, StepContext, StepKind, Wait, register_kind
from agents.workflows.steps import AgentTask, LifecycleAction, agent_redis
from factory.models import Draft, SandboxRun
from factory.services import drafts, sandbox, validation
from portal import extensions

logger = logging.getLogger(__name__)

CREATE = "factory-create-agent"
DRAFT = "${params.draft}"
SLUG = "${params.slug}"


def definition() -> Definition:
    again = Retry(attempts=3, backoff_seconds=2)
    undo = Retry(attempts=5, backoff_seconds=3)
    return Definition(
        name=CREATE, version=1, title="Create an agent", category="Factory",
        description="The factory's creation of a new agent from a draft: sandbox, register, "
        "provision, queue and storage, monitoring, deploy, start, readiness and a first task.",
        parameters=(
            Parameter("draft", help="The draft's id."),
            Parameter("slug", help="The new agent's slug."),
            Parameter("keep_on_failure", "bool", required=False, default=False,
                      help="Keep what was made when a step fails for good, for debugging."),
        ),
        steps=(
            Step("sandbox", "factory_sandbox", title="Test in sandbox", inputs={"draft": DRAFT},
                 timeout_seconds=180),
            Step("register", "factory_register", title="Register the agent",
                 inputs={"draft": DRAFT}, after=("sandbox",),
                 compensation=Step("release", "factory_release", title="Revoke and release the name",
                                   inputs={"agent": SLUG}, retry=undo, timeout_seconds=180)),
            Step("provision", "lifecycle", title="Provision",
                 inputs={"agent": SLUG, "action": "provision"}, after=("register",), retry=again),
            Step("queue", "factory_queue", title="Queue and storage", inputs={"agent": SLUG},
                 after=("provision",), retry=again,
                 compensation=Step("drop-queue", "factory_drop_queue", title="Delete the queue",
                                   inputs={"agent": SLUG}, retry=undo)),
            Step("monitoring", "factory_monitoring", title="Monitoring rules",
                 inputs={"draft": DRAFT, "agent": SLUG}, after=("queue",),
                 compensation=Step("drop-rules", "factory_drop_rules", title="Remove the alert rules",
                                   inputs={"agent": SLUG}, retry=undo)),
            Step("deploy", "lifecycle", title="Deploy", inputs={"agent": SLUG, "action": "deploy"},
                 after=("monitoring",), retry=again, timeout_seconds=180),
            Step("start", "lifecycle", title="Start", inputs={"agent": SLUG, "action": "start"},
                 after=("deploy",), retry=again, timeout_seconds=180),
            Step("ready", "factory_ready", title="Wait until ready", inputs={"agent": SLUG},
                 after=("start",), timeout_seconds=120),
            Step("first-task", "factory_first_task", title="First successful task",
                 inputs={"draft": DRAFT, "agent": SLUG}, after=("ready",), retry=again,
                 timeout_seconds=60),
        ),
        deadline_seconds=300, roll_back_on_failure=True,
        subject_kind="agent", subject_parameter="slug", max_parallel=1,
    )  # fmt: skip


def _draft(ctx: StepContext) -> Draft:
    return Draft.objects.select_related("template").get(pk=ctx.inputs["draft"])


class SandboxStep(StepKind):
    name = "factory_sandbox"
    title = "Test in sandbox"
    side_effects = "runs the template's test tasks in a sandbox again (nothing of the fleet)"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "runs the template's test tasks against the configuration in a sandbox"

    def start(self, ctx: StepContext) -> Result:
        draft = _draft(ctx)
        sandbox_id = ctx.state.get("sandbox")
        if not sandbox_id:
            passed = passed_sandbox(draft)
            if passed is not None:
                return Done({"sandbox": passed.pk, "reused": True, "tests": len(passed.results)},
                            log=f"Sandbox #{passed.pk} passed with this configuration already.")  # fmt: skip
            run = sandbox.start_sandbox(
                draft.template, draft.values, draft.secrets, ctx.actor, draft=draft
            )
            ctx.save_state(sandbox=run.pk)
            sandbox_id = run.pk
        return self._check(int(sandbox_id))

    def poll(self, ctx: StepContext) -> Result:
        if not ctx.state.get("sandbox"):
            return self.start(ctx)
        return self._check(int(ctx.state["sandbox"]))

    def _check(self, sandbox_id: int) -> Result:
        run = SandboxRun.objects.get(pk=sandbox_id)
        if not run.finished:
            return Wait(1.0, f"Sandbox #{run.pk} is {run.status}.")
        output = {"sandbox": run.pk, "passed": run.passed_count, "tests": len(run.results),
                  "latency_p95_ms": run.latency_p95_ms}  # fmt: skip
        if run.status == SandboxRun.Status.PASSED:
            return Done(output, log=f"Sandbox #{run.pk}: {run.passed_count} test(s) passed.")
        return Failed(f"Sandbox #{run.pk}: {run.error}", output=output, retryable=False)


class Register(StepKind):
    name = "factory_register"
    title = "Register the agent"
    side_effects = "nothing new (the agent registered before is kept)"
    inline = True

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "adds the agent to the registry in DRAFT, with its dependencies and secrets"

    def start(self, ctx: StepContext) -> Result:
        draft = _draft(ctx)
        values = draft.values
        if ctx.state.get("agent") and Agent.objects.filter(slug=ctx.state["agent"]).exists():
            return Done({"agent": ctx.state["agent"]})
        errors = validation.validate(draft.template, values, draft.secrets, creating=draft)
        if errors:
            return Failed("; ".join(f"{e.field}: {e.message}" for e in errors[:5]), retryable=False)
        resources = values["resources"]
        new = NewAgent(
            slug=values["slug"], name=values["name"], description=values.get("description", ""),
            tier=values["tier"], owner_team=values.get("owner", ""),
            capabilities=tuple(values.get("capabilities") or ()),
            specializations=tuple(values.get("specializations") or ()),
            dependencies=tuple(drafts.dependencies_of(draft.template, values)),
            cpu_millicores=resources["cpu_millicores"], memory_mb=resources["memory_mb"],
            storage_mb=resources["storage_mb"], replicas=resources["replicas"],
            config=drafts.agent_config(draft.template, values),
            environment=dict(values.get("environment") or {}), secrets=dict(draft.secrets),
            template=draft.template.label,
        )  # fmt: skip
        try:
            with transaction.atomic():
                agent = agent_services.register_agent(new, ctx.actor)
                # A Customer-tier agent whose owner names a help-desk customer is theirs.
                extensions.lookup(
                    "link_customer_agent", agent=agent, owner=new.owner_team, actor=ctx.actor
                )
                ctx.save_state(agent=agent.slug)
        except ActionRefused as refused:
            return Failed(refused.message, retryable=False)
        return Done({"agent": agent.slug, "state": agent.state, "template": new.template})


class Release(StepKind):
    """Undo ``register``: revoke the agent (which tears down what the runtime made) and free its
    slug and name."""

    name = "factory_release"
    title = "Revoke and release the name"
    side_effects = "revokes the agent if it is not revoked yet"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"revokes {inputs.get('agent')} and frees its name"

    def start(self, ctx: StepContext) -> Result:
        agent = Agent.objects.filter(slug=ctx.inputs["agent"]).first()
        if agent is None:
            return Done({"released": False}, log="No agent by that slug: nothing to undo.")
        if agent.state not in (State.DRAFT, State.REVOKED):
            revoke = StepContext(ctx.run, ctx.step, {"agent": agent.slug, "action": "revoke"},
                                 ctx.actor, ctx.save_state)  # fmt: skip
            result = LifecycleAction().start(revoke)
            if not isinstance(result, Done):
                return result
            agent.refresh_from_db()
        try:
            done = agent_services.release_agent(agent, ctx.actor, f"workflow run #{ctx.run.pk}")
        except ActionRefused as refused:
            return Failed(refused.message)
        return Done({"released": True}, log=done)


class Queue(StepKind):
    name = "factory_queue"
    title = "Queue and storage"
    side_effects = "nothing new (the stream and group made before are kept)"
    inline = True

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"creates {contract.task_stream(str(inputs.get('agent')))}, its consumer group and dead-letter stream"  # fmt: skip

    def start(self, ctx: StepContext) -> Result:
        slug = str(ctx.inputs["agent"])
        client = agent_redis()
        stream, dead = contract.task_stream(slug), contract.dead_letters(slug)
        try:
            try:
                client.xgroup_create(stream, contract.CONSUMER_GROUP, id="0", mkstream=True)
            except Exception as exc:  # noqa: BLE001 - BUSYGROUP: made by an earlier attempt
                if "BUSYGROUP" not in str(exc):
                    raise
            if not client.exists(dead):
                # An empty stream: add and delete one entry (Redis keeps the empty stream).
                first = client.xadd(dead, {"created": "factory"})
                client.xdel(dead, first)
        finally:
            client.close()
        agent = Agent.objects.get(slug=slug)
        storage = agent.runtime_details.get("data_dirs") or agent.runtime_details.get("volume")
        return Done({"stream": stream, "group": contract.CONSUMER_GROUP, "dead_letters": dead,
                     "storage": storage or f"{agent.storage_mb} MiB on the {agent.runtime} runtime"})  # fmt: skip


class DropQueue(StepKind):
    name = "factory_drop_queue"
    title = "Delete the queue"
    side_effects = "deletes the agent's streams again"
    inline = True

    def start(self, ctx: StepContext) -> Result:
        slug = str(ctx.inputs["agent"])
        client = agent_redis()
        try:
            keys = list(client.scan_iter(match=f"agents:{slug}:*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
        return Done({"deleted_keys": len(keys)})


class Monitoring(StepKind):
    name = "factory_monitoring"
    title = "Monitoring rules"
    side_effects = "nothing new (rules made before are kept)"
    inline = True

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "adds the template's alert rules for the agent"

    def start(self, ctx: StepContext) -> Result:
        from observability import agent_rules

        draft = _draft(ctx)
        agent = Agent.objects.get(slug=ctx.inputs["agent"])
        ids = agent_rules.add_agent_rules(agent, list(draft.template.alert_rules), ctx.actor)
        ctx.save_state(rules=ids)
        return Done({"rules": ids, "names": [drafts.rule_name(agent.name, r) for r in draft.template.alert_rules]})  # fmt: skip


class DropRules(StepKind):
    name = "factory_drop_rules"
    title = "Remove the alert rules"
    side_effects = "removes the rules again"
    inline = True

    def start(self, ctx: StepContext) -> Result:
        from agents.workflows.models import StepRun
        from observability import agent_rules

        made = (
            StepRun.objects.filter(run=ctx.run, step_id="monitoring", role="forward", status="succeeded")
            .order_by("-pk").values_list("output", flat=True).first()
        )  # fmt: skip
        ids = list((made or {}).get("rules") or [])
        removed = agent_rules.remove_agent_rules(str(ctx.inputs["agent"]), ids, ctx.actor)
        return Done({"removed": removed})


class Ready(StepKind):
    """Probe the new agent's replicas (``/healthz`` and ``/readyz``) until every one is ready,
    recording its health as the monitor would; a creation does not wait for the monitor's
    next round."""

    name = "factory_ready"
    title = "Wait until ready"
    side_effects = "nothing (it only probes)"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"probes {inputs.get('agent')} until every replica is ready"

    def start(self, ctx: StepContext) -> Result:
        from agents.models import Health
        from agents.placement import probe

        agent = Agent.objects.filter(slug=ctx.inputs["agent"]).first()
        if agent is None:
            return Failed(f"No agent {ctx.inputs['agent']}.", retryable=False)
        if agent.state != State.RUNNING:
            return Failed(f"{agent.name} is {agent.state}, not RUNNING.", retryable=False)
        health, detail = probe(agent)
        agent_services.record_health(agent, health, detail)
        if health == Health.HEALTHY:
            return Done({"agent": agent.slug, "health": health, "replicas": agent.replicas})
        return Wait(1.0, f"{agent.name} is {health}: {detail or 'not ready yet'}.")


class FirstTask(AgentTask):
    """The new agent's first task (the template's test marked ``first_task``, else its first),
    whose reply must hold what the test expects."""

    name = "factory_first_task"
    title = "First successful task"

    def check(self, inputs: Mapping[str, Any]) -> None:
        if not inputs.get("agent"):
            raise ValueError("the first task names its agent")

    def start(self, ctx: StepContext) -> Result:
        if not ctx.state.get("expect_set"):
            test = first_test(_draft(ctx))
            ctx.save_state(payload=test.get("payload") or {}, expect=test.get("expect") or {},
                           test=test.get("name", ""), expect_set=True)  # fmt: skip
        ctx.inputs = {**ctx.inputs, "payload": ctx.state["payload"]}
        return super().start(ctx)

    def poll(self, ctx: StepContext) -> Result:
        result = super().poll(ctx)
        if isinstance(result, Done):
            problems = sandbox.differences(ctx.state.get("expect") or {}, dict(result.output))
            if problems:
                return Failed(f"The reply to {ctx.state.get('test')!r} is not what it should be: "
                              + "; ".join(problems), output=result.output, log=result.log,
                              reply=result.reply)  # fmt: skip
        return result


def first_test(draft: Draft) -> dict[str, Any]:
    tests = list(draft.template.test_tasks)
    return next((t for t in tests if t.get("first_task")), tests[0] if tests else {"payload": {}})


def passed_sandbox(draft: Draft) -> SandboxRun | None:
    """The draft's latest sandbox run if it passed with the configuration the draft has now."""
    latest = draft.sandboxes.order_by("-created_at").first()
    if latest is None or latest.status != SandboxRun.Status.PASSED:
        return None
    return latest if sandbox_matches(latest, draft) else None


def sandbox_matches(run: SandboxRun, draft: Draft) -> bool:
    config = run.config or {}
    now = {
        "agent": drafts.agent_config(draft.template, draft.values),
        "environment": dict(draft.values.get("environment") or {}),
        "secret_names": sorted(draft.secrets),
        "secrets_digest": sandbox.secrets_digest(draft.secrets),
    }
    return all(
        json.dumps(config.get(key), sort_keys=True) == json.dumps(value, sort_keys=True)
        for key, value in now.items()
    )


def register_all() -> None:
    for kind in (SandboxStep(), Register(), Release(), Queue(), DropQueue(), Monitoring(),
                 DropRules(), Ready(), FirstTask()):  # fmt: skip
        register_kind(kind)
    registry.register(definition())
