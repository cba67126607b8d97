"""What servicing's API answers, shared with ``manage.py servicing ... --json`` so a script reads
the same from both: releases, an agent's versions, and the input each endpoint takes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Schema

from servicing.models import Release

# --- input -----------------------------------------------------------------------------------


class ReleaseIn(Schema):
    version: str
    artifact: str
    changelog: str = ""
    # Any JSON: the service refuses what is not an object (400 naming it), not ninja (422).
    config_changes: Any = None
    agent: str | None = None  # an agent's slug: a release for that agent only
    template: str = ""  # a factory template's key: a release for its agents only


class ReasonIn(Schema):
    reason: str = ""


# --- output ----------------------------------------------------------------------------------


class ReleaseOut(Schema):
    id: int
    version: str
    artifact: str
    scope: str  # "fleet", "template" or "agent"
    agent: str | None
    template: str
    changelog: str
    config_changes: dict[str, Any]
    published_by: str
    published_at: datetime
    bad: bool
    bad_reason: str
    pinned: bool
    pinned_reason: str
    pinned_by: str
    pinned_at: datetime | None


class Releases(Schema):
    releases: list[ReleaseOut]


class ChangelogEntry(Schema):
    version: str
    changelog: str
    published_at: datetime


class PinnedVersion(Schema):
    version: str
    release_id: int
    reason: str
    pinned_by: str
    pinned_at: datetime | None
    bad: bool


class AgentVersions(Schema):
    current_version: str
    available_versions: list[str]
    changelog: list[ChangelogEntry]
    pinned: list[PinnedVersion]


# --- serializers ------------------------------------------------------------------------------


def scope_of(release: Release) -> str:
    if release.agent_id is not None:
        return "agent"
    return "template" if release.template else "fleet"


def release_out(release: Release) -> ReleaseOut:
    return ReleaseOut(
        id=release.pk, version=release.version, artifact=release.artifact,
        scope=scope_of(release), agent=release.agent.slug if release.agent is not None else None,
        template=release.template, changelog=release.changelog,
        config_changes=release.config_changes or {}, published_by=release.published_by,
        published_at=release.published_at, bad=release.bad, bad_reason=release.bad_reason,
        pinned=release.pinned, pinned_reason=release.pinned_reason,
        pinned_by=release.pinned_by, pinned_at=release.pinned_at,
    )  # fmt: skip


def releases_out(releases: list[Release]) -> Releases:
    return Releases(releases=[release_out(release) for release in releases])


def versions_out(versions: dict[str, Any]) -> AgentVersions:
    return AgentVersions(**versions)
