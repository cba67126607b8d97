"""The Issue Detective's page actions (htmx posts from the customer overview's panel): diagnose,
say whether the top cause was right, apply a fix; and one diagnosis on a page of its own. Each
reads the form, calls one service and answers the diagnosis fragment (with a toast); without
htmx it redirects to the diagnosis's page."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from helpdesk.customers import get_customer, require_viewer
from helpdesk.detective import panel, services
from helpdesk.models import Diagnosis
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial

FRAGMENT = "helpdesk/detective/_diagnosis.html"


def _actor(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)
    return actor


def _back_to_customer(key: str = "", **kwargs) -> str:
    return reverse("helpdesk:customer", args=[key]) if key else "/helpdesk/"


def _back_to_diagnosis(pk: int = 0, **kwargs) -> str:
    return reverse("helpdesk:diagnosis", args=[pk]) if pk else "/helpdesk/"


def _context(actor: Actor, diagnosis: Diagnosis) -> dict:
    return {
        "customer": diagnosis.customer,
        "can_operate": actor.has(roles.OPERATE),
        **panel.diagnosis_context(diagnosis),
    }


def _answer(
    request: HttpRequest, actor: Actor, diagnosis: Diagnosis, said: str, level: str = "success"
) -> HttpResponse:
    if not htmx_partial(request):
        (messages.success if level == "success" else messages.error)(request, said)
        return redirect("helpdesk:diagnosis", diagnosis.pk)
    html = render_to_string(FRAGMENT, _context(actor, diagnosis), request)
    html += render_to_string("portal/toast.html", {"toast": said, "toast_level": level}, request)
    return HttpResponse(html)


@require_POST
@answers_refusals(_back_to_customer)
def diagnose(request: HttpRequest, key: str) -> HttpResponse:
    actor = _actor(request)
    customer = get_customer(key)
    diagnosis = services.diagnose(
        actor, customer, request.POST.get("symptom", ""), request.POST.get("category", "")
    )
    if diagnosis.causes:
        top = diagnosis.causes[0]
        said = f"Most likely: {top['title']} ({round(top['confidence'] * 100)} %)."
    else:
        said = "No cause found in the signals; see the figures looked at."
    return _answer(request, actor, diagnosis, said)


@require_GET
@answers_refusals("/helpdesk/")
def diagnosis(request: HttpRequest, pk: int) -> HttpResponse:
    actor = _actor(request)
    found = services.get_diagnosis(actor, pk)
    context = _context(actor, found)
    if htmx_partial(request):
        return render(request, FRAGMENT, context)
    return render(request, "helpdesk/detective/diagnosis.html", context)


@require_POST
@answers_refusals(_back_to_diagnosis)
def verdict(request: HttpRequest, pk: int) -> HttpResponse:
    actor = _actor(request)
    found = services.get_diagnosis(actor, pk)
    found = services.record_verdict(
        actor, found, request.POST.get("verdict", ""), request.POST.get("actual_cause", "")
    )
    said = "Thanks: marked right." if found.verdict == "right" else "Thanks: marked wrong."
    return _answer(request, actor, found, said)


@require_POST
@answers_refusals(_back_to_diagnosis)
def apply(request: HttpRequest, pk: int) -> HttpResponse:
    actor = _actor(request)
    found = services.get_diagnosis(actor, pk)
    found, result = services.apply_fix(actor, found, request.POST.get("index", ""))
    return _answer(request, actor, found, result.message, "success" if result.ok else "error")
