"""What one agentd process is told: its identity (flags and environment) and its live config.

The identity (slug, replica, port, ...) is fixed for the life of the process. The live config is a
JSON object that can be replaced while the process runs (``PATCH /config``); it is always held as
a validated, immutable :class:`AgentConfig`, so a bad value is refused before it changes anything.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from .handlers import DEFAULT_TEMPLATE, TEMPLATES, Invalid
from .handlers import parse_settings as parse_template_settings

SLUG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SLUG_RULE = "letters, digits, '.', '_' or '-', at most 63 characters"
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_FORWARDS = 16
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_DATA_DIR = "data"


class ConfigError(ValueError):
    """A configuration agentd cannot run with; the message is shown to the operator as it is."""


@dataclass(frozen=True)
class Faults:
    """Misbehaviour agentd can be told to show, so that every error path of the portal is real."""

    crash_after_seconds: float | None = None
    crash_exit_code: int = 1
    fail_rate: float = 0.0
    latency_ms: int = 0
    refuse_readiness: bool = False
    allocate_mb: int = 0
    unhealthy: bool = False


@dataclass(frozen=True)
class Forward:
    """Hand a share of the tasks completed on to another agent, as new tasks on its stream."""

    to: str
    share: float


@dataclass(frozen=True)
class AgentConfig:
    """The live config of an agent.

    ``template`` names the handler every task goes through and ``settings`` are its own, checked
    by the handler's rules with defaults filled in (see ``handlers``). Keys agentd does not know
    are kept in ``extra`` and answered back by ``GET /config``: agentd has no business refusing
    them.
    """

    task_max_failures: int = 3
    task_block_ms: int = 1000
    task_retry_ms: int = 2000
    dependencies: tuple[str, ...] = ()
    forward: tuple[Forward, ...] = ()
    faults: Faults = field(default_factory=Faults)
    template: str = DEFAULT_TEMPLATE
    settings: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The config as the JSON object ``GET /config`` answers.

        A plain blank agent (no template named, no settings) answers without ``template`` and
        ``settings``, exactly as agents did before there were templates.
        """
        data = {
            **self.extra,
            "task_max_failures": self.task_max_failures,
            "task_block_ms": self.task_block_ms,
            "task_retry_ms": self.task_retry_ms,
            "dependencies": list(self.dependencies),
            "forward": [asdict(entry) for entry in self.forward],
            "faults": asdict(self.faults),
        }
        if self.template != DEFAULT_TEMPLATE or self.settings:
            data["template"] = self.template
            data["settings"] = copy.deepcopy(dict(self.settings))
        return data


@dataclass(frozen=True)
class Settings:
    """Everything agentd is started with."""

    slug: str
    name: str
    version: str
    replica: int
    host: str
    port: int
    redis_url: str
    grace_seconds: float
    log_level: str
    # Where the agent keeps what must outlive the process (the memory template's keys).
    data_dir: Path
    config: AgentConfig


def parse_config(data: object, *, slug: str) -> AgentConfig:
    """Validate a config object (as decoded from JSON) for the agent ``slug``; fill in defaults.

    A key whose value is ``null`` takes its default. Raises :class:`ConfigError` naming the first
    bad key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a JSON object, got {_show(data)}")
    known = {
        "task_max_failures",
        "task_block_ms",
        "task_retry_ms",
        "dependencies",
        "forward",
        "faults",
        "template",
        "settings",
    }
    values: dict[str, Any] = {}
    if data.get("task_max_failures") is not None:
        values["task_max_failures"] = _integer(
            "task_max_failures", data["task_max_failures"], 1, 1000
        )
    if data.get("task_block_ms") is not None:
        values["task_block_ms"] = _integer("task_block_ms", data["task_block_ms"], 10, 5000)
    if data.get("task_retry_ms") is not None:
        values["task_retry_ms"] = _integer("task_retry_ms", data["task_retry_ms"], 10, 3_600_000)
    if data.get("dependencies") is not None:
        values["dependencies"] = _dependencies(data["dependencies"])
    if data.get("forward") is not None:
        values["forward"] = parse_forward(data["forward"], slug)
    if data.get("faults") is not None:
        values["faults"] = parse_faults(data["faults"])
    values["template"], values["settings"] = parse_template(
        data.get("template"), data.get("settings"), slug
    )
    extra = {key: value for key, value in data.items() if key not in known}
    return AgentConfig(**values, extra=extra)


def parse_template(template: object, settings: object, slug: str) -> tuple[str, dict[str, Any]]:
    """Validate ``template`` (default blank) and its ``settings`` (default: the template's
    defaults) by the template's own rules."""
    if template is None:
        template = DEFAULT_TEMPLATE
    if not isinstance(template, str) or template not in TEMPLATES:
        raise ConfigError(f"template must be one of {', '.join(TEMPLATES)}, got {_show(template)}")
    try:
        return template, parse_template_settings(
            template, {} if settings is None else settings, slug=slug
        )
    except Invalid as exc:
        raise ConfigError(f"{exc} (template {template})") from exc


def parse_faults(data: object) -> Faults:
    """Validate the ``faults`` object; unknown fault names are refused, as they are likely typos."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"faults must be a JSON object, got {_show(data)}")
    known = Faults.__dataclass_fields__.keys()
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown fault {unknown[0]!r}; known faults: {', '.join(known)}")
    values: dict[str, Any] = {}
    if data.get("crash_after_seconds") is not None:
        values["crash_after_seconds"] = _number(
            "faults.crash_after_seconds", data["crash_after_seconds"], 0, 10_000_000
        )
    if data.get("crash_exit_code") is not None:
        values["crash_exit_code"] = _integer(
            "faults.crash_exit_code", data["crash_exit_code"], 0, 255
        )
    if data.get("fail_rate") is not None:
        values["fail_rate"] = _number("faults.fail_rate", data["fail_rate"], 0, 1)
    if data.get("latency_ms") is not None:
        values["latency_ms"] = _integer("faults.latency_ms", data["latency_ms"], 0, 600_000)
    if data.get("allocate_mb") is not None:
        values["allocate_mb"] = _integer("faults.allocate_mb", data["allocate_mb"], 0, 65_536)
    for flag in ("refuse_readiness", "unhealthy"):
        if data.get(flag) is not None:
            values[flag] = _boolean(f"faults.{flag}", data[flag])
    return Faults(**values)


def parse_forward(data: object, slug: str) -> tuple[Forward, ...]:
    """Validate the ``forward`` list: at most MAX_FORWARDS ``{"to": <slug>, "share": <0..1>}``
    entries, each naming another agent once."""
    shape = '{"to": <agent slug>, "share": <number from 0 to 1>}'
    if not isinstance(data, list):
        raise ConfigError(f"forward must be a list of {shape} entries, got {_show(data)}")
    if len(data) > MAX_FORWARDS:
        raise ConfigError(f"forward has {len(data)} entries; at most {MAX_FORWARDS} are allowed")
    known = Forward.__dataclass_fields__.keys()
    entries: list[Forward] = []
    for index, entry in enumerate(data):
        key = f"forward[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{key} must be a JSON object {shape}, got {_show(entry)}")
        unknown = sorted(set(entry) - set(known))
        if unknown:
            raise ConfigError(
                f"{key} has an unknown key {unknown[0]!r}; known keys: {', '.join(known)}"
            )
        to = entry.get("to")
        if not isinstance(to, str) or not SLUG_PATTERN.match(to):
            raise ConfigError(f"{key}.to must be an agent slug ({SLUG_RULE}), got {_show(to)}")
        if to == slug:
            raise ConfigError(
                f"{key}.to names this agent ({slug}); an agent may not forward to itself"
            )
        if any(earlier.to == to for earlier in entries):
            raise ConfigError(f"{key}.to names {to} a second time; give each agent one entry")
        if entry.get("share") is None:
            raise ConfigError(f"{key}.share is missing: the share of tasks to forward, 0 to 1")
        entries.append(Forward(to=to, share=_number(f"{key}.share", entry["share"], 0, 1)))
    return tuple(entries)


def merge_config(current: AgentConfig, patch: object, *, slug: str) -> AgentConfig:
    """Apply a ``PATCH /config`` body to the current config and validate the result.

    Top-level keys replace the current ones; ``faults`` is merged fault by fault. ``null`` puts a
    key (or a fault) back to its default. Settings belong to their template: a patch that changes
    the template without giving settings starts from the new template's defaults. The current
    config is never modified.
    """
    if not isinstance(patch, Mapping):
        raise ConfigError(f"config patch must be a JSON object, got {_show(patch)}")
    merged = current.to_dict()
    if "settings" not in patch and patch.get("template", current.template) != current.template:
        merged.pop("settings", None)
    for key, value in patch.items():
        if key == "faults" and isinstance(value, Mapping):
            merged["faults"] = {**merged["faults"], **value}
        elif value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return parse_config(merged, slug=slug)


def load_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Settings:
    """Read the identity and the initial config; flags win over environment variables."""
    args = _parser().parse_args(argv)

    def option(flag_value: str | None, env_name: str, default: str | None = None) -> str | None:
        if flag_value is not None:
            return flag_value
        return environ.get(env_name) or default

    slug = option(args.slug, "AGENT_SLUG")
    if not slug:
        raise ConfigError("an agent slug is required (--slug or AGENT_SLUG)")
    if not SLUG_PATTERN.match(slug):
        raise ConfigError(f"invalid slug {slug!r}: use {SLUG_RULE}")
    redis_url = option(args.redis_url, "REDIS_URL", "redis://127.0.0.1:6379/0") or ""
    if not redis_url.startswith(REDIS_URL_SCHEMES):
        raise ConfigError(
            f"invalid Redis URL {redis_url!r} (--redis-url/REDIS_URL): "
            f"it must start with {', '.join(REDIS_URL_SCHEMES)}"
        )
    log_level = (option(args.log_level, "AGENT_LOG_LEVEL", "info") or "").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            f"invalid log level {log_level!r} (--log-level/AGENT_LOG_LEVEL): "
            f"use one of {', '.join(LOG_LEVELS)}"
        )
    return Settings(
        slug=slug,
        name=option(args.name, "AGENT_NAME") or slug,
        version=option(args.version, "AGENT_VERSION") or "0.0.0",
        replica=_integer_option(option(args.replica, "AGENT_REPLICA", "0"), "replica", 0, 9999),
        host=option(args.host, "AGENT_HOST") or "127.0.0.1",
        port=_integer_option(option(args.port, "AGENT_PORT", "8080"), "port", 0, 65535),
        redis_url=redis_url,
        grace_seconds=_grace_option(option(args.grace, "AGENT_GRACE_SECONDS", "10")),
        log_level=log_level,
        data_dir=Path(
            option(args.data_dir, "AGENT_DATA_DIR", DEFAULT_DATA_DIR) or DEFAULT_DATA_DIR
        ),
        config=_initial_config(
            option(args.config_file, "AGENT_CONFIG_FILE"),
            option(args.config, "AGENT_CONFIG"),
            slug,
        ),
    )


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a bad flag as a ConfigError instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m agents.agentd",
        description="Run one WAOOAW agent: health, readiness, metrics, live config and its task "
        "queue. Every flag can also be given by the environment variable named in its help.",
    )
    flags = [
        ("--slug", "the agent's slug, used in its Redis keys (AGENT_SLUG, required)"),
        ("--name", "display name (AGENT_NAME, default: the slug)"),
        ("--version", "the agent's version (AGENT_VERSION, default 0.0.0)"),
        ("--replica", "replica number (AGENT_REPLICA, default 0)"),
        ("--host", "address to listen on (AGENT_HOST, default 127.0.0.1)"),
        ("--port", "port to listen on (AGENT_PORT, default 8080)"),
        ("--redis-url", "Redis holding the task queue (REDIS_URL)"),
        ("--config-file", "JSON file with the initial config (AGENT_CONFIG_FILE)"),
        ("--config", "JSON object with the initial config, over the file (AGENT_CONFIG)"),
        ("--grace", "seconds allowed for a clean stop (AGENT_GRACE_SECONDS, default 10)"),
        ("--log-level", f"one of {', '.join(LOG_LEVELS)} (AGENT_LOG_LEVEL, default info)"),
        (
            "--data-dir",
            "directory for what outlives the process, such as long-term memory "
            f"(AGENT_DATA_DIR, default ./{DEFAULT_DATA_DIR})",
        ),
    ]
    for flag, help_text in flags:
        parser.add_argument(flag, help=help_text)
    return parser


def _initial_config(config_file: str | None, config_json: str | None, slug: str) -> AgentConfig:
    config = AgentConfig()
    if config_file:
        try:
            text = Path(config_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file!r}: {exc.strerror}") from exc
        config = merge_config(config, _decode_json(text, f"config file {config_file!r}"), slug=slug)
    if config_json:
        config = merge_config(config, _decode_json(config_json, "AGENT_CONFIG/--config"), slug=slug)
    return config


def _decode_json(text: str, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON: {exc}") from exc


def _integer_option(value: str | None, name: str, minimum: int, maximum: int) -> int:
    env_name = f"AGENT_{name.upper()}"
    try:
        number = int(value or "")
    except ValueError:
        number = None
    if number is None or not minimum <= number <= maximum:
        raise ConfigError(
            f"invalid {name} {value!r} (--{name}/{env_name}): "
            f"must be an integer from {minimum} to {maximum}"
        )
    return number


def _grace_option(value: str | None) -> float:
    try:
        seconds = float(value or "")
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise ConfigError(
            f"invalid grace period {value!r} (--grace/AGENT_GRACE_SECONDS): "
            "must be a number of seconds above 0 and at most 3600"
        )
    return seconds


def _integer(key: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(
            f"{key} must be an integer from {minimum} to {maximum}, got {_show(value)}"
        )
    return value


def _number(key: str, value: object, minimum: float, maximum: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not minimum <= value <= maximum
    ):
        raise ConfigError(f"{key} must be a number from {minimum} to {maximum}, got {_show(value)}")
    return float(value)


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {_show(value)}")
    return value


def _dependencies(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"dependencies must be a list of 'host:port' strings, got {_show(value)}")
    for address in value:
        if not isinstance(address, str):
            raise ConfigError(f"dependencies must hold 'host:port' strings, got {_show(address)}")
        split_address(address)
    return tuple(value)


def split_address(address: str) -> tuple[str, int]:
    """Split a ``host:port`` dependency address; ``[::1]:80`` is accepted for IPv6."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdecimal() or not 0 < int(port) <= 65535:
        raise ConfigError(f"dependency {address!r} is not a 'host:port' address")
    return host, int(port)


def _show(value: object) -> str:
    return json.dumps(value, default=repr)
