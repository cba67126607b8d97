"""The tickets pages, under /helpdesk/ (included by ``helpdesk.urls``)."""

from __future__ import annotations

from django.urls import path

from helpdesk.tickets import views

urlpatterns = [
    path("customers/<slug:key>/tickets/", views.tickets_panel, name="ticket-panel"),
    path("customers/<slug:key>/tickets/create/", views.create, name="ticket-create"),
    path(
        "customers/<slug:key>/tickets/from-diagnosis/<int:diagnosis_id>/",
        views.create_from_diagnosis,
        name="ticket-from-diagnosis",
    ),
    path("customers/<slug:key>/tickets/link/", views.link, name="ticket-link"),
    path(
        "customers/<slug:key>/tickets/<int:ticket_id>/update/",
        views.update,
        name="ticket-update",
    ),
    path(
        "customers/<slug:key>/tickets/<int:ticket_id>/resolve/",
        views.resolve,
        name="ticket-resolve",
    ),
]
