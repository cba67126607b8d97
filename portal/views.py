"""Views of the portal shell: sign-in, the dashboard, placeholders for sections to come, health."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers
from django.views.defaults import page_not_found

from portal import extensions, health
from portal.actors import Actor
from portal.forms import LoginForm
from portal.htmx import htmx_partial
from portal.navigation import SECTIONS_BY_SLUG


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


@login_not_required
@require_GET
def login_refused(request: HttpRequest) -> HttpResponse:
    """Where a refused Google sign-in lands, with the reason social-auth gave."""
    reasons = [str(message) for message in messages.get_messages(request)]
    return render(request, "portal/login_refused.html", {"reasons": reasons}, status=403)


@require_GET
@vary_on_headers("HX-Request")
def dashboard(request: HttpRequest) -> HttpResponse:
    """The fleet at a glance or, with an agent chosen as the context, that agent at a glance.
    htmx polls get the region that asked (its element id is the HX-Target)."""
    actor = Actor.from_request(request)
    partial = htmx_partial(request)
    focus = extensions.dashboard_focus(request, actor, remember=not partial)
    if focus.redirect_to:
        return redirect(focus.redirect_to)
    region = extensions.dashboard_region(request.htmx.target) if partial else None
    if region is not None:
        template, context_of = region
        return render(request, template, context_of())
    if focus.agent is not None:
        if partial:
            return render(
                request,
                "portal/dashboard.html#agent-focus",
                {
                    "focus_agent": focus.agent,
                    **extensions.dashboard_context(request, focus.agent, focus_refresh=True),
                },
            )
        context = {
            "focus_agent": focus.agent,
            **extensions.dashboard_context(request, focus.agent),
        }
    else:
        context = extensions.dashboard_context(request)
        if partial:
            # The fleet region polling while the live socket is down, or resyncing after it.
            return render(request, "portal/dashboard.html#fleet", context)
    context["focus_problem"] = focus.problem
    return render(request, "portal/dashboard.html", {"status": health.system_status(), **context})


@require_GET
def section(request: HttpRequest, slug: str) -> HttpResponse:
    """A section of the sidebar that a later release builds."""
    found = SECTIONS_BY_SLUG.get(slug)
    if found is None or found.url_name != "section":
        raise Http404(f"There is no section {slug!r}.")
    return render(request, "portal/section.html", {"section": found, "active_section": slug})


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness of the portal and its two stores; 503 when either is unreachable."""
    checks = health.check_dependencies()
    healthy = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404s: under /api/ a JSON answer naming the method and path (an API client cannot read the
    page), everywhere else the page."""
    if request.path.startswith("/api/"):
        path = request.path[:200]
        return JsonResponse(
            {
                "detail": f"There is no endpoint {request.method} {path}; "
                "the endpoints are listed at /api/docs.",
                "code": "not_found",
            },
            status=404,
        )
    return page_not_found(request, exception)
