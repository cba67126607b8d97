"""How the portal reads a failure: one table of rules, first match wins.

Each rule looks at the ``Signals`` of a failure (what the runtime said, the exit, the agent's
dependencies and recent changes) and gives a classification (transient, permanent,
configuration, dependency, resource), a root-cause sentence, ranked suggestions (one-click
recoveries and manual steps) and the pattern the failure is grouped under. Adding a rule is
adding a ``Rule`` to ``RULES``; tests/agents/test_error_rules.py checks each case.
"""

from __future__ import annotations

import signal as signals_module
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.agentd import contract
from agents.models import ErrorClass
from portal import extensions

# The one-click recoveries, with the button's words.
RECOVERIES = {
    "restart": "Restart",
    "restart_with_dependencies": "Restart with its dependencies",
    "start_dependencies": "Start the dependencies",
    "rollback_config": "Roll back the config",
    "pick_new_port": "Pick another port and start",
    "raise_memory": "Raise the memory limit and restart",
    "reconcile": "Reconcile with the runtime",
}


@dataclass(frozen=True)
class Signals:
    """Everything known about one failure, gathered by ``agents.errors``."""

    agent: str  # the agent's name
    source: str  # action, crash, health, runtime
    agent_slug: str = ""
    reason: str = ""  # the runtime's failure reason (port_in_use, oom, bad_config, ...)
    action: str = ""  # the lifecycle action that failed, if one did
    message: str = ""
    exit_code: int | None = None
    signal: int | None = None
    oom: bool = False
    port: int | None = None
    holder: str = ""  # who holds the port
    runtime: str = "local"
    version: str = ""
    memory_mb: int = 0
    memory_ceiling_mb: int = 0
    dependencies_down: tuple[tuple[str, str], ...] = ()  # (name, state)
    config_changed_minutes_ago: float | None = None  # None: not changed lately
    has_previous_config: bool = False
    recent_crashes: int = 0  # crashes in the last 10 minutes, this one included
    crash_loop_after: int = 3  # that many crashes make a crash loop (beyond the restart policy)
    readiness: str = ""  # the last readiness answer
    config_complaint: str = ""  # what agentd said of its config ("task_max_failures must be ...")
    dead_lettered: int = 0  # tasks given up on since the last look
    last_task_error: str = ""
    queue: str = ""
    dead_letter_group: str = ""  # the newest dead letter's error fingerprint
    drift: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suggestion:
    label: str
    text: str
    action: str = ""  # a key of RECOVERIES, or "" for a step a person takes
    href: str = ""  # where the step is taken, when a page does it

    def as_dict(self) -> dict:
        return {"label": self.label, "text": self.text, "action": self.action, "href": self.href}


@dataclass(frozen=True)
class Rule:
    name: str
    classification: str
    matches: Callable[[Signals], bool]
    cause: Callable[[Signals], str]
    suggest: Callable[[Signals], list[Suggestion]]
    pattern: Callable[[Signals], str]


@dataclass(frozen=True)
class Diagnosis:
    rule: str
    classification: str
    root_cause: str
    suggestions: list[Suggestion] = field(default_factory=list)
    pattern: str = ""

    @property
    def signature(self) -> str:
        return f"{self.rule}:{self.pattern}"[:200]


# --- small helpers ------------------------------------------------------------------------------


def _signal_name(number: int | None) -> str:
    try:
        return signals_module.Signals(number).name if number else ""
    except ValueError:
        return f"signal {number}"


def _exit_words(s: Signals) -> str:
    if s.signal:
        return f"killed by {_signal_name(s.signal)} (exit code {128 + int(s.signal)})"
    if s.exit_code is not None:
        return f"exit code {s.exit_code}"
    return "no exit code"


def _names(pairs: tuple[tuple[str, str], ...]) -> str:
    parts = [f"{name} ({state})" for name, state in pairs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _config_changed(s: Signals, within_minutes: float = 60) -> bool:
    return (
        s.config_changed_minutes_ago is not None and s.config_changed_minutes_ago <= within_minutes
    )


def _since_config(s: Signals) -> str:
    if not _config_changed(s):
        return ""
    minutes = s.config_changed_minutes_ago or 0
    whole = round(minutes)
    ago = "less than a minute" if minutes < 1 else f"{whole} minute{'s' if whole != 1 else ''}"
    return f" Its config was changed {ago} ago."


def _restart(
    text: str = "Stop and start it again; enough when the cause has passed.",
) -> Suggestion:
    return Suggestion(RECOVERIES["restart"], text, "restart")


def _rollback(s: Signals) -> list[Suggestion]:
    if not s.has_previous_config:
        return []
    return [
        Suggestion(
            RECOVERIES["rollback_config"],
            "Put back the config it had before the last change, then start it.",
            "rollback_config",
        )
    ]


def _read_log(s: Signals) -> Suggestion:
    return Suggestion(
        "Read the log lines",
        f"The evidence below is the end of {s.agent}'s log before the failure.",
    )


# --- the rules, in order: the first that matches wins ------------------------------------------------

RULES: list[Rule] = [
    Rule(
        "engine_unreachable",
        ErrorClass.TRANSIENT,
        lambda s: s.reason == "engine_unreachable",
        lambda s: (
            f"The {s.runtime} engine did not answer, so nothing could be done to {s.agent}: "
            f"{s.message}"
        ),
        lambda s: [
            _restart("Try again once the engine answers."),
            Suggestion(
                "Check the engine",
                "On the host: `systemctl status docker` or `docker info` (Kubernetes: "
                "`kubectl cluster-info`).",
            ),
        ],
        lambda s: f"{s.runtime} engine unreachable",
    ),
    Rule(
        "image_missing",
        ErrorClass.CONFIGURATION,
        lambda s: s.reason == "image_missing",
        lambda s: f"The image for {s.agent} version {s.version} is not on the engine.",
        lambda s: [
            Suggestion(
                "Build the image",
                f"`manage.py agents build-image --version {s.version}`, then deploy again.",
            )
        ],
        lambda s: "agent image missing",
    ),
    Rule(
        "drift",
        ErrorClass.CONFIGURATION,
        lambda s: bool(s.drift),
        lambda s: f"The runtime no longer matches the portal for {s.agent}: {'; '.join(s.drift)}",
        lambda s: [
            Suggestion(
                RECOVERIES["reconcile"],
                "Make the runtime match the portal, then start it if it should run.",
                "reconcile",
            )
        ],
        lambda s: "drift",
    ),
    Rule(
        "task_failures",
        ErrorClass.PERMANENT,
        lambda s: s.reason == "task_failures",
        lambda s: (
            f"{s.agent}'s tasks keep failing: {s.dead_lettered} "
            f"{'was' if s.dead_lettered == 1 else 'were'} given up on after every retry and moved to "
            f"{s.queue} (last error: {s.last_task_error or 'not recorded'}).{_since_config(s)}"
        ),
        lambda s: (
            (_rollback(s) if _config_changed(s) else [])
            + [
                Suggestion(
                    "Look at the failed tasks",
                    "The dead-letter panel shows them grouped by error, with every attempt; fix "
                    "what they need, then retry the group (or edit one and retry it).",
                    href=extensions.link(
                        "dead_letters", agent=s.agent_slug, group=s.dead_letter_group
                    ),
                ),
                _restart("If the failures came from the agent's state rather than the tasks."),
            ]
        ),
        lambda s: "tasks failing",
    ),
    Rule(
        "port_in_use",
        ErrorClass.RESOURCE,
        lambda s: s.reason == "port_in_use",
        lambda s: (
            f"Port {s.port} is held by {s.holder or 'another program'}, so {s.agent} "
            "cannot listen on it."
        ),
        lambda s: (
            (
                [
                    Suggestion(
                        RECOVERIES["pick_new_port"],
                        "Give the agent a free port and start it there.",
                        "pick_new_port",
                    )
                ]
                if s.runtime == "local"
                else []
            )
            + [
                Suggestion(
                    "Free the port",
                    f"Stop {s.holder or 'whatever holds the port'} (`ss -ltnp 'sport = :{s.port}'` "
                    "shows it), then restart the agent.",
                ),
                _restart("Once the port is free."),
            ]
        ),
        lambda s: f"port {s.port} in use",
    ),
    Rule(
        "out_of_memory",
        ErrorClass.RESOURCE,
        lambda s: s.oom or s.reason == "oom",
        lambda s: (
            f"{s.agent} used more memory than its {s.memory_mb} MiB limit and was killed "
            "(out of memory). Restarting it as it is would only repeat that."
        ),
        lambda s: (
            (
                [
                    Suggestion(
                        RECOVERIES["raise_memory"],
                        f"Raise its limit to {raised_memory(s.memory_mb, s.memory_ceiling_mb)} MiB "
                        f"(the ceiling is {s.memory_ceiling_mb} MiB) and start it again.",
                        "raise_memory",
                    )
                ]
                if raised_memory(s.memory_mb, s.memory_ceiling_mb) > s.memory_mb
                else []
            )
            + _rollback(s)
            + [
                Suggestion(
                    "Look for a leak",
                    "Memory that grows with every task points at the agent's work, not its limit.",
                )
            ]
        ),
        lambda s: "out of memory",
    ),
    Rule(
        "bad_config",
        ErrorClass.CONFIGURATION,
        lambda s: s.reason == "bad_config" or s.exit_code == contract.EXIT_BAD_CONFIG,
        lambda s: (
            (
                f"{s.agent} refused its configuration: {s.config_complaint}."
                if s.config_complaint
                else s.message
                if "refused its configuration" in s.message
                else f"{s.agent} refused its configuration: {s.message}"
            )
            + _since_config(s)
        ),
        lambda s: (
            _rollback(s)
            + [
                Suggestion(
                    "Correct the config",
                    f"Edit {s.agent}'s config in the admin (Agents → {s.agent}); the message says "
                    "which value is wrong.",
                )
            ]
        ),
        lambda s: "configuration refused",
    ),
    Rule(
        "not_ready_after_config_change",
        ErrorClass.CONFIGURATION,
        lambda s: (s.reason == "not_ready" or bool(s.readiness)) and _config_changed(s),
        lambda s: (
            f"{s.agent} does not become ready since its config changed"
            f"{(': ' + s.readiness) if s.readiness else ''}.{_since_config(s)}"
        ),
        lambda s: _rollback(s) + [_restart("If the config is right after all."), _read_log(s)],
        lambda s: "not ready after a config change",
    ),
    Rule(
        "dependency_down",
        ErrorClass.DEPENDENCY,
        lambda s: bool(s.dependencies_down),
        lambda s: (
            f"{s.agent} depends on {_names(s.dependencies_down)}, which "
            f"{'is' if len(s.dependencies_down) == 1 else 'are'} not running."
        ),
        lambda s: [
            Suggestion(
                RECOVERIES["start_dependencies"],
                f"Bring {_names(s.dependencies_down)} up, then {s.agent} if it is not running.",
                "start_dependencies",
            ),
            Suggestion(
                RECOVERIES["restart_with_dependencies"],
                f"Bring the dependencies up, then restart {s.agent}.",
                "restart_with_dependencies",
            ),
        ],
        lambda s: "dependency down: " + ", ".join(name for name, _ in s.dependencies_down),
    ),
    Rule(
        "not_ready",
        ErrorClass.TRANSIENT,
        lambda s: s.reason == "not_ready" or bool(s.readiness),
        lambda s: (
            f"{s.agent} is alive but not ready for work"
            f"{(': ' + s.readiness) if s.readiness else ''}."
        ),
        lambda s: [_restart(), _read_log(s)],
        lambda s: "not ready",
    ),
    Rule(
        "crash_loop",
        ErrorClass.PERMANENT,
        lambda s: s.source == "crash" and s.recent_crashes >= s.crash_loop_after,
        lambda s: (
            f"{s.agent} crashed {s.recent_crashes} times in 10 minutes ({_exit_words(s)}); "
            "restarting it again will not help until the cause is fixed."
        ),
        lambda s: _rollback(s) + [_read_log(s), _restart("Once the cause is fixed.")],
        lambda s: f"crash loop ({_exit_words(s)})",
    ),
    Rule(
        "killed",
        ErrorClass.TRANSIENT,
        lambda s: s.signal in (signals_module.SIGKILL, signals_module.SIGTERM),
        lambda s: (
            f"{s.agent} was {_exit_words(s)} by something outside the portal (an operator, "
            "a script or the system); nothing points at the agent itself."
        ),
        lambda s: [_restart()],
        lambda s: f"killed by {_signal_name(s.signal)}",
    ),
    Rule(
        "crashed_on_start",
        ErrorClass.TRANSIENT,
        lambda s: s.reason == "crashed_on_start",
        lambda s: f"{s.agent} ended while starting ({_exit_words(s)}): {s.message}",
        lambda s: [_restart(), _read_log(s)] + _rollback(s),
        lambda s: f"ended while starting ({_exit_words(s)})",
    ),
    Rule(
        "exited",
        ErrorClass.TRANSIENT,
        lambda s: s.source == "crash" or s.exit_code is not None,
        lambda s: f"{s.agent}'s process ended on its own ({_exit_words(s)}).",
        lambda s: [_restart(), _read_log(s)],
        lambda s: f"exited ({_exit_words(s)})",
    ),
    Rule(
        "unhealthy",
        ErrorClass.TRANSIENT,
        lambda s: s.source == "health",
        lambda s: f"{s.agent} fails its health checks: {s.message or 'no answer'}.",
        lambda s: [_restart(), _read_log(s)],
        lambda s: "failing health checks",
    ),
    Rule(
        "unknown",
        ErrorClass.TRANSIENT,
        lambda s: True,
        lambda s: s.message or f"{s.agent} failed for a reason the portal does not recognise.",
        lambda s: [_restart(), _read_log(s)],
        lambda s: s.reason or s.source,
    ),
]


def raised_memory(memory_mb: int, ceiling_mb: int) -> int:
    """The next memory limit a one-click raise gives: double, capped by the ceiling."""
    return min(max(memory_mb * 2, memory_mb + 128), ceiling_mb)


def diagnose(signals: Signals) -> Diagnosis:
    for rule in RULES:
        if rule.matches(signals):
            return Diagnosis(
                rule=rule.name,
                classification=str(rule.classification),
                root_cause=rule.cause(signals),
                suggestions=rule.suggest(signals),
                pattern=rule.pattern(signals),
            )
    raise AssertionError("the last rule matches everything")  # pragma: no cover
