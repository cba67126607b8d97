from __future__ import annotations

from django.urls import path

from observability.views import alerts, events, logs, slo, switcher

app_name = "observability"

urlpatterns = [
    path("context/", switcher.choose_context, name="choose"),
    path("context/agents", switcher.switcher_options, name="switcher-options"),
    path("slo/<slug:slug>/", slo.set_slo, name="slo-set"),
    path("logs/", logs.log_list, name="logs"),
    path("logs/download/", logs.log_download, name="logs-download"),
    path("events/", events.event_list, name="events"),
    path("alerts/", alerts.alert_list, name="alerts"),
    path("alerts/<int:pk>/", alerts.alert_detail, name="alert"),
    path("alerts/<int:pk>/<str:verb>/", alerts.alert_action, name="alert-action"),
]
