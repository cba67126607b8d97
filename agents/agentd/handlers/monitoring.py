"""The monitoring template: probe HTTP and TCP targets on an interval.

A daemon thread checks every target each ``interval_seconds`` (the first round at once, the
targets of a round in parallel), keeping the latest result per target and counting the results;
``/metrics`` exports them (``agentd_probe_up``, ``agentd_probe_latency_seconds``,
``agentd_probe_checks_total``). A task answers the latest results (``{"op": "report"}``) or
probes every target first (``{"op": "probe"}``). An HTTP target is up when it answers its
``expect_status`` (redirects are not followed); a TCP target when a connection is made.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from ..metrics import ProbeStatus
from . import checks, web
from .base import Handler, HandlerContext, Invalid, Settings, Task, TaskError

MAX_TARGETS = 50
MAX_NAME_LENGTH = 60
MAX_PARALLEL_PROBES = 16
OPS = ("report", "probe")
HTTP_KEYS = ("name", "kind", "url", "expect_status")
TCP_KEYS = ("name", "kind", "host", "port")


def parse_settings(data: object, *, slug: str) -> dict[str, Any]:
    settings = checks.mapping("settings", data)
    checks.only_known("settings", settings, ("targets", "interval_seconds", "timeout_seconds"))
    targets = checks.array(
        "settings.targets",
        checks.required("settings", settings, "targets", "the HTTP and TCP targets to probe"),
        1,
        MAX_TARGETS,
    )
    parsed_targets: list[dict[str, Any]] = []
    for index, target in enumerate(targets):
        parsed = _target(f"settings.targets[{index}]", target)
        if any(earlier["name"] == parsed["name"] for earlier in parsed_targets):
            raise Invalid(
                f"settings.targets[{index}].name is {parsed['name']!r} a second time; "
                "give each target a name of its own"
            )
        parsed_targets.append(parsed)
    interval = checks.value_of(settings, "interval_seconds")
    timeout = checks.value_of(settings, "timeout_seconds")
    return {
        "targets": parsed_targets,
        "interval_seconds": 15.0
        if interval is None
        else checks.number("settings.interval_seconds", interval, 1, 3600),
        "timeout_seconds": 2.0
        if timeout is None
        else checks.number("settings.timeout_seconds", timeout, 0.1, 30),
    }


def _target(key: str, data: object) -> dict[str, Any]:
    target = checks.mapping(key, data)
    name = checks.string(f"{key}.name", target.get("name"), max_length=MAX_NAME_LENGTH)
    kind = checks.choice(f"{key}.kind", target.get("kind"), ("http", "tcp"))
    if kind == "http":
        checks.only_known(key, target, HTTP_KEYS)
        url = checks.string(f"{key}.url", target.get("url"), max_length=2000)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid(f"{key}.url must be an http:// or https:// URL, got {checks.show(url)}")
        if any(character.isspace() or not character.isprintable() for character in url):
            raise Invalid(f"{key}.url must not hold spaces or control characters")
        expect = target.get("expect_status")
        expect = 200 if expect is None else checks.integer(f"{key}.expect_status", expect, 100, 599)
        return {"name": name, "kind": kind, "url": url, "expect_status": expect}
    checks.only_known(key, target, TCP_KEYS)
    host = checks.string(f"{key}.host", target.get("host"), max_length=253)
    port = checks.integer(f"{key}.port", target.get("port"), 1, 65535)
    return {"name": name, "kind": kind, "host": host, "port": port}


@dataclass(frozen=True)
class Check:
    """One probe of one target."""

    up: bool
    latency_seconds: float
    checked_at_ms: int
    error: str


class MonitoringHandler(Handler):
    template = "monitoring"

    def __init__(self, settings: Settings, context: HandlerContext) -> None:
        self._targets: list[dict[str, Any]] = settings["targets"]
        self._interval = settings["interval_seconds"]
        self._timeout = settings["timeout_seconds"]
        self._log = context.logger
        self._opener = web.opener()
        self._lock = threading.Lock()
        self._latest: dict[str, ProbeStatus] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentd-monitoring", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        # A round in progress ends within the probe timeout.
        self._thread.join(self._timeout + 1)

    def longest_task_seconds(self) -> float:
        rounds = -(-len(self._targets) // MAX_PARALLEL_PROBES)
        return rounds * (self._timeout + 1)

    def probes(self) -> list[ProbeStatus]:
        with self._lock:
            return [
                self._latest[target["name"]]
                for target in self._targets
                if target["name"] in self._latest
            ]

    def handle(self, task: Task) -> dict[str, Any]:
        try:
            op = checks.choice("op", task.payload.get("op") or "report", OPS)
        except Invalid as exc:
            raise TaskError(str(exc)) from exc
        if op == "probe":
            self._probe_all(self._targets)
        else:
            # Before the first round is done, a target without a result is probed now.
            known = {status.name for status in self.probes()}
            self._probe_all([t for t in self._targets if t["name"] not in known])
        results = [_result(status) for status in self.probes()]
        up = sum(1 for result in results if result["up"])
        return {"targets": results, "up": up, "down": len(results) - up}

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._probe_all(self._targets)
            except Exception as exc:
                # A bug must not end the monitoring silently: say so, go on next interval.
                self._log.error(
                    "probe_error", f"probing the targets failed: {exc!r}", error=repr(exc)
                )
            self._stopping.wait(self._interval)

    def _probe_all(self, targets: list[dict[str, Any]]) -> None:
        if not targets:
            return
        workers = min(MAX_PARALLEL_PROBES, len(targets))
        with ThreadPoolExecutor(workers, thread_name_prefix="agentd-probe") as pool:
            checks_done = list(pool.map(self._probe, targets))
        with self._lock:
            for target, check in zip(targets, checks_done, strict=True):
                self._record(target, check)

    def _record(self, target: dict[str, Any], check: Check) -> None:
        name = target["name"]
        previous = self._latest.get(name) or ProbeStatus(
            name, target["kind"], False, 0.0, 0, "", checks_up=0, checks_down=0
        )
        self._latest[name] = replace(
            previous,
            up=check.up,
            latency_seconds=check.latency_seconds,
            checked_at_ms=check.checked_at_ms,
            error=check.error,
            checks_up=previous.checks_up + check.up,
            checks_down=previous.checks_down + (not check.up),
        )
        if previous.checks_up + previous.checks_down and previous.up != check.up:
            self._log.info(
                "probe_changed",
                f"target {name} is {'up' if check.up else 'down'}"
                + (f": {check.error}" if check.error else ""),
                target=name,
                up=check.up,
                error=check.error,
            )

    def _probe(self, target: dict[str, Any]) -> Check:
        checked_at_ms = int(time.time() * 1000)
        started = time.monotonic()
        if target["kind"] == "http":
            error = self._probe_http(target["url"], target["expect_status"])
        else:
            error = self._probe_tcp(target["host"], target["port"])
        return Check(not error, time.monotonic() - started, checked_at_ms, error)

    def _probe_http(self, url: str, expect_status: int) -> str:
        """ "" when the URL answers ``expect_status``, else what went wrong."""
        request = urllib.request.Request(url, headers={"User-Agent": "agentd-monitoring"})
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status = response.getcode()
        except urllib.error.HTTPError as error:
            status = error.code
            error.close()
        except (OSError, ValueError) as error:
            return web.failure_reason(error)
        if status != expect_status:
            return f"answered {status}, expected {expect_status}"
        return ""

    def _probe_tcp(self, host: str, port: int) -> str:
        try:
            with socket.create_connection((host, port), timeout=self._timeout):
                return ""
        except OSError as error:
            return web.failure_reason(error)


def _result(status: ProbeStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "kind": status.kind,
        "up": status.up,
        "latency_ms": round(status.latency_seconds * 1000, 3),
        "checked_at": status.checked_at_ms,
        "error": status.error,
    }
