from __future__ import annotations

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def seconds_until(moment) -> str:
    """ "in 4 s" (or "now") until ``moment``; the page counts down from there by itself."""
    if moment is None:
        return ""
    seconds = round((moment - timezone.now()).total_seconds())
    return f"in {seconds} s" if seconds > 0 else "now"
