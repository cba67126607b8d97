"""The shape of an agent's probe settings, their defaults, and the one validation every door
(page, API, command) uses.

Stored on ``Agent.probes``::

    {}                                          the defaults: today's behaviour on every runtime
    {"liveness": PROBE, "readiness": PROBE}     set through a door: both, complete, normalized

where PROBE is one of::

    {"kind": "http", "path": "/healthz", "status": 200, **TIMING}   GET on the replica's port
    {"kind": "tcp", "port": null, **TIMING}          a connection opens (null: the replica's port)
    {"kind": "exec", "command": ["cat", "/tmp/ok"], **TIMING}       exit status 0

    TIMING = {"interval_seconds": 1-3600, "timeout_seconds": 1-60 and < interval,
              "failure_threshold": 1-10, "success_threshold": 1-10}

Kubernetes' meanings: a probe runs every ``interval_seconds``; a replica counts as failing
(not alive, or not ready) after ``failure_threshold`` failures in a row and as passing again
after ``success_threshold`` passes in a row. Liveness failing makes the agent unhealthy,
readiness failing (while alive) degraded.

The defaults are what the portal did before probes could be set: ``GET /healthz`` (liveness)
and ``GET /readyz`` (readiness) expecting 200, on every monitor tick, 1.5 s to answer, one
failure or pass decides. Pure Python: the runtimes and the placement layer read it.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from typing import Any

PROBES = ("liveness", "readiness")
KINDS = ("http", "tcp", "exec")
DEFAULT_PATHS = {"liveness": "/healthz", "readiness": "/readyz"}
DEFAULT_STATUS = 200
DEFAULT_TIMEOUT_SECONDS = 1.5
TIMING = ("interval_seconds", "timeout_seconds", "failure_threshold", "success_threshold")
FIELDS = {
    "http": ("kind", "path", "status", *TIMING),
    "tcp": ("kind", "port", *TIMING),
    "exec": ("kind", "command", *TIMING),
}
INTERVAL_RANGE = (1, 3600)
TIMEOUT_RANGE = (1, 60)
THRESHOLD_RANGE = (1, 10)
STATUS_RANGE = (100, 599)
PORT_RANGE = (1, 65535)
MAX_ARGS = 20
MAX_ARG_LENGTH = 1000
MAX_PATH_LENGTH = 1000
# A request path as http.client sends it: visible ASCII, no spaces or control characters.
PATH_PATTERN = re.compile(r"/[\x21-\x7e]*")


class InvalidProbes(ValueError):
    """A probe setting the portal cannot use; ``field`` names it (``liveness.timeout_seconds``)
    and the message says what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def default_probe(which: str, interval_seconds: int) -> dict[str, Any]:
    return {
        "kind": "http",
        "path": DEFAULT_PATHS[which],
        "status": DEFAULT_STATUS,
        "interval_seconds": interval_seconds,
        "timeout_seconds": DEFAULT_TIMEOUT_SECONDS,
        "failure_threshold": 1,
        "success_threshold": 1,
    }


def default_probes(interval_seconds: int) -> dict[str, dict[str, Any]]:
    """The defaults, probed every monitor tick (``interval_seconds``: its length)."""
    return {which: default_probe(which, interval_seconds) for which in PROBES}


def effective_probes(stored: Mapping[str, Any] | None, interval_seconds: int) -> dict[str, Any]:
    """What an agent is probed with: its own settings, or the defaults when it has none."""
    if stored:
        return {which: dict(stored[which]) for which in PROBES}
    return default_probes(interval_seconds)


def validate_probes(data: object, interval_seconds: int) -> dict[str, Any]:
    """``data`` checked and normalized for storing; raises :class:`InvalidProbes` naming the
    first field that is wrong. ``{}`` or None means the defaults (stored as ``{}``). A probe
    left out, or a setting left out of a probe, takes its default (``interval_seconds``: the
    default interval); a setting the probe's kind does not take is refused, not ignored."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidProbes(
            "probes",
            'The probes must be an object: {"liveness": {...}, "readiness": {...}} '
            "(or {} for the defaults).",
        )
    for key in data:
        if key not in PROBES:
            raise InvalidProbes(
                str(key)[:40], f"{str(key)[:40]!r} is not a probe; use liveness or readiness."
            )
    if not data:
        return {}
    return {
        which: _probe(which, data.get(which), default_probe(which, interval_seconds))
        for which in PROBES
    }


def _probe(which: str, given: object, default: dict[str, Any]) -> dict[str, Any]:
    if given is None:
        return default
    if not isinstance(given, Mapping):
        raise InvalidProbes(
            which,
            f'{which} must be an object such as {{"kind": "tcp", "port": 8080}}, '
            f"not {type(given).__name__}.",
        )
    kind = given.get("kind", "http")
    if kind not in KINDS:
        raise InvalidProbes(
            f"{which}.kind", f"{which}.kind must be http, tcp or exec (got {str(kind)[:40]!r})."
        )
    allowed = FIELDS[kind]
    for key in given:
        if key not in allowed:
            raise InvalidProbes(
                f"{which}.{str(key)[:40]}",
                f"{which}.{str(key)[:40]} is not a setting of a {kind} probe; it takes "
                + ", ".join(allowed)
                + ".",
            )
    probe: dict[str, Any] = {"kind": kind}
    if kind == "http":
        probe["path"] = _path(f"{which}.path", given.get("path", default["path"]))
        probe["status"] = _whole(
            f"{which}.status", given.get("status", DEFAULT_STATUS), STATUS_RANGE, "an HTTP status"
        )
    elif kind == "tcp":
        port = given.get("port")
        probe["port"] = (
            None
            if port is None or port == ""
            else _whole(f"{which}.port", port, PORT_RANGE, "a port")
        )
    else:
        probe["command"] = _command(f"{which}.command", given.get("command"))
    interval = _whole(
        f"{which}.interval_seconds",
        given.get("interval_seconds", default["interval_seconds"]),
        INTERVAL_RANGE,
        "seconds",
    )
    timeout = _seconds(
        f"{which}.timeout_seconds", given.get("timeout_seconds", default["timeout_seconds"])
    )
    if timeout >= interval:
        raise InvalidProbes(
            f"{which}.timeout_seconds",
            f"{which}.timeout_seconds must be less than {which}.interval_seconds "
            f"({timeout:g} s is not less than {interval} s).",
        )
    probe["interval_seconds"] = interval
    probe["timeout_seconds"] = timeout
    for name in ("failure_threshold", "success_threshold"):
        probe[name] = _whole(
            f"{which}.{name}", given.get(name, default[name]), THRESHOLD_RANGE, "checks in a row"
        )
    return probe


def _whole(field: str, value: object, bounds: tuple[int, int], what: str) -> int:
    low, high = bounds
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 9:
        number = int(value.strip())
    if number is None or not low <= number <= high:
        raise InvalidProbes(
            field,
            f"{field} must be a whole number from {low} to {high} ({what}); got {_shown(value)}.",
        )
    return number


def _seconds(field: str, value: object) -> int | float:
    """Seconds to wait for an answer: a number from 1 to 60 (fractions allowed)."""
    low, high = TIMEOUT_RANGE
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 20:
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise InvalidProbes(
            field, f"{field} must be a number of seconds from {low} to {high}; got {_shown(value)}."
        )
    number = round(number, 3)
    return int(number) if number.is_integer() else number


def _path(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidProbes(field, f"{field} must start with '/' (got {_shown(value)}).")
    if len(value) > MAX_PATH_LENGTH:
        raise InvalidProbes(field, f"{field} must be at most {MAX_PATH_LENGTH} characters.")
    if not PATH_PATTERN.fullmatch(value):
        raise InvalidProbes(
            field,
            f"{field} must be a URL path without spaces or control characters "
            f"(got {_shown(value)}).",
        )
    return value


def _command(field: str, value: object) -> list[str]:
    example = '["cat", "/tmp/healthy"]'
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidProbes(
            field,
            f"{field} must be a list of 1 to {MAX_ARGS} strings, the program and its arguments, "
            f"e.g. {example}; got {_shown(value)}.",
        )
    if len(value) > MAX_ARGS:
        raise InvalidProbes(
            field, f"{field} must have at most {MAX_ARGS} items (got {len(value)})."
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidProbes(
                field, f"{field}[{index}] must be a string, not {type(item).__name__}."
            )
        if len(item) > MAX_ARG_LENGTH:
            raise InvalidProbes(
                field, f"{field}[{index}] must be at most {MAX_ARG_LENGTH} characters."
            )
        if "\x00" in item:
            raise InvalidProbes(field, f"{field}[{index}] must not contain a NUL byte.")
        try:
            item.encode()
        except UnicodeEncodeError:
            raise InvalidProbes(field, f"{field}[{index}] must be valid Unicode text.") from None
    if not value[0].strip():
        raise InvalidProbes(field, f"{field}[0] must name the program to run.")
    return list(value)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(probe: Mapping[str, Any]) -> str:
    """A probe in a few words: ``GET /healthz → 200``, ``TCP port 8080``, ``exec cat /tmp/ok``."""
    kind = probe.get("kind")
    if kind == "http":
        return f"GET {probe.get('path')} → {probe.get('status')}"
    if kind == "tcp":
        port = probe.get("port")
        return f"TCP port {port}" if port else "TCP on the replica's port"
    command = shlex.join(probe.get("command") or [])
    return f"exec {command if len(command) <= 60 else command[:57] + '...'}"
