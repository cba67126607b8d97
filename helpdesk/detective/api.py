"""The Issue Detective's API under /api/platform/helpdesk.

POST /customers/{customer_id}/diagnose  {"symptom", "category"}  (Operator) the ranked causes
GET  /customers/{customer_id}/diagnoses                          (Viewer) newest first
GET  /diagnoses/{diagnosis_id}                                   (Viewer)
POST /diagnoses/{diagnosis_id}/verdict  {"verdict", "actual_cause"}  (Operator)
POST /diagnoses/{diagnosis_id}/apply    {"index"}                (Operator) the fix, done

Refusals answer ``{"detail", "code"}``: 400 bad input, 403 role, 404 no such customer or
diagnosis, 409 a fix applied already.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from helpdesk.customers import get_customer, require_viewer
from helpdesk.detective import services
from helpdesk.detective.schemas import (
    ApplyIn,
    ApplyOut,
    DiagnoseIn,
    Diagnoses,
    DiagnosisOut,
    VerdictIn,
    apply_out,
    diagnoses_out,
    diagnosis_out,
)
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["helpdesk"])
ROOT = "/helpdesk"
READ = {400: Problem, 403: Problem, 404: Problem}
ACT = {**READ, 409: Problem}


def _actor(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)  # an outsider learns nothing, not even which customers exist
    return actor


@router.post(
    f"{ROOT}/customers/{{customer_id}}/diagnose",
    response={200: DiagnosisOut, **ACT},
    summary="Diagnose a symptom: ranked root causes with confidence, evidence and fix",
)
def diagnose(request: HttpRequest, customer_id: str, payload: DiagnoseIn):
    actor = _actor(request)
    diagnosis = services.diagnose(
        actor, get_customer(customer_id), payload.symptom, payload.category
    )
    return diagnosis_out(diagnosis, services.similar_to(diagnosis))


@router.get(
    f"{ROOT}/customers/{{customer_id}}/diagnoses",
    response={200: Diagnoses, **READ},
    summary="The customer's diagnoses, newest first",
)
def list_diagnoses(request: HttpRequest, customer_id: str, limit: int = services.LIST_LIMIT):
    actor = _actor(request)
    customer = get_customer(customer_id)
    return diagnoses_out(customer.key, services.list_diagnoses(actor, customer, limit))


@router.get(
    f"{ROOT}/diagnoses/{{diagnosis_id}}",
    response={200: DiagnosisOut, **READ},
    summary="One diagnosis, with similar past issues",
)
def get_diagnosis(request: HttpRequest, diagnosis_id: str):
    diagnosis = services.get_diagnosis(_actor(request), diagnosis_id)
    return diagnosis_out(diagnosis, services.similar_to(diagnosis))


@router.post(
    f"{ROOT}/diagnoses/{{diagnosis_id}}/verdict",
    response={200: DiagnosisOut, **ACT},
    summary="Say whether the top cause was right (and, if not, which was)",
)
def verdict(request: HttpRequest, diagnosis_id: str, payload: VerdictIn):
    actor = _actor(request)
    diagnosis = services.get_diagnosis(actor, diagnosis_id)
    diagnosis = services.record_verdict(actor, diagnosis, payload.verdict, payload.actual_cause)
    return diagnosis_out(diagnosis, services.similar_to(diagnosis))


@router.post(
    f"{ROOT}/diagnoses/{{diagnosis_id}}/apply",
    response={200: ApplyOut, **ACT},
    summary="Apply the fix of one of the diagnosis's causes (index 0: the top one)",
)
def apply(request: HttpRequest, diagnosis_id: str, payload: ApplyIn):
    actor = _actor(request)
    diagnosis = services.get_diagnosis(actor, diagnosis_id)
    diagnosis, result = services.apply_fix(actor, diagnosis, payload.index)
    return apply_out(diagnosis, result, services.similar_to(diagnosis))
