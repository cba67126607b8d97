"""The playbooks panel of a customer's overview: the library, a dry run shown inline (with a
checkbox per step to run selected steps only), run, and the customer's recent runs linking to
their workflow run. Two queries whatever the number of playbooks and runs."""

from __future__ import annotations

from typing import Any

from helpdesk.customers import require_viewer
from helpdesk.models import Customer, Playbook, PlaybookRun
from helpdesk.playbooks import services, workflow
from portal.actors import Actor


def panel_context(
    actor: Actor, customer: Customer, dry_run: PlaybookRun | None = None
) -> dict[str, Any]:
    require_viewer(actor)
    runs = services.recent_runs(customer)
    for run in runs:
        # The run's page draws its graph from the definition: have it in this process too
        # (a query only for a run this process has not seen).
        if run.workflow_run is not None:
            workflow.ensure_registered(run.workflow_run)
    return {
        "playbooks": list(Playbook.objects.filter(active=True).order_by("title", "slug")),
        "playbook_runs": runs,
        "dry_run": dry_run,
    }
