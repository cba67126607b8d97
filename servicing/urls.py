from __future__ import annotations

from django.urls import path

from . import views

app_name = "servicing"

urlpatterns = [
    path("", views.index, name="index"),
    path("upgrade/", views.upgrade, name="upgrade-selected"),
    path("upgrades/<int:pk>/", views.upgrade_detail, name="upgrade"),
    path(
        "upgrades/<int:pk>/<str:action>/",
        views.command,
        name="command",
    ),
    path("agents/<slug:slug>/rollback/", views.rollback, name="rollback"),
    path("agents/<slug:slug>/scale/", views.scale, name="scale"),
]
