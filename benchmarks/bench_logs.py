"""The log pipeline: how fast lines are stored, and how fast one agent's million lines are searched.

(a) Ingestion: realistic agentd lines through ``logs.parse`` and ``logs.ingest`` (one COPY per
    batch, every index in place, on a table already holding the search data set), in batches
    of the size the collector writes at that rate (a quarter of a second's worth). Lines per
    second, median of 5 runs.
(b) Search: 1,000,000 lines of one agent (WowCache) plus 20,000 of each other agent, with a
    realistic level mix and messages, loaded with COPY; then ``logs.search(agent, level, text)``
    for representative questions, each the median of several runs, in milliseconds, with the
    index PostgreSQL chose (EXPLAIN ANALYZE).

    .venv/bin/python benchmarks/bench_logs.py [--lines 1000000] [--runs 7]
    .venv/bin/python benchmarks/bench_logs.py --smoke    # 20,000 lines, one run of each

Goals (issue 8): ingestion ≥ 10,000 lines/s; every search < 100 ms. Exits 1 when lines went
missing (ingested or loaded lines not all stored, the newest-lines search finding none): a rate
or a search time over an empty table measures nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from _harness import django_environment

INGEST_GOAL = 10_000
SEARCH_GOAL_MS = 100.0
INGEST_RUNS = 5
INGEST_LINES_PER_RUN = 50_000
OTHER_AGENT_LINES = 20_000
LOAD_BATCH = 50_000

# agentd's events (agents/agentd), with the share of lines each makes on a busy agent whose
# log level is debug: most lines are per-task, a few are warnings, errors are rare.
EVENTS = [
    (0.30, "debug", "task_started", "processing task {task}", {"task_id": "{task}"}),
    (0.30, "debug", "task_processed", "task {task} processed in {secs}s",
     {"task_id": "{task}", "duration_seconds": "{secs}"}),
    (0.25, "info", "task_failed", "task {task} failed (1/3), will retry: upstream timeout after {ms} ms",
     {"task_id": "{task}", "error": "upstream timeout", "failures": 1, "max_failures": 3}),
    (0.05, "info", "config_changed", "config changed: task_block_ms",
     {"changed": ["task_block_ms"]}),
    (0.06, "warning", "task_dead_lettered", "task {task} failed 3 times; moved to agents:{slug}:dlq",
     {"task_id": "{task}", "dead_letter_id": "{task}", "failures": 3}),
    (0.025, "warning", "redis_unavailable", "Redis is unreachable, retrying with backoff: Connection refused",
     {"error": "Connection refused"}),
    (0.014, "error", "worker_error", "unexpected error in the task loop: KeyError('payload')",
     {"error": "KeyError('payload')"}),
    (0.001, "critical", "oom", "agentd used 530 MiB, over its limit of 512 MiB; killing it",
     {"rss_bytes": 555745280, "limit_bytes": 536870912}),
]  # fmt: skip


def agentd_lines(slug: str, count: int, start: datetime, step: timedelta, seed: int):
    """``count`` LogLines as agentd writes them, ``step`` apart from ``start``."""
    from agents.runtimes import LogLine

    rng = random.Random(seed)
    weights = [share for share, *_ in EVENTS]
    moment = start
    for n in range(count):
        _, level, event, message, extra = rng.choices(EVENTS, weights)[0]
        task = f"{1763700000000 + n}-{rng.randrange(10)}"
        values = {
            "task": task,
            "secs": f"{rng.random() / 10:.6f}",
            "ms": rng.randrange(100, 5000),
            "slug": slug,
        }
        record = {
            "ts": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "slug": slug,
            "replica": 0,
            "event": event,
            "message": message.format(**values),
        }
        for key, value in extra.items():
            record[key] = value.format(**values) if isinstance(value, str) else value
        moment += step
        yield LogLine(slug, 0, record["ts"], json.dumps(record))


def load(agent, count: int, start: datetime, seed: int) -> float:
    """COPY ``count`` lines of ``agent`` spread over the 24 hours after ``start``; seconds taken."""
    from observability import logs

    step = timedelta(days=1) / count
    lines = agentd_lines(agent.slug, count, start, step, seed)
    began = time.perf_counter()
    done = 0
    while done < count:
        batch = [next(lines) for _ in range(min(LOAD_BATCH, count - done))]
        logs.ingest(agent.pk, batch)
        done += len(batch)
    return time.perf_counter() - began


def ingestion_rate(agent, runs: int) -> list[float]:
    from observability import logs
    from observability.models import LogEntry

    rates = []
    for run in range(runs):
        start = datetime.now(UTC) + timedelta(days=2, hours=run)
        lines = list(
            agentd_lines(
                agent.slug, INGEST_LINES_PER_RUN, start, timedelta(milliseconds=1), 100 + run
            )
        )
        batch_size = INGEST_GOAL // 4  # 250 ms of lines at the goal rate, as the collector batches
        began = time.perf_counter()
        for offset in range(0, len(lines), batch_size):
            logs.ingest(agent.pk, lines[offset : offset + batch_size])
        rates.append(len(lines) / (time.perf_counter() - began))
        print(f"  run {run + 1}: {rates[-1]:,.0f} lines/s")
    stored = LogEntry.objects.filter(agent=agent).count()
    if stored != runs * INGEST_LINES_PER_RUN:
        raise SystemExit(f"ingestion stored {stored:,} of {runs * INGEST_LINES_PER_RUN:,} lines")
    return rates


def plans_of(question: dict) -> str:
    """How PostgreSQL answered a search: for each query it ran on the log table (a text search
    may run two), the scans of EXPLAIN ANALYZE and the execution time."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from observability import logs

    with CaptureQueriesContext(connection) as captured:
        logs.search(**question)
    described = []
    for query in captured.captured_queries:
        if "observability_logentry" not in query["sql"]:
            continue
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
            plan = [row[0] for row in cursor.fetchall()]
        scans = Counter(
            re.sub(
                r" on observability_logentry.*| on recent.*", "", line.strip().lstrip("-> ")
            ).split("  (")[0]
            for line in plan
            if "Scan" in line
        )
        took = next((line for line in plan if line.startswith("Execution Time")), "")
        named = [f"{n}× {scan}" if n > 1 else scan for scan, n in sorted(scans.items())]
        described.append(f"{'; '.join(named)} [{took.removeprefix('Execution Time: ')}]")
    return " → then ".join(described)


def time_search(runs: int, **question) -> tuple[float, int]:
    from observability import logs

    timings = []
    found = 0
    for _ in range(runs):
        began = time.perf_counter()
        page = logs.search(**question)
        timings.append((time.perf_counter() - began) * 1000)
        found = len(page.entries)
    return statistics.median(timings), found


def build_data_set(cache, others, lines: int, start: datetime) -> None:
    """COPY the search data set in with the indexes dropped, then build them (much faster than
    keeping them up to date line by line, which (a) measures)."""
    from django.db import connection

    from observability.models import LogEntry

    began = time.perf_counter()
    with connection.schema_editor() as editor:
        for index in LogEntry._meta.indexes:
            editor.remove_index(LogEntry, index)
    load(cache, lines, start, seed=1)
    for number, agent in enumerate(others):
        load(agent, OTHER_AGENT_LINES, start, seed=10 + number)
    loaded = time.perf_counter() - began
    with connection.schema_editor() as editor:
        for index in LogEntry._meta.indexes:
            editor.add_index(LogEntry, index)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE observability_logentry")
    total = LogEntry.objects.count()
    print(
        f"  {total:,} lines copied in {loaded:.1f} s, indexed in {time.perf_counter() - began - loaded:.1f} s"
    )
    expected = lines + OTHER_AGENT_LINES * len(others)
    if total != expected:
        raise SystemExit(f"the data set holds {total:,} lines, not {expected:,}")


def questions_for(cache, lines: int, start: datetime) -> list[tuple[str, dict]]:
    """Representative questions about one agent's million lines (and a few about all agents)."""
    from observability import logs

    middle = logs.search(agent=cache, limit=1000, until=start + timedelta(hours=12))
    deep_cursor = logs.encode_cursor(middle.entries[-1])
    rare_task = f"{1763700000000 + lines // 3}-"  # in exactly one line's message
    c = {"agent": cache}
    return [
        ("newest lines, no filter", c),
        ("level ≥ info, no text", {**c, "level": "info"}),
        ("level ≥ warning, no text", {**c, "level": "warning"}),
        ("level ≥ error, no text", {**c, "level": "error"}),
        ("level = critical, no text", {**c, "level": "critical"}),
        ("common text 'task', ≥ info", {**c, "level": "info", "text": "task"}),
        ("common text 'TIMEOUT' (any case), any level", {**c, "text": "TIMEOUT"}),
        ("medium text 'dlq', ≥ warning", {**c, "level": "warning", "text": "dlq"}),
        ("text that goes with its level: 'KeyError', ≥ error", {**c, "level": "error", "text": "KeyError"}),
        ("rare text (one task id), any level", {**c, "text": rare_task}),
        ("rare text (one task id), ≥ info", {**c, "level": "info", "text": rare_task}),
        ("rare text (one task id), ≥ warning", {**c, "level": "warning", "text": rare_task}),
        ("absent text, ≥ info", {**c, "level": "info", "text": "no-such-thing"}),
        ("common text never at that level: 'processing', ≥ warning", {**c, "level": "warning", "text": "processing"}),
        ("common text never at that level: 'retry', ≥ error", {**c, "level": "error", "text": "retry"}),
        ("common text, rare level: 'task', ≥ critical", {**c, "level": "critical", "text": "task"}),
        ("deep page (a cursor 12 h back), ≥ info", {**c, "level": "info", "before": deep_cursor}),
        ("deep page, ≥ error + 'KeyError'", {**c, "level": "error", "text": "KeyError", "before": deep_cursor}),
        ("last hour, ≥ warning", {**c, "level": "warning", "since": "1h"}),
        ("all agents, ≥ error", {"level": "error"}),
        ("all agents, rare text", {"text": rare_task}),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="small data, one run (CI)")
    args = parser.parse_args()
    global INGEST_RUNS, INGEST_LINES_PER_RUN, OTHER_AGENT_LINES
    if args.smoke:
        args.lines, args.runs = 20_000, 1
        INGEST_RUNS, INGEST_LINES_PER_RUN, OTHER_AGENT_LINES = 1, 10_000, 1_000

    with django_environment():
        from agents.models import Agent
        from observability import logs

        agents = {agent.slug: agent for agent in Agent.objects.all()}
        cache, spare = agents.pop("wow-cache"), agents.pop("wow-analytics")
        start = datetime.now(UTC) - timedelta(days=1)

        print(
            f"(b) data set: {args.lines:,} lines of wow-cache, {OTHER_AGENT_LINES:,} of each of {len(agents)} other agents"
        )
        build_data_set(cache, list(agents.values()), args.lines, start)

        print(
            f"\n(a) ingestion: {INGEST_RUNS} runs of {INGEST_LINES_PER_RUN:,} lines in batches of {INGEST_GOAL // 4:,} (parse + COPY, every index, into that table)"
        )
        rates = ingestion_rate(spare, INGEST_RUNS)
        rate = statistics.median(rates)

        print(
            f"\n(b) search over {args.lines:,} lines of one agent, median of {args.runs} runs each:"
        )
        results = []
        for label, question in questions_for(cache, args.lines, start):
            logs.search(**question)  # warm the cache, as a page in use would be
            median, found = time_search(args.runs, **question)
            if not results and not found:
                raise SystemExit(f"'{label}' found no lines: the search measured nothing")
            results.append(median)
            print(
                f"  {median:7.1f} ms  {found:3d} lines  {label}\n             {plans_of(question)}"
            )

    worst = max(results)
    print()
    print(
        f"ingestion: median {rate:,.0f} lines/s (min {min(rates):,.0f}, max {max(rates):,.0f}); "
        f"goal ≥ {INGEST_GOAL:,} → {'met' if rate >= INGEST_GOAL else 'NOT met'}"
    )
    print(f"search: slowest question's median {worst:.1f} ms; goal < {SEARCH_GOAL_MS:.0f} ms → "
          f"{'met' if worst < SEARCH_GOAL_MS else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
