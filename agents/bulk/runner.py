"""Working through a bulk operation: items in plan order, up to ``parallelism`` at a time, each an ordinary ``Operation`` through the lifecycle services; one runner per job (an advisory lock), resumed by the sweep if its worker dies."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from agents import events
from agents.bulk.plan import is_upward, needs_running_dependencies, steps_for
from agents.models import (
    ACTION_LABELS,
    Agent,
    BulkItem,
    BulkOperation,
    Operation,
)
from agents.services.actions import request_action, run_operation
from agents.services.graph import DependencyGraph, names_of
from agents.services.refusals import ActionRefused
from portal import work
from portal.actors import Actor
from portal.models import AuditEntry
from portal.services import record_audit

logger = logging.getLogger(__name__)


# Advisory lock classes (the first key of pg_advisory_lock(int, int)).
RUNNER_LOCK = 7_301


# The machine-wide runtime-action slots, shared with the workflow engine's lifecycle steps.
ACTION_SLOTS = 7_302


# A pending or running job with no runner for this long is picked up again by the sweep.
STALLED_AFTER = timedelta(seconds=15)


# The Celery task that works through a bulk operation (agents.tasks registers this name).
RUN_TASK = "agents.run_bulk_operation"


def cancel_message(bulk: BulkOperation) -> str:
    return f"Not started: the operation was cancelled by {bulk.cancelled_by or 'someone'}."


# --- running ---------------------------------------------------------------------------------------


def run_bulk_operation(bulk_id: int) -> BulkOperation | None:
    """Work through a bulk operation. Safe to call again at any time: a second runner finds
    the lock taken and returns None; a finished operation is returned untouched; an
    interrupted one carries on where it stopped."""
    with work.try_lease(RUNNER_LOCK, bulk_id) as held:
        if not held:
            logger.info("bulk operation %s is being run by another worker", bulk_id)
            return None
        try:
            bulk = BulkOperation.objects.get(pk=bulk_id)
        except BulkOperation.DoesNotExist:
            return None
        if bulk.is_finished:
            return bulk
        _Runner(bulk).run()
        return BulkOperation.objects.get(pk=bulk_id)


class _Runner:
    """Runs one bulk operation's items, at most ``parallelism`` at a time, in order."""

    HEARTBEAT_SECONDS = 2.0

    def __init__(self, bulk: BulkOperation) -> None:
        self.bulk = bulk
        self.actor = bulk.requested_by
        self.items = {item.pk: item for item in bulk.items.select_related("agent")}
        upward = bulk.options.get("upward", is_upward(bulk.action))
        self.cascade = needs_running_dependencies(bulk.action) or (
            bulk.kind == BulkOperation.Kind.ROLLBACK and upward
        )
        graph = DependencyGraph.load()
        item_of_agent = {item.agent_id: item.pk for item in self.items.values()}
        self.blockers: dict[int, set[int]] = {pk: set() for pk in self.items}
        for item in self.items.values():
            for dependency in graph.edges.get(item.agent_id, ()):
                if dependency in item_of_agent:
                    if upward:  # wait for the dependency
                        self.blockers[item.pk].add(item_of_agent[dependency])
                    else:  # the dependency waits for this dependent
                        self.blockers[item_of_agent[dependency]].add(item.pk)
        self._last_heartbeat = 0.0
        self.cancelled = False

    def run(self) -> None:
        bulk = self.bulk
        now = timezone.now()
        BulkOperation.objects.filter(pk=bulk.pk).update(
            status=BulkOperation.Status.RUNNING,
            started_at=bulk.started_at or now,
            heartbeat_at=now,
            runs=bulk.runs + 1,
        )
        events.emit_bulk("progress", bulk.pk)  # autocommit: delivered at once
        running: dict[Future, int] = {}
        with ThreadPoolExecutor(
            max_workers=bulk.parallelism, thread_name_prefix=f"bulk-{bulk.pk}"
        ) as pool:
            while True:
                self._heartbeat()
                if self.cancelled:
                    skip_pending(
                        bulk.pk,
                        "cancelled",
                        cancel_message(self._reload()),
                        exclude=running.values(),
                    )
                self._refresh()
                for pk in self._ready(exclude=set(running.values())):
                    if len(running) >= bulk.parallelism:
                        break
                    running[pool.submit(self._run_item_in_thread, pk)] = pk
                if not running:
                    if not any(not item.is_finished for item in self.items.values()):
                        break
                    # Nothing can start (blocked by unfinished items of nobody): should not happen.
                    skip_pending(
                        bulk.pk, "blocked", "Not started: what it waited for never finished."
                    )
                    continue
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    pk = running.pop(future)
                    try:
                        future.result()
                    except Exception:
                        logger.exception("bulk %s item %s failed unexpectedly", bulk.pk, pk)
                        _finish_item(
                            pk,
                            BulkItem.Status.FAILED,
                            "unknown",
                            "Unexpected error; see the portal's log.",
                        )
        finish(bulk.pk)

    def _reload(self) -> BulkOperation:
        return BulkOperation.objects.get(pk=self.bulk.pk)

    def _heartbeat(self) -> None:
        if not self.cancelled:
            self.cancelled = BulkOperation.objects.filter(
                pk=self.bulk.pk, cancel_requested_at__isnull=False
            ).exists()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            BulkOperation.objects.filter(pk=self.bulk.pk).update(heartbeat_at=timezone.now())

    def _refresh(self) -> None:
        for item in BulkItem.objects.filter(bulk_id=self.bulk.pk).only(
            "id", "status", "agent_id", "code"
        ):
            known = self.items[item.pk]
            known.status, known.code = item.status, item.code

    def _ready(self, exclude: set[int]) -> list[int]:
        ready = []
        for pk, item in sorted(self.items.items(), key=lambda kv: kv[1].position):
            if item.is_finished or pk in exclude:
                continue
            blockers = [self.items[b] for b in self.blockers[pk]]
            if any(not b.is_finished for b in blockers):
                continue
            # A dependency that failed (or was skipped for any reason but being there already)
            # is not running: its dependents are not started.
            down = [
                b
                for b in blockers
                if b.status == BulkItem.Status.FAILED
                or (b.status == BulkItem.Status.SKIPPED and b.code != "already")
            ]
            if self.cascade and down and item.status == BulkItem.Status.PENDING:
                names = names_of([b.agent for b in down], with_state=False)
                _finish_item(
                    pk, BulkItem.Status.SKIPPED, "dependency_failed",
                    f"Not started: {names} did not come up in this operation.",
                )  # fmt: skip
                item.status = BulkItem.Status.SKIPPED
                continue
            ready.append(pk)
        return ready

    def _run_item_in_thread(self, pk: int) -> None:
        try:
            self._run_item(pk)
        finally:
            connection.close()  # threads' connections are their own; give it back

    def _run_item(self, pk: int) -> None:
        # An item begun by an earlier run must finish even after a cancel; a pending one may
        # give up waiting for a slot.
        begun = BulkItem.objects.filter(pk=pk, status=BulkItem.Status.RUNNING).exists()
        slot = self._acquire_slot(may_give_up=not begun)
        if slot is None:
            _finish_item(pk, BulkItem.Status.SKIPPED, "cancelled", cancel_message(self._reload()))
            return
        try:
            _run_item_steps(self.bulk, pk, self.actor)
        finally:
            work.free_slot(ACTION_SLOTS, slot)

    def _acquire_slot(self, *, may_give_up: bool) -> int | None:
        """One of the machine-wide runtime-action slots; None if cancelled while waiting
        (when ``may_give_up``)."""

        def cancelled() -> bool:
            return BulkOperation.objects.filter(
                pk=self.bulk.pk, cancel_requested_at__isnull=False
            ).exists()

        return work.take_slot(
            ACTION_SLOTS, settings.AGENT_MAX_CONCURRENT_ACTIONS,
            give_up=cancelled if may_give_up else None,
        )  # fmt: skip


def _run_item_steps(bulk: BulkOperation, pk: int, actor: Actor) -> None:
    """Take one item through its steps, recording each step's operation before running it."""
    with transaction.atomic():
        item = BulkItem.objects.select_for_update().select_related("agent").get(pk=pk)
        if item.is_finished:
            return
        if item.status == BulkItem.Status.PENDING:
            latest = BulkOperation.objects.get(pk=bulk.pk)
            if latest.cancel_requested_at is not None:
                _finish_item(pk, BulkItem.Status.SKIPPED, "cancelled", cancel_message(latest))
                return
            if bulk.kind != BulkOperation.Kind.ROLLBACK:
                # Things may have moved since the plan: take the agent from where it is now.
                steps, code, message = steps_for(item.agent, bulk.action)
                if code:
                    _finish_item(pk, BulkItem.Status.SKIPPED, code, message)
                    return
                item.steps = steps
            item.status = BulkItem.Status.RUNNING
            item.started_at = timezone.now()
            item.save(update_fields=["status", "started_at", "steps"])
            events.emit_bulk("item", bulk.pk, pk)
    reason = f"bulk operation #{bulk.pk}"
    for index in range(item.steps_done, len(item.steps)):
        step = item.steps[index]
        if index < len(item.operation_ids):  # begun by an earlier run: finish that one
            operation_id = item.operation_ids[index]
        else:
            with transaction.atomic():
                agent = Agent.objects.get(pk=item.agent_id)
                try:
                    operation = request_action(
                        agent, step, actor, reason=reason, confirm=True, enqueue=False
                    )
                except (ActionRefused, PermissionDenied) as refused:
                    message = getattr(refused, "message", str(refused))
                    code = getattr(refused, "code", "forbidden")
                    # Busy with someone else's action: skipped, not failed.
                    status = BulkItem.Status.SKIPPED if code == "busy" else BulkItem.Status.FAILED
                    _finish_item(pk, status, code, message)
                    return
                item.operation_ids = [*item.operation_ids, str(operation.pk)]
                item.operation = operation
                item.save(update_fields=["operation_ids", "operation"])
            operation_id = str(operation.pk)
        operation = run_operation(operation_id)
        if operation.status != Operation.Status.SUCCEEDED:
            label = ACTION_LABELS[step][0]
            _finish_item(
                pk, BulkItem.Status.FAILED, operation.error_reason or "failed",
                f"{label} failed: {operation.error}",
            )  # fmt: skip
            return
        item.steps_done = index + 1
        BulkItem.objects.filter(pk=pk).update(steps_done=item.steps_done)
        events.emit_bulk("item", bulk.pk, pk)
    _finish_item(pk, BulkItem.Status.SUCCEEDED, "", "")


def _finish_item(pk: int, status: str, code: str, message: str) -> None:
    """Record how an item ended and update its operation's counts, in one transaction."""
    with transaction.atomic():
        item = BulkItem.objects.select_for_update().select_related("agent").get(pk=pk)
        if item.is_finished:
            return
        bulk = BulkOperation.objects.select_for_update().get(pk=item.bulk_id)
        item.status, item.code, item.message = status, code, message
        item.finished_at = timezone.now()
        item.to_state = Agent.objects.filter(pk=item.agent_id).values_list("state", flat=True)[0]
        item.save(update_fields=["status", "code", "message", "finished_at", "to_state"])
        _recount(bulk)
        events.emit_bulk("item", bulk.pk, pk)


def _recount(bulk: BulkOperation) -> None:
    counts = bulk.items.aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(status=BulkItem.Status.SUCCEEDED)),
        failed=Count("id", filter=Q(status=BulkItem.Status.FAILED)),
        skipped=Count("id", filter=Q(status=BulkItem.Status.SKIPPED)),
    )
    for name, value in counts.items():
        setattr(bulk, name, value)
    bulk.save(update_fields=list(counts))


def skip_pending(bulk_id: int, code: str, message: str, exclude: Iterable[int] = ()) -> None:
    exclude = set(exclude)
    pending = BulkItem.objects.filter(bulk_id=bulk_id, status=BulkItem.Status.PENDING).exclude(
        pk__in=exclude
    )
    for pk in pending.values_list("pk", flat=True):
        _finish_item(pk, BulkItem.Status.SKIPPED, code, message)


def finish(bulk_id: int) -> None:
    with transaction.atomic():
        bulk = BulkOperation.objects.select_for_update().get(pk=bulk_id)
        if bulk.is_finished:
            return
        _recount(bulk)
        cancelled_items = bulk.items.filter(code="cancelled").exists()
        if bulk.cancel_requested_at and cancelled_items:
            status = BulkOperation.Status.CANCELLED
        elif bulk.failed == 0:
            status = BulkOperation.Status.SUCCEEDED
        elif bulk.succeeded == 0:
            status = BulkOperation.Status.FAILED
        else:
            status = BulkOperation.Status.PARTIAL
        bulk.status = status
        bulk.finished_at = timezone.now()
        bulk.started_at = bulk.started_at or bulk.finished_at
        bulk.save(update_fields=["status", "finished_at", "started_at"])
        record_audit(
            bulk.requested_by, f"bulk.{bulk.action}", target=f"bulk:{bulk.pk}",
            outcome=AuditEntry.Outcome.FAILED if bulk.failed else AuditEntry.Outcome.SUCCESS,
            phase="completed", status=status, succeeded=bulk.succeeded, failed=bulk.failed,
            skipped=bulk.skipped, seconds=round(bulk.duration_seconds or 0, 1),
        )  # fmt: skip
        events.emit_bulk("finished", bulk.pk)


def resume_stalled_bulk_operations(older_than: timedelta = STALLED_AFTER) -> list[int]:
    """Hand every unfinished bulk operation whose runner is gone back to a worker.

    A runner holds the operation's advisory lock for as long as it lives; one we can take
    has no runner. Called by beat and when a worker starts. Returns the ids handed out.
    """
    cutoff = timezone.now() - older_than
    resumed = []
    for bulk in BulkOperation.objects.filter(
        status__in=[BulkOperation.Status.PENDING, BulkOperation.Status.RUNNING],
        requested_at__lte=cutoff,
    ).filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lte=cutoff)):
        if work.has_runner(RUNNER_LOCK, bulk.pk):
            continue
        logger.warning("bulk operation %s has no runner; handing it to a worker again", bulk.pk)
        work.send(RUN_TASK, bulk.pk)
        resumed.append(bulk.pk)
    return resumed
