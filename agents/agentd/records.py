"""What a task's fields and its records in Redis hold: the payload, the forwards it came
through, the attempts logged so far. Pure reading, shared by the worker and its handlers."""

from __future__ import annotations

import json
from typing import Any

from . import contract


class BadPayload(ValueError):
    """A task payload that cannot be read: the task is poison and fails every attempt."""


def task_payload(fields: dict[str, str]) -> dict[str, Any]:
    """The task's payload object (``{}`` for a task without one); :class:`BadPayload` says why
    it cannot be read."""
    text = fields.get(contract.FIELD_PAYLOAD)
    if text is None:
        return {}
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            offset = len(text[: exc.start].encode("utf-8", "surrogateescape"))
            raise BadPayload(f"payload is not UTF-8 text (byte {offset})") from exc
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadPayload(f"payload is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadPayload(f"payload must be a JSON object, got {type(payload).__name__}")
    return payload


def hops(fields: dict[str, str]) -> int:
    """How many forwards led to this task (0 for one that was not forwarded)."""
    try:
        return max(0, int(fields.get(contract.FIELD_HOPS, "0")))
    except ValueError:
        return 0


def attempts(stored: object) -> list[dict[str, Any]]:
    """A task's attempts so far, as stored in the attempt log (an unreadable log starts anew)."""
    if not isinstance(stored, str):
        return []
    try:
        attempts = json.loads(stored)
    except json.JSONDecodeError:
        return []
    if not isinstance(attempts, list):
        return []
    return [a for a in attempts if isinstance(a, dict) and isinstance(a.get("at"), int)]
