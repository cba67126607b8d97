"""``manage.py queues``: every subcommand against a real Redis and PostgreSQL, dead letters written
as agentd writes them. ``--json`` gives what the services' serializers give (the API's shapes);
refusals exit 2 with the service's sentence and change nothing; a redrive runs ``--inline`` end
to end; a letter that arrives while the confirmation is on screen is never touched."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
from django.core.management import CommandError, call_command

from agents.agentd import contract
from agents.models import Agent, State
from observability.management import queues_jobs_cli
from observability.queues import catalog, deadletters, figures, redrive
from observability.queues.models import RedriveJob
from observability.queues.schemas import (
    ClaimOut,
    DeadLetterPageOut,
    QueueDetailOut,
    QueueOut,
    SentOut,
    group_out,
    job_out,
    queue_out,
)
from portal.cli import dumps
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db

CACHE = "agents:wow-cache:tasks"
CONNECTION = "ConnectionError: wow-cache:6379"
KEY_ERROR = "KeyError: 'session'"
# Seconds and ages move between two looks; everything else must be the same.
MOVING = {"consumer_lag_seconds", "oldest_age_seconds"}


def queues(*args: str) -> tuple[str, str]:
    """Run ``manage.py queues ...`` here; (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("queues", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refused(*args: str, returncode: int = 2) -> str:
    """Run a command that must fail; its sentence."""
    with pytest.raises(CommandError) as error:
        queues(*args)
    assert error.value.returncode == returncode, str(error.value)
    return str(error.value)


def as_api(value) -> object:
    """``value`` as a client of the API reads it."""
    return json.loads(dumps(value))


def letters(queue_redis, slug="wow-cache") -> list[str]:
    return [entry_id for entry_id, _ in queue_redis.xrange(contract.dead_letters(slug))]


def stream(queue_redis, slug="wow-cache") -> list:
    return queue_redis.xrange(contract.task_stream(slug))


def fingerprint(error: str) -> str:
    return contract.error_fingerprint(error)[0]


def rows(out: str, first: str) -> dict[str, list[str]]:
    """Table rows whose first cell starts with ``first``, split on 2+ spaces."""
    return {
        cells[0]: cells
        for line in out.splitlines()
        if (cells := re.split(r"\s{2,}", line.strip()))[0].startswith(first)
    }


class Terminal(io.StringIO):
    """Standard input that is a terminal someone types into."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def stuck_consumer(seeded, queue_redis):
    """wow-cache RUNNING with one replica; consumer wow-cache-5 (no such replica) holds 2 tasks."""
    Agent.objects.filter(slug="wow-cache").update(state=State.RUNNING)
    key = contract.task_stream("wow-cache")
    queue_redis.xgroup_create(key, contract.CONSUMER_GROUP, id="0", mkstream=True)
    ids = [queue_redis.xadd(key, {"payload": json.dumps({"n": n})}) for n in range(2)]
    queue_redis.xreadgroup(contract.CONSUMER_GROUP, "wow-cache-5", {key: ">"}, count=2)
    return ids


# --- list and show ------------------------------------------------------------------------------


def test_list_prints_every_queue_with_its_figures(seeded, queue_redis, dead_letter):
    for n in range(3):
        queue_redis.xadd(contract.task_stream("wow-cache"), {"n": str(n)})
    dead_letter("wow-cache")

    out, _ = queues("list", "--sort", "name")

    header = out.splitlines()[0].split()
    assert header[:3] == ["QUEUE", "STATUS", "WAITING"] and header[-1] == "DLQ"
    table = rows(out, "agents:") | rows(out, "celery:")
    assert len(table) == len(seeded) + 1
    cache = table[CACHE]
    assert cache[1] == "healthy" and cache[2] == "3" and cache[-1] == "1"
    assert list(table)[0] == "agents:wow-agent-factory:tasks"  # WowAgentFactory, by name
    assert re.search(r"^15 queues: 15 healthy; 3 waiting, 1 dead letters\.$", out, re.M)


def test_list_json_is_what_the_api_answers(seeded, queue_redis, dead_letter):
    queue_redis.xadd(contract.task_stream("wow-cache"), {"n": "1"})
    dead_letter("wow-cache")

    out, _ = queues("list", "--json", "--sort", "name")

    listed = json.loads(out)
    refs = catalog.discover()
    looks = figures.with_rates(figures.look(refs, catalog.agent_redis(), catalog.broker_redis()))
    expected = {f.name: as_api(queue_out(f)) for f in looks}
    assert {row["queue_name"] for row in listed} == set(expected)
    for row in listed:
        assert set(row) == set(QueueOut.model_fields)
        assert {k: v for k, v in row.items() if k not in MOVING} == {
            k: v for k, v in expected[row["queue_name"]].items() if k not in MOVING
        }
    cache = next(row for row in listed if row["queue_name"] == CACHE)
    assert (cache["messages_pending"], cache["dlq_messages"]) == (1, 1)


def test_list_filters_and_sorts_as_the_page_does(seeded, queue_redis, dead_letter):
    dead_letter("wow-cache")
    dead_letter("wow-cache")
    dead_letter("wow-event")

    by_dlq, _ = queues("list", "--sort=-dlq", "--kind", "agent", "--json")
    celery, _ = queues("list", "--kind", "celery", "--json")
    none, _ = queues("list", "--status", "critical,degraded", "--json")

    names = [row["queue_name"] for row in json.loads(by_dlq)]
    assert names[:2] == [CACHE, "agents:wow-event:tasks"] and "celery:celery" not in names
    assert [row["queue_name"] for row in json.loads(celery)] == ["celery:celery"]
    assert json.loads(none) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--status", "asleep"), "--status 'asleep' is not a queue status; use one of healthy"),
        (("--kind", "kafka"), "--kind 'kafka' is not a kind of queue"),
        (("--sort", "speed"), "Cannot sort by 'speed': choose one of name, status"),
    ],
)
def test_a_bad_list_filter_exits_2_with_a_sentence(seeded, queue_redis, args, says):
    assert says in refused("list", *args)


def test_show_takes_a_slug_or_a_queue_name_and_its_json_is_the_detail(
    seeded, queue_redis, dead_letter, stuck_consumer
):
    dead_letter("wow-cache", error=CONNECTION)
    dead_letter("wow-cache", error=KEY_ERROR)
    dead_letter("wow-cache", error=KEY_ERROR)

    by_slug, _ = queues("show", "wow-cache", "--json")
    by_name, _ = queues("show", CACHE, "--json")

    detail = json.loads(by_slug)
    assert set(detail) == set(QueueDetailOut.model_fields)
    moving = MOVING | {"group_consumers", "pending_entries", "consumers"}
    strip = lambda d: {k: v for k, v in d.items() if k not in moving}  # noqa: E731
    assert strip(json.loads(by_name)) == strip(detail)
    assert detail["queue_name"] == CACHE and detail["in_flight"] == 2
    [consumer] = detail["group_consumers"]
    assert consumer["name"] == "wow-cache-5" and consumer["stuck"] is True
    assert "replica 5 is gone" in consumer["why"]
    assert [e["id"] for e in detail["pending_entries"]] == stuck_consumer
    assert detail["dlq_groups"] == [
        group_out(deadletters.Group(fingerprint(KEY_ERROR), KEY_ERROR, 2)),
        group_out(deadletters.Group(fingerprint(CONNECTION), CONNECTION, 1)),
    ]
    assert detail["thresholds"]["source"] == "default"


def test_show_prints_health_consumers_pending_entries_groups_and_jobs(
    seeded, queue_redis, dead_letter, stuck_consumer
):
    dead_letter("wow-cache")
    queues("redrive", "wow-cache", "--all", "--yes", "--no-wait")

    out, _ = queues("show", "wow-cache")

    title = "WowCache · agents:wow-cache:tasks (agent wow-cache, RUNNING) · healthy"
    assert out.startswith(title)
    assert "Thresholds (the defaults)" in out
    consumer = rows(out, "wow-cache-5")["wow-cache-5"]
    assert consumer[1:3] == ["5", "2"]
    assert consumer[-1].startswith("stuck: replica 5 is gone")
    assert set(rows(out, stuck_consumer[0][:8])) == set(stuck_consumer)
    assert CONNECTION in out
    job = RedriveJob.objects.get()
    assert rows(out, str(job.pk))[str(job.pk)][1:4] == ["redrive", "all", "pending"]


def test_show_the_celery_queue(seeded, queue_redis):
    out, _ = queues("show", "celery:celery", "--json")
    detail = json.loads(out)
    assert detail["kind"] == "celery" and detail["group_consumers"] == []


@pytest.mark.parametrize(
    "name", ["wow-nobody", "agents:nobody:tasks", "celery:other", "wow\x00cache", "x" * 500, " "]
)
def test_an_unknown_or_malformed_queue_exits_2_and_says_what_names_look_like(
    seeded, queue_redis, name
):
    said = refused("show", name)
    assert "agents:<slug>:tasks" in said or "Name a queue" in said
    assert "Traceback" not in said


# --- dead letters -------------------------------------------------------------------------------


def test_dlq_pages_newest_first_by_keyset_and_its_json_is_the_api_page(
    seeded, queue_redis, dead_letter
):
    ids = [dead_letter("wow-cache", payload={"n": n}) for n in range(5)]

    out, _ = queues("dlq", "wow-cache", "--limit", "2")
    as_json, _ = queues("dlq", "wow-cache", "--limit", "2", "--json")
    older, _ = queues("dlq", CACHE, "--limit", "2", "--before", ids[3], "--json")
    oldest, _ = queues("dlq", CACHE, "--limit", "2", "--last", "--json")

    assert out.splitlines()[0] == "agents:wow-cache:dlq: 5 dead letters."
    assert list(rows(out, ids[0][:6])) == [ids[4], ids[3]]
    assert f"More: older: --before {ids[3]}." in out
    page = json.loads(as_json)
    assert set(page) == set(DeadLetterPageOut.model_fields)
    expected = deadletters.page(catalog.agent_redis(), catalog.resolve(CACHE), limit=2)
    assert page["messages"] == as_api([letter.as_json() for letter in expected.letters])
    assert (page["total"], page["newer"], page["older"]) == (5, None, ids[3])
    assert [m["message_id"] for m in json.loads(older)["messages"]] == [ids[2], ids[1]]
    assert json.loads(older)["newer"] == ids[2]
    assert [m["message_id"] for m in json.loads(oldest)["messages"]] == [ids[1], ids[0]]


def test_dlq_groups_one_group_one_letter_and_a_recount(seeded, queue_redis, dead_letter):
    dead_letter("wow-cache", error=CONNECTION)
    keyed = dead_letter("wow-cache", error=KEY_ERROR, payload={"key": "s", "token": "t0k"})
    group = fingerprint(KEY_ERROR)

    groups, _ = queues("dlq", "wow-cache", "--groups")
    one_group, _ = queues("dlq", "wow-cache", "--group", group, "--json")
    shown, _ = queues("dlq", "wow-cache", "--show", keyed)
    shown_json, _ = queues("dlq", "wow-cache", "--show", keyed, "--json")
    queue_redis.delete(contract.dead_letter_groups("wow-cache"))
    recounted, _ = queues("dlq", "wow-cache", "--recount", "--json")

    assert rows(groups, group)[group][1:] == ["1", KEY_ERROR]
    assert [m["message_id"] for m in json.loads(one_group)["messages"]] == [keyed]
    assert f"error         {KEY_ERROR}" in shown and '"token": "t0k"' in shown  # Admin: unmasked
    assert json.loads(shown_json)["payload"] == {"key": "s", "token": "t0k"}
    assert sorted((g["label"], g["count"]) for g in json.loads(recounted)) == [
        (CONNECTION, 1),
        (KEY_ERROR, 1),
    ]
    assert AuditEntry.objects.filter(action="queues.recount").count() == 1


def test_dlq_exports_a_group_or_chosen_letters_as_json_lines(
    seeded, queue_redis, dead_letter, tmp_path
):
    first = dead_letter("wow-cache", error=CONNECTION)
    dead_letter("wow-cache", error=KEY_ERROR)
    third = dead_letter("wow-cache", error=CONNECTION)
    target = tmp_path / "letters.jsonl"

    _, err = queues("dlq", "wow-cache", "--export", str(target), "--group", fingerprint(CONNECTION))
    chosen, _ = queues("dlq", "wow-cache", "--export", "-", "--ids", third, "--scope", "selected")

    assert err.strip() == f"Exported 2 dead letters of agents:wow-cache:dlq to {target}."
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["message_id"] for line in lines] == [first, third]
    assert lines[0]["error"] == CONNECTION and lines[0]["retry_count"] == 3
    assert [json.loads(line)["message_id"] for line in chosen.splitlines()] == [third]
    nothing, err = queues("dlq", "wow-event", "--export", "-")
    assert nothing == "" and "Exported 0 dead letters of agents:wow-event:dlq" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--limit", "0"), "--limit must be a whole number from 1 to 500; got '0'"),
        (("--limit", "99999999999999999999999"), "--limit must be a whole number"),
        (("--before", "yesterday"), "'yesterday' is not a message id"),
        (("--group", "nope!"), "'nope!' is not an error group"),
        (("--show", "1-0"), "Dead letter 1-0 is not in agents:wow-cache:dlq"),
        (("--show", "x\x00"), "is not a message id"),
        (("--export", "/nonexistent/dir/x.jsonl"), "Cannot write '/nonexistent/dir/x.jsonl'"),
        (("--export", "bad\x00name"), "Cannot write"),
    ],
)
def test_bad_dead_letter_input_exits_2_with_a_sentence(
    seeded, queue_redis, dead_letter, args, says
):
    dead_letter("wow-cache")
    assert says in refused("dlq", "wow-cache", *args)


def test_the_celery_queue_has_no_dead_letters(seeded, queue_redis):
    assert "the Celery queue carries the portal's own jobs" in refused("dlq", "celery:celery")


# --- redrive and delete -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the inline runner's thread has its own connection
def test_redrive_inline_sends_back_the_snapshot_with_a_progress_bar_and_counts(
    seeded, queue_redis, dead_letter
):
    for _ in range(4):
        dead_letter("wow-cache")
    tired = dead_letter("wow-cache", redrives=3)

    out, err = queues("redrive", "wow-cache", "--all", "--inline", "--yes", "--rate", "1000")

    job = RedriveJob.objects.get()
    assert job.status == RedriveJob.Status.SUCCEEDED
    assert (job.total, job.done, job.held_back, job.rate_limit) == (5, 4, 1, 1000)
    assert job.actor.startswith("command:")
    assert re.fullmatch(
        rf"Job {job.pk} \(retry wow-cache, all\): succeeded in \d+\.\d s\. 4 sent back; 1 held "
        r"back: redriven too often already \(force to include\)\.\n",
        out,
    )
    assert f"Job {job.pk}: retry wow-cache, all: succeeded" in err  # the bar, on stderr
    assert letters(queue_redis) == [tired]
    assert len(stream(queue_redis)) == 4
    assert queue_redis.llen("celery") == 0  # --inline: no task was handed to a worker
    entry = AuditEntry.objects.get(action="queues.redrive")
    assert entry.detail["total"] == 5


@pytest.mark.django_db(transaction=True)
def test_redrive_inline_json_is_the_finished_job(seeded, queue_redis, dead_letter):
    kept = dead_letter("wow-cache")
    gone = "1-0"

    out, _ = queues("redrive", CACHE, "--ids", f"{kept},{gone}", "--inline", "--yes", "--json")

    job = RedriveJob.objects.get()
    assert json.loads(out) == as_api(job_out(job))
    assert (job.done, job.skipped, job.message_ids) == (1, 1, [kept, gone])


def test_a_letter_that_arrives_while_the_question_is_on_screen_is_never_touched(
    seeded, queue_redis, dead_letter, monkeypatch
):
    shown = [dead_letter("wow-cache") for _ in range(3)]
    late = []

    class Operator(Terminal):
        def readline(self, *args):
            late.append(dead_letter("wow-cache"))  # arrives while the operator reads
            return "y\n"

    monkeypatch.setattr(sys, "stdin", Operator())
    out, err = queues("redrive", "wow-cache", "--all", "--no-wait")

    assert (
        f"Retry 3 dead letters of WowCache: every one up to {shown[-1]}, none that arrives "
        "from now on? [y/N]"
    ) in err
    job = RedriveJob.objects.get(pk=int(out))
    assert (job.upto_id, job.total, job.status) == (shown[-1], 3, RedriveJob.Status.PENDING)
    redrive.run(job.pk)
    job.refresh_from_db()
    assert (job.status, job.done) == (RedriveJob.Status.SUCCEEDED, 3)
    assert letters(queue_redis) == late
    assert f"`manage.py queues jobs {job.pk} --watch` follows it" in err


def test_redrive_asks_at_a_terminal_and_needs_yes_elsewhere(
    seeded, queue_redis, dead_letter, monkeypatch
):
    dead_letter("wow-cache")

    no_terminal = refused("redrive", "wow-cache", "--all")
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    declined = refused("redrive", "wow-cache", "--group", fingerprint(CONNECTION))

    assert no_terminal.startswith("Retry 1 dead letters of WowCache")
    assert "run it at a terminal, or pass --yes. Nothing was done." in no_terminal
    assert declined == "Not confirmed; nothing was done."
    assert not RedriveJob.objects.exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--all", "--rate", "0.01"), "The rate must be from 0.1 to 100,000 messages per second"),
        (("--all", "--rate", "1e12"), "The rate must be from 0.1"),
        (("--all", "--rate", "nan"), "The rate must be from 0.1"),
        (("--ids", "not-an-id"), "'not-an-id' is not a message id"),
        (("--ids", *[f"{n}-0" for n in range(1001)]), "1,001 messages selected; at most 1,000"),
        (("--group", "zz"), "'zz' is not an error group"),
        (("--all", "--inline", "--no-wait"), "--inline runs the job in this process"),
    ],
)
def test_bad_redrives_exit_2_and_start_nothing(seeded, queue_redis, dead_letter, args, says):
    dead_letter("wow-cache")
    assert says in refused("redrive", "wow-cache", *args, "--yes")
    assert not RedriveJob.objects.exists()
    assert len(letters(queue_redis)) == 1


def test_redrive_refusals_are_the_services_sentences(seeded, queue_redis, dead_letter):
    empty = refused("redrive", "wow-event", "--all", "--yes")
    tired = dead_letter("wow-cache", redrives=3)
    too_often = refused("redrive", "wow-cache", "--ids", tired, "--yes")
    queues("redrive", "wow-cache", "--ids", tired, "--yes", "--force", "--no-wait")

    assert empty == "There are no dead letters in agents:wow-event:dlq; nothing to do."
    assert f"Message {tired} has been sent back 3 times already" in too_often
    assert RedriveJob.objects.get().force is True


def test_delete_all_needs_the_slug_typed_and_the_rest_a_yes(
    seeded, queue_redis, dead_letter, monkeypatch
):
    ids = [dead_letter("wow-cache") for _ in range(3)]

    without = refused("delete", "wow-cache", "--all", "--yes")
    wrong = refused("delete", "wow-cache", "--all", "--confirm", "wow-event")
    monkeypatch.setattr(sys, "stdin", Terminal("wow-cach\n"))
    mistyped = refused("delete", "wow-cache", "--all")
    assert not RedriveJob.objects.exists() and letters(queue_redis) == ids

    monkeypatch.setattr(sys, "stdin", Terminal("wow-cache\n"))
    out, err = queues("delete", "wow-cache", "--all", "--no-wait")
    redrive.run(int(out))
    one, _ = queues("delete", "wow-cache", "--ids", ids[0], "--yes", "--no-wait")

    assert "pass --confirm <slug>" in without
    assert wrong.startswith("Deleting every dead letter of WowCache needs typed confirmation")
    assert mistyped == wrong
    assert "Type the agent's slug, wow-cache, to confirm:" in err
    assert letters(queue_redis) == [] and stream(queue_redis) == []
    assert RedriveJob.objects.get(pk=int(one)).scope == "selected"


# --- jobs ---------------------------------------------------------------------------------------


def test_jobs_lists_shows_and_cancels(seeded, queue_redis, dead_letter):
    dead_letter("wow-cache")
    dead_letter("wow-event")
    first = int(queues("redrive", "wow-cache", "--all", "--yes", "--no-wait")[0])
    second = int(queues("delete", "wow-event", "--all", "--confirm", "wow-event", "--no-wait")[0])

    listed, _ = queues("jobs")
    only_cache, _ = queues("jobs", "--queue", "wow-cache", "--json")
    assert json.loads(only_cache) == as_api([job_out(RedriveJob.objects.get(pk=first))])
    shown, _ = queues("jobs", str(first))
    cancelled, _ = queues("cancel", str(first))
    redrive.run(first)
    redrive.run(second)
    again = refused("cancel", str(first))
    watched, _ = queues("jobs", str(second), "--watch", "--json")

    assert list(rows(listed, str(first))) == [str(first)]
    assert rows(listed, str(second))[str(second)][1:5] == [
        "agents:wow-event:tasks", "delete", "all", "pending",
    ]  # fmt: skip
    assert "snapshot" in shown and "up to" in shown
    assert cancelled.strip() == f"Cancelling job {first}: it stops after the batch in hand."
    assert RedriveJob.objects.get(pk=first).status == RedriveJob.Status.CANCELLED
    assert again == f"Job {first} has already cancelled; nothing to cancel."
    assert json.loads(watched)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("cancel", "abc"), "A job id must be a whole number from 1 to"),
        (("cancel", "9" * 30), "A job id must be a whole number"),
        (("cancel", "424242"), "There is no redrive job 424242"),
        (("jobs", "0"), "A job id must be a whole number from 1"),
        (("jobs", "--limit", "100000"), "--limit must be a whole number from 1 to 500"),
        (("jobs", "--queue", "a\x00b"), "is not a queue name or an agent's slug"),
        (("jobs", "--watch"), "--watch follows one job"),
    ],
)
def test_bad_job_input_exits_2(seeded, queue_redis, args, says):
    assert says in refused(*args)


def test_ctrl_c_on_a_workers_job_offers_to_cancel_it(seeded, queue_redis, dead_letter, monkeypatch):
    dead_letter("wow-cache")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(queues_jobs_cli, "watch_job", interrupted)
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    said = refused("redrive", "wow-cache", "--all", "--yes", returncode=1)

    job = RedriveJob.objects.get()
    assert job.cancel_requested and job.status == RedriveJob.Status.PENDING
    assert said.startswith(f"Cancel requested: no worker has picked job {job.pk} up yet")

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    kept = refused("redrive", "wow-cache", "--all", "--yes", returncode=1)
    assert "it goes on. `manage.py queues jobs" in kept
    assert not RedriveJob.objects.latest("pk").cancel_requested


# --- claim, purge, send -------------------------------------------------------------------------


def test_claim_hands_a_stuck_consumers_entries_to_a_live_replica(
    seeded, queue_redis, stuck_consumer
):
    out, _ = queues("claim", "wow-cache", "--consumer", "wow-cache-5", "--json")

    result = json.loads(out)
    assert set(result) == set(ClaimOut.model_fields)
    assert result == {
        "mode": "claim", "consumer": "wow-cache-5", "target": "wow-cache-0",
        "ids": stuck_consumer, "gone": 0,
    }  # fmt: skip
    held = queue_redis.xpending_range(CACHE, contract.CONSUMER_GROUP, "-", "+", 10)
    assert {entry["consumer"] for entry in held} == {"wow-cache-0"}
    assert AuditEntry.objects.get(action="queues.claim").detail["count"] == 2


def test_redeliver_puts_the_entries_back_as_new_messages(seeded, queue_redis, stuck_consumer):
    out, _ = queues("claim", CACHE, "--consumer", "wow-cache-5", "--redeliver")

    assert out.strip() == "Redelivered 2 entries of wow-cache-5 as new messages."
    assert queue_redis.xpending(CACHE, contract.CONSUMER_GROUP)["pending"] == 0
    assert len(stream(queue_redis)) == 2


def test_claim_refusals_exit_2(seeded, queue_redis, stuck_consumer):
    unknown = refused("claim", "wow-cache", "--consumer", "wow-cache-9")
    Agent.objects.filter(slug="wow-cache").update(state=State.STOPPED)
    no_target = refused("claim", "wow-cache", "--consumer", "wow-cache-5")

    assert (
        unknown
        == "agents:wow-cache:tasks has no consumer 'wow-cache-9'; its consumers: wow-cache-5."
    )
    assert no_target.startswith("No healthy replica of WowCache to hand the entries to")
    assert not AuditEntry.objects.filter(action__startswith="queues.").exists()


def test_purge_needs_the_slug_and_says_what_it_removed(seeded, queue_redis, monkeypatch):
    for n in range(4):
        queue_redis.xadd(contract.task_stream("wow-cache"), {"n": str(n)})

    without = refused("purge", "wow-cache")
    wrong = refused("purge", "wow-cache", "--confirm", "wow-event")
    assert len(stream(queue_redis)) == 4
    monkeypatch.setattr(sys, "stdin", Terminal("wow-cache\n"))
    out, err = queues("purge", "wow-cache")

    assert "type the agent's slug, wow-cache, to confirm. Nothing was deleted." in without
    assert wrong == without
    assert "deletes the 4 tasks waiting for WowCache" in err
    assert out.strip() == "Purged 4 waiting messages from agents:wow-cache:tasks."
    assert stream(queue_redis) == []
    assert AuditEntry.objects.get(action="queues.purge").actor.startswith("command:")


def test_send_puts_messages_that_carry_who_produced_them(seeded, queue_redis):
    out, _ = queues(
        "send", "wow-cache", "--count", "3", "--payload", '{"op": "get"}', "--customer", "acme",
        "--json",
    )  # fmt: skip

    sent = json.loads(out)
    assert set(sent) == set(SentOut.model_fields)
    entries = stream(queue_redis)
    assert sent == {"queue_name": CACHE, "count": 3, "ids": [e for e, _ in entries]}
    fields = entries[0][1]
    assert fields[contract.FIELD_PRODUCER].startswith("portal:command:")
    assert json.loads(fields[contract.FIELD_PAYLOAD]) == {"op": "get"}
    assert fields[contract.FIELD_CUSTOMER] == "acme"
    plain, _ = queues("send", CACHE)
    assert re.fullmatch(r"Sent 1 message to agents:wow-cache:tasks \(\d+-\d+\)\.\n", plain)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--payload", '{"a": 1,}'), "The payload is not valid JSON: line 1, column 9"),
        (("--payload", "[1]"), "The payload must be a JSON object"),
        (("--payload", '{"a": "\\u0000"}'), "contains a NUL character"),
        (("--count", "10001"), "count must be from 1 to 10,000; got 10,001"),
        (("--count", "9" * 40), "count must be from 1 to 10,000"),
        (("--count", "two"), "count must be a whole number from 1 to 10,000"),
        (("--customer", "a\x00b"), "The customer must be an id of at most 200 characters"),
    ],
)
def test_bad_sends_exit_2_and_send_nothing(seeded, queue_redis, args, says):
    assert says in refused("send", "wow-cache", *args)
    assert stream(queue_redis) == []
    assert not AuditEntry.objects.filter(action="queues.send").exists()


def test_the_celery_queue_takes_no_messages(seeded, queue_redis):
    assert "Cannot send messages on celery:celery" in refused("send", "celery:celery")


# --- load ---------------------------------------------------------------------------------------


def test_load_sends_round_robin_in_one_audited_send_per_agent_per_tick(seeded, queue_redis):
    out, _ = queues(
        "load", "--count", "7", "--rate", "1000", "--agents", "wow-cache,wow-event", "--json"
    )

    summary = json.loads(out)
    assert summary["agents"] == {"wow-cache": 4, "wow-event": 3}
    assert (summary["sent"], summary["sends"], summary["interrupted"]) == (7, 2, False)
    assert summary["producer"].startswith("portal:command:")
    assert summary["rate_measured"] > 0
    fields = stream(queue_redis, "wow-cache")[0][1]
    assert json.loads(fields[contract.FIELD_PAYLOAD]) == {"kind": "load", "n": 0}
    assert fields[contract.FIELD_PRODUCER] == summary["producer"]
    assert len(stream(queue_redis, "wow-event")) == 3
    assert AuditEntry.objects.filter(action="queues.send").count() == 2


def test_load_goes_to_the_entry_agents_of_the_forwarding_chains_by_default(seeded, queue_redis):
    out, _ = queues("load", "--count", "5", "--rate", "500")

    sent = rows(out, "wow-")
    assert sorted(sent) == sorted(
        ["wow-event", "wow-memory", "wow-search", "wow-support", "wow-integration"]
    )
    assert {cells[1] for cells in sent.values()} == {"1"}
    assert re.search(
        r"^Sent 5 messages to 5 agents in \d+\.\d s: [\d,.]+ msg/s measured", out, re.M
    )


def test_load_for_a_duration_keeps_the_rate(seeded, queue_redis):
    out, _ = queues("load", "--rate", "40", "--duration", "0.25", "--agents", "wow-cache", "--json")

    summary = json.loads(out)
    assert summary["sent"] == 10 and summary["sends"] == 1
    assert summary["seconds"] >= 0.25


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--rate", "0"), "--rate must be a number from 0.1 to 10,000; got '0'"),
        (("--rate", "1e9"), "--rate must be a number from 0.1 to 10,000"),
        (("--rate", "nan"), "--rate must be a number"),
        (("--count", "0"), "--count must be a whole number from 1"),
        (("--count", "9" * 30), "--count must be a whole number"),
        (("--duration", "-1"), "--duration must be a number from 0.1"),
        (("--agents", "wow-cache,wow-nobody"), "There is no queue 'agents:wow-nobody:tasks'"),
        (("--agents", ","), "--agents names no agent"),
        (("--agents", "celery:celery"), "Cannot send load on celery:celery"),
    ],
)
def test_bad_load_input_exits_2_and_sends_nothing(seeded, queue_redis, args, says):
    until = [] if {"--count", "--duration"} & set(args) else ["--count", "3"]
    assert says in refused("load", *until, *args)
    assert stream(queue_redis) == []
