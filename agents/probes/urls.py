"""The Probes panel's addresses, part of the agents app's URLs (``agents:probes``...)."""

from __future__ import annotations

from django.urls import path

from agents.probes import views

urlpatterns = [
    path("<slug:slug>/probes/", views.panel, name="probes"),
    path("<slug:slug>/probes/change/", views.change, name="probes-change"),
]
