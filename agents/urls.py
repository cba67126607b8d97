from __future__ import annotations

from django.urls import path

from agents.probes import urls as probe_urls
from agents.views import bulk as bulk_views
from agents.views import config as config_views
from agents.views import detail, fleet
from agents.views import errors as error_views

app_name = "agents"

urlpatterns = [
    path("", fleet.agent_list, name="list"),
    # Before "<slug>/": "bulk" and "errors" are not agents.
    path("bulk/", bulk_views.bulk_list, name="bulk-list"),
    path("bulk/preview/", bulk_views.bulk_preview, name="bulk-preview"),
    path("bulk/run/", bulk_views.bulk_run, name="bulk-run"),
    path("bulk/<int:pk>/", bulk_views.bulk_detail, name="bulk-detail"),
    path("bulk/<int:pk>/cancel/", bulk_views.bulk_cancel, name="bulk-cancel"),
    path("bulk/<int:pk>/retry/", bulk_views.bulk_retry, name="bulk-retry"),
    path("bulk/<int:pk>/rollback/", bulk_views.bulk_rollback, name="bulk-rollback"),
    path("errors/", error_views.error_list, name="errors"),
    path("errors/automatic/", error_views.set_automatic, name="errors-automatic"),
    path("errors/<int:pk>/", error_views.error_detail, name="error"),
    path("errors/<int:pk>/recover/", error_views.recover, name="error-recover"),
    path("errors/<int:pk>/ignore/", error_views.ignore, name="error-ignore"),
    path("<slug:slug>/", detail.agent_detail, name="detail"),
    path("<slug:slug>/card/", fleet.agent_card, name="card"),
    path("<slug:slug>/history/", detail.agent_history, name="history"),
    path("<slug:slug>/errors/", error_views.agent_errors, name="agent-errors"),
    path("<slug:slug>/reconcile/", detail.reconcile, name="reconcile"),
    path("<slug:slug>/config/", config_views.patch, name="config-patch"),
    path("<slug:slug>/config/rollback/", config_views.roll_back, name="config-rollback"),
    path("<slug:slug>/actions/<str:action>/", detail.action_confirm, name="confirm"),
    path("<slug:slug>/actions/<str:action>/run/", detail.take_action, name="act"),
    path("<slug:slug>/undo/<uuid:operation_id>/", detail.undo_action, name="undo"),
    *probe_urls.urlpatterns,
]
