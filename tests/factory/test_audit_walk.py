"""The factory's part of the audit walk (``tests/audit_kit.py``): templates, prices, drafts,
sandboxes and creations, each called for real by an Admin and by a Viewer. Sandboxes and
creations are queued for a worker that these tests do not run."""

from __future__ import annotations

from agents.workflows.models import StepRun, WorkflowRun
from factory.services import creation, drafts, pricing, sandbox, templates
from tests.audit_kit import Walk

walk = Walk()

NOT_WALKED = {
    "factory.services.drafts.move_to": "a user's own draft as they type, not audited by design",
    "factory.services.drafts.set_fields": "a user's own draft as they type, not audited by design",
    "factory.services.templates.seed_step": "manage.py setup's step: seed_templates, walked here",
}


def _blank(w):
    return w.fixture("catalog")["blank"]


def _ready(w, slug: str = "walk-echo"):
    """A draft of the Admin's, every field valid."""
    draft = drafts.create_draft(_blank(w), w.admin)
    errors = drafts.set_fields(draft, {"name": "Walk Echo", "slug": slug, "owner": "Acme"}, w.admin)
    assert not errors, errors
    return draft


@walk("factory.services.templates.seed_templates")
def _(w, actor):
    templates.seed_templates(actor)


@walk("factory.services.templates.save_template")
def _(w, actor):
    templates.save_template(_blank(w), {"description": "Echoes what it is sent."}, actor)


@walk("factory.services.pricing.update_prices")
def _(w, actor):
    pricing.update_prices({"vcpu_hour": "0.03"}, actor)


@walk("factory.services.drafts.create_draft")
def _(w, actor):
    drafts.create_draft(_blank(w), actor)


@walk("factory.services.drafts.abandon")
def _(w, actor):
    drafts.abandon(drafts.create_draft(_blank(w), w.admin), actor)


@walk("factory.services.sandbox.start_sandbox")
def _(w, actor):
    values, secrets, errors = creation.read_config(_blank(w), {"name": "Walk Echo"})
    assert not errors, errors
    sandbox.start_sandbox(_blank(w), values, secrets, actor)


@walk("factory.services.creation.sandbox_config")
def _(w, actor):
    creation.sandbox_config(actor, _blank(w), {"name": "Walk Echo"})


@walk("factory.services.creation.create")
def _(w, actor):
    creation.create(_ready(w), actor)


@walk("factory.services.creation.create_from_config")
def _(w, actor):
    creation.create_from_config(
        actor, _blank(w), "Walk Echo", {"slug": "walk-echo", "owner": "Acme"}
    )


@walk("factory.services.creation.cancel")
def _(w, actor):
    creation.cancel(creation.create(_ready(w), w.admin), actor)


@walk("factory.services.creation.retry")
def _(w, actor):
    draft = creation.create(_ready(w), w.admin)
    # The creation's first step failed (as a worker would have recorded it).
    StepRun.objects.filter(run=draft.run, current=True, role="forward").update(status="pending")
    first = StepRun.objects.filter(run=draft.run, current=True, role="forward").order_by("position")
    StepRun.objects.filter(pk=first.first().pk).update(status="failed", error="walk")
    WorkflowRun.objects.filter(pk=draft.run.pk).update(status="failed")
    draft.refresh_from_db()
    creation.retry(draft, actor)


test_writes_an_audit_entry, test_a_viewers_refusal_is_audited = walk.tests()
