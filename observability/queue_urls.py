from __future__ import annotations

from django.urls import path

from observability.views import queue_actions, queues

app_name = "queues"

urlpatterns = [
    path("", queues.queue_list, name="index"),
    path("jobs/<int:pk>/", queues.job_detail, name="job"),
    path("jobs/<int:pk>/cancel/", queues.job_cancel, name="job-cancel"),
    path("<str:name>/", queues.queue_detail, name="detail"),
    path("<str:name>/send/", queue_actions.send, name="send"),
    path("<str:name>/claim/", queue_actions.claim, name="claim"),
    path("<str:name>/purge/", queue_actions.purge, name="purge"),
    path("<str:name>/thresholds/", queue_actions.thresholds, name="thresholds"),
    path("<str:name>/dlq/confirm/", queue_actions.confirm, name="confirm"),
    path("<str:name>/dlq/act/", queue_actions.act, name="act"),
    path("<str:name>/dlq/export/", queue_actions.export, name="export"),
    path("<str:name>/dlq/<str:message_id>/", queue_actions.inspect, name="letter"),
    path("<str:name>/dlq/<str:message_id>/preview/", queue_actions.preview, name="preview"),
    path("<str:name>/dlq/<str:message_id>/edit/", queue_actions.edit, name="edit"),
]
