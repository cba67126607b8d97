"""Servicing's service layer, first part: the releases registry and its pins.

Every door (the API, ``manage.py servicing``, the admin, ``agents build-image``) calls these.
Changes check the actor's role (publishing, pinning and unpinning: Admin; marking a release bad:
Operator), happen in one transaction with their audit entry, and refuse with a
:class:`ServicingRefused` sentence (400 bad input, 404 nothing of that name, 409 not in a state
that allows it) having changed nothing.

Which releases apply to an agent: the fleet's, its factory template's and its own. Where two
scopes publish the same version, a pin on any of them keeps agents away from that version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from agents.agentd.config import AgentConfig, ConfigError, merge_config
from agents.models import Agent
from factory.models import Template
from portal import roles
from portal.actors import Actor
from portal.refusals import Refused
from portal.services import audits_refusals, record_audit
from servicing import versions
from servicing.models import Release, template_key

FIRST_VERSION = "1.0.0"
FIRST_ARTIFACT = "waooaw/agentd:1.0.0"
FIRST_CHANGELOG = "The first release."
LOCAL_ARTIFACT = "local"  # the local runtime runs the project's own agentd build
MAX_ARTIFACT = 300
MAX_CHANGELOG = 20_000
MAX_REASON = 2_000
CONFIG_CHECK_SLUG = "release-check"


class ServicingRefused(Refused):
    """Servicing work that will not be done: 400 ``invalid``, 404 ``not_found``, 409
    ``conflict``."""

    default_code = "conflict"
    status_by_code = {**Refused.status_by_code, "invalid": 400, "not_found": 404, "conflict": 409}


# --- finding -------------------------------------------------------------------------------------


def get_agent(slug: object) -> Agent:
    """The agent named by ``slug``; ``not_found`` for text that names none."""
    text = slug if isinstance(slug, str) else ""
    agent = None
    if text and "\x00" not in text and len(text) <= 63:
        agent = Agent.objects.filter(slug=text).first()
    if agent is None:
        shown = repr(str(slug)[:63].replace("\x00", ""))
        raise ServicingRefused(
            f"There is no agent {shown}; `manage.py agents list` lists them.", "not_found"
        )
    return agent


def get_release(release_id: object) -> Release:
    """The release with this id; ``not_found`` otherwise (also for text that is no id)."""
    text = str(release_id).strip()
    release = None
    if text.isascii() and text.isdecimal() and len(text) <= 18:
        release = Release.objects.select_related("agent").filter(pk=int(text)).first()
    if release is None:
        shown = repr(text[:40].replace("\x00", ""))
        raise ServicingRefused(
            f"There is no release {shown}; `manage.py servicing releases` lists them.",
            "not_found",
        )
    return release


def find_release(id_or_version: str) -> Release:
    """A release by id, or by version when one release has it (the fleet's first, since that is
    what a person usually means); ``not_found``, or ``invalid`` naming the ids to choose from."""
    text = id_or_version.strip()
    if text.isascii() and text.isdecimal():
        return get_release(text)
    _refuse_version(text)
    matches = list(Release.objects.select_related("agent").filter(version=text))
    fleet = [release for release in matches if release.agent_id is None and not release.template]
    if fleet:
        return fleet[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ServicingRefused(
            f"There is no release {text}; `manage.py servicing releases` lists them.", "not_found"
        )
    choices = ", ".join(f"#{release.pk} ({release.scope_label})" for release in matches)
    raise ServicingRefused(
        f"{len(matches)} releases have version {text}: {choices}; name one by id."
    )


def _refuse_version(text: object) -> None:
    try:
        versions.parse(text)
    except versions.VersionError as error:
        raise ServicingRefused(str(error), "invalid") from None


def list_releases(actor: Actor, agent: Agent | None = None) -> list[Release]:
    """Every release (or those that apply to ``agent``), newest version first."""
    if not actor.has(roles.VIEW):
        raise PermissionDenied("You need a role to see releases. Ask an Admin.")
    if agent is not None:
        return releases_for(agent)
    return newest_first(Release.objects.select_related("agent"))


def newest_first(releases: Iterable[Release]) -> list[Release]:
    """Newest version first; of one version, the narrowest scope (agent, template, fleet) first,
    then the newest published."""

    def key(release: Release) -> tuple:
        narrowness = 2 if release.agent_id is not None else 1 if release.template else 0
        return (release.parsed_version.sort_key, narrowness, release.published_at, release.pk)

    return sorted(releases, key=key, reverse=True)


def releases_for(agent: Agent) -> list[Release]:
    """The releases that apply to ``agent`` (the fleet's, its template's, its own), newest
    version first."""
    return newest_first(Release.objects.for_agent(agent).select_related("agent"))


def versions_of(agent: Agent) -> dict[str, Any]:
    """What the versions endpoint answers: the version the agent runs, the newer versions it may
    go to (not pinned), every release's changelog and the pinned versions."""
    releases = releases_for(agent)
    pinned_versions = {release.version for release in releases if release.pinned}
    by_version: dict[str, Release] = {}
    for release in releases:  # newest version, narrowest scope first
        by_version.setdefault(release.version, release)
    # An agent whose version is not one (registered by hand) may go to any release.
    runs_a_version = versions.is_version(agent.version)
    available = [
        version
        for version in by_version
        if version not in pinned_versions
        and (not runs_a_version or versions.compare(version, agent.version) > 0)
    ]
    return {
        "current_version": agent.version,
        "available_versions": available,
        "changelog": [
            {
                "version": release.version,
                "changelog": release.changelog,
                "published_at": release.published_at,
            }
            for release in by_version.values()
        ],
        "pinned": [
            {
                "version": release.version,
                "release_id": release.pk,
                "reason": release.pinned_reason,
                "pinned_by": release.pinned_by,
                "pinned_at": release.pinned_at,
                "bad": release.bad,
            }
            for release in releases
            if release.pinned
        ],
    }


def version_pinned(agent: Agent) -> str:
    """Why ``agent``'s own version may not be deployed: a release of it that applies to the
    agent is pinned ("" when none is). The ``version_pinned`` lookup, asked before a deploy."""
    pinned = next((r for r in releases_for(agent) if r.version == agent.version and r.pinned), None)
    if pinned is None:
        return ""
    return (
        f"{agent.name}'s version {agent.version} is pinned ({pinned.pinned_reason}); upgrade it "
        f"to another release, or an Admin unpins {agent.version}."
    )


def version_pinned_checker() -> Callable[[Agent], str]:
    """``version_pinned`` for a whole page of agents: every pinned release loaded once (they
    are few), each agent then checked without a query. The ``version_pinned_checker`` lookup."""
    pins = newest_first(Release.objects.filter(pinned=True).select_related("agent"))

    def check(agent: Agent) -> str:
        key = template_key(agent.template)
        pinned = next(
            (
                r
                for r in pins
                if r.version == agent.version
                and (r.agent_id == agent.pk or (r.agent_id is None and r.template in ("", key)))
            ),
            None,
        )
        if pinned is None:
            return ""
        return (
            f"{agent.name}'s version {agent.version} is pinned ({pinned.pinned_reason}); upgrade "
            f"it to another release, or an Admin unpins {agent.version}."
        )

    return check


def check_target(agent: Agent, version: object, *, allow_downgrade: bool = False) -> Release:
    """The release ``agent`` may be taken to at ``version``, or the refusal: not a version, no
    such release for it, a pinned one, the version it runs, or an older one unless
    ``allow_downgrade``."""
    _refuse_version(version)
    target = str(versions.parse(version))
    releases = releases_for(agent)
    matching = [release for release in releases if release.version == target]
    if not matching:
        known = ", ".join(versions.sort_versions({r.version for r in releases})) or "none"
        raise ServicingRefused(
            f"{agent.name} has no release {target}; releases: {known}.", "invalid"
        )
    pinned = next((release for release in matching if release.pinned), None)
    if pinned is not None:
        raise ServicingRefused(
            f"{target} is pinned: {pinned.pinned_reason}. An Admin can unpin it.", "conflict"
        )
    if agent.version == target:
        raise ServicingRefused(f"{agent.name} runs {target} already.", "conflict")
    if not allow_downgrade and versions.is_downgrade(agent.version, target):
        raise ServicingRefused(
            f"{target} is older than the {agent.version} {agent.name} runs; ask for a downgrade "
            "explicitly (allow_downgrade) to go back.",
            "invalid",
        )
    return matching[0]


# --- publishing ----------------------------------------------------------------------------------


@audits_refusals("servicing.release.publish", target="version")
def publish(
    actor: Actor,
    version: object,
    artifact: object,
    changelog: object = "",
    config_changes: object = None,
    agent: Agent | None = None,
    template: object = "",
) -> Release:
    """Publish a release of ``version`` for the fleet, one factory template (its key) or one
    agent. Refused: not Admin, not a version, no artifact, both an agent and a template, an
    unknown template, config changes agentd would refuse, a version the scope has already."""
    actor.require(roles.MANAGE, "publish a release")
    _refuse_version(version)
    text = str(versions.parse(version))
    artifact = _text(artifact, "artifact", MAX_ARTIFACT, required=True)
    if any(character.isspace() for character in artifact):
        raise ServicingRefused(
            f"artifact {artifact[:60]!r} has a space; name an image such as waooaw/agentd:{text} "
            f"(or '{LOCAL_ARTIFACT}').",
            "invalid",
        )
    changelog = _text(changelog, "changelog", MAX_CHANGELOG)
    template = _text(template, "template", 80)
    if agent is not None and template:
        raise ServicingRefused(
            "A release is for one agent or one template, not both; leave one out.", "invalid"
        )
    if template:
        _check_template(template)
    changes = check_config_changes(config_changes)
    scope = Release.objects.in_scope(agent, template)
    label = _scope_label(agent, template)
    try:
        with transaction.atomic():
            existing = scope.filter(version=text).first()
            if existing is not None:
                raise _duplicate(existing, label)
            release = Release.objects.create(
                version=text, artifact=artifact, changelog=changelog, config_changes=changes,
                agent=agent, template=template, published_by=actor.label[:200],
            )  # fmt: skip
            record_audit(
                actor, "servicing.release.publish", target=f"release:{text} ({label})",
                release_id=release.pk, artifact=artifact, config_changes=changes,
            )  # fmt: skip
    except IntegrityError:
        # Published by someone else between the check and the insert.
        existing = scope.filter(version=text).first()
        if existing is None:
            raise
        raise _duplicate(existing, label) from None
    return release


def check_config_changes(config_changes: object) -> dict[str, Any]:
    """The release's default config changes, as agentd itself would check them (a wrong type or
    bound is refused naming the key)."""
    if config_changes is None or config_changes == "":
        return {}
    if not isinstance(config_changes, Mapping):
        raise ServicingRefused(
            f"config_changes must be a JSON object of agentd config keys, not "
            f"{type(config_changes).__name__}.",
            "invalid",
        )
    try:
        merge_config(AgentConfig(), config_changes, slug=CONFIG_CHECK_SLUG)
    except ConfigError as error:
        raise ServicingRefused(f"config_changes: {error}", "invalid") from None
    return dict(config_changes)


def _check_template(key: str) -> None:
    keys = list(Template.objects.order_by("key").values_list("key", flat=True).distinct())
    if key not in keys:
        raise ServicingRefused(
            f"No template {key!r}; templates: {', '.join(keys) or 'none'}.", "invalid"
        )


def _duplicate(existing: Release, label: str) -> ServicingRefused:
    return ServicingRefused(
        f"Release {existing.version} exists already for {label} (#{existing.pk}, published by "
        f"{existing.published_by}); publish a new version.",
        "conflict",
    )


def _scope_label(agent: Agent | None, template: str) -> str:
    if agent is not None:
        return f"agent {agent.slug}"
    return f"template {template}" if template else "the fleet"


def _text(value: object, field: str, limit: int, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str) or "\x00" in value:
        raise ServicingRefused(f"{field} must be text.", "invalid")
    value = value.strip()
    if required and not value:
        raise ServicingRefused(f"{field} is required.", "invalid")
    if len(value) > limit:
        raise ServicingRefused(f"{field} is longer than {limit} characters.", "invalid")
    return value


# --- bad releases and pins ------------------------------------------------------------------------


@audits_refusals("servicing.release.bad", target="release")
def mark_bad(actor: Actor, release: Release, reason: object) -> Release:
    """Mark a release bad (Operator): it is pinned too, so no upgrade takes an agent to it."""
    actor.require(roles.OPERATE, "mark a release bad")
    why = _text(reason, "reason", MAX_REASON, required=True)
    with transaction.atomic():
        release = _locked(release)
        if release.bad:
            raise ServicingRefused(
                f"{release.version} is marked bad already: {release.bad_reason}.", "conflict"
            )
        release.bad, release.bad_reason = True, why
        fields = ["bad", "bad_reason"]
        if not release.pinned:
            _set_pin(release, actor, f"marked bad: {why}")
            fields += ["pinned", "pinned_reason", "pinned_by", "pinned_at"]
        release.save(update_fields=fields)
        record_audit(
            actor, "servicing.release.bad", target=_target(release), release_id=release.pk,
            reason=why,
        )  # fmt: skip
    return release


@audits_refusals("servicing.release.pin", target="release")
def pin(actor: Actor, release: Release, reason: object) -> Release:
    """Pin a release (Admin): no upgrade or bulk deploy may take an agent to it."""
    actor.require(roles.MANAGE, "pin a release")
    why = _text(reason, "reason", MAX_REASON, required=True)
    with transaction.atomic():
        release = _locked(release)
        if release.pinned:
            raise ServicingRefused(
                f"{release.version} is pinned already: {release.pinned_reason}.", "conflict"
            )
        _set_pin(release, actor, why)
        release.save(update_fields=["pinned", "pinned_reason", "pinned_by", "pinned_at"])
        record_audit(
            actor, "servicing.release.pin", target=_target(release), release_id=release.pk,
            reason=why,
        )  # fmt: skip
    return release


@audits_refusals("servicing.release.unpin", target="release")
def unpin(actor: Actor, release: Release, reason: object) -> Release:
    """Unpin a release (Admin, with a reason): agents may be taken to it again. A bad release
    stays marked bad."""
    actor.require(roles.MANAGE, "unpin a release")
    why = _text(reason, "reason", MAX_REASON, required=True)
    with transaction.atomic():
        release = _locked(release)
        if not release.pinned:
            raise ServicingRefused(f"{release.version} is not pinned.", "conflict")
        was = release.pinned_reason
        release.pinned, release.pinned_reason, release.pinned_by, release.pinned_at = (
            False, "", "", None,
        )  # fmt: skip
        release.save(update_fields=["pinned", "pinned_reason", "pinned_by", "pinned_at"])
        record_audit(
            actor, "servicing.release.unpin", target=_target(release), release_id=release.pk,
            reason=why, was_pinned_for=was,
        )  # fmt: skip
    return release


def _locked(release: Release) -> Release:
    return (
        Release.objects.select_for_update(of=("self",)).select_related("agent").get(pk=release.pk)
    )


def _set_pin(release: Release, actor: Actor, why: str) -> None:
    release.pinned, release.pinned_reason = True, why
    release.pinned_by, release.pinned_at = actor.label[:200], timezone.now()


def _target(release: Release) -> str:
    return f"release:{release.version} ({_scope_label(release.agent, release.template)})"


# --- the first release, and images built ----------------------------------------------------------


def register_first_release(actor: Actor) -> Release | None:
    """Register the version the fleet runs from the start (1.0.0) as a fleet-wide release,
    unless it is there already. Idempotent; answers the release made, or None."""
    if Release.objects.fleet_wide().filter(version=FIRST_VERSION).exists():
        return None
    try:
        return publish(actor, FIRST_VERSION, FIRST_ARTIFACT, FIRST_CHANGELOG)
    except ServicingRefused:
        return None  # published meanwhile by another process


def seed_step(actor: Actor, out) -> None:
    """``manage.py up`` step: make sure the first release is registered."""
    if register_first_release(actor) is not None:
        out.write(f"Registered release {FIRST_VERSION} ({FIRST_ARTIFACT}) for the fleet.")


def publish_built_image(actor: Actor, version: str, artifact: str) -> str:
    """After ``agents build-image`` built ``artifact``: publish it as the fleet-wide release
    ``version`` unless that exists. Answers a sentence saying what happened (a refusal too: the
    image was built whatever the registry says)."""
    try:
        existing = Release.objects.fleet_wide().filter(version=version).first()
        if existing is not None:
            return (
                f"Release {existing.version} exists already for the fleet (#{existing.pk}, "
                f"{existing.artifact}); not published again."
            )
        release = publish(actor, version, artifact, changelog=f"Image {artifact} built.")
    except (ServicingRefused, PermissionDenied) as refused:
        return f"Not published as a release: {refused}"
    except DatabaseError as exc:
        # The image is built whatever the registry says: say why it is not a release yet.
        return (
            f"Not published as a release: the database did not answer ({exc.__class__.__name__}); "
            f"run `manage.py servicing publish {version} --artifact {artifact}` once it does."
        )
    return f"Published release {release.version} for the fleet (#{release.pk}, {release.artifact})."
