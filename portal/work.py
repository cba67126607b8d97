"""Work handed to a worker: sending it when the request commits, and sweeping up what no worker
is doing.

A request records what it accepted (an operation, a recovery, a bulk job, later a workflow run)
and hands a task to Celery. Two things can strand that record:

- the broker cannot take the task (Redis down at that moment): ``send_after_commit`` calls the
  caller's ``undo``, which marks the record failed and clears what it holds, and the request
  answers 503 instead of leaving something "pending" that no worker will ever see;
- the task dies after taking it (worker SIGKILLed, a database error mid-way): the record stays
  unfinished with nothing behind it. ``sweep`` finds those and hands them out again.

Each kind of work registers one function with ``register_sweeper``; beat runs them every few
seconds and a worker runs them as it starts. A sweeper hands out only records no live runner
holds (its runner keeps a PostgreSQL advisory lock while it works, released by the server when
the runner's connection dies), so running a sweep twice or next to a live runner is harmless.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)

# A sweeper takes "hand out what has had no runner for at least this long" and returns the
# records it handed out (or finished).
Sweeper = Callable[[timedelta], list]

_SWEEPERS: dict[str, Sweeper] = {}


class BrokerUnreachable(Exception):
    """The task queue did not take the task; nothing was left pending."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


UNREACHABLE_MESSAGE = (
    "The task queue (Redis) is not answering, so no worker can carry this out; nothing was "
    "changed. Try again in a moment, or check `manage.py check_health`."
)


def send(task_name: str, *args, countdown: float | None = None) -> None:
    """Send the task registered as ``task_name`` (by name: the sender imports no tasks module),
    to run at once or ``countdown`` seconds from now."""
    if countdown is not None and countdown > 0:
        current_app.send_task(task_name, args=args, countdown=countdown)
    else:
        current_app.send_task(task_name, args=args)


def send_after_commit(task_name: str, *args, undo: Callable[[str], None]) -> None:
    """Send the task ``task_name(*args)`` once the current transaction commits (at once outside
    one).

    If the broker refuses, ``undo(message)`` runs (in its own transaction: the record is already
    committed) and ``BrokerUnreachable`` is raised to whoever committed, so a request can answer
    503. Without a transaction around the caller that is the caller itself.
    """

    def hand_over() -> None:
        try:
            send(task_name, *args)
        except (OperationalError, OSError) as exc:
            logger.warning("could not send %s%r to the task queue: %s", task_name, args, exc)
            undo(UNREACHABLE_MESSAGE)
            raise BrokerUnreachable(UNREACHABLE_MESSAGE) from exc

    transaction.on_commit(hand_over)


# --- leases -------------------------------------------------------------------------------------


def lock_key(kind: int, key: object) -> tuple[int, int]:
    """The two 32-bit numbers of an advisory lock for this kind of work and this record."""
    if isinstance(key, int) and -(2**31) <= key < 2**31:
        return kind, key
    return kind, zlib.crc32(str(key).encode()) - 2**31


def lock_until_commit(kind: int, key: object) -> None:
    """Wait for, then hold, this kind's lock on ``key`` until the open transaction ends: a
    check-then-write that two requests must not do at once takes turns here."""
    if not connection.in_atomic_block:
        raise RuntimeError("lock_until_commit needs a transaction: it would let go at once")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", list(lock_key(kind, key)))


@contextmanager
def lease(kind: int, key: object) -> Iterator[None]:
    """Hold the record's runner lock while working on it (waiting for a runner already on it).

    The lock belongs to this database session, so a runner that dies (SIGKILL, a lost
    connection) lets go of it with its connection: that is how a sweep knows nobody is working.
    """
    first, second = lock_key(kind, key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [first, second])
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [first, second])
        except Exception:  # the connection is gone, and the lock with it
            logger.warning("could not release the runner lock (%s, %s)", first, second)


@contextmanager
def try_lease(kind: int, key: object) -> Iterator[bool]:
    """Take the record's runner lock if nobody holds it; yields whether this session has it
    (a second runner of the same record simply stops)."""
    first, second = lock_key(kind, key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [first, second])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [first, second])
            except Exception:  # the connection is gone, and the lock with it
                logger.warning("could not release the runner lock (%s, %s)", first, second)


def take_slot(kind: int, ceiling: int, *, give_up: Callable[[], bool] | None = None) -> int | None:
    """One of ``ceiling`` machine-wide slots of this kind (an advisory lock each), waiting for
    one to be free; None when ``give_up()`` says to stop waiting. Free it with ``free_slot``."""
    while True:
        with connection.cursor() as cursor:
            for slot in range(ceiling):
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [kind, slot])
                if cursor.fetchone()[0]:
                    return slot
        if give_up is not None and give_up():
            return None
        time.sleep(0.1)


def free_slot(kind: int, slot: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [kind, slot])


def has_runner(kind: int, key: object) -> bool:
    """Whether some session holds the record's runner lock right now."""
    first, second = lock_key(kind, key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [first, second])
        free = cursor.fetchone()[0]
        if free:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [first, second])
    return not free


# --- the sweep ----------------------------------------------------------------------------------


def register_sweeper(name: str, sweeper: Sweeper) -> None:
    """Add a kind of work to the sweep (apps call this from ``AppConfig.ready``)."""
    _SWEEPERS[name] = sweeper


def stalled_after() -> timedelta:
    return timedelta(seconds=settings.WORK_STALLED_AFTER_SECONDS)


def sweep(older_than: timedelta | None = None) -> dict[str, list]:
    """Hand out again every record of every kind whose runner is gone; returns what each did.

    One kind failing (its table locked, a bug) does not stop the others.
    """
    older_than = stalled_after() if older_than is None else older_than
    done: dict[str, list] = {}
    for name, sweeper in _SWEEPERS.items():
        try:
            handed_out = sweeper(older_than)
        except Exception:
            logger.exception("the %s sweep failed; the next one will try again", name)
            continue
        if handed_out:
            logger.warning("sweep: handed %s %s out again: %s", len(handed_out), name, handed_out)
            done[name] = handed_out
    return done
