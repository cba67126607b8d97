"""Small filters for the Factory's templates."""

from __future__ import annotations

import re

from django import template

register = template.Library()


@register.filter
def dom_id(field_name: object) -> str:
    """A field's name as part of an element id: ``settings.max_keys`` → ``settings-max_keys``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(field_name)).strip("-")


@register.filter
def pretty_json(value: object) -> str:
    """A value as indented JSON, for showing a configuration as the API and the admin write it."""
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def grouped(number: object) -> str:
    """12,250 rather than 12250: a figure beside a slider is read at a glance."""
    return f"{number:,}" if isinstance(number, int) else str(number)
