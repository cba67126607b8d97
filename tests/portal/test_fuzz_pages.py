"""Fuzzing the pages and their forms with hostile values: no answer is a 5xx (issue 13, item 5).

The API has its own fuzz test driven by the OpenAPI document; pages have no such document, so
this one lists every page with the query parameters its views read, and the forms that change
something with the fields they read, and sends hypothesis' hostile values (NUL characters, huge
and negative numbers, impossible dates, long text) in each, htmx and plain, as an Operator.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import services
from agents.models import Agent, State
from observability import alerts
from observability.models import Alert
from portal.actors import Actor
from tests.portal.test_fuzz_api import HOSTILE

# Every page, with the query parameters its view reads (grep request.GET in the views).
PAGES = {
    "/": ["agent"],
    "/agents/": ["q", "state", "tier", "health", "view", "page", "agent"],
    "/agents/wow-cache/": ["agent", "next"],
    "/agents/wow-cache/card/": ["view"],
    "/agents/wow-cache/history/": ["action", "actor_kind", "since", "until", "format", "page"],
    "/agents/wow-cache/errors/": ["status", "class", "since"],
    "/agents/errors/": ["status", "class", "agent", "signature", "since", "page", "q"],
    "/agents/bulk/": ["status", "page", "op"],
    "/agents/bulk/preview/": ["action", "agents", "state", "tier", "parallelism"],
    "/agents/wow-cache/actions/stop/": ["next", "from"],
    "/logs/": ["agent", "q", "level", "since", "until", "range", "from", "before", "day"],
    "/logs/download/": ["agent", "q", "level", "since", "until", "format"],
    "/events/": ["agent", "kind", "since", "until", "range", "before"],
    "/alerts/": ["agent", "status", "severity", "page"],
    "/alerts/{alert}/": ["next"],
    "/metrics/": ["agent", "metric", "range", "from", "until"],
}
# Every form that changes something, with the fields its view reads. The agent is DRAFT and no
# worker runs here, so whatever is accepted is only recorded, never carried out.
FORMS = {
    "/agents/wow-cache/actions/stop/run/": ["reason", "confirm", "confirm_name", "from", "next"],
    "/agents/wow-cache/actions/provision/run/": ["reason", "with_dependencies", "from", "next"],
    "/agents/bulk/run/": ["action", "agents", "state", "tier", "parallelism", "confirm", "reason"],
    "/agents/errors/automatic/": ["automatic", "next"],
    "/context/": ["agent", "next"],
    "/alerts/{alert}/silence/": ["minutes", "note", "next"],
    "/alerts/{alert}/acknowledge/": ["note", "next"],
}

FUZZ = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def fleet(db, tmp_path, settings) -> dict[str, int]:
    """The seeded registry with one open alert (WowCache ERRORED); returns the path values."""
    settings.AGENT_ROOT = tmp_path
    services.seed_platform_agents(Actor.command("test"))
    alerts.ensure_default_rules(Actor.command("test"))
    Agent.objects.filter(slug="wow-cache").update(state=State.ERRORED)
    alerts.evaluate()
    return {"alert": Alert.objects.get(agent__slug="wow-cache").pk}


def test_the_fuzzed_pages_and_forms_exist(as_operator, fleet) -> None:
    """Proof the fuzzing reaches the views, not a missing route."""
    for path in PAGES:
        assert as_operator.get(path.format(**fleet)).status_code in (200, 302), path
    for path in FORMS:
        assert as_operator.post(path.format(**fleet)).status_code not in (404, 405), path


@FUZZ
@given(data=st.data())
def test_no_page_answers_5xx_to_hostile_query_parameters(as_operator, fleet, data) -> None:
    for path, names in PAGES.items():
        query = {name: data.draw(HOSTILE) for name in names if data.draw(st.booleans())}
        headers = {"HX-Request": "true"} if data.draw(st.booleans()) else {}
        response = as_operator.get(path.format(**fleet), query, headers=headers)
        assert response.status_code < 500, (path, query, response.content[:300])


@FUZZ
@given(data=st.data())
def test_no_form_answers_5xx_to_hostile_fields(as_operator, fleet, data) -> None:
    for path, names in FORMS.items():
        fields = {name: data.draw(HOSTILE) for name in names if data.draw(st.booleans())}
        headers = {"HX-Request": "true"} if data.draw(st.booleans()) else {}
        response = as_operator.post(path.format(**fleet), fields, headers=headers)
        assert response.status_code < 500, (path, fields, response.content[:300])


@FUZZ
@given(slug=HOSTILE, action=HOSTILE)
def test_no_page_answers_5xx_to_hostile_path_parts(as_operator, fleet, slug, action) -> None:
    from urllib.parse import quote

    slug, action = quote(slug or "x", safe=""), quote(action or "x", safe="")
    for path in (
        f"/agents/{slug}/",
        f"/agents/{slug}/history/",
        f"/agents/{slug}/actions/{action}/",
        f"/alerts/{slug}/",
        f"/{slug}/",
    ):
        response = as_operator.get(path)
        assert response.status_code < 500, (path, response.content[:300])
    response = as_operator.post(f"/agents/{slug}/actions/{action}/run/", {"reason": "x"})
    assert response.status_code < 500
    response = as_operator.post(f"/agents/wow-cache/undo/{slug}/")
    assert response.status_code < 500
