"""Upgrades at every door: the API (POST /agents/{slug}/upgrade | rollback | scale, the
upgrades' list, one, and the commands), ``manage.py servicing`` (upgrade, upgrades,
upgrade-show, abort, rollback, scale, config) and the Servicing pages. Each door checks the
role, refuses bad input with a sentence naming the problem and nothing created, and what it
does is real: rows, audit entries, live replicas on the local runtime."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from agents.models import Agent
from agents.runtimes.probe import endpoint_answer
from agents.workflows.models import RunStatus
from portal.actors import Actor
from portal.models import AuditEntry
from servicing import services
from servicing.models import Upgrade, UpgradeStatus
from servicing.upgrades import traffic
from tests.servicing.upgrade_kit import drive, versions_running

pytestmark = pytest.mark.django_db

API = "/api/platform"
UPGRADES = f"{API}/servicing/upgrades"
SHELL = Actor.command("test")
# Low gates, so that a driven upgrade ends in seconds.
GATES = {"min_tasks": 30, "min_step_seconds": 1, "verify_seconds": 1}
STEP_IDS = ("plan", "backup", "deploy", "test", "cutover", "verify")


def post(client, path: str, body: object = None, **headers):
    data = json.dumps(body if body is not None else {})
    return client.post(path, data=data, content_type="application/json", **headers)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("servicing", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as error:
        call_command("servicing", *args, stdout=io.StringIO(), stderr=io.StringIO())
    return error.value.returncode, str(error.value)


def audits(action: str) -> list[AuditEntry]:
    """What ``action`` changed (refusals are audited too, as refused)."""
    return list(AuditEntry.objects.filter(action=action, outcome="success").order_by("at"))


def live_count(agent: Agent) -> int:
    return len(traffic.live_replicas(agent))


@pytest.fixture
def released(publish):
    """1.0.0 (the first release) and 1.1.0 for the fleet."""
    return publish("1.1.0")


@pytest.fixture
def cache(running, released) -> Agent:
    """WowCache running 1.0.0 on the local runtime, one replica, with 1.1.0 published."""
    return running("wow-cache")


# --- the API: upgrade, list, one, commands, roll back -------------------------------------


def test_an_operator_upgrades_through_the_api_and_steers_it(cache, as_operator, as_viewer):
    url = f"{API}/agents/wow-cache/upgrade"
    body = {"target_version": "1.1.0", "strategy": "canary", "steps": [10, 50, 100],
            "gates": GATES}  # fmt: skip

    denied = post(as_viewer, url, body)
    assert denied.status_code == 403, denied.content
    assert "it needs the Operator role" in denied.json()["detail"]
    assert not Upgrade.objects.exists() and not audits("servicing.upgrade.request")

    response = post(as_operator, url, body)
    assert response.status_code == 202, response.content
    answer = response.json()
    upgrade = Upgrade.objects.get()
    assert answer["id"] == upgrade.pk and answer["agent"] == "wow-cache"
    assert (answer["from_version"], answer["to_version"]) == ("1.0.0", "1.1.0")
    assert answer["strategy"] == "canary" and answer["steps"] == [10, 50, 100]
    # Queued: running, its plan not begun (no window applies, so it waits for none).
    assert answer["status"] == UpgradeStatus.RUNNING == upgrade.status
    assert answer["phase"] == "Queued" and upgrade.started_at is None
    assert answer["gates"] == GATES and answer["requested_by"] == "user:otto"
    assert answer["workflow_id"] is not None and answer["workflow_id"] == upgrade.run_id
    (entry,) = audits("servicing.upgrade.request")
    assert entry.actor == "user:otto" and entry.target == "agent:wow-cache"
    assert entry.detail["upgrade"] == upgrade.pk and entry.detail["to_version"] == "1.1.0"

    # One at a time.
    again = post(as_operator, url, body)
    assert again.status_code == 409, again.content
    assert "already has an upgrade under way" in again.json()["detail"]
    assert Upgrade.objects.count() == 1

    # Listing and reading, by anyone with a role.
    listed = as_viewer.get(UPGRADES).json()["upgrades"]
    assert [row["id"] for row in listed] == [upgrade.pk]
    assert [
        r["id"] for r in as_viewer.get(UPGRADES, {"agent": "wow-cache"}).json()["upgrades"]
    ] == [upgrade.pk]
    assert as_viewer.get(UPGRADES, {"agent": "wow-memory"}).json()["upgrades"] == []
    assert len(as_viewer.get(UPGRADES, {"status": "running"}).json()["upgrades"]) == 1
    assert as_viewer.get(UPGRADES, {"status": "succeeded"}).json()["upgrades"] == []
    unknown_agent = as_viewer.get(UPGRADES, {"agent": "no-such-agent"})
    assert unknown_agent.status_code == 400
    assert unknown_agent.json()["detail"].startswith("agent: There is no agent 'no-such-agent'")
    bogus = as_viewer.get(UPGRADES, {"status": "bogus"})
    assert bogus.status_code == 400 and "status 'bogus' is not one" in bogus.json()["detail"]
    one = as_viewer.get(f"{UPGRADES}/{upgrade.pk}")
    assert one.status_code == 200 and one.json()["id"] == upgrade.pk
    for bad_id in ("424242", "abc", "99999999999999999999"):
        missing = as_viewer.get(f"{UPGRADES}/{bad_id}")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found", bad_id

    # Commands.
    explode = post(as_operator, f"{UPGRADES}/{upgrade.pk}/explode", {})
    assert explode.status_code == 400
    assert "'explode' is not an upgrade command" in explode.json()["detail"]
    viewer_abort = post(as_viewer, f"{UPGRADES}/{upgrade.pk}/abort", {"reason": "no"})
    assert viewer_abort.status_code == 403
    resume = post(as_operator, f"{UPGRADES}/{upgrade.pk}/resume", {})
    assert resume.status_code == 409 and "is not paused" in resume.json()["detail"]
    upgrade.refresh_from_db()
    assert upgrade.command == "" and upgrade.status == UpgradeStatus.RUNNING
    assert not audits("servicing.upgrade.abort") and not audits("servicing.upgrade.resume")

    aborted = post(as_operator, f"{UPGRADES}/{upgrade.pk}/abort", {"reason": "wrong day"})
    assert aborted.status_code == 200, aborted.content
    upgrade.refresh_from_db()
    # Not yet begun: it ends at once, its run cancelled; the answer says so.
    assert upgrade.status == UpgradeStatus.ABORTED and upgrade.finished_at is not None
    assert aborted.json()["status"] == UpgradeStatus.ABORTED
    assert aborted.json()["command"] == "abort"
    assert upgrade.run.status == RunStatus.CANCELLED
    (entry,) = audits("servicing.upgrade.abort")
    assert entry.detail == {"upgrade": upgrade.pk, "reason": "wrong day"}
    finished = post(as_operator, f"{UPGRADES}/{upgrade.pk}/abort", {})
    assert finished.status_code == 409
    assert "has aborted; nothing to abort" in finished.json()["detail"]

    # Nothing finished took it anywhere: nothing to roll back.
    back = post(as_operator, f"{API}/agents/wow-cache/rollback", {"reason": "x"})
    assert back.status_code == 409, back.content
    assert "has no upgrade to roll back" in back.json()["detail"]
    assert Upgrade.objects.count() == 1
    cache.refresh_from_db()
    assert cache.version == "1.0.0" and versions_running(cache) == {0: "1.0.0"}

    # The abort freed the agent: it may be upgraded again.
    assert post(as_operator, url, body).status_code == 202
    assert Upgrade.objects.filter(status=UpgradeStatus.RUNNING).count() == 1


def test_bad_upgrade_requests_are_refused_and_create_nothing(cache, publish, as_operator):
    url = f"{API}/agents/wow-cache/upgrade"
    good = {"target_version": "1.1.0", "strategy": "canary", "gates": GATES}
    publish("0.9.0")
    cases = [
        ({"target_version": "abc"}, 400, "'abc' is not a version; use MAJOR.MINOR.PATCH"),
        ({"target_version": None}, 400, "None is not a version"),
        ({"target_version": "9.9.9"}, 400, "WowCache has no release 9.9.9; releases: 0.9.0, 1.0.0"),
        ({"strategy": "zigzag"}, 400, "strategy 'zigzag' is not one; use rolling"),
        ({"steps": [50, 10]}, 400, "steps [50, 10] must rise and end at 100"),
        ({"steps": [10, 50]}, 400, "steps [10, 50] must rise and end at 100"),
        ({"steps": [0, 100]}, 400, "step '0' is not a percent from 1 to 100"),
        ({"steps": "ten"}, 400, "step 'ten' is not a percent"),
        (
            {"gates": {"max_error_rate": 500}},
            400,
            "gates.max_error_rate is 500; use a number from 0 to 100",
        ),
        ({"gates": {"nope": 1}}, 400, "unknown gate 'nope'; gates: "),
        ({"gates": {"min_tasks": "many"}}, 400, "gates.min_tasks must be a number"),
        ({"gates": [1]}, 400, "gates must be an object"),
        ({"replicas": 0}, 400, "replicas must be a whole number from 1 to 20, not '0'"),
        ({"replicas": 10**30}, 400, "replicas must be a whole number from 1 to 20"),
        ({"replicas": "two"}, 400, "replicas must be a whole number from 1 to 20, not 'two'"),
        ({"config": {"task_block_ms": "x"}}, 400, "config: task_block_ms"),
        ({"config": {"faults": {"nope": 1}}}, 400, "config: unknown fault 'nope'"),
        ({"config": [1]}, 400, "config must be an object"),
        ({"target_version": "1.1.0\x00"}, 400, "target_version: contains a NUL character"),
        ({"override_window": "now\x00"}, 400, "override_window: contains a NUL character"),
        ({"config": {"note": "a\x00b"}}, 400, "config.note: contains a NUL character"),
        ({"target_version": "0.9.0"}, 400, "0.9.0 is older than the 1.0.0 WowCache runs"),
        ({"target_version": "1.0.0"}, 409, "WowCache runs 1.0.0 already."),
    ]
    for change, status, detail in cases:
        response = post(as_operator, url, {**good, **change})
        assert response.status_code == status, (change, response.content)
        assert detail in response.json()["detail"], (change, response.json())
    assert not Upgrade.objects.exists() and not audits("servicing.upgrade.request")

    unknown = post(as_operator, f"{API}/agents/no-such-agent/upgrade", good)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    not_running = post(as_operator, f"{API}/agents/wow-memory/upgrade", good)
    assert not_running.status_code == 409
    assert "start it before upgrading it" in not_running.json()["detail"]
    services.pin(SHELL, services.find_release("1.1.0"), "held for 1.1.1")
    pinned = post(as_operator, url, good)
    assert pinned.status_code == 409
    assert "1.1.0 is pinned: held for 1.1.1" in pinned.json()["detail"]
    assert not Upgrade.objects.exists() and not audits("servicing.upgrade.request")

    # A downgrade asked for explicitly is taken.
    downgrade = post(as_operator, url, {**good, "target_version": "0.9.0", "allow_downgrade": True})
    assert downgrade.status_code == 202, downgrade.content
    assert Upgrade.objects.get().downgrade is True


def test_scaling_through_the_api_and_the_page(cache, as_operator, as_viewer):
    url = f"{API}/agents/wow-cache/scale"
    denied = post(as_viewer, url, {"replicas": 2})
    assert denied.status_code == 403 and "it needs the Operator role" in denied.json()["detail"]
    for bad in (0, -1, 21, 10**30, "two", 1.5):
        response = post(as_operator, url, {"replicas": bad})
        assert response.status_code == 400, (bad, response.content)
        assert "replicas must be a whole number from 1 to 20" in response.json()["detail"]
    same = post(as_operator, url, {"replicas": 1})
    assert same.status_code == 409 and "runs 1 replica(s) already" in same.json()["detail"]
    assert (
        post(as_operator, f"{API}/agents/no-such-agent/scale", {"replicas": 2}).status_code == 404
    )
    not_running = post(as_operator, f"{API}/agents/wow-memory/scale", {"replicas": 2})
    assert not_running.status_code == 409
    assert live_count(cache) == 1 and not audits("servicing.scale")

    response = post(as_operator, url, {"replicas": 2})
    assert response.status_code == 200, response.content
    assert response.json()["replicas"] == 2 and response.json()["version"] == "1.0.0"
    cache.refresh_from_db()
    assert cache.replicas == 2 and not cache.pending_action
    assert versions_running(cache) == {0: "1.0.0", 1: "1.0.0"}
    (entry,) = audits("servicing.scale")
    assert entry.detail["replicas"] == 2 and entry.detail["was"] == 1

    # Back to one, from the page's Scale button (htmx: a toast).
    viewer_page = as_viewer.post("/servicing/agents/wow-cache/scale/", {"replicas": "1"},
                                 HTTP_HX_REQUEST="true")  # fmt: skip
    assert viewer_page.status_code == 403 and live_count(cache) == 2
    page = as_operator.post("/servicing/agents/wow-cache/scale/", {"replicas": "1"},
                            HTTP_HX_REQUEST="true")  # fmt: skip
    assert page.status_code == 200 and "wow-cache runs 1 replica(s)" in page.content.decode()
    assert page["HX-Trigger"] == "servicing-changed"
    cache.refresh_from_db()
    assert cache.replicas == 1 and live_count(cache) == 1
    assert [e.detail["replicas"] for e in audits("servicing.scale")] == [2, 1]


# --- the command ------------------------------------------------------------------------


def test_the_command_upgrades_lists_shows_aborts_and_rolls_back(cache, publish, load, operator):
    tasks = load(cache, "cli")
    printed = json.loads(
        run("upgrade", "wow-cache", "--to", "1.1.0", "--strategy", "canary", "--steps", "10,100",
            "--gate", "min_tasks=60", "--gate", "min_step_seconds=1", "--gate",
            "verify_seconds=1", "--as", "otto", "--json")
    )  # fmt: skip
    (answer,) = printed["upgrades"]
    upgrade = Upgrade.objects.get()
    assert answer["id"] == upgrade.pk and answer["strategy"] == "canary"
    assert answer["steps"] == [10, 100] and answer["to_version"] == "1.1.0"
    assert answer["gates"] == {"min_tasks": 60, "min_step_seconds": 1, "verify_seconds": 1}
    assert answer["workflow_id"] == upgrade.run_id and answer["requested_by"].endswith(" as otto")
    assert audits("servicing.upgrade.request")[0].source == "manage.py servicing upgrade"

    upgrade = drive(upgrade)
    tasks.check_exactly_once(tasks.settle())
    assert upgrade.status == UpgradeStatus.SUCCEEDED, upgrade.outcome
    assert versions_running(cache) == {0: "1.1.0"}

    listed = json.loads(run("upgrades", "--json"))["upgrades"]
    assert [(row["id"], row["status"]) for row in listed] == [(upgrade.pk, "succeeded")]
    assert json.loads(run("upgrades", "--status", "running", "--json")) == {"upgrades": []}
    table = run("upgrades").splitlines()
    assert table[0].split() == ["ID", "AGENT", "FROM", "TO", "STRATEGY", "STATUS", "SHARE", "PHASE"]
    assert table[1].split()[:5] == [str(upgrade.pk), "wow-cache", "1.0.0", "1.1.0", "canary"]
    shown = run("upgrade-show", str(upgrade.pk))
    assert shown.startswith(f"Upgrade #{upgrade.pk}: WowCache 1.0.0 → 1.1.0 (canary), succeeded")
    assert "STEP" in shown and "10 %" in shown and "passed" in shown
    assert json.loads(run("upgrade-show", str(upgrade.pk), "--json"))["status"] == "succeeded"

    status, said = refused("abort", str(upgrade.pk), "--reason", "x")
    assert status == 2 and f"Upgrade #{upgrade.pk} has succeeded; nothing to abort" in said

    # A second upgrade, aborted by its id before it began.
    publish("1.2.0")
    second_id = json.loads(run("upgrade", "wow-cache", "--to", "1.2.0", "--json"))["upgrades"][0][
        "id"
    ]
    said = run("abort", str(second_id), "--reason", "x")
    assert f"Upgrade #{second_id}: abort asked" in said
    second = Upgrade.objects.get(pk=second_id)
    assert second.status == UpgradeStatus.ABORTED and second.command_reason == "x"
    assert audits("servicing.upgrade.abort")[0].detail == {"upgrade": second_id, "reason": "x"}

    # The finished one rolls back: a rolling upgrade to 1.0.0, and 1.1.0 pinned.
    back = json.loads(run("rollback", "wow-cache", "--reason", "slow", "--json"))
    assert (back["from_version"], back["to_version"], back["strategy"]) == (
        "1.1.0", "1.0.0", "rolling",
    )  # fmt: skip
    assert Upgrade.objects.get(pk=back["id"]).downgrade
    assert services.find_release("1.1.0").pinned


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("upgrade", "wow-cache", "--to", "1.1.0", "--gate", "min_tasks"),
         "--gate 'min_tasks': use NAME=NUMBER"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--gate", "min_tasks=lots"),
         "--gate 'min_tasks=lots': use NAME=NUMBER"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--gate", "nope=1"), "unknown gate 'nope'"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--gate", "max_error_rate=500"),
         "gates.max_error_rate is 500"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--config", "{not json"),
         "--config is not JSON"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--config", "[1]"),
         "config must be an object"),
        (("upgrade", "no-such-agent", "--to", "1.1.0"), "There is no agent 'no-such-agent'"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--as", "vera"),
         "it needs the Operator role and you are Viewer"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--as", "ghost"), "No user 'ghost'"),
        (("upgrade", "wow-cache", "--to", "abc"), "'abc' is not a version"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--strategy", "zigzag"),
         "strategy 'zigzag' is not one"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--strategy", "canary", "--steps", "50,10"),
         "must rise and end at 100"),
        (("upgrade", "wow-cache", "--to", "1.1.0", "--replicas", "0"),
         "replicas must be a whole number"),
        (("upgrade", "wow-cache", "--to", "1.1.0"), "start it before upgrading it"),
        (("upgrades", "--agent", "no-such-agent"), "There is no agent 'no-such-agent'"),
        (("upgrade-show", "424242"), "There is no upgrade '424242'"),
        (("abort", "424242", "--reason", "x"), "There is no upgrade '424242'"),
        (("rollback", "wow-cache"), "WowCache has no upgrade to roll back"),
        (("scale", "wow-cache", "0"), "replicas must be a whole number from 1 to 20"),
        (("scale", "wow-cache", "2", "--as", "vera"), "it needs the Operator role"),
        (("scale", "wow-cache", "2"), "start it before upgrading it"),
        (("config", "wow-cache", "--set", "{not json"), "--set is not JSON"),
        (("config", "wow-cache", "--set", '{"task_block_ms": "x"}'),
         "WowCache's config was not changed: task_block_ms"),
    ],
)  # fmt: skip
def test_bad_command_input_exits_2_and_changes_nothing(released, viewer, args, message):
    changes = AuditEntry.objects.exclude(outcome="refused")
    before = changes.count()
    status, said = refused(*args)
    assert status == 2 and message in said, said
    assert not Upgrade.objects.exists()
    assert changes.count() == before
    assert Agent.objects.get(slug="wow-cache").replicas == 1


def test_the_command_scales_and_patches_the_live_config(cache):
    printed = json.loads(run("scale", "wow-cache", "2", "--json"))
    assert printed["agent"] == "wow-cache" and printed["replicas"] == 2
    assert versions_running(cache) == {0: "1.0.0", 1: "1.0.0"}
    said = run("scale", "wow-cache", "1")
    assert said.startswith("wow-cache runs 1 replica(s) of 1.0.0")
    assert live_count(cache) == 1
    cache.refresh_from_db()
    port = traffic.live_replicas(cache)[0]["port"]

    def faults() -> dict:
        answer = endpoint_answer(port, "/config")
        assert answer["status"] == 200, answer
        return answer["body"]["faults"]

    assert faults()["latency_ms"] == 0
    said = run("config", "wow-cache", "--set", '{"faults": {"latency_ms": 5}}')
    assert "WowCache's config patched; applied to 1 of 1 running replica(s)" in said
    assert faults()["latency_ms"] == 5
    assert audits("agent.config.patch")[0].detail["patch"] == {"faults": {"latency_ms": 5}}
    rolled = json.loads(run("config", "wow-cache", "--rollback", "--json"))
    assert rolled["agent"] == "wow-cache" and all(r["applied"] for r in rolled["replicas"])
    assert faults()["latency_ms"] == 0

    # A NUL written as a JSON escape is refused like any other NUL, not failed in the database.
    for args in (
        ("upgrade", "wow-cache", "--to", "1.1.0", "--config", '{"note": "a\\u0000b"}'),
        ("config", "wow-cache", "--set", '{"note": "a\\u0000b"}'),
    ):
        status, said = refused(*args)
        assert status == 2 and "NUL" in said, said
    assert not Upgrade.objects.exists()
    cache.refresh_from_db()
    assert "note" not in cache.config


# --- the pages ------------------------------------------------------------------------------


def test_the_dashboard_shows_every_agent_and_the_form_to_operators(released, as_viewer,
                                                                   as_operator):  # fmt: skip
    slugs = list(Agent.objects.values_list("slug", flat=True))
    assert len(slugs) == 14
    page = as_viewer.get("/servicing/")
    assert page.status_code == 200
    html = page.content.decode()
    for slug in slugs:
        assert f'data-agent="{slug}"' in html, slug
    assert "data-upgrade-selected" not in html and 'name="agents"' not in html
    html = as_operator.get("/servicing/").content.decode()
    assert "data-upgrade-selected" in html and html.count('name="agents"') == 14
    assert '<option value="1.1.0">' in html  # a target to choose


def test_the_upgrade_form_refuses_what_it_cannot_use(released, as_operator, as_viewer):
    def submit(client, **fields):
        data = {"target_version": "1.1.0", "strategy": "canary", "steps": "10,50,100", **fields}
        return client.post("/servicing/upgrade/", data, follow=True)

    def said(response) -> list[str]:
        return [str(m) for m in response.context["messages"]]

    none = submit(as_operator)
    assert none.redirect_chain == [("/servicing/", 302)]
    assert said(none) == ["Select at least one agent to upgrade."]
    bad_steps = submit(as_operator, agents=["wow-cache"], steps="50,10")
    assert said(bad_steps) == ["steps [50, 10] must rise and end at 100, such as 10,50,100."]
    bad_gate = submit(as_operator, agents=["wow-cache"], gate_min_tasks="lots")
    assert said(bad_gate) == ["gates.min_tasks: 'lots' is not a number."]
    not_running = submit(as_operator, agents=["wow-cache"])
    assert "start it before upgrading it" in said(not_running)[0]
    # Two agents: each refusal is said, per agent.
    both = submit(as_operator, agents=["wow-cache", "no-such-agent"])
    assert [line.split(":")[0] for line in said(both)] == ["wow-cache", "no-such-agent"]
    denied = as_viewer.post("/servicing/upgrade/", {"agents": ["wow-cache"],
                                                    "target_version": "1.1.0"})  # fmt: skip
    assert denied.status_code == 403
    assert not Upgrade.objects.exists() and not audits("servicing.upgrade.request")
    assert as_viewer.get("/servicing/upgrades/424242/").status_code == 404
    assert as_viewer.get("/servicing/upgrades/99999999999999999999/").status_code == 404


def test_an_upgrade_started_from_the_page_is_shown_and_steered(cache, as_operator, as_viewer):
    response = as_operator.post("/servicing/upgrade/", {
        "agents": ["wow-cache"], "target_version": "1.1.0", "strategy": "canary",
        "steps": "10,50,100", "gate_min_tasks": "30", "gate_verify_seconds": "1",
    })  # fmt: skip
    upgrade = Upgrade.objects.get()
    assert (
        response.status_code == 302 and response["Location"] == f"/servicing/upgrades/{upgrade.pk}/"
    )
    assert upgrade.strategy == "canary" and upgrade.steps == [10, 50, 100]
    assert upgrade.gates == {"min_tasks": 30, "verify_seconds": 1}
    assert upgrade.requested_by == "user:otto" and upgrade.run_id is not None
    assert len(audits("servicing.upgrade.request")) == 1

    page = as_viewer.get(f"/servicing/upgrades/{upgrade.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    positions = [html.index(f'data-step="{step}"') for step in STEP_IDS]
    assert positions == sorted(positions)
    assert "<html" in html and "data-command" not in html  # a Viewer has no buttons
    operator_html = as_operator.get(f"/servicing/upgrades/{upgrade.pk}/").content.decode()
    assert 'data-command="abort"' in operator_html and 'data-command="rollback"' in operator_html

    live = as_viewer.get(f"/servicing/upgrades/{upgrade.pk}/", HTTP_HX_REQUEST="true")
    assert live.status_code == 200
    fragment = live.content.decode()
    assert fragment.lstrip().startswith('<div id="sv-upgrade"') and "<html" not in fragment
    assert 'hx-trigger="every 1s"' in fragment  # it keeps refreshing while it runs
    assert all(f'data-step="{step}"' in fragment for step in STEP_IDS)

    # The dashboard shows it under way, and the agent cannot be picked again.
    index = as_operator.get("/servicing/").content.decode()
    assert f'href="/servicing/upgrades/{upgrade.pk}/"' in index

    abort = f"/servicing/upgrades/{upgrade.pk}/abort/"
    assert as_viewer.post(abort, {"reason": "no"}).status_code == 403
    assert as_viewer.post(abort, {"reason": "no"}, HTTP_HX_REQUEST="true").status_code == 403
    upgrade.refresh_from_db()
    assert upgrade.command == "" and upgrade.status == UpgradeStatus.RUNNING
    assert not audits("servicing.upgrade.abort")

    done = as_operator.post(abort, {"reason": "not today"}, follow=True)
    assert done.redirect_chain == [(f"/servicing/upgrades/{upgrade.pk}/", 302)]
    assert [str(m) for m in done.context["messages"]] == [
        "Aborting: traffic goes back to the old version."
    ]
    upgrade.refresh_from_db()
    assert upgrade.status == UpgradeStatus.ABORTED and upgrade.command_reason == "not today"
    assert audits("servicing.upgrade.abort")[0].actor == "user:otto"
    again = as_operator.post(abort, {}, HTTP_HX_REQUEST="true")
    assert again.status_code == 409 and "nothing to abort" in again.content.decode()
    finished = as_viewer.get(f"/servicing/upgrades/{upgrade.pk}/", HTTP_HX_REQUEST="true")
    assert "hx-trigger" not in finished.content.decode()  # ended: no more refreshing
    assert versions_running(cache) == {0: "1.0.0"}
