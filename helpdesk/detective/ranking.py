"""From candidates to a ranked answer with an honest confidence, and similar past issues.

Each candidate's weight is its evidence score times how well the symptom fits its cause. The
confidences share one unit with a residual for "something the detective does not see", so they
always sum to less than 1; a lone strong candidate says about 0.9, two strong ones about 0.45
each. Then the operators' verdicts on past diagnoses of that cause move it: the cause's track
record (right / (right + wrong), Laplace-smoothed) pulls the confidence towards it, the more
verdicts there are the harder (``HISTORY_PULL`` verdicts weigh as much as the evidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.postgres.search import TrigramSimilarity
from django.db.models import BooleanField, Count, F, Func, Value

from helpdesk.detective.evidence import Candidate
from helpdesk.detective.symptoms import Symptom
from helpdesk.models import Diagnosis, Ticket, Verdict

RESIDUAL = 0.1
HISTORY_PULL = 10
SIMILAR_LIMIT = 5
SIMILARITY = 0.3
MAX_CAUSES = 6


class TrigramMatch(Func):
    """``column % text``: pg_trgm's similarity operator, which the GIN trigram index serves
    (django.contrib.postgres's ``trigram_similar`` lookup needs the app installed)."""

    arg_joiner = " %% "
    template = "(%(expressions)s)"
    output_field = BooleanField()


@dataclass(frozen=True)
class Record:
    right: int = 0
    wrong: int = 0

    @property
    def precision(self) -> float:
        """Laplace-smoothed share of right verdicts."""
        return (self.right + 1) / (self.right + self.wrong + 2)

    @property
    def verdicts(self) -> int:
        return self.right + self.wrong


def track_records(causes: list[str]) -> dict[str, Record]:
    """Each cause's verdicts when it was the top cause, in one query."""
    rows = (
        Diagnosis.objects.filter(top_cause__in=causes, verdict__in=[Verdict.RIGHT, Verdict.WRONG])
        .values_list("top_cause", "verdict")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[str, dict[str, int]] = {}
    for cause, verdict, n in rows:
        counts.setdefault(cause, {})[verdict] = n
    return {
        cause: Record(values.get(Verdict.RIGHT, 0), values.get(Verdict.WRONG, 0))
        for cause, values in counts.items()
    }


def calibrated(confidence: float, record: Record | None) -> float:
    if record is None or not record.verdicts:
        return confidence
    pull = record.verdicts / (record.verdicts + HISTORY_PULL)
    # The track record is the precision of the cause when ranked first; scale it by how much of
    # the unit this candidate holds (a second-ranked cause keeps its smaller share).
    return (1 - pull) * confidence + pull * record.precision * min(1.0, confidence / 0.5)


def rank(candidates: list[Candidate], symptom: Symptom) -> list[dict]:
    """The candidates as the API answers them, best first, confidences summing to < 1."""
    weights = [(c, c.score * symptom.fit(c.cause)) for c in candidates]
    weights = [(c, w) for c, w in weights if w > 0]
    total = sum(w for _, w in weights) + RESIDUAL
    records = track_records([c.cause for c, _ in weights]) if weights else {}
    scored = [(c, calibrated(w / total, records.get(c.cause))) for c, w in weights]
    spread = sum(conf for _, conf in scored)
    if spread > 1 - RESIDUAL / 2:  # verdicts pushed the sum up: keep it a share of one
        scored = [(c, conf * (1 - RESIDUAL / 2) / spread) for c, conf in scored]
    scored.sort(key=lambda pair: (-pair[1], pair[0].cause))
    return [c.as_dict(conf) for c, conf in scored[:MAX_CAUSES]]


def similar_issues(diagnosis_text: str, *, exclude: int | None = None, now: datetime) -> dict:
    """Earlier diagnoses and tickets whose words are like the symptom (pg_trgm similarity),
    with their verdict or status; and how many similar diagnoses there were last week."""
    found = (
        Diagnosis.objects.annotate(similarity=TrigramSimilarity("symptom", diagnosis_text))
        .filter(TrigramMatch(F("symptom"), Value(diagnosis_text)))
        .select_related("customer")
        .order_by("-similarity", "-created_at")
    )
    if exclude is not None:
        found = found.exclude(pk=exclude)
    diagnoses = list(found[:SIMILAR_LIMIT])
    tickets = list(
        Ticket.objects.annotate(similarity=TrigramSimilarity("subject", diagnosis_text))
        .filter(TrigramMatch(F("subject"), Value(diagnosis_text)))
        .select_related("customer")
        .order_by("-similarity", "-created_at")[:SIMILAR_LIMIT]
    )
    week = list(
        found.filter(created_at__gte=now - timedelta(days=7)).values_list(
            "top_cause", "verdict", "actual_cause"
        )[:100]
    )
    items = [
        {
            "kind": "diagnosis",
            "id": d.pk,
            "customer_id": d.customer.key,
            "symptom": d.symptom[:200],
            "top_cause": d.top_cause,
            "verdict": d.verdict,
            "actual_cause": d.actual_cause,
            "similarity": round(float(d.similarity), 3),
            "at": d.created_at.isoformat(),
        }
        for d in diagnoses
    ] + [
        {
            "kind": "ticket",
            "id": t.pk,
            "customer_id": t.customer.key,
            "number": t.number,
            "subject": t.subject[:200],
            "status": t.status,
            "url": t.url,
            "similarity": round(float(t.similarity), 3),
            "at": t.created_at.isoformat(),
        }
        for t in tickets
    ]
    items.sort(key=lambda item: -float(item["similarity"]))  # type: ignore[arg-type]
    causes: dict[str, int] = {}
    for top_cause, verdict, actual_cause in week:
        cause = actual_cause or (top_cause if verdict != Verdict.WRONG else "")
        if cause:
            causes[cause] = causes.get(cause, 0) + 1
    return {
        "items": items,
        "last_week": len(week),
        "summary": _summary(len(week), causes),
    }


def _summary(count: int, causes: dict[str, int]) -> str:
    if not count:
        return "No similar issue in the last week."
    top = max(causes.items(), key=lambda pair: pair[1])[0] if causes else ""
    tail = f", most often {top}" if top else ""
    return f"{count} similar issue{'s' if count != 1 else ''} last week{tail}."
