"""Drift: how the engine's labelled containers differ from what the portal expects."""

from __future__ import annotations

from typing import Any

from ..base import AgentSpec
from .containers import container_name, name_of


def find_drift(
    by_slug: dict[str, dict[int, dict[str, Any]]], expected: list[tuple[AgentSpec, str]]
) -> list[dict[str, Any]]:
    """Findings (``missing``, ``orphan``, ``unexpected_state``) from the labelled containers
    (as the engine lists them, by slug and replica) and the agents the portal expects here with
    their portal states."""
    findings: list[dict[str, Any]] = []
    expected_slugs = set()
    for spec, state in expected:
        expected_slugs.add(spec.slug)
        found = by_slug.get(spec.slug, {})
        for replica in range(spec.replicas):
            summary = found.get(replica)
            name = container_name(spec.slug, replica)
            if summary is None:
                findings.append(
                    _finding(
                        spec.slug,
                        "missing",
                        f"Container {name} is missing: it was removed outside the portal "
                        f"while {spec.name} is {state}.",
                        replica=replica,
                    )
                )
            elif unexpected_state(summary["State"], state):
                findings.append(
                    _finding(
                        spec.slug,
                        "unexpected_state",
                        f"Container {name} is {summary['State']} while {spec.name} is {state}.",
                        replica=replica,
                        container_id=summary["Id"],
                    )
                )
        for replica in sorted(set(found) - set(range(spec.replicas))):
            summary = found[replica]
            findings.append(
                _finding(
                    spec.slug,
                    "orphan",
                    f"Container {name_of(summary)} is replica {replica} of {spec.name}, which "
                    f"has {spec.replicas} replica(s).",
                    replica=replica,
                    container_id=summary["Id"],
                )
            )
    for slug in sorted(set(by_slug) - expected_slugs):
        for replica, summary in sorted(by_slug[slug].items()):
            findings.append(
                _finding(
                    slug,
                    "orphan",
                    f"Container {name_of(summary)} is labelled for agent {slug!r}, which the "
                    "portal has not deployed on Docker.",
                    replica=replica,
                    container_id=summary["Id"],
                )
            )
    return findings


def unexpected_state(container_state: str, portal_state: str) -> bool:
    """Whether a container's state (as listed: running, paused, exited, created, dead...)
    contradicts the agent's state in the portal."""
    live = container_state in ("running", "paused", "restarting")
    if portal_state in ("STOPPED", "DEPLOYED"):
        return live
    if portal_state == "RUNNING":
        return not live or container_state == "paused"
    if portal_state == "SUSPENDED":
        return container_state != "paused"
    return False  # ERRORED: the monitor is restarting it, or it waits for an operator


def _finding(slug: str, kind: str, message: str, **details: Any) -> dict[str, Any]:
    return {"slug": slug, "kind": kind, "message": message, **details}
