"""HTTP clients for Zendesk (REST v2) and Jira Cloud (REST v3), each answering the same
``RemoteTicket`` so the services need not know which system they talk to.

Failures are sorted into what the outbox does about them: ``RateLimited`` (429: try again after
its ``Retry-After``), ``Transient`` (5xx, a network error: try again with backoff), ``Rejected``
(any other 4xx: trying again will not help), ``RemoteConflict`` (the remote changed since the
version we based our change on: show both sides, overwrite nothing). Reads retry a transient
failure a few times in the call itself; writes never do: the outbox decides.

A system whose URL setting is empty is off: ``client_for`` refuses with ``unavailable``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache

from helpdesk.models import TicketSystem
from helpdesk.refusals import HelpdeskRefused

TIMEOUT = (5, 15)  # connect, read (seconds)
READ_ATTEMPTS = 3
READ_BACKOFF = 0.3  # seconds, doubled per attempt
RETRY_AFTER_DEFAULT = 30
RETRY_AFTER_MAX = 3600
USER_CACHE_SECONDS = 600
JIRA_PROPERTY = "waooaw.portal"
ZENDESK_STATUSES = ("new", "open", "pending", "hold", "solved", "closed")


class RemoteError(Exception):
    """A call to Zendesk or Jira that did not do what was asked."""


class RateLimited(RemoteError):
    def __init__(self, retry_after: int, message: str = "") -> None:
        super().__init__(message or f"rate limited; retry after {retry_after} s")
        self.retry_after = retry_after


class Transient(RemoteError):
    """5xx or a network failure: the same call may well work later."""


class Rejected(RemoteError):
    """A 4xx other than 409 and 429: the remote will not take this change."""


class RemoteConflict(RemoteError):
    """The remote changed since ``base_version``; ``theirs`` is what it holds now."""

    def __init__(self, theirs: RemoteTicket | None, message: str = "") -> None:
        super().__init__(message or "the remote ticket changed since we last read it")
        self.theirs = theirs


@dataclass
class RemoteComment:
    external_id: str
    author: str
    body: str
    created_at: str = ""


@dataclass
class RemoteTicket:
    """A Zendesk ticket or a Jira issue as the portal keeps it."""

    external_id: str
    number: str
    subject: str
    status: str
    priority: str
    assignee: str
    url: str
    version: str
    comments: list[RemoteComment] = field(default_factory=list)
    comment_id: str = ""  # the comment this write added, when it added one

    def fields(self) -> dict[str, str]:
        return {
            "status": self.status,
            "assignee": self.assignee,
            "priority": self.priority,
            "subject": self.subject,
        }


def retry_after_seconds(value: str | None) -> int:
    """Retry-After as whole seconds (a number or an HTTP date), bounded."""
    if not value:
        return RETRY_AFTER_DEFAULT
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return RETRY_AFTER_DEFAULT
        seconds = (when - datetime.now(UTC)).total_seconds()
    return int(min(max(seconds, 1), RETRY_AFTER_MAX) + 0.999)


def parse_version(value: str) -> datetime | None:
    """A remote version (Zendesk ``updated_at``, Jira ``updated``) as a time, to order them."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":  # Jira: +0000
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Client:
    """What both clients share: auth, timeouts, and sorting the answer into the errors above."""

    system = ""

    def __init__(self, base_url: str, email: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (self.auth_user(email), token)
        self.session.headers.update({"Accept": "application/json"})
        self.email = email

    def auth_user(self, email: str) -> str:
        return email

    def call(self, method: str, path: str, *, read: bool = False, **kwargs: Any) -> Any:
        """The JSON answer of ``method path``; a read retries transient failures itself."""
        attempts = READ_ATTEMPTS if read else 1
        for attempt in range(attempts):
            try:
                return self._once(method, path, **kwargs)
            except Transient:
                if attempt + 1 == attempts:
                    raise
                time.sleep(READ_BACKOFF * 2**attempt)
        raise AssertionError("unreachable")

    def _once(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(method, url, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as error:
            raise Transient(f"{self.system} could not be reached: {type(error).__name__}") from None
        status = response.status_code
        if status == 429:
            raise RateLimited(retry_after_seconds(response.headers.get("Retry-After")))
        if status >= 500:
            raise Transient(f"{self.system} answered {status}")
        if status == 409:
            raise RemoteConflict(None, f"{self.system} answered 409: {_said(response)}")
        if status >= 400:
            raise Rejected(f"{self.system} answered {status}: {_said(response)}")
        if status == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise Transient(f"{self.system} answered {status} with no JSON") from None


def _said(response: requests.Response) -> str:
    return response.text[:200].replace("\n", " ")


# --- Zendesk ------------------------------------------------------------------------------------


class ZendeskClient(Client):
    """Zendesk Support REST v2, authenticated as ``{email}/token:{api_token}``."""

    system = TicketSystem.ZENDESK

    def auth_user(self, email: str) -> str:
        return f"{email}/token"

    def ticket(self, data: dict, *, users: dict[str, str] | None = None) -> RemoteTicket:
        ticket_id = str(data.get("id", ""))
        assignee_id = data.get("assignee_id")
        if users is not None and assignee_id:
            assignee = users.get(str(assignee_id), "")
        else:
            assignee = self.user_email(assignee_id) if assignee_id else ""
        return RemoteTicket(
            external_id=ticket_id,
            number=f"ZD-{ticket_id}",
            subject=str(data.get("subject") or "")[:300],
            status=str(data.get("status") or "").lower(),
            priority=str(data.get("priority") or "").lower(),
            assignee=assignee,
            url=f"{self.base_url}/agent/tickets/{ticket_id}",
            version=str(data.get("updated_at") or ""),
        )

    def user_email(self, user_id: object) -> str:
        """The email of a Zendesk user (an assignee), cached a while."""
        key = f"helpdesk:zendesk:user:{user_id}"
        email = cache.get(key)
        if email is None:
            answer = self.call("GET", f"/api/v2/users/{int(str(user_id))}.json", read=True)
            email = str(answer.get("user", {}).get("email") or user_id)
            cache.set(key, email, USER_CACHE_SECONDS)
        return email

    def create(self, subject: str, body: str, idempotency_key: str) -> RemoteTicket:
        payload = {"ticket": {"subject": subject, "comment": {"body": body}}}
        answer = self.call(
            "POST",
            "/api/v2/tickets.json",
            json=payload,
            headers={"Idempotency-Key": idempotency_key},
        )
        return self.ticket(answer["ticket"])

    def get(self, external_id: str) -> RemoteTicket:
        answer = self.call("GET", f"/api/v2/tickets/{_zendesk_id(external_id)}.json", read=True)
        ticket = self.ticket(answer["ticket"])
        comments = self.call(
            "GET", f"/api/v2/tickets/{_zendesk_id(external_id)}/comments.json", read=True
        )
        ticket.comments = [
            RemoteComment(
                external_id=str(c.get("id", "")),
                author=str(c.get("author_id", "")),
                body=str(c.get("body") or c.get("plain_body") or ""),
                created_at=str(c.get("created_at") or ""),
            )
            for c in comments.get("comments", [])
        ]
        return ticket

    def update(
        self, external_id: str, changes: dict[str, str], base_version: str, comment: str = ""
    ) -> RemoteTicket:
        """Change fields (``safe_update`` against ``base_version``: a 409 when it moved) and/or
        add a comment (without ``base_version``: a comment never conflicts)."""
        body: dict[str, Any] = {}
        if "status" in changes:
            body["status"] = changes["status"]
        if "assignee" in changes:
            if changes["assignee"]:
                body["assignee_email"] = changes["assignee"]
            else:
                body["assignee_id"] = None  # unassigned
        if "subject" in changes:
            body["subject"] = changes["subject"]
        if "priority" in changes:
            body["priority"] = changes["priority"] or None
        if comment:
            body["comment"] = {"body": comment, "public": False}
        if base_version:
            body["safe_update"] = True
            body["updated_stamp"] = base_version
        path = f"/api/v2/tickets/{_zendesk_id(external_id)}.json"
        try:
            answer = self.call("PUT", path, json={"ticket": body})
        except RemoteConflict as conflict:
            raise RemoteConflict(self.get(external_id), str(conflict)) from None
        ticket = self.ticket(answer["ticket"])
        for event in answer.get("audit", {}).get("events", []):
            if event.get("type") == "Comment":
                ticket.comment_id = str(event.get("id", ""))
        return ticket


def _zendesk_id(external_id: str) -> int:
    text = external_id.upper().removeprefix("ZD-").strip()
    if not text.isdecimal() or len(text) > 18:
        raise Rejected(f"{external_id[:40]!r} is not a Zendesk ticket number (ZD-123 or 123).")
    return int(text)


# --- Jira ---------------------------------------------------------------------------------------


def adf(text: str) -> dict:
    """Plain text as an Atlassian Document (one paragraph per line block)."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()] or [""]
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": p}] if p else []}
            for p in paragraphs
        ],
    }


def adf_text(node: Any) -> str:
    """The text of an Atlassian Document (or the string itself)."""
    if isinstance(node, str):
        return node
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    parts = [adf_text(child) for child in node.get("content", []) or []]
    joiner = "\n\n" if node.get("type") == "doc" else ""
    return joiner.join(parts)


def jira_person(person: Any) -> str:
    if not isinstance(person, dict):
        return ""
    return str(person.get("emailAddress") or person.get("accountId") or "")


class JiraClient(Client):
    """Jira Cloud REST v3, basic auth with the email and an API token."""

    system = TicketSystem.JIRA

    def __init__(self, base_url: str, email: str, token: str, project: str) -> None:
        super().__init__(base_url, email, token)
        self.project = project

    def ticket(self, data: dict) -> RemoteTicket:
        fields = data.get("fields") or {}
        key = str(data.get("key", ""))
        return RemoteTicket(
            external_id=key,
            number=key,
            subject=str(fields.get("summary") or "")[:300],
            status=str((fields.get("status") or {}).get("name") or "").lower(),
            priority=str((fields.get("priority") or {}).get("name") or "").lower(),
            assignee=jira_person(fields.get("assignee")),
            url=f"{self.base_url}/browse/{key}",
            version=str(fields.get("updated") or ""),
        )

    def find_created(self, idempotency_key: str) -> RemoteTicket | None:
        """The issue an earlier try of this create made, if it got through (Jira has no
        idempotency keys: the key is stored as an issue property and searched for)."""
        jql = f'issue.property[{JIRA_PROPERTY}].idempotencyKey = "{idempotency_key}"'
        answer = self.call(
            "POST", "/rest/api/3/search/jql", json={"jql": jql, "fields": ["*all"]}, read=True
        )
        issues = answer.get("issues") or []
        return self.ticket(issues[0]) if issues else None

    def create(
        self, subject: str, body: str, idempotency_key: str, *, retry: bool = False
    ) -> RemoteTicket:
        if retry:
            earlier = self.find_created(idempotency_key)
            if earlier is not None:
                return earlier
        payload = {
            "fields": {
                "project": {"key": self.project},
                "issuetype": {"name": "Task"},
                "summary": subject,
                "description": adf(body),
            },
            "properties": [{"key": JIRA_PROPERTY, "value": {"idempotencyKey": idempotency_key}}],
        }
        answer = self.call("POST", "/rest/api/3/issue", json=payload)
        return self.get(str(answer["key"]), comments=False)

    def get(self, external_id: str, *, comments: bool = True) -> RemoteTicket:
        key = _jira_key(external_id)
        ticket = self.ticket(self.call("GET", f"/rest/api/3/issue/{key}", read=True))
        if comments:
            answer = self.call("GET", f"/rest/api/3/issue/{key}/comment", read=True)
            ticket.comments = [
                RemoteComment(
                    external_id=str(c.get("id", "")),
                    author=jira_person(c.get("author")),
                    body=adf_text(c.get("body")),
                    created_at=str(c.get("created") or ""),
                )
                for c in answer.get("comments", [])
            ]
        return ticket

    def account_id(self, assignee: str) -> str | None:
        if not assignee:
            return None
        if "@" not in assignee:
            return assignee
        users = self.call("GET", "/rest/api/3/user/search", params={"query": assignee}, read=True)
        for user in users if isinstance(users, list) else []:
            if str(user.get("emailAddress", "")).lower() == assignee.lower():
                return str(user["accountId"])
        raise Rejected(f"Jira has no user with the email {assignee[:100]!r}.")

    def update(
        self, external_id: str, changes: dict[str, str], base_version: str, comment: str = ""
    ) -> RemoteTicket:
        """Jira has no conditional update: the issue is read first and a change based on an
        older ``updated`` than it holds is a conflict (nothing written)."""
        key = _jira_key(external_id)
        if base_version and changes:
            current = self.get(key, comments=False)
            if current.version != base_version:
                raise RemoteConflict(current)
        edit: dict[str, Any] = {}
        if "subject" in changes:
            edit["summary"] = changes["subject"]
        if "assignee" in changes:
            account = self.account_id(changes["assignee"])
            edit["assignee"] = {"accountId": account} if account else None
        if "priority" in changes and changes["priority"]:
            edit["priority"] = {"name": changes["priority"].title()}
        if edit:
            self.call("PUT", f"/rest/api/3/issue/{key}", json={"fields": edit})
        if "status" in changes:
            self.transition(key, changes["status"])
        comment_id = ""
        if comment:
            answer = self.call(
                "POST", f"/rest/api/3/issue/{key}/comment", json={"body": adf(comment)}
            )
            comment_id = str(answer.get("id", ""))
        ticket = self.get(key, comments=False)
        ticket.comment_id = comment_id
        return ticket

    def transition(self, key: str, status: str) -> None:
        answer = self.call("GET", f"/rest/api/3/issue/{key}/transitions", read=True)
        names = []
        for transition in answer.get("transitions", []):
            target = str((transition.get("to") or {}).get("name") or transition.get("name", ""))
            names.append(target)
            if target.lower() == status.lower():
                self.call(
                    "POST",
                    f"/rest/api/3/issue/{key}/transitions",
                    json={"transition": {"id": str(transition["id"])}},
                )
                return
        raise Rejected(
            f"Jira cannot move {key} to {status!r} from where it is; it can go to "
            f"{', '.join(names) or 'nothing'}."
        )


def _jira_key(external_id: str) -> str:
    text = external_id.strip().upper()
    project, _, number = text.partition("-")
    if not (project.isalnum() and project[:1].isalpha() and number.isdecimal()) or len(text) > 40:
        raise Rejected(f"{external_id[:40]!r} is not a Jira issue key (SUP-12).")
    return text


# --- configuration ------------------------------------------------------------------------------


def enabled(system: str) -> bool:
    return bool(_url(system))


def _url(system: str) -> str:
    urls: dict[str, str] = {
        TicketSystem.ZENDESK: settings.ZENDESK_URL,
        TicketSystem.JIRA: settings.JIRA_URL,
    }
    return urls.get(system, "")


def off_refusal(system: str) -> HelpdeskRefused:
    label = TicketSystem(system).label
    variable = f"{system.upper()}_URL"
    return HelpdeskRefused(
        f"{label} is off here: {variable} is not set. Set {variable}, {system.upper()}_EMAIL "
        f"and {system.upper()}_API_TOKEN to turn it on.",
        "off",
    )


def client_for(system: str) -> ZendeskClient | JiraClient:
    """The client of ``system``; ``unavailable`` when it is off (its URL is not set)."""
    if system not in TicketSystem.values:
        raise HelpdeskRefused(
            f"system: {str(system)[:30]!r} is not a ticket system; use zendesk or jira.",
            "invalid",
        )
    if not enabled(system):
        raise off_refusal(system)
    if system == TicketSystem.ZENDESK:
        return ZendeskClient(settings.ZENDESK_URL, settings.ZENDESK_EMAIL, _secret("ZENDESK"))
    return JiraClient(
        settings.JIRA_URL, settings.JIRA_EMAIL, _secret("JIRA"), settings.JIRA_PROJECT
    )


def _secret(prefix: str) -> str:
    return str(getattr(settings, f"{prefix}_API_TOKEN", "") or "")


def webhook_secret(system: str) -> bytes:
    value = getattr(settings, f"{system.upper()}_WEBHOOK_SECRET", "") or ""
    return str(value).encode()
