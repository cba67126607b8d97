"""Watches turned into runtime events.

Each watch runs in a thread of its own and hands what it reads to a queue, so one generator
(:meth:`KubernetesRuntime.events`) merges the pod watch and the Deployment watch and still
returns soon after it is told to stop.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from ..base import RuntimeEvent, RuntimeFailure
from . import api
from .objects import MANAGED_SELECTOR
from .pods import (
    CRASH_LOOP,
    OOM_KILLED,
    agent_slug,
    container_status,
    crash_loop_key,
    is_terminating,
    live_pods,
    meta,
    parse_time,
    pod_name,
    resource_version,
    signal_of,
    termination_key,
    waiting_reason,
)

# How often the event stream checks whether it was told to stop.
STOP_CHECK_SECONDS = 0.2
# The API server ends a watch after this many seconds; it is then resumed where it was.
WATCH_SECONDS = 240
CONNECT_SECONDS = 5.0
MIN_BACKOFF = 0.2
MAX_BACKOFF = 10.0


def watch_events(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespace: str,
    since_id: str | None,
    stop: threading.Event,
) -> Iterator[RuntimeEvent]:
    """Runtime events from a watch on the managed pods and one on the managed Deployments,
    both started at ``since_id`` (a resourceVersion), until ``stop`` is set."""
    out: queue.Queue = queue.Queue()
    done = threading.Event()
    terminations = PodTerminations()

    def pod_event(kind: str, pod: dict[str, Any]) -> None:
        for event in terminations.translate(kind, pod):
            out.put(event)

    def deployment_event(kind: str, deployment: dict[str, Any]) -> None:
        event = removed_event(deployment) if kind == "DELETED" else None
        if event is not None:
            out.put(event)

    watchers = [
        Watcher(
            "pods",
            core.list_namespaced_pod,
            namespace,
            MANAGED_SELECTOR,
            since_id,
            terminations.prime,
            pod_event,
            out,
            done,
        ),
        Watcher(
            "deployments",
            apps.list_namespaced_deployment,
            namespace,
            MANAGED_SELECTOR,
            since_id,
            lambda items: None,
            deployment_event,
            out,
            done,
        ),
    ]
    for watcher in watchers:
        watcher.start()
    try:
        while not stop.is_set():
            try:
                item = out.get(timeout=STOP_CHECK_SECONDS)
            except queue.Empty:
                continue
            if isinstance(item, RuntimeFailure):
                raise item
            yield item
    finally:
        done.set()
        for watcher in watchers:
            watcher.stop()


class Watcher(threading.Thread):
    """Watches one kind of object in a namespace, resuming by resourceVersion.

    ``on_listed(items)`` gets the objects of a fresh listing (at the start without a
    resourceVersion, and after the server said the old one is gone: HTTP 410); ``on_event(type,
    object)`` gets each ADDED/MODIFIED/DELETED. Failures that waiting cannot fix (credentials,
    RBAC) are put on ``out`` and end the thread; anything else is retried with backoff.
    """

    def __init__(
        self,
        kind: str,
        list_method: Callable[..., Any],
        namespace: str,
        selector: str,
        resource_version: str | None,
        on_listed: Callable[[list[dict[str, Any]]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        out: queue.Queue,
        done: threading.Event,
    ) -> None:
        super().__init__(name=f"kubernetes-watch-{kind}", daemon=True)
        self.kind = kind
        self.list_method = list_method
        self.namespace = namespace
        self.selector = selector
        self.resource_version = resource_version
        self.on_listed = on_listed
        self.on_event = on_event
        self.out = out
        self.done = done
        self._response: Any = None

    def run(self) -> None:
        backoff = MIN_BACKOFF
        while not self.done.is_set():
            try:
                if self.resource_version is None:
                    listing = api.call_json(
                        f"list {self.kind}",
                        self.list_method,
                        self.namespace,
                        label_selector=self.selector,
                    )
                    self.resource_version = resource_version(listing)
                    self.on_listed(listing.get("items") or [])
                self._watch()
                backoff = MIN_BACKOFF
            except RuntimeFailure as failure:
                if failure.details.get("status") == 410:
                    self.resource_version = None  # too old: list again
                    continue
                if failure.reason == "bad_config":
                    self.out.put(failure)
                    return
                self.done.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except (urllib3.exceptions.HTTPError, OSError):
                # The stream broke (server gone, read timeout, or stop() shut the socket).
                self.done.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception as exc:
                # Not to be retried blindly, and not to die silently: the reader raises it.
                self.out.put(RuntimeFailure(f"the {self.kind} watch failed: {exc!r}"))
                return

    def stop(self) -> None:
        response = self._response
        if response is not None:
            api.shutdown(response)

    def _watch(self) -> None:
        response = api.call(
            f"watch {self.kind}",
            self.list_method,
            self.namespace,
            label_selector=self.selector,
            watch=True,
            resource_version=self.resource_version or None,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(CONNECT_SECONDS, WATCH_SECONDS + 15),
        )
        self._response = response
        try:
            if self.done.is_set():  # stopped while connecting: stop() saw no response
                return
            for line in iter_resp_lines(response):
                if self.done.is_set():
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        self.resource_version = None
                        return
                    raise RuntimeFailure(
                        f"the {self.kind} watch failed: {obj.get('message')}",
                        details={"status": obj.get("code")},
                    )
                self.resource_version = resource_version(obj) or self.resource_version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.on_event(kind, obj)
        finally:
            self._response = None
            response.release_conn()


class PodTerminations:
    """Turns what the pod watch sees into ``exited``/``oom`` events, each termination once.

    A pod is reported many times (every status change), and a watch that reconnects may replay
    pods; a termination is news only the first time its key is seen. Terminations of pods being
    deleted are not crashes: something (a stop, a rollout, a scale-down) asked for them.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._pods: dict[str, dict[str, dict[str, Any]]] = {}

    def prime(self, pods: Iterable[dict[str, Any]]) -> None:
        """Remember these pods and their past terminations without reporting them."""
        for pod in pods:
            self._remember(pod)
            self._seen.update(key for key, _ in _terminations(pod))

    def translate(self, kind: str, pod: dict[str, Any]) -> list[RuntimeEvent]:
        slug = agent_slug(pod)
        if slug is None:
            return []
        if kind == "DELETED":
            self._forget(slug, pod)
            return []
        self._remember(pod)
        found = [(key, ended) for key, ended in _terminations(pod) if key not in self._seen]
        self._seen.update(key for key, _ in found)
        if is_terminating(pod):
            return []
        replica = self._replica(slug, pod)
        return [self._event(slug, replica, pod, ended) for _, ended in found]

    def _event(
        self, slug: str, replica: int, pod: dict[str, Any], ended: dict[str, Any]
    ) -> RuntimeEvent:
        oom = ended.get("reason") == OOM_KILLED
        code = ended.get("exitCode")
        return RuntimeEvent(
            "oom" if oom else "exited",
            slug,
            replica,
            parse_time(ended.get("finishedAt")) or time.time(),
            exit_code=code,
            signal=signal_of(code, ended.get("signal")),
            details={
                "pod": pod_name(pod),
                "namespace": meta(pod).get("namespace"),
                "reason": ended.get("reason"),
                "restarts": int(container_status(pod).get("restartCount") or 0),
                "oom": oom,
                "runtime": "kubernetes",
            },
            id=resource_version(pod),
        )

    def _remember(self, pod: dict[str, Any]) -> None:
        slug = agent_slug(pod)
        if slug is not None:
            self._pods.setdefault(slug, {})[pod_name(pod)] = pod

    def _forget(self, slug: str, pod: dict[str, Any]) -> None:
        self._pods.get(slug, {}).pop(pod_name(pod), None)
        uid = meta(pod).get("uid") or pod_name(pod)
        self._seen = {key for key in self._seen if not key.startswith(f"{uid}/")}

    def _replica(self, slug: str, pod: dict[str, Any]) -> int:
        ordered = [pod_name(p) for p in live_pods(self._pods.get(slug, {}).values())]
        return ordered.index(pod_name(pod)) if pod_name(pod) in ordered else 0


def _terminations(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every termination the pod's status shows, each with its key."""
    status = container_status(pod)
    found = []
    for ended in (
        (status.get("state") or {}).get("terminated"),
        (status.get("lastState") or {}).get("terminated"),
    ):
        if ended:
            found.append((termination_key(pod, ended), ended))
    if not found and waiting_reason(pod) == CRASH_LOOP:
        found.append((crash_loop_key(pod), {"reason": CRASH_LOOP}))
    return found


def removed_event(deployment: dict[str, Any]) -> RuntimeEvent | None:
    """A managed Deployment deleted (by remove, or behind the portal's back)."""
    slug = agent_slug(deployment)
    if slug is None:
        return None
    return RuntimeEvent(
        "removed",
        slug,
        0,
        time.time(),
        details={
            "deployment": meta(deployment).get("name"),
            "namespace": meta(deployment).get("namespace"),
            "runtime": "kubernetes",
        },
        id=resource_version(deployment),
    )
