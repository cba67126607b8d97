"""The playbooks pages, under /helpdesk/ (included by ``helpdesk.urls``)."""

from __future__ import annotations

from django.urls import path

from helpdesk.playbooks import views

urlpatterns = [
    path("customers/<slug:key>/playbooks/", views.playbooks_panel, name="playbook-panel"),
    path(
        "customers/<slug:key>/playbooks/<slug:slug>/dry-run/",
        views.dry_run,
        name="playbook-dry-run",
    ),
    path("customers/<slug:key>/playbooks/<slug:slug>/run/", views.run, name="playbook-run"),
]
