"""A page that changes while it loads: rendered, then its socket subscribes, and a change made in
between reached nobody. The page's first subscription says when its request began (``since``);
what changed since is pushed again, or the page is told to fetch its live regions itself."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from tests.portal.test_realtime import connect, next_html, provision_as, seed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@sync_to_async
def render_since(user, path: str = "/agents/") -> float:
    """A page rendered as a browser gets it; answers its ``data-live-since``."""
    client = Client()
    client.force_login(user)
    html = client.get(path).content.decode()
    return float(re.search(r'data-live-since="([0-9.]+)"', html).group(1))


async def quiet(communicator, timeout: float = 1.0) -> list[str]:
    """The messages that arrive within ``timeout``, heartbeats left out. (Waiting with
    ``receive_nothing``: a ``receive_from`` that times out cancels the application.)"""
    messages = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await communicator.receive_nothing(timeout=0.1):
            continue
        message = await communicator.receive_from()
        if 'id="live-beat"' not in message:
            messages.append(message)
    return messages


async def test_a_card_that_changed_while_the_page_loaded_is_pushed_on_subscribing(
    viewer, operator
) -> None:
    await seed()
    since = await render_since(viewer)
    before = time.time()
    await provision_as(operator)  # nobody watches WowCache's card yet: pushed to no one

    communicator, connected, _ = await connect(viewer)
    assert connected and since <= before
    await communicator.send_json_to({"subscribe": ["card:wow-cache", "card:wow-event"],
                                     "since": since})  # fmt: skip
    html = await next_html(communicator, 'id="agent-wow-cache"', "PROVISIONED")
    assert 'id="agent-wow-event"' not in html  # unchanged: not sent again
    assert not any("agent-wow-event" in m for m in await quiet(communicator, 0.5))
    await communicator.disconnect()


async def test_a_page_rendered_after_the_change_is_sent_nothing_again(viewer, operator) -> None:
    await seed()
    await provision_as(operator)
    since = await render_since(viewer)  # already shows PROVISIONED

    communicator, _, _ = await connect(viewer)
    await communicator.send_json_to({"subscribe": ["card:wow-cache"], "since": since})
    assert await quiet(communicator) == []
    await communicator.disconnect()


async def test_a_topic_that_cannot_be_pushed_again_makes_the_page_fetch_its_regions(
    viewer, operator
) -> None:
    from agents import live

    await seed()
    since = await render_since(viewer, "/")
    await provision_as(operator)  # marks the fleet counts and the errors overview changed
    await sync_to_async(live.realtime.watched)([live.realtime.topic_group(live.ERRORS_OVERVIEW)])

    communicator, _, _ = await connect(viewer)
    await communicator.send_json_to(
        {"subscribe": ["fleet-counts", "errors-overview"], "since": since}
    )
    messages = await quiet(communicator, 1.5)
    assert any('id="fleet-counts"' in m for m in messages), messages  # pushed again
    assert any('id="live-resync"' in m for m in messages), messages  # no hook: fetch it
    await communicator.disconnect()


async def test_only_the_first_subscription_looks_back_and_a_bad_since_is_ignored(
    viewer, operator
) -> None:
    await seed()
    await provision_as(operator)
    long_ago = time.time() - 3600  # older than the changes remembered: everything is resent

    for since in ("yesterday", True, float("nan"), 1e300, -5, None):
        communicator, _, _ = await connect(viewer)
        await communicator.send_to(text_data='{"subscribe": ["card:wow-cache"], "since": %s}'
                                % ('"yesterday"' if since == "yesterday" else
                                   "true" if since is True else "NaN" if since != since else
                                   "null" if since is None else repr(since)))  # fmt: skip
        assert await quiet(communicator, 0.5) == [], since
        await communicator.disconnect()

    communicator, _, _ = await connect(viewer)
    await communicator.send_json_to({"subscribe": ["card:wow-cache"], "since": long_ago})
    await next_html(communicator, 'id="agent-wow-cache"', "PROVISIONED")
    await communicator.send_json_to({"subscribe": ["card:wow-memory"], "since": long_ago})
    assert await quiet(communicator, 0.5) == []  # the first subscription only
    await communicator.disconnect()
