"""The definitions people can start, by name and version (the newest version unless asked).

Apps register theirs from ``AppConfig.ready``; registering checks every step's kind is known
and its inputs are ones the kind can run with, so a bad definition fails at start-up.
"""

from __future__ import annotations

from portal.refusals import Refused

from .definitions import Definition, DefinitionError, Step
from .kinds import UnknownKind, kind

_DEFINITIONS: dict[str, dict[int, Definition]] = {}


class UnknownDefinition(Refused):
    default_status = 404
    default_code = "not_found"


def register(definition: Definition) -> Definition:
    for step in definition.steps:
        _check_kind(definition, step)
        if step.compensation is not None:
            _check_kind(definition, step.compensation)
    _DEFINITIONS.setdefault(definition.name, {})[definition.version] = definition
    return definition


def _check_kind(definition: Definition, step: Step) -> None:
    where = f"workflow {definition.name!r}, step {step.id!r}"
    try:
        kind(step.kind).check(step.inputs)
    except UnknownKind as exc:
        raise DefinitionError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise DefinitionError(f"{where}: {exc}") from None


def get(name: str, version: int | None = None) -> Definition:
    versions = _DEFINITIONS.get(str(name))
    if not versions:
        known = ", ".join(sorted(_DEFINITIONS)) or "none"
        raise UnknownDefinition(
            f"There is no workflow definition {str(name)[:80]!r}; the definitions are: {known}."
        )
    if version is None:
        return versions[max(versions)]
    try:
        return versions[version]
    except KeyError:
        raise UnknownDefinition(
            f"{name!r} has no version {version}; its versions are "
            f"{', '.join(str(v) for v in sorted(versions))}."
        ) from None


def definitions() -> list[Definition]:
    """The newest version of every definition, by title."""
    return sorted(
        (versions[max(versions)] for versions in _DEFINITIONS.values()), key=lambda d: d.title
    )


def versions(name: str) -> list[Definition]:
    return [v for _, v in sorted(_DEFINITIONS.get(name, {}).items())]
