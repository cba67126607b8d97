"""The live WebSocket: who may connect, what they may subscribe to, and the fragments they get
when agents change, published only after the change commits."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client

from agents import events, services
from agents.models import Agent
from portal import realtime
from portal.actors import Actor
from portal.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGIN = (b"origin", b"http://127.0.0.1")


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def connect(user=None, origin=ORIGIN) -> tuple[WebsocketCommunicator, bool, int | None]:
    headers = [origin] if origin else []
    if user is not None:
        headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


async def next_html(
    communicator: WebsocketCommunicator, *containing: str, timeout: float = 3
) -> str:
    """The next message that contains all of ``containing`` (heartbeats and others are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"no message containing {containing!r} within {timeout} s")
        message = await communicator.receive_from(timeout=remaining)
        if all(text in message for text in containing):
            return message


@sync_to_async
def seed() -> None:
    services.seed_platform_agents(Actor.command("test"))


@sync_to_async
def provision_as(user, slug: str = "wow-cache"):
    agent = Agent.objects.get(slug=slug)
    operation = services.request_action(
        agent, "provision", Actor(kind="user", user=user), enqueue=False
    )
    return services.run_operation(str(operation.pk))


async def test_anonymous_socket_is_refused() -> None:
    communicator, connected, code = await connect(user=None)
    assert not connected and code == 4401


async def test_foreign_origin_is_refused(viewer) -> None:
    communicator, connected, _ = await connect(viewer, origin=(b"origin", b"http://evil.example"))
    assert not connected


async def test_missing_origin_is_refused(viewer) -> None:
    communicator, connected, _ = await connect(viewer, origin=None)
    assert not connected


async def test_user_without_role_is_refused(outsider) -> None:
    communicator, connected, code = await connect(outsider)
    assert not connected and code == 4403


async def test_fleet_pages_get_the_card_row_and_counts_per_role(viewer, operator) -> None:
    await seed()
    as_viewer, ok_viewer, _ = await connect(viewer)
    as_operator, ok_operator, _ = await connect(operator)
    assert ok_viewer and ok_operator
    for communicator in (as_viewer, as_operator):
        await communicator.send_json_to({"subscribe": ["card:wow-cache", "fleet-counts"]})
    await asyncio.sleep(0.2)

    await provision_as(operator)

    await next_html(as_viewer, 'id="fleet-counts"')
    viewer_html = await next_html(as_viewer, 'id="agent-wow-cache"', "PROVISIONED")
    assert "Actions" not in viewer_html, "a Viewer's card has no actions menu"
    operator_html = await next_html(as_operator, 'id="agent-wow-cache"', "PROVISIONED")
    assert "Actions" in operator_html and "Deploy" in operator_html
    await as_viewer.disconnect()
    await as_operator.disconnect()


async def test_table_pages_subscribe_to_rows(viewer, operator) -> None:
    await seed()
    communicator, connected, _ = await connect(viewer)
    await communicator.send_json_to({"subscribe": ["row:wow-cache"]})
    await asyncio.sleep(0.2)
    await provision_as(operator)
    html = await next_html(communicator, 'id="agent-row-wow-cache"', "PROVISIONED")
    assert html.startswith("\n<tr") or "<tr" in html
    await communicator.disconnect()


async def test_detail_page_subscription_gets_the_status_block(viewer, operator) -> None:
    await seed()
    communicator, connected, _ = await connect(viewer)
    assert connected
    await communicator.send_json_to(
        {"subscribe": ["agent:wow-cache", "agent:no-such-agent", "bogus", 42]}
    )
    await asyncio.sleep(0.2)
    await provision_as(operator)
    html = await next_html(communicator, 'id="agent-status"', "PROVISIONED")
    assert "DRAFT → <strong>PROVISIONED</strong>" in html
    await communicator.disconnect()


async def test_only_the_person_who_acted_gets_the_toast(viewer, operator) -> None:
    await seed()
    as_operator, _, _ = await connect(operator)
    as_viewer, _, _ = await connect(viewer)
    await as_viewer.send_json_to({"subscribe": ["card:wow-cache"]})
    await asyncio.sleep(0.2)
    await provision_as(operator)
    toast = await next_html(as_operator, "toast-success")
    assert "Provision WowCache: done" in toast
    # The viewer gets the card but never the operator's toast.
    await next_html(as_viewer, 'id="agent-wow-cache"')
    await asyncio.sleep(0.4)
    while not await as_viewer.receive_nothing(timeout=0.3):
        assert "toast" not in await as_viewer.receive_from()
    await as_operator.disconnect()
    await as_viewer.disconnect()


async def test_a_rolled_back_change_publishes_nothing(viewer) -> None:
    await seed()
    communicator, connected, _ = await connect(viewer)
    assert connected
    await communicator.send_json_to({"subscribe": ["card:wow-cache"]})
    await asyncio.sleep(0.2)

    @sync_to_async
    def emit_then_roll_back() -> None:
        agent = Agent.objects.get(slug="wow-cache")
        try:
            with transaction.atomic():
                events.emit("registry", agent)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass

    await emit_then_roll_back()
    await asyncio.sleep(0.5)
    while not await communicator.receive_nothing(timeout=0.3):
        assert 'id="agent-wow-cache"' not in await communicator.receive_from()
    await communicator.disconnect()


async def test_bursts_are_batched_per_group(viewer) -> None:
    await seed()
    communicator, connected, _ = await connect(viewer)
    assert connected
    group = realtime.fleet_group(realtime.ACCESS_VIEW)
    for n in range(20):
        realtime.publish(group, {"burst": f'<div id="burst">{n}</div>'})
    await asyncio.sleep(0.6)
    messages = []
    while not await communicator.receive_nothing(timeout=0.2):
        message = await communicator.receive_from()
        if 'id="burst"' in message:
            messages.append(message)
    assert 1 <= len(messages) <= 3, messages
    assert messages[-1] == '<div id="burst">19</div>', "the newest fragment wins"
    await communicator.disconnect()


async def test_a_dependency_page_hears_about_its_dependents(viewer, operator) -> None:
    await seed()
    communicator, connected, _ = await connect(viewer)
    await communicator.send_json_to({"subscribe": ["agent:wow-cache"]})
    await asyncio.sleep(0.2)
    await provision_as(operator, "wow-memory")
    html = await next_html(communicator, 'id="agent-deps"', "state-provisioned")
    assert "WowMemory" in html
    await communicator.disconnect()


async def test_a_page_is_sent_only_what_it_shows(viewer, operator) -> None:
    """Issue 13, item 10: the frame alone (every page) gets no cards, counts, graph nodes or
    error panels; a card subscription gets that card only, until it is given up."""
    await seed()
    frame_only, _, _ = await connect(viewer)
    one_card, _, _ = await connect(viewer)
    await one_card.send_json_to({"subscribe": ["card:wow-cache", "card:no-such-agent", 7]})
    await asyncio.sleep(0.2)

    await provision_as(operator, "wow-event")
    await provision_as(operator, "wow-cache")
    await next_html(one_card, 'id="agent-wow-cache"', "PROVISIONED")
    await asyncio.sleep(0.5)
    for communicator in (frame_only, one_card):
        while not await communicator.receive_nothing(timeout=0.3):
            message = await communicator.receive_from()
            for element in (
                'id="agent-wow-event"',
                'id="fleet-counts"',
                'id="dependencies-data"',  # the dependency graph's data
                "errors-beat",
            ):
                assert element not in message, (element, message[:200])
            if communicator is frame_only:
                assert 'id="agent-wow-cache"' not in message

    await one_card.send_json_to({"unsubscribe": ["card:wow-cache"]})
    await asyncio.sleep(0.2)

    @sync_to_async
    def deploy_cache() -> None:
        agent = Agent.objects.get(slug="wow-cache")
        operation = services.request_action(
            agent, "deploy", Actor(kind="user", user=operator), enqueue=False
        )
        services.run_operation(str(operation.pk))

    await deploy_cache()
    await asyncio.sleep(0.6)
    while not await one_card.receive_nothing(timeout=0.3):
        assert 'id="agent-wow-cache"' not in await one_card.receive_from()
    await frame_only.disconnect()
    await one_card.disconnect()


async def test_named_topics_reach_their_elements(viewer, operator) -> None:
    await seed()
    page, _, _ = await connect(viewer)
    await page.send_json_to({"subscribe": ["fleet-counts", "graph"]})
    await asyncio.sleep(0.2)
    await provision_as(operator)
    await next_html(page, 'id="fleet-counts"')
    await next_html(
        page,
        'id="dependencies-data"',
        '"id":"wow-cache","label":"WowCache","sublabel":"PROVISIONED"',
    )
    await page.disconnect()
