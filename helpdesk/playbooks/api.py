"""Playbooks in the API: the library (``GET /helpdesk/playbooks``), a dry run and a run against
a customer (``POST /helpdesk/customers/{id}/playbooks/{slug}/dry-run`` and ``.../run`` with
``{"steps": [...]}`` for selected steps only), and the customer's recent runs. Each calls
``helpdesk.playbooks.services``; refusals answer ``{"detail", "code"}``."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from ninja.responses import Status

from helpdesk.customers import get_customer, require_viewer
from helpdesk.playbooks import services
from helpdesk.playbooks.schemas import (
    Playbooks,
    RunIn,
    RunOut,
    Runs,
    playbooks_out,
    run_out,
    runs_out,
)
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["helpdesk"])
ROOT = "/helpdesk/customers/{customer_id}/playbooks"
ACT = {400: Problem, 403: Problem, 404: Problem, 409: Problem, 503: Problem}


@router.get("/helpdesk/playbooks", response={200: Playbooks, 403: Problem},
            summary="The playbook library: the newest version of each, with its steps")  # fmt: skip
def list_playbooks(request: HttpRequest):
    return playbooks_out(services.list_playbooks(Actor.from_request(request)))


@router.post(f"{ROOT}/{{slug}}/dry-run", response={200: RunOut, **ACT},
             summary="What the playbook would do for the customer now (checks evaluated, "
             "actions described); saved as a dry run")  # fmt: skip
def dry_run(request: HttpRequest, customer_id: str, slug: str, payload: RunIn | None = None):
    actor = Actor.from_request(request)
    require_viewer(actor)
    customer = get_customer(customer_id)
    playbook = services.get_playbook(slug)
    return run_out(services.dry_run(actor, customer, playbook, payload.steps if payload else None))


@router.post(f"{ROOT}/{{slug}}/run", response={201: RunOut, **ACT},
             summary="Run the playbook for the customer as a workflow (Operator); destructive "
             "steps wait for an approval on the workflow run")  # fmt: skip
def run(request: HttpRequest, customer_id: str, slug: str, payload: RunIn | None = None):
    actor = Actor.from_request(request)
    require_viewer(actor)
    customer = get_customer(customer_id)
    playbook = services.get_playbook(slug)
    record = services.run_playbook(actor, customer, playbook, payload.steps if payload else None)
    return Status(201, run_out(record))


@router.get(f"{ROOT}/runs", response={200: Runs, 403: Problem, 404: Problem},
            summary="The customer's recent playbook runs and dry runs")  # fmt: skip
def runs(request: HttpRequest, customer_id: str):
    require_viewer(Actor.from_request(request))
    customer = get_customer(customer_id)
    return runs_out(customer.key, services.recent_runs(customer))
