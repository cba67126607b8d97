"""Each page subscribes to what it shows, and no push targets an element the page lacks (issue 13,
item 10: before, cards, graph nodes and counters went to every page, and the browser logged about
790 ``htmx:oobErrorNoTarget`` in one walk).

For every page of the sidebar and the pages they lead to, the test renders the page, subscribes a
real socket to the topics the page declares (the frame's ``data-live-topics`` and every
``data-live-subscribe``, as static/js/portal.js does), makes changes of every kind that pushes,
and checks each pushed fragment's out-of-band target against the page's element ids. The browser
walk (tests/browser/test_console_clean.py) checks the same in Chromium.
"""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.test import Client
from django.utils import timezone

from agents import bulk, errors, events, services
from agents.models import Agent, BulkOperation
from observability import alerts
from observability import live as log_live
from observability.models import Alert, LogEntry
from portal import realtime
from portal.actors import Actor
from portal.navigation import SECTIONS
from tests.portal.test_realtime import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest_asyncio.fixture(autouse=True)
async def _close_the_worker_threads_connection():
    """The ORM calls here run in asgiref's worker thread; its connection would otherwise keep
    the test database open at teardown."""
    yield
    await sync_to_async(connections.close_all)()


COMMAND = Actor.command("test")
ROTATION = ["wow-cache", "wow-event", "wow-memory", "wow-security"]  # the agents that change
_VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class _Page(HTMLParser):
    """The element ids of a page and the topics it declares."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.topics: set[str] = set()
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        self.topics.update((attributes.get("data-live-topics") or "").split())
        if attributes.get("data-live-subscribe"):
            self.topics.add(attributes["data-live-subscribe"])


class _Push(HTMLParser):
    """What one pushed message swaps: the ``#id`` each top-level element targets (as the htmx
    ws extension swaps them: out of band, by the element's id unless hx-swap-oob names a
    selector), and every id it brings into the page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.depth = 0
        self.targets: list[str] = []
        self.ids: set[str] = set()
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        if self.depth == 0:
            swap = attributes.get("hx-swap-oob") or "true"
            selector = swap.partition(":")[2] if ":" in swap else f"#{attributes.get('id', '')}"
            self.targets.append(selector)
        if tag not in _VOID:
            self.depth += 1

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        depth, self.depth = self.depth, self.depth + 1  # counted as opened and closed
        self.handle_starttag(tag, attrs)
        self.depth = depth

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID:
            self.depth -= 1


@sync_to_async
def _set_up_fleet() -> dict[str, int]:
    """The 14 agents, the default alert rules, and one of each thing a page can be about."""
    services.seed_platform_agents(COMMAND)
    alerts.ensure_default_rules(COMMAND)
    operation = bulk.create_bulk_operation(
        "deploy", COMMAND, targets=["wow-search", "wow-support"], enqueue=False
    )
    with transaction.atomic():
        errors.record_error(Agent.objects.get(slug="wow-scaling"), "test", "it fell over")
    Agent.objects.filter(slug="wow-analytics").update(state="ERRORED")
    alerts.evaluate()
    return {
        "bulk": operation.pk,
        "alert": Alert.objects.order_by("-pk").values_list("pk", flat=True)[0],
    }


def _pages(ids: dict[str, int]) -> list[str]:
    return [
        *(section.href for section in SECTIONS),
        "/agents/?view=table",
        "/agents/?state=DRAFT",
        "/agents/?q=cache",
        "/?agent=wow-cache",
        "/agents/wow-cache/",
        "/agents/wow-cache/history/",
        "/agents/wow-scaling/",  # an agent with an open error
        "/agents/bulk/",
        f"/agents/bulk/{ids['bulk']}/",
        f"/alerts/{ids['alert']}/",
        "/logs/?agent=wow-cache",
    ]


@sync_to_async
def _render(user, path: str) -> _Page:
    client = Client()
    client.force_login(user)
    response = client.get(path, follow=True)  # an alert's page is the filtered list
    assert response.status_code == 200, (path, response.status_code)
    return _Page(response.content.decode())


def push_everything(number: int, bulk_id: int) -> None:
    """A change of every kind that pushes, as the worker, the monitor and beat make them: a
    transition (cards, rows, counts, graph nodes, detail blocks, dependency lists, the switcher,
    toasts), a health change, an error opened, an alert firing or resolving (toasts, the badge,
    the beats), a bulk operation's progress, and new log lines."""
    slug = ROTATION[number % len(ROTATION)]
    agent = Agent.objects.get(slug=slug)
    step = {"DRAFT": "provision", "PROVISIONED": "deploy"}.get(agent.state)
    if step:
        operation = services.request_action(agent, step, COMMAND, enqueue=False)
        services.run_operation(str(operation.pk))
    events.emit("health", Agent.objects.get(slug=slug))
    with transaction.atomic():
        errors.record_error(Agent.objects.get(slug=slug), "test", f"failure {number}")
    Agent.objects.filter(slug="wow-analytics").update(state="DRAFT" if number % 2 else "ERRORED")
    alerts.evaluate()
    events.emit_bulk("progress", bulk_id)
    item = BulkOperation.objects.get(pk=bulk_id).items.first()
    events.emit_bulk("item", bulk_id, item.pk)
    cache = Agent.objects.get(slug="wow-cache")
    line = LogEntry.objects.create(agent=cache, ts=timezone.now(), message=f"line {number}")
    line.agent = cache
    log_live.publish_entries([line])
    # An agent made while pages are open (the factory's): no page has it yet.
    services.register_agent(
        services.NewAgent(slug=f"made-{number}", name=f"Made {number}"), COMMAND
    )
    realtime.publisher.flush()


async def _messages(socket) -> list[str]:
    received = []
    while not await socket.receive_nothing(timeout=0.3):
        received.append(await socket.receive_from())
    return received


async def test_no_push_targets_an_element_its_page_lacks(operator, monkeypatch) -> None:
    monkeypatch.setattr(realtime.publisher, "throttle", 0)  # each change its own message, at once
    ids = await _set_up_fleet()
    missing: dict[str, set[str]] = {}
    pushed_to: dict[str, int] = {}
    for number, path in enumerate(_pages(ids)):
        page = await _render(operator, path)
        socket, connected, _ = await connect(operator)
        assert connected
        if page.topics:
            await socket.send_json_to({"subscribe": sorted(page.topics)})
        await asyncio.sleep(0.2)  # the subscriptions are joined
        for push in range(2):
            await sync_to_async(push_everything)(number * 2 + push, ids["bulk"])
        swapped = 0
        for message in await _messages(socket):
            push = _Push(message)
            for target in push.targets:
                if target.removeprefix("#") not in page.ids:
                    missing.setdefault(path, set()).add(target)
                swapped += 1
            page.ids |= push.ids  # what a swap brought in can be the target of the next one
        pushed_to[path] = swapped
        await socket.disconnect()
    assert not missing, missing
    # Pushes did arrive: a page that shows agents got their updates, not just heartbeats.
    assert pushed_to["/agents/"] > 2 and pushed_to["/agents/wow-cache/"] > 2, pushed_to


async def test_pages_declare_what_they_show(operator) -> None:
    """Which topics each kind of page subscribes to (the frame's groups come with the socket)."""
    ids = await _set_up_fleet()

    switchers: list[set[str]] = []

    async def topics(path: str) -> set[str]:
        """The page's own topics; the header's switcher (every page's) is checked apart."""
        every = (await _render(operator, path)).topics
        switchers.append({t for t in every if t.startswith("ctx:")})
        return every - switchers[-1]

    # Before any agent's page makes it the user's agent context (then "/" is about that agent).
    assert {"graph", "errors-overview", "fleet-counts"} <= await topics("/")
    cards = await topics("/agents/")
    assert "fleet-counts" in cards and "card:wow-cache" in cards
    assert not any(topic.startswith(("row:", "graph", "agent:")) for topic in cards)
    table = await topics("/agents/?view=table")
    assert "row:wow-cache" in table and not any(t.startswith("card:") for t in table)
    filtered = await topics("/agents/?q=cache")
    assert "card:wow-cache" in filtered and "card:wow-event" not in filtered
    detail = await topics("/agents/wow-cache/")
    assert {"agent:wow-cache", "graph"} <= detail
    assert not any(topic.startswith("card:") for topic in detail)
    assert await topics("/agents/errors/") == {"errors-list"}
    assert "bulk-list" in await topics("/agents/bulk/")
    assert await topics(f"/agents/bulk/{ids['bulk']}/") == {f"bulk:{ids['bulk']}"}
    assert await topics("/logs/?agent=wow-cache") == {"logs:wow-cache"}
    for path in ("/alerts/", "/events/", "/metrics/"):
        assert await topics(path) == set(), path  # the frame's beats and badge only
    # The switcher in every page's header hears about the agents it lists, each by its own
    # topic (a large fleet's switcher lists a few of them).
    listed = {f"ctx:{slug}" for slug in await sync_to_async(_listed_slugs)()}
    assert len(listed) >= 14 and all(topics_ == listed for topics_ in switchers)


def _listed_slugs() -> list[str]:
    from agents.models import Agent, State

    return list(Agent.objects.exclude(state=State.REVOKED).values_list("slug", flat=True))
