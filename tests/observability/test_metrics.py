"""Metrics scraped from real agents: counters into rates, latency percentiles from the
histogram, memory against the limit, uptime, 5-minute averages, series and retention."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from agents import services
from agents.models import Agent, State
from observability import metrics
from observability.models import MetricSample

pytestmark = pytest.mark.django_db

EXPOSITION = """\
# HELP agentd_up 1 while the agent process runs.
# TYPE agentd_up gauge
agentd_up{agent="wow-cache",replica="0"} 1
agentd_tasks_processed_total{agent="wow-cache",replica="0"} 90
agentd_tasks_failed_total{agent="wow-cache",replica="0"} 10
agentd_task_latency_seconds_bucket{agent="wow-cache",replica="0",le="0.01"} 10
agentd_task_latency_seconds_bucket{agent="wow-cache",replica="0",le="0.1"} 90
agentd_task_latency_seconds_bucket{agent="wow-cache",replica="0",le="+Inf"} 100
agentd_queue_depth{agent="wow-cache",replica="0"} 7
agentd_process_cpu_seconds_total{agent="wow-cache",replica="0"} 1.5
agentd_process_resident_memory_bytes{agent="wow-cache",replica="0"} 31457280
"""


def test_parse_reads_agentds_families():
    scrape = metrics.parse_exposition(EXPOSITION)
    assert (scrape.processed, scrape.failed, scrape.queue_depth) == (90, 10, 7)
    assert scrape.cpu_seconds == 1.5 and scrape.memory_bytes == 31457280
    assert scrape.dead_letters is None  # not exposed: unknown, not zero
    assert scrape.buckets == {"0.01": 10, "0.1": 90, "+Inf": 100}


def test_quantiles_interpolate_inside_the_bucket():
    buckets = {"0.01": 10, "0.1": 90, "+Inf": 100}
    assert metrics.quantile(0.5, buckets) == pytest.approx(0.01 + 0.09 * 40 / 80)
    assert metrics.quantile(0.05, buckets) == pytest.approx(0.005)
    assert metrics.quantile(0.99, buckets) == pytest.approx(0.1)  # beyond the last bound
    assert metrics.quantile(0.5, {"0.1": 0, "+Inf": 0}) is None


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.django_db(transaction=True)
def test_scraping_a_busy_agent_gives_rates_percentiles_and_memory(seeded, bring_up):
    cache = seeded["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(
        config={"faults": {"fail_rate": 0.3, "latency_ms": 20}, "task_max_failures": 50}
    )
    bring_up(Agent.objects.get(pk=cache.pk))
    stopped = seeded["wow-memory"]  # never started: no sample (a planned stop is not downtime)

    queue = redis.Redis.from_url(settings.AGENT_REDIS_URL)
    assert metrics.scrape_all() == 1  # the first scrape only remembers the counters
    first = MetricSample.objects.get(agent=cache)
    assert first.up == 1.0 and first.throughput is None
    assert first.memory_bytes > 5 * 1024 * 1024
    assert first.memory_limit_bytes == cache.memory_mb * 1024 * 1024

    for number in range(40):
        queue.xadd("agents:wow-cache:tasks", {"job": f"bench-{number}"})
    port = Agent.objects.get(pk=cache.pk).runtime_details["ports"][0]
    wait_until(lambda: _worked(port), timeout=60)  # retries are slow on a loaded machine
    time.sleep(1.1)  # the next scrape lands in another second
    assert metrics.scrape_all() == 1

    sample = MetricSample.objects.filter(agent=cache).order_by("-ts").first()
    assert sample.throughput > 0 and sample.failures > 0
    assert 5 < sample.error_rate < 80
    # agentd sleeps 20 ms per attempt: the median lies in the 10-25 ms or 25-50 ms bucket.
    assert 10 < sample.latency_p50_ms <= 50
    assert sample.latency_p50_ms <= sample.latency_p95_ms <= sample.latency_p99_ms
    assert sample.cpu_percent is not None and sample.cpu_percent >= 0
    assert sample.queue_depth is not None
    assert not MetricSample.objects.filter(agent=stopped).exists()


def _worked(port: int) -> bool:
    """agentd's own counters: most of the 40 tasks done, and some attempts failed."""
    scrape = metrics.fetch_scrape(f"http://127.0.0.1:{port}/metrics")
    return scrape is not None and scrape.processed >= 30 and scrape.failed >= 1


@pytest.mark.django_db(transaction=True)
def test_an_errored_agent_is_sampled_down_and_uptime_counts_it(seeded, bring_up):
    cache = bring_up(seeded["wow-cache"])
    metrics.scrape_all()
    Agent.objects.filter(pk=cache.pk).update(restart_policy="never")
    services.runtime_for(cache).stop(services.spec_for(cache))
    services.record_crash(Agent.objects.get(pk=cache.pk), {"exit_code": 1, "replica": 0})
    assert Agent.objects.get(pk=cache.pk).state == State.ERRORED
    time.sleep(1.1)
    metrics.scrape_all()
    ups = list(MetricSample.objects.filter(agent=cache).order_by("ts").values_list("up", flat=True))
    assert ups == [1.0, 0.0]
    assert metrics.uptime(cache, timedelta(hours=24)) == pytest.approx(50.0)
    assert metrics.uptimes(timedelta(hours=24)) == {cache.pk: pytest.approx(50.0)}


def make_samples(agent, start, count, every=15, **values):
    MetricSample.objects.bulk_create(
        MetricSample(agent=agent, ts=start + timedelta(seconds=every * i), up=1.0, **values)
        for i in range(count)
    )


def test_downsampling_averages_each_five_minutes_once(seeded):
    cache = seeded["wow-cache"]
    now = timezone.now()
    start = metrics._bucket_start(now - timedelta(minutes=30))
    make_samples(cache, start, 24, cpu_percent=10.0, throughput=4.0, failures=1.0)
    make_samples(
        cache, start + timedelta(seconds=7), 24, cpu_percent=30.0, throughput=0.0, failures=0.0
    )

    metrics.downsample(now)
    metrics.downsample(now)  # again (a redelivered task): the same rows
    rollups = MetricSample.objects.filter(step=MetricSample.ROLLUP, agent=cache).order_by("ts")
    assert rollups.count() == 2  # 24 samples 15 s apart reach into a second bucket
    first = rollups[0]
    assert first.ts == start
    assert first.cpu_percent == pytest.approx(20.0)
    assert first.samples == 40 and rollups[1].samples == 8
    assert first.error_rate == pytest.approx(100 * 1 / 5)


def test_series_fills_gaps_and_adds_up_the_fleet(seeded):
    cache, memory = seeded["wow-cache"], seeded["wow-memory"]
    end = timezone.now()
    start = end - timedelta(minutes=10)
    make_samples(cache, start, 20, throughput=2.0, failures=0.0)  # the first five minutes
    make_samples(memory, start, 20, throughput=3.0, failures=1.0)

    one = metrics.series("throughput", agent=cache, start=start, end=end, points=10)
    assert one.bucket_seconds == 60 and len(one.points) in (10, 11)
    values = [value for _, value in one.points]
    assert values[1] == pytest.approx(2.0) and values[-1] is None  # nothing in the last minutes

    fleet = metrics.series("throughput", start=start, end=end, points=10)
    assert [v for _, v in fleet.points][1] == pytest.approx(5.0)
    rate = metrics.series("error_rate", start=start, end=end, points=10)
    assert [v for _, v in rate.points][1] == pytest.approx(100 * 1 / 6)

    with pytest.raises(metrics.MetricQueryError, match="Unknown metric 'heat'"):
        metrics.series("heat", start=start, end=end)
    with pytest.raises(metrics.MetricQueryError, match="before its end"):
        metrics.series("throughput", start=end, end=start)


def test_retention_keeps_recent_raw_samples_and_older_averages(seeded, settings):
    settings.METRICS_RAW_RETENTION_HOURS = 1
    settings.METRICS_RETENTION_DAYS = 2
    cache = seeded["wow-cache"]
    now = timezone.now()
    for age, step in [
        (timedelta(minutes=5), 0),
        (timedelta(hours=3), 0),
        (timedelta(hours=3), 300),
        (timedelta(days=3), 300),
    ]:
        MetricSample.objects.create(agent=cache, ts=now - age, step=step, up=1.0)
    assert metrics.purge(now) == 2
    kept = set(MetricSample.objects.values_list("step", flat=True))
    assert kept == {0, 300} and MetricSample.objects.count() == 2


def test_week_uptime_joins_the_averages_and_the_newest_raw_samples(seeded, settings):
    settings.METRICS_RAW_RETENTION_HOURS = 1
    cache = seeded["wow-cache"]
    now = timezone.now()
    week = timedelta(days=7)
    assert metrics.uptime(cache, week, now) is None

    make_samples(cache, now - timedelta(minutes=10), 40, every=15, throughput=1.0)  # all up
    assert metrics.uptime(cache, week, now) == pytest.approx(100.0)  # nothing rolled up yet

    # Two hours ago, a 5-minute average with the agent down the whole time.
    bucket = metrics._bucket_start(now - timedelta(hours=2))
    MetricSample.objects.create(
        agent=cache, ts=bucket, step=MetricSample.ROLLUP, up=0.0, samples=20
    )
    # 300 s down (the average) against 40 raw samples x 15 s up after it.
    assert metrics.uptime(cache, week, now) == pytest.approx(100 * 600 / 900)
    assert metrics.uptime(None, week, now) == pytest.approx(100 * 600 / 900)
