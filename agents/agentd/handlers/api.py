"""The API template: call one configured HTTP service and answer what it said.

The settings name the service (``base_url``), how to authenticate (a header whose value comes
from an environment variable the settings name, never from the settings themselves), the
timeout, the retries and the methods tasks may use; a task names the method, the path, the query
and a JSON body. The answer is the status and a digest of the body, not the body itself.

Connection errors, timeouts, 5xx and 429 answers are retried (``Retry-After`` honoured up to
RETRY_AFTER_LIMIT seconds); other 4xx answers are not. Redirects are not followed: the auth
header must not travel to wherever a redirect points. The secret appears in no log line, output
or error: errors name the URL, and the URL holds no credentials (``base_url`` may not).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from . import checks, web
from .base import Handler, HandlerContext, Invalid, Settings, Task, TaskError

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,60}")
SCHEME = re.compile(r"[A-Za-z]{1,20}")
ENVIRONMENT_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,99}")
MAX_URL_LENGTH = 500
MAX_PATH_LENGTH = 2000
RETRY_AFTER_LIMIT = 5.0
FIRST_BACKOFF = 0.2
READ_CHUNK = 65536
DEFAULTS: dict[str, Any] = {
    "auth_header": "Authorization",
    "timeout_seconds": 5.0,
    "retries": 2,
    "methods": ["GET"],
}
KNOWN = ("base_url", "auth_header", "auth_secret", "auth_scheme", *DEFAULTS)


def parse_settings(data: object, *, slug: str) -> dict[str, Any]:
    settings = checks.mapping("settings", data)
    checks.only_known("settings", settings, KNOWN)
    parsed: dict[str, Any] = {
        "base_url": _base_url(
            checks.required("settings", settings, "base_url", "the URL every call's path joins")
        ),
        **DEFAULTS,
    }
    value = checks.value_of
    if value(settings, "auth_header") is not None:
        parsed["auth_header"] = checks.string(
            "settings.auth_header",
            settings["auth_header"],
            max_length=60,
            pattern=HEADER_NAME,
            rule="an HTTP header name (letters, digits and '-')",
        )
    if value(settings, "auth_secret") is not None:
        name = checks.string(
            "settings.auth_secret",
            settings["auth_secret"],
            max_length=100,
            pattern=ENVIRONMENT_NAME,
            rule="the name of an environment variable (A-Z, 0-9 and '_')",
        )
        _secret(name)
        parsed["auth_secret"] = name
    if value(settings, "auth_scheme") is not None:
        parsed["auth_scheme"] = checks.string(
            "settings.auth_scheme",
            settings["auth_scheme"],
            max_length=20,
            pattern=SCHEME,
            rule="a word of letters such as Bearer",
        )
    if value(settings, "timeout_seconds") is not None:
        parsed["timeout_seconds"] = checks.number(
            "settings.timeout_seconds", settings["timeout_seconds"], 0.1, 60
        )
    if value(settings, "retries") is not None:
        parsed["retries"] = checks.integer("settings.retries", settings["retries"], 0, 5)
    if value(settings, "methods") is not None:
        methods = checks.array("settings.methods", settings["methods"], 1, len(METHODS))
        for index, method in enumerate(methods):
            checks.choice(f"settings.methods[{index}]", method, METHODS)
            if method in methods[:index]:
                raise Invalid(f"settings.methods[{index}] names {method} a second time")
        parsed["methods"] = list(methods)
    return parsed


def _base_url(value: object) -> str:
    url = checks.string("settings.base_url", value, max_length=MAX_URL_LENGTH)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(
            f"settings.base_url must be an http:// or https:// URL, got {checks.show(url)}"
        )
    if any(character.isspace() or not character.isprintable() for character in url):
        raise Invalid("settings.base_url must not hold spaces or control characters")
    if parts.username is not None or parts.password is not None:
        raise Invalid(
            "settings.base_url must not hold credentials; name an environment variable in "
            "settings.auth_secret instead"
        )
    if parts.query or parts.fragment:
        raise Invalid("settings.base_url must not have a query or a fragment")
    return url


def _secret(name: str) -> str:
    """The value of the environment variable ``name``; :class:`Invalid` names the variable
    (never its value) when it is missing, empty or unfit for a header."""
    secret = os.environ.get(name, "")
    if not secret:
        raise Invalid(
            f"settings.auth_secret names the environment variable {name}, which is not set "
            "or empty in the agent's environment"
        )
    if not all(32 <= ord(character) < 127 for character in secret):
        raise Invalid(
            f"the environment variable {name} (settings.auth_secret) holds characters a "
            "header cannot carry (line breaks, control or non-ASCII characters)"
        )
    return secret


@dataclass(frozen=True)
class Answer:
    status: int
    digest: str
    size: int
    content_type: str
    retry_after: float | None


class ApiHandler(Handler):
    template = "api"

    def __init__(self, settings: Settings, context: HandlerContext) -> None:
        self._base_url = settings["base_url"].rstrip("/")
        self._timeout = settings["timeout_seconds"]
        self._retries = settings["retries"]
        self._methods = settings["methods"]
        self._headers = {"Accept": "*/*", "User-Agent": "agentd"}
        if settings.get("auth_secret"):
            secret = _secret(settings["auth_secret"])
            scheme = settings.get("auth_scheme")
            self._headers[settings["auth_header"]] = f"{scheme} {secret}" if scheme else secret
        self._opener = web.opener()

    def longest_task_seconds(self) -> float:
        return (self._retries + 1) * self._timeout + self._retries * RETRY_AFTER_LIMIT

    def handle(self, task: Task) -> dict[str, Any]:
        try:
            method, url, body = self._request(task.payload)
        except Invalid as exc:
            raise TaskError(str(exc)) from exc
        attempts = self._retries + 1
        for attempt in range(1, attempts + 1):
            delay: float | None = None
            try:
                answer = self._call(method, url, body)
            except (OSError, http.client.HTTPException) as exc:
                problem, detail = "got no answer", f": {web.failure_reason(exc)}"
            else:
                if answer.status < 400:
                    return {
                        "status": answer.status,
                        "digest": answer.digest,
                        "bytes": answer.size,
                        "content_type": answer.content_type,
                        "attempts": attempt,
                        "url": url,
                    }
                problem, detail = f"answered {answer.status}", ""
                if answer.status < 500 and answer.status != 429:
                    break  # the request itself is wrong: asking again will not help
                delay = answer.retry_after
            if attempt < attempts:
                time.sleep(FIRST_BACKOFF * 2 ** (attempt - 1) if delay is None else delay)
        tries = f"{attempt} attempt" + ("" if attempt == 1 else "s")
        raise TaskError(f"{method} {url} {problem} after {tries}{detail}")

    def _request(self, payload: Mapping[str, Any]) -> tuple[str, str, bytes | None]:
        method = payload.get("method") or "GET"
        if method not in self._methods:
            raise Invalid(
                f"method must be one of {', '.join(self._methods)} (settings.methods), "
                f"got {checks.show(method)}"
            )
        path = checks.string("path", payload.get("path") or "/", max_length=MAX_PATH_LENGTH)
        if (
            not path.startswith("/")
            or "://" in path
            or any(character.isspace() or not character.isprintable() for character in path)
        ):
            raise Invalid(
                "path must start with '/' and hold no '://', spaces or control characters, "
                f"got {checks.show(path)}"
            )
        url = self._base_url + path
        query = payload.get("query")
        if query is not None:
            query = checks.mapping("query", query)
            for name, value in query.items():
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise Invalid(
                        f"query.{name} must be a string or a number, got {checks.show(value)}"
                    )
            if query:
                url += ("&" if "?" in url else "?") + urlencode(query)
        body = None
        if "body" in payload:
            body = json.dumps(payload["body"]).encode()
        return str(method), url, body

    def _call(self, method: str, url: str, body: bytes | None) -> Answer:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            response = self._opener.open(request, timeout=self._timeout)
        except urllib.error.HTTPError as error:
            response = error  # a 4xx, 5xx or an unfollowed redirect: an answer all the same
        with response:
            digest = hashlib.sha256()
            size = 0
            while chunk := response.read(READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
            return Answer(
                status=response.getcode(),
                digest=f"sha256:{digest.hexdigest()}",
                size=size,
                content_type=response.headers.get("Content-Type", ""),
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )


def _retry_after(value: str | None) -> float | None:
    """The delay a ``Retry-After`` header asks for (seconds or an HTTP date), at most
    RETRY_AFTER_LIMIT seconds; ``None`` without a usable one."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_LIMIT)
