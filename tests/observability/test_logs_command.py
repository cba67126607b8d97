"""``manage.py logs`` (tail, search, collect) and ``manage.py collect``: their output, their exit
status for bad input, and the long-running ones as real processes stopped by a signal."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DEFAULT_DB_ALIAS, connections

from agents.runtimes import LogLine
from observability import logs
from observability.collector import LOCK_KEY
from observability.models import LogEntry

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


def line(message: str, at: datetime, level: str = "info", replica: int = 0, **fields) -> LogLine:
    record = {"ts": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": level}
    record.update(event="note", message=message, **fields)
    return LogLine("wow-cache", replica, record["ts"], json.dumps(record))


def message_of(printed: str) -> str:
    """The message column of a printed line (columns are two or more spaces apart)."""
    return re.split(r" {2,}", printed)[3]


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("logs", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def cache(seeded):
    agent = seeded["wow-cache"]
    logs.ingest(
        agent.pk,
        [
            line(f"line {n}", T0 + timedelta(seconds=n), "warning" if n % 3 == 0 else "info")
            for n in range(30)
        ],
    )
    return agent


# --- tail --------------------------------------------------------------------------------------


def test_tail_prints_the_last_lines_oldest_first_in_one_format(cache):
    out, _ = run("tail", "wow-cache", "--lines", "3", "--no-follow")
    assert out.splitlines() == [
        "2026-11-21T10:00:27.000Z  WARNING  wow-cache/0  line 27  event=note",
        "2026-11-21T10:00:28.000Z  INFO     wow-cache/0  line 28  event=note",
        "2026-11-21T10:00:29.000Z  INFO     wow-cache/0  line 29  event=note",
    ]


def test_tail_at_a_level(cache):
    out, _ = run("tail", "wow-cache", "--level", "warning", "--lines", "2", "--no-follow")
    assert [message_of(text) for text in out.splitlines()] == ["line 24", "line 27"]


def test_tail_shows_the_fields(seeded):
    logs.ingest(
        seeded["wow-cache"].pk,
        [line("task 1-0 failed", T0, "error", replica=1, task_id="1-0", error="timed out")],
    )
    out, _ = run("tail", "wow-cache", "--no-follow")
    assert out == (
        "2026-11-21T10:00:00.000Z  ERROR    wow-cache/1  task 1-0 failed  "
        'event=note error="timed out" task_id=1-0\n'
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["tail", "no-such-agent", "--no-follow"], "There is no agent 'no-such-agent'"),
        (
            ["tail", "wow-cache", "--level", "loud", "--no-follow"],
            "Unknown level 'loud'; use one of",
        ),
        (["tail", "wow-cache", "--lines", "0", "--no-follow"], "limit=0 is not between 1 and 1000"),
        (["search", "wow-cache", "--since", "last tuesday"], "since='last tuesday' is not a time"),
        (["search", "wow-cache", "--text", "ok"], "at least three letters or digits"),
        (["search", "wow-cache", "--before", "nope"], "is not a page cursor"),
        (["collect"], "Name the agents to collect, or --all."),
    ],
)
def test_bad_input_is_exit_status_2_with_the_reason(seeded, args, says):
    with pytest.raises(CommandError) as refused:
        run(*args)
    assert refused.value.returncode == 2
    assert says in str(refused.value)


def test_unknown_slug_from_the_command_line_exits_2_on_stderr(test_database_url, redis_url):
    result = subprocess.run(
        [sys.executable, "manage.py", "logs", "tail", "no-such-agent", "--no-follow"],
        cwd=ROOT,
        env=_env(test_database_url, redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "There is no agent 'no-such-agent'" in result.stderr
    assert result.stdout == ""


def _env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, **extra}
    env.update(LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    return env


class Process:
    """A ``manage.py`` command running in the background, its output read line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for text in self.process.stdout:
            self.lines.put(text.rstrip("\n"))

    def next_lines(self, count: int, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        found = []
        while len(found) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"got only {found!r}; stderr: {self._stderr()}"
            try:
                found.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                continue
        return found

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.process.kill()

    def _stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stderr.read()


@pytest.mark.django_db(transaction=True)
def test_tail_follows_new_lines_until_ctrl_c(cache, test_database_url, redis_url):
    tail = Process(
        ["logs", "tail", "wow-cache", "--lines", "2", "--level", "info"],
        _env(test_database_url, redis_url),
    )
    try:
        assert [message_of(text) for text in tail.next_lines(2)] == ["line 28", "line 29"]
        logs.ingest(cache.pk, [line("debug noise", T0 + timedelta(minutes=1), "debug")])
        logs.ingest(cache.pk, [line("fresh 1", T0 + timedelta(minutes=1), "error")])
        logs.ingest(cache.pk, [line("fresh 2", T0 + timedelta(minutes=2))])
        new = tail.next_lines(2)
        assert [message_of(text) for text in new] == ["fresh 1", "fresh 2"]
        assert new[0].startswith("2026-11-21T10:01:00.000Z  ERROR    wow-cache/0  fresh 1")
    finally:
        code = tail.stop(signal.SIGINT)
    assert code == 0
    assert tail.lines.empty(), "nothing printed twice, no debug line"


# --- search -----------------------------------------------------------------------------------------


def test_search_prints_a_page_oldest_first_and_how_to_get_the_older_one(cache):
    out, err = run("search", "wow-cache", "--level", "warning", "--limit", "3")
    assert [message_of(text) for text in out.splitlines()] == ["line 21", "line 24", "line 27"]
    assert err.startswith("Older lines: add --before ")
    cursor = err.split("--before ")[1].strip()
    older, _ = run("search", "wow-cache", "--level", "warning", "--limit", "3", "--before", cursor)
    assert [message_of(text) for text in older.splitlines()] == ["line 12", "line 15", "line 18"]


def test_search_by_text_and_time(cache):
    out, err = run("search", "wow-cache", "--text", "LINE 2", "--since", "2026-11-21T10:00:25Z")
    assert [message_of(text) for text in out.splitlines()] == [
        "line 25",
        "line 26",
        "line 27",
        "line 28",
        "line 29",
    ]
    assert err == ""
    nothing, said = run("search", "wow-cache", "--text", "no such words")
    assert nothing == "" and said.strip() == "No lines match."


# --- collect ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_collect_reads_a_running_agents_new_lines(seeded, bring_up):
    bring_up(seeded["wow-cache"])
    out, _ = run("collect", "wow-cache")
    stored = int(out.split(": ")[1].split()[0])
    assert stored >= 2 and LogEntry.objects.count() == stored
    again, _ = run("collect", "--all")
    assert again == "wow-cache: 0 new lines\n"


@pytest.mark.django_db(transaction=True)
def test_collect_refuses_while_the_collector_runs(seeded, act):
    act(seeded["wow-cache"], "provision")
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        with pytest.raises(CommandError, match="The log collector is running") as refused:
            run("collect", "wow-cache")
        assert refused.value.returncode == 1
    finally:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        other.close()


def test_collect_says_which_agent_could_not_be_read(seeded, settings, tmp_path):
    """An agent on a Docker engine that does not answer."""
    settings.DOCKER_HOST = f"unix://{tmp_path}/no-engine.sock"
    seeded["wow-search"].runtime = "docker"
    seeded["wow-search"].save()
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 of 2 logs could not be read") as failed:
        call_command("logs", "collect", "wow-cache", "wow-search", stdout=out, stderr=err)
    assert failed.value.returncode == 1
    assert out.getvalue() == "wow-cache: 0 new lines\n"
    assert err.getvalue().startswith("wow-search: cannot read its log: ")
    assert "no-engine.sock" in err.getvalue()


# --- manage.py collect -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_collect_command_stores_lines_and_stops_cleanly_on_sigterm(
    seeded, bring_up, agent_root, test_database_url, redis_url
):
    cache = bring_up(seeded["wow-cache"])
    collector = Process(
        ["collect"],
        _env(test_database_url, redis_url, AGENT_ROOT=str(agent_root), AGENT_REDIS_URL=redis_url),
    )
    try:
        deadline = time.monotonic() + 30
        while not LogEntry.objects.filter(agent=cache, event="ready").exists():
            assert collector.process.poll() is None, collector._stderr()
            assert time.monotonic() < deadline, "the collect command stored nothing"
            time.sleep(0.2)
        started = time.monotonic()
        code = collector.stop(signal.SIGTERM)
    finally:
        collector.process.kill()
    assert code == 0
    assert time.monotonic() - started < 10
