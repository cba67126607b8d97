"""The Gantt chart of a run: a lane per step in declared order (compensations after them), a bar
per attempt on one time axis, failed and queued stretches told apart, a now line while the run
goes, the critical path and the deadline marked, text escaped, and fast for 200 steps."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.workflows import deadlines, services
from agents.workflows.definitions import Definition, Retry, Step
from agents.workflows.gantt import duration, elapsed_label, render_gantt
from agents.workflows.models import StepRun, WorkflowRun

pytestmark = pytest.mark.django_db(transaction=True)

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    """The chart as XML: this fails on markup that is not well-formed."""
    root = ET.fromstring(str(svg))
    assert root.tag == f"{NS}svg"
    return root


def lanes(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{NS}g") if "gantt-lane" in g.get("class", "").split()]


def classes(element: ET.Element) -> set[str]:
    return set(element.get("class", "").split())


def attempts(lane: ET.Element) -> list[ET.Element]:
    return [g for g in lane.iter(f"{NS}g") if "gantt-attempt" in classes(g)]


def span(attempt: ET.Element) -> tuple[float, float]:
    """Where an attempt's running bar starts and ends on the x axis."""
    bar = next(r for r in attempt.iter(f"{NS}rect") if "gantt-bar" in classes(r))
    x = float(bar.get("x"))
    return x, x + float(bar.get("width"))


def rows(run: WorkflowRun) -> list[StepRun]:
    return list(StepRun.objects.filter(run=run))


def parallel(wf, name: str = "t-gantt-parallel", **options) -> Definition:
    """a → (b, c slow, side by side) → d."""
    return wf.define(
        Definition(
            name=name, version=1, title="Parallel", max_parallel=2,
            steps=(
                Step("a", "test_echo"),
                Step("b", "test_slow", after=("a",), inputs={"seconds": 0.3}),
                Step("c", "test_slow", after=("a",), inputs={"seconds": 0.3}),
                Step("d", "test_echo", after=("b", "c")),
            ),
            **options,
        )
    )  # fmt: skip


def test_a_finished_run_has_a_lane_per_step_in_order_with_its_bars(wf) -> None:
    parallel(wf)
    run = wf.drive(services.start(wf.command, "t-gantt-parallel"))
    assert run.status == "succeeded"
    svg = render_gantt(run, rows(run))
    root = parse(svg)
    assert root.get("role") == "group"  # its bars are links: a group, not an image
    assert root.get("viewBox").startswith("0 0 1000 ")
    label = root.get("aria-label")
    assert label.startswith(f"Gantt chart of Parallel #{run.pk}, succeeded: 4 steps over ")
    assert "4 succeeded" in label
    found = lanes(root)
    assert [lane.get("data-step") for lane in found] == ["a", "b", "c", "d"]
    for lane in found:
        assert "is-succeeded" in classes(lane)
        (attempt,) = attempts(lane)
        assert "is-succeeded" in classes(attempt)
        title = attempt.find(f"{NS}title").text
        assert ", attempt 1: succeeded, ran " in title
    # Lanes link to the steps' anchors on the run page.
    links = [a.get("href") for a in root.iter(f"{NS}a")]
    assert links == ["#step-a", "#step-b", "#step-c", "#step-d"]
    # Over: no now line; the time axis has ticks from 0.
    assert not [g for g in root.iter(f"{NS}g") if "gantt-now" in classes(g)]
    ticks = [t.text for t in root.iter(f"{NS}text") if "gantt-tick" in classes(t)]
    assert ticks[0] == "0" and len(ticks) >= 3 and all(t.endswith(" s") for t in ticks[1:])
    # Height follows the lanes.
    assert int(root.get("viewBox").split()[3]) > 4 * 22


def test_parallel_branches_overlap_and_follow_their_dependency(wf) -> None:
    parallel(wf)
    run = wf.drive(services.start(wf.command, "t-gantt-parallel"))
    bars = {
        lane.get("data-step"): span(attempts(lane)[0])
        for lane in lanes(parse(render_gantt(run, rows(run))))
    }
    (b0, b1), (c0, c1), (d0, _) = bars["b"], bars["c"], bars["d"]
    assert b0 < c1 and c0 < b1  # side by side in time
    assert bars["a"][0] <= min(b0, c0) and d0 >= max(b1, c1) - 1


def test_failed_attempts_differ_from_the_one_that_succeeded(wf) -> None:
    wf.define(Definition(name="t-gantt-flaky", version=1, title="Flaky", steps=(
        Step("call", "test_flaky", inputs={"failures": 2},
             retry=Retry(attempts=3, backoff_seconds=0.05, factor=1)),
    )))  # fmt: skip
    run = wf.drive(services.start(wf.command, "t-gantt-flaky"))
    (lane,) = lanes(parse(render_gantt(run, rows(run))))
    found = attempts(lane)
    assert [a.get("data-attempt") for a in found] == ["1", "2", "3"]
    assert [sorted(classes(a) & {"is-failed", "is-succeeded"}) for a in found] == [
        ["is-failed"],
        ["is-failed"],
        ["is-succeeded"],
    ]
    assert "is-replaced" in classes(found[0]) and "is-replaced" not in classes(found[2])
    title = found[0].find(f"{NS}title").text
    assert title.startswith("Call, attempt 1: failed, ran ") and "attempt 1 failed" in title
    # Each retry waited its backoff in the queue: a lighter stretch before its bar.
    assert found[1].find(f"{NS}rect").get("class") == "gantt-queued"
    assert span(found[0])[1] <= span(found[1])[0] <= span(found[2])[0]


def test_a_running_step_reaches_the_now_line_and_later_steps_are_empty_lanes(wf) -> None:
    wf.define(Definition(name="t-gantt-running", version=1, title="Running", steps=(
        Step("first", "test_echo"),
        Step("wait", "test_slow", after=("first",)),  # never ends by itself
        Step("last", "test_echo", after=("wait",)),
    )))  # fmt: skip
    run = services.start(wf.command, "t-gantt-running")
    run = wf.drive(run, until=lambda r: wf.statuses(r)["wait"] == "running")
    now = timezone.now() + timedelta(seconds=2)
    root = parse(render_gantt(run, rows(run), now=now))
    found = {lane.get("data-step"): lane for lane in lanes(root)}
    (now_group,) = [g for g in root.iter(f"{NS}g") if "gantt-now" in classes(g)]
    now_x = float(now_group.find(f"{NS}line").get("x1"))
    running = attempts(found["wait"])[0]
    assert "is-running" in classes(running)
    assert span(running)[1] == pytest.approx(now_x, abs=0.2)
    assert now_x == pytest.approx(985, abs=0.2)  # the axis ends now
    assert "running for" in running.find(f"{NS}title").text
    assert "is-pending" in classes(found["last"]) and attempts(found["last"]) == []
    assert "1 running" in root.get("aria-label") and "1 pending" in root.get("aria-label")
    services.cancel(run, wf.command)


def test_the_critical_path_is_marked_and_named_in_the_legend(wf) -> None:
    parallel(wf)
    run = wf.drive(services.start(wf.command, "t-gantt-parallel"))
    path = deadlines.predict(run).critical_path
    assert path[0] == "a" and path[-1] == "d" and len(path) == 3
    root = parse(render_gantt(run, rows(run), critical_path=path))
    marked = [lane.get("data-step") for lane in lanes(root) if "is-critical" in classes(lane)]
    assert marked == path
    for lane in lanes(root):
        has_mark = any("gantt-critical-mark" in classes(r) for r in lane.iter(f"{NS}rect"))
        assert has_mark == (lane.get("data-step") in path)
        assert ("is-critical" in classes(attempts(lane)[0])) == (lane.get("data-step") in path)
    legend = [t.text for t in root.iter(f"{NS}text") if "gantt-legend-label" in classes(t)]
    assert "Critical path" in legend
    assert "critical path: A → " in root.get("aria-label")
    # Without one, no mark and no legend entry.
    plain = parse(render_gantt(run, rows(run)))
    assert "Critical path" not in [t.text for t in plain.iter(f"{NS}text")]
    assert not [r for r in plain.iter(f"{NS}rect") if "gantt-critical-mark" in classes(r)]


def test_a_deadline_is_a_line_on_the_axis_or_named_when_far_beyond(wf) -> None:
    parallel(wf)
    run = wf.drive(services.start(wf.command, "t-gantt-parallel"))
    length = run.finished_at - run.started_at
    run.deadline_at = run.started_at + length / 2  # missed: inside the axis
    root = parse(render_gantt(run, rows(run)))
    (group,) = [g for g in root.iter(f"{NS}g") if "gantt-deadline" in classes(g)]
    x = float(group.find(f"{NS}line").get("x1"))
    assert 220 < x < 985
    assert "Deadline" in [
        t.text for t in root.iter(f"{NS}text") if "gantt-legend-label" in classes(t)
    ]
    run.deadline_at = run.started_at + length * 1.5  # soon after: the axis stretches to it
    root = parse(render_gantt(run, rows(run)))
    (group,) = [g for g in root.iter(f"{NS}g") if "gantt-deadline" in classes(g)]
    assert float(group.find(f"{NS}line").get("x1")) == pytest.approx(985, abs=0.2)
    run.deadline_at = run.started_at + timedelta(days=1)  # far out: named at the edge
    root = parse(render_gantt(run, rows(run)))
    (group,) = [g for g in root.iter(f"{NS}g") if "gantt-deadline" in classes(g)]
    assert "is-beyond" in classes(group) and group.find(f"{NS}line") is None
    assert group.find(f"{NS}text").text == "deadline 1 d after the start →"


def test_compensations_come_after_the_steps_in_the_order_they_ran(wf) -> None:
    steps = []
    for step_id in ("one", "two", "three"):
        steps.append(
            Step(step_id, "test_echo", after=(steps[-1].id,) if steps else (),
                 inputs={"fail": step_id == "three"},
                 compensation=Step(f"undo-{step_id}", "test_echo"))
        )  # fmt: skip
    wf.define(Definition(name="t-gantt-saga", version=1, title="Saga", steps=tuple(steps),
                         roll_back_on_failure=True))  # fmt: skip
    run = wf.drive(services.start(wf.command, "t-gantt-saga"))
    assert run.status == "rolled_back"
    root = parse(render_gantt(run, rows(run)))
    found = lanes(root)
    assert [(lane.get("data-role"), lane.get("data-step")) for lane in found] == [
        ("forward", "one"), ("forward", "two"), ("forward", "three"),
        ("compensation", "two"), ("compensation", "one"),
    ]  # fmt: skip
    assert "is-failed" in classes(found[2])
    for lane in found[3:]:
        assert "gantt-lane--compensation" in classes(lane) and "is-succeeded" in classes(lane)
        assert lane.find(f"{NS}a").get("href") == f"#compensation-{lane.get('data-step')}"
        shown = lane.find(f"{NS}a/{NS}text/{NS}title").tail  # the text after its tooltip
        assert shown == f"↺ Undo {lane.get('data-step')}"
        assert attempts(lane)[0].find(f"{NS}title").text.startswith("Compensation Undo ")
    headings = [t.text for t in root.iter(f"{NS}text") if "gantt-heading-label" in classes(t)]
    assert headings == ["Compensation (roll-back), in the order it ran"]
    assert "2 compensation steps after a roll-back" in root.get("aria-label")
    # The compensations ran after the failure, newest step's first.
    assert span(attempts(found[3])[0])[0] >= span(attempts(found[2])[0])[0]
    assert span(attempts(found[4])[0])[0] >= span(attempts(found[3])[0])[0]


def test_titles_are_escaped(wf) -> None:
    wf.define(Definition(name="t-gantt-escape", version=1, title='<script>"A&B"</script>', steps=(
        Step("x", "test_echo", title="<b>bold</b> & 'quoted'"),
    )))  # fmt: skip
    run = wf.drive(services.start(wf.command, "t-gantt-escape"))
    svg = str(render_gantt(run, rows(run)))
    assert "<script>" not in svg and "<b>" not in svg
    root = parse(svg)
    assert root.get("aria-label").startswith('Gantt chart of <script>"A&B"</script> #')
    (lane,) = lanes(root)
    assert lane.find(f"{NS}a/{NS}text/{NS}title").tail == "<b>bold</b> & 'quoted'"


def test_a_run_of_200_steps_is_drawn_quickly() -> None:
    """Two attempts of each of 200 steps (in memory: drawing does not query)."""
    start = timezone.now() - timedelta(minutes=30)
    run = WorkflowRun(pk=1, definition="t-big", version=1, title="Big", status="running",
                      started_at=start, created_at=start)  # fmt: skip
    steps = []
    for position in range(200):
        began = start + timedelta(seconds=8 * position)
        for attempt in (1, 2):
            at = began + timedelta(seconds=3 * (attempt - 1))
            steps.append(StepRun(
                run=run, step_id=f"s{position}", position=position, attempt=attempt,
                current=attempt == 2, kind="test_echo", title=f"Step {position}",
                status="failed" if attempt == 1 else "succeeded", error="boom",
                queued_at=at, started_at=at + timedelta(seconds=1),
                finished_at=at + timedelta(seconds=2),
            ))  # fmt: skip
    path = [f"s{i}" for i in range(0, 200, 2)]
    render_gantt(run, steps, critical_path=path)  # warm
    began = time.perf_counter()
    svg = render_gantt(run, steps, critical_path=path)
    took = time.perf_counter() - began
    root = parse(svg)
    assert len(lanes(root)) == 200 and sum(len(attempts(lane)) for lane in lanes(root)) == 400
    assert took < 0.05, f"200 lanes took {took * 1000:.1f} ms"
    ticks = [t.text for t in root.iter(f"{NS}text") if "gantt-tick" in classes(t)]
    assert ticks == ["0", "5 min", "10 min", "15 min", "20 min", "25 min", "30 min"]


def test_durations_and_ticks_read_in_seconds_minutes_and_hours() -> None:
    assert [duration(s) for s in (0.12, 4.25, 59.96, 185, 7800, 86400, 93600)] == [
        "120 ms", "4.2 s", "60 s", "3 min 5 s", "2 h 10 min", "1 d", "1 d 2 h"
    ]  # fmt: skip
    assert [elapsed_label(s) for s in (0, 0.5, 30, 60, 90, 3600, 5400, 172800)] == [
        "0", "0.5 s", "30 s", "1 min", "1 min 30 s", "1 h", "1 h 30 min", "2 d"
    ]  # fmt: skip


def test_a_run_just_started_shows_its_first_step_waiting_for_a_worker(wf) -> None:
    wf.define(Definition(name="t-gantt-new", version=1, title="New", steps=(
        Step("first", "test_slow", inputs={"seconds": 5}),
        Step("second", "test_echo", after=("first",)),
    )))  # fmt: skip
    run = services.start(wf.command, "t-gantt-new")
    assert wf.statuses(run) == {"first": "queued", "second": "pending"}
    now = timezone.now() + timedelta(seconds=3)
    root = parse(render_gantt(run, rows(run), now=now))
    first, second = lanes(root)
    (waiting,) = attempts(first)
    assert "is-queued" in classes(waiting)
    queued = waiting.find(f"{NS}rect")
    assert queued.get("class") == "gantt-queued"  # light: not running yet
    assert float(queued.get("x")) + float(queued.get("width")) == pytest.approx(985, abs=0.5)
    assert attempts(second) == []
    assert "(1 pending, 1 queued)" in root.get("aria-label")
    services.cancel(run, wf.command)
