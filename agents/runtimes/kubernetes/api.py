"""The Kubernetes API as the runtime uses it: credentials, JSON in and out, clear failures.

Answers are read as plain JSON (``_preload_content=False``) rather than the client's models: the
runtime only reads a handful of fields, and plain dicts are what the object builders produce and
what ``kubernetes-validate`` checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..base import RuntimeFailure

# (connect, read) seconds for ordinary calls; watches and log streams set their own.
REQUEST_TIMEOUT = (5.0, 30.0)
MERGE_PATCH = "application/merge-patch+json"
CHECK_CONFIG = (
    "check KUBECONFIG (or KUBERNETES_IN_CLUSTER=true inside the cluster) and that the API "
    'server answers: kubectl --kubeconfig "$KUBECONFIG" get --raw /readyz'
)


class NotFound(RuntimeFailure):
    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, reason="not_found", details=details)


class Conflict(RuntimeFailure):
    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, reason="unknown", details=details)


def load_api_client(in_cluster: bool) -> client.ApiClient:
    """An API client from the pod's service account, or from KUBECONFIG (~/.kube/config)."""
    configuration = client.Configuration()
    source = "the in-cluster service account" if in_cluster else _kubeconfig_path()
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=_kubeconfig_path(), client_configuration=configuration
            )
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        raise RuntimeFailure(
            f"cannot load Kubernetes credentials from {source}: {exc}; {CHECK_CONFIG}.",
            reason="engine_unreachable",
            details={"source": source, "error": str(exc)},
        ) from exc
    # Fail over to an error quickly: the runtime retries where waiting makes sense.
    configuration.retries = 1
    return client.ApiClient(configuration)


def _kubeconfig_path() -> str:
    # Read at call time: the client reads KUBECONFIG once, when it is imported.
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def call(what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an API method for its raw response; failures become RuntimeFailures.

    ``what`` says what was being done ("scale Deployment waooaw-wow-cache"), for messages.
    """
    kwargs.setdefault("_preload_content", False)
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    try:
        return method(*args, **kwargs)
    except ApiException as exc:
        raise api_failure(exc, what) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise unreachable(exc, what) from exc


def call_json(what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    response = call(what, method, *args, **kwargs)
    try:
        data = response.data
    finally:
        response.release_conn()
    try:
        answer = json.loads(data or b"{}")
    except ValueError as exc:
        raise RuntimeFailure(
            f"cannot {what}: the API server answered something that is not JSON.",
            reason="unknown",
            details={"answer": data[:500].decode(errors="replace")},
        ) from exc
    return answer if isinstance(answer, dict) else {"value": answer}


def api_failure(exc: ApiException, what: str) -> RuntimeFailure:
    status = exc.status or 0
    body = _status_body(exc)
    said = body.get("message") or exc.reason or "no message"
    details = {"status": status, "reason": body.get("reason") or exc.reason, "message": said}
    if status == 404:
        return NotFound(f"cannot {what}: not found ({said}).", details)
    if status == 409:
        return Conflict(f"cannot {what}: conflict ({said}).", details)
    if status in (401, 403):
        return RuntimeFailure(
            f"cannot {what}: the API server refused the portal's credentials ({said}). Check the "
            "user in KUBECONFIG, or that deploy/kubernetes/rbac.yaml is applied to this namespace.",
            reason="bad_config",
            details=details,
        )
    if status in (400, 422):
        return RuntimeFailure(f"cannot {what}: refused as invalid ({said}).", "bad_config", details)
    if status in (0, 502, 503, 504):
        failure = unreachable(exc, what)
        failure.details.update(details)
        return failure
    return RuntimeFailure(
        f"cannot {what}: the API server answered {status} ({said}).", "unknown", details
    )


def unreachable(exc: BaseException, what: str) -> RuntimeFailure:
    return RuntimeFailure(
        f"cannot {what}: the Kubernetes API server is unreachable ({_short(exc)}); {CHECK_CONFIG}.",
        reason="engine_unreachable",
        details={"error": _short(exc)},
    )


def shutdown(response: Any) -> None:
    """Unblock a thread reading a streamed response, from another thread."""
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _short(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason or exc)
    return text if len(text) <= 300 else text[:297] + "..."
