"""The Issue Detective's services: diagnose a customer's symptom, record the operator's verdict,
apply a diagnosis's fix; read past diagnoses.

Diagnosing saves a ``Diagnosis`` (Operator; audited): the ranked causes with their confidence,
evidence and fix, the top cause, the signals looked at and the time it took. Verdicts feed the
confidence of later diagnoses (``ranking.calibrated``) and the similar issues. Applying a fix
calls the quick action it names (``helpdesk.actions.services.run_action``), which checks the
agent is the customer's, and records on the diagnosis what was applied and how it went.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from helpdesk.customers import require_viewer
from helpdesk.detective import ranking, symptoms
from helpdesk.detective.detectors import CAUSE_TITLES, detect
from helpdesk.detective.signals import gather
from helpdesk.models import Customer, Diagnosis, Verdict
from helpdesk.refusals import HelpdeskRefused
from portal import roles
from portal.actors import Actor
from portal.models import ActorStamped, AuditEntry
from portal.services import audits_refusals, record_audit

SYMPTOM_MAX = 1000
LIST_LIMIT = 20
LIST_LIMIT_MAX = 100
VERDICTS = (Verdict.RIGHT, Verdict.WRONG)
# An actual cause an operator may name besides the detectors' causes.
OTHER_CAUSE = "other"


def clean_symptom(symptom: object, category: object = "") -> tuple[str, str]:
    """(symptom text, category) as given, or refused (``invalid``) with what to write."""
    if category is None:
        category = ""
    if not isinstance(category, str) or category not in ("", *symptoms.CATEGORIES):
        shown = str(category)[:40].replace("\x00", "\\0")
        raise HelpdeskRefused(
            f"category: {shown!r} is not one; use one of {', '.join(symptoms.CATEGORIES)} "
            "(or leave it empty).",
            "invalid",
        )
    if symptom is None:
        symptom = ""
    if not isinstance(symptom, str):
        raise HelpdeskRefused("symptom: describe the problem as text.", "invalid")
    if "\x00" in symptom:
        raise HelpdeskRefused("symptom: the text may not contain NUL characters.", "invalid")
    text = " ".join(symptom.split())
    if len(text) > SYMPTOM_MAX:
        raise HelpdeskRefused(
            f"symptom: {len(text):,} characters is too long; describe it in at most "
            f"{SYMPTOM_MAX:,} (the first lines of the customer's message are enough).",
            "invalid",
        )
    if not text:
        if not category:
            raise HelpdeskRefused(
                'symptom: describe what the customer sees ("agent not responding") or pick a '
                "category.",
                "invalid",
            )
        text = symptoms.CATEGORIES[category]
    return text, category


@audits_refusals("helpdesk.diagnose", target="customer")
def diagnose(actor: Actor, customer: Customer, symptom: object, category: object = "") -> Diagnosis:
    """Gather the customer's signals, rank the causes, save and answer the diagnosis."""
    actor.require(roles.OPERATE, "diagnose a customer's issue")
    text, chosen = clean_symptom(symptom, category)
    started = time.perf_counter()
    signals = gather(customer)
    read = symptoms.read(text, chosen)
    causes = ranking.rank(detect(signals, read), read)
    top = causes[0] if causes else None
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    with transaction.atomic():
        diagnosis = Diagnosis.objects.create(
            **ActorStamped.stamp(actor),
            customer=customer,
            symptom=text,
            category=chosen,
            causes=causes,
            top_cause=top["cause"] if top else "",
            confidence=top["confidence"] if top else 0.0,
            signals=signals.summary(),
            elapsed_ms=elapsed_ms,
        )
        record_audit(
            actor, "helpdesk.diagnose", target=customer.key, diagnosis=diagnosis.pk,
            symptom=text[:200], top_cause=diagnosis.top_cause, confidence=diagnosis.confidence,
        )  # fmt: skip
    return diagnosis


def similar_to(diagnosis: Diagnosis) -> dict:
    return ranking.similar_issues(diagnosis.symptom, exclude=diagnosis.pk, now=timezone.now())


def get_diagnosis(actor: Actor, diagnosis_id: object) -> Diagnosis:
    """One diagnosis (any role); ``not_found`` for an id that is none."""
    require_viewer(actor)
    number = _whole(diagnosis_id)
    found = (
        Diagnosis.objects.select_related("customer").filter(pk=number).first()
        if number is not None
        else None
    )
    if found is None:
        shown = str(diagnosis_id)[:30].replace("\x00", "\\0")
        raise HelpdeskRefused(
            f"No diagnosis has the id {shown!r}; a customer's diagnoses are listed at "
            "GET /api/platform/helpdesk/customers/{customer_id}/diagnoses.",
            "not_found",
        )
    return found


def list_diagnoses(actor: Actor, customer: Customer, limit: object = LIST_LIMIT) -> list[Diagnosis]:
    """The customer's diagnoses, newest first (any role)."""
    require_viewer(actor)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT_MAX:
        raise HelpdeskRefused(f"limit: give a whole number from 1 to {LIST_LIMIT_MAX}.", "invalid")
    return list(customer.diagnoses.select_related("customer")[:limit])


@audits_refusals("helpdesk.diagnosis_verdict", target="diagnosis.customer")
def record_verdict(
    actor: Actor, diagnosis: Diagnosis, verdict: object, actual_cause: object = ""
) -> Diagnosis:
    """The operator says whether the top cause was right; a wrong one may name the actual cause.
    The same verdict twice changes nothing the second time."""
    actor.require(roles.OPERATE, "judge a diagnosis")
    if verdict not in VERDICTS:
        shown = str(verdict)[:30].replace("\x00", "\\0")
        raise HelpdeskRefused(f"verdict: {shown!r} is not one; say right or wrong.", "invalid")
    actual = "" if actual_cause is None else actual_cause
    known = (*CAUSE_TITLES, OTHER_CAUSE)
    if not isinstance(actual, str) or actual not in ("", *known):
        shown = str(actual)[:40].replace("\x00", "\\0")
        raise HelpdeskRefused(
            f"actual_cause: {shown!r} is not a cause the detective knows; use one of "
            f"{', '.join(known)} (or leave it empty).",
            "invalid",
        )
    if verdict == Verdict.RIGHT:
        if actual and actual != diagnosis.top_cause:
            raise HelpdeskRefused(
                f"actual_cause: a right verdict confirms {diagnosis.top_cause or 'no cause'}; "
                f"to name {actual}, say wrong.",
                "invalid",
            )
        if not diagnosis.top_cause:
            raise HelpdeskRefused(
                "This diagnosis found no cause, so none can be right; say wrong and name the "
                "actual cause.",
                "conflict",
            )
        actual = diagnosis.top_cause
    with transaction.atomic():
        locked = Diagnosis.objects.select_for_update().get(pk=diagnosis.pk)
        if locked.verdict == verdict and locked.actual_cause == actual:
            return locked
        before = locked.verdict
        locked.verdict = str(verdict)
        locked.actual_cause = actual
        locked.verdict_by = actor.label[:200]
        locked.save(update_fields=["verdict", "actual_cause", "verdict_by"])
        record_audit(
            actor, "helpdesk.diagnosis_verdict", target=locked.customer.key,
            diagnosis=locked.pk, verdict=verdict, was=before, actual_cause=actual,
            top_cause=locked.top_cause,
        )  # fmt: skip
    return locked


@audits_refusals("helpdesk.diagnosis_apply", target="diagnosis.customer")
def apply_fix(actor: Actor, diagnosis: Diagnosis, index: object) -> tuple[Diagnosis, Any]:
    """Carry out the fix of cause number ``index`` (0: the top cause) through the quick action
    it names; answers the diagnosis (with ``applied_fix``) and the action's result."""
    actor.require(roles.OPERATE, "apply a diagnosis's fix")
    number = _whole(index)
    if number is None or not 0 <= number < len(diagnosis.causes):
        raise HelpdeskRefused(
            f"index: {str(index)[:20]!r} is not one of this diagnosis's causes; give a number from "
            f"0 to {max(0, len(diagnosis.causes) - 1)}."
            if diagnosis.causes
            else "index: this diagnosis found no cause, so there is no fix to apply.",
            "invalid",
        )
    cause = diagnosis.causes[number]
    fix = cause.get("fix") or {}
    if not fix.get("action"):
        raise HelpdeskRefused(f"{cause.get('title')}: there is no fix to apply.", "conflict")
    agent = None
    if fix.get("agent"):
        agent = Agent.objects.filter(slug=fix["agent"]).first()
        if agent is None:
            raise HelpdeskRefused(
                f"The fix acts on {fix['agent']}, which no longer exists; diagnose again.",
                "conflict",
            )
    from helpdesk.actions.services import run_action  # the quick actions' one entry

    with transaction.atomic():
        locked = Diagnosis.objects.select_for_update().get(pk=diagnosis.pk)
        previous = dict(locked.applied_fix or {})
        if previous.get("status") in ("running", "done"):
            raise HelpdeskRefused(
                f"The fix {previous.get('label', '')!r} was applied already "
                f"({previous.get('status')}, by {previous.get('by', '?')}); diagnose again to "
                "see where things stand.",
                "conflict",
            )
        locked.applied_fix = {
            "index": number, "cause": cause.get("cause"), **fix, "status": "running",
            "by": actor.label[:200], "at": timezone.now().isoformat(),
        }  # fmt: skip
        locked.save(update_fields=["applied_fix"])
    try:
        result = run_action(
            actor, diagnosis.customer, fix["action"], agent=agent, params=fix.get("params") or {}
        )
    except BaseException:
        Diagnosis.objects.filter(pk=diagnosis.pk).update(applied_fix=previous)
        raise
    with transaction.atomic():
        locked = Diagnosis.objects.select_for_update().get(pk=diagnosis.pk)
        locked.applied_fix = {
            **locked.applied_fix,
            "status": "done" if result.ok else "failed",
            "ok": result.ok,
            "message": result.message[:500],
            "finished_at": timezone.now().isoformat(),
        }
        locked.save(update_fields=["applied_fix"])
        record_audit(
            actor, "helpdesk.diagnosis_apply", target=locked.customer.key, diagnosis=locked.pk,
            index=number, fix_action=fix["action"], agent=fix.get("agent", ""), ok=result.ok,
            outcome=AuditEntry.Outcome.SUCCESS if result.ok else AuditEntry.Outcome.FAILED,
        )  # fmt: skip
    return locked, result


def _whole(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**63 else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        text = value.strip()
        return int(text) if len(text) <= 18 else None
    return None
