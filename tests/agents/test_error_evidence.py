"""Which log lines are the evidence of a crash: those of the run that crashed, also when a
restart has since moved them to previous.log and a new run is writing agent.log."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.db import transaction

from agents import errors
from agents.models import Agent

CRASHED_AT = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC).timestamp()


def _line(moment: str, level: str, message: str) -> str:
    return json.dumps(
        {"ts": moment, "level": level, "slug": "wow-cache", "replica": 0,
         "event": "note", "message": message}
    )  # fmt: skip


def _write_logs(agent_root, previous: list[str], current: list[str]) -> None:
    replica = agent_root / "wow-cache" / "replica-0"
    replica.mkdir(parents=True)
    (replica / "previous.log").write_text("".join(line + "\n" for line in previous))
    (replica / "agent.log").write_text("".join(line + "\n" for line in current))


def _record_sigkill(details: dict) -> list[str]:
    with transaction.atomic():
        error = errors.record_error(
            Agent.objects.get(slug="wow-cache"), "crash", "process killed by SIGKILL", details
        )
    return error.evidence


def test_a_sigkill_shows_the_lines_of_the_run_that_crashed_not_the_run_after_it(
    seeded, agent_root
) -> None:
    crashed_run = [
        _line("2026-12-03T12:00:00.500Z", "info", "started"),
        _line("2026-12-03T12:00:29.900Z", "warning", "cache nearly full"),
    ]
    next_run = [_line("2026-12-03T12:00:35.000Z", "info", "started again")]
    _write_logs(agent_root, previous=crashed_run, current=next_run)

    evidence = _record_sigkill(
        {"signal": 9, "replica": 0, "at": CRASHED_AT, "uptime_seconds": 30.0}
    )

    assert evidence == crashed_run


def test_the_run_before_the_crashed_one_is_not_evidence_either(seeded, agent_root) -> None:
    run_before = [_line("2026-12-03T11:59:00.000Z", "info", "the run before")]
    crashed_run = [_line("2026-12-03T12:00:10.000Z", "error", "out of patience")]
    _write_logs(agent_root, previous=run_before, current=crashed_run)

    evidence = _record_sigkill(
        {"signal": 9, "replica": 0, "at": CRASHED_AT, "uptime_seconds": 30.0}
    )

    assert evidence == crashed_run


def test_without_the_run_times_the_evidence_is_the_current_log(seeded, agent_root) -> None:
    current = [_line("2026-12-03T12:00:10.000Z", "error", "found by reconciliation")]
    _write_logs(
        agent_root, previous=[_line("2026-12-03T11:00:00.000Z", "info", "old")], current=current
    )

    assert _record_sigkill({"signal": 9, "replica": 0, "reason": "exited"}) == current
