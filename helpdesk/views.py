"""The Help Desk pages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from helpdesk import customers
from portal.actors import Actor


def index(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    customers.require_viewer(actor)
    return render(request, "helpdesk/index.html", {"section": "helpdesk"})
