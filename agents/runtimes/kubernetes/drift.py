"""How the managed objects in the namespace differ from what the portal expects (pure)."""

from __future__ import annotations

from typing import Any

from ..base import AgentSpec
from .objects import configmap_name, deployment_name, service_name
from .pods import desired_replicas, meta

NAMES = {"Deployment": deployment_name, "Service": service_name, "ConfigMap": configmap_name}


def find_drift(
    found: dict[str, dict[str, dict[str, Any]]],
    expected: list[tuple[AgentSpec, str]],
    namespace: str,
) -> list[dict[str, Any]]:
    """``found`` maps each kind (Deployment, Service, ConfigMap) to the managed objects of that
    kind by slug; ``expected`` pairs the portal's deployed agents with their states. Answers
    ``missing``, ``unexpected_state`` and ``orphan`` findings as the Runtime interface says."""
    items = []
    for spec, state in expected:
        for kind, objects in found.items():
            if spec.slug not in objects:
                name = NAMES[kind](spec.slug)
                message = f"{kind} {name} is missing from namespace {namespace}"
                items.append(_finding(spec.slug, "missing", message))
        deployment = found.get("Deployment", {}).get(spec.slug)
        wrong = None if deployment is None else _state_mismatch(deployment, state)
        if wrong:
            items.append(_finding(spec.slug, "unexpected_state", wrong))
    wanted = {spec.slug for spec, _ in expected}
    for slug in sorted({slug for objects in found.values() for slug in objects} - wanted):
        kinds = ", ".join(kind for kind, objects in found.items() if slug in objects)
        message = (
            f"{kinds} labelled for {slug} in namespace {namespace}, but no deployed agent of "
            "the portal owns them"
        )
        items.append(_finding(slug, "orphan", message))
    return items


def _state_mismatch(deployment: dict[str, Any], state: str) -> str | None:
    replicas = desired_replicas(deployment)
    name = meta(deployment).get("name")
    if state == "RUNNING" and replicas == 0:
        return f"Deployment {name} is scaled to 0 while the portal says RUNNING"
    if state in ("DEPLOYED", "STOPPED", "SUSPENDED") and replicas > 0:
        return f"Deployment {name} wants {replicas} pod(s) while the portal says {state}"
    return None  # ERRORED: scaled either way, depending on how it failed


def _finding(slug: str, kind: str, message: str) -> dict[str, Any]:
    return {"slug": slug, "kind": kind, "message": message}
