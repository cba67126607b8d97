"""The queues JSON API at /api/platform/queues: reading (every role with one), acting (Operators;
purging a stream: Admins), the snapshot rule, masking for Viewers, and a 4xx with a sentence for
every kind of bad input, at every endpoint; nothing a refusal answers has changed anything.

Real Redis and PostgreSQL; dead letters are written as agentd writes them (``dead_letter``); a
redrive job is run here as a worker would run it (``redrive.run``)."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.test import Client
from django.utils import timezone

from agents.agentd import contract
from observability.queues import redrive
from observability.queues.models import QueueSample, QueueThreshold, RedriveJob
from portal import services as portal_services
from portal.actors import Actor
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db

ROOT = "/api/platform/queues"
CACHE = "agents:wow-cache:tasks"
ENCODED = quote(CACHE, safe="")  # agents%3Awow-cache%3Atasks
QUEUE_FIELDS = {
    "queue_name", "status", "messages_pending", "throughput_per_sec", "consumer_lag",
    "error_rate", "dlq_messages", "kind", "title", "agent", "reasons", "in_flight",
    "consumer_lag_seconds", "dlq_inflow_per_min", "consumers", "sampled_at", "url",
}  # fmt: skip
LETTER_FIELDS = {"message_id", "payload", "error", "retry_count", "timestamp"}


def call(client: Client, method: str, path: str, body=None, **headers):
    """``path`` under /api/platform/queues; a dict or list body goes as JSON, a str as it is."""
    url = ROOT + path
    if method == "get":
        return client.get(url, **headers)
    data = json.dumps(body) if isinstance(body, dict | list) else (body or "")
    return getattr(client, method)(url, data, content_type="application/json", **headers)


def stream(queue_redis, slug="wow-cache"):
    return queue_redis.xrange(contract.task_stream(slug))


def letters(queue_redis, slug="wow-cache") -> list[str]:
    return [entry_id for entry_id, _ in queue_redis.xrange(contract.dead_letters(slug))]


def run_job(answer) -> RedriveJob:
    assert answer.status_code == 202, answer.json()
    redrive.run(answer.json()["id"])
    return RedriveJob.objects.get(pk=answer.json()["id"])


def lines(response) -> list[dict]:
    assert response["Content-Type"] == "application/x-ndjson"
    text = b"".join(response.streaming_content).decode()
    return [json.loads(line) for line in text.splitlines()]


def held_by(queue_redis, consumer: str, count: int) -> list[str]:
    """``count`` tasks on WowCache's stream, delivered to ``consumer`` and not acknowledged."""
    key = contract.task_stream("wow-cache")
    queue_redis.xgroup_create(key, contract.CONSUMER_GROUP, id="0", mkstream=True)
    ids = [queue_redis.xadd(key, {"payload": json.dumps({"n": n})}) for n in range(count)]
    queue_redis.xreadgroup(contract.CONSUMER_GROUP, consumer, {key: ">"}, count=count)
    return ids


@pytest.fixture
def operator_token(operator) -> str:
    return portal_services.create_api_token(operator, Actor.command("test"))[1]


@pytest.fixture
def viewer_token(viewer) -> str:
    return portal_services.create_api_token(viewer, Actor.command("test"))[1]


# --- who may call -------------------------------------------------------------------------------


def test_callers_without_a_role_or_credentials_are_refused(
    seeded, queue_redis, client, as_outsider
):
    for path in ("", f"/{ENCODED}", f"/{ENCODED}/dlq", "/jobs"):
        assert call(client, "get", path).status_code == 401, path
        assert call(as_outsider, "get", path).status_code == 401, path
    assert call(client, "post", f"/{ENCODED}/messages", {"payload": {"a": 1}}).status_code == 401
    assert stream(queue_redis) == []


def test_tokens_read_and_act_with_their_role(
    seeded, queue_redis, client, viewer_token, operator_token
):
    as_viewer = {"HTTP_AUTHORIZATION": f"Bearer {viewer_token}"}
    as_operator = {"HTTP_AUTHORIZATION": f"Bearer {operator_token}"}
    assert call(client, "get", "", **as_viewer).status_code == 200
    refused = call(client, "post", f"/{ENCODED}/messages", {"payload": {"a": 1}}, **as_viewer)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    sent = call(client, "post", f"/{ENCODED}/messages", {"payload": {"a": 1}}, **as_operator)
    assert sent.status_code == 201
    entry = AuditEntry.objects.get(action="queues.send", outcome="success")
    assert entry.actor.startswith("token:") and entry.target == CACHE
    assert AuditEntry.objects.filter(action="queues.send", outcome="refused").count() == 1


def test_a_viewer_reads_everything_and_is_refused_every_change(
    seeded, queue_redis, dead_letter, as_viewer
):
    letter = dead_letter("wow-cache")
    held_by(queue_redis, "wow-cache-3", 1)
    for path in (
        "", "?status=healthy", f"/{ENCODED}", f"/{ENCODED}/history", f"/{ENCODED}/dlq",
        f"/{ENCODED}/dlq/groups", f"/{ENCODED}/dlq/{letter}", "/jobs",
    ):  # fmt: skip
        assert call(as_viewer, "get", path).status_code == 200, path
    assert len(lines(call(as_viewer, "get", f"/{ENCODED}/dlq/export"))) == 1
    changes = [
        ("post", "/messages", {"payload": {"a": 1}}),
        ("post", "/dlq/redrive", {"scope": "all"}),
        ("post", "/dlq/delete", {"scope": "all", "confirm": "wow-cache"}),
        ("post", f"/dlq/{letter}/edit", {"payload": {"a": 2}}),
        ("post", f"/dlq/{letter}/edit", {"payload": {"a": 2}, "preview": True}),
        ("post", "/claim", {"consumer": "wow-cache-3", "mode": "redeliver"}),
        ("post", "/purge", {"confirm": "wow-cache"}),
        ("put", "/thresholds", {"backlog_degraded": 5}),
        ("post", "/dlq/recount", None),
    ]
    for method, path, body in changes:
        answer = call(as_viewer, method, f"/{ENCODED}{path}", body)
        assert answer.status_code == 403, (path, answer.json())
        role = "Admin" if path == "/purge" else "Operator"
        assert answer.json()["code"] == "forbidden" and role in answer.json()["detail"]
    assert letters(queue_redis) == [letter]
    assert len(stream(queue_redis)) == 1
    assert queue_redis.xpending(CACHE, contract.CONSUMER_GROUP)["pending"] == 1
    assert not RedriveJob.objects.exists() and not QueueThreshold.objects.exists()
    entries = AuditEntry.objects.filter(action__startswith="queues.")
    assert not entries.exclude(outcome="refused").exists()  # each refusal is in the log, no change
    assert entries.filter(actor="user:vera").count() == entries.count() > 0


# --- the list -----------------------------------------------------------------------------------


def test_the_list_has_every_agent_stream_and_the_celery_queue_with_their_figures(
    seeded, queue_redis, dead_letter, as_viewer
):
    dead_letter("wow-cache")
    queue_redis.xadd(CACHE, {"payload": "{}"})

    rows = call(as_viewer, "get", "").json()

    assert len(rows) == len(seeded) + 1
    assert all(set(row) >= QUEUE_FIELDS for row in rows)
    cache = next(row for row in rows if row["queue_name"] == CACHE)
    assert (cache["messages_pending"], cache["consumer_lag"], cache["dlq_messages"]) == (1, 1, 1)
    assert cache["agent"] == "wow-cache" and cache["status"] in ("healthy", "degraded")
    assert call(as_viewer, "get", cache["url"].removeprefix(ROOT)).status_code == 200
    assert rows[-1]["queue_name"] == "celery:celery" and rows[-1]["kind"] == "celery"


def test_the_list_filters_and_sorts(seeded, queue_redis, dead_letter, as_viewer):
    for _ in range(3):
        dead_letter("wow-cache")
    dead_letter("wow-event")

    def names(query: str) -> list[str]:
        answer = call(as_viewer, "get", query)
        assert answer.status_code == 200, answer.json()
        return [row["queue_name"] for row in answer.json()]

    assert names("?kind=celery") == ["celery:celery"]
    assert len(names("?kind=agent")) == len(seeded)
    assert names("?q=CACHE") == [CACHE]
    assert names("?agent=wow-event") == ["agents:wow-event:tasks"]
    assert names("?sort=-dlq_messages")[:2] == [CACHE, "agents:wow-event:tasks"]
    assert names("?sort=-dlq")[:2] == names("?sort=-dlq_messages")[:2]  # the page's name
    assert names("?sort=dlq_messages")[-2:] == ["agents:wow-event:tasks", CACHE]
    titles = [row["title"] for row in call(as_viewer, "get", "?sort=title").json()]
    assert titles == sorted(titles, key=str.lower)
    healthy = names("?status=healthy")
    assert healthy and set(healthy) <= set(names(""))
    assert names("?status=critical&kind=celery") == []


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("?status=asleep", "status='asleep' is not a queue status; use one of healthy, degraded, "
                           "critical, unknown."),
        ("?kind=kafka", "kind='kafka' is not a queue kind; use one of agent, celery."),
        ("?sort=colour", "sort='colour' is not a column; use one of queue_name"),
        ("?sort=-", "is not a column"),
        ("?agent=wow-nothing", "agent='wow-nothing' is not an agent"),
        ("?q=" + "x" * 101, "q= is 101 characters long; at most 100."),
        ("?status=%00", "NUL"),
    ],
)  # fmt: skip
def test_bad_list_filters_are_400_naming_what_is_allowed(
    seeded, queue_redis, as_viewer, query, says
):
    answer = call(as_viewer, "get", query)
    assert answer.status_code == 400
    assert says in answer.json()["detail"]


def test_redis_away_is_503_with_a_sentence_and_a_queue_says_it_is_unknown(
    seeded, as_viewer, as_operator, settings
):
    settings.AGENT_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    for client, method, path, body in (
        (as_viewer, "get", "", None),
        (as_viewer, "get", f"/{ENCODED}/dlq", None),
        (as_operator, "post", f"/{ENCODED}/messages", {"payload": {"a": 1}}),
    ):
        answer = call(client, method, path, body)
        assert answer.status_code == 503, path
        assert answer.json()["code"] == "unavailable"
        assert "Redis does not answer" in answer.json()["detail"]
    one = call(as_viewer, "get", f"/{ENCODED}").json()
    assert one["status"] == "unknown" and "Redis does not answer" in one["error"]


# --- one queue ----------------------------------------------------------------------------------


def test_a_queue_name_works_url_encoded_and_raw(seeded, queue_redis, dead_letter, as_viewer):
    letter = dead_letter("wow-cache")
    for path in ("", "/dlq", "/dlq/groups", f"/dlq/{letter}", "/history"):
        encoded = call(as_viewer, "get", f"/{ENCODED}{path}")
        raw = call(as_viewer, "get", f"/{CACHE}{path}")
        assert encoded.status_code == raw.status_code == 200, path
        if path != "/history":  # its start and end are "now"
            assert encoded.json() == raw.json()
    assert call(as_viewer, "get", "/celery%3Acelery").json()["kind"] == "celery"


def test_one_queue_has_thresholds_consumers_with_stuck_flags_pending_entries_groups_and_jobs(
    seeded, queue_redis, dead_letter, as_operator
):
    held = held_by(queue_redis, "wow-cache-0", 2)
    dead_letter("wow-cache", error="TimeoutError: upstream")
    dead_letter("wow-cache", error="TimeoutError: upstream")
    job = call(as_operator, "post", f"/{ENCODED}/dlq/delete", {"scope": "selected",
               "ids": letters(queue_redis)[:1]})  # fmt: skip

    body = call(as_operator, "get", f"/{ENCODED}").json()

    assert body["queue_name"] == CACHE and body["in_flight"] == 2
    assert body["thresholds"]["source"] == "default" and body["thresholds"]["overridden"] == []
    assert body["thresholds"]["values"]["backlog_degraded"] == 100
    [consumer] = body["group_consumers"]
    assert consumer["name"] == "wow-cache-0" and consumer["pending"] == 2
    # WowCache is not running, so no replica reads what wow-cache-0 holds.
    assert consumer["stuck"] and consumer["replica_gone"] and "draft" in consumer["why"].lower()
    assert [e["id"] for e in body["pending_entries"]] == held
    assert body["pending_entries"][0]["consumer"] == "wow-cache-0"
    [group] = body["dlq_groups"]
    assert group["count"] == 2 and group["label"].startswith("TimeoutError")
    assert [j["id"] for j in body["jobs"]] == [job.json()["id"]]

    call(as_operator, "put", f"/{ENCODED}/thresholds", {"backlog_degraded": 5})
    own = call(as_operator, "get", f"/{ENCODED}").json()["thresholds"]
    assert own["source"] == "own" and own["overridden"] == ["backlog_degraded"]
    assert own["values"]["backlog_degraded"] == 5 and own["defaults"]["backlog_degraded"] == 100


UNKNOWN = quote("agents:wow-nothing:tasks", safe="")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "", None), ("get", "/history", None), ("get", "/dlq", None),
        ("get", "/dlq/groups", None), ("get", "/dlq/export", None), ("get", "/dlq/1-0", None),
        ("post", "/messages", {"payload": {"a": 1}}), ("post", "/dlq/redrive", {"scope": "all"}),
        ("post", "/dlq/delete", {"scope": "all"}), ("post", "/dlq/1-0/edit", {"payload": {}}),
        ("post", "/claim", {"consumer": "x"}), ("post", "/purge", {"confirm": "x"}),
        ("put", "/thresholds", {}), ("post", "/dlq/recount", None),
    ],
)  # fmt: skip
def test_an_unknown_queue_is_404_with_the_catalogs_sentence(
    seeded, queue_redis, as_admin, method, path, body
):
    answer = call(as_admin, method, f"/{UNKNOWN}{path}", body)
    assert answer.status_code == 404, answer.content
    assert answer.json()["code"] == "not_found"
    assert "There is no queue 'agents:wow-nothing:tasks'" in answer.json()["detail"]
    assert "agents:<slug>:tasks" in answer.json()["detail"]


@pytest.mark.parametrize("name", ["nope", "celery%3Aother", "x" * 300, "agents%3A%3Atasks"])
def test_names_that_are_no_queue_are_404(seeded, queue_redis, as_viewer, name):
    assert call(as_viewer, "get", f"/{name}").status_code == 404


def test_history_is_the_sampled_figures_over_a_range(seeded, queue_redis, as_viewer):
    QueueSample.objects.create(
        queue_name=CACHE, ts=timezone.now() - timedelta(minutes=2), pending=7, out_rate=2.5
    )

    body = call(as_viewer, "get", f"/{ENCODED}/history?range=1h").json()

    assert body["range"] == "1h" and body["bucket_seconds"] == 30
    assert {"pending", "in_flight", "in_rate", "out_rate", "lag_seconds", "error_rate",
            "dead_letters", "dlq_inflow"} == set(body["series"])  # fmt: skip
    assert 7 in [point["value"] for point in body["series"]["pending"]]
    assert 2.5 in [point["value"] for point in body["series"]["out_rate"]]
    assert call(as_viewer, "get", f"/{ENCODED}/history").json()["range"] == "1h"
    for key in ("6h", "24h", "7d"):
        assert call(as_viewer, "get", f"/{ENCODED}/history?range={key}").status_code == 200
    bad = call(as_viewer, "get", f"/{ENCODED}/history?range=2w")
    assert bad.status_code == 400
    assert bad.json()["detail"] == "range='2w' is not a range; use one of 1h, 6h, 24h, 7d."


# --- dead letters -------------------------------------------------------------------------------


def test_dead_letters_come_newest_first_by_keyset_pages(
    seeded, queue_redis, dead_letter, as_viewer
):
    written = [dead_letter("wow-cache", payload={"n": n}) for n in range(5)]
    newest_first = written[::-1]

    def page(query: str) -> dict:
        answer = call(as_viewer, "get", f"/{ENCODED}/dlq{query}")
        assert answer.status_code == 200, answer.json()
        return answer.json()

    first = page("?limit=2")
    assert [m["message_id"] for m in first["messages"]] == newest_first[:2]
    assert first["total"] == 5 and first["newer"] is None and first["older"] == newest_first[1]
    assert all(set(m) >= LETTER_FIELDS for m in first["messages"])
    message = first["messages"][0]
    assert message["payload"] == {"n": 4} and message["retry_count"] == 3
    assert message["error"] == "ConnectionError: wow-cache:6379"
    second = page(f"?limit=2&before={first['older']}")
    assert [m["message_id"] for m in second["messages"]] == newest_first[2:4]
    back = page(f"?limit=2&after={second['newer']}")
    assert [m["message_id"] for m in back["messages"]] == newest_first[:2]
    last = page("?limit=2&last=true")
    assert [m["message_id"] for m in last["messages"]] == newest_first[3:]
    assert last["older"] is None and last["newer"] == newest_first[3]


def test_a_group_page_and_the_groups(seeded, queue_redis, dead_letter, as_viewer):
    timeouts = [dead_letter("wow-cache", error="TimeoutError: slow") for _ in range(2)]
    dead_letter("wow-cache")
    groups = call(as_viewer, "get", f"/{ENCODED}/dlq/groups").json()
    assert [g["count"] for g in groups] == [2, 1]
    fingerprint = groups[0]["fingerprint"]

    body = call(as_viewer, "get", f"/{ENCODED}/dlq?fingerprint={fingerprint}").json()

    assert [m["message_id"] for m in body["messages"]] == timeouts[::-1]
    assert body["total"] == 2


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("?limit=0", "limit='0' is out of range; give a whole number from 1 to 500."),
        ("?limit=501", "from 1 to 500"),
        ("?limit=99999999999999999999999999", "from 1 to 500"),
        ("?limit=lots", "from 1 to 500"),
        ("?before=yesterday", "'yesterday' is not a message id"),
        ("?after=1e99", "is not a message id"),
        ("?before=1-0&after=2-0", "not both"),
        ("?last=maybe", "last='maybe' is not true or false"),
        ("?last=true&before=1-0", "last=true is the oldest page"),
        ("?fingerprint=ZZZ", "fingerprint='ZZZ' is not an error group"),
        ("?fingerprint=4cbff9584f25&after=1-0", "A group's pages go from the newest"),
        ("?before=" + "9" * 80, "before= is 80 characters long"),
    ],
)
def test_bad_dead_letter_page_parameters_are_400(
    seeded, queue_redis, dead_letter, as_viewer, query, says
):
    dead_letter("wow-cache")
    answer = call(as_viewer, "get", f"/{ENCODED}/dlq{query}")
    assert answer.status_code == 400, answer.json()
    assert says in answer.json()["detail"]


def test_one_dead_letter_and_one_that_is_gone(seeded, queue_redis, dead_letter, as_viewer):
    letter = dead_letter("wow-cache", payload={"op": "get"})
    assert call(as_viewer, "get", f"/{ENCODED}/dlq/{letter}").json()["payload"] == {"op": "get"}
    queue_redis.xdel(contract.dead_letters("wow-cache"), letter)

    gone = call(as_viewer, "get", f"/{ENCODED}/dlq/{letter}")

    assert gone.status_code == 404
    assert gone.json()["detail"] == (
        f"Dead letter {letter} is not in agents:wow-cache:dlq any more: it was sent back or "
        f"deleted."
    )
    bad = call(as_viewer, "get", f"/{ENCODED}/dlq/not-an-id")
    assert bad.status_code == 400 and "is not a message id" in bad.json()["detail"]


def test_the_celery_queue_has_no_dead_letters(seeded, queue_redis, as_operator):
    for method, path, body in (
        ("get", "/dlq", None), ("get", "/dlq/groups", None), ("get", "/dlq/1-0", None),
        ("get", "/dlq/export", None), ("post", "/dlq/redrive", {"scope": "all"}),
        ("post", "/messages", {"payload": {"a": 1}}),
    ):  # fmt: skip
        answer = call(as_operator, method, f"/celery%3Acelery{path}", body)
        assert answer.status_code == 409, path
        assert answer.json()["code"] == "not_a_stream"


def test_viewers_see_secret_looking_payload_fields_masked_operators_see_them(
    seeded, queue_redis, dead_letter, as_viewer, as_operator
):
    secret = {"user": "ada", "password": "hunter2", "nested": {"api_key": "k-1"}}
    letter = dead_letter("wow-cache", payload=secret)
    masked = {"user": "ada", "password": "••••••", "nested": {"api_key": "••••••"}}
    for client, expected in ((as_viewer, masked), (as_operator, secret)):
        page = call(client, "get", f"/{ENCODED}/dlq").json()
        assert page["messages"][0]["payload"] == expected
        assert call(client, "get", f"/{ENCODED}/dlq/{letter}").json()["payload"] == expected
        [exported] = lines(call(client, "get", f"/{ENCODED}/dlq/export"))
        assert exported["payload"] == expected
    assert b"hunter2" not in call(as_viewer, "get", f"/{ENCODED}/dlq").content


def test_export_as_json_lines_of_selected_ids_a_group_or_all(
    seeded, queue_redis, dead_letter, as_viewer
):
    first, second = dead_letter("wow-cache"), dead_letter("wow-cache")
    slow = dead_letter("wow-cache", error="TimeoutError: slow")
    export = f"/{ENCODED}/dlq/export"

    everything = call(as_viewer, "get", export)
    assert (
        everything["Content-Disposition"] == 'attachment; filename="wow-cache-dead-letters.jsonl"'
    )
    assert [row["message_id"] for row in lines(everything)] == [first, second, slow]
    picked = call(as_viewer, "get", f"{export}?scope=selected&ids={first}&ids={slow}")
    assert [row["message_id"] for row in lines(picked)] == [first, slow]
    commas = call(as_viewer, "get", f"{export}?scope=selected&ids={first},{second}")
    assert [row["message_id"] for row in lines(commas)] == [first, second]
    fingerprint = contract.error_fingerprint("TimeoutError: slow")[0]
    group = call(as_viewer, "get", f"{export}?scope=group&fingerprint={fingerprint}")
    assert [row["message_id"] for row in lines(group)] == [slow]
    for bad, says in (
        ("?scope=some", "'some' is not a scope; use selected, group or all"),
        ("?scope=selected", "Select at least one message"),
        ("?scope=selected&ids=nonsense", "'nonsense' is not a message id"),
        ("?scope=group", "is not an error group"),
    ):
        answer = call(as_viewer, "get", export + bad)
        assert answer.status_code == 400, bad
        assert says in answer.json()["detail"]


def test_exporting_an_empty_dead_letter_queue_is_an_empty_file(seeded, queue_redis, as_viewer):
    assert lines(call(as_viewer, "get", f"/{ENCODED}/dlq/export")) == []


# --- sending ------------------------------------------------------------------------------------


def test_an_operator_sends_messages_as_themselves(seeded, queue_redis, as_operator):
    answer = call(as_operator, "post", f"/{ENCODED}/messages",
                  {"payload": {"op": "get"}, "count": 3, "customer": "acme"})  # fmt: skip

    assert answer.status_code == 201
    body = answer.json()
    assert body["queue_name"] == CACHE and body["count"] == 3
    entries = stream(queue_redis)
    assert [entry_id for entry_id, _ in entries] == body["ids"]
    assert entries[0][1][contract.FIELD_PRODUCER] == "portal:otto"
    assert entries[0][1][contract.FIELD_CUSTOMER] == "acme"
    as_text = call(as_operator, "post", f"/{CACHE}/messages", {"payload": '{"op": "set"}'})
    assert as_text.status_code == 201
    assert json.loads(stream(queue_redis)[-1][1]["payload"]) == {"op": "set"}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"payload": '{\n  "a": 1,\n}'}, 400, "not valid JSON: line 3, column 1"),
        ({"payload": [1, 2]}, 400, "must be a JSON object"),
        ({}, 400, "must be a JSON object"),
        ({"payload": {"a": 1}, "count": 0}, 400, "count must be from 1 to 10,000; got 0"),
        ({"payload": {"a": 1}, "count": 10**30}, 400, "count must be from 1 to 10,000"),
        ({"payload": {"a": 1}, "count": "many"}, 400, "count must be a whole number"),
        ({"payload": {"a": 1}, "count": 1.5}, 400, "count must be a whole number"),
        ({"payload": {"big": "x" * 70_000}}, 400, "the most a message may carry"),
        ({"payload": {"a": 1}, "customer": "c" * 201}, 400, "at most 200 characters"),
        ('{"payload": {"a": "\\u0000"}}', 400, "NUL"),
        ({"payload": {"a": 1}, "customer": 5}, 422, "customer"),
        ("{not json", 400, "Cannot parse request body"),
    ],
)  # fmt: skip
def test_bad_sends_are_refused_with_a_sentence_and_send_nothing(
    seeded, queue_redis, as_operator, body, status, says
):
    answer = call(as_operator, "post", f"/{ENCODED}/messages", body)
    assert answer.status_code == status, answer.json()
    assert says in json.dumps(answer.json())
    assert stream(queue_redis) == []
    assert not AuditEntry.objects.filter(action="queues.send").exists()


def test_a_malformed_payload_says_the_line_and_column_in_the_answer(
    seeded, queue_redis, as_operator
):
    answer = call(as_operator, "post", f"/{ENCODED}/messages", {"payload": '{"a": 1,,}'})
    assert answer.json()["line"] == 1 and answer.json()["column"] == 9
    assert answer.json()["code"] == "invalid"


# --- redrive and delete -------------------------------------------------------------------------


def test_retry_all_answers_the_job_and_sends_the_letters_back(
    seeded, queue_redis, dead_letter, as_operator
):
    written = [dead_letter("wow-cache", payload={"n": n}) for n in range(3)]

    answer = call(as_operator, "post", f"/{ENCODED}/dlq/redrive", {"scope": "all", "rate": 1000})

    body = answer.json()
    assert body["action"] == "redrive" and body["scope"] == "all" and body["total"] == 3
    assert body["upto_id"] == written[-1] and body["rate_limit"] == 1000
    assert body["requested_by"] == "user:otto" and body["url"] == f"{ROOT}/jobs/{body['id']}"
    job = run_job(answer)
    assert (job.status, job.done) == ("succeeded", 3)
    assert letters(queue_redis) == []
    assert [json.loads(f["payload"])["n"] for _, f in stream(queue_redis)] == [0, 1, 2]
    shown = call(as_operator, "get", f"/jobs/{job.pk}").json()
    assert shown["status"] == "succeeded" and shown["percent"] == 100


def test_a_letter_that_arrives_after_retry_all_was_asked_for_is_still_there(
    seeded, queue_redis, dead_letter, as_operator
):
    before = [dead_letter("wow-cache") for _ in range(3)]
    answer = call(as_operator, "post", f"/{ENCODED}/dlq/redrive", {"scope": "all"})
    later = dead_letter("wow-cache")  # dead-lettered after the request, before the job ran

    job = run_job(answer)

    assert job.done == 3 and job.total == 3
    assert letters(queue_redis) == [later]
    assert len(stream(queue_redis)) == len(before)


def test_delete_all_needs_the_slug_and_keeps_later_letters(
    seeded, queue_redis, dead_letter, as_operator
):
    dead_letter("wow-cache")
    for confirm in ("", "wow-event", "yes"):
        refused = call(as_operator, "post", f"/{ENCODED}/dlq/delete",
                       {"scope": "all", "confirm": confirm})  # fmt: skip
        assert refused.status_code == 409
        assert refused.json()["code"] == "confirmation_required"
        assert "type the agent's slug, wow-cache" in refused.json()["detail"]
    assert not RedriveJob.objects.exists()

    answer = call(as_operator, "post", f"/{ENCODED}/dlq/delete",
                  {"scope": "all", "confirm": "wow-cache"})  # fmt: skip
    later = dead_letter("wow-cache")
    job = run_job(answer)

    assert job.action == "delete" and job.done == 1
    assert letters(queue_redis) == [later] and stream(queue_redis) == []


def test_selected_ids_already_gone_are_reported_as_skipped(
    seeded, queue_redis, dead_letter, as_operator
):
    kept, gone = dead_letter("wow-cache"), dead_letter("wow-cache")
    answer = call(as_operator, "post", f"/{ENCODED}/dlq/redrive",
                  {"scope": "selected", "ids": [kept, gone]})  # fmt: skip
    queue_redis.xdel(contract.dead_letters("wow-cache"), gone)

    job = run_job(answer)

    assert (job.status, job.done, job.skipped) == ("succeeded", 1, 1)
    assert "1 already gone (skipped)" in job.message


def test_retry_a_group_leaves_the_other_groups(seeded, queue_redis, dead_letter, as_operator):
    slow = [dead_letter("wow-cache", error="TimeoutError: slow") for _ in range(2)]
    other = dead_letter("wow-cache")
    fingerprint = contract.error_fingerprint("TimeoutError: slow")[0]

    job = run_job(call(as_operator, "post", f"/{ENCODED}/dlq/redrive",
                       {"scope": "group", "fingerprint": fingerprint}))  # fmt: skip

    assert job.done == len(slow) and letters(queue_redis) == [other]


def test_a_letter_redriven_too_often_is_refused_unless_forced(
    seeded, queue_redis, dead_letter, as_operator
):
    tired = dead_letter("wow-cache", redrives=3)
    body = {"scope": "selected", "ids": [tired]}

    refused = call(as_operator, "post", f"/{ENCODED}/dlq/redrive", body)

    assert refused.status_code == 409 and refused.json()["code"] == "too_many_redrives"
    assert not RedriveJob.objects.exists()
    job = run_job(call(as_operator, "post", f"/{ENCODED}/dlq/redrive", {**body, "force": True}))
    assert job.done == 1 and stream(queue_redis)[0][1][contract.FIELD_REDRIVES] == "4"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"scope": "all", "rate": 0.01}, 400, "The rate must be from 0.1 to 100,000"),
        ({"scope": "all", "rate": 10**9}, 400, "The rate must be from 0.1"),
        ({"scope": "all", "rate": "1e999"}, 400, "The rate must be from 0.1"),
        ('{"scope": "all", "rate": 1e999}', 400, "The rate must be from 0.1"),
        ({"scope": "all", "rate": "fast"}, 400, "The rate must be from 0.1"),
        ({"scope": "everything"}, 400, "'everything' is not a scope"),
        ({}, 400, "is not a scope"),
        ({"scope": "selected"}, 400, "Select at least one message"),
        ({"scope": "selected", "ids": ["1-0"] * 1001}, 400, "at most 1,000 at once"),
        ({"scope": "selected", "ids": [{"a": 1}]}, 400, "is not a message id"),
        ({"scope": "selected", "ids": 12345678901234567890}, 400, "Select at least one"),
        ({"scope": "group", "fingerprint": "no such"}, 400, "is not an error group"),
        ({"scope": "group", "fingerprint": "abcdef123456"}, 409, "no dead letters in that error"),
        ({"scope": "all", "force": "maybe"}, 422, "force"),
        ({"scope": 7}, 422, "scope"),
        ("[1, 2]", 422, "detail"),
    ],
)  # fmt: skip
def test_bad_redrives_are_refused_and_start_nothing(
    seeded, queue_redis, dead_letter, as_operator, body, status, says
):
    dead_letter("wow-cache")
    for action in ("redrive", "delete"):
        answer = call(as_operator, "post", f"/{ENCODED}/dlq/{action}", body)
        assert answer.status_code == status, (action, answer.json())
        assert says in json.dumps(answer.json())
    assert not RedriveJob.objects.exists() and len(letters(queue_redis)) == 1


def test_an_empty_dead_letter_queue_has_nothing_to_retry(seeded, queue_redis, as_operator):
    answer = call(as_operator, "post", f"/{ENCODED}/dlq/redrive", {"scope": "all"})
    assert answer.status_code == 409 and answer.json()["code"] == "empty"


# --- edit, then retry ---------------------------------------------------------------------------


def test_an_edit_is_previewed_as_a_diff_then_sent(seeded, queue_redis, dead_letter, as_operator):
    letter = dead_letter("wow-cache", payload={"key": "a", "ttl": 5})
    path = f"/{ENCODED}/dlq/{letter}/edit"

    preview = call(as_operator, "post", path, {"payload": {"key": "a", "ttl": 60}, "preview": True})

    body = preview.json()
    assert preview.status_code == 200 and body["sent"] is False and body["changed"] is True
    assert '-  "ttl": 5' in body["diff"] and '+  "ttl": 60' in body["diff"]
    assert letters(queue_redis) == [letter] and stream(queue_redis) == []

    sent = call(as_operator, "post", path, {"payload": '{"key": "a", "ttl": 60}'})

    assert sent.status_code == 200 and sent.json()["sent"] is True
    assert letters(queue_redis) == []
    [(_, fields)] = stream(queue_redis)
    assert json.loads(fields["payload"]) == {"key": "a", "ttl": 60}
    entry = AuditEntry.objects.get(action="queues.edit_and_retry")
    assert '"ttl": 5' in entry.detail["original"] and '"ttl": 60' in entry.detail["edited"]
    again = call(as_operator, "post", path, {"payload": {"key": "b"}})
    assert (
        again.status_code == 404
        and "not in agents:wow-cache:dlq any more" in again.json()["detail"]
    )


@pytest.mark.parametrize("preview", [True, False])
def test_a_malformed_edit_is_400_with_its_line_and_column_and_sends_nothing(
    seeded, queue_redis, dead_letter, as_operator, preview
):
    letter = dead_letter("wow-cache")

    answer = call(as_operator, "post", f"/{ENCODED}/dlq/{letter}/edit",
                  {"payload": '{\n  "a": 1,\n  "b": }', "preview": preview})  # fmt: skip

    assert answer.status_code == 400
    body = answer.json()
    assert (body["line"], body["column"]) == (3, 8) and body["code"] == "invalid"
    assert "line 3, column 8" in body["detail"]
    assert letters(queue_redis) == [letter] and stream(queue_redis) == []


def test_bad_edits_are_refused(seeded, queue_redis, dead_letter, as_operator):
    letter = dead_letter("wow-cache")
    for path, body, status in (
        (f"/dlq/{letter}/edit", {"payload": "[1]"}, 400),
        (f"/dlq/{letter}/edit", {}, 400),
        (f"/dlq/{letter}/edit", {"payload": {"a": 1}, "preview": "perhaps"}, 422),
        ("/dlq/not-an-id/edit", {"payload": {"a": 1}}, 400),
        ("/dlq/1-0/edit", {"payload": {"a": 1}}, 404),
    ):
        answer = call(as_operator, "post", f"/{ENCODED}{path}", body)
        assert answer.status_code == status, (path, body, answer.json())
    assert letters(queue_redis) == [letter] and stream(queue_redis) == []


# --- claims, purges, thresholds, recount --------------------------------------------------------


def test_an_operator_claims_or_redelivers_a_stuck_consumers_entries(
    seeded, queue_redis, as_operator
):
    held = held_by(queue_redis, "wow-cache-0", 2)

    claimed = call(as_operator, "post", f"/{ENCODED}/claim",
                   {"consumer": "wow-cache-0", "target": "wow-cache-1"})  # fmt: skip

    assert claimed.status_code == 200
    assert claimed.json() == {"mode": "claim", "consumer": "wow-cache-0", "target": "wow-cache-1",
                              "ids": held, "gone": 0}  # fmt: skip
    redelivered = call(as_operator, "post", f"/{ENCODED}/claim",
                       {"consumer": "wow-cache-1", "mode": "redeliver"})  # fmt: skip
    assert redelivered.json()["ids"] == held
    assert queue_redis.xpending(CACHE, contract.CONSUMER_GROUP)["pending"] == 0
    assert AuditEntry.objects.filter(action__in=["queues.claim", "queues.redeliver"]).count() == 2


def test_bad_claims_are_refused(seeded, queue_redis, as_operator):
    held_by(queue_redis, "wow-cache-0", 1)
    for body, status, says in (
        ({"consumer": "wow-cache-9"}, 404, "its consumers: wow-cache-0"),
        ({}, 404, "has no consumer ''"),
        ({"consumer": "wow-cache-0", "mode": "steal"}, 400, "'steal' is not a way to claim"),
        ({"consumer": "wow-cache-0"}, 409, "No healthy replica"),  # WowCache is not running
        ({"consumer": "wow-cache-0", "target": "wow-cache-0"}, 400, "another consumer"),
        ({"consumer": ["wow-cache-0"]}, 422, "consumer"),
    ):
        answer = call(as_operator, "post", f"/{ENCODED}/claim", body)
        assert answer.status_code == status, (body, answer.json())
        assert says in json.dumps(answer.json())
    assert queue_redis.xpending(CACHE, contract.CONSUMER_GROUP)["pending"] == 1


def test_purging_a_stream_is_for_admins_with_the_slug_typed(
    seeded, queue_redis, as_operator, as_admin
):
    for _ in range(3):
        queue_redis.xadd(CACHE, {"payload": "{}"})
    denied = call(as_operator, "post", f"/{ENCODED}/purge", {"confirm": "wow-cache"})
    assert denied.status_code == 403 and "Admin" in denied.json()["detail"]
    unconfirmed = call(as_admin, "post", f"/{ENCODED}/purge", {"confirm": "wow-cach"})
    assert unconfirmed.status_code == 409 and unconfirmed.json()["code"] == "confirmation_required"
    assert len(stream(queue_redis)) == 3

    purged = call(as_admin, "post", f"/{ENCODED}/purge", {"confirm": "wow-cache"})

    assert purged.status_code == 200 and purged.json() == {"queue_name": CACHE, "removed": 3}
    assert stream(queue_redis) == []
    assert AuditEntry.objects.get(action="queues.purge", outcome="success").detail["removed"] == 3
    assert AuditEntry.objects.filter(action="queues.purge", outcome="refused").count() == 1


def test_thresholds_are_set_replaced_and_removed_by_put(seeded, queue_redis, as_operator):
    path = f"/{ENCODED}/thresholds"

    answer = call(as_operator, "put", path, {"backlog_degraded": 10, "error_rate_critical": 50.5})

    assert answer.status_code == 200
    assert answer.json()["overridden"] == ["backlog_degraded", "error_rate_critical"]
    row = QueueThreshold.objects.get(queue_name=CACHE)
    assert (row.backlog_degraded, row.error_rate_critical, row.updated_by) == (
        10,
        50.5,
        "user:otto",
    )
    replaced = call(as_operator, "put", path, {"backlog_critical": 2000}).json()
    assert replaced["overridden"] == ["backlog_critical"]  # PUT replaces: the rest is default
    assert call(as_operator, "put", path, {}).json()["source"] == "default"
    assert not QueueThreshold.objects.exists()
    assert AuditEntry.objects.filter(action="queues.thresholds").count() == 3


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"colour": 1}, 400, "Unknown threshold 'colour'; use backlog_degraded"),
        ({"backlog_degraded": -1}, 400, "backlog_degraded must be a number from 0"),
        ({"backlog_degraded": 10**30}, 400, "must be a number from 0 to 1,000,000,000"),
        ('{"backlog_degraded": 1e999}', 400, "must be a number from 0"),
        ({"backlog_degraded": "many"}, 400, "must be a number"),
        ({"backlog_degraded": [1]}, 400, "must be a number"),
        ({"backlog_degraded": 500, "backlog_critical": 100}, 400, "must not be above"),
        ("[]", 422, "detail"),
    ],
)  # fmt: skip
def test_bad_thresholds_are_refused_and_change_nothing(
    seeded, queue_redis, as_operator, body, status, says
):
    answer = call(as_operator, "put", f"/{ENCODED}/thresholds", body)
    assert answer.status_code == status, answer.json()
    assert says in json.dumps(answer.json())
    assert not QueueThreshold.objects.exists()


def test_recount_rebuilds_the_groups(seeded, queue_redis, dead_letter, as_operator):
    dead_letter("wow-cache")
    queue_redis.delete(contract.dead_letter_groups("wow-cache"))
    assert call(as_operator, "get", f"/{ENCODED}/dlq/groups").json() == []

    answer = call(as_operator, "post", f"/{ENCODED}/dlq/recount")

    assert answer.status_code == 200 and [g["count"] for g in answer.json()] == [1]


# --- jobs ---------------------------------------------------------------------------------------


def test_jobs_are_listed_filtered_shown_and_cancelled(
    seeded, queue_redis, dead_letter, as_operator, as_viewer
):
    dead_letter("wow-cache")
    dead_letter("wow-event")
    cache = call(as_operator, "post", f"/{ENCODED}/dlq/redrive", {"scope": "all"}).json()
    event = call(
        as_operator, "post", "/agents:wow-event:tasks/dlq/redrive", {"scope": "all"}
    ).json()

    assert [j["id"] for j in call(as_viewer, "get", "/jobs").json()] == [event["id"], cache["id"]]
    assert [j["id"] for j in call(as_viewer, "get", f"/jobs?queue={ENCODED}").json()] == [
        cache["id"]
    ]
    assert call(as_viewer, "get", "/jobs?status=succeeded").json() == []
    assert len(call(as_viewer, "get", "/jobs?limit=1").json()) == 1
    assert call(as_viewer, "get", f"/jobs/{cache['id']}").json()["queue_name"] == CACHE

    assert call(as_viewer, "post", f"/jobs/{cache['id']}/cancel").status_code == 403
    cancelled = call(as_operator, "post", f"/jobs/{cache['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
    job = redrive.run(cache["id"])
    assert job.status == "cancelled" and letters(queue_redis) != []
    again = call(as_operator, "post", f"/jobs/{cache['id']}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "finished"


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("get", "/jobs?status=lost", 400, "status='lost' is not a job status; use one of pending"),
        ("get", "/jobs?limit=0", 400, "from 1 to 500"),
        ("get", "/jobs?limit=1e3", 400, "from 1 to 500"),
        ("get", "/jobs?queue=" + "q" * 201, 400, "at most 200"),
        ("get", "/jobs/424242", 404, "There is no redrive job 424242"),
        ("get", "/jobs/" + "9" * 30, 404, "There is no redrive job"),
        ("post", "/jobs/424242/cancel", 404, "There is no redrive job 424242"),
        ("post", "/jobs/" + "9" * 30 + "/cancel", 404, "There is no redrive job"),
    ],
)
def test_bad_job_requests(seeded, queue_redis, as_operator, method, path, status, says):
    answer = call(as_operator, method, path)
    assert answer.status_code == status
    assert says in answer.json()["detail"]


def test_the_openapi_document_lists_the_queue_endpoints(as_viewer):
    paths = as_viewer.get("/api/platform/openapi.json").json()["paths"]
    for path, methods in (
        ("/api/platform/queues", {"get"}),
        ("/api/platform/queues/{name}", {"get"}),
        ("/api/platform/queues/{name}/dlq/{message_id}/edit", {"post"}),
        ("/api/platform/queues/{name}/thresholds", {"put"}),
        ("/api/platform/queues/jobs/{job_id}/cancel", {"post"}),
    ):
        assert methods <= set(paths[path]), path
