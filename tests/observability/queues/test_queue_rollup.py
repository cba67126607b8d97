"""Queue samples older than their raw retention are kept as 5-minute averages: the rollup
writes them (it once left the producers column out, which the database refuses)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from observability.queues import sampler
from observability.queues.models import QueueSample

pytestmark = pytest.mark.django_db


def test_finished_five_minute_buckets_are_averaged_once():
    now = datetime(2026, 12, 5, 10, 7, 30, tzinfo=UTC)
    bucket = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    QueueSample.objects.bulk_create(
        QueueSample(
            queue_name="agents:wow-cache:tasks",
            ts=bucket + timedelta(seconds=30 * n),
            pending=10.0 * n,
            producers={"wow-event": n},
        )  # fmt: skip
        for n in range(10)
    )

    written = sampler.downsample(now)
    again = sampler.downsample(now)

    rollup = QueueSample.objects.get(step=QueueSample.ROLLUP)
    assert written == again == 1  # idempotent: the same bucket, updated in place
    assert (rollup.ts, rollup.pending, rollup.samples, rollup.producers) == (bucket, 45.0, 10, {})
