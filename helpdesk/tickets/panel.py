"""The tickets panel of a customer's overview: its tickets (a conflict with both sides), and the
forms to create one (optionally from a diagnosis) or link one. Three queries whatever the
number of tickets."""

from __future__ import annotations

from typing import Any

from helpdesk.customers import require_viewer
from helpdesk.models import Customer, Diagnosis, SyncState, Ticket
from helpdesk.tickets import clients, services
from portal.actors import Actor

PANEL_TICKETS = 50
PANEL_DIAGNOSES = 10


def panel_context(actor: Actor, customer: Customer) -> dict[str, Any]:
    require_viewer(actor)
    tickets = list(
        Ticket.objects.filter(customer=customer).order_by("-created_at", "-id")[:PANEL_TICKETS]
    )
    diagnoses = list(
        Diagnosis.objects.filter(customer=customer)
        .only("id", "symptom", "top_cause", "confidence", "created_at")
        .order_by("-created_at", "-id")[:PANEL_DIAGNOSES]
    )
    systems = services.systems()
    return {
        "ticket_rows": [
            {
                "ticket": ticket,
                "sides": services.conflict_sides(ticket)
                if ticket.sync_state == SyncState.CONFLICT
                else [],
            }
            for ticket in tickets
        ],
        "ticket_systems": systems,
        "tickets_on": [s for s in systems if s["on"]],
        "ticket_diagnoses": diagnoses,
        "zendesk_statuses": clients.ZENDESK_STATUSES,
    }
