"""Workflow definitions as data: a named, versioned DAG of steps with typed parameters, checked
when it is declared (so a bad definition fails at load, never half-way through a run).

A step names its kind, its inputs, the steps it comes after, a timeout, a retry policy, an
optional compensation (the step that undoes it, run in reverse order on roll-back) and an
optional deadline. Inputs may refer to the run's parameters (``"${params.customer_name}"``) and
to the outputs of steps it depends on, directly or not (``"${steps.provision.output.agent}"``);
a reference to anything else is refused here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from portal.refusals import BadRequest

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
REFERENCE = re.compile(r"\$\{([^}]*)\}")
PARAMETER_TYPES = ("str", "int", "float", "bool", "choice")
MAX_STEPS = 500
MAX_TEXT = 1000


class DefinitionError(ValueError):
    """A definition that cannot be run; the message names the definition and what is wrong."""


class ParameterError(BadRequest):
    """Parameters a run cannot start with (400); ``details["problems"]`` lists each one."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str = "str"
    required: bool = True
    default: Any = None
    choices: tuple[str, ...] = ()
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, value: Any) -> Any:
        """The value as this parameter's type; ``ValueError`` says what it should be."""
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError("must be true or false")
        if self.type in ("int", "float"):
            try:
                number = int(str(value).strip()) if self.type == "int" else float(str(value))
            except ValueError:
                raise ValueError(
                    f"must be {'a whole number' if self.type == 'int' else 'a number'}"
                ) from None
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError("must be a finite number")
            if self.minimum is not None and number < self.minimum:
                raise ValueError(f"must be at least {self.minimum:g}")
            if self.maximum is not None and number > self.maximum:
                raise ValueError(f"must be at most {self.maximum:g}")
            return number
        text = str(value)
        if "\x00" in text:
            raise ValueError("contains a NUL character")
        if len(text) > MAX_TEXT:
            raise ValueError(f"is longer than {MAX_TEXT} characters")
        if self.type == "choice" and text not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}")
        if self.required and not text.strip():
            raise ValueError("must not be empty")
        return text


@dataclass(frozen=True)
class Retry:
    """How often a failed step is tried in all, and the wait before each new attempt."""

    attempts: int = 1
    backoff_seconds: float = 1.0
    factor: float = 2.0
    max_backoff_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (2, 3, ...)."""
        return min(self.max_backoff_seconds, self.backoff_seconds * self.factor ** (attempt - 2))


@dataclass(frozen=True)
class Step:
    id: str
    kind: str
    title: str = ""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    timeout_seconds: int = 300
    retry: Retry = field(default_factory=Retry)
    compensation: Step | None = None
    deadline_seconds: int | None = None

    @property
    def label(self) -> str:
        return self.title or self.id.replace("_", " ").capitalize()


@dataclass(frozen=True)
class Definition:
    name: str
    version: int
    title: str
    steps: tuple[Step, ...]
    parameters: tuple[Parameter, ...] = ()
    description: str = ""
    deadline_seconds: int | None = None
    roll_back_on_failure: bool = False
    roll_back_on_deadline: bool = False
    max_parallel: int = 4
    # What a run is about, taken from a parameter: "agent" or "customer", and which parameter.
    subject_kind: str = ""
    subject_parameter: str = ""
    category: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "parameters", tuple(self.parameters))
        _check(self)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def step(self, step_id: str) -> Step:
        return next(step for step in self.steps if step.id == step_id)

    def layers(self) -> list[list[str]]:
        """The steps in dependency order, grouped by how deep they are (parallel branches share
        a layer); the order inside a layer is the declared one."""
        depth: dict[str, int] = {}
        for step in self.steps:  # declared after their dependencies (checked)
            depth[step.id] = 1 + max((depth[d] for d in step.after), default=-1)
        layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for step in self.steps:
            layers[depth[step.id]].append(step.id)
        return layers

    def ancestors(self, step_id: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.step(step_id).after)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.step(current).after)
        return seen

    def parse_parameters(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """The run's parameters checked against the definition; a ``ParameterError`` lists every
        problem at once (unknown names, missing ones, wrong types)."""
        values = dict(values or {})
        problems = [
            f"{name!r} is not a parameter of {self.title}"
            for name in sorted(set(values) - {p.name for p in self.parameters})
        ]
        parsed: dict[str, Any] = {}
        for parameter in self.parameters:
            if values.get(parameter.name) in (None, ""):
                if parameter.default is not None:
                    parsed[parameter.name] = parameter.default
                elif parameter.required:
                    problems.append(f"{parameter.name} is required")
                continue
            try:
                parsed[parameter.name] = parameter.parse(values[parameter.name])
            except ValueError as exc:
                problems.append(f"{parameter.name} {exc}")
        if problems:
            known = ", ".join(p.name for p in self.parameters) or "none"
            raise ParameterError(
                f"{self.title} cannot start: {'; '.join(problems)}. Its parameters: {known}.",
                "invalid",
                details={"problems": problems},
            )
        return parsed


def _check(definition: Definition) -> None:
    where = f"workflow {definition.name!r}"
    if not NAME.match(definition.name):
        raise DefinitionError(f"{where}: a name is lower case letters, digits, - and _")
    if definition.version < 1:
        raise DefinitionError(f"{where}: versions start at 1")
    if not definition.steps:
        raise DefinitionError(f"{where} has no steps")
    if len(definition.steps) > MAX_STEPS:
        raise DefinitionError(f"{where} has more than {MAX_STEPS} steps")
    if definition.max_parallel < 1:
        raise DefinitionError(f"{where}: max_parallel must be at least 1")
    names = [p.name for p in definition.parameters]
    for parameter in definition.parameters:
        if not NAME.match(parameter.name) or names.count(parameter.name) > 1:
            raise DefinitionError(f"{where}: parameter {parameter.name!r} is badly named or twice")
        if parameter.type not in PARAMETER_TYPES:
            raise DefinitionError(
                f"{where}: parameter {parameter.name!r} has type {parameter.type!r}; use one of "
                f"{', '.join(PARAMETER_TYPES)}"
            )
        if parameter.type == "choice" and not parameter.choices:
            raise DefinitionError(f"{where}: parameter {parameter.name!r} offers no choices")
    seen: set[str] = set()
    for step in definition.steps:
        here = f"{where}, step {step.id!r}"
        if not NAME.match(step.id) or step.id in seen:
            raise DefinitionError(f"{here}: ids are unique, lower case letters, digits, - and _")
        for dependency in step.after:
            if dependency not in seen:
                # Declared order is a topological order: this also refuses every cycle.
                raise DefinitionError(
                    f"{here} comes after {dependency!r}, which is not declared before it"
                )
        if step.timeout_seconds < 1 or step.retry.attempts < 1:
            raise DefinitionError(f"{here}: a timeout and at least one attempt are needed")
        seen.add(step.id)
        if step.compensation is not None and step.compensation.compensation is not None:
            raise DefinitionError(f"{here}: a compensation has no compensation of its own")
    for step in definition.steps:
        _check_references(definition, step, step.inputs, set(names))
        if step.compensation is not None:
            _check_references(definition, step, step.compensation.inputs, set(names), own=True)


def _check_references(
    definition: Definition,
    step: Step,
    inputs: Mapping[str, Any],
    parameters: set[str],
    own: bool = False,
) -> None:
    """Every ``${...}`` in the inputs names a parameter, or an output of a step this one comes
    after (a compensation may also read its own step's output)."""
    reachable = definition.ancestors(step.id) | ({step.id} if own else set())
    for text in _strings(inputs):
        for reference in REFERENCE.findall(text):
            parts = reference.split(".")
            if parts[0] == "params" and len(parts) == 2 and parts[1] in parameters:
                continue
            output = len(parts) >= 3 and parts[0] == "steps" and parts[2] == "output"
            if output and parts[1] in reachable:
                continue
            raise DefinitionError(
                f"workflow {definition.name!r}, step {step.id!r}: ${{{reference}}} names no "
                f"parameter and no output of a step it comes after"
            )


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


# --- inputs, filled in when a step starts ------------------------------------------------------


class InputError(ValueError):
    """A step's input refers to an output an earlier step did not produce."""


def resolve_inputs(value: Any, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
    """The step's inputs with every ``${params.x}`` and ``${steps.a.output.k}`` filled in. A
    string that is one reference keeps the value's type; references inside text become text."""
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole:
            return _lookup(whole.group(1), params, outputs)
        return REFERENCE.sub(lambda m: str(_lookup(m.group(1), params, outputs)), value)
    if isinstance(value, Mapping):
        return {k: resolve_inputs(v, params, outputs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_inputs(v, params, outputs) for v in value]
    return value


def _lookup(reference: str, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
    parts = reference.split(".")
    if parts[0] == "params":
        return params.get(parts[1])
    step_id, path = parts[1], parts[3:]
    value: Any = outputs.get(step_id, {})
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            raise InputError(f"${{{reference}}}: step {step_id!r} produced no {'.'.join(path)!r}")
        value = value[key]
    return value
