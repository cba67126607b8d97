"""The playbooks pages, under /helpdesk/ (included by ``helpdesk.urls``)."""

from __future__ import annotations

urlpatterns: list = []
