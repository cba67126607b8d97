from __future__ import annotations

import json

from django import template
from django.utils import timezone

from agents.bulk import BULK_ACTION_LABELS

register = template.Library()


@register.filter
def seconds_until(moment) -> str:
    """ "in 4 s" (or "now") until ``moment``; the page counts down from there by itself."""
    if moment is None:
        return ""
    seconds = round((moment - timezone.now()).total_seconds())
    return f"in {seconds} s" if seconds > 0 else "now"


@register.filter
def seconds(value) -> str:
    """ "21 s", "2 min 05 s": a duration in whole seconds, as the page's clock writes it too."""
    if value is None or value == "":
        return ""
    total = max(0, round(float(value)))
    if total < 60:
        return f"{total} s"
    return f"{total // 60} min {total % 60:02d} s"


@register.filter
def bulk_label(action: str) -> str:
    """ "Deploy and start" for ``deploy_and_start``: a bulk action's name as people read it."""
    return BULK_ACTION_LABELS.get(action, action)


@register.filter
def evidence_line(text) -> dict:
    """One evidence line for people: agentd's JSON as its time (of day, UTC), level and message;
    a line that is not JSON (a traceback) as it is. The raw line stays behind a toggle."""
    text = str(text)
    try:
        record = json.loads(text) if text.startswith("{") else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return {"time": "", "level": "", "message": text}
    stamp = str(record.get("ts") or "")
    time_of_day = stamp.partition("T")[2].rstrip("Z")[:12] if "T" in stamp else stamp
    message = record.get("message")
    return {
        "time": time_of_day,
        "timestamp": stamp,
        "level": str(record.get("level") or "").lower(),
        "message": message if isinstance(message, str) else text,
    }
