"""Queues and dead letters at scale, on a private PostgreSQL and Redis (nothing mocked).

(a) Dead-letter pages: 100,000 dead letters in WowCache's dead-letter stream, written as agentd
    writes them (its fields, the group count and label hashes, the counter), in several error
    groups of very different sizes. Server time of ``deadletters.page`` for the first page of
    50, a middle one (``before`` the 50,000th id, and ``after`` it), the last one (``last``),
    of ``deadletters.groups``, and of a page filtered by fingerprint (the largest and the
    rarest group; reported, no target).
(b) The queue list: the 14 agents' streams (entries, the consumer group, pending entries,
    counters) plus 500 streams ``agents:<slug>:tasks`` with no registered agent (a few entries
    each, a consumer group on every third), sampled twice so rates exist. Server time of what
    the Queues page and ``GET /api/platform/queues`` do: ``catalog.discover`` +
    ``figures.look`` + ``figures.with_rates``; and the API itself through Django's test client
    when it is mounted.
(c) Redrive: 100,000 dead letters sent back to their stream by a job started through
    ``services.start_job`` (an ``Actor.command``; its Celery task goes to the private broker on
    commit and nobody consumes it) and carried out in this process by ``redrive.run(job_id)``,
    as the worker would. Raw baseline in the same run, on the same letters: a plain redis-py
    pipeline doing the same moves per batch of 1,000 (XRANGE the batch, then XADD each to the
    stream without the dead-letter fields and with its redrive count, XDEL it from the
    dead-letter stream, HINCRBY its group's count down; transaction=False). Portal and raw
    alternate which goes first. Then jobs capped at 500 msg/s over 5,000 letters.
(d) Sampling: CPU time of ``sampler.sample_all(inspect_workers=False)`` over the 14 agents'
    queues (and the Celery one): this process's CPU time, Redis's (INFO CPU) and the PostgreSQL
    backend's (its process's CPU times), per call, as % of one core at one call every
    QUEUE_SAMPLE_INTERVAL_SECONDS. (The backend's CPU times come in ticks of 10 ms: hence
    ``--samples`` calls per run.)

Each figure is the median of ``--runs`` runs.

    .venv/bin/python benchmarks/bench_queues.py [--letters 100000] [--extra-streams 500] [--runs 5]
    .venv/bin/python benchmarks/bench_queues.py --smoke   # or --quick: small sizes, one run

Targets (issue 15): any page of 50 < 50 ms; grouping < 500 ms; the list with 14 agents + 500
streams < 100 ms; redrive ≥ 10,000 msg/s and within 1.5 × the raw pipeline; capped redrive
within 5 % of the cap; sampling < 5 % of one core. A smoke run prints the verdicts too, though
the targets are about the full sizes. Exits 1 when something measured nothing or moved the
wrong letters (a page came back empty, a redrive left letters behind or sent some twice).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from _harness import django_environment, require_sample

SLUG = "wow-cache"
PAGE_TARGET_MS = 50.0
GROUPS_TARGET_MS = 500.0
LIST_TARGET_MS = 100.0
REDRIVE_TARGET_RATE = 10_000.0
REDRIVE_TARGET_RATIO = 1.5
CAP_RATE = 500
CAP_TOLERANCE = 0.05
SAMPLING_TARGET_PERCENT = 5.0
WRITE_BATCH = 5_000
RAW_BATCH = 1_000  # the portal's batch (redrive.BATCH_MAX)
STRIPPED = (
    "error", "failures", "original_id", "attempts", "first_failed_at", "last_failed_at",
    "replica", "fingerprint", "redrive_count", "redriven_from", "edited",
)  # fmt: skip

# Errors of agentd's tasks, with the share of letters each makes: what varies between
# occurrences (timings, ids, hex tokens, long numbers) is folded by the fingerprint, so each
# line is one group, but the last, whose small column numbers are not: a tail of rare groups.
ERRORS: list[tuple[float, Callable[[random.Random], str]]] = [
    (0.40, lambda r: "ConnectionError: wow-cache:6379 refused the connection"),
    (0.25, lambda r: f"TimeoutError: upstream did not answer within {r.uniform(1, 9):.2f} s"),
    (0.15, lambda r: f"ValueError: customer {uuid.UUID(int=r.getrandbits(128))} has no plan"),
    (0.10, lambda r: f"KeyError: 'session' missing in task {r.randrange(10**12, 10**13)}-0"),
    (0.06, lambda r: f"PermissionError: token {r.getrandbits(64):016x} was revoked"),
    (0.03, lambda r: f"MemoryError: task needed {r.randrange(10**6, 10**9)} bytes"),
    (0.01, lambda r: f"JSONDecodeError: Expecting value: line 1 column {r.randrange(1, 30)}"),
]


def met(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def median_of(values: list[float]) -> float:
    require_sample(values, "a figure")
    return statistics.median(values)


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"(min {fmt.format(min(values))}, max {fmt.format(max(values))}, n={len(values)})"


# --- writing as agentd does ---------------------------------------------------------------------


def write_dead_letters(client, slug: str, count: int, seed: int) -> list[str]:
    """``count`` dead letters for ``slug`` with agentd's fields, group counts and labels (in
    pipelines of WRITE_BATCH); answers their ids, oldest first."""
    from agents.agentd import contract

    rng = random.Random(seed)
    weights = [share for share, _ in ERRORS]
    makers = [maker for _, maker in ERRORS]
    dlq = contract.dead_letters(slug)
    ids: list[str] = []
    for offset in range(0, count, WRITE_BATCH):
        size = min(WRITE_BATCH, count - offset)
        pipe = client.pipeline(transaction=False)
        in_groups: Counter[str] = Counter()
        labels: dict[str, str] = {}
        now = int(time.time() * 1000)
        for n in range(offset, offset + size):
            error = rng.choices(makers, weights)[0](rng)
            fingerprint, label = contract.error_fingerprint(error)
            in_groups[fingerprint] += 1
            labels[fingerprint] = label
            replica = contract.consumer_name(slug, rng.randrange(3))
            attempts = [
                {"at": now - 400 * (3 - i), "error": error, "replica": replica} for i in range(3)
            ]
            payload = {
                "op": rng.choice(["get", "set", "delete", "expire"]),
                "key": f"session:{n}",
                "customer": f"cust-{rng.randrange(500):03d}",
                "value": {"bytes": rng.randrange(100, 5000), "ttl": 300},
            }
            pipe.xadd(
                dlq,
                {
                    contract.FIELD_PRODUCER: rng.choice(["wow-memory", "wow-search", "portal:ops"]),
                    contract.FIELD_CUSTOMER: payload["customer"],
                    contract.FIELD_PAYLOAD: json.dumps(payload),
                    contract.DLQ_ERROR: error,
                    contract.DLQ_FAILURES: "3",
                    contract.DLQ_ORIGINAL_ID: f"{now - 2000}-{n}",
                    contract.DLQ_ATTEMPTS: json.dumps(attempts),
                    contract.DLQ_FIRST_FAILED_AT: str(attempts[0]["at"]),
                    contract.DLQ_LAST_FAILED_AT: str(attempts[-1]["at"]),
                    contract.DLQ_REPLICA: replica,
                    contract.DLQ_FINGERPRINT: fingerprint,
                },
            )
        for fingerprint, number in in_groups.items():
            pipe.hincrby(contract.dead_letter_groups(slug), fingerprint, number)
        pipe.hset(contract.dead_letter_labels(slug), mapping=labels)
        pipe.hincrby(contract.counters(slug), contract.COUNTER_DEAD_LETTERED, size)
        ids.extend(pipe.execute()[:size])
    return ids


def clear_dead_letters(client, slug: str) -> None:
    from agents.agentd import contract

    client.delete(
        contract.dead_letters(slug),
        contract.dead_letter_groups(slug),
        contract.dead_letter_labels(slug),
        contract.task_stream(slug),
    )


def fill_stream(client, slug: str, entries: int, *, group: bool, read: int, rng) -> None:
    """A task stream with ``entries`` tasks; with ``group`` agentd's consumer group, ``read`` of
    them delivered to two replicas and not acknowledged, and the agent's counters."""
    from agents.agentd import contract

    stream = contract.task_stream(slug)
    pipe = client.pipeline(transaction=False)
    for n in range(entries):
        pipe.xadd(
            stream,
            {
                contract.FIELD_PRODUCER: "portal:bench",
                contract.FIELD_PAYLOAD: json.dumps({"n": n}),
            },
        )
    if group:
        pipe.xgroup_create(stream, contract.CONSUMER_GROUP, id="0", mkstream=True)
        for replica in range(2):
            pipe.xreadgroup(
                contract.CONSUMER_GROUP,
                contract.consumer_name(slug, replica),
                {stream: ">"},
                count=read // 2,
            )
        pipe.hset(
            contract.counters(slug),
            mapping={
                contract.COUNTER_PROCESSED: rng.randrange(10_000),
                contract.COUNTER_FAILED: rng.randrange(100),
            },
        )
        pipe.hset(contract.producer_counts(slug), mapping={"portal:bench": entries})
    pipe.execute()


# --- (a) dead-letter pages ----------------------------------------------------------------------


def timed_ms(runs: int, call: Callable[[], object]) -> tuple[list[float], object]:
    call()  # warm: the page in use has its connections open
    timings, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = call()
        timings.append((time.perf_counter() - began) * 1000)
    return timings, result


def dead_letter_pages(client, ref, ids: list[str], runs: int) -> list[tuple[str, list, float]]:
    from observability.queues import deadletters

    middle = ids[len(ids) // 2]
    questions = [
        ("first page (newest 50)", lambda: deadletters.page(client, ref), PAGE_TARGET_MS),
        (
            f"middle page (before={middle})",
            lambda: deadletters.page(client, ref, before=middle),
            PAGE_TARGET_MS,
        ),
        (
            f"middle page (after={middle})",
            lambda: deadletters.page(client, ref, after=middle),
            PAGE_TARGET_MS,
        ),
        ("last page (last=True)", lambda: deadletters.page(client, ref, last=True), PAGE_TARGET_MS),
    ]
    results = []
    for label, call, target in questions:
        timings, page = timed_ms(runs, call)
        if len(page.letters) != deadletters.PAGE_DEFAULT:
            raise SystemExit(f"{label}: {len(page.letters)} letters, not a full page")
        results.append((label, timings, target))
    timings, groups = timed_ms(runs, lambda: deadletters.groups(client, ref))
    if sum(group.count for group in groups) != len(ids):
        raise SystemExit(f"the groups count {sum(g.count for g in groups):,} of {len(ids):,}")
    results.append((f"groups by fingerprint ({len(groups)} groups)", timings, GROUPS_TARGET_MS))
    for which, group in (("largest", groups[0]), ("rarest", groups[-1])):
        timings, page = timed_ms(
            runs, lambda g=group: deadletters.page(client, ref, fingerprint=g.fingerprint)
        )
        if not page.letters and not page.scanned_to:
            raise SystemExit(f"the {which} group's page came back empty without a reason")
        stopped = f", stopped at the scan budget ({deadletters.FILTER_SCAN_BUDGET:,})"
        results.append(
            (
                f"page of the {which} group ({group.count:,} letters, {len(page.letters)} "
                f"found{stopped if page.scanned_to else ''})",
                timings,
                0.0,
            )
        )
    return results


# --- (b) the queue list -------------------------------------------------------------------------


def extra_slugs(count: int) -> list[str]:
    return [f"bench-extra-{n:03d}" for n in range(count)]


def build_fleet_streams(client, extra: int) -> None:
    from agents.catalog import PLATFORM_SLUGS

    rng = random.Random(7)
    for slug in PLATFORM_SLUGS:
        fill_stream(client, slug, 20, group=True, read=6, rng=rng)
    for n, slug in enumerate(extra_slugs(extra)):
        fill_stream(client, slug, rng.randrange(2, 6), group=n % 3 == 0, read=2, rng=rng)


def remove_extra_streams(client, extra: int) -> None:
    from agents.agentd import contract

    pipe = client.pipeline(transaction=False)
    for slug in extra_slugs(extra):
        pipe.delete(
            contract.task_stream(slug), contract.counters(slug), contract.producer_counts(slug)
        )
    pipe.execute()


def queue_list(runs: int, expected: int) -> tuple[list[float], dict[str, list[float]]]:
    """What the Queues page and the API do, timed whole and by part (ms)."""
    from observability.queues import catalog, figures

    parts: dict[str, list[float]] = {"discover": [], "look": [], "with_rates": []}

    def list_queues():
        began = time.perf_counter()
        client = catalog.agent_redis()
        refs = catalog.discover(client)
        discovered = time.perf_counter()
        looks = figures.look(refs, client, catalog.broker_redis())
        looked = time.perf_counter()
        graded = figures.with_rates(looks)
        for name, start, end in (
            ("discover", began, discovered),
            ("look", discovered, looked),
            ("with_rates", looked, time.perf_counter()),
        ):
            parts[name].append((end - start) * 1000)
        return graded

    timings, looks = timed_ms(runs, list_queues)
    if len(looks) != expected:
        raise SystemExit(f"the list has {len(looks)} queues, not {expected}")
    if not any(look.in_rate is not None for look in looks):
        raise SystemExit("no queue of the list carries a rate: the samples were not joined")
    return timings, {name: values[1:] for name, values in parts.items()}  # the warm-up left out


def api_list(runs: int, expected: int) -> tuple[list[float], str]:
    """GET /api/platform/queues through Django's test client, signed in as a Viewer; ([], why)
    when the endpoint is not mounted."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import Resolver404, resolve

    from portal import roles

    path = "/api/platform/queues"
    try:
        resolve(path)
    except Resolver404:
        return [], f"{path} is not mounted"
    user = get_user_model().objects.create_user("bench-viewer", "bench@waooaw.test", "x" * 16)
    roles.set_role(user, roles.VIEWER)
    browser = Client(SERVER_NAME="localhost")
    browser.force_login(user)

    def get():
        response = browser.get(path)
        if response.status_code != 200:
            raise SystemExit(
                f"GET {path} answered {response.status_code}: {response.content[:300]}"
            )
        return response.json()

    timings, rows = timed_ms(runs, get)
    if len(rows) != expected:
        raise SystemExit(f"GET {path} listed {len(rows)} queues, not {expected}")
    return timings, ""


# --- (c) redrive --------------------------------------------------------------------------------


def redrive_through_portal(client, ref, count: int, rate: int | None) -> float:
    """A redrive job over every letter (a snapshot now), started as the doors start it and run
    in this process; answers the letters per second of ``redrive.run``."""
    from observability.queues import redrive, services
    from observability.queues.models import RedriveJob
    from portal.actors import Actor

    job = services.start_job(
        Actor.command("benchmark"), ref.name, RedriveJob.Action.REDRIVE, "all", rate=rate
    )
    began = time.perf_counter()
    finished = redrive.run(job.pk)
    elapsed = time.perf_counter() - began
    if finished is None or finished.status != RedriveJob.Status.SUCCEEDED:
        raise SystemExit(f"the redrive job ended {finished and finished.status}: {finished}")
    if finished.done != count:
        raise SystemExit(f"the redrive job sent back {finished.done:,} of {count:,}")
    return count / elapsed


def redrive_raw(client, ref, count: int) -> float:
    """The same moves as a plain redis-py pipeline per batch; letters per second."""
    from agents.agentd import contract

    groups = contract.dead_letter_groups(ref.slug)
    began = time.perf_counter()
    start = "-"
    while True:
        rows = client.xrange(ref.dead_letters, min=start, count=RAW_BATCH)
        if not rows:
            break
        pipe = client.pipeline(transaction=False)
        for entry_id, fields in rows:
            sent = {key: value for key, value in fields.items() if key not in STRIPPED}
            sent["redrive_count"] = str(int(fields.get("redrive_count") or 0) + 1)
            sent["redriven_from"] = fields.get("original_id") or entry_id
            pipe.xadd(ref.stream, sent)
            pipe.xdel(ref.dead_letters, entry_id)
            pipe.hincrby(groups, fields["fingerprint"], -1)
        pipe.execute()
        start = f"({rows[-1][0]}"
    return count / (time.perf_counter() - began)


def check_moved(client, ref, count: int, how: str) -> None:
    """Every letter back on the stream once, none left in the dead letters, groups at zero."""
    from agents.agentd import contract

    left, sent = client.xlen(ref.dead_letters), client.xlen(ref.stream)
    counts = [int(v) for v in client.hvals(contract.dead_letter_groups(ref.slug))]
    if left or sent != count or any(counts):
        raise SystemExit(
            f"{how}: {left:,} letters left, {sent:,} on the stream (of {count:,}), "
            f"group counts {sorted(set(counts))}"
        )


def redrive_rates(client, ref, count: int, runs: int) -> tuple[list[float], list[float]]:
    portal_rates, raw_rates = [], []
    for run in range(runs):
        order = ("portal", "raw") if run % 2 == 0 else ("raw", "portal")
        for how in order:
            clear_dead_letters(client, ref.slug)
            write_dead_letters(client, ref.slug, count, seed=100 + run)
            if how == "portal":
                portal_rates.append(redrive_through_portal(client, ref, count, None))
            else:
                raw_rates.append(redrive_raw(client, ref, count))
            check_moved(client, ref, count, how)
        print(
            f"  run {run + 1}: portal {portal_rates[-1]:,.0f} msg/s, raw {raw_rates[-1]:,.0f} msg/s"
        )
    clear_dead_letters(client, ref.slug)
    return portal_rates, raw_rates


def capped_rates(client, ref, count: int, runs: int) -> list[float]:
    rates = []
    for run in range(runs):
        clear_dead_letters(client, ref.slug)
        write_dead_letters(client, ref.slug, count, seed=200 + run)
        rates.append(redrive_through_portal(client, ref, count, CAP_RATE))
        check_moved(client, ref, count, "capped")
        print(f"  run {run + 1}: {rates[-1]:,.1f} msg/s")
    clear_dead_letters(client, ref.slug)
    return rates


# --- (d) sampling -------------------------------------------------------------------------------


def redis_cpu_seconds(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def postgres_backend():
    import psutil
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return psutil.Process(cursor.fetchone()[0])


def process_cpu_seconds(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def sampling_cost(runs: int, calls: int, expected: int) -> dict[str, list[float]]:
    """CPU seconds per ``sample_all`` call, per run: this process, Redis, the PostgreSQL
    backend, and wall time."""
    from django.conf import settings
    from django.utils import timezone

    from observability.queues import catalog, sampler

    client = catalog.agent_redis()
    interval = settings.QUEUE_SAMPLE_INTERVAL_SECONDS
    moment = timezone.now()
    for _ in range(2):  # warm, and a previous look so every call computes rates
        moment += timedelta(seconds=interval)
        sampler.sample_all(moment, inspect_workers=False)
    backend = postgres_backend()
    costs: dict[str, list[float]] = {"portal": [], "redis": [], "postgres": [], "wall": []}
    for _ in range(runs):
        portal, redis_before = time.process_time(), redis_cpu_seconds(client)
        postgres, wall = process_cpu_seconds(backend), time.perf_counter()
        for _ in range(calls):
            moment += timedelta(seconds=interval)
            looks = sampler.sample_all(moment, inspect_workers=False)
            if len(looks) != expected:
                raise SystemExit(f"sample_all looked at {len(looks)} queues, not {expected}")
        costs["wall"].append((time.perf_counter() - wall) / calls)
        costs["portal"].append((time.process_time() - portal) / calls)
        costs["redis"].append((redis_cpu_seconds(client) - redis_before) / calls)
        costs["postgres"].append((process_cpu_seconds(backend) - postgres) / calls)
    return costs


def reply_parser() -> str:
    """Which redis-py parses Redis's replies: reading many entries costs several times more
    without hiredis."""
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    parser = "hiredis" if HIREDIS_AVAILABLE else "its pure-Python reply parser (no hiredis)"
    return f"redis-py {redis.__version__} with {parser}"


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=100_000, help="dead letters for (a), (c)")
    parser.add_argument("--extra-streams", type=int, default=500, help="streams without an agent")
    parser.add_argument("--capped", type=int, default=5_000, help="letters per capped redrive")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=40, help="sample_all calls per run")
    parser.add_argument("--smoke", "--quick", action="store_true", help="small sizes, one run (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.letters, args.extra_streams, args.capped = 5_000, 50, 500
        args.runs, args.samples = 1, 10
    if args.runs < 1 or args.letters < 2 * 50 or args.capped < 1:
        parser.error("--runs must be at least 1, --letters at least 100, --capped at least 1")
    began = time.perf_counter()
    verdicts: list[bool] = []

    def verdict(line: str, ok: bool) -> None:
        verdicts.append(ok)
        print(f"  {line} → {met(ok)}")

    with django_environment():
        from django.conf import settings
        from django.utils import timezone

        from agents.catalog import PLATFORM_SLUGS
        from observability.queues import catalog, sampler

        client = catalog.agent_redis()
        ref = catalog.resolve(f"agents:{SLUG}:tasks")
        queues = len(PLATFORM_SLUGS) + len(catalog.celery_queues())

        print(f"(a) {args.letters:,} dead letters of {SLUG}, {len(ERRORS)} kinds of error")
        started = time.perf_counter()
        ids = write_dead_letters(client, SLUG, args.letters, seed=1)
        memory = client.memory_usage(ref.dead_letters) or 0
        print(
            f"  written in {time.perf_counter() - started:.1f} s "
            f"({memory / 2**20:.0f} MiB in Redis)"
        )
        pages = dead_letter_pages(client, ref, ids, args.runs)

        print(
            f"\n(b) the queue list: {len(PLATFORM_SLUGS)} agents + {args.extra_streams} streams "
            f"without an agent + the Celery queue"
        )
        build_fleet_streams(client, args.extra_streams)
        listed = queues + args.extra_streams
        for seconds_ago in (5, 0):  # two samples, so the list has rates to join
            sampler.sample_all(
                timezone.now() - timedelta(seconds=seconds_ago), inspect_workers=False
            )
        listing, listing_parts = queue_list(args.runs, listed)
        api_timings, api_skipped = api_list(args.runs, listed)

        print(f"\n(d) sampling {queues} queues (the {args.extra_streams} extra streams removed)")
        remove_extra_streams(client, args.extra_streams)
        costs = sampling_cost(args.runs, args.samples, queues)

        print(f"\n(c) redrive of {args.letters:,} letters, no cap: portal job vs raw pipeline")
        clear_dead_letters(client, SLUG)
        portal_rates, raw_rates = redrive_rates(client, ref, args.letters, args.runs)
        print(f"\n(c) redrive of {args.capped:,} letters capped at {CAP_RATE} msg/s")
        capped = capped_rates(client, ref, args.capped, args.runs)
        interval = settings.QUEUE_SAMPLE_INTERVAL_SECONDS

    print(
        f"\nFigures: median of {args.runs} run(s) each"
        + (" (smoke sizes)" if args.smoke else "")
        + f"; {reply_parser()}"
    )
    print(f"(a) dead letters: {args.letters:,} in the queue, pages of 50, server time")
    for label, timings, target in pages:
        value = median_of(timings)
        figure = f"{label}: {value:.2f} ms {spread(timings)}"
        if target:
            verdict(f"{figure}; target < {target:.0f} ms", value < target)
        else:
            print(f"  {figure}; no target")

    print(f"(b) the queue list: {listed} queues, server time")
    value = median_of(listing)
    verdict(
        f"discover + look + with_rates: {value:.2f} ms {spread(listing)}; "
        f"target < {LIST_TARGET_MS:.0f} ms",
        value < LIST_TARGET_MS,
    )
    print(
        "    of which "
        + ", ".join(f"{name} {median_of(values):.2f} ms" for name, values in listing_parts.items())
    )
    if api_timings:
        value = median_of(api_timings)
        print(
            f"  GET /api/platform/queues (test client, signed in): {value:.2f} ms "
            f"{spread(api_timings)}; no target (the list above is the server's part)"
        )
    else:
        print(f"  GET /api/platform/queues: not timed ({api_skipped})")

    print(f"(c) redrive of {args.letters:,} letters, no cap")
    portal, raw = median_of(portal_rates), median_of(raw_rates)
    verdict(
        f"portal job (redrive.run): {portal:,.0f} msg/s {spread(portal_rates, '{:,.0f}')}; "
        f"target ≥ {REDRIVE_TARGET_RATE:,.0f} msg/s",
        portal >= REDRIVE_TARGET_RATE,
    )
    print(f"  raw redis-py pipeline:    {raw:,.0f} msg/s {spread(raw_rates, '{:,.0f}')}")
    verdict(
        f"raw rate / portal rate: {raw / portal:.2f}; target ≤ {REDRIVE_TARGET_RATIO}",
        raw / portal <= REDRIVE_TARGET_RATIO,
    )
    value = median_of(capped)
    off = abs(value - CAP_RATE) / CAP_RATE
    verdict(
        f"capped at {CAP_RATE} msg/s ({args.capped:,} letters): {value:,.1f} msg/s "
        f"{spread(capped, '{:,.1f}')}, {off * 100:.2f} % off; target within "
        f"{CAP_TOLERANCE * 100:.0f} %",
        off <= CAP_TOLERANCE,
    )

    print(f"(d) sampling {queues} queues, one sample_all every {interval} s")
    parts = {name: median_of(values) for name, values in costs.items()}
    cpu = parts["portal"] + parts["redis"] + parts["postgres"]
    print(
        f"  per call: wall {parts['wall'] * 1000:.1f} ms; CPU {cpu * 1000:.2f} ms = this process "
        f"{parts['portal'] * 1000:.2f} + Redis {parts['redis'] * 1000:.2f} + PostgreSQL "
        f"backend {parts['postgres'] * 1000:.2f} ({args.samples} calls per run)"
    )
    verdict(
        f"CPU at one call per {interval} s: {cpu / interval * 100:.3f} % of one core; "
        f"target < {SAMPLING_TARGET_PERCENT:.0f} %",
        cpu / interval * 100 < SAMPLING_TARGET_PERCENT,
    )
    print(
        f"\n{sum(verdicts)} of {len(verdicts)} targets met"
        + (" (smoke sizes: the targets are about the full sizes)" if args.smoke else "")
        + f"; the benchmark took {time.perf_counter() - began:.0f} s"
    )


if __name__ == "__main__":
    main()
