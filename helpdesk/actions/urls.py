"""The actions pages, under /helpdesk/ (included by ``helpdesk.urls``)."""

from __future__ import annotations

from django.urls import path

from helpdesk.actions import views

urlpatterns = [
    path("customers/<slug:key>/actions/", views.actions_panel, name="action-panel"),
    path("customers/<slug:key>/actions/<slug:action>/", views.take_action, name="action"),
]
