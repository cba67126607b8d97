"""The Kubernetes objects one agent is made of, built as plain dicts (pure functions, no I/O).

Per agent, in the runtime's namespace:

- ConfigMap ``waooaw-<slug>-config``: agentd's initial config, mounted as a file;
- Deployment ``waooaw-<slug>``: the agentd pods, created with 0 replicas (deploy does not start);
- Service ``waooaw-<slug>``: a ClusterIP in front of the pods' port 8080.

Every object carries the agent's labels (``waooaw.managed=true``, ``waooaw.agent=<slug>``...), so
the runtime finds its own objects by label and can tell an orphan from a stranger.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from ..base import AgentSpec, RuntimeFailure

CONTAINER = "agentd"
AGENT_PORT = 8080
PORT_NAME = "http"
CONFIG_DIR = "/etc/waooaw"
CONFIG_KEY = "config.json"
DATA_DIR = "/data"
# The image runs agentd as this numeric user (runAsNonRoot can only verify a numeric one).
AGENT_UID = 10001

MANAGED_LABEL = "waooaw.managed"
AGENT_LABEL = "waooaw.agent"
VERSION_LABEL = "waooaw.version"
MANAGED_SELECTOR = f"{MANAGED_LABEL}=true"

# Annotations on the Deployment: what the portal last asked for, kept on the object itself so
# that any portal process (and `kubectl describe`) can tell a suspended agent from a stopped one.
REPLICAS_ANNOTATION = "waooaw.replicas"
SUSPENDED_ANNOTATION = "waooaw.suspended"
STOPPED_ANNOTATION = "waooaw.stopped-at"
CONFIG_HASH_ANNOTATION = "waooaw.config-hash"
# The annotation `kubectl rollout restart` sets; changing it rolls every pod.
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"

# "waooaw-" + slug must be a DNS-1035 label (Service names), at most 63 characters.
SLUG_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,54}[a-z0-9])?$")
# Valid both as an image tag and as a label value.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
# Variables the runtime sets itself; an agent's own env cannot override them.
RESERVED_ENV = frozenset(
    {
        "AGENT_SLUG",
        "AGENT_NAME",
        "AGENT_VERSION",
        "AGENT_HOST",
        "AGENT_PORT",
        "AGENT_CONFIG_FILE",
        "AGENT_GRACE_SECONDS",
        "AGENT_INSTANCE",
        "REDIS_URL",
    }
)
REDIS_SECRET_KEY = "redis-url"


def deployment_name(slug: str) -> str:
    return f"waooaw-{slug}"


def service_name(slug: str) -> str:
    return f"waooaw-{slug}"


def configmap_name(slug: str) -> str:
    return f"waooaw-{slug}-config"


def check_slug(slug: str) -> None:
    """Refuse, before touching the cluster, a slug that cannot name Kubernetes objects."""
    if not SLUG_PATTERN.match(slug):
        raise RuntimeFailure(
            f"the slug {slug!r} cannot name Kubernetes objects: use lowercase letters, "
            "digits and '-', starting with a letter, at most 56 characters.",
            reason="bad_config",
            details={"slug": slug},
        )


def check_spec(spec: AgentSpec) -> None:
    """Refuse, before touching the cluster, what cannot name, tag or run as Kubernetes objects."""
    check_slug(spec.slug)
    if not VERSION_PATTERN.match(spec.version):
        raise RuntimeFailure(
            f"{spec.name}'s version {spec.version!r} cannot be an image tag and a label: use "
            "letters, digits, '.', '_' and '-' (at most 63 characters).",
            reason="bad_config",
            details={"version": spec.version},
        )
    if spec.replicas < 1:
        raise RuntimeFailure(
            f"{spec.name} must have at least one replica (got {spec.replicas}).",
            reason="bad_config",
            details={"replicas": spec.replicas},
        )


def selector_labels(slug: str) -> dict[str, str]:
    """The labels the Deployment and the Service select pods by (immutable once created)."""
    return {"app.kubernetes.io/name": "waooaw-agent", AGENT_LABEL: slug}


def agent_labels(spec: AgentSpec) -> dict[str, str]:
    return {
        **selector_labels(spec.slug),
        "app.kubernetes.io/instance": spec.slug,
        "app.kubernetes.io/version": spec.version,
        "app.kubernetes.io/managed-by": "waooaw-portal",
        MANAGED_LABEL: "true",
        VERSION_LABEL: spec.version,
    }


def agent_selector(slug: str) -> str:
    """A label selector for everything of one agent."""
    return f"{MANAGED_SELECTOR},{AGENT_LABEL}={slug}"


def config_json(spec: AgentSpec) -> str:
    return json.dumps(spec.config, indent=2, sort_keys=True)


def build_configmap(spec: AgentSpec, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(spec.slug),
            "namespace": namespace,
            "labels": agent_labels(spec),
        },
        "data": {CONFIG_KEY: config_json(spec)},
    }


def build_service(spec: AgentSpec, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(spec.slug),
            "namespace": namespace,
            "labels": agent_labels(spec),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec.slug),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": AGENT_PORT,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_deployment(
    spec: AgentSpec,
    namespace: str,
    image: str,
    redis_url: str,
    redis_secret: str | None = None,
    replicas: int = 0,
) -> dict[str, Any]:
    """The agent's Deployment. ``replicas`` is 0 when deployed: start scales it up.

    The Redis URL (it may hold a password) is taken from the Secret ``redis_secret`` (key
    ``redis-url``) when one is named, else written into the pod spec as a value.
    """
    labels = agent_labels(spec)
    memory = f"{spec.memory_mb}Mi"
    cpu = f"{spec.cpu_millicores}m"
    config_hash = hashlib.sha256(config_json(spec).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(spec.slug),
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                REPLICAS_ANNOTATION: str(spec.replicas),
                SUSPENDED_ANNOTATION: "false",
                "waooaw.name": spec.name,
            },
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(spec.slug)},
            # One new pod at a time, an old one goes only once the new one is ready.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": _pod_spec(spec, image, redis_url, redis_secret, cpu, memory),
            },
        },
    }


def _pod_spec(
    spec: AgentSpec, image: str, redis_url: str, redis_secret: str | None, cpu: str, memory: str
) -> dict[str, Any]:
    return {
        # Agents never talk to the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # agentd stops itself within grace_seconds; the kubelet kills it a little later.
        "terminationGracePeriodSeconds": math.ceil(spec.grace_seconds) + 2,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "fsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": image_ref(image, spec.version),
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": PORT_NAME, "containerPort": AGENT_PORT, "protocol": "TCP"}],
                "env": _environment(spec, redis_url, redis_secret),
                "resources": {
                    "requests": {"cpu": cpu, "memory": memory},
                    "limits": {"cpu": cpu, "memory": memory},
                },
                **_probes(spec),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                    # The image's AGENT_DATA_DIR; pods keep no data across restarts.
                    {"name": "data", "mountPath": DATA_DIR},
                ],
            }
        ],
        "volumes": [
            {
                "name": "config",
                "configMap": {
                    "name": configmap_name(spec.slug),
                    "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}],
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }


# The probes of an agent without probe settings of its own.
DEFAULT_LIVENESS = {
    "httpGet": {"path": "/healthz", "port": PORT_NAME},
    "initialDelaySeconds": 5,
    "periodSeconds": 10,
    "timeoutSeconds": 2,
    "failureThreshold": 3,
}
DEFAULT_READINESS = {
    "httpGet": {"path": "/readyz", "port": PORT_NAME},
    "periodSeconds": 2,
    "timeoutSeconds": 2,
    "failureThreshold": 2,
}
# An HTTP probe expecting a status the kubelet's httpGet cannot check (it passes 200-399 only):
# the same GET run in the pod with the image's Python, passing on exactly that status.
HTTP_STATUS_CHECK = (
    "import http.client as h, sys; c = h.HTTPConnection('127.0.0.1', {port}, timeout={timeout}); "
    "c.request('GET', {path}); sys.exit(0 if c.getresponse().status == {status} else 1)"
)


def _probes(spec: AgentSpec) -> dict[str, Any]:
    """The container's livenessProbe and readinessProbe: from the agent's probe settings
    (``agents.probes.schema``) when it has its own, else the defaults above."""
    settings = spec.probes or {}
    if not settings:
        return {"livenessProbe": dict(DEFAULT_LIVENESS), "readinessProbe": dict(DEFAULT_READINESS)}
    liveness = probe_object(settings["liveness"])
    # Kubernetes refuses a liveness successThreshold other than 1 (one pass is alive again).
    liveness["successThreshold"] = 1
    liveness["initialDelaySeconds"] = DEFAULT_LIVENESS["initialDelaySeconds"]
    return {"livenessProbe": liveness, "readinessProbe": probe_object(settings["readiness"])}


def probe_object(probe: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes Probe from one probe setting: ``httpGet`` (an expected status from 200 to
    399, which the kubelet counts as success), ``tcpSocket`` (the agent's port by name, or the
    port given) or ``exec``; seconds rounded up to whole ones."""
    kind = probe["kind"]
    timeout = math.ceil(float(probe["timeout_seconds"]))
    action: dict[str, Any]
    if kind == "http" and 200 <= int(probe["status"]) <= 399:
        action = {"httpGet": {"path": probe["path"], "port": PORT_NAME}}
    elif kind == "http":
        code = HTTP_STATUS_CHECK.format(
            port=AGENT_PORT,
            timeout=timeout,
            path=repr(str(probe["path"])),
            status=int(probe["status"]),
        )
        action = {"exec": {"command": ["python3", "-c", code]}}
    elif kind == "tcp":
        action = {"tcpSocket": {"port": int(probe["port"]) if probe.get("port") else PORT_NAME}}
    else:
        action = {"exec": {"command": list(probe["command"])}}
    return {
        **action,
        "periodSeconds": int(probe["interval_seconds"]),
        "timeoutSeconds": timeout,
        "failureThreshold": int(probe["failure_threshold"]),
        "successThreshold": int(probe["success_threshold"]),
    }


def _environment(spec: AgentSpec, redis_url: str, redis_secret: str | None) -> list[dict]:
    redis: dict[str, Any] = (
        {"valueFrom": {"secretKeyRef": {"name": redis_secret, "key": REDIS_SECRET_KEY}}}
        if redis_secret
        else {"value": redis_url}
    )
    env: list[dict[str, Any]] = [
        {"name": "AGENT_SLUG", "value": spec.slug},
        {"name": "AGENT_NAME", "value": spec.name},
        {"name": "AGENT_VERSION", "value": spec.version},
        {"name": "AGENT_HOST", "value": "0.0.0.0"},
        {"name": "AGENT_PORT", "value": str(AGENT_PORT)},
        {"name": "AGENT_CONFIG_FILE", "value": f"{CONFIG_DIR}/{CONFIG_KEY}"},
        {"name": "AGENT_GRACE_SECONDS", "value": f"{spec.grace_seconds:g}"},
        # Pods of a Deployment have no ordinal, so AGENT_REPLICA is not set (agentd takes 0);
        # the pod's name tells the replicas apart (see the package's docstring).
        {"name": "AGENT_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "REDIS_URL", **redis},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    env.extend(
        {"name": name, "value": value}
        for name, value in sorted(spec.env.items())
        if name not in RESERVED_ENV and name != "PYTHONUNBUFFERED"
    )
    return env


def image_ref(image: str, version: str) -> str:
    """``<image>:<version>``, unless ``image`` already pins a tag or digest (as the Docker
    runtime names images)."""
    if "@" in image or ":" in image.rsplit("/", 1)[-1]:
        return image
    return f"{image}:{version}"


def scale_patch(
    replicas: int,
    *,
    intended: int | None = None,
    suspended: bool = False,
    stopped_at: str | None = None,
) -> dict[str, Any]:
    """A merge patch setting the replica count and the annotations that explain it."""
    annotations: dict[str, Any] = {
        SUSPENDED_ANNOTATION: "true" if suspended else "false",
        STOPPED_ANNOTATION: stopped_at,  # None removes it
    }
    if intended is not None:
        annotations[REPLICAS_ANNOTATION] = str(intended)
    return {"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}}


def restart_patch(restarted_at: str) -> dict[str, Any]:
    return {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: restarted_at}}}}
    }
