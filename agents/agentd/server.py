"""The HTTP side of agentd: routing and JSON plumbing around the endpoints the agent provides."""

from __future__ import annotations

import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from .config import ConfigError
from .log import JsonLogger
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

MAX_BODY_BYTES = 1024 * 1024


class Endpoints(Protocol):
    """What the agent answers; the server only turns it into HTTP."""

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def readiness(self) -> tuple[int, dict[str, Any]]: ...

    def metrics(self) -> str: ...

    def config(self) -> dict[str, Any]: ...

    def patch_config(self, patch: object) -> dict[str, Any]: ...


ROUTES: dict[str, dict[str, str]] = {
    "/healthz": {"GET": "get_health"},
    "/readyz": {"GET": "get_readiness"},
    "/metrics": {"GET": "get_metrics"},
    "/config": {"GET": "get_config", "PATCH": "patch_config"},
}


class AgentHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the agent's endpoints and logger."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], endpoints: Endpoints, logger: JsonLogger):
        self.endpoints = endpoints
        self.logger = logger
        super().__init__(address, AgentRequestHandler)


class AgentRequestHandler(BaseHTTPRequestHandler):
    """Routes a request to its endpoint; every answer, errors included, is JSON or metrics text."""

    server: AgentHTTPServer
    server_version = "agentd"
    # For the errors http.server answers itself (malformed request, unknown method).
    error_content_type = "application/json"
    error_message_format = '{"error": "%(code)d %(message)s"}'

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        methods = ROUTES.get(path)
        if methods is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})
            return
        handler_name = methods.get(method)
        if handler_name is None:
            allowed = ", ".join(methods)
            self._send_json(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": f"{method} is not allowed on {path}; allowed: {allowed}"},
                headers={"Allow": allowed},
            )
            return
        getattr(self, handler_name)()

    def get_health(self) -> None:
        self._send_json(*self.server.endpoints.health())

    def get_readiness(self) -> None:
        self._send_json(*self.server.endpoints.readiness())

    def get_metrics(self) -> None:
        body = self.server.endpoints.metrics().encode()
        self._send(HTTPStatus.OK, body, METRICS_CONTENT_TYPE)

    def get_config(self) -> None:
        self._send_json(HTTPStatus.OK, self.server.endpoints.config())

    def patch_config(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            self._send_json(
                HTTPStatus.BAD_REQUEST,
                {"error": f"send a JSON object of at most {MAX_BODY_BYTES} bytes"},
            )
            return
        try:
            patch = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": f"the body is not valid JSON: {exc}"})
            return
        try:
            config = self.server.endpoints.patch_config(patch)
        except ConfigError as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._send_json(HTTPStatus.OK, config)

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, "application/json", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes hit these endpoints every few seconds: requests are debug-level noise.
        self.server.logger.debug(
            "http_request", format % args, client=self.client_address[0], path=self.path
        )

    def log_error(self, format: str, *args: Any) -> None:
        self.server.logger.warning("http_error", format % args, client=self.client_address[0])
