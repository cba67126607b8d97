from __future__ import annotations

from django.urls import include, path

from . import views

app_name = "helpdesk"

urlpatterns = [
    path("", views.index, name="index"),
    path("customers/<str:key>/", views.customer, name="customer"),
    path("", include("helpdesk.tickets.urls")),
    path("", include("helpdesk.detective.urls")),
    path("", include("helpdesk.actions.urls")),
    path("", include("helpdesk.playbooks.urls")),
]
