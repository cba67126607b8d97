"""Fake Zendesk and Jira servers for the ticket tests: real HTTP (a ThreadingHTTPServer in a
thread), tickets kept in memory in the documented JSON shapes.

A test can tell a server to answer 429 with Retry-After (or a 5xx) to the next calls, change a
ticket behind our back (as a person on the remote would: a new version, so our safe update
conflicts), and build the signed webhook it would send about a ticket (right or wrong
signature), delivered to our endpoint through the test client or over HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import random
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

EMAIL = "portal@waooaw.test"
TOKEN = "api-token-for-tests"
ZENDESK_SECRET = "zendesk-signing-secret"
JIRA_SECRET = "jira-signing-secret"
HUMAN = "agent.smith@support.example"


class FakeRemote:
    """What both fakes share: the server thread, auth, the request log, injected failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)
        self.server: ThreadingHTTPServer | None = None
        self.users: dict[str, dict[str, Any]] = {}

    # --- controls -----------------------------------------------------------------------------

    def rate_limit_next(self, retry_after: int = 30, times: int = 1) -> None:
        self.failures += [(429, {"Retry-After": str(retry_after)})] * times

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        self.failures += [(status, {})] * times

    def calls(self, method: str, pattern: str = "") -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and re.search(pattern, r["path"])]

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    # --- the server ---------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                record = {
                    "method": self.command, "path": url.path, "query": parse_qs(url.query),
                    "headers": dict(self.headers), "body": json.loads(raw) if raw else None,
                }  # fmt: skip
                if url.path.startswith("/_fake/"):  # the test's (or demo's) controls
                    status, body, headers = fake.control(record)
                    self._answer(status, body, headers)
                    return
                if fake.delay:
                    time.sleep(fake.delay)
                with fake.lock:
                    fake.requests.append(record)
                    if not fake.authorised(self.headers.get("Authorization", "")):
                        status, body, headers = 401, {"error": "Couldn't authenticate you"}, {}
                    elif fake.failures:
                        status, headers = fake.failures.pop(0)
                        body = {"error": "injected failure"}
                    else:
                        status, body, headers = fake.route(record)
                record["status"] = status
                self._answer(status, body, headers)

            def _answer(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        # A short poll: shutdown() waits for it, once per test.
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.server_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self.server_url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # --- webhooks to the portal ----------------------------------------------------------------

    server_url = ""
    delay = 0.0  # seconds before each answer: a slow remote
    webhook_url = ""  # where change_behind(..., notify=True) and the controls deliver

    def send_webhook(self, delivery: tuple[bytes, dict[str, str]], url: str = "") -> int:
        """Call the portal's webhook endpoint over HTTP with ``delivery``; its status."""
        body, headers = delivery
        answer = requests.post(
            url or self.webhook_url, data=body,
            headers={**headers, "Content-Type": "application/json"}, timeout=10,
        )  # fmt: skip
        return answer.status_code

    def control(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """``POST /_fake/change {"ticket", "status"|"assignee"|"comment"|...}``: a person
        changes the ticket here, and the signed webhook goes to ``webhook_url`` (when set).
        ``GET /_fake/state``: everything the fake holds."""
        if request["method"] == "GET" and request["path"] == "/_fake/state":
            return 200, self.state(), {}
        if request["method"] == "POST" and request["path"] == "/_fake/change":
            fields = dict(request["body"] or {})
            ref = fields.pop("ticket")
            self.change_behind(ref, **fields)
            status = self.send_webhook(self.webhook(ref, comment=bool(fields.get("comment")))) \
                if self.webhook_url else None  # fmt: skip
            return 200, {"ticket": ref, "webhook_status": status}, {}
        return 404, {"error": "no such control"}, {}

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def authorised(self, header: str) -> bool:
        return header == "Basic " + base64.b64encode(self.auth_text().encode()).decode()

    def auth_text(self) -> str:
        return f"{EMAIL}:{TOKEN}"

    def route(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError


# --- Zendesk ------------------------------------------------------------------------------------


class FakeZendesk(FakeRemote):
    STATUSES = ("new", "open", "pending", "hold", "solved", "closed")

    def __init__(self) -> None:
        super().__init__()
        self.tickets: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.by_key: dict[str, int] = {}
        self.last_author: dict[int, str] = {}
        self.ids = itertools.count(4300 + random.randrange(1000) * 10)
        self.comment_ids = itertools.count(9_000_000)
        # Distinct per fake: our client caches user emails by id across tests.
        base = random.randrange(10**9, 10**10)
        self.user_ids = itertools.count(base)
        self.me = self.user(EMAIL)

    def auth_text(self) -> str:
        return f"{EMAIL}/token:{TOKEN}"

    def user(self, email: str) -> int:
        for uid, user in self.users.items():
            if user["email"] == email:
                return int(uid)
        uid = next(self.user_ids)
        self.users[str(uid)] = {"id": uid, "email": email, "name": email.split("@")[0]}
        return uid

    def stamp(self) -> str:
        return self.tick().strftime("%Y-%m-%dT%H:%M:%SZ")

    def add_ticket(self, subject: str, status: str = "open", **fields: Any) -> dict:
        """A ticket made on Zendesk by a person (to link)."""
        with self.lock:
            ticket_id = next(self.ids)
            now = self.stamp()
            self.tickets[ticket_id] = {
                "id": ticket_id, "subject": subject, "description": subject, "status": status,
                "priority": fields.get("priority"), "assignee_id": None, "created_at": now,
                "updated_at": now, "url": f"/api/v2/tickets/{ticket_id}.json",
            }  # fmt: skip
            self.comments[ticket_id] = [self._comment(subject, self.user(HUMAN))]
            self.last_author[ticket_id] = HUMAN
            return self.tickets[ticket_id]

    def _comment(self, body: str, author_id: int) -> dict[str, Any]:
        return {
            "id": next(self.comment_ids), "type": "Comment", "body": body, "public": True,
            "author_id": author_id, "created_at": self.clock.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }  # fmt: skip

    def change_behind(self, ticket_id: int | str, *, comment: str = "", **fields: Any) -> dict:
        """A person changes the ticket on Zendesk: a new ``updated_at``."""
        with self.lock:
            ticket = self.tickets[int(str(ticket_id).upper().removeprefix("ZD-"))]
            if "assignee" in fields:
                email = fields.pop("assignee")
                ticket["assignee_id"] = self.user(email) if email else None
            ticket.update(fields)
            if comment:
                self.comments[ticket["id"]].append(self._comment(comment, self.user(HUMAN)))
            ticket["updated_at"] = self.stamp()
            self.last_author[ticket["id"]] = HUMAN
            return ticket

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"tickets": list(self.tickets.values())}

    def route(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        method, path, body = request["method"], request["path"], request["body"] or {}
        if method == "POST" and path == "/api/v2/tickets.json":
            return self.create(body, request["headers"].get("Idempotency-Key", ""))
        match = re.fullmatch(r"/api/v2/tickets/(\d+)(/comments)?\.json", path)
        if match:
            ticket = self.tickets.get(int(match.group(1)))
            if ticket is None:
                return 404, {"error": "RecordNotFound", "description": "Not found"}, {}
            if match.group(2):
                return 200, {"comments": self.comments[ticket["id"]]}, {}
            if method == "GET":
                return 200, {"ticket": ticket}, {}
            if method == "PUT":
                return self.update(ticket, body.get("ticket") or {})
        match = re.fullmatch(r"/api/v2/users/(\d+)\.json", path)
        if match and match.group(1) in self.users:
            return 200, {"user": self.users[match.group(1)]}, {}
        return 404, {"error": "InvalidEndpoint"}, {}

    def create(self, body: dict, key: str) -> tuple[int, Any, dict[str, str]]:
        if key and key in self.by_key:
            ticket = self.tickets[self.by_key[key]]
            return 201, {"ticket": ticket}, {"x-idempotency-lookup": "hit"}
        data = body.get("ticket") or {}
        ticket_id = next(self.ids)
        now = self.stamp()
        ticket = {
            "id": ticket_id, "subject": data.get("subject"), "status": "new", "priority": None,
            "assignee_id": None, "created_at": now, "updated_at": now,
            "description": (data.get("comment") or {}).get("body", ""),
            "url": f"/api/v2/tickets/{ticket_id}.json",
        }  # fmt: skip
        self.tickets[ticket_id] = ticket
        self.comments[ticket_id] = [self._comment(ticket["description"], self.me)]
        self.last_author[ticket_id] = EMAIL
        if key:
            self.by_key[key] = ticket_id
        return 201, {"ticket": ticket}, {"x-idempotency-lookup": "miss"}

    def update(self, ticket: dict, data: dict) -> tuple[int, Any, dict[str, str]]:
        if data.get("safe_update") and data.get("updated_stamp") != ticket["updated_at"]:
            return 409, {"error": "UpdateConflict", "description": "Safe Update prevented "
                         "the update due to outdated ticket data. Please fetch the latest ticket "
                         "data and try again."}, {}  # fmt: skip
        if "status" in data and data["status"] not in self.STATUSES:
            return 422, {"error": "RecordInvalid", "details": {"status": "invalid"}}, {}
        for name in ("status", "subject", "priority"):
            if name in data:
                ticket[name] = data[name]
        if "assignee_email" in data:
            ticket["assignee_id"] = self.user(data["assignee_email"])
        if "assignee_id" in data:
            if data["assignee_id"] is not None and str(data["assignee_id"]) not in self.users:
                return 422, {"error": "RecordInvalid", "details": {"assignee": "invalid"}}, {}
            ticket["assignee_id"] = data["assignee_id"]
        events = []
        if data.get("comment"):
            comment = self._comment(data["comment"]["body"], self.me)
            self.comments[ticket["id"]].append(comment)
            events.append({"id": comment["id"], "type": "Comment", "body": comment["body"]})
        ticket["updated_at"] = self.stamp()
        self.last_author[ticket["id"]] = EMAIL
        audit = {"id": next(self.comment_ids), "author_id": self.me, "events": events}
        return 200, {"ticket": ticket, "audit": audit}, {}

    def webhook(
        self, ticket_id: int | str, *, secret: str = ZENDESK_SECRET, delivery_id: str = "",
        comment: bool = False, timestamp: str = "", tamper: bool = False,
    ) -> tuple[bytes, dict[str, str]]:  # fmt: skip
        """The signed event delivery Zendesk sends about the ticket as it is now."""
        with self.lock:
            ticket = dict(self.tickets[int(str(ticket_id).upper().removeprefix("ZD-"))])
            last = self.comments[ticket["id"]][-1]
        detail = {
            "id": str(ticket["id"]), "status": str(ticket["status"]).upper(),
            "priority": str(ticket["priority"] or "").upper() or None, "subject": ticket["subject"],
            "assignee_id": str(ticket["assignee_id"]) if ticket["assignee_id"] else None,
            "updated_at": ticket["updated_at"], "requester_id": str(self.me),
        }  # fmt: skip
        event: dict[str, Any] = {"current": detail["status"]}
        kind = "zen:event-type:ticket.status_changed"
        if comment:
            author = self.users[str(last["author_id"])]
            event = {"comment": {"id": str(last["id"]), "body": last["body"],
                                 "author": {"id": str(author["id"]), "email": author["email"],
                                            "name": author["name"]}}}  # fmt: skip
            kind = "zen:event-type:ticket.comment_added"
        payload = {
            "type": kind, "account_id": 1, "id": str(uuid.uuid4()), "time": ticket["updated_at"],
            "zendesk_event_version": "2022-11-06", "subject": f"zen:ticket:{ticket['id']}",
            "detail": detail, "event": event,
        }  # fmt: skip
        return zendesk_delivery(payload, secret, delivery_id, timestamp=timestamp, tamper=tamper)


def zendesk_delivery(
    payload: dict, secret: str = ZENDESK_SECRET, delivery_id: str = "", *,
    timestamp: str = "", tamper: bool = False,
) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """``payload`` signed as Zendesk signs: base64 HMAC-SHA256 of the timestamp and the body."""
    body = json.dumps(payload).encode()
    stamp = timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = base64.b64encode(
        hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    ).decode()
    if tamper:
        body = body.replace(b'"status"', b'"status" ', 1)
    headers = {
        "X-Zendesk-Webhook-Signature": signature,
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "X-Zendesk-Webhook-Invocation-Id": delivery_id or str(uuid.uuid4()),
    }
    return body, headers


# --- Jira ---------------------------------------------------------------------------------------


class FakeJira(FakeRemote):
    TRANSITIONS = {"To Do": "11", "In Progress": "21", "Done": "31"}

    def __init__(self, project: str = "SUP") -> None:
        super().__init__()
        self.project = project
        self.issues: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.properties: dict[str, dict[str, Any]] = {}
        self.numbers = itertools.count(1)
        self.comment_ids = itertools.count(10_000)
        self.me = self.user(EMAIL)
        self.last_author: dict[str, str] = {}

    def user(self, email: str) -> str:
        for account, user in self.users.items():
            if user["emailAddress"] == email:
                return account
        account = f"5b10{hashlib.sha1(email.encode()).hexdigest()[:20]}"
        self.users[account] = {
            "accountId": account, "emailAddress": email, "displayName": email.split("@")[0],
        }  # fmt: skip
        return account

    def stamp(self) -> str:
        return self.tick().strftime("%Y-%m-%dT%H:%M:%S.000+0000")

    def _issue(self, summary: str, description: Any, author: str) -> dict[str, Any]:
        key = f"{self.project}-{next(self.numbers)}"
        now = self.stamp()
        issue = {
            "id": str(10000 + len(self.issues)), "key": key, "self": f"/rest/api/3/issue/{key}",
            "fields": {
                "summary": summary, "description": description, "status": {"name": "To Do"},
                "priority": {"name": "Medium"}, "assignee": None, "created": now, "updated": now,
                "project": {"key": self.project},
            },
        }  # fmt: skip
        self.issues[key] = issue
        self.comments[key] = []
        self.last_author[key] = author
        return issue

    def add_issue(self, summary: str) -> dict:
        with self.lock:
            return self._issue(summary, None, HUMAN)

    def change_behind(self, key: str, *, comment: str = "", **fields: Any) -> dict:
        with self.lock:
            issue = self.issues[key]
            if "status" in fields:
                issue["fields"]["status"] = {"name": fields["status"]}
            if "assignee" in fields:
                email = fields["assignee"]
                issue["fields"]["assignee"] = self.users[self.user(email)] if email else None
            if "summary" in fields:
                issue["fields"]["summary"] = fields["summary"]
            if comment:
                self._comment(key, comment, self.user(HUMAN))
            issue["fields"]["updated"] = self.stamp()
            self.last_author[key] = HUMAN
            return issue

    def _comment(self, key: str, text: str, account: str) -> dict:
        comment = {
            "id": str(next(self.comment_ids)), "author": self.users[account],
            "body": {"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": text}]}]},
            "created": self.clock.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
        }  # fmt: skip
        self.comments[key].append(comment)
        return comment

    def _touch(self, key: str) -> None:
        self.issues[key]["fields"]["updated"] = self.stamp()
        self.last_author[key] = EMAIL

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"issues": list(self.issues.values())}

    def route(self, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        method, path, body = request["method"], request["path"], request["body"] or {}
        if method == "POST" and path == "/rest/api/3/issue":
            fields = body.get("fields") or {}
            if (fields.get("project") or {}).get("key") != self.project:
                return 400, {"errors": {"project": "valid project is required"}}, {}
            issue = self._issue(fields.get("summary"), fields.get("description"), EMAIL)
            for prop in body.get("properties") or []:
                self.properties.setdefault(issue["key"], {})[prop["key"]] = prop["value"]
            return 201, {"id": issue["id"], "key": issue["key"], "self": issue["self"]}, {}
        if method == "POST" and path == "/rest/api/3/search/jql":
            match = re.search(
                r'issue\.property\[([^\]]+)\]\.(\w+) = "([^"]+)"', body.get("jql", "")
            )
            found = []
            if match:
                name, attr, value = match.groups()
                found = [
                    self.issues[key] for key, props in self.properties.items()
                    if (props.get(name) or {}).get(attr) == value
                ]  # fmt: skip
            return 200, {"issues": found}, {}
        if method == "GET" and path == "/rest/api/3/user/search":
            query = (request["query"].get("query") or [""])[0].lower()
            return 200, [u for u in self.users.values() if query in u["emailAddress"]], {}
        match = re.fullmatch(r"/rest/api/3/issue/([A-Z]+-\d+)(/transitions|/comment)?", path)
        if not match or match.group(1) not in self.issues:
            return 404, {"errorMessages": ["Issue does not exist or you do not have permission "
                                           "to see it."], "errors": {}}, {}  # fmt: skip
        key, tail = match.group(1), match.group(2)
        issue = self.issues[key]
        if tail is None and method == "GET":
            return 200, issue, {}
        if tail is None and method == "PUT":
            fields = body.get("fields") or {}
            if "summary" in fields:
                issue["fields"]["summary"] = fields["summary"]
            if "assignee" in fields:
                account = (fields["assignee"] or {}).get("accountId")
                if account and account not in self.users:
                    return 400, {"errors": {"assignee": "User does not exist"}}, {}
                issue["fields"]["assignee"] = self.users[account] if account else None
            if "priority" in fields:
                issue["fields"]["priority"] = fields["priority"]
            self._touch(key)
            return 204, None, {}
        if tail == "/transitions" and method == "GET":
            return 200, {"transitions": [
                {"id": tid, "name": name, "to": {"name": name}}
                for name, tid in self.TRANSITIONS.items()
            ]}, {}  # fmt: skip
        if tail == "/transitions" and method == "POST":
            wanted = (body.get("transition") or {}).get("id")
            names = {tid: name for name, tid in self.TRANSITIONS.items()}
            if wanted not in names:
                return 400, {"errorMessages": ["Transition id is not valid"]}, {}
            issue["fields"]["status"] = {"name": names[wanted]}
            self._touch(key)
            return 204, None, {}
        if tail == "/comment" and method == "GET":
            return 200, {"comments": self.comments[key], "total": len(self.comments[key])}, {}
        if tail == "/comment" and method == "POST":
            text = "".join(
                node.get("text", "")
                for para in (body.get("body") or {}).get("content", [])
                for node in para.get("content", [])
            )
            comment = self._comment(key, text, self.me)
            self._touch(key)
            return 201, comment, {}
        return 405, {"errorMessages": ["Method not allowed"]}, {}

    def webhook(
        self, key: str, *, secret: str = JIRA_SECRET, delivery_id: str = "",
        comment: bool = False, tamper: bool = False, unsigned: bool = False,
    ) -> tuple[bytes, dict[str, str]]:  # fmt: skip
        """The signed delivery Jira sends about the issue as it is now, as its last author."""
        with self.lock:
            issue = json.loads(json.dumps(self.issues[key]))
            author = self.users[self.user(self.last_author[key])]
            last = self.comments[key][-1] if self.comments[key] else None
        payload: dict[str, Any] = {
            "timestamp": 1767225600000, "webhookEvent": "jira:issue_updated",
            "issue_event_type_name": "issue_generic", "user": author, "issue": issue,
        }  # fmt: skip
        if comment and last is not None:
            payload["webhookEvent"] = "comment_created"
            payload["comment"] = last
            payload["user"] = last["author"]
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if tamper:
            body = body + b" "
        headers = {"X-Atlassian-Webhook-Identifier": delivery_id or str(uuid.uuid4())}
        if not unsigned:
            headers["X-Hub-Signature"] = signature
        return body, headers


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def zendesk(settings):
    """A fake Zendesk, and the settings pointing the portal at it."""
    fake = FakeZendesk()
    settings.ZENDESK_URL = fake.start()
    settings.ZENDESK_EMAIL = EMAIL
    settings.ZENDESK_API_TOKEN = TOKEN
    settings.ZENDESK_WEBHOOK_SECRET = ZENDESK_SECRET
    yield fake
    fake.stop()


@pytest.fixture
def jira(settings):
    fake = FakeJira()
    settings.JIRA_URL = fake.start()
    settings.JIRA_EMAIL = EMAIL
    settings.JIRA_API_TOKEN = TOKEN
    settings.JIRA_PROJECT = "SUP"
    settings.JIRA_WEBHOOK_SECRET = JIRA_SECRET
    yield fake
    fake.stop()


@pytest.fixture
def systems_off(settings):
    settings.ZENDESK_URL = ""
    settings.JIRA_URL = ""


HOOK_PATH = "/api/platform/helpdesk/webhooks/{system}"


def deliver(client, system: str, delivery: tuple[bytes, dict[str, str]]):
    """Post a webhook delivery to our endpoint with the test client (no session needed)."""
    body, headers = delivery
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    return client.post(
        HOOK_PATH.format(system=system), data=body, content_type="application/json", **extra
    )


def main() -> None:
    """Run both fakes on their own (a demo or a browser test): prints the settings to give the
    portal; ``POST /_fake/change`` on a fake changes a ticket there and calls the portal's
    webhook, signed."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--portal", default="http://127.0.0.1:8000", help="The portal's base URL.")
    parser.add_argument("--zendesk-port", type=int, default=0)
    parser.add_argument("--jira-port", type=int, default=0)
    args = parser.parse_args()
    zendesk, jira = FakeZendesk(), FakeJira()
    hooks = f"{args.portal.rstrip('/')}{HOOK_PATH}"
    zendesk.webhook_url, jira.webhook_url = (
        hooks.format(system="zendesk"),
        hooks.format(system="jira"),
    )
    print(f"ZENDESK_URL={zendesk.start(args.zendesk_port)} ZENDESK_EMAIL={EMAIL} ZENDESK_API_TOKEN={TOKEN} "
          f"ZENDESK_WEBHOOK_SECRET={ZENDESK_SECRET}", flush=True)  # fmt: skip
    print(f"JIRA_URL={jira.start(args.jira_port)} JIRA_EMAIL={EMAIL} JIRA_API_TOKEN={TOKEN} JIRA_PROJECT=SUP "
          f"JIRA_WEBHOOK_SECRET={JIRA_SECRET}", flush=True)  # fmt: skip
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        zendesk.stop()
        jira.stop()


if __name__ == "__main__":
    main()
