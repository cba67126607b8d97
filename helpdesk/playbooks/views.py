"""The playbooks panel's posts (htmx, from the customer overview): a dry run answers the panel
with the plan shown inline; a run starts the workflow and answers the panel with a toast that
links to the run (where an Operator approves the destructive steps). Without htmx they redirect
to the customer's page with a message."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET, require_POST

from helpdesk import panels
from helpdesk.customers import get_customer
from helpdesk.models import PlaybookRun
from helpdesk.playbooks import panel, services
from portal.htmx import answers_refusals

PANEL = "helpdesk/playbooks/_panel.html"


def _answer(request, actor, customer, said: str, dry_run: PlaybookRun | None = None):
    return panels.answer(
        request, PANEL, panels.context(actor, customer, panel.panel_context, dry_run), said
    )


@require_GET
@answers_refusals(panels.back)
def playbooks_panel(request: HttpRequest, key: str) -> HttpResponse:
    """The panel alone (htmx refresh); the whole page is the customer's."""
    actor = panels.viewer(request)
    customer = get_customer(key)
    return panels.panel_alone(request, PANEL, panels.context(actor, customer, panel.panel_context))


@require_POST
@answers_refusals(panels.back)
def dry_run(request: HttpRequest, key: str, slug: str) -> HttpResponse:
    actor = panels.viewer(request)
    customer = get_customer(key)
    playbook = services.get_playbook(slug)
    record = services.dry_run(actor, customer, playbook, request.POST.getlist("steps") or None)
    return _answer(request, actor, customer, f"Dry run of {playbook.title}: nothing changed.",
                   record)  # fmt: skip


@require_POST
@answers_refusals(panels.back)
def run(request: HttpRequest, key: str, slug: str) -> HttpResponse:
    actor = panels.viewer(request)
    customer = get_customer(key)
    playbook = services.get_playbook(slug)
    record = services.run_playbook(actor, customer, playbook, request.POST.getlist("steps") or None)
    approvals = sum(1 for step in record.plan if step.get("approval"))
    said = f"Started {playbook.title} as workflow run #{record.workflow_run_id}" + (
        f"; {approvals} step(s) wait for an Operator's approval on the run's page."
        if approvals
        else "."
    )
    return _answer(request, actor, customer, said)
