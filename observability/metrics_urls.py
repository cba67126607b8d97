from __future__ import annotations

from django.urls import path

from observability.views import metrics

app_name = "metrics"

urlpatterns = [
    path("", metrics.metrics_page, name="index"),
    path("sparklines/", metrics.card_sparklines_refresh, name="sparklines"),
]
