"""Servicing's part of the audit walk (``tests/audit_kit.py``): releases, pins, maintenance
windows, upgrades, roll-backs, config roll-outs and scaling, each called for real by an Admin
and by a Viewer. Upgrades are planned for a worker these tests do not run; scaling starts a
second replica of a real WowCache."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from agents.models import Agent
from servicing import services, windows
from servicing.upgrades import requests
from tests.audit_kit import Walk

walk = Walk()


def _release(w, version: str = "1.1.0"):
    return w.fixture("publish")(version)


def _running(w, slug: str = "wow-cache") -> Agent:
    """In the registry only: upgrades are planned, not carried out, here."""
    w.fixture("fleet")
    Agent.objects.filter(slug=slug).update(state="RUNNING")
    return Agent.objects.get(slug=slug)


def _upgrade(w):
    _release(w)
    return requests.request_upgrade(w.admin, _running(w), "1.1.0", "rolling")


@walk("servicing.services.register_first_release")
def _(w, actor):
    w.fixture("fleet")
    services.register_first_release(actor)


@walk("servicing.services.publish")
def _(w, actor):
    w.fixture("fleet")
    services.publish(actor, "1.1.0", "local", "Walked.")


@walk("servicing.services.publish_built_image")
def _(w, actor):
    w.fixture("fleet")
    said = services.publish_built_image(actor, "1.1.0", "waooaw/agent:1.1.0")
    # The image is built whatever the registry says, so a refusal is a sentence, not a raise.
    if said.startswith("Not published"):
        raise PermissionDenied(said)


@walk("servicing.services.mark_bad")
def _(w, actor):
    services.mark_bad(actor, _release(w), "it drops tasks")


@walk("servicing.services.pin")
def _(w, actor):
    services.pin(actor, _release(w), "it drops tasks")


@walk("servicing.services.unpin")
def _(w, actor):
    release = _release(w)
    services.pin(w.admin, release, "it drops tasks")
    services.unpin(actor, release, "fixed in the agent")


def _window(w, actor):
    w.fixture("fleet")
    return windows.create_window(actor, name="Nightly", cron="0 2 * * *", duration_minutes=120,
                                 timezone="Europe/Paris")  # fmt: skip


@walk("servicing.windows.create_window")
def _(w, actor):
    _window(w, actor)


@walk("servicing.windows.update_window")
def _(w, actor):
    windows.update_window(actor, _window(w, w.admin), duration_minutes=90)


@walk("servicing.windows.delete_window")
def _(w, actor):
    windows.delete_window(actor, _window(w, w.admin), reason="not needed")


@walk("servicing.upgrades.requests.request_upgrade")
def _(w, actor):
    _release(w)
    requests.request_upgrade(actor, _running(w), "1.1.0", "rolling")


@walk("servicing.upgrades.requests.command")
def _(w, actor):
    requests.command(actor, _upgrade(w), "abort", "walk")


@walk("servicing.upgrades.requests.rollback_agent")
def _(w, actor):
    upgrade = _upgrade(w)  # under way: rolled back at its next look
    requests.rollback_agent(actor, upgrade.agent, "walk")


@walk("servicing.upgrades.requests.rollout_config")
def _(w, actor):
    _release(w, "1.0.1")
    requests.rollout_config(actor, _running(w), {"task_max_failures": 5})


@walk("servicing.upgrades.requests.scale")
def _(w, actor):
    w.fixture("publish")
    agent = w.fixture("running")("wow-cache")
    requests.scale(actor, agent, 2)


test_writes_an_audit_entry, test_a_viewers_refusal_is_audited = walk.tests()
