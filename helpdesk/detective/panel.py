"""The Issue Detective's panel on a customer's overview: the symptom box, the newest diagnosis
(ranked causes, evidence, fix, similar issues, verdict) and the earlier ones. A fixed number of
queries whatever the number of diagnoses."""

from __future__ import annotations

from typing import Any

from helpdesk.customers import require_viewer
from helpdesk.detective import services, symptoms
from helpdesk.detective.detectors import CAUSE_TITLES
from helpdesk.models import Customer, Diagnosis
from portal.actors import Actor

RECENT = 6


def diagnosis_context(diagnosis: Diagnosis | None) -> dict[str, Any]:
    """What ``_diagnosis.html`` renders: the diagnosis and its similar issues."""
    if diagnosis is None:
        return {"diagnosis": None, "similar": {"items": [], "summary": ""}}
    return {
        "diagnosis": diagnosis,
        "similar": services.similar_to(diagnosis),
        "cause_titles": sorted(CAUSE_TITLES.items(), key=lambda pair: pair[1]),
    }


def panel_context(actor: Actor, customer: Customer) -> dict[str, Any]:
    require_viewer(actor)
    recent = list(customer.diagnoses.select_related("customer")[:RECENT])
    return {
        "detective_categories": list(symptoms.CATEGORIES.items()),
        "detective_recent": recent[1:],
        **diagnosis_context(recent[0] if recent else None),
    }
