from __future__ import annotations

from django.urls import path

from portal.audit import views

app_name = "audit"

urlpatterns = [
    path("", views.audit_log, name="index"),
    path("export.csv", views.audit_export, {"fmt": "csv"}, name="export_csv"),
    path("export.jsonl", views.audit_export, {"fmt": "jsonl"}, name="export_jsonl"),
    path("report/", views.compliance_report, name="report"),
]
