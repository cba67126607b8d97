"""Small validators for settings and payloads, in the words of agentd's config errors.

Each takes the key as it should be shown (``settings.targets[1].port``) and raises
:class:`Invalid` naming it, or answers the value. A key whose value is ``null`` counts as absent
(:func:`value_of`), as in the rest of agentd's config.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from .base import Invalid


def show(value: object) -> str:
    """A value as it appears in a message: JSON, so strings are quoted and null is null."""
    return json.dumps(value, default=repr)


def mapping(key: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Invalid(f"{key} must be a JSON object, got {show(value)}")
    return value


def only_known(key: str, data: Mapping[str, Any], known: Collection[str]) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        listed = ", ".join(known) if known else "none"
        raise Invalid(f"{key} has an unknown key {unknown[0]!r}; known keys: {listed}")


def value_of(data: Mapping[str, Any], name: str) -> Any:
    """The value of ``name`` in ``data``; ``None`` when it is missing or null."""
    return data.get(name)


def integer(key: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise Invalid(f"{key} must be an integer from {minimum} to {maximum}, got {show(value)}")
    return value


def number(key: str, value: object, minimum: float, maximum: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not minimum <= value <= maximum
    ):
        raise Invalid(f"{key} must be a number from {minimum:g} to {maximum:g}, got {show(value)}")
    return float(value)


def boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{key} must be true or false, got {show(value)}")
    return value


def string(
    key: str,
    value: object,
    *,
    max_length: int,
    pattern: re.Pattern[str] | None = None,
    rule: str = "",
) -> str:
    """A non-empty string of at most ``max_length`` characters, matching ``pattern`` if given
    (``rule`` says the pattern in words)."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"{key} must be a non-empty string, got {show(value)}")
    if len(value) > max_length:
        raise Invalid(f"{key} must be at most {max_length} characters, got {len(value)}")
    if pattern is not None and not pattern.fullmatch(value):
        raise Invalid(f"{key} must be {rule}, got {show(value)}")
    return value


def choice(key: str, value: object, choices: Collection[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise Invalid(f"{key} must be one of {', '.join(choices)}, got {show(value)}")
    return value


def array(key: str, value: object, minimum: int, maximum: int) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(f"{key} must be a list, got {show(value)}")
    if not minimum <= len(value) <= maximum:
        raise Invalid(f"{key} must have from {minimum} to {maximum} entries, got {len(value)}")
    return value


def required(key: str, data: Mapping[str, Any], name: str, what: str) -> Any:
    """The value of ``name``, which must be given; ``what`` says what it is for the message."""
    value = value_of(data, name)
    if value is None:
        raise Invalid(f"{key}.{name} is missing: {what}")
    return value
