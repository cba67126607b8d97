from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from ninja.openapi.views import openapi_view

from portal import prometheus, views
from portal.api import api

handler404 = views.not_found

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("login/refused/", views.login_refused, name="login_refused"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("-/metrics", prometheus.metrics_view, name="prometheus"),
    path("admin/", admin.site.urls),
    path("agents/", include("agents.urls")),
    path("api/platform/", api.urls),
    # Sign-in (and a role) required like every page: the middleware redirects anonymous users.
    path("api/docs", openapi_view, {"api": api}, name="api_docs"),
    path("", include("observability.urls")),  # /logs/, /events/, /alerts/, /context/
    path("metrics/", include("observability.metrics_urls")),
    path("queues/", include("observability.queue_urls")),
    path("workflows/", include("agents.workflows.urls")),
    path("factory/", include("factory.urls")),
    path("servicing/", include("servicing.urls")),
    path("helpdesk/", include("helpdesk.urls")),
    path("audit/", include("portal.audit.urls")),
    path("profile/", include("portal.profile.urls")),
    path("", include("social_django.urls", namespace="social")),
    path("<slug:slug>/", views.section, name="section"),
]
