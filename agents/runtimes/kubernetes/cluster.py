"""The agents' namespace of a cluster, as the runtime reads and writes it: the namespace itself,
each agent's Deployment, its pods, the managed objects, the recent events.

Every call goes through :mod:`.api` (plain JSON, RuntimeFailures); the client is made on first
use, so constructing the runtime never fails for want of credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from ..base import AgentSpec, RuntimeFailure
from . import api
from .api import MERGE_PATCH, Conflict, NotFound
from .objects import MANAGED_SELECTOR, agent_selector, deployment_name
from .pods import agent_slug, pod_name, recent_events


class Cluster:
    """The namespace ``namespace`` through ``api_client``, or else the credentials of
    KUBECONFIG or (``in_cluster``) the pod's service account."""

    def __init__(
        self, namespace: str, in_cluster: bool, api_client: client.ApiClient | None = None
    ) -> None:
        self.namespace = namespace
        self.in_cluster = in_cluster
        self._api_client = api_client

    def api_client(self) -> client.ApiClient:
        if self._api_client is None:
            self._api_client = api.load_api_client(self.in_cluster)
        return self._api_client

    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client())

    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client())

    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client())

    # --- the namespace ---------------------------------------------------------------------

    def ensure_namespace(self) -> bool:
        """Make sure the namespace exists; True when it had to be created."""
        core = self.core()
        try:
            api.call_json(f"read namespace {self.namespace}", core.read_namespace, self.namespace)
            return False
        except NotFound:
            pass
        except RuntimeFailure as failure:
            if failure.details.get("status") != 403:
                raise
            # A namespaced Role cannot read Namespace objects (they are cluster-wide). Being
            # allowed to list Deployments in it means our Role is bound there: it exists.
            api.call_json(
                f"list Deployments in namespace {self.namespace}",
                self.apps().list_namespaced_deployment,
                self.namespace,
                label_selector=MANAGED_SELECTOR,
                limit=1,
            )
            return False
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        try:
            api.call_json(f"create namespace {self.namespace}", core.create_namespace, body)
        except Conflict:
            return False  # created meanwhile
        except RuntimeFailure as failure:
            if failure.details.get("status") not in (401, 403):
                raise
            raise RuntimeFailure(
                f"namespace {self.namespace} does not exist and the portal may not create it: "
                "kubectl apply -f deploy/kubernetes/namespace.yaml (or set KUBERNETES_NAMESPACE "
                "to an existing namespace).",
                reason="not_found",
                details={"namespace": self.namespace},
            ) from failure
        return True

    # --- objects ---------------------------------------------------------------------------

    def apply(
        self, obj: dict[str, Any], create: Callable[..., Any], patch: Callable[..., Any]
    ) -> str:
        """Create the object, or bring the existing one in line (JSON merge patch: lists such
        as env and ports are replaced whole). Answers ``created`` or ``updated``."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        try:
            api.call_json(f"create {kind} {name}", create, self.namespace, obj)
            return "created"
        except Conflict:
            api.call_json(
                f"update {kind} {name}", patch, name, self.namespace, obj, _content_type=MERGE_PATCH
            )
            return "updated"

    def delete(self, kind: str, delete: Callable[..., Any], name: str) -> bool:
        """Delete the object; False when there was none."""
        try:
            api.call_json(
                f"delete {kind} {name}",
                delete,
                name,
                self.namespace,
                propagation_policy="Background",
            )
        except NotFound:
            return False
        return True

    def read_deployment(self, spec: AgentSpec) -> dict[str, Any]:
        name = deployment_name(spec.slug)
        try:
            return api.call_json(
                f"read Deployment {name}",
                self.apps().read_namespaced_deployment,
                name,
                self.namespace,
            )
        except NotFound as missing:
            raise NotFound(
                f"{spec.name} is not deployed on Kubernetes (no Deployment {name} in namespace "
                f"{self.namespace}); deploy it first.",
                details={"slug": spec.slug, "namespace": self.namespace},
            ) from missing

    def patch_deployment(self, spec: AgentSpec, body: dict[str, Any]) -> dict[str, Any]:
        name = deployment_name(spec.slug)
        return api.call_json(
            f"update Deployment {name}",
            self.apps().patch_namespaced_deployment,
            name,
            self.namespace,
            body,
            _content_type=MERGE_PATCH,
        )

    def list_pods(self, slug: str) -> list[dict[str, Any]]:
        listing = api.call_json(
            f"list the pods of {slug}",
            self.core().list_namespaced_pod,
            self.namespace,
            label_selector=agent_selector(slug),
        )
        # Checked again here: the selector is the server's job, but a stand-in may ignore it.
        return [pod for pod in listing.get("items") or [] if agent_slug(pod) == slug]

    def list_managed(self, list_method: Callable[..., Any]) -> dict[str, dict[str, Any]]:
        """The managed objects ``list_method`` lists, by the slug of their agent."""
        listing = api.call_json(
            "list managed objects", list_method, self.namespace, label_selector=MANAGED_SELECTOR
        )
        found = {}
        for item in listing.get("items") or []:
            slug = agent_slug(item)
            if slug is not None:
                found[slug] = item
        return found

    def recent_events(self, spec: AgentSpec, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The last events about the Deployment, its ReplicaSets and these pods (none when the
        portal may not read them)."""
        try:
            listing = api.call_json(
                "list events", self.core().list_namespaced_event, self.namespace
            )
        except RuntimeFailure:
            return []
        names = {pod_name(pod) for pod in pods}
        return recent_events(listing.get("items") or [], deployment_name(spec.slug), names)
