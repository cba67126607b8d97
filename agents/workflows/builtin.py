"""The definitions the portal ships with: customer onboarding, a fleet restart in dependency
waves, draining and stopping an agent, and a fleet smoke test (parallel branches). The factory,
servicing and the help desk register theirs the same way."""

from __future__ import annotations

from agents.catalog import PLATFORM_AGENTS

from . import registry
from .definitions import Definition, Parameter, Retry, Step

ONBOARDING = "customer-onboarding"
FLEET_RESTART = "fleet-restart"
DRAIN_AND_STOP = "drain-and-stop"
SMOKE_TEST = "fleet-smoke-test"


def _task(step_id: str, title: str, capability: str, action: str, **options) -> Step:
    """An onboarding step: a task to the agent with ``capability`` for the customer."""
    payload = {"action": action, "customer": "${params.customer_name}", "plan": "${params.plan}"}
    return Step(
        step_id, "agent_task", title=title,
        inputs={"capability": capability, "customer": "${params.customer_name}", "payload": payload},
        timeout_seconds=120, **options,
    )  # fmt: skip


def onboarding() -> Definition:
    undo = {"retry": Retry(attempts=3, backoff_seconds=2)}
    return Definition(
        name=ONBOARDING, version=1, title="Customer onboarding", category="Customers",
        description="Provision, configure, deploy, test and activate a new customer's agents; "
        "each step is a task to the agent whose capability it needs, and every step that "
        "changes something has a compensation that undoes it.",
        parameters=(
            Parameter("customer_name", help="The customer's company, e.g. Acme Corp."),
            Parameter("plan", "choice", required=False, default="trial",
                      choices=("trial", "standard", "enterprise"), help="Their plan."),
        ),
        steps=(
            _task("provision", "Provision", "agent-templating", "provision",
                  retry=Retry(attempts=3, backoff_seconds=2),
                  compensation=_task("deprovision", "Deprovision", "agent-templating", "deprovision", **undo)),
            _task("configure", "Configure", "domain-modeling", "configure", after=("provision",),
                  retry=Retry(attempts=3, backoff_seconds=2),
                  compensation=_task("unconfigure", "Remove configuration", "domain-modeling", "unconfigure", **undo)),
            _task("deploy", "Deploy", "autoscaling", "deploy", after=("configure",),
                  retry=Retry(attempts=3, backoff_seconds=2),
                  compensation=_task("undeploy", "Undeploy", "autoscaling", "undeploy", **undo)),
            _task("test", "Test", "quality-review", "test", after=("deploy",)),
            _task("activate", "Activate", "message-delivery", "activate", after=("test",),
                  retry=Retry(attempts=3, backoff_seconds=2),
                  compensation=_task("deactivate", "Deactivate", "message-delivery", "deactivate", **undo)),
        ),
        deadline_seconds=600, subject_kind="customer", subject_parameter="customer_name",
    )  # fmt: skip


def fleet_restart() -> Definition:
    waves = []
    for number in range(1, 5):
        waves.append(
            Step(
                f"wave-{number}", "restart_wave",
                title=f"Restart wave {number}" + (" and deeper" if number == 4 else ""),
                inputs={"wave": number, "and_deeper": number == 4},
                after=(f"wave-{number - 1}",) if number > 1 else (), timeout_seconds=900,
            )
        )  # fmt: skip
    return Definition(
        name=FLEET_RESTART, version=1, title="Fleet restart in dependency waves",
        category="Fleet", description="Restart every running agent, the ones nothing depends on "
        "first, one dependency wave at a time; a wave starts when the one before it is healthy.",
        steps=tuple(waves), deadline_seconds=1800, max_parallel=1,
    )  # fmt: skip


def drain_and_stop() -> Definition:
    return Definition(
        name=DRAIN_AND_STOP, version=1, title="Drain and stop an agent", category="Fleet",
        description="Wait until the agent's queue is empty (nothing waiting, nothing in "
        "flight), then stop it. Rolling back starts it again.",
        parameters=(
            Parameter("agent", help="The agent's slug, e.g. wow-cache."),
            Parameter("drain_minutes", "int", required=False, default=10, minimum=1, maximum=1440,
                      help="How long to wait for the queue to drain."),
        ),
        steps=(
            Step("healthy", "wait", title="Check it is healthy",
                 inputs={"until": "agent_healthy", "agent": "${params.agent}"}, timeout_seconds=60),
            Step("drain", "wait", title="Drain its queue", after=("healthy",),
                 inputs={"until": "queue_drained", "agent": "${params.agent}", "every": 1},
                 timeout_seconds=1440 * 60),
            Step("stop", "lifecycle", title="Stop it", after=("drain",),
                 inputs={"agent": "${params.agent}", "action": "stop"},
                 compensation=Step("start", "lifecycle", title="Start it again",
                                   inputs={"agent": "${params.agent}", "action": "start"})),
        ),
        subject_kind="agent", subject_parameter="agent",
    )  # fmt: skip


def smoke_test() -> Definition:
    pings = tuple(
        Step(
            f"ping-{agent.slug}", "agent_task", title=f"Ping {agent.name}",
            inputs={"agent": agent.slug, "payload": {"action": "ping"}}, timeout_seconds=60,
            retry=Retry(attempts=2, backoff_seconds=1),
        )
        for agent in PLATFORM_AGENTS
    )  # fmt: skip
    return Definition(
        name=SMOKE_TEST, version=1, title="Fleet smoke test", category="Fleet",
        description="Send a ping task to every Platform CoE agent, four at a time, and collect "
        "their replies; a step fails if its agent does not answer.",
        steps=(*pings, Step("report", "noop", title="Report", after=tuple(p.id for p in pings),
                            inputs={"answered": len(pings)})),
        deadline_seconds=300, max_parallel=4,
    )  # fmt: skip


def register_all() -> None:
    for make in (onboarding, fleet_restart, drain_and_stop, smoke_test):
        registry.register(make())
