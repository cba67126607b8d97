"""An agent's log lines, from its pods' logs (``kubectl logs --timestamps``), read or followed.

A replica is a pod, numbered as :func:`~.pods.live_pods` orders them. Each line's time is the
one the container runtime recorded, kept at nanosecond precision to order and de-duplicate
lines, and shown as agentd writes times (milliseconds, UTC).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from ..base import LogLine, RuntimeFailure
from . import api
from .objects import CONTAINER
from .pods import iso_millis, live_pods, pod_name, time_key, time_key_of

FOLLOW_INTERVAL = 0.2
# While following, look this often for pods that replaced the ones followed.
FOLLOW_RESCAN_SECONDS = 2.0
# A followed stream silent this long is closed and opened again.
FOLLOW_READ_SECONDS = 300
CONNECT_SECONDS = 5.0


class PodLogs:
    """The logs of one agent's pods in ``namespace``; ``list_pods`` answers its pods now."""

    def __init__(
        self,
        core: client.CoreV1Api,
        namespace: str,
        slug: str,
        list_pods: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.slug = slug
        self.list_pods = list_pods

    def lines(
        self,
        since: float | None,
        tail: int | None,
        follow: bool,
        stop: threading.Event | None,
        replica: int | None,
    ) -> Iterator[LogLine]:
        targets = [
            (index, pod_name(pod))
            for index, pod in enumerate(live_pods(self.list_pods()))
            if replica is None or index == replica
        ]
        read_at = time.time()
        since_key = time_key_of(since) if since is not None else None
        lines: list[tuple[str, LogLine]] = []
        newest: dict[str, str] = {}
        for index, pod in targets:
            for key, line in self._read(index, pod, since, tail):
                newest[pod] = max(newest.get(pod, ""), key)
                if since_key is None or key >= since_key:
                    lines.append((key, line))
        lines.sort(key=lambda item: item[0])
        if tail is not None:
            lines = lines[len(lines) - tail :] if tail > 0 else []
        yield from (line for _, line in lines)
        if follow:
            yield from self._follow(targets, newest, read_at, replica, stop or threading.Event())

    def _read(
        self, index: int, pod: str, since: float | None, tail: int | None
    ) -> list[tuple[str, LogLine]]:
        options: dict[str, Any] = {"container": CONTAINER, "timestamps": True}
        if since is not None:
            # Whole seconds, rounded up: lines before ``since`` are dropped by their time.
            options["since_seconds"] = max(1, math.ceil(time.time() - since))
        if tail is not None:
            options["tail_lines"] = tail
        try:
            response = api.call(
                f"read the log of pod {pod}",
                self.core.read_namespaced_pod_log,
                pod,
                self.namespace,
                **options,
            )
        except RuntimeFailure as failure:
            if failure.details.get("status") in (400, 404):
                return []  # not started yet, or gone since it was listed
            raise
        try:
            text = response.data.decode("utf-8", errors="replace")
        finally:
            response.release_conn()
        return [log_line(self.slug, index, raw) for raw in text.splitlines() if raw]

    def _follow(
        self,
        targets: list[tuple[int, str]],
        newest: dict[str, str],
        read_at: float,
        replica: int | None,
        stop: threading.Event,
    ) -> Iterator[LogLine]:
        """Follow each pod's log; a stream that ends (its container restarted, or a long
        silence) is opened again from its last line, and new pods are followed as they come."""
        out: queue.Queue = queue.Queue()
        done = threading.Event()
        followers: dict[str, LogFollower] = {}
        last_line_at: dict[str, float] = {pod: read_at for _, pod in targets}

        def follow(index: int, pod: str) -> None:
            since = last_line_at.get(pod)
            # From the last line read (the overlap is dropped below by its time); a pod never
            # read from is followed from its start.
            since_seconds = None if since is None else max(1, math.ceil(time.time() - since) + 1)

            def open_stream() -> Any:
                return api.call(
                    f"follow the log of pod {pod}",
                    self.core.read_namespaced_pod_log,
                    pod,
                    self.namespace,
                    container=CONTAINER,
                    timestamps=True,
                    follow=True,
                    since_seconds=since_seconds,
                    _request_timeout=(CONNECT_SECONDS, FOLLOW_READ_SECONDS),
                )

            followers[pod] = LogFollower((index, pod), open_stream, out, done)
            followers[pod].start()

        for index, pod in targets:
            follow(index, pod)
        next_scan = time.monotonic() + FOLLOW_RESCAN_SECONDS
        try:
            while not stop.is_set():
                try:
                    (index, pod), raw = out.get(timeout=FOLLOW_INTERVAL)
                except queue.Empty:
                    if time.monotonic() >= next_scan:
                        next_scan = time.monotonic() + FOLLOW_RESCAN_SECONDS
                        for position, found in enumerate(live_pods(self.list_pods())):
                            name = pod_name(found)
                            ended = name not in followers or not followers[name].is_alive()
                            if ended and (replica is None or position == replica):
                                follow(position, name)
                    continue
                key, line = log_line(self.slug, index, raw)
                if key and key <= newest.get(pod, ""):
                    continue
                newest[pod] = key or newest.get(pod, "")
                last_line_at[pod] = time.time()
                yield line
        finally:
            done.set()
            for follower in followers.values():
                follower.stop()


class LogFollower(threading.Thread):
    """Reads one log stream line by line onto ``out`` as ``(key, line)``."""

    def __init__(
        self, key: Any, open_stream: Callable[[], Any], out: queue.Queue, done: threading.Event
    ) -> None:
        super().__init__(name=f"kubernetes-log-{key}", daemon=True)
        self.key = key
        self.open_stream = open_stream
        self.out = out
        self.done = done
        self._response: Any = None

    def run(self) -> None:
        try:
            self._response = self.open_stream()
            for line in iter_resp_lines(self._response):
                if self.done.is_set():
                    break
                self.out.put((self.key, line))
        except (RuntimeFailure, urllib3.exceptions.HTTPError, OSError):
            pass  # the container went away or the stream was stopped: nothing more to read
        finally:
            if self._response is not None:
                self._response.release_conn()

    def stop(self) -> None:
        if self._response is not None:
            api.shutdown(self._response)


def log_line(slug: str, replica: int, raw: str) -> tuple[str, LogLine]:
    """A line of ``kubectl logs --timestamps`` output (the time, a space, the line) and its
    time as a sortable key ("" when it has none)."""
    stamp, _, text = raw.partition(" ")
    key = time_key(stamp)
    if key is None:
        return "", LogLine(slug, replica, "", raw)
    return key, LogLine(slug, replica, iso_millis(key), text)
