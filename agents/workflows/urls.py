from __future__ import annotations

from django.urls import path

from . import run_views, views

app_name = "workflows"

urlpatterns = [
    path("", views.run_list, name="index"),
    path("start/", views.start, name="start"),
    path("bulk/", views.bulk_action, name="bulk"),
    path("definitions/", views.definition_list, name="definitions"),
    path("definitions/<slug:name>/", views.definition_detail, name="definition"),
    path("<int:pk>/", run_views.run_detail, name="run"),
    path("<int:pk>/retry/preview/", run_views.retry_preview, name="retry-preview"),
    path("<int:pk>/rollback/preview/", run_views.rollback_preview, name="rollback-preview"),
    path("<int:pk>/steps/<slug:step_id>/mark/", run_views.mark_dialog, name="mark-dialog"),
    path("<int:pk>/<slug:action>/", run_views.control, name="control"),
]
