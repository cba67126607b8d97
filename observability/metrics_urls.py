from __future__ import annotations

from django.urls import path

from observability import metrics_views

app_name = "metrics"

urlpatterns = [
    path("", metrics_views.metrics_page, name="index"),
    path("sparklines/", metrics_views.card_sparklines_refresh, name="sparklines"),
]
