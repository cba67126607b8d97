"""A run's Gantt chart as server-rendered SVG: a lane per step, a bar per attempt on one time
axis from the run's start to its finish (or now).

Lanes come in the definition's order, the compensations of a roll-back after them under their
own heading. An attempt is a lighter stretch while queued and a solid one while running,
coloured by its status; a running bar reaches the "now" line; steps on the critical path are
marked; the run's deadline is a line of its own. The chart is one ``<svg>`` (no script), as wide
as its container (the ``viewBox`` scales) and as tall as its lanes need; each bar's ``<title>``
says what it was for hover and screen readers. Classes are styled by
``static/agents/workflows-charts.css``.

A 200-step run is drawn on every page view and live update, so the markup is joined from
strings in one pass rather than rendered from templates.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .models import Role, StepRun, StepStatus, WorkflowRun

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH = 1000  # viewBox units across; the chart scales to its container
LABEL_WIDTH = 210  # the step names on the left
PLOT_LEFT = 220
PLOT_RIGHT = 985
AXIS_HEIGHT = 46  # above the lanes: the deadline's label, the now line's, the time ticks
LANE_HEIGHT = 22
BAR_HEIGHT = 12
HEADING_HEIGHT = 24  # "Compensation (roll-back)" above the compensation lanes
LEGEND_HEIGHT = 30
MIN_BAR = 2.0  # an instant step still shows
LABEL_CHARS = 30
# A deadline further out than this many run spans is named at the right edge rather than
# stretching the axis until every bar is a sliver.
DEADLINE_STRETCH = 1.0
MAX_TICK_INTERVALS = 8
_TICK_STEPS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip

LEGEND = (
    ("gantt-swatch is-queued", "Queued"),
    ("gantt-swatch is-running", "Running"),
    ("gantt-swatch is-succeeded", "Succeeded"),
    ("gantt-swatch is-failed", "Failed"),
    ("gantt-swatch is-cancelled", "Cancelled or skipped"),
    ("gantt-swatch is-critical", "Critical path"),
)


@dataclass
class _Lane:
    role: str
    step_id: str
    position: int
    attempts: list[StepRun] = field(default_factory=list)

    @property
    def current(self) -> StepRun:
        currents = [row for row in self.attempts if row.current]
        return currents[-1] if currents else self.attempts[-1]


@dataclass(frozen=True)
class _Axis:
    start: datetime
    span: float  # seconds

    def x(self, moment: datetime) -> float:
        fraction = (moment - self.start).total_seconds() / self.span
        return PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * min(max(fraction, 0.0), 1.0)


def render_gantt(
    run: WorkflowRun,
    rows: Iterable[StepRun],
    now: datetime | None = None,
    critical_path: Collection[str] = (),
) -> SafeString:
    """The Gantt chart of ``run`` from ``rows`` (its step runs: every attempt, both roles) as an
    ``<svg class="gantt">``. ``critical_path`` names the forward steps to mark (from
    ``deadlines.predict``); ``now`` is where running bars end and the now line stands."""
    now = now or timezone.now()
    critical = set(critical_path)
    forward, compensation = _lanes(rows)
    start, end = _extent(run, forward + compensation, now)
    deadline = run.deadline_at
    beyond = False
    if deadline is not None and deadline > end:
        if (deadline - start).total_seconds() <= (1 + DEADLINE_STRETCH) * (
            end - start
        ).total_seconds():
            end = deadline
        else:
            beyond = True
    axis = _Axis(start, max((end - start).total_seconds(), 0.01))

    lanes_height = LANE_HEIGHT * (len(forward) + len(compensation))
    if compensation:
        lanes_height += HEADING_HEIGHT
    top, bottom = AXIS_HEIGHT, AXIS_HEIGHT + lanes_height
    height = bottom + LEGEND_HEIGHT

    parts: list[str] = []
    parts += _ticks(axis, top, bottom)
    y = top
    for index, lane in enumerate(forward):
        parts.append(_lane(lane, index, y, axis, now, lane.step_id in critical))
        y += LANE_HEIGHT
    if compensation:
        parts.append(
            f'<g class="gantt-heading"><line class="gantt-separator" x1="0" x2="{WIDTH}" '
            f'y1="{y + 0.5}" y2="{y + 0.5}"/><text class="gantt-heading-label" x="4" '
            f'y="{y + 16}">Compensation (roll-back), in the order it ran</text></g>'
        )
        y += HEADING_HEIGHT
        for index, lane in enumerate(compensation):
            parts.append(_lane(lane, index, y, axis, now, False))
            y += LANE_HEIGHT
    if deadline is not None:
        parts.append(_deadline(axis, deadline, top, bottom, beyond))
    if not run.is_finished:
        x = _n(axis.x(now))
        parts.append(
            f'<g class="gantt-now"><title>Now, {escape(_clock(now))}</title>'
            f'<line class="gantt-now-line" x1="{x}" x2="{x}" y1="{top - 4}" y2="{bottom}"/>'
            f'<text class="gantt-now-label" x="{x}" y="{top - 22}" text-anchor="end" dx="-3">'
            f"now</text></g>"
        )
    parts.append(_legend(bottom + 20, bool(critical), deadline is not None, not run.is_finished))

    summary = _summary(run, forward, compensation, axis, critical_path)
    return mark_safe(  # noqa: S308 - every text and attribute above is escaped
        f'<svg xmlns="{SVG_NS}" class="gantt" viewBox="0 0 {WIDTH} {height}" role="group" '
        f'aria-label="{escape(summary)}" preserveAspectRatio="xMinYMin meet" '
        f'data-run="{run.pk}"><title>{escape(summary)}</title>{"".join(parts)}</svg>'
    )


def _lanes(rows: Iterable[StepRun]) -> tuple[list[_Lane], list[_Lane]]:
    """Forward lanes in declared order, compensation lanes in the order they ran; attempts in
    each lane oldest first. Only the current compensation rows count: a run rolled back, retried
    and rolled back again shows its latest roll-back."""
    lanes: dict[tuple[str, str], _Lane] = {}
    for row in rows:
        key = (row.role, row.step_id)
        lane = lanes.get(key)
        if lane is None:
            lane = lanes[key] = _Lane(row.role, row.step_id, row.position)
        lane.attempts.append(row)
        if row.current:
            lane.position = row.position
    for lane in lanes.values():
        lane.attempts.sort(key=lambda row: row.attempt)
    forward = sorted(
        (lane for lane in lanes.values() if lane.role != Role.COMPENSATION),
        key=lambda lane: lane.position,
    )
    compensation = sorted(
        (
            lane
            for lane in lanes.values()
            if lane.role == Role.COMPENSATION and any(row.current for row in lane.attempts)
        ),
        key=lambda lane: lane.position,
    )
    return forward, compensation


def _extent(run: WorkflowRun, lanes: list[_Lane], now: datetime) -> tuple[datetime, datetime]:
    moments = [
        moment
        for lane in lanes
        for row in lane.attempts
        for moment in (row.queued_at, row.started_at, row.finished_at)
        if moment is not None
    ]
    start = run.started_at or run.created_at
    if moments:
        start = min(start, *moments)
    end = run.finished_at if run.is_finished and run.finished_at else now
    if moments:
        end = max(end, *moments)
    return start, max(end, start)


def _lane(lane: _Lane, index: int, y: int, axis: _Axis, now: datetime, critical: bool) -> str:
    current = lane.current
    compensating = lane.role == Role.COMPENSATION
    classes = ["gantt-lane", f"is-{current.status}", "is-odd" if index % 2 else "is-even"]
    if compensating:
        classes.append("gantt-lane--compensation")
    if critical:
        classes.append("is-critical")
    title = current.title or lane.step_id
    shown = title if len(title) <= LABEL_CHARS else title[: LABEL_CHARS - 1] + "…"
    anchor = f"#{'compensation' if compensating else 'step'}-{lane.step_id}"
    mid = y + LANE_HEIGHT / 2
    out = [
        f'<g class="{" ".join(classes)}" data-step="{escape(lane.step_id)}" '
        f'data-role="{escape(lane.role)}" data-status="{escape(current.status)}">'
        f'<rect class="gantt-lane-bg" x="0" y="{y}" width="{WIDTH}" height="{LANE_HEIGHT}"/>'
    ]
    if critical:
        out.append(
            f'<rect class="gantt-critical-mark" x="0" y="{y + 3}" width="4" '
            f'height="{LANE_HEIGHT - 6}"/>'
        )
    label = f"{'↺ ' if compensating else ''}{shown}"
    out.append(
        f'<a class="gantt-label-link" href="{escape(anchor)}"><text class="gantt-label" x="10" '
        f'y="{_n(mid + 4)}"><title>{escape(title)}</title>{escape(label)}</text></a>'
    )
    for row in lane.attempts:
        out.append(_attempt(row, lane, mid, axis, now, critical))
    out.append("</g>")
    return "".join(out)


def _attempt(
    row: StepRun, lane: _Lane, mid: float, axis: _Axis, now: datetime, critical: bool
) -> str:
    """One attempt: its queued stretch (lighter) and its running stretch, in a group whose
    ``<title>`` names it. An attempt that never queued (still pending) draws nothing; one ended
    without running (marked, cancelled while queued) is a thin mark where it ended."""
    if row.queued_at is None and row.started_at is None and row.finished_at is None:
        return ""
    status = row.status
    classes = ["gantt-attempt", f"is-{status}"]
    if critical:
        classes.append("is-critical")
    if row.late:
        classes.append("is-late")
    if not row.current:
        classes.append("is-replaced")
    top = _n(mid - BAR_HEIGHT / 2)
    shapes: list[str] = []
    ended = row.finished_at or now
    queued_for: float | None = None
    if row.queued_at is not None:
        queued_end = row.started_at or ended
        queued_for = (queued_end - row.queued_at).total_seconds()
        x0, x1 = axis.x(row.queued_at), axis.x(queued_end)
        if x1 - x0 >= 0.5:
            shapes.append(
                f'<rect class="gantt-queued" x="{_n(x0)}" y="{top}" width="{_n(x1 - x0)}" '
                f'height="{BAR_HEIGHT}"/>'
            )
    ran_for: float | None = None
    if row.started_at is not None:
        ran_for = (ended - row.started_at).total_seconds()
        x0 = axis.x(row.started_at)
        width = max(axis.x(ended) - x0, MIN_BAR)
        x0 = min(x0, PLOT_RIGHT - width)  # a short attempt at the very end stays in sight
        shapes.append(
            f'<rect class="gantt-bar" x="{_n(x0)}" y="{top}" width="{_n(width)}" '
            f'height="{BAR_HEIGHT}" rx="2"/>'
        )
    elif not shapes or row.finished_at is not None:
        shapes.append(
            f'<rect class="gantt-bar gantt-mark" x="{_n(min(axis.x(ended) - 1, PLOT_RIGHT - MIN_BAR))}" y="{top}" '
            f'width="{MIN_BAR}" height="{BAR_HEIGHT}"/>'
        )
    return (
        f'<g class="{" ".join(classes)}" data-attempt="{row.attempt}">'
        f"<title>{escape(_attempt_text(row, lane, queued_for, ran_for))}</title>"
        f"{''.join(shapes)}</g>"
    )


def _attempt_text(
    row: StepRun, lane: _Lane, queued_for: float | None, ran_for: float | None
) -> str:
    what = "Compensation " if lane.role == Role.COMPENSATION else ""
    status = StepStatus(row.status).label.lower()
    text = f"{what}{row.title or row.step_id}, attempt {row.attempt}: {status}"
    if ran_for is not None:
        verb = "running for" if row.status == StepStatus.RUNNING else "ran"
        text += f", {verb} {duration(ran_for)}"
    if queued_for is not None and queued_for >= 0.001:
        text += f", queued {duration(queued_for)}"
    if row.late:
        text += ", past its deadline"
    if row.status == StepStatus.FAILED and row.error:
        text += f". {row.error.strip().splitlines()[0][:160]}"
    elif row.reason and not row.current:
        text += f". {row.reason[:160]}"
    return text


def _ticks(axis: _Axis, top: int, bottom: int) -> list[str]:
    step = _tick_step(axis.span)
    count = int(axis.span / step + 1e-9)
    parts = ['<g class="gantt-axis">']
    for i in range(count + 1):
        seconds = i * step
        x = _n(PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * seconds / axis.span)
        anchor = "start" if i == 0 else "middle"
        parts.append(
            f'<line class="gantt-grid" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}"/>'
            f'<text class="gantt-tick" x="{x}" y="{top - 8}" text-anchor="{anchor}">'
            f"{escape(elapsed_label(seconds))}</text>"
        )
    parts.append("</g>")
    return parts


def _tick_step(span: float) -> float:
    for step in _TICK_STEPS:
        if span / step <= MAX_TICK_INTERVALS:
            return step
    return math.ceil(span / 86400 / MAX_TICK_INTERVALS) * 86400


def _deadline(axis: _Axis, deadline: datetime, top: int, bottom: int, beyond: bool) -> str:
    moment = escape(_clock(deadline))
    if beyond:
        # Too far out to draw at scale: say where it is at the right edge.
        after = (deadline - axis.start).total_seconds()
        return (
            f'<g class="gantt-deadline is-beyond"><title>Deadline {moment}</title>'
            f'<text class="gantt-deadline-label" x="{PLOT_RIGHT}" y="{top - 34}" '
            f'text-anchor="end">deadline {escape(duration(after))} after the start →</text></g>'
        )
    x = _n(axis.x(deadline))
    return (
        f'<g class="gantt-deadline"><title>Deadline {moment}</title>'
        f'<line class="gantt-deadline-line" x1="{x}" x2="{x}" y1="{top - 4}" y2="{bottom}"/>'
        f'<text class="gantt-deadline-label" x="{x}" y="{top - 34}" text-anchor="end" dx="-3">'
        f"deadline</text></g>"
    )


def _legend(y: int, critical: bool, deadline: bool, live: bool) -> str:
    items = [item for item in LEGEND if critical or item[1] != "Critical path"]
    if live:
        items.append(("gantt-swatch gantt-swatch--now", "Now"))
    if deadline:
        items.append(("gantt-swatch gantt-swatch--deadline", "Deadline"))
    parts = ['<g class="gantt-legend">']
    x = 10
    for css, text in items:
        parts.append(
            f'<rect class="{css}" x="{x}" y="{y - 9}" width="14" height="10" rx="2"/>'
            f'<text class="gantt-legend-label" x="{x + 19}" y="{y}">{text}</text>'
        )
        x += 30 + 7 * len(text)
    parts.append("</g>")
    return "".join(parts)


def _summary(
    run: WorkflowRun,
    forward: list[_Lane],
    compensation: list[_Lane],
    axis: _Axis,
    critical_path: Collection[str],
) -> str:
    counts: dict[str, int] = {}
    for lane in forward:
        counts[lane.current.status] = counts.get(lane.current.status, 0) + 1
    said = ", ".join(
        f"{counts[status]} {StepStatus(status).label.lower()}"
        for status in StepStatus.values
        if counts.get(status)
    )
    text = (
        f"Gantt chart of {run.title} #{run.pk}, {run.get_status_display().lower()}: "
        f"{len(forward)} steps over {duration(axis.span)} ({said})"
    )
    if compensation:
        text += f"; {len(compensation)} compensation steps after a roll-back"
    titles = {lane.step_id: lane.current.title for lane in forward}
    path = [titles[step_id] for step_id in critical_path if step_id in titles]
    if path:
        text += f"; critical path: {' → '.join(path)}"
    return text + "."


# --- words and numbers --------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``seconds`` for people: 120 ms, 4.2 s, 3 min 5 s, 2 h 10 min, 1 d 2 h."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{_trim(round(seconds, 1))} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if seconds < 86400:
        hours, rest = divmod(round(seconds) // 60, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, rest = divmod(round(seconds) // 3600, 24)
    return f"{days} d {rest} h" if rest else f"{days} d"


def elapsed_label(seconds: float) -> str:
    """A tick's time since the run began: 0, 0.5 s, 30 s, 1 min, 1 min 30 s, 2 h."""
    if seconds == 0:
        return "0"
    if seconds < 60:
        return f"{_trim(round(seconds, 3))} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    return duration(seconds)


def _trim(number: float) -> str:
    return f"{number:f}".rstrip("0").rstrip(".")


def _n(number: float) -> str:
    """A coordinate, short: 12, 12.5."""
    return _trim(round(number, 1)) or "0"


def _clock(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S}"
