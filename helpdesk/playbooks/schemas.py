"""The playbooks API's shapes, reused by the command's ``--json``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import reverse
from ninja import Schema

from helpdesk.models import Playbook, PlaybookRun


class StepOut(Schema):
    id: str
    kind: str
    title: str
    check: str | None = None
    expect: Any = None
    action: str | None = None
    params: dict[str, Any] | None = None
    approval: bool = False
    target: str | None = None
    when: str | None = None


class PlaybookOut(Schema):
    slug: str
    version: int
    title: str
    description: str
    category: str
    steps: list[StepOut]


class Playbooks(Schema):
    playbooks: list[PlaybookOut]


class RunIn(Schema):
    # Loose on purpose: the service refuses a wrong type with a sentence (400), not ninja (422).
    steps: Any = None


class PlanStep(Schema):
    id: str
    kind: str
    title: str
    approval: bool = False
    ok: bool | None = None
    would: str | None = None
    agents: list[str] | None = None


class RunOut(Schema):
    id: int
    customer_id: str
    playbook: str
    version: int
    title: str
    dry_run: bool
    plan: list[PlanStep]
    workflow_run: int | None
    workflow_status: str | None
    workflow_url: str | None
    by: str
    created_at: datetime


class Runs(Schema):
    customer_id: str
    runs: list[RunOut]


def playbook_out(playbook: Playbook) -> dict:
    return {
        "slug": playbook.slug, "version": playbook.version, "title": playbook.title,
        "description": playbook.description, "category": playbook.category,
        "steps": playbook.steps,
    }  # fmt: skip


def playbooks_out(playbooks: list[Playbook]) -> dict:
    return {"playbooks": [playbook_out(p) for p in playbooks]}


def run_out(run: PlaybookRun) -> dict:
    workflow = run.workflow_run
    return {
        "id": run.pk, "customer_id": run.customer.key, "playbook": run.playbook.slug,
        "version": run.playbook.version, "title": run.playbook.title, "dry_run": run.dry_run,
        "plan": run.plan, "workflow_run": workflow.pk if workflow else None,
        "workflow_status": workflow.status if workflow else None,
        "workflow_url": reverse("workflows:run", args=[workflow.pk]) if workflow else None,
        "by": run.actor, "created_at": run.created_at,
    }  # fmt: skip


def runs_out(customer_id: str, runs: list[PlaybookRun]) -> dict:
    return {"customer_id": customer_id, "runs": [run_out(r) for r in runs]}
