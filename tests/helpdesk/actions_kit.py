"""Helpers for the quick-action and playbook tests: customers' agents run for real on a private
local runtime, dead letters written as agentd writes them, and a real SMTP server that keeps
what it is sent. Import the fixtures into a test module to use them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

import psutil
import pytest

from agents import services as agent_services
from agents.agentd import contract
from agents.choices import Tier
from agents.models import Agent, Operation
from helpdesk.models import Customer, CustomerAgent
from portal.actors import Actor

TEST = Actor.command("test")


@pytest.fixture
def agent_root(tmp_path_factory, settings):
    """A private AGENT_ROOT; every process started under it is killed at teardown."""
    root = tmp_path_factory.mktemp("agents")
    settings.AGENT_ROOT = root
    settings.AGENT_READY_TIMEOUT_SECONDS = 15
    settings.AGENT_STOP_GRACE_SECONDS = 5
    yield root
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if any(str(root) in part for part in process.info["cmdline"] or []):
                os.kill(process.pid, signal.SIGKILL)


def link_agent(customer: Customer, slug: str, config: dict | None = None) -> Agent:
    """A Customer-tier agent of ``customer`` (in DRAFT)."""
    agent = Agent.objects.create(
        slug=slug, name=slug.replace("-", " ").title().replace(" ", ""), tier=Tier.CUSTOMER,
        config=config or {},
    )  # fmt: skip
    CustomerAgent.objects.create(customer=customer, agent=agent)
    return agent


def act(agent: Agent, action: str, actor: Actor = TEST) -> Operation:
    """Request ``action`` and carry it out here, as the worker would."""
    operation = agent_services.request_action(agent, action, actor, enqueue=False)
    operation = agent_services.run_operation(str(operation.pk))
    agent.refresh_from_db()
    return operation


def bring_up(agent: Agent, redis_client) -> Agent:
    """DRAFT to RUNNING with real agentd processes, its queue empty."""
    for key in redis_client.scan_iter(f"agents:{agent.slug}:*"):
        redis_client.delete(key)
    for action in ("provision", "deploy", "start"):
        operation = act(agent, action)
        assert operation.status == Operation.Status.SUCCEEDED, operation.error
    return agent


def run_pending_operations(agent: Agent) -> list[Operation]:
    """Carry out the agent's requested operations, as the worker would."""
    done = []
    for operation in Operation.objects.filter(agent=agent, status=Operation.Status.PENDING):
        done.append(agent_services.run_operation(str(operation.pk)))
    agent.refresh_from_db()
    return done


def dead_letter(redis_client, agent: Agent, customer: str, n: int = 0) -> str:
    """A dead letter on ``agent``'s queue as agentd writes it, for ``customer``."""
    fields = {
        contract.FIELD_PRODUCER: f"customer:{customer}",
        contract.FIELD_PAYLOAD: json.dumps({"n": n}),
        contract.FIELD_CUSTOMER: customer,
        contract.DLQ_ERROR: "boom",
        contract.DLQ_FAILURES: "3",
        contract.DLQ_ORIGINAL_ID: f"{int(time.time() * 1000)}-{n}",
        contract.DLQ_FINGERPRINT: contract.error_fingerprint("boom")[0],
    }
    entry_id = redis_client.xadd(contract.dead_letters(agent.slug), fields)
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def wait_until(condition, timeout: float = 10.0, message: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, message or f"condition not met in {timeout}s"
        time.sleep(0.05)


# --- a real SMTP server --------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the SMTP server was sent: one parsed message per DATA, with its envelope."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    port: int = 0


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough of RFC 5321 for Django's SMTP backend: EHLO/HELO, MAIL, RCPT, DATA, QUIT."""

    def _say(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())
        self.wfile.flush()

    def handle(self) -> None:
        box: Mailbox = self.server.mailbox  # type: ignore[attr-defined]
        sender, recipients = "", []
        self._say("220 test-smtp ready")
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            verb = raw.decode(errors="replace").strip()
            upper = verb.upper()
            if upper.startswith("EHLO"):
                self.wfile.write(b"250-test-smtp\r\n250 8BITMIME\r\n")
                self.wfile.flush()
            elif upper.startswith("HELO") or upper.startswith("RSET") or upper.startswith("NOOP"):
                self._say("250 OK")
            elif upper.startswith("MAIL FROM:"):
                sender, recipients = verb[10:].strip().strip("<>").split(">")[0], []
                self._say("250 OK")
            elif upper.startswith("RCPT TO:"):
                recipients.append(verb[8:].strip().strip("<>").split(">")[0])
                self._say("250 OK")
            elif upper == "DATA":
                self._say("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while True:
                    line = self.rfile.readline()
                    if line in (b".\r\n", b".\n", b""):
                        break
                    lines.append(line[1:] if line.startswith(b"..") else line)
                box.messages.append(message_from_bytes(b"".join(lines), policy=policy.default))
                box.envelopes.append((sender, recipients))
                self._say("250 OK queued")
            elif upper.startswith("QUIT"):
                self._say("221 Bye")
                return
            else:
                self._say("502 Command not implemented")


@pytest.fixture
def smtp_server(settings) -> Iterator[Mailbox]:
    """A real SMTP server on a free local port, with Django's SMTP backend pointed at it."""
    box = Mailbox()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
    server.daemon_threads = True
    server.mailbox = box  # type: ignore[attr-defined]
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", box.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 5
    yield box
    server.shutdown()
    server.server_close()


def new_slug(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
