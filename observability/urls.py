from __future__ import annotations

from django.urls import path

from observability import views

app_name = "observability"

urlpatterns = [
    path("context/", views.choose_context, name="choose"),
    path("logs/", views.log_list, name="logs"),
    path("logs/download/", views.log_download, name="logs-download"),
    path("events/", views.event_list, name="events"),
    path("alerts/", views.alert_list, name="alerts"),
    path("alerts/<int:pk>/", views.alert_detail, name="alert"),
    path("alerts/<int:pk>/<str:verb>/", views.alert_action, name="alert-action"),
]
