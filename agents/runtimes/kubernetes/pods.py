"""Reading Deployments and pods as the API answers them (plain dicts): pure functions, no I/O."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ..base import ReplicaStatus
from .objects import (
    AGENT_LABEL,
    AGENT_PORT,
    CONTAINER,
    MANAGED_LABEL,
    REPLICAS_ANNOTATION,
    STOPPED_ANNOTATION,
    SUSPENDED_ANNOTATION,
)

IMAGE_ERRORS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CONFIG_ERRORS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
CRASH_LOOP = "CrashLoopBackOff"
OOM_KILLED = "OOMKilled"
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


# --- objects --------------------------------------------------------------------------------


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return meta(obj).get("labels") or {}


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return meta(obj).get("annotations") or {}


def agent_slug(obj: dict[str, Any]) -> str | None:
    """The slug of a managed object, or None for one that is not ours."""
    found = labels(obj)
    return found.get(AGENT_LABEL) if found.get(MANAGED_LABEL) == "true" else None


def resource_version(obj: dict[str, Any]) -> str:
    return str(meta(obj).get("resourceVersion") or "")


# --- Deployments ----------------------------------------------------------------------------


def desired_replicas(deployment: dict[str, Any]) -> int:
    return int((deployment.get("spec") or {}).get("replicas") or 0)


def ready_replicas(deployment: dict[str, Any]) -> int:
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def intended_replicas(deployment: dict[str, Any], default: int) -> int:
    """The replica count the portal last asked for (kept while scaled to 0)."""
    value = annotations_of(deployment).get(REPLICAS_ANNOTATION, "")
    return int(value) if value.isdecimal() and int(value) > 0 else default


def is_suspended(deployment: dict[str, Any]) -> bool:
    return annotations_of(deployment).get(SUSPENDED_ANNOTATION) == "true"


def was_stopped(deployment: dict[str, Any]) -> bool:
    return bool(annotations_of(deployment).get(STOPPED_ANNOTATION))


def rollout_observed(deployment: dict[str, Any]) -> bool:
    """Whether the controller has seen the latest spec (always true where nothing counts)."""
    generation = meta(deployment).get("generation")
    observed = (deployment.get("status") or {}).get("observedGeneration")
    return generation is None or observed is None or int(observed) >= int(generation)


# --- pods -----------------------------------------------------------------------------------


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def live_pods(pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods not being deleted, oldest first: their position is the replica number.

    Pods of a Deployment have no ordinal; this order is stable while the pods live, and a
    replaced pod takes the place of the one it replaced at the end of the list.
    """
    alive = [pod for pod in pods if not is_terminating(pod)]
    return sorted(alive, key=lambda pod: (meta(pod).get("creationTimestamp") or "", pod_name(pod)))


def pod_name(pod: dict[str, Any]) -> str:
    return str(meta(pod).get("name") or "")


def container_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER:
            return status
    return statuses[0] if statuses else {}


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def waiting_reason(pod: dict[str, Any]) -> str:
    return ((container_status(pod).get("state") or {}).get("waiting") or {}).get("reason") or ""


def last_termination(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The container's current termination if it is terminated, else its previous one."""
    status = container_status(pod)
    return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
        "terminated"
    )


def replica_status(replica: int, pod: dict[str, Any]) -> ReplicaStatus:
    status = container_status(pod)
    state = status.get("state") or {}
    phase = (pod.get("status") or {}).get("phase")
    if "running" in state:
        return ReplicaStatus(
            replica,
            "running",
            port=AGENT_PORT,
            started_at=parse_time(state["running"].get("startedAt")),
        )
    ended = last_termination(pod) or {}
    if (
        "terminated" in state
        or waiting_reason(pod) == CRASH_LOOP
        or phase in ("Failed", "Succeeded")
    ):
        code = ended.get("exitCode")
        return ReplicaStatus(
            replica,
            "exited",
            port=AGENT_PORT,
            exit_code=code,
            signal=signal_of(code, ended.get("signal")),
            started_at=parse_time(ended.get("startedAt")),
        )
    return ReplicaStatus(replica, "created", port=AGENT_PORT)


def describe_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What an operator wants to see of a pod that is not ready."""
    status = container_status(pod)
    waiting = (status.get("state") or {}).get("waiting") or {}
    ended = last_termination(pod) or {}
    conditions = {
        c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type")
    }
    unscheduled = conditions.get("PodScheduled", {})
    return {
        "pod": pod_name(pod),
        "phase": (pod.get("status") or {}).get("phase"),
        "ready": is_ready(pod),
        "restarts": int(status.get("restartCount") or 0),
        "waiting": waiting.get("reason"),
        "message": waiting.get("message")
        or (unscheduled.get("message") if unscheduled.get("status") == "False" else None),
        "last_exit_code": ended.get("exitCode"),
        "last_exit_reason": ended.get("reason"),
    }


def start_problem(pod: dict[str, Any]) -> tuple[str, str] | None:
    """Why this pod will not become ready by waiting longer: ``(reason, what happened)``
    with reason one of the runtime failure reasons, or None while it may still come up."""
    if is_terminating(pod):
        return None
    waiting = waiting_reason(pod)
    status = container_status(pod)
    message = ((status.get("state") or {}).get("waiting") or {}).get("message") or ""
    if waiting in IMAGE_ERRORS:
        return "image_missing", f"its image cannot be pulled ({waiting}: {message or 'no detail'})"
    if waiting in CONFIG_ERRORS:
        return (
            "bad_config",
            f"its container cannot be created ({waiting}: {message or 'no detail'})",
        )
    ended = last_termination(pod)
    if ended is not None:
        if ended.get("reason") == OOM_KILLED:
            return "oom", "it was killed for exceeding its memory limit"
        return "crashed_on_start", f"its container {describe_exit(ended)}"
    if waiting == CRASH_LOOP:
        return "crashed_on_start", "its container keeps crashing (CrashLoopBackOff)"
    return None


def describe_exit(ended: dict[str, Any]) -> str:
    code = ended.get("exitCode")
    number = signal_of(code, ended.get("signal"))
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code} ({ended.get('reason') or 'no reason given'})"


def signal_of(exit_code: Any, given: Any = None) -> int | None:
    """The signal a container died of: the one reported, else read from a shell-style exit
    status above 128 (137 is SIGKILL, 143 SIGTERM)."""
    if isinstance(given, int) and given > 0:
        return given
    if isinstance(exit_code, int) and 128 < exit_code < 160:
        return exit_code - 128
    return None


def termination_key(pod: dict[str, Any], ended: dict[str, Any]) -> str:
    """Identifies one container termination, so the same one seen again is not news."""
    uid = meta(pod).get("uid") or pod_name(pod)
    mark = ended.get("containerID") or ended.get("finishedAt") or ended.get("startedAt") or ""
    restarts = container_status(pod).get("restartCount") or 0
    return f"{uid}/{mark or restarts}/{ended.get('exitCode')}"


def crash_loop_key(pod: dict[str, Any]) -> str:
    uid = meta(pod).get("uid") or pod_name(pod)
    return f"{uid}/crashloop/{container_status(pod).get('restartCount') or 0}"


# --- events ---------------------------------------------------------------------------------

# ReplicaSet names end in a pod-template hash written with this alphabet (no vowels), so
# waooaw-wow-<hash> is never mistaken for waooaw-wow-memory.
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def recent_events(
    events: Iterable[dict[str, Any]], deployment: str, pods: set[str], limit: int = 10
) -> list[dict[str, Any]]:
    """The last ``limit`` events about the Deployment, its ReplicaSets and these pods."""
    replica_set = re.compile(rf"^{re.escape(deployment)}-[{_HASH_ALPHABET}]{{6,10}}$")
    relevant = []
    for event in events:
        about = event.get("involvedObject") or {}
        subject = str(about.get("name") or "")
        if (
            subject == deployment
            or subject in pods
            or (about.get("kind") == "ReplicaSet" and replica_set.match(subject))
        ):
            relevant.append(event)
    relevant.sort(key=_event_time)
    return [
        {
            "object": f"{(e.get('involvedObject') or {}).get('kind')}/"
            f"{(e.get('involvedObject') or {}).get('name')}",
            "type": e.get("type"),
            "reason": e.get("reason"),
            "message": e.get("message"),
            "count": e.get("count"),
            "at": _event_time(e),
        }
        for e in relevant[-limit:]
    ]


def _event_time(event: dict[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or meta(event).get("creationTimestamp")
        or ""
    )


# --- quantities and times --------------------------------------------------------------------

_CPU_UNITS = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0}
_MEMORY_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "": 1,
}


def cpu_cores(quantity: str) -> float:
    number, unit = _split_quantity(quantity)
    return number * _CPU_UNITS.get(unit, 1.0)


def memory_bytes(quantity: str) -> int:
    number, unit = _split_quantity(quantity)
    return int(number * _MEMORY_UNITS.get(unit, 1))


def _split_quantity(quantity: str) -> tuple[float, str]:
    match = re.match(r"^([0-9.]+)([A-Za-z]*)$", str(quantity).strip())
    if not match:
        return 0.0, ""
    return float(match[1]), match[2]


def parse_time(value: str | None) -> float | None:
    """A Kubernetes (RFC 3339) time as a Unix time."""
    key = time_key(value)
    if key is None:
        return None
    whole, fraction = key.split(".")
    stamp = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return stamp + int(fraction.rstrip("Z")) / 1e9


def time_key(value: str | None) -> str | None:
    """The time normalised to UTC with nine fraction digits, so such strings sort in order."""
    match = _TIMESTAMP.match(value or "")
    if not match:
        return None
    moment = datetime.fromisoformat(match[1] + ("+00:00" if match[3] == "Z" else match[3]))
    utc = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return f"{utc}.{(match[2] or '').ljust(9, '0')}Z"


def iso_millis(key: str) -> str:
    """A normalised time key as agentd writes times: ``2025-01-31T12:00:00.123Z``."""
    whole, fraction = key.rstrip("Z").split(".")
    return f"{whole}.{fraction[:3]}Z"


def time_key_of(unix: float) -> str:
    moment = datetime.fromtimestamp(unix, UTC).replace(tzinfo=None)
    return f"{moment.isoformat(timespec='seconds')}.{moment.microsecond * 1000:09d}Z"
