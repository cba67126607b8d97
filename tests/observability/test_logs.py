"""The log service: agentd's lines parsed and stored with COPY, searched newest first with keyset
pages, tailed after an id, exported, purged; bad questions refused with a message that says what
to write instead. Real PostgreSQL (its trigram indexes included)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.runtimes import LogLine
from observability import logs
from observability.models import Level, LogEntry
from observability.tasks import purge_logs

T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def agentd_line(
    message: str,
    *,
    level: str = "info",
    event: str = "note",
    at: datetime = T0,
    slug: str = "wow-cache",
    replica: int = 0,
    **fields,
) -> LogLine:
    """A line exactly as agentd writes it (agents/agentd/log.py)."""
    record = {"ts": iso(at), "level": level, "slug": slug, "replica": replica, "event": event}
    record["message"] = message
    record.update(fields)
    return LogLine(slug, replica, iso(at), json.dumps(record))


def store(agent, *lines: LogLine) -> list[LogEntry]:
    logs.ingest(agent.pk, lines)
    return list(LogEntry.objects.filter(agent=agent).order_by("id"))


@pytest.fixture
def cache(seeded):
    return seeded["wow-cache"]


@pytest.fixture
def memory(seeded):
    return seeded["wow-memory"]


# --- parse ---------------------------------------------------------------------------------------


def test_an_agentd_line_becomes_level_event_message_and_fields():
    line = agentd_line(
        "task 17-0 failed (1/3), will retry: timeout",
        level="warning",
        event="task_failed",
        at=T0 + timedelta(milliseconds=123),
        replica=1,
        task_id="17-0",
        failures=1,
    )
    parsed = logs.parse(line)
    assert parsed.level == Level.WARNING
    assert parsed.event == "task_failed"
    assert parsed.message == "task 17-0 failed (1/3), will retry: timeout"
    assert parsed.ts == T0 + timedelta(milliseconds=123)
    assert parsed.replica == 1
    # ts, level, slug, replica, event and message have columns; the rest are the fields.
    assert parsed.fields == {"task_id": "17-0", "failures": 1}


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("debug", Level.DEBUG),
        ("INFO", Level.INFO),
        ("warn", Level.WARNING),
        ("Warning", Level.WARNING),
        ("error", Level.ERROR),
        ("fatal", Level.CRITICAL),
        ("critical", Level.CRITICAL),
    ],
)
def test_level_names_in_any_case_and_their_aliases(name, level):
    assert logs.parse(agentd_line("x", level=name)).level == level


def test_an_unknown_level_is_info_and_kept_among_the_fields():
    parsed = logs.parse(agentd_line("x", level="loud"))
    assert parsed.level == Level.INFO
    assert parsed.fields == {"level": "loud"}


def test_a_line_that_is_not_json_is_kept_whole_as_an_info_message():
    line = LogLine("wow-cache", 0, iso(T0), "Traceback (most recent call last):")
    parsed = logs.parse(line)
    assert (parsed.level, parsed.event, parsed.fields) == (Level.INFO, "", {})
    assert parsed.message == "Traceback (most recent call last):"
    assert parsed.ts == T0  # the runtime's time for it


def test_json_that_is_not_an_object_is_kept_as_text():
    parsed = logs.parse(LogLine("wow-cache", 0, iso(T0), "[1, 2, 3]"))
    assert parsed.message == "[1, 2, 3]" and parsed.level == Level.INFO


def test_a_time_that_cannot_be_read_falls_back_to_the_runtimes_then_to_now():
    record = {"ts": "yesterday-ish", "level": "info", "event": "x", "message": "m"}
    with_runtime_time = logs.parse(LogLine("wow-cache", 0, iso(T0), json.dumps(record)))
    assert with_runtime_time.ts == T0
    before = timezone.now()
    without = logs.parse(LogLine("wow-cache", 0, "", json.dumps(record)))
    assert before <= without.ts <= timezone.now()
    plain = logs.parse(LogLine("wow-cache", 0, "", "no time anywhere"))
    assert before <= plain.ts <= timezone.now()


def test_a_time_without_a_zone_is_utc():
    record = {"ts": "2026-11-21T10:00:00.500", "level": "info", "message": "m"}
    assert logs.parse(LogLine("wow-cache", 0, "", json.dumps(record))).ts == T0 + timedelta(
        milliseconds=500
    )


def test_a_line_without_a_message_keeps_its_text():
    text = json.dumps({"ts": iso(T0), "level": "error", "event": "boom"})
    parsed = logs.parse(LogLine("wow-cache", 0, iso(T0), text))
    assert parsed.level == Level.ERROR and parsed.event == "boom" and parsed.message == text


# --- ingest ----------------------------------------------------------------------------------------


def test_ingest_stores_every_line_with_its_values(cache):
    lines = [
        agentd_line(f"line {n}", level="debug" if n % 2 else "error", at=T0 + timedelta(seconds=n))
        for n in range(1000)
    ]
    assert logs.ingest(cache.pk, lines) == 1000
    stored = LogEntry.objects.filter(agent=cache)
    assert stored.count() == 1000
    last = stored.get(message="line 999")
    assert (last.level, last.event, last.replica) == (Level.DEBUG, "note", 0)
    assert last.ts == T0 + timedelta(seconds=999)
    assert stored.filter(level=Level.ERROR).count() == 500


def test_ingest_answers_nothing_for_no_lines(cache):
    assert logs.ingest(cache.pk, []) == 0
    assert not LogEntry.objects.exists()


def test_ingest_keeps_what_postgresql_text_and_jsonb_refuse(cache):
    """NUL characters and NaN would make PostgreSQL refuse the whole COPY."""
    record = {"ts": iso(T0), "level": "info", "message": "a\x00b", "ratio": float("nan")}
    record["nested"] = {"inf": float("inf"), "text": "c\x00d"}
    text = json.dumps(record)  # Python writes NaN and Infinity, as agentd's json.dumps would
    assert logs.ingest(cache.pk, [LogLine("wow-cache", 0, iso(T0), text)]) == 1
    entry = LogEntry.objects.get(agent=cache)
    assert entry.message == "a\ufffdb"
    assert entry.fields == {"ratio": "nan", "nested": {"inf": "inf", "text": "c\ufffdd"}}


def test_a_huge_line_is_cut(cache):
    store(cache, agentd_line("x" * 100_000))
    message = LogEntry.objects.get(agent=cache).message
    assert len(message) < 33_000 and message.endswith("[cut, 100000 characters]")


# --- search ------------------------------------------------------------------------------------------


@pytest.fixture
def sample(cache, memory):
    """Twelve lines of WowCache a second apart, and two of WowMemory."""
    levels = ["debug", "info", "warning", "error", "critical", "info"] * 2
    messages = [
        "processing task 1-0",
        "task 1-0 processed",
        "task 2-0 failed 3 times; moved to agents:wow-cache:dlq",
        "unexpected error in the task loop: KeyError('payload')",
        "agentd used 530 MiB, over its limit; killing it",
        "config changed: 100%_done",
        "processing task 3-0",
        "Redis is unreachable, retrying with backoff",
        "Redis is unreachable, retrying with backoff",
        "KEYERROR again",
        "out of memory",
        "listening on 127.0.0.1:20417",
    ]
    lines = [
        agentd_line(message, level=level, at=T0 + timedelta(seconds=n))
        for n, (level, message) in enumerate(zip(levels, messages, strict=True))
    ]
    store(cache, *lines)
    store(memory, agentd_line("memory says hello", slug="wow-memory", at=T0 + timedelta(seconds=5)))
    store(memory, agentd_line("memory KeyError", level="error", slug="wow-memory", at=T0))
    return cache


def messages(page) -> list[str]:
    return [entry.message for entry in page.entries]


def test_search_answers_newest_first_with_agents_attached(sample, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):  # the lines, then their agents: no query per line
        page = logs.search(agent=sample, limit=3)
        names = [entry.agent.name for entry in page.entries]
    assert messages(page) == ["listening on 127.0.0.1:20417", "out of memory", "KEYERROR again"]
    assert names == ["WowCache"] * 3
    assert page.has_more and page.next_cursor


def test_search_by_slug_or_agent_is_the_same(sample):
    assert messages(logs.search(agent="wow-cache")) == messages(logs.search(agent=sample))


def test_search_without_an_agent_spans_every_agent(sample):
    assert len(logs.search(limit=100).entries) == 14


def test_level_is_a_minimum(sample):
    assert {e.level for e in logs.search(agent=sample, level="warning").entries} == {30, 40, 50}
    assert len(logs.search(agent=sample, level="error").entries) == 4
    assert messages(logs.search(agent=sample, level=Level.CRITICAL)) == [
        "out of memory",
        "agentd used 530 MiB, over its limit; killing it",
    ]
    assert len(logs.search(agent=sample, level="debug").entries) == 12


def test_level_search_merges_the_levels_newest_first(sample):
    entries = logs.search(agent=sample, level="info", limit=100).entries
    assert [e.ts for e in entries] == sorted((e.ts for e in entries), reverse=True)
    assert len(entries) == 10  # all but the two debug lines


def test_text_is_any_case_substring(sample):
    assert messages(logs.search(agent=sample, text="keyerror")) == [
        "KEYERROR again",
        "unexpected error in the task loop: KeyError('payload')",
    ]


def test_percent_and_underscore_match_themselves(sample):
    assert messages(logs.search(agent=sample, text="100%_done")) == ["config changed: 100%_done"]
    assert messages(logs.search(agent=sample, text="100%_d")) == ["config changed: 100%_done"]
    assert messages(logs.search(agent=sample, text="10__done")) == []
    assert messages(logs.search(agent=sample, text="task%processed")) == []


def test_level_and_text_together(sample):
    assert messages(logs.search(agent=sample, level="error", text="keyerror")) == [
        "KEYERROR again",
        "unexpected error in the task loop: KeyError('payload')",
    ]
    assert messages(logs.search(agent=sample, level="critical", text="keyerror")) == []
    # Across agents, newest first.
    assert messages(logs.search(level="error", text="keyerror")) == [
        "KEYERROR again",
        "unexpected error in the task loop: KeyError('payload')",
        "memory KeyError",
    ]


def test_text_rare_in_the_newest_lines_is_found_further_back(sample, monkeypatch):
    """Past the window of newest lines a text search goes to the trigram indexes; the answer is
    the same."""
    monkeypatch.setattr(logs, "WINDOW", 2)
    assert messages(logs.search(agent=sample, text="processing")) == [
        "processing task 3-0",
        "processing task 1-0",
    ]
    warnings = logs.search(agent=sample, level="warning", text="redis").entries
    assert [(e.message, e.level) for e in warnings] == [
        ("Redis is unreachable, retrying with backoff", Level.WARNING)
    ]
    assert len(logs.search(agent=sample, level="info", text="redis").entries) == 2


def test_since_and_until_bound_the_time(sample):
    page = logs.search(
        agent=sample, since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=5)
    )
    assert messages(page) == [
        "agentd used 530 MiB, over its limit; killing it",
        "unexpected error in the task loop: KeyError('payload')",
    ]
    iso_text = logs.search(agent=sample, since="2026-11-21T10:00:10Z")
    assert messages(iso_text) == ["listening on 127.0.0.1:20417", "out of memory"]


def test_since_as_an_age(cache):
    store(
        cache,
        agentd_line("old", at=timezone.now() - timedelta(hours=3)),
        agentd_line("recent", at=timezone.now() - timedelta(minutes=5)),
    )
    assert messages(logs.search(agent=cache, since="1h")) == ["recent"]
    assert messages(logs.search(agent=cache, since="4h")) == ["recent", "old"]
    assert messages(logs.search(agent=cache, until="10m")) == ["old"]


def test_keyset_pages_cover_every_line_once_in_order(sample):
    seen, cursor = [], None
    while True:
        page = logs.search(agent=sample, limit=5, before=cursor)
        seen.extend(page.entries)
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert len(seen) == 12 and len({e.pk for e in seen}) == 12
    assert [e.ts for e in seen] == sorted((e.ts for e in seen), reverse=True)


def test_keyset_pages_split_lines_of_the_same_time(cache):
    store(cache, *(agentd_line(f"same {n}", at=T0) for n in range(7)))
    first = logs.search(agent=cache, limit=3)
    second = logs.search(agent=cache, limit=3, before=first.next_cursor)
    third = logs.search(agent=cache, limit=3, before=second.next_cursor)
    ids = [e.pk for page in (first, second, third) for e in page.entries]
    assert len(ids) == 7 == len(set(ids))
    assert ids == sorted(ids, reverse=True)  # same time: newest id first
    assert third.next_cursor is None


def test_pages_with_filters_keep_the_filters(sample):
    first = logs.search(agent=sample, level="warning", limit=2)
    second = logs.search(agent=sample, level="warning", limit=2, before=first.next_cursor)
    rest = logs.search(agent=sample, level="warning", limit=50, before=second.next_cursor)
    assert len(first.entries + second.entries + rest.entries) == 6
    assert all(e.level >= 30 for e in first.entries + second.entries + rest.entries)


def test_text_search_pages_too(sample):
    first = logs.search(agent=sample, text="task", limit=2)
    second = logs.search(agent=sample, text="task", limit=2, before=first.next_cursor)
    assert messages(first) == [
        "processing task 3-0",
        "unexpected error in the task loop: KeyError('payload')",
    ]
    assert messages(second) == [
        "task 2-0 failed 3 times; moved to agents:wow-cache:dlq",
        "task 1-0 processed",
    ]


def test_an_agent_without_lines_answers_an_empty_page(seeded):
    page = logs.search(agent="wow-search")
    assert page.entries == [] and page.next_cursor is None and not page.has_more


def test_search_reads_no_count(sample):
    with CaptureQueriesContext(connection) as captured:
        logs.search(agent=sample, level="info", text="task")
    assert not any("COUNT(" in query["sql"].upper() for query in captured.captured_queries)
    assert not any("OFFSET" in query["sql"].upper() for query in captured.captured_queries)


# --- bad questions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "says"),
    [
        (
            {"level": "loud"},
            "Unknown level 'loud'; use one of debug, info, warning, error, critical.",
        ),
        ({"level": 35}, "Unknown level 35"),
        ({"agent": "no-such-agent"}, "There is no agent 'no-such-agent'; `manage.py agents list`"),
        ({"since": "yesterday"}, "since='yesterday' is not a time; use ISO 8601"),
        ({"until": "2026-13-45"}, "until='2026-13-45' is not a time"),
        ({"since": "2h", "until": "3h"}, "is not before until"),
        ({"before": "page-2"}, "before='page-2' is not a page cursor"),
        ({"before": "99999999999999999999_1"}, "points outside any time"),
        ({"limit": 0}, "limit=0 is not between 1 and 1000"),
        ({"limit": 5000}, "limit=5000 is not between 1 and 1000"),
        ({"text": "x" * 201}, "use at most 200"),
        ({"text": "ok"}, "at least three letters or digits in a row"),
        ({"text": "--->"}, "at least three letters or digits in a row"),
    ],
)
def test_bad_questions_say_what_to_change(seeded, question, says):
    with pytest.raises(logs.LogQueryError) as refused:
        logs.search(**question)
    assert says in str(refused.value)
    assert isinstance(refused.value, ValueError)


def test_after_refuses_what_is_not_an_id(seeded):
    with pytest.raises(logs.LogQueryError, match="is not a line id"):
        logs.after("12")  # type: ignore[arg-type]


# --- after, export, format -------------------------------------------------------------------------


def test_after_answers_lines_stored_later_oldest_first(sample, memory):
    newest = LogEntry.objects.order_by("-id").first()
    store(sample, agentd_line("later, old time", at=T0 - timedelta(days=1)))
    store(memory, agentd_line("memory later", slug="wow-memory", level="error"))
    store(sample, agentd_line("later error", level="error"))
    assert [e.message for e in logs.after(newest.pk)] == [
        "later, old time",
        "memory later",
        "later error",
    ]
    assert [e.message for e in logs.after(newest.pk, agent=sample)] == [
        "later, old time",
        "later error",
    ]
    assert [e.message for e in logs.after(newest.pk, level="error")] == [
        "memory later",
        "later error",
    ]
    assert [e.message for e in logs.after(newest.pk, agent=sample, limit=1)] == ["later, old time"]
    assert logs.after(LogEntry.objects.order_by("-id").first().pk) == []


def test_export_is_every_matching_line_oldest_first_in_pages(sample, monkeypatch):
    monkeypatch.setattr(logs, "EXPORT_PAGE", 3)
    lines = list(logs.export(agent=sample))
    assert len(lines) == 12 and all(line.endswith("\n") for line in lines)
    assert lines[0].startswith(
        "2026-11-21T10:00:00.000Z  DEBUG    wow-cache/0  processing task 1-0"
    )
    assert lines[-1].startswith("2026-11-21T10:00:11.000Z  INFO     wow-cache/0  listening on")
    filtered = list(logs.export(agent=sample, level="error", text="keyerror"))
    assert len(filtered) == 2
    assert len(list(logs.export(agent=sample, max_lines=4))) == 4


def test_format_line_shows_time_level_agent_replica_message_and_fields(cache):
    store(
        cache,
        agentd_line(
            "task 7-0 moved\nto the dlq",
            level="warning",
            event="task_dead_lettered",
            at=T0 + timedelta(milliseconds=7),
            replica=1,
            task_id="7-0",
            error="upstream timeout",
            failures=3,
        ),
    )
    entry = logs.search(agent=cache).entries[0]
    assert logs.format_line(entry) == (
        "2026-11-21T10:00:00.007Z  WARNING  wow-cache/1  task 7-0 moved\\nto the dlq  "
        # The fields in the order PostgreSQL's jsonb keeps them (shorter keys first).
        'event=task_dead_lettered error="upstream timeout" task_id=7-0 failures=3'
    )


# --- purge ---------------------------------------------------------------------------------------------


def test_purge_deletes_only_older_lines_in_batches(cache, monkeypatch):
    monkeypatch.setattr(logs, "PURGE_BATCH", 7)
    now = timezone.now()
    store(
        cache, *(agentd_line(f"old {n}", at=now - timedelta(days=8, seconds=n)) for n in range(20))
    )
    store(
        cache, *(agentd_line(f"new {n}", at=now - timedelta(days=6, seconds=n)) for n in range(5))
    )
    with CaptureQueriesContext(connection) as captured:
        assert logs.purge(timedelta(days=7)) == 20
    deletes = [q for q in captured.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 7 + 7 + 6
    assert sorted(LogEntry.objects.values_list("message", flat=True)) == [
        f"new {n}" for n in range(5)
    ]
    assert logs.purge(timedelta(days=7)) == 0


def test_purge_before_a_time(cache):
    store(cache, agentd_line("a", at=T0), agentd_line("b", at=T0 + timedelta(hours=1)))
    assert logs.purge(T0 + timedelta(minutes=30)) == 1
    assert list(LogEntry.objects.values_list("message", flat=True)) == ["b"]


def test_the_purge_task_keeps_log_retention_days(cache, settings):
    settings.LOG_RETENTION_DAYS = 2
    now = timezone.now()
    store(
        cache,
        agentd_line("3 days", at=now - timedelta(days=3)),
        agentd_line("1 day", at=now - timedelta(days=1)),
    )
    assert purge_logs() == 1
    assert list(LogEntry.objects.values_list("message", flat=True)) == ["1 day"]


def test_purge_is_scheduled_hourly(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["observability-purge-logs"]
    assert entry == {"task": "observability.purge_logs", "schedule": 3600.0}
