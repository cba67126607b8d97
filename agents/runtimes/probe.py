"""HTTP probes of agentd's endpoints (``/healthz``, ``/readyz``) on the host's loopback.

One way to ask, for the runtimes waiting for a start and for the portal's health monitor alike.
Probes go straight to the agent, whatever HTTP(S)_PROXY the portal runs with: a proxy cannot
reach the machine's loopback, and must not answer for an agent.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from .ports import HOST

# A start polls every replica several times a second: an answer slower than this counts as none.
ANSWER_TIMEOUT = 0.5
# What a failed request raises: urllib's errors (URLError, HTTPError) and timeouts are OSErrors;
# a malformed URL is a ValueError; a garbled answer an HTTPException.
_FAILED = (OSError, ValueError, http.client.HTTPException)

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str, timeout: float) -> bool:
    """Whether a GET of ``url`` answers 2xx within ``timeout`` seconds; False on any error."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except _FAILED:
        return False


def endpoint_answer(port: int, path: str, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
    """agentd's answer at ``path``: ``{"status", "body"}``, the body parsed from JSON when it
    is JSON (else its first 500 characters); status None, and the error as the body, when
    nothing answers."""
    try:
        with _DIRECT.open(f"http://{HOST}:{port}{path}", timeout=timeout) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    except _FAILED as exc:
        return {"status": None, "body": str(exc)}
    try:
        return {"status": status, "body": json.loads(text)}
    except ValueError:
        return {"status": status, "body": text.decode(errors="replace")[:500]}


def answered_by(answer: dict[str, Any], slug: str, replica: int) -> bool:
    """Whether the answer comes from this agent's replica, not from another program (or
    another agent) that holds its port now."""
    body = answer.get("body")
    return isinstance(body, dict) and body.get("slug") == slug and body.get("replica") == replica
