"""The Celery app: deployments, bulk jobs, workflows and periodic sweeps run here."""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.signals import task_postrun, task_prerun, task_revoked

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# --- task outcomes and run times, for /-/metrics --------------------------------------------
# In the process that runs the task (a pool process), so each writes its own multi-process file.

_OUTCOMES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried",
             "REJECTED": "rejected", "IGNORED": "ignored"}  # fmt: skip
_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id=None, **kwargs) -> None:
    _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **kwargs) -> None:
    from portal import prometheus  # lazily: this module is imported before Django is set up

    began = _started.pop(task_id, None)
    seconds = None if began is None else time.perf_counter() - began
    prometheus.observe_task(getattr(task, "name", ""), _OUTCOMES.get(state, "other"), seconds)


@task_revoked.connect
def _task_revoked(sender=None, **kwargs) -> None:
    from portal import prometheus

    prometheus.observe_task(getattr(sender, "name", ""), "revoked")
