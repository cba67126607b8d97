from __future__ import annotations

from django.urls import path

from . import views

app_name = "factory"

urlpatterns = [
    path("", views.index, name="index"),
    path("drafts/", views.new_draft, name="new-draft"),
    path("drafts/<uuid:draft_id>/", views.draft_home, name="draft"),
    path("drafts/<uuid:draft_id>/field/", views.field, name="field"),
    path("drafts/<uuid:draft_id>/sandbox/run/", views.run_sandbox, name="run-sandbox"),
    path("drafts/<uuid:draft_id>/sandbox/region/", views.sandbox_region, name="sandbox-region"),
    path("drafts/<uuid:draft_id>/create-agent/", views.create, name="create"),
    path("drafts/<uuid:draft_id>/cancel/", views.cancel, name="cancel"),
    path("drafts/<uuid:draft_id>/retry/", views.retry, name="retry"),
    path("drafts/<uuid:draft_id>/monitor/", views.monitor, name="monitor"),
    path("drafts/<uuid:draft_id>/<slug:name>/", views.step, name="step"),
    path("sandboxes/<int:pk>/", views.sandbox_detail, name="sandbox"),
]
