"""Redrive jobs and the Celery queue's figures with real Celery workers: a job whose worker is
SIGKILLed half-way is handed out again by the sweep and finishes on the next worker with every
dead letter moved exactly once (counted, letter by letter); the sampler's Celery figures are
what a running worker and the broker's list really hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta

import pytest

from agents.agentd import contract
from observability.queues import catalog, figures, redrive, sampler, services
from observability.queues.models import RedriveJob
from portal import work
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.django_db(transaction=True)

SLUG = "wow-cache"
CACHE = contract.task_stream(SLUG)
DLQ = contract.dead_letters(SLUG)
CELERY = "celery:celery"
LETTERS = 3000  # in the dead-letter queue, for a job over all of them
RATE = 1000  # msg/s: that job takes 3 s, long enough to kill its worker half-way through


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def workers(test_database_url, redis_url, agent_root, tmp_path, start_celery_worker):
    """Starts real Celery workers on the test database (solo pool, as the other worker tests);
    stops the ones still alive and empties the queue afterwards."""
    from portal.celery import app

    app.control.purge()
    started: list[subprocess.Popen] = []
    log = tmp_path / "workers.log"
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "AGENT_REDIS_URL": redis_url,
        "AGENT_ROOT": str(agent_root),
        "LOG_LEVEL": "WARNING",
    }

    def start(name: str) -> subprocess.Popen:
        worker = start_celery_worker(env, f"{name}-{os.getpid()}", log)
        started.append(worker)
        return worker

    start.env = env
    start.log = log
    start.started = started
    yield start
    for worker in started:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=15)
    app.control.purge()


def _write_letters(dead_letter, count: int) -> dict[str, str]:
    """``count`` dead letters, each with its own original id; answers each one's id in the
    dead-letter queue with its original id."""
    return {
        dead_letter(SLUG, payload={"n": n}, original_id=f"1700000000000-{n}"): f"1700000000000-{n}"
        for n in range(count)
    }


def _progress(queue_redis, job: RedriveJob) -> dict[str, int]:
    raw = queue_redis.hgetall(redrive.PROGRESS_KEY.format(job=job.pk))
    return {name: int(raw.get(name, 0)) for name in ("done", "skipped", "held_back")}


def _kill_half_way(queue_redis, job: RedriveJob, worker: subprocess.Popen) -> int:
    """SIGKILL ``worker`` once a fifth of the job is done; answers how many were done then."""
    _wait(lambda: _progress(queue_redis, job)["done"] >= job.total // 5, 20, "the job to begin")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    # Its database session ends with it, and the job's runner lock with that.
    _wait(lambda: not work.has_runner(redrive.RUNNER_LOCK, job.pk), 10, "the lock to go")
    done = _progress(queue_redis, job)["done"]
    job.refresh_from_db()
    assert 0 < done < job.total, f"the worker was killed at {done} of {job.total}"
    assert job.status == RedriveJob.Status.RUNNING  # stranded, as a real kill leaves it
    assert job.done <= done  # the row is a copy of the progress, a batch or two behind
    return done


def _resume(workers, job: RedriveJob) -> RedriveJob:
    """The sweep hands the stranded job out again and a second worker finishes it."""
    assert redrive.sweep(timedelta(0)) == [job.pk]
    workers("second")
    _wait(
        lambda: RedriveJob.objects.get(pk=job.pk).finished,
        20,
        f"the second worker to finish the job:\n{workers.log.read_text()[-3000:]}",
    )
    job.refresh_from_db()
    return job


def _where_each_letter_is(queue_redis) -> tuple[Counter, Counter]:
    """How many times each original id is back on the stream, and in the dead letters."""
    sent_back = Counter(f[redrive.REDRIVEN_FROM] for _, f in queue_redis.xrange(CACHE))
    still_dead = Counter(f[contract.DLQ_ORIGINAL_ID] for _, f in queue_redis.xrange(DLQ))
    return sent_back, still_dead


def _assert_row_matches_progress(queue_redis, job: RedriveJob) -> None:
    progress = _progress(queue_redis, job)
    assert (job.done, job.skipped, job.held_back) == (
        progress["done"],
        progress["skipped"],
        progress["held_back"],
    )


@pytest.mark.parametrize(
    ("scope", "letters", "rate"),
    [
        ("all", LETTERS, RATE),  # resumes after the last id it moved
        ("selected", services.SELECT_MAX, RATE / 3),  # resumes at its place in the list
    ],
    ids=["all", "selected"],
)
def test_a_redrive_whose_worker_is_killed_half_way_sends_every_letter_back_exactly_once(
    seeded, queue_redis, dead_letter, operator_actor, workers, scope, letters, rate
) -> None:
    originals = _write_letters(dead_letter, letters)
    first = workers("first")
    ids = list(originals) if scope == "selected" else None

    job = services.start_job(operator_actor, CACHE, "redrive", scope, ids=ids, rate=rate)
    done_at_kill = _kill_half_way(queue_redis, job, first)

    # At the kill every letter is in exactly one place: back on the stream or still a letter.
    sent_back, still_dead = _where_each_letter_is(queue_redis)
    assert sum(sent_back.values()) == done_at_kill
    assert sent_back + still_dead == Counter(originals.values())

    job = _resume(workers, job)

    assert job.status == RedriveJob.Status.SUCCEEDED, job.message
    sent_back, still_dead = _where_each_letter_is(queue_redis)
    assert sent_back == Counter(originals.values())  # each one once: none twice, none lost
    assert not still_dead
    assert (job.total, job.done, job.skipped, job.held_back) == (letters, letters, 0, 0)
    assert job.message == f"{letters:,} sent back."
    _assert_row_matches_progress(queue_redis, job)
    entries = queue_redis.xrange(CACHE)
    assert sorted(json.loads(f["payload"])["n"] for _, f in entries) == list(range(letters))
    assert {f[contract.FIELD_REDRIVES] for _, f in entries} == {"1"}
    assert queue_redis.hgetall(contract.dead_letter_groups(SLUG)) == {}  # counted down to 0


def test_a_delete_whose_worker_is_killed_half_way_deletes_every_letter_exactly_once(
    seeded, queue_redis, dead_letter, operator_actor, workers
) -> None:
    originals = _write_letters(dead_letter, LETTERS)
    first = workers("first")

    job = services.start_job(operator_actor, CACHE, "delete", "all", rate=RATE, confirm=SLUG)
    done_at_kill = _kill_half_way(queue_redis, job, first)

    _, still_dead = _where_each_letter_is(queue_redis)
    assert sum(still_dead.values()) == LETTERS - done_at_kill
    assert set(still_dead) < set(originals.values())

    job = _resume(workers, job)

    assert job.status == RedriveJob.Status.SUCCEEDED, job.message
    # Each letter deleted once: the count is exact, none is left, none was sent anywhere.
    assert (job.total, job.done, job.skipped, job.held_back) == (LETTERS, LETTERS, 0, 0)
    assert job.message == f"{LETTERS:,} deleted."
    _assert_row_matches_progress(queue_redis, job)
    assert queue_redis.xlen(DLQ) == 0
    assert queue_redis.exists(CACHE) == 0
    assert queue_redis.hgetall(contract.dead_letter_groups(SLUG)) == {}


# --- the Celery queue's figures -----------------------------------------------------------------


def _start_prefork_worker(env: dict[str, str], name: str, log) -> subprocess.Popen:
    """A worker as ``manage.py up`` runs it (prefork: its main process answers broadcasts while
    a child runs a task; a solo worker cannot answer while busy), one child, holding one more
    task than it runs so that it has one reserved."""
    from portal.celery import app

    handle = open(log, "a")  # noqa: SIM115 (closed when the worker ends)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "prefork",
         "--concurrency", "1", "--prefetch-multiplier", "2", "--without-mingle",
         "--without-gossip", "--hostname", name],
        cwd=PROJECT_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not app.control.ping(destination=[name], timeout=0.5):
        if time.monotonic() > deadline or worker.poll() is not None:
            worker.kill()
            pytest.fail(f"worker {name} did not come up:\n{log.read_text()[-3000:]}")
    return worker


def _celery(looked) -> figures.Figures:
    return next(f for f in looked if f.name == CELERY)


def _sample_celery(queue_redis) -> tuple[figures.Figures, float]:
    """Sample every queue, asking the workers; answers the Celery queue's figures and the seconds
    since the previous look, over which its rates are taken."""
    before = json.loads(queue_redis.hget(sampler.PREVIOUS_KEY, CELERY) or "null")
    looked = _celery(sampler.sample_all(inspect_workers=True))
    return looked, looked.at - before["at"] if before else 0.0


def test_celery_figures_count_what_waits_and_what_a_real_worker_runs_and_holds(
    seeded, queue_redis, dead_letter, operator_actor, workers
) -> None:
    broker = catalog.broker_redis()
    # Three redrive jobs wait: a slow one (10 letters at 2 msg/s, 5 s), then two quick ones.
    slow = [dead_letter(SLUG, payload={"n": n}) for n in range(10)]
    jobs = [services.start_job(operator_actor, CACHE, "redrive", "selected", ids=slow, rate=2)]
    for n in (10, 11):
        letter = dead_letter(SLUG, payload={"n": n})
        jobs.append(services.start_job(operator_actor, CACHE, "redrive", "selected", ids=[letter]))

    # No worker: the three count as waiting, and nobody consumes them.
    alone, _ = _sample_celery(queue_redis)

    assert (alone.length, alone.pending, alone.in_flight, alone.consumers) == (3, 3, 0, [])
    assert alone.counters["unacked"] == 0

    # A worker runs the slow job and holds the next; the third and the sweep the worker sends as
    # it starts wait on the list. This look is the first to find a worker, so it waits for
    # every answer rather than for the workers it knows.
    name = f"figures-{os.getpid()}@{os.uname().nodename}"
    workers.started.append(_start_prefork_worker(workers.env, name, workers.log))
    _wait(
        lambda: (
            RedriveJob.objects.get(pk=jobs[0].pk).status == RedriveJob.Status.RUNNING
            and broker.hlen("unacked") == 2
            and broker.llen("celery") == 2
        ),
        10,
        "the worker to run the slow job and hold the next",
    )

    busy, seconds = _sample_celery(queue_redis)

    assert busy.consumers == [figures.Consumer(name=name, pending=2, active=1, reserved=1)]
    assert (busy.length, busy.pending, busy.in_flight) == (4, 2, 2)
    assert busy.counters["unacked"] == 2  # the broker agrees: two delivered, not acknowledged
    assert busy.out_rate * seconds == pytest.approx(1)  # the slow job was taken
    assert busy.in_rate * seconds == pytest.approx(1)  # the worker's sweep came in
    assert RedriveJob.objects.get(pk=jobs[0].pk).status == RedriveJob.Status.RUNNING  # still

    _wait(
        lambda: (
            not RedriveJob.objects.filter(pk__in=[j.pk for j in jobs], finished_at=None)
            and broker.llen("celery") == broker.hlen("unacked") == 0
        ),
        15,
        f"the worker to run everything:\n{workers.log.read_text()[-3000:]}",
    )

    assert {job.status for job in RedriveJob.objects.all()} == {RedriveJob.Status.SUCCEEDED}
    assert queue_redis.xlen(CACHE) == 12  # every letter back on the stream

    done, seconds = _sample_celery(queue_redis)

    assert done.consumers == [figures.Consumer(name=name, pending=0, active=0, reserved=0)]
    assert (done.length, done.pending, done.in_flight) == (0, 0, 0)
    assert done.out_rate * seconds == pytest.approx(3)  # two quick jobs and the sweep, taken
    assert done.in_rate == 0  # and nothing came in

    quiet, _ = _sample_celery(queue_redis)
    assert (quiet.out_rate, quiet.in_rate) == (0, 0)
