"""The Queues pages as each role drives them: the list, a queue's page with its dead-letter
panel, the confirmation and the job it starts, the inspector with edit-then-retry, export,
claims, purge and thresholds; bad input answers 4xx and changes nothing."""

from __future__ import annotations

import json

import pytest

from agents.agentd import contract
from observability.queues import redrive
from observability.queues.models import QueueThreshold, RedriveJob
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db

CACHE = "agents:wow-cache:tasks"
PAGE = f"/queues/{CACHE}/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def letters(queue_redis):
    return queue_redis.xrange(contract.dead_letters("wow-cache"))


def test_the_list_shows_every_agent_queue_and_celery_with_health(
    seeded, queue_redis, as_viewer, dead_letter
):
    dead_letter("wow-cache")

    response = as_viewer.get("/queues/?agent=*")

    assert response.status_code == 200
    page = response.content.decode()
    for agent in seeded.values():
        assert f'data-queue="agents:{agent.slug}:tasks"' in page
    assert 'data-queue="celery:celery"' in page
    assert 'href="/queues/agents:wow-cache:tasks/#dead-letters">1</a>' in page
    assert 'id="queue-flow-graph"' in page  # the flow diagram


def test_the_list_sorts_and_filters_and_refuses_what_it_cannot_do(
    seeded, queue_redis, as_viewer, dead_letter
):
    dead_letter("wow-search")
    dead_letter("wow-search")
    dead_letter("wow-cache")

    rows = as_viewer.get("/queues/?agent=*&sort=-dlq").context["rows"]
    assert [r.name for r in rows[:2]] == ["agents:wow-search:tasks", CACHE]
    only_celery = as_viewer.get("/queues/?agent=*&kind=celery").context["rows"]
    assert [r.name for r in only_celery] == ["celery:celery"]
    found = as_viewer.get("/queues/?agent=*&q=cach").context["rows"]
    assert [r.name for r in found] == [CACHE]

    bad = as_viewer.get("/queues/?agent=*&sort=speed")
    assert bad.status_code == 400 and "Cannot sort by" in bad.content.decode()
    assert as_viewer.get("/queues/?agent=*&status=\x00").status_code == 400


def test_the_agent_context_narrows_the_list_to_that_agents_queue(seeded, queue_redis, as_viewer):
    rows = as_viewer.get("/queues/?agent=wow-cache").context["rows"]
    assert [r.name for r in rows] == [CACHE]


def test_a_queue_page_shows_figures_consumers_and_the_dead_letter_panel(
    seeded, queue_redis, as_operator, dead_letter
):
    ids = [dead_letter("wow-cache", error=f"boom {n % 2}") for n in range(3)]

    page = as_operator.get(PAGE).content.decode()

    assert 'id="dead-letters"' in page and "data-retry-all" in page
    for entry_id in ids:
        assert f'data-letter="{entry_id}"' in page
    assert "boom 0" in page and "boom 1" in page  # the error groups


def test_an_unknown_queue_is_404(seeded, queue_redis, as_viewer):
    assert as_viewer.get("/queues/agents:nobody:tasks/").status_code == 404
    assert as_viewer.get("/queues/%00/").status_code == 400  # NUL bytes never reach a view


def test_dead_letters_page_by_keyset_newest_first(seeded, queue_redis, as_viewer, dead_letter):
    ids = [dead_letter("wow-cache") for _ in range(7)]

    first = as_viewer.get(PAGE + "?limit=3").context["page"]
    second = as_viewer.get(PAGE + f"?limit=3&before={first.older}").context["page"]
    last = as_viewer.get(PAGE + "?limit=3&last=1").context["page"]
    back = as_viewer.get(PAGE + f"?limit=3&after={second.newer}").context["page"]
    fragment = as_viewer.get(PAGE + f"?region=dlq&limit=3&before={first.older}", **HTMX)
    assert fragment.content.decode().lstrip().startswith('<section class="card panel dlq-panel"')
    assert f'data-letter="{ids[3]}"' in fragment.content.decode()

    assert [letter.id for letter in first.letters] == ids[::-1][:3]
    assert [letter.id for letter in second.letters] == ids[::-1][3:6]
    assert [letter.id for letter in last.letters] == ids[::-1][4:]
    assert [letter.id for letter in back.letters] == [letter.id for letter in first.letters]
    bad = as_viewer.get(PAGE + "?region=dlq&before=yesterday", **HTMX)
    assert bad.status_code == 400 and "1733300000000-0" in bad.content.decode()


def test_retry_all_confirms_the_snapshot_then_runs_as_a_job(
    seeded, queue_redis, as_operator, dead_letter
):
    for _ in range(4):
        dead_letter("wow-cache")

    dialog = as_operator.get(f"/queues/{CACHE}/dlq/confirm/?action=redrive&scope=all", **HTMX)
    assert "Retry 4 dead letters?" in dialog.content.decode()
    late = dead_letter("wow-cache")  # after the dialog opened, before confirming: included
    response = as_operator.post(
        f"/queues/{CACHE}/dlq/act/", {"action": "redrive", "scope": "all", "rate": "100"}, **HTMX
    )
    latest = dead_letter("wow-cache")  # after confirming: not included

    assert response.status_code == 200
    job = RedriveJob.objects.get()
    assert (job.total, job.rate_limit) == (5, 100.0)
    redrive.run(job.pk)
    assert [e for e, _ in letters(queue_redis)] == [latest]
    assert late not in {e for e, _ in letters(queue_redis)}
    job_page = as_operator.get(f"/queues/jobs/{job.pk}/").content.decode()
    assert 'data-count="done">5<' in job_page


def test_a_viewer_reads_but_every_action_is_refused(seeded, queue_redis, as_viewer, dead_letter):
    letter = dead_letter("wow-cache", payload={"token": "t0p", "key": "a"})

    inspector = as_viewer.get(f"/queues/{CACHE}/dlq/{letter}/").content.decode()
    assert "t0p" not in inspector and "••••••" in inspector
    posts = [
        (f"/queues/{CACHE}/dlq/act/", {"action": "redrive", "scope": "all"}),
        (f"/queues/{CACHE}/dlq/act/", {"action": "delete", "scope": "selected", "ids": letter}),
        (f"/queues/{CACHE}/dlq/{letter}/edit/", {"payload": "{}"}),
        (f"/queues/{CACHE}/send/", {"payload": "{}"}),
        (f"/queues/{CACHE}/claim/", {"consumer": "wow-cache-0"}),
        (f"/queues/{CACHE}/thresholds/", {"backlog_degraded": "5"}),
        (f"/queues/{CACHE}/purge/", {"confirm": "wow-cache"}),
    ]
    for url, data in posts:
        assert as_viewer.post(url, data, **HTMX).status_code == 403, url
    assert len(letters(queue_redis)) == 1
    assert not RedriveJob.objects.exists() and not QueueThreshold.objects.exists()
    assert queue_redis.xlen(contract.task_stream("wow-cache")) == 0


def test_edit_preview_shows_the_diff_and_a_parse_error_names_the_place(
    seeded, queue_redis, as_operator, dead_letter
):
    letter = dead_letter("wow-cache", payload={"key": "a", "ttl": 5})
    url = f"/queues/{CACHE}/dlq/{letter}/"

    good = as_operator.post(url + "preview/", {"payload": '{"key": "a", "ttl": 60}'}, **HTMX)
    bad = as_operator.post(url + "preview/", {"payload": '{"key": "a",\n "ttl": }'}, **HTMX)

    assert (
        good.status_code == 200
        and '<span class="diff-add">+  &quot;ttl&quot;: 60' in good.content.decode()
    )
    assert bad.status_code == 200 and "line 2, column 9" in bad.content.decode()
    assert as_operator.post(url + "preview/", {"payload": "{"}).status_code == 400
    assert len(letters(queue_redis)) == 1

    sent = as_operator.post(url + "edit/", {"payload": '{"key": "a", "ttl": 60}'}, **HTMX)
    assert sent.status_code == 200 and sent["HX-Redirect"].endswith("#dead-letters")
    [(_, fields)] = queue_redis.xrange(contract.task_stream("wow-cache"))
    assert json.loads(fields[contract.FIELD_PAYLOAD]) == {"key": "a", "ttl": 60}


def test_delete_all_from_the_page_needs_the_slug(seeded, queue_redis, as_operator, dead_letter):
    dead_letter("wow-cache")
    url = f"/queues/{CACHE}/dlq/act/"

    refused = as_operator.post(url, {"action": "delete", "scope": "all", "confirm": "wow"}, **HTMX)
    assert refused.status_code == 409 and "type the agent" in refused.content.decode()
    assert (
        as_operator.post(
            url, {"action": "delete", "scope": "all", "confirm": "wow-cache"}, **HTMX
        ).status_code
        == 200
    )
    redrive.run(RedriveJob.objects.get().pk)
    assert letters(queue_redis) == []


def test_export_streams_the_selection_as_json_lines(seeded, queue_redis, as_viewer, dead_letter):
    first = dead_letter("wow-cache", error="A")
    dead_letter("wow-cache", error="B")

    everything = as_viewer.get(f"/queues/{CACHE}/dlq/export/?scope=all")
    chosen = as_viewer.get(f"/queues/{CACHE}/dlq/export/?scope=selected&ids={first}")

    rows = [json.loads(line) for line in b"".join(everything.streaming_content).splitlines()]
    assert everything["Content-Type"] == "application/x-ndjson"
    assert [r["error"] for r in rows] == ["A", "B"]
    assert [
        json.loads(line)["message_id"] for line in b"".join(chosen.streaming_content).splitlines()
    ] == [first]
    assert as_viewer.get(f"/queues/{CACHE}/dlq/export/?scope=selected&ids=x").status_code == 400


def test_send_thresholds_and_purge_from_the_page(seeded, queue_redis, as_admin):
    assert (
        as_admin.post(
            f"/queues/{CACHE}/send/", {"payload": '{"a": 1}', "count": "3"}, **HTMX
        ).status_code
        == 200
    )
    assert queue_redis.xlen(contract.task_stream("wow-cache")) == 3
    bad = as_admin.post(f"/queues/{CACHE}/send/", {"payload": '{"a": 1', "count": "3"}, **HTMX)
    assert bad.status_code == 400 and "line 1, column 8" in bad.content.decode()
    assert (
        as_admin.post(
            f"/queues/{CACHE}/thresholds/",
            {"backlog_degraded": "2", "backlog_critical": "9"},
            **HTMX,
        ).status_code
        == 200
    )
    assert QueueThreshold.objects.get().backlog_critical == 9
    assert (
        as_admin.post(f"/queues/{CACHE}/purge/", {"confirm": "wow-cache"}, **HTMX).status_code
        == 200
    )
    assert queue_redis.xlen(contract.task_stream("wow-cache")) == 0
    assert {"queues.send", "queues.thresholds", "queues.purge"} <= set(
        AuditEntry.objects.values_list("action", flat=True)
    )
