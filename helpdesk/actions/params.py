"""Reading an action's parameters, whatever the door gave (JSON from the API, ``k=v`` text from
the command, a form): each reader refuses a value it cannot use with a sentence naming the
parameter, before anything changes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from helpdesk.refusals import HelpdeskRefused

MAX_PARAMS = 10
MAX_TEXT = 200


def check_params(params: object, allowed: tuple[str, ...], action: str) -> dict[str, Any]:
    """``params`` as a dict of known names with plain values (text, numbers, true/false)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise HelpdeskRefused(
            f'params is an object of names and values, such as {{"replicas": 3}}; got '
            f"{type(params).__name__}.",
            "invalid",
        )
    if len(params) > MAX_PARAMS:
        raise HelpdeskRefused(f"At most {MAX_PARAMS} params, please.", "invalid")
    unknown = sorted(str(name)[:40] for name in params if name not in allowed)
    if unknown:
        known = ", ".join(allowed) or "none"
        raise HelpdeskRefused(
            f"{action} takes no param {', '.join(repr(u) for u in unknown)}; its params: {known}.",
            "invalid",
        )
    for name, value in params.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise HelpdeskRefused(
                f"{name} must be a plain value (text, a number or true/false), not a "
                f"{type(value).__name__}.",
                "invalid",
            )
    return dict(params)


def whole(params: Mapping[str, Any], name: str, low: int, high: int, default: int | None) -> int:
    """A whole number from ``low`` to ``high`` (``default`` when absent; required without one)."""
    value = params.get(name)
    if value is None or value == "":
        if default is None:
            raise HelpdeskRefused(
                f"{name} is required: a whole number from {low} to {high}.", "invalid"
            )
        return default
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        text = value.strip()
        number = int(text) if len(text) <= 12 else None
    else:
        number = None
    if number is None or not low <= number <= high:
        shown = str(value)[:30].replace("\x00", "\\0")
        raise HelpdeskRefused(
            f"{name} must be a whole number from {low} to {high}; got {shown!r}.", "invalid"
        )
    return number


def flag(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise HelpdeskRefused(f"{name} must be true or false; got {str(value)[:30]!r}.", "invalid")


def text(
    params: Mapping[str, Any], name: str, *, required: bool = False, limit: int = MAX_TEXT
) -> str:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise HelpdeskRefused(f"{name} is required.", "invalid")
        return ""
    if not isinstance(value, str):
        raise HelpdeskRefused(f"{name} must be text; got {type(value).__name__}.", "invalid")
    if "\x00" in value:
        raise HelpdeskRefused(f"{name} contains a NUL character; send plain text.", "invalid")
    value = value.strip()
    if len(value) > limit:
        raise HelpdeskRefused(f"{name} is longer than {limit} characters.", "invalid")
    if required and not value:
        raise HelpdeskRefused(f"{name} is required.", "invalid")
    return value


def choice(
    params: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str = ""
) -> str:
    value = text(params, name, required=not default) or default
    if value not in choices:
        raise HelpdeskRefused(
            f"{name} must be one of {', '.join(choices)}; got {value[:40]!r}.", "invalid"
        )
    return value
