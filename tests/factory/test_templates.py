"""Each of the six templates passes its own sandbox tests, run against a real agentd with the
template's handler; the API and Monitoring templates against a real HTTP server and a real TCP
listener started here. And a bad setting the schema lets through fails in the sandbox, before
anything is created."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from agents.models import Agent
from factory.models import SandboxRun
from factory.services import creation, sandbox, templates
from factory.services.refusals import FactoryRefused


class Answer(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        Answer.seen.append(self.headers.get("Authorization", ""))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def http_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def tcp_port():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


def run(template_key: str, config: dict, actor) -> SandboxRun:
    template = templates.get_template(template_key)
    values, secrets = creation.parse_all(
        template, {"name": f"Try {template_key}", "owner": "Acme", **config}
    )
    started = sandbox.start_sandbox(template, values, secrets, actor)
    return sandbox.run_sandbox(started.pk)


@pytest.mark.parametrize("key", ["memory", "orchestration", "api", "data", "monitoring", "blank"])
def test_each_template_passes_its_own_sandbox_tests(
    key, catalog, operator_actor, http_url, tcp_port
) -> None:
    configs = {
        "orchestration": {"settings": {"targets": ["wow-cache", "wow-memory"]}},
        "api": {"settings": {"base_url": http_url, "auth_secret": "API_TOKEN", "auth_scheme": "Bearer"},
                "secrets": {"API_TOKEN": "t0ken"}},
        "monitoring": {"settings": {"targets": [
            {"name": "web", "kind": "http", "url": http_url + "/"},
            {"name": "port", "kind": "tcp", "host": "127.0.0.1", "port": tcp_port}]}},
    }  # fmt: skip
    done = run(key, configs.get(key, {}), operator_actor)
    assert done.status == SandboxRun.Status.PASSED, (done.error, done.results, done.logs[-8:])
    assert done.passed_count == len(catalog[key].test_tasks) >= 1
    assert done.torn_down_at is not None
    if key == "api":
        assert "Bearer t0ken" in Answer.seen
        assert not any("t0ken" in line["text"] for line in done.logs)
        assert done.secrets == {}


def test_a_bad_setting_the_schema_allows_fails_in_the_sandbox_and_creates_nothing(
    catalog, operator_actor
) -> None:
    # A pipeline that keeps one record passes the schema, but not the template's test.
    config = {"settings": {"pipeline": [{"limit": 1}]}}
    done = run("data", config, operator_actor)
    assert done.status == SandboxRun.Status.FAILED
    failing = [result for result in done.results if not result["passed"]]
    assert failing and "output.records" in failing[0]["error"]
    # One the handler cannot run at all: the agent refuses it at start, and says why.
    done = run(
        "data",
        {"settings": {"pipeline": [{"filter": {"field": "a", "op": "like"}}]}},
        operator_actor,
    )
    assert done.status == SandboxRun.Status.ERROR
    assert "did not start" in done.error
    assert any("pipeline" in line["text"] for line in done.logs)
    # Created through the one-shot door, the sandbox step stops the run before registering.
    before = Agent.objects.count()
    draft = creation.create_from_config(
        operator_actor, catalog["data"], "Acme Data", {"owner": "Acme", **config}
    )
    from .conftest import drive

    finished = drive(draft.run)
    assert finished.status == "failed" and "Sandbox #" in finished.error
    assert Agent.objects.count() == before


def test_an_orchestrator_needs_registered_targets(catalog, operator_actor) -> None:
    with pytest.raises(FactoryRefused) as refused:
        creation.parse_all(
            catalog["orchestration"], {"name": "X", "settings": {"targets": ["nobody-here"]}}
        )
    assert {
        "field": "settings.targets",
        "message": "No agent nobody-here in the registry to send tasks to.",
    } in refused.value.errors
