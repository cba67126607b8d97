"""A JSON value as collapsible, highlighted HTML (the dead-letter inspector's payload view):
objects and arrays are ``<details>`` (open to ``open_depth``), scalars are coloured by type."""

from __future__ import annotations

import json
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

MAX_NODES = 5000  # past this, the rest is shown as text: a page must stay usable


def render(value: Any, *, open_depth: int = 2) -> SafeString:
    budget = [MAX_NODES]
    html = _node(value, 0, open_depth, budget)
    return mark_safe(f'<div class="json-view">{html}</div>')  # noqa: S308 - every piece escaped


def _scalar(value: Any) -> str:
    if value is None:
        return '<span class="json-null">null</span>'
    if isinstance(value, bool):
        return f'<span class="json-bool">{"true" if value else "false"}</span>'
    if isinstance(value, int | float):
        return f'<span class="json-number">{escape(json.dumps(value))}</span>'
    return f'<span class="json-string">{escape(json.dumps(value, ensure_ascii=False))}</span>'


def _node(value: Any, depth: int, open_depth: int, budget: list[int]) -> str:
    budget[0] -= 1
    if not isinstance(value, dict | list):
        return _scalar(value)
    if budget[0] <= 0:
        text = json.dumps(value, ensure_ascii=False)[:2000]
        return f'<span class="json-string">{escape(text)}</span>'
    is_dict = isinstance(value, dict)
    opening, closing = ("{", "}") if is_dict else ("[", "]")
    if not value:
        return f'<span class="json-punct">{opening}{closing}</span>'
    items = value.items() if isinstance(value, dict) else enumerate(value)
    rows = []
    for key, item in items:
        label = (
            f'<span class="json-key">{escape(json.dumps(key, ensure_ascii=False))}</span>: '
            if is_dict
            else ""
        )
        rows.append(f"<li>{label}{_node(item, depth + 1, open_depth, budget)}</li>")
    count = f"{len(value)} {'key' if is_dict else 'item'}{'s' if len(value) != 1 else ''}"
    is_open = " open" if depth < open_depth else ""
    return (
        f'<details class="json-node"{is_open}><summary><span class="json-punct">{opening}</span>'
        f'<span class="json-count muted small"> {count} </span></summary>'
        f'<ul class="json-children">{"".join(rows)}</ul>'
        f'<span class="json-punct">{closing}</span></details>'
    )
