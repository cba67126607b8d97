"""What the help desk's parts share to serve their panel on a customer's overview: the way back
to the customer's page, the panel's context, the panel alone for an htmx refresh, and the answer
to a post (the panel again with a toast, or a message and a redirect without htmx).

Each part passes its own template and ``panel_context(actor, customer, ...)``; the views stay
one hop from the service they call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse

from helpdesk.customers import require_viewer
from helpdesk.models import Customer
from portal import roles
from portal.actors import Actor
from portal.htmx import htmx_partial

PanelContext = Callable[..., dict]


def back(key: str = "", **kwargs: Any) -> str:
    """The customer's page (the help desk's front page without one): where a refusal without
    htmx goes back to (``answers_refusals(back)``)."""
    return reverse("helpdesk:customer", args=[key]) if key else "/helpdesk/"


def viewer(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)
    return actor


def context(actor: Actor, customer: Customer, provider: PanelContext, *extra: Any) -> dict:
    return {
        "customer": customer,
        "can_operate": actor.has(roles.OPERATE),
        **provider(actor, customer, *extra),
    }


def panel_alone(request: HttpRequest, template: str, values: dict, page: str = "") -> HttpResponse:
    """The panel for an htmx refresh; without htmx, ``page`` (a page of its own) or the
    customer's page."""
    if htmx_partial(request):
        response = render(request, template, values)
    elif page:
        response = render(request, page, values)
    else:
        return redirect(back(values["customer"].key))
    response["Vary"] = "HX-Request"
    return response


def answer(
    request: HttpRequest, template: str, values: dict, said: str, *, ok: bool = True
) -> HttpResponse:
    """After a post: the panel re-rendered with ``said`` as a toast (htmx), or the customer's
    page with ``said`` as a message."""
    if not htmx_partial(request):
        (messages.success if ok else messages.error)(request, said)
        return redirect(back(values["customer"].key))
    html = render_to_string(template, values, request)
    html += render_to_string(
        "portal/toast.html", {"toast": said, "toast_level": "success" if ok else "error"}, request
    )
    return HttpResponse(html)
