"""The log collector: every agent's log lines, as its runtime gives them, into the database.

It runs as its own long-lived process (``manage.py collect``, started by ``manage.py up``):

- one follower thread per agent that has or may soon have processes (DEPLOYED, RUNNING,
  SUSPENDED, ERRORED) reads ``runtime.logs(follow=True)`` from where the collector stopped
  reading, and queues the new lines; a follower whose stream ended, or whose agent changed
  (a transition, a new replica count, another runtime or version), is started again and
  re-reads from that point, so a container that was recreated, an agent that crashed and was
  restarted (on the local runtime its log is renamed to ``previous.log``, which a re-read
  includes) or a new replica loses nothing;
- an agent that stops being followed (STOPPED, REVOKED), and every STOPPED agent when the
  collector starts, is read once more without following: its last lines are kept too;
- the writer thread drains the queue every :data:`FLUSH_SECONDS`, stores the lines with one COPY
  and moves each replica's :class:`~observability.models.LogCursor` in the same transaction,
  then pushes the new rows to the live tail (``observability.live``), to pages watching only.

Where reading stopped is, per replica, the time of the newest line stored and how many lines
carry exactly that time (:class:`Position`). Reading again starts at that time; the lines at or
before the position are dropped by a :class:`_Gate`, so a collector that restarts (or a follower
started again) neither loses nor repeats a line. Only one collector works at a time (a
PostgreSQL advisory lock): a second one waits, and :func:`collect_once` refuses while one runs.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, cast

from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)

from agents import services
from agents.models import Agent, State
from agents.runtimes import LogLine, RuntimeFailure
from observability import live, logs
from observability.models import LogCursor

logger = logging.getLogger(__name__)

FOLLOWED_STATES = (State.RUNNING, State.SUSPENDED, State.ERRORED)
# Read once when the collector starts and when an agent leaves FOLLOWED_STATES: the last lines
# (written while it stopped, or while no collector ran) are kept. A DEPLOYED agent writes
# nothing until it starts (then it is followed): thousands must not hold a thread each.
CATCH_UP_STATES = (State.DEPLOYED, State.STOPPED)
# At most this many catch-up reads at a time (a fleet of thousands registered at once).
CATCH_UP_READERS = 8
FLUSH_SECONDS = 0.25
SCAN_SECONDS = 1.0
BATCH_MAX = 5000
QUEUE_MAX = 50_000
LOCK_WAIT_SECONDS = 5.0
RESTART_BACKOFF_SECONDS = (1.0, 30.0)
# Reading again starts this much before the position, so that rounding in a runtime's notion of
# "since" can never skip a line; the lines read twice are dropped by the gate.
SINCE_SLACK_SECONDS = 0.001
# "From the beginning" as a since every runtime takes (a since near 0 used to reach the Docker
# engine as "1e-06", which it refuses); agentd wrote nothing before 1970-01-01T00:00:01Z.
SINCE_BEGINNING = 1.0
CURSOR_TS_MAX = cast(int, LogCursor._meta.get_field("last_ts").max_length)
# pg_advisory_lock key held by the running collector ("logs" in ASCII).
LOCK_KEY = 0x6C6F6773


class CollectorBusy(RuntimeError):
    """Another collector is storing the lines already."""


@dataclass
class Position:
    """How far one replica's log is stored: the time of the newest line and how many lines
    carry exactly that time (agentd writes milliseconds; several lines may share one)."""

    ts: str = ""
    count: int = 0

    def advance(self, ts: str) -> None:
        """A line at ``ts`` was read after this position. An older time (a clock stepped
        back) leaves the position where it is: it never moves backwards."""
        if ts > self.ts:
            self.ts, self.count = ts, 1
        elif ts == self.ts:
            self.count += 1

    def key(self) -> tuple[str, int]:
        return self.ts, self.count


class _Gate:
    """Lets through the lines after ``start``; a re-read begins at ``start.ts`` and replays the
    ``start.count`` lines of that time that are stored already, and anything older."""

    def __init__(self, start: Position) -> None:
        self.ts = start.ts
        self.skip = start.count
        self.seen_at_start = 0

    def admits(self, ts: str) -> bool:
        if ts < self.ts:
            return False
        if ts == self.ts:
            self.seen_at_start += 1
            return self.seen_at_start > self.skip
        return True


@dataclass
class _Reading:
    """One read of an agent's log (followed or not), from the positions it started at."""

    agent_id: int
    positions: dict[int, Position]
    gates: dict[int, _Gate] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.gates = {replica: _Gate(position) for replica, position in self.positions.items()}

    def since(self, replicas: int) -> float:
        """The Unix time to read from: the oldest replica's position, or the beginning when a
        replica has none yet."""
        if len(self.positions) < replicas or any(not p.ts for p in self.positions.values()):
            return SINCE_BEGINNING
        oldest = logs.parse_timestamp(min(p.ts for p in self.positions.values()))
        if oldest is None:
            return SINCE_BEGINNING
        return max(SINCE_BEGINNING, oldest.timestamp() - SINCE_SLACK_SECONDS)

    def admit(self, line: LogLine) -> tuple[str, int] | None:
        """The position after ``line`` if it is new, else None."""
        gate = self.gates.get(line.replica)
        if gate is None:
            gate = self.gates[line.replica] = _Gate(Position())
        if not gate.admits(line.ts):
            return None
        position = self.positions.setdefault(line.replica, Position())
        position.advance(line.ts)
        return position.key()


@dataclass(frozen=True)
class _Item:
    agent_id: int
    line: LogLine
    position: tuple[str, int]


# --- storing ------------------------------------------------------------------------------------


def load_positions(agent_id: int) -> dict[int, Position]:
    """Where each replica's log was last stored, from the database."""
    return {
        replica: Position(last_ts, count)
        for replica, last_ts, count in LogCursor.objects.filter(agent_id=agent_id).values_list(
            "replica", "last_ts", "lines_at_last_ts"
        )
    }


def store(
    items: list[_Item],
    agents: Mapping[int, Agent],
    *,
    publish: bool = True,
    stored: dict[tuple[int, int], tuple[str, int]] | None = None,
) -> int:
    """Store lines and move their replicas' cursors, in one transaction; once it commits, push
    the lines to the live tail. ``stored`` remembers the cursors written, so that one can never move back (two
    followers of one agent may hand their lines over in a different order). Answers how many
    lines were stored; lines of agents deleted meanwhile are dropped."""
    existing = set(
        Agent.objects.filter(pk__in={i.agent_id for i in items}).values_list("pk", flat=True)
    )
    items = [item for item in items if item.agent_id in existing]
    if not items:
        return 0
    stored = {} if stored is None else stored
    rows = [(item.agent_id, logs.parse(item.line)) for item in items]
    cursors = _newest_positions(items, stored)
    with transaction.atomic():
        ids = logs.write_rows(rows)
        if cursors:
            LogCursor.objects.bulk_create(
                [
                    LogCursor(
                        agent_id=agent_id,
                        replica=replica,
                        last_ts=position[0][:CURSOR_TS_MAX],
                        lines_at_last_ts=position[1],
                    )
                    for (agent_id, replica), position in cursors.items()
                ],
                update_conflicts=True,
                unique_fields=["agent", "replica"],
                update_fields=["last_ts", "lines_at_last_ts", "updated_at"],
            )
        if publish:
            transaction.on_commit(partial(_publish, rows, ids, agents), robust=True)
    stored.update(cursors)
    return len(ids)


def _newest_positions(
    items: list[_Item], stored: dict[tuple[int, int], tuple[str, int]]
) -> dict[tuple[int, int], tuple[str, int]]:
    newest: dict[tuple[int, int], tuple[str, int]] = {}
    for item in items:
        key = (item.agent_id, item.line.replica)
        if item.position > newest.get(key, ("", -1)):
            newest[key] = item.position
    return {
        key: position for key, position in newest.items() if position > stored.get(key, ("", -1))
    }


def _publish(rows, ids: list[int], agents: Mapping[int, Agent]) -> None:
    """The rows just stored, to the live tail; built only for the groups someone watches."""
    slugs = {agents[agent_id].slug for agent_id, _ in rows if agent_id in agents}
    watched = live.watched_groups(slugs)
    if not watched:
        return
    if live.all_logs_group() not in watched:
        wanted = {pk for pk, agent in agents.items() if live.log_group(agent.slug) in watched}
        chosen = [
            (row, entry_id) for row, entry_id in zip(rows, ids, strict=True) if row[0] in wanted
        ]
        rows, ids = [row for row, _ in chosen], [entry_id for _, entry_id in chosen]
    live.publish_entries(logs.entries_for(rows, ids, agents), watched)


def _store_tolerantly(
    items: list[_Item], agents: Mapping[int, Agent], publish: bool, stored: dict
) -> int:
    """Store a batch; when the database refuses it for its content (not for being away), store
    the lines one by one and drop only those it refuses, so one odd line cannot stop the log."""
    try:
        return store(items, agents, publish=publish, stored=stored)
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        logger.exception("a batch of %d log lines was refused; storing them one by one", len(items))
    written = 0
    for item in items:
        try:
            written += store([item], agents, publish=publish, stored=stored)
        except (OperationalError, InterfaceError):
            raise
        except DatabaseError as exc:
            logger.warning("dropped a log line of agent %s: %s", item.agent_id, exc)
    return written


# --- reading once -----------------------------------------------------------------------------------


def collect_once(agent: Agent, *, publish: bool = True) -> int:
    """Read everything new in ``agent``'s log, without following, and store it; answers how many
    lines were stored. For tests and ``manage.py logs collect``: raises :class:`CollectorBusy`
    while a collector runs (it stores these lines itself)."""
    with _lock_or_busy():
        reading = _Reading(agent.pk, load_positions(agent.pk))
        items = list(_read_once(agent, reading))
        return sum(
            _store_tolerantly(items[start : start + BATCH_MAX], {agent.pk: agent}, publish, {})
            for start in range(0, len(items), BATCH_MAX)
        )


def _read_once(agent: Agent, reading: _Reading) -> Iterator[_Item]:
    runtime, spec = services.runtime_for(agent), services.spec_for(agent)
    for line in runtime.logs(spec, since=reading.since(spec.replicas), tail=None):
        position = reading.admit(line)
        if position is not None:
            yield _Item(agent.pk, line, position)


@contextlib.contextmanager
def _lock_or_busy() -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        if not cursor.fetchone()[0]:
            raise CollectorBusy(
                "The log collector is running (manage.py collect, started by manage.py up) and "
                "stores these lines already; search them with `manage.py logs search`."
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


# --- following --------------------------------------------------------------------------------------


def _follow_key(agent: Agent) -> tuple:
    """What a follower was started for; when it changes the follower starts again."""
    return (agent.runtime, agent.replicas, agent.version, agent.state, agent.state_changed_at)


@dataclass
class _Reader:
    """A thread reading one agent's log: following it, or once (a catch-up)."""

    agent: Agent
    reading: _Reading
    follow: bool
    key: tuple
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def ended(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()


class Collector:
    """Follows every live agent's log into the database until :meth:`stop`."""

    def __init__(
        self,
        *,
        flush_interval: float = FLUSH_SECONDS,
        scan_interval: float = SCAN_SECONDS,
        publish: bool = True,
    ) -> None:
        self.flush_interval = flush_interval
        self.scan_interval = scan_interval
        self.publish = publish
        self.stop_event = threading.Event()
        self.lines_stored = 0
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=QUEUE_MAX)
        # Guards the readers and their positions: a reader hands a line over only while it has
        # not been retired, and a new reader starts from the positions its predecessor left.
        self._lock = threading.Lock()
        self._readers: dict[int, _Reader] = {}
        self._positions: dict[int, dict[int, Position]] = {}
        self._agents: dict[int, Agent] = {}
        self._failures: dict[int, int] = {}
        self._next_start: dict[int, float] = {}
        self._caught_up: set[int] = set()
        self._stored: dict[tuple[int, int], tuple[str, int]] = {}
        self._writer_done = threading.Event()

    # --- running -----------------------------------------------------------------------------

    def run(self) -> None:
        """Run until :meth:`stop`: wait for the collector lock, then scan, read and write."""
        lock = connections.create_connection(DEFAULT_DB_ALIAS)
        acquired = False
        try:
            acquired = self._acquire(lock)
            if not acquired:
                return
            writer = threading.Thread(target=self._write_loop, name="log-writer", daemon=True)
            writer.start()
            logger.info("log collector started")
            while not self.stop_event.is_set():
                try:
                    self.scan()
                except Exception:
                    logger.exception("scanning the agents failed; trying again")
                    connection.close()
                self.stop_event.wait(self.scan_interval)
            self._stop_readers()
            self._writer_done.set()
            writer.join(timeout=30)
            logger.info("log collector stopped", extra={"lines_stored": self.lines_stored})
        finally:
            if acquired:
                # Released at once for the next collector (closing alone releases it only once
                # the server notices the connection is gone).
                with contextlib.suppress(DatabaseError), lock.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
            lock.close()
            connection.close()

    def stop(self) -> None:
        self.stop_event.set()

    def _acquire(self, lock) -> bool:
        said = False
        while not self.stop_event.is_set():
            with lock.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
                if cursor.fetchone()[0]:
                    return True
            if not said:
                logger.info("another log collector is running; waiting until it stops")
                said = True
            self.stop_event.wait(LOCK_WAIT_SECONDS)
        return False

    # --- which agents are read -----------------------------------------------------------------

    def scan(self) -> None:
        """Start, restart and retire readers to match the agents' states now."""
        agents = {
            agent.pk: agent
            for agent in Agent.objects.filter(state__in=FOLLOWED_STATES + CATCH_UP_STATES)
        }
        self._agents = {**self._agents, **agents}
        followed = {pk: agent for pk, agent in agents.items() if agent.state in FOLLOWED_STATES}
        now = time.monotonic()
        for pk, reader in list(self._readers.items()):
            agent = followed.get(pk)
            if not reader.follow:
                if reader.ended or agent is not None:  # done, or a follower takes over
                    self._retire(pk)
                continue
            current = agent is not None and reader.key == _follow_key(agent)
            if current and not reader.ended:
                continue
            self._retire(pk)
            if current:  # its stream ended by itself (or failed): open it again, later
                self._back_off(pk, reader, now)
            if agent is None:
                self._caught_up.discard(pk)  # no longer followed: read its last lines once more
        for pk, agent in followed.items():
            if pk not in self._readers and now >= self._next_start.get(pk, 0.0):
                self._start_reader(agent, follow=True)
        # Agents not running have their last lines read once, a few at a time: a fleet of
        # thousands registered must not start thousands of threads (and connections) at once.
        catching_up = sum(1 for reader in self._readers.values() if not reader.follow)
        for pk, agent in agents.items():
            if catching_up >= CATCH_UP_READERS:
                break
            if pk not in followed and pk not in self._caught_up and pk not in self._readers:
                self._caught_up.add(pk)
                self._start_reader(agent, follow=False)
                catching_up += 1
        for pk in set(self._positions) - set(agents) - set(self._readers):
            # Revoked or deleted: nothing more to read. Its cursors stay in the database.
            self._positions.pop(pk)
            self._caught_up.discard(pk)

    def _start_reader(self, agent: Agent, *, follow: bool) -> None:
        if agent.pk not in self._positions:
            self._positions[agent.pk] = load_positions(agent.pk)
        with self._lock:
            reading = _Reading(agent.pk, self._positions[agent.pk])
            reader = _Reader(agent, reading, follow, _follow_key(agent))
            reader.thread = threading.Thread(
                target=self._read, args=(reader,), name=f"logs-{agent.slug}", daemon=True
            )
            self._readers[agent.pk] = reader
        reader.thread.start()

    def _retire(self, agent_id: int) -> None:
        """Stop a reader: under the lock, so that it cannot hand over one more line once a new
        reader may have started from the positions."""
        with self._lock:
            reader = self._readers.pop(agent_id, None)
            if reader is not None:
                reader.stopping.set()

    def _back_off(self, agent_id: int, reader: _Reader, now: float) -> None:
        """A stream that ended by itself is opened again, sooner if it had run for a while."""
        lived = now - reader.started_at
        failures = 0 if lived > RESTART_BACKOFF_SECONDS[1] else self._failures.get(agent_id, 0) + 1
        self._failures[agent_id] = failures
        first, longest = RESTART_BACKOFF_SECONDS
        self._next_start[agent_id] = now + min(longest, first * 2 ** max(0, failures - 1))

    def _stop_readers(self) -> None:
        with self._lock:
            readers = list(self._readers.values())
            self._readers.clear()
            for reader in readers:
                reader.stopping.set()
        for reader in readers:
            if reader.thread is not None:
                reader.thread.join(timeout=5)

    # --- one reader ----------------------------------------------------------------------------

    def _read(self, reader: _Reader) -> None:
        agent = reader.agent
        lines: Iterable[LogLine] = ()
        try:
            runtime, spec = services.runtime_for(agent), services.spec_for(agent)
            connection.close()  # a follower may read for hours: it holds no connection meanwhile
            lines = runtime.logs(
                spec,
                since=reader.reading.since(spec.replicas),
                tail=None,
                follow=reader.follow,
                stop=reader.stopping,
            )
            for line in lines:
                item = self._admit(reader, line)
                if item is False:
                    break
                if item is not None:
                    self._put(item)
        except RuntimeFailure as failure:
            # Said once loudly; a runtime that stays away is retried quietly, with backoff.
            repeated = self._failures.get(agent.pk, 0) > 0
            (logger.info if repeated else logger.warning)(
                "cannot read the log of %s: %s", agent.slug, failure.message
            )
        except Exception:
            logger.exception("reading the log of %s failed", agent.slug)
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            connection.close()  # this thread's own, else each ended reader leaks one

    def _admit(self, reader: _Reader, line: LogLine) -> _Item | Literal[False] | None:
        """The line as a queue item if it is new; None if read before; False once the reader
        has been retired (its lines are no longer wanted)."""
        with self._lock:
            if reader.stopping.is_set():
                return False
            position = reader.reading.admit(line)
        return None if position is None else _Item(reader.agent.pk, line, position)

    def _put(self, item: _Item) -> None:
        """Queue a line; when the writer falls behind (the database is away) this blocks the
        reader, and the runtime keeps the lines meanwhile."""
        while not self.stop_event.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(item)

    # --- the writer ----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        pending: list[_Item] = []
        try:
            while True:
                pending.extend(self._drain(BATCH_MAX - len(pending)))
                if pending:
                    pending = self._write(pending)
                elif self._writer_done.is_set() and self._queue.empty():
                    return
        finally:
            connection.close()

    def _write(self, pending: list[_Item]) -> list[_Item]:
        """Store a batch; answers what is left to store (all of it while the database is
        away, so that nothing is lost)."""
        try:
            self.lines_stored += _store_tolerantly(
                pending, self._agents, self.publish, self._stored
            )
            return []
        except (OperationalError, InterfaceError) as exc:
            connection.close()
            if self._writer_done.is_set():
                # Stopping: their cursors did not move, so the next collector reads them again.
                logger.warning("database away while stopping; %d log lines left", len(pending))
                return []
            logger.warning("cannot store log lines (%s); retrying", exc)
            time.sleep(1.0)
            return pending
        except Exception:
            # A bug must not wedge the collector: these lines are lost, later ones are kept.
            logger.exception("storing %d log lines failed; they are dropped", len(pending))
            return []

    def _drain(self, most: int) -> list[_Item]:
        """What the queue holds within one flush interval (at most ``most`` lines)."""
        items: list[_Item] = []
        deadline = time.monotonic() + self.flush_interval
        while len(items) < most:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                items.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        while len(items) < most:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items
