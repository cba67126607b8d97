"""Checks on input shared by every door (pages, the JSON API, commands).

PostgreSQL text cannot hold a NUL character: a value carrying one would reach the database and
fail there (``DataError``, a 500). ``find_nul`` names the first field that carries one, so the
request can be answered 400 with that field before anything reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.http import HttpRequest


class BadInput(ValueError):
    """An input the portal cannot use; ``field`` names it and the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


NUL_REASON = "contains a NUL character (\\u0000), which no field accepts."


def _nul_in_json(value: object, path: str) -> str | None:
    if isinstance(value, str):
        return path or "body" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_in_json(key, path or "body") or _nul_in_json(
                item, f"{path}.{key}" if path else str(key)
            )
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_in_json(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _nul_in_pairs(pairs: Iterable[tuple[str, list[str]]]) -> str | None:
    for key, values in pairs:
        if "\x00" in key or any("\x00" in value for value in values):
            return key
    return None


def find_nul(request: HttpRequest) -> str | None:
    """The name of the first part of the request (path, query or body field) holding a NUL."""
    if "\x00" in request.path:
        return "path"
    found = _nul_in_pairs(request.GET.lists())
    if found:
        return found
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        if request.content_type == "application/json":
            try:
                body = json.loads(request.body or b"null")
            except ValueError:
                return None  # not JSON: the API's own parser answers that
            return _nul_in_json(body, "")
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return _nul_in_pairs(request.POST.lists())
    return None
