"""``manage.py helpdesk diagnose|diagnoses|verdict``: the Issue Detective from a shell.

helpdesk diagnose CUSTOMER "agent not responding" [--category C] [--apply N] [--json]
helpdesk diagnoses CUSTOMER [--limit N] [--json]
helpdesk verdict DIAGNOSIS right|wrong [--actual CAUSE] [--json]
"""

from __future__ import annotations

from typing import Any

from helpdesk.customers import get_customer, require_viewer
from helpdesk.detective import services, symptoms
from helpdesk.detective.schemas import apply_out, diagnoses_out, diagnosis_out
from portal.cli import dumps

COMMANDS: tuple[str, ...] = ("diagnose", "diagnoses", "verdict")


def add_parsers(sub, common) -> None:
    diagnose = sub.add_parser(
        "diagnose", help="Rank the likely root causes of a customer's symptom (Operator)."
    )
    diagnose.add_argument("customer", metavar="CUSTOMER", help="The customer's id (acme-corp).")
    diagnose.add_argument("symptom", metavar="SYMPTOM", nargs="?", default="",
                          help='What the customer sees: "agent not responding".')  # fmt: skip
    diagnose.add_argument("--category", default="", choices=["", *symptoms.CATEGORIES],
                          help="The kind of problem, if known.")  # fmt: skip
    diagnose.add_argument("--apply", type=int, default=None, metavar="N",
                          help="Then apply the fix of cause N (0: the top one).")  # fmt: skip
    common(diagnose)
    listing = sub.add_parser("diagnoses", help="A customer's diagnoses, newest first.")
    listing.add_argument("customer", metavar="CUSTOMER")
    listing.add_argument("--limit", type=int, default=services.LIST_LIMIT)
    common(listing)
    verdict = sub.add_parser("verdict", help="Say whether a diagnosis's top cause was right.")
    verdict.add_argument("diagnosis", metavar="DIAGNOSIS", help="The diagnosis id.")
    verdict.add_argument("verdict", choices=["right", "wrong"])
    verdict.add_argument("--actual", default="", metavar="CAUSE", help="The actual cause.")
    common(verdict)


def handle(command, name: str, options: dict[str, Any]) -> int:
    return globals()[f"_{name}"](command, **options)


def _diagnose(command, customer: str, symptom: str, category: str, apply: int | None,
              json: bool, **options) -> int:  # fmt: skip
    actor = command.actor
    require_viewer(actor)
    diagnosis = services.diagnose(actor, get_customer(customer), symptom, category)
    result = None
    if apply is not None:
        diagnosis, result = services.apply_fix(actor, diagnosis, apply)
    similar = services.similar_to(diagnosis)
    if json:
        out = apply_out(diagnosis, result, similar) if result else diagnosis_out(diagnosis, similar)
        command.stdout.write(dumps(out))
        return 0 if result is None or result.ok else 1
    _print(command, diagnosis, similar)
    if result is not None:
        mark = "done" if result.ok else "FAILED"
        command.console.print(f"\nApplied ({mark}): {result.message}", markup=False)
        return 0 if result.ok else 1
    return 0


def _print(command, diagnosis, similar: dict) -> None:
    out = command.console
    out.print(
        f"Diagnosis #{diagnosis.pk} of {diagnosis.customer.key}: {diagnosis.symptom!r} "
        f"({diagnosis.elapsed_ms} ms)",
        markup=False,
    )
    if not diagnosis.causes:
        out.print("No cause found in the customer's signals.", markup=False)
    for number, cause in enumerate(diagnosis.causes):
        out.print(
            f"\n{number}. {cause['title']}  [{cause['cause']}]  confidence "
            f"{cause['confidence'] * 100:.0f} %",
            markup=False,
        )
        for item in cause["evidence"]:
            link = f"  ({item['link']})" if item.get("link") else ""
            out.print(f"   - {item['text']}{link}", markup=False)
        if cause.get("fix"):
            out.print(f"   fix: {cause['fix']['label']}  (--apply {number})", markup=False)
    out.print(f"\nSimilar issues: {similar['summary']}", markup=False)
    for item in similar["items"][:5]:
        if item["kind"] == "diagnosis":
            out.print(f"   - diagnosis #{item['id']} ({item['customer_id']}) {item['symptom']!r} → "
                      f"{item['top_cause'] or 'no cause'} [{item['verdict']}]", markup=False)  # fmt: skip
        else:
            out.print(f"   - {item['number']} ({item['customer_id']}) {item['subject']!r} "
                      f"[{item['status']}]", markup=False)  # fmt: skip


def _diagnoses(command, customer: str, limit: int, json: bool, **options) -> int:
    require_viewer(command.actor)
    found = get_customer(customer)
    rows = services.list_diagnoses(command.actor, found, limit)
    if json:
        command.stdout.write(dumps(diagnoses_out(found.key, rows)))
        return 0
    if not rows:
        command.console.print(f"No diagnosis of {found.key} yet.", markup=False)
    for d in rows:
        command.console.print(
            f"#{d.pk}  {d.created_at:%Y-%m-%d %H:%M}  {d.symptom[:60]!r} → "
            f"{d.top_cause or 'no cause'} ({d.confidence * 100:.0f} %)  {d.verdict}",
            markup=False,
        )
    return 0


def _verdict(command, diagnosis: str, verdict: str, actual: str, json: bool, **options) -> int:
    found = services.get_diagnosis(command.actor, diagnosis)
    found = services.record_verdict(command.actor, found, verdict, actual)
    if json:
        command.stdout.write(dumps(diagnosis_out(found, services.similar_to(found))))
        return 0
    command.console.print(
        f"Diagnosis #{found.pk}: {found.verdict}"
        + (f" (actual cause {found.actual_cause})" if found.actual_cause else ""),
        markup=False,
    )
    return 0
