"""Queues in the Django admin: redrive jobs read-only, a queue's thresholds added, edited and
removed through the queue services (validated, audited, refusals shown on the form), queue samples
read-only. Only Admins get in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from observability.queues import services
from observability.queues.models import QueueSample, QueueThreshold, RedriveJob
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db

JOBS = "/admin/observability/redrivejob/"
THRESHOLDS = "/admin/observability/queuethreshold/"
SAMPLES = "/admin/observability/queuesample/"
CACHE = "agents:wow-cache:tasks"
EMPTY = {
    "backlog_degraded": "", "backlog_critical": "", "age_degraded_seconds": "",
    "age_critical_seconds": "", "error_rate_degraded": "", "error_rate_critical": "",
    "dlq_inflow_degraded": "", "dlq_inflow_critical": "",
}  # fmt: skip


def form_errors(response) -> list[str]:
    form = response.context["adminform"].form
    return [message for messages in form.errors.values() for message in messages]


@pytest.fixture
def job(seeded, queue_redis, dead_letter, operator_actor) -> RedriveJob:
    dead_letter("wow-cache")
    dead_letter("wow-cache")
    return services.start_job(operator_actor, CACHE, "redrive", "all", enqueue=False)


@pytest.mark.parametrize("role_client", ["as_viewer", "as_operator", "as_outsider"])
def test_only_admins_reach_the_queue_admin(request, job, role_client):
    client = request.getfixturevalue(role_client)
    for path in (JOBS, f"{JOBS}{job.pk}/change/", THRESHOLDS, f"{THRESHOLDS}add/", SAMPLES):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.post(f"{THRESHOLDS}add/", {"queue_name": CACHE, **EMPTY, "backlog_degraded": "5"})
    assert not QueueThreshold.objects.exists()


# --- redrive jobs -------------------------------------------------------------------------------


def test_redrive_jobs_are_listed_with_progress_and_who_asked(job, as_admin):
    page = as_admin.get(JOBS).content.decode()
    for shown in (str(job.pk), CACHE, "Retry", "All messages", "pending", "0 / 2", "user:otto"):
        assert shown in page
    assert as_admin.get(f"{JOBS}?status=pending&action=redrive").status_code == 200
    assert as_admin.get(f"{JOBS}?q=wow-cache").status_code == 200


def test_redrive_jobs_are_read_only(job, as_admin):
    detail = as_admin.get(f"{JOBS}{job.pk}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert as_admin.get(f"{JOBS}add/").status_code == 403
    assert as_admin.post(f"{JOBS}{job.pk}/change/", {"status": "succeeded"}).status_code == 403
    assert as_admin.post(f"{JOBS}{job.pk}/delete/", {"post": "yes"}).status_code == 403
    job.refresh_from_db()
    assert job.status == "pending"


# --- thresholds ---------------------------------------------------------------------------------


def test_an_admin_adds_thresholds_through_the_service_which_audits(seeded, queue_redis, as_admin):
    response = as_admin.post(
        f"{THRESHOLDS}add/",
        {"queue_name": CACHE, **EMPTY, "backlog_degraded": "50", "error_rate_critical": "40.5"},
    )

    assert response.status_code == 302, form_errors(response)
    row = QueueThreshold.objects.get(queue_name=CACHE)
    assert (row.backlog_degraded, row.error_rate_critical, row.backlog_critical) == (50, 40.5, None)
    assert row.updated_by == "user:ada"
    entry = AuditEntry.objects.get(action="queues.thresholds")
    assert entry.target == CACHE and entry.detail["thresholds"]["backlog_degraded"] == 50
    assert CACHE in as_admin.get(THRESHOLDS).content.decode()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"queue_name": "agents:wow-nothing:tasks", "backlog_degraded": "5"},
         "There is no queue 'agents:wow-nothing:tasks'"),
        ({"queue_name": CACHE, "backlog_degraded": "500", "backlog_critical": "100"},
         "backlog_degraded (500) must not be above backlog_critical (100)."),
        ({"queue_name": CACHE, "backlog_degraded": "2000000000"},
         "must be a number from 0 to 1,000,000,000"),
        ({"queue_name": CACHE, "backlog_degraded": "-3"}, "greater than or equal to 0"),
        ({"queue_name": CACHE, "error_rate_degraded": "lots"}, "Enter a number."),
        ({"queue_name": CACHE}, "Give at least one threshold"),
    ],
)  # fmt: skip
def test_thresholds_the_service_refuses_are_form_errors_and_nothing_is_saved(
    seeded, queue_redis, as_admin, fields, says
):
    response = as_admin.post(f"{THRESHOLDS}add/", {**EMPTY, **fields})

    assert response.status_code == 200
    assert any(says in message for message in form_errors(response)), form_errors(response)
    assert not QueueThreshold.objects.exists()
    assert not AuditEntry.objects.filter(action="queues.thresholds").exists()


def test_a_queue_has_one_row_of_thresholds(seeded, queue_redis, as_admin, operator_actor):
    services.set_thresholds(operator_actor, CACHE, {"backlog_degraded": 5})

    response = as_admin.post(f"{THRESHOLDS}add/", {"queue_name": CACHE, **EMPTY,
                                                  "backlog_degraded": "7"})  # fmt: skip

    assert response.status_code == 200 and "already exists" in " ".join(form_errors(response))
    assert QueueThreshold.objects.get().backlog_degraded == 5
    assert AuditEntry.objects.filter(action="queues.thresholds").count() == 1


def test_editing_thresholds_goes_through_the_service_and_emptying_them_removes_the_row(
    seeded, queue_redis, as_admin, operator_actor
):
    row = services.set_thresholds(operator_actor, CACHE, {"backlog_degraded": 5})
    change = f"{THRESHOLDS}{row.pk}/change/"
    page = as_admin.get(change).content.decode()
    assert 'name="backlog_degraded"' in page and 'name="queue_name"' not in page  # fixed queue

    refused = as_admin.post(change, {**EMPTY, "age_degraded_seconds": "900",
                                     "age_critical_seconds": "60"})  # fmt: skip
    assert refused.status_code == 200 and "must not be above" in " ".join(form_errors(refused))
    assert QueueThreshold.objects.get().age_degraded_seconds is None

    assert as_admin.post(change, {**EMPTY, "backlog_degraded": "9"}).status_code == 302
    row.refresh_from_db()
    assert (row.backlog_degraded, row.updated_by) == (9, "user:ada")

    emptied = as_admin.post(change, EMPTY, follow=True)
    assert emptied.status_code == 200
    assert not QueueThreshold.objects.exists()
    assert "takes the default thresholds again" in emptied.content.decode()
    assert AuditEntry.objects.filter(action="queues.thresholds", actor="user:ada").count() == 2


def test_deleting_thresholds_is_audited_also_for_a_queue_that_is_gone(
    seeded, queue_redis, as_admin, operator_actor
):
    row = services.set_thresholds(operator_actor, CACHE, {"backlog_degraded": 5})
    orphan = QueueThreshold.objects.create(queue_name="agents:wow-gone:tasks", backlog_degraded=1)

    assert as_admin.post(f"{THRESHOLDS}{row.pk}/delete/", {"post": "yes"}).status_code == 302
    bulk = as_admin.post(THRESHOLDS, {"action": "delete_selected", "post": "yes",
                                      "_selected_action": [orphan.pk]})  # fmt: skip
    assert bulk.status_code == 302

    assert not QueueThreshold.objects.exists()
    targets = set(
        AuditEntry.objects.filter(action="queues.thresholds", actor="user:ada").values_list(
            "target", flat=True
        )
    )
    assert targets == {CACHE, "agents:wow-gone:tasks"}


# --- samples ------------------------------------------------------------------------------------


def test_queue_samples_are_listed_read_only(db, as_admin):
    sample = QueueSample.objects.create(
        queue_name=CACHE, ts=timezone.now() - timedelta(seconds=5), pending=3
    )
    assert CACHE in as_admin.get(SAMPLES).content.decode()
    assert as_admin.get(f"{SAMPLES}add/").status_code == 403
    assert as_admin.post(f"{SAMPLES}{sample.pk}/delete/", {"post": "yes"}).status_code == 403
    assert QueueSample.objects.filter(pk=sample.pk).exists()
