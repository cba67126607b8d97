"""The agent process: wires config, worker, faults and HTTP server together and runs them.

Exit statuses are a contract with the supervisor (the portal's runtimes): 0 after a clean stop,
2 for a configuration agentd cannot run with, 3 when the port cannot be bound, and whatever
``faults.crash_exit_code`` says for an injected crash.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from .config import AgentConfig, ConfigError, Settings, load_settings, merge_config, split_address
from .contract import BAD_CONFIG_MARKER, EXIT_BAD_CONFIG, EXIT_BIND_FAILED, EXIT_OK
from .faults import ProcessFaults
from .handlers import Handler, HandlerContext, Invalid, build_handler
from .log import JsonLogger
from .metrics import Metrics, render_metrics
from .server import AgentHTTPServer
from .worker import QueueKeys, TaskWorker, connect, queue_stats

PROBE_TIMEOUT = 1.0
# Kept back from the grace period for closing the HTTP server and writing the last log line.
SHUTDOWN_MARGIN = 0.5
STOP_POLL_SECONDS = 0.1


class Agent:
    """One running agent replica; also the endpoints its HTTP server answers."""

    def __init__(self, settings: Settings, logger: JsonLogger) -> None:
        self.settings = settings
        self._log = logger
        self._config = settings.config
        self._config_lock = threading.Lock()
        self._started = time.monotonic()
        self._metrics = Metrics()
        self._faults = ProcessFaults(logger)
        self._keys = QueueKeys.for_agent(settings.slug, settings.replica)
        self._probe = connect(settings.redis_url, PROBE_TIMEOUT)
        self._handler_context = HandlerContext(
            slug=settings.slug,
            data_dir=settings.data_dir,
            logger=logger,
            connect_redis=lambda socket_timeout: connect(settings.redis_url, socket_timeout),
        )
        self._worker = TaskWorker(
            self._keys,
            settings.redis_url,
            config=self.current_config,
            metrics=self._metrics,
            logger=logger,
            on_ready=self._on_worker_ready,
            handler=self._build_handler(settings.config),
            version=settings.version,
        )
        self._ready_logged = False
        self._stop_signal = ""

    def current_config(self) -> AgentConfig:
        return self._config

    def run(self) -> int:
        """Serve and work until SIGTERM or SIGINT; answers the process exit status."""
        settings = self.settings
        try:
            server = AgentHTTPServer((settings.host, settings.port), self, self._log)
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self._log.error(
                "bind_failed",
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
                host=settings.host,
                port=settings.port,
                error=code,
                port_in_use=exc.errno == errno.EADDRINUSE,
            )
            self._worker.close_handlers()
            return EXIT_BIND_FAILED
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._log.info(
            "started",
            f"{settings.name} {settings.version} listening on "
            f"{settings.host}:{server.server_address[1]}",
            name=settings.name,
            version=settings.version,
            host=settings.host,
            port=server.server_address[1],
            pid=os.getpid(),
            redis_url=_redact(settings.redis_url),
            stream=self._keys.stream,
            config=_loggable(self._config),
        )
        self._log_handler_built(self._config)
        self._faults.apply(self._config.faults)
        self._worker.start()
        serving = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="agentd-http"
        )
        serving.daemon = True
        serving.start()
        while not self._stop_signal:
            time.sleep(STOP_POLL_SECONDS)
        return self._shut_down(server)

    def _shut_down(self, server: AgentHTTPServer) -> int:
        deadline = time.monotonic() + self.settings.grace_seconds - SHUTDOWN_MARGIN
        self._log.info(
            "stopping",
            f"received {self._stop_signal}: taking no new task, finishing the current one",
            signal=self._stop_signal,
        )
        self._worker.stop()
        drained = self._worker.join(timeout=max(0.0, deadline - time.monotonic()))
        self._faults.cancel()
        server.shutdown()
        server.server_close()
        self._probe.close()
        self._log.info(
            "shutdown",
            "stopped cleanly"
            if drained
            else "grace period ran out; the task in hand stays pending for a retry",
            signal=self._stop_signal,
            drained=drained,
            uptime_seconds=round(time.monotonic() - self._started, 3),
        )
        return EXIT_OK

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # A plain assignment and nothing else: the handler runs in the main thread between two
        # bytecodes, so taking any lock here (a logger's, an Event's) can deadlock against the
        # code it interrupted.
        if not self._stop_signal:
            self._stop_signal = signal.Signals(signum).name

    def _on_worker_ready(self) -> None:
        if not self._ready_logged:
            self._ready_logged = True
            self._log.info(
                "ready",
                f"connected to Redis; consuming {self._keys.stream} as {self._keys.consumer}",
                stream=self._keys.stream,
                group=self._keys.group,
                consumer=self._keys.consumer,
            )

    # The endpoints the HTTP server answers (see server.Endpoints).

    def health(self) -> tuple[int, dict[str, Any]]:
        settings = self.settings
        body: dict[str, Any] = {
            "status": "ok",
            "slug": settings.slug,
            "name": settings.name,
            "version": settings.version,
            "replica": settings.replica,
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            "pid": os.getpid(),
        }
        if self._config.faults.unhealthy:
            body.update(status="unhealthy", reason="injected fault: faults.unhealthy")
            return 503, body
        return 200, body

    def readiness(self) -> tuple[int, dict[str, Any]]:
        config = self._config
        checks = {"redis": self._check_redis()}
        for address in config.dependencies:
            checks[address] = _check_tcp(address)
        unreachable = [name for name, result in checks.items() if result != "ok"]
        body: dict[str, Any] = {
            "status": "ready",
            "slug": self.settings.slug,
            "replica": self.settings.replica,
            "checks": checks,
            "unreachable": unreachable,
        }
        if config.faults.refuse_readiness:
            body.update(status="not_ready", reason="injected fault: faults.refuse_readiness")
        elif unreachable:
            body.update(status="not_ready", reason=f"unreachable: {', '.join(unreachable)}")
        return (200 if body["status"] == "ready" else 503), body

    def metrics(self) -> str:
        try:
            stats = queue_stats(self._probe, self._keys)
        except (redis.RedisError, OSError):
            stats = None
        labels = {"slug": self.settings.slug, "replica": str(self.settings.replica)}
        targets = [entry.to for entry in self._config.forward]
        return render_metrics(
            self._metrics.snapshot(),
            labels,
            stats,
            targets,
            self._worker.probes(),
            version=self.settings.version,
        )

    def config(self) -> dict[str, Any]:
        return self._config.to_dict()

    def patch_config(self, patch: object) -> dict[str, Any]:
        """Merge, validate and apply a config patch live; a bad patch changes nothing. A new
        template or new settings get a new handler, built before anything changes."""
        with self._config_lock:
            previous = self._config
            updated = merge_config(previous, patch, slug=self.settings.slug)
            new_handler = (updated.template, updated.settings) != (
                previous.template,
                previous.settings,
            )
            if new_handler:
                self._worker.use_handler(self._build_handler(updated))
            self._config = updated
            self._faults.apply(updated.faults, previous.faults)
        if new_handler:
            self._log_handler_built(updated)
        changed = _changed_keys(previous, updated)
        self._log.info(
            "config_changed",
            f"config changed: {', '.join(changed) or 'nothing'}",
            changed=changed,
            config=_loggable(updated),
        )
        return updated.to_dict()

    def _build_handler(self, config: AgentConfig) -> Handler:
        """The handler of the config's template; :class:`ConfigError` when it cannot be made."""
        try:
            handler = build_handler(config.template, config.settings, self._handler_context)
        except Invalid as exc:
            raise ConfigError(str(exc)) from exc
        return handler

    def _log_handler_built(self, config: AgentConfig) -> None:
        self._log.info(
            "handler_built",
            f"tasks go through the {config.template} handler",
            template=config.template,
            settings=sorted(config.settings),
        )

    def _check_redis(self) -> str:
        try:
            self._probe.ping()
        except (redis.RedisError, OSError) as exc:
            return str(exc) or type(exc).__name__
        return "ok"


def main(argv: Sequence[str] | None = None) -> int:
    """Run agentd with the given flags (default: the command line) and the environment."""
    try:
        settings = load_settings(argv, os.environ)
        logger = JsonLogger(settings.slug, settings.replica, settings.log_level)
        agent = Agent(settings, logger)
    except ConfigError as exc:
        message = " ".join(str(exc).split())
        print(f"agentd: {BAD_CONFIG_MARKER} {message}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return agent.run()


def _check_tcp(address: str) -> str:
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return "ok"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _changed_keys(previous: AgentConfig, updated: AgentConfig) -> list[str]:
    before, after = previous.to_dict(), updated.to_dict()
    changed = []
    for key in sorted(before.keys() | after.keys()):
        if key == "faults":
            changed += [
                f"faults.{name}"
                for name in after["faults"]
                if before["faults"][name] != after["faults"][name]
            ]
        elif before.get(key) != after.get(key):
            changed.append(key)
    return changed


def _loggable(config: AgentConfig) -> dict[str, Any]:
    """The config without the agent's own keys and the template's settings, which may hold
    secrets (a monitored URL's password, say)."""
    data = config.to_dict()
    for key in config.extra:
        data.pop(key)
    data.pop("settings", None)
    return data


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
