"""The workflow pages' live updates: a beat on a topic, on which an open page fetches its own
regions again (with its own filters), as the queue pages do.

=====================================  =================================  ====================
the page subscribes to                  beat element                       its regions listen
=====================================  =================================  ====================
``workflows`` (the list)                ``#workflows-beat``                ``workflows:changed``
``workflow:<id>`` (a run's page)        ``#workflow-beat-<id>``            ``workflow:changed``
=====================================  =================================  ====================

The engine calls :func:`run_changed` inside the transaction of every change; the beat goes out
once per run and transaction, when it commits, and only to pages someone has open.
"""

from __future__ import annotations

import logging
import time

from django.db import transaction

from portal import realtime

logger = logging.getLogger(__name__)

LIST_TOPIC = "workflows"
RUN_KIND = "workflow"
LIST_EVENT = "workflows:changed"
RUN_EVENT = "workflow:changed"
LIST_BEAT = "workflows-beat"


def register_topics() -> None:
    from .models import WorkflowRun

    def existing(keys: list[str]) -> set[str]:
        numbers = [int(key) for key in keys if key.isdecimal() and len(key) < 19]
        found = WorkflowRun.objects.filter(pk__in=numbers).values_list("pk", flat=True)
        return {str(pk) for pk in found}

    realtime.register_topic(LIST_TOPIC)
    realtime.register_topic_kind(RUN_KIND, existing=existing)


def run_beat_id(run_id: int) -> str:
    return f"workflow-beat-{run_id}"


def beat_html(element_id: str, event: str) -> str:
    return (
        f'<span id="{element_id}" hidden data-beat-event="{event}" data-at="{time.time():.3f}">'
        "</span>"
    )


def run_changed(run_id: int) -> None:
    """Beat the list and the run's page once the current transaction commits (at once outside
    one). Several changes of one run in one transaction beat once."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        getattr(callback, "workflow_run", None) == run_id
        for _, callback, _ in connection.run_on_commit
    ):
        return

    def beat() -> None:
        try:
            list_group = realtime.topic_group(LIST_TOPIC)
            run_group = realtime.kind_group(RUN_KIND, run_id)
            watched = realtime.watched([list_group, run_group])
            if list_group in watched:
                realtime.publish(list_group, {LIST_BEAT: beat_html(LIST_BEAT, LIST_EVENT)})
            if run_group in watched:
                element = run_beat_id(run_id)
                realtime.publish(run_group, {element: beat_html(element, RUN_EVENT)})
        except Exception:
            logger.exception("could not beat the workflow pages for run %s", run_id)

    beat.workflow_run = run_id  # type: ignore[attr-defined]
    transaction.on_commit(beat)
