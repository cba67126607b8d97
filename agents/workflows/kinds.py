"""Step kinds: what a step of a given kind does, registered by name.

The engine knows a kind only through this interface, so the factory, servicing and the help
desk add theirs (``register_kind`` from their ``AppConfig.ready``) and the engine imports none of
them. A kind is started once per attempt and then polled until it answers:

- ``Done(output)``: the step succeeded with this output (a JSON object);
- ``Failed(error)``: this attempt failed; the step's retry policy decides what comes next;
- ``Wait(seconds, detail)``: not yet; ask again in ``seconds`` (a reply not in yet, a condition
  that does not hold yet, an approval nobody gave yet).

``start`` may be called again for the same attempt after a worker died part-way, so a kind with
side effects records what it did in ``ctx.state`` (``ctx.save_state``, committed at once) before
or as it does it, and does not do it twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portal.actors import Actor

    from .models import StepRun, WorkflowRun


@dataclass(frozen=True)
class Done:
    output: Mapping[str, Any] = field(default_factory=dict)
    worker: str = ""
    log: str = ""
    reply: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    error: str
    output: Mapping[str, Any] = field(default_factory=dict)
    worker: str = ""
    log: str = ""
    reply: Mapping[str, Any] = field(default_factory=dict)
    # False when another attempt cannot help (the input names no agent): no retry.
    retryable: bool = True


@dataclass(frozen=True)
class Wait:
    seconds: float
    detail: str = ""


Result = Done | Failed | Wait


@dataclass
class StepContext:
    """What a kind sees of the step it runs: the resolved inputs, its bookkeeping, and the run."""

    run: WorkflowRun
    step: StepRun
    inputs: dict[str, Any]
    actor: Actor
    save_state: Callable[..., None]

    @property
    def state(self) -> dict[str, Any]:
        return self.step.state

    @property
    def task_id(self) -> str:
        """An id for this attempt of this step, the same however often ``start`` is called."""
        role = "c" if self.step.role == "compensation" else ""
        return f"wf{self.run.pk}-{role}{self.step.step_id}-a{self.step.attempt}"


class StepKind:
    """Base of every kind. ``side_effects`` tells a person what repeats when the step runs
    again (shown in the retry preview); ``inline`` kinds answer at once, so the engine may run
    the next such step in the same worker task instead of queueing a new one."""

    name: str = ""
    title: str = ""
    side_effects: str = ""
    inline: bool = False

    def check(self, inputs: Mapping[str, Any]) -> None:
        """Refuse inputs this kind can never run with (``ValueError``), when a definition is
        registered."""

    def start(self, ctx: StepContext) -> Result:
        raise NotImplementedError

    def poll(self, ctx: StepContext) -> Result:
        return self.start(ctx)

    def cancel(self, ctx: StepContext) -> str:
        """Ask the running step to stop; answers what was done ("" when nothing could be)."""
        return ""

    def describe(self, inputs: Mapping[str, Any]) -> str:
        """One line for previews: what this step does with these inputs."""
        return self.title


_KINDS: dict[str, StepKind] = {}


class UnknownKind(LookupError):
    pass


def register_kind(kind: StepKind) -> None:
    if not kind.name:
        raise ValueError("a step kind needs a name")
    _KINDS[kind.name] = kind


def kind(name: str) -> StepKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownKind(
            f"no step kind {name!r} is registered; known: {', '.join(sorted(_KINDS))}"
        ) from None


def kinds() -> dict[str, StepKind]:
    return dict(_KINDS)
