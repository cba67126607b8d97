"""Structured request logging: one JSON line per request with id, user, path, status, duration."""

from __future__ import annotations

import json
import logging

from django.test import Client

from portal.logging import JsonFormatter, RequestContextFilter, request_id_var


def _access_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "portal.access"]


def test_each_request_logs_one_structured_line(as_viewer, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="portal.access"):
        response = as_viewer.get("/logs/", HTTP_X_REQUEST_ID="trace-123")
    assert response["X-Request-ID"] == "trace-123"
    (record,) = _access_records(caplog)
    assert record.request_id == "trace-123"
    assert record.user == "vera"
    assert record.path == "/logs/"
    assert record.status == 200
    assert record.duration_ms >= 0
    line = json.loads(JsonFormatter().format(record))
    assert {
        "ts",
        "level",
        "logger",
        "message",
        "request_id",
        "user",
        "path",
        "status",
        "duration_ms",
    } <= set(line)


def test_unsafe_request_ids_are_replaced(client: Client, caplog, db) -> None:
    with caplog.at_level(logging.INFO, logger="portal.access"):
        response = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response["X-Request-ID"] != "bad id\nwith newline"
    assert len(response["X-Request-ID"]) == 32
    assert _access_records(caplog)[0].user is None


def test_other_log_lines_carry_the_request_id() -> None:
    token = request_id_var.set("abc")
    try:
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
        RequestContextFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "abc"
    assert line["message"] == "hello world"
    assert line["level"] == "warning"
