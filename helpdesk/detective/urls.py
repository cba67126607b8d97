"""The detective pages, under /helpdesk/ (included by ``helpdesk.urls``)."""

from __future__ import annotations

from django.urls import path

from helpdesk.detective import views

urlpatterns = [
    path("customers/<slug:key>/diagnose/", views.diagnose, name="diagnose"),
    path("diagnoses/<int:pk>/", views.diagnosis, name="diagnosis"),
    path("diagnoses/<int:pk>/verdict/", views.verdict, name="diagnosis-verdict"),
    path("diagnoses/<int:pk>/apply/", views.apply, name="diagnosis-apply"),
]
