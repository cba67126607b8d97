"""The Probes panel on an agent's page: the probes in use, the monitor's latest view of each
replica, and (Operators) a form to change them or go back to the defaults."""

from __future__ import annotations

import shlex
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from agents.models import Agent
from agents.probes import schema, services
from agents.probes.schema import FIELDS, KINDS, PROBES
from agents.services import require_viewer
from agents.services.actions import may_operate
from agents.views.shared import get_agent_or_404
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial

PANEL = "agents/probes_panel.html"
PAGE = "agents/probes_page.html"  # the panel as a whole page, for a browser without htmx
TEXT_FIELDS = ("path", "status", "port", "command", *FIELDS["http"][3:])


def probes_detail_panel(agent: Agent, actor: Actor) -> str:
    """The panel on the agent's page (a detail panel through ``portal.extensions``)."""
    return render_to_string(PANEL, panel_context(agent, actor))


def panel_context(agent: Agent, actor: Actor, **more: Any) -> dict[str, Any]:
    shown = services.probes_of(agent)
    form = more.pop("form", None) or form_values(shown)
    bad_field = more.get("bad_field", "")
    for row in form:
        row["invalid"] = (
            bad_field.split(".", 1)[1] if bad_field.startswith(row["which"] + ".") else ""
        )
    return {
        "agent": agent,
        "probes": shown,
        "table": [
            {"which": which, "check": schema.describe(shown[which]), **shown[which]}
            for which in PROBES
        ],
        "rows": services.replica_status(agent),
        "can_change": may_operate(actor, agent),
        "form": form,
        "kinds": KINDS,
        **more,
    }


def form_values(shown: dict[str, Any]) -> list[dict[str, Any]]:
    """The form's fields as text, from the probes in use."""
    values = []
    for which in PROBES:
        probe = shown[which]
        text = {
            name: "" if probe.get(name) is None else str(probe.get(name)) for name in TEXT_FIELDS
        }
        text["path"] = probe.get("path") or schema.DEFAULT_PATHS[which]
        text["status"] = str(probe.get("status") or schema.DEFAULT_STATUS)
        text["command"] = shlex.join(probe.get("command") or [])
        timeout = probe["timeout_seconds"]
        text["timeout_seconds"] = f"{timeout:g}"
        values.append({"which": which, "kind": probe["kind"], **text})
    return values


def _submitted(request: HttpRequest) -> list[dict[str, Any]]:
    values = []
    for which in PROBES:
        row = {name: request.POST.get(f"{which}-{name}", "").strip() for name in TEXT_FIELDS}
        values.append({"which": which, "kind": request.POST.get(f"{which}-kind", "http"), **row})
    return values


def _document(values: list[dict[str, Any]]) -> dict[str, Any]:
    """The probes a submitted form asks for: the fields of each probe's kind (left empty: the
    default), the command split as a shell would (``sh -c 'test -f /tmp/ok'``)."""
    document: dict[str, Any] = {}
    for row in values:
        which, kind = row["which"], row["kind"]
        probe: dict[str, Any] = {"kind": kind}
        for name in FIELDS.get(kind, ("kind",))[1:]:
            text = row.get(name, "")
            if name == "command":
                try:
                    probe[name] = shlex.split(text)
                except ValueError as error:
                    raise services.ProbesRefused(
                        schema.InvalidProbes(
                            f"{which}.command", f"{which}.command cannot be read: {error}."
                        )
                    ) from None
            elif name == "port":
                probe[name] = text or None
            elif text:
                probe[name] = text
        document[which] = probe
    return document


def _detail_url(slug: str) -> str:
    return reverse("agents:detail", args=[slug]) + "#agent-probes"


@require_GET
def panel(request: HttpRequest, slug: str) -> HttpResponse:
    """The panel: alone for htmx, else as a page of its own."""
    actor = Actor.from_request(request)
    require_viewer(actor)
    agent = get_agent_or_404(slug)
    return render(request, _template(request), panel_context(agent, actor))


def _template(request: HttpRequest) -> str:
    return PANEL if htmx_partial(request) else PAGE


@require_POST
@answers_refusals(_detail_url)
def change(request: HttpRequest, slug: str) -> HttpResponse:
    """Save the form's probes (``reset``: back to the defaults). A value the portal cannot use
    is answered 400 with the panel naming it, the form as it was typed, nothing saved."""
    actor = Actor.from_request(request)
    agent = get_agent_or_404(slug)
    reset = bool(request.POST.get("reset"))
    values = _submitted(request)
    try:
        document = {} if reset else _document(values)
        agent = services.set_probes(agent, document, actor)
    except services.ProbesRefused as refused:
        context = panel_context(
            agent, actor, form=values, problem=refused.message, bad_field=refused.field, open=True
        )
        return render(request, _template(request), context, status=400)
    if not htmx_partial(request):
        messages.success(request, f"{agent.name}'s probes are saved.")
        return redirect(_detail_url(agent.slug))
    context = panel_context(agent, actor, saved="reset" if reset else "saved")
    return render(request, PANEL, context)
