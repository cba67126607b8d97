from __future__ import annotations

from django.urls import path

from agents import views

app_name = "agents"

urlpatterns = [
    path("", views.agent_list, name="list"),
    path("<slug:slug>/", views.agent_detail, name="detail"),
    path("<slug:slug>/card/", views.agent_card, name="card"),
    path("<slug:slug>/history/", views.agent_history, name="history"),
    path("<slug:slug>/reconcile/", views.reconcile, name="reconcile"),
    path("<slug:slug>/actions/<str:action>/", views.action_confirm, name="confirm"),
    path("<slug:slug>/actions/<str:action>/run/", views.take_action, name="act"),
]
