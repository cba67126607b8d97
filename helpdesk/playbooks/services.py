"""Playbooks: the library (seeded from ``catalog.SEED`` at start-up, a new version whenever a
definition changes; Admins edit them as new versions), a dry run against a customer (each check
evaluated now, each action described, saved as a dry-run ``PlaybookRun``), and a run on the
workflow engine (one workflow run per playbook run, actions needing approval waiting for an
Operator; "selected steps only" supported). Every change checks the role and is audited."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction

from agents.workflows import services as workflows
from helpdesk.actions.services import describe_action
from helpdesk.customers import require_viewer
from helpdesk.models import Customer, Playbook, PlaybookRun
from helpdesk.playbooks import catalog, checks, workflow
from helpdesk.refusals import HelpdeskRefused
from portal import roles
from portal.actors import Actor
from portal.models import ActorStamped, AuditEntry
from portal.refusals import Refused
from portal.services import audits_refusals, record_audit

SEED_AUTHOR = "seed"
FIELDS = ("title", "description", "category", "steps")
RECENT_RUNS = 10


# --- the library ---------------------------------------------------------------------------------


def _same(playbook: Playbook, data: dict[str, Any]) -> bool:
    return all(getattr(playbook, name) == data.get(name, "") for name in FIELDS)


@audits_refusals("helpdesk.playbook.seed")
def seed_playbooks(actor: Actor) -> list[Playbook]:
    """Make sure every shipped playbook exists; a new version when its definition changed since
    it was last seeded (an Admin's own versions are left as they are). Idempotent."""
    actor.require(roles.MANAGE, "seed the playbooks")
    created = []
    for data in catalog.SEED:
        catalog.check_steps(data["steps"])
        with transaction.atomic():
            rows = list(Playbook.objects.select_for_update().filter(slug=data["slug"]))
            seeded = max((p for p in rows if p.created_by == SEED_AUTHOR),
                         key=lambda p: p.version, default=None)  # fmt: skip
            if seeded is not None and _same(seeded, data):
                continue
            playbook = _new_version(rows, data, SEED_AUTHOR)
            record_audit(actor, "helpdesk.playbook.seed", target=f"playbook:{playbook.slug}",
                         version=playbook.version)  # fmt: skip
            created.append(playbook)
    return created


def _new_version(rows: list[Playbook], data: dict[str, Any], author: str) -> Playbook:
    version = max((p.version for p in rows), default=0) + 1
    Playbook.objects.filter(pk__in=[p.pk for p in rows if p.active]).update(active=False)
    return Playbook.objects.create(
        slug=data["slug"], version=version, created_by=author[:200], active=True,
        **{name: data.get(name, "") for name in FIELDS},
    )  # fmt: skip


def seed_step(actor: Actor, out) -> None:
    """``manage.py up`` step: the shipped playbooks, new versions where they changed."""
    for playbook in seed_playbooks(actor):
        out.write(f"Playbook {playbook.slug} v{playbook.version} seeded.")


@audits_refusals("helpdesk.playbook.edit", target="slug")
def save_version(actor: Actor, slug: str, data: dict[str, Any]) -> Playbook:
    """An Admin's edit: a new version of playbook ``slug`` (runs keep the version they ran)."""
    actor.require(roles.MANAGE, "edit playbooks")
    try:
        catalog.check_steps(data.get("steps"))
    except ValueError as exc:
        raise HelpdeskRefused(f"The steps cannot be saved: {exc}.", "invalid") from None
    with transaction.atomic():
        rows = list(Playbook.objects.select_for_update().filter(slug=slug))
        newest = max(rows, key=lambda p: p.version, default=None)
        if newest is not None and _same(newest, data):
            return newest
        playbook = _new_version(rows, {**data, "slug": slug}, actor.label)
        record_audit(actor, "helpdesk.playbook.edit", target=f"playbook:{slug}",
                     version=playbook.version)  # fmt: skip
    return playbook


def list_playbooks(actor: Actor) -> list[Playbook]:
    """The newest active version of every playbook, by title."""
    require_viewer(actor)
    return list(Playbook.objects.filter(active=True).order_by("title", "slug"))


def get_playbook(slug: object, version: object = None) -> Playbook:
    text = slug if isinstance(slug, str) else ""
    query = Playbook.objects.filter(slug=text[:63]) if text and "\x00" not in text else None
    if query is not None and version not in (None, ""):
        number = str(version)
        query = (
            query.filter(version=int(number)) if number.isdecimal() and len(number) < 9 else None
        )
    found = query.order_by("-active", "-version").first() if query is not None else None
    if found is None:
        known = ", ".join(Playbook.objects.filter(active=True).values_list("slug", flat=True))
        shown = text[:60] if "\x00" not in text else "that"
        raise HelpdeskRefused(
            f"There is no playbook {shown!r}" + (f" v{version}" if version else "")
            + f"; the playbooks: {known or 'none (run manage.py up to seed them)'}.",
            "not_found",
        )  # fmt: skip
    return found


def _selected(playbook: Playbook, steps: object) -> list[str] | None:
    if steps in (None, "", []):
        return None
    if isinstance(steps, str):
        steps = [s.strip() for s in steps.split(",") if s.strip()]
    ids = [s["id"] for s in playbook.steps]
    if not isinstance(steps, list | tuple) or not all(isinstance(s, str) for s in steps):
        raise HelpdeskRefused("steps is a list of step ids, such as running,restart.", "invalid")
    unknown = [s[:40] for s in steps if s not in ids]
    if unknown:
        raise HelpdeskRefused(
            f"{playbook.title} has no step {', '.join(repr(u) for u in unknown)}; its steps: "
            f"{', '.join(ids)}.",
            "invalid",
        )
    chosen = [s for s in ids if s in steps]  # the playbook's order, once each
    return None if chosen == ids else chosen


# --- dry run -------------------------------------------------------------------------------------


def plan(customer: Customer, playbook: Playbook, selected: list[str] | None = None) -> list[dict]:
    """What each step would do now: checks evaluated, actions described on their targets."""
    seen: dict[str, checks.Observation] = {}
    rows = []
    for step in playbook.steps:
        if selected and step["id"] not in selected:
            continue
        row: dict[str, Any] = {"id": step["id"], "kind": step["kind"], "title": step["title"],
                               "approval": bool(step.get("approval"))}  # fmt: skip
        if step["kind"] == "check":
            observed = checks.evaluate(customer, step["check"], step["expect"])
            seen[step["id"]] = observed
            row.update(ok=observed.ok, would=observed.seen, agents=observed.agents)
        else:
            row.update(_describe(customer, step, seen, {s["id"]: s for s in playbook.steps}))
        rows.append(row)
    return rows


def _describe(customer: Customer, step: dict, seen: dict, by_id: dict) -> dict[str, Any]:
    ref_id = step.get("target") or step.get("when")
    observed = seen.get(ref_id) if ref_id else None
    if ref_id and observed is None:  # its check is not among the selected steps: look now
        ref = by_id[ref_id]
        observed = checks.evaluate(customer, ref["check"], ref["expect"])
    if step.get("target"):
        targets: list[str | None] = list(observed.agents) if observed else []
    elif step.get("when"):
        targets = [] if observed is None or observed.ok else [None]
    else:
        targets = [None]
    if not targets:
        return {"would": f"Nothing: check {ref_id!r} finds nothing to act on now.", "agents": []}
    sentences = []
    for target in targets:
        try:
            sentences.append(describe_action(customer, step["action"], agent=target,
                                             params=step.get("params") or {}))  # fmt: skip
        except Refused as refused:
            sentences.append(f"Refused: {refused.message}")
    return {"would": " ".join(sentences), "agents": [t for t in targets if t]}


def dry_run(
    actor: Actor, customer: Customer, playbook: Playbook, steps: object = None
) -> PlaybookRun:
    """What the playbook would do for ``customer`` now (nothing changes but the record of it)."""
    require_viewer(actor)
    selected = _selected(playbook, steps)
    rows = plan(customer, playbook, selected)
    with transaction.atomic():
        run = PlaybookRun.objects.create(
            **ActorStamped.stamp(actor), playbook=playbook, customer=customer, dry_run=True,
            plan=rows,
        )  # fmt: skip
        record_audit(actor, "helpdesk.playbook.dry_run", target=f"customer:{customer.key}",
                     playbook=playbook.slug, version=playbook.version, run=run.pk)  # fmt: skip
    return run


# --- a real run ----------------------------------------------------------------------------------


def run_playbook(
    actor: Actor, customer: Customer, playbook: Playbook, steps: object = None
) -> PlaybookRun:
    """Start the playbook for ``customer`` as a workflow run (Operator); answers the
    ``PlaybookRun`` that records it. ``steps``: the ids of the steps to run (all if empty)."""
    try:
        actor.require(roles.OPERATE, "run playbooks")
        if not playbook.active:
            raise HelpdeskRefused(
                f"{playbook.title} v{playbook.version} was replaced by a newer version; run that.",
                "conflict",
            )
        selected = _selected(playbook, steps)
        definition = workflow.register_playbook(playbook, selected)
        with transaction.atomic():
            run = workflows.start(
                actor, definition.name,
                {"customer": customer.key, "steps": ",".join(selected or [])},
                version=definition.version,
            )  # fmt: skip
            record = PlaybookRun.objects.create(
                **ActorStamped.stamp(actor), playbook=playbook, customer=customer, dry_run=False,
                workflow_run=run, plan=[{"id": s["id"], "kind": s["kind"], "title": s["title"],
                                         "approval": bool(s.get("approval"))}
                                        for s in playbook.steps
                                        if not selected or s["id"] in selected],
            )  # fmt: skip
            record_audit(
                actor, "helpdesk.playbook.run", target=f"customer:{customer.key}",
                playbook=playbook.slug, version=playbook.version, run=record.pk,
                workflow_run=run.pk, steps=selected or "all",
            )  # fmt: skip
    except (Refused, PermissionDenied) as refused:
        record_audit(actor, "helpdesk.playbook.run", target=f"customer:{customer.key}",
                     outcome=AuditEntry.Outcome.REFUSED, playbook=playbook.slug,
                     error=getattr(refused, "message", str(refused)))  # fmt: skip
        raise
    return record


def recent_runs(customer: Customer, limit: int = RECENT_RUNS) -> list[PlaybookRun]:
    return list(
        PlaybookRun.objects.filter(customer=customer)
        .select_related("playbook", "workflow_run")
        .order_by("-created_at", "-id")[:limit]
    )
