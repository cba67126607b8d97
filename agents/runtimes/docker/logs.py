"""Reading agent containers' logs through the engine: the last lines, lines since a time, and
following new ones across container restarts."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import requests

from ..base import LogLine, RuntimeFailure

FOLLOW_POLL_SECONDS = 0.2
REOPEN_SECONDS = 0.5


def parse_line(raw: bytes, slug: str, replica: int) -> tuple[int, LogLine] | None:
    """One line of ``docker logs --timestamps``: the engine's time in nanoseconds and the line,
    whose ``ts`` is that time in agentd's own format (ISO 8601, milliseconds, UTC)."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    stamp, _, rest = text.partition(" ")
    moment = _nanoseconds(stamp)
    if moment is None:
        return None
    seconds, remainder = divmod(moment, 1_000_000_000)
    iso = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return moment, LogLine(slug, replica, f"{iso}.{remainder // 1_000_000:03d}Z", rest)


def _nanoseconds(stamp: str) -> int | None:
    """``2026-11-21T06:27:18.061123456Z`` as nanoseconds since the epoch."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    try:
        seconds = int(datetime.fromisoformat(whole + "+00:00").timestamp())
    except ValueError:
        return None
    digits = (fraction + "000000000")[:9]
    return seconds * 1_000_000_000 + (int(digits) if digits.isdecimal() else 0)


def split_lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line]


def read_lines(
    api: docker.APIClient,
    container: str,
    slug: str,
    replica: int,
    since: float | None,
    tail: int | None,
) -> list[tuple[int, LogLine]]:
    """The container's log lines (stdout and stderr) written at or after ``since`` (or the last
    ``tail`` of them), oldest first."""
    options: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": True}
    if since is not None:
        # At least 1 s after the epoch: the SDK sends a float with str(), and the engine cannot
        # parse a tiny one ("1e-06").
        options["since"] = max(since - 0.000001, 1.0)
    elif tail is not None:
        options["tail"] = tail
    try:
        data = api.logs(container, **options)
    except docker.errors.NotFound:
        return []
    lines = [parsed for raw in split_lines(data) if (parsed := parse_line(raw, slug, replica))]
    if since is not None:
        floor = int(since * 1_000_000_000)
        lines = [(moment, line) for moment, line in lines if moment >= floor]
    return lines


class Follower:
    """Streams new lines of one replica's container into a queue, from a thread; reopens the
    stream when the container stops and starts again (or is recreated under its name)."""

    def __init__(
        self,
        connect: Callable[[], docker.DockerClient],
        container: str,
        slug: str,
        replica: int,
        after: int,
        out: queue.Queue[LogLine],
    ) -> None:
        self.connect, self.container = connect, container
        self.slug, self.replica = slug, replica
        self.last = after
        self.out = out
        self.stopping = threading.Event()
        self._stream: Any = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"docker-logs-{container}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            if self._stream is not None:
                with contextlib.suppress(Exception):
                    self._stream.close()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                since = max((self.last // 1000) / 1_000_000 - 0.000001, 1.0)
                stream = self.connect().api.logs(
                    self.container,
                    stdout=True,
                    stderr=True,
                    timestamps=True,
                    stream=True,
                    follow=True,
                    since=since,
                )
            except (RuntimeFailure, docker.errors.DockerException, requests.RequestException):
                self.stopping.wait(REOPEN_SECONDS)
                continue
            with self._lock:
                self._stream = stream
            if self.stopping.is_set():
                break
            partial = b""
            try:
                for chunk in stream:
                    *complete, partial = (partial + chunk).split(b"\n")
                    for raw in complete:
                        parsed = parse_line(raw, self.slug, self.replica)
                        if parsed is not None and parsed[0] > self.last:
                            self.last = parsed[0]
                            self.out.put(parsed[1])
            except (docker.errors.DockerException, requests.RequestException, OSError):
                pass
            finally:
                with self._lock:
                    self._stream = None
                with contextlib.suppress(Exception):
                    stream.close()
            # The container stopped (or the stream broke): look again shortly.
            self.stopping.wait(REOPEN_SECONDS)


def follow_lines(
    followers: list[Follower], lines: queue.Queue[LogLine], stop: threading.Event
) -> Iterator[LogLine]:
    """Yield what the followers put in ``lines`` until ``stop`` is set; then stop them."""
    for follower in followers:
        follower.start()
    try:
        while not stop.is_set():
            try:
                yield lines.get(timeout=FOLLOW_POLL_SECONDS)
            except queue.Empty:
                continue
    finally:
        for follower in followers:
            follower.stop()
