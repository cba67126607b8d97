"""The Issue Detective's API shapes (also what ``helpdesk diagnose --json`` prints)."""

from __future__ import annotations

from typing import Any

from ninja import Schema

from helpdesk.models import Diagnosis


# Inputs are taken as given and checked by the services, so a wrong type is refused like any
# bad value: 400 with ``{"detail", "code"}`` naming the field.
class DiagnoseIn(Schema):
    symptom: Any = ""
    category: Any = ""


class VerdictIn(Schema):
    verdict: Any = ""
    actual_cause: Any = ""


class ApplyIn(Schema):
    index: Any = 0


class CauseOut(Schema):
    cause: str
    title: str
    confidence: float
    score: float
    agent: str
    evidence: list[dict[str, Any]]
    fix: dict[str, Any] | None


class DiagnosisOut(Schema):
    diagnosis_id: int
    customer_id: str
    symptom: str
    category: str
    causes: list[CauseOut]
    top_cause: str
    confidence: float
    similar: list[dict[str, Any]]
    similar_summary: str
    elapsed_ms: int
    verdict: str
    actual_cause: str
    verdict_by: str
    applied_fix: dict[str, Any]
    signals: dict[str, Any]
    created_at: str
    by: str


class DiagnosisBrief(Schema):
    diagnosis_id: int
    symptom: str
    category: str
    top_cause: str
    confidence: float
    verdict: str
    applied: bool
    created_at: str
    by: str


class Diagnoses(Schema):
    customer_id: str
    diagnoses: list[DiagnosisBrief]


class ApplyOut(Schema):
    diagnosis: DiagnosisOut
    action: str
    ok: bool
    message: str
    details: dict[str, Any]


def diagnosis_out(diagnosis: Diagnosis, similar: dict | None = None) -> dict:
    similar = similar or {"items": [], "summary": ""}
    return {
        "diagnosis_id": diagnosis.pk,
        "customer_id": diagnosis.customer.key,
        "symptom": diagnosis.symptom,
        "category": diagnosis.category,
        "causes": diagnosis.causes,
        "top_cause": diagnosis.top_cause,
        "confidence": diagnosis.confidence,
        "similar": similar["items"],
        "similar_summary": similar["summary"],
        "elapsed_ms": diagnosis.elapsed_ms,
        "verdict": diagnosis.verdict,
        "actual_cause": diagnosis.actual_cause,
        "verdict_by": diagnosis.verdict_by,
        "applied_fix": diagnosis.applied_fix or {},
        "signals": diagnosis.signals or {},
        "created_at": diagnosis.created_at.isoformat(),
        "by": diagnosis.actor,
    }


def diagnoses_out(customer_key: str, rows: list[Diagnosis]) -> dict:
    return {
        "customer_id": customer_key,
        "diagnoses": [
            {
                "diagnosis_id": d.pk,
                "symptom": d.symptom,
                "category": d.category,
                "top_cause": d.top_cause,
                "confidence": d.confidence,
                "verdict": d.verdict,
                "applied": bool(d.applied_fix),
                "created_at": d.created_at.isoformat(),
                "by": d.actor,
            }
            for d in rows
        ],
    }


def apply_out(diagnosis: Diagnosis, result: Any, similar: dict | None = None) -> dict:
    return {
        "diagnosis": diagnosis_out(diagnosis, similar),
        "action": result.action,
        "ok": result.ok,
        "message": result.message,
        "details": result.details,
    }
