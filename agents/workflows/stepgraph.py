"""The step graph: a definition's steps as a ``portal.graphs.Graph`` (drawn by ELK, left to
right), coloured by each step's current attempt on a run's page and plain on the definitions
page.

Node ids are step ids (``provision``); a compensation is ``compensation:<step id>``, drawn after
a roll-back with a dashed edge (status ``compensation``) from the step it undoes. A run's node
links to the step's anchor on the run page (``#step-<id>``, ``#compensation-<id>``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from django.utils import timezone

from portal.graphs import Graph, GraphEdge, GraphNode

from .definitions import Definition, Step
from .gantt import duration
from .models import Role, StepRun, StepStatus, WorkflowRun

STEP = "step"
COMPENSATION = "compensation"
RELATION = "comes before"
# An edge takes the status of the step it leaves once that step is through.
_EDGE_DONE = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


def compensation_id(step_id: str) -> str:
    return f"{COMPENSATION}:{step_id}"


def step_graph(
    run: WorkflowRun,
    rows: Iterable[StepRun],
    definition: Definition | None,
    now: datetime | None = None,
) -> Graph:
    """``run``'s steps coloured by their current attempt (``rows``: the run's step runs, every
    attempt or only the current ones). Without its definition (a version no longer registered)
    the steps are drawn from the rows alone, without edges."""
    now = now or timezone.now()
    forward: dict[str, StepRun] = {}
    compensating: dict[str, StepRun] = {}
    for each in rows:
        if each.current:
            (compensating if each.role == Role.COMPENSATION else forward)[each.step_id] = each
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    if definition is not None:
        steps = list(definition.steps)
    else:
        ordered = sorted(forward.values(), key=lambda row: row.position)
        steps = [Step(row.step_id, row.kind, title=row.title) for row in ordered]
    for step in steps:
        row = forward.get(step.id)
        nodes.append(_run_node(step.id, row.title if row else step.label, row, step, now))
        for before in step.after:
            source = forward.get(before)
            status = source.status if source is not None and source.status in _EDGE_DONE else ""
            edges.append(GraphEdge(before, step.id, status=status))
    known = {step.id for step in steps}
    for step_id, row in sorted(compensating.items(), key=lambda item: item[1].position):
        node_id = compensation_id(step_id)
        nodes.append(_run_node(node_id, row.title, row, None, now, COMPENSATION))
        if step_id in known:
            edges.append(GraphEdge(step_id, node_id, "undo", COMPENSATION))
    return Graph(
        nodes, edges, "RIGHT", f"Steps of {run.title} #{run.pk} and their status", RELATION
    )


def _run_node(
    node_id: str,
    label: str,
    row: StepRun | None,
    step: Step | None,
    now: datetime,
    kind: str = STEP,
) -> GraphNode:
    status = row.status if row is not None else StepStatus.PENDING
    words = [StepStatus(status).label.lower()]
    seconds = _seconds(row, now)
    if seconds is not None:
        words.append(duration(seconds))
    if row is not None and row.attempt > 1:
        words.append(f"attempt {row.attempt}")
    title = f"{label}: {', '.join(words)}"
    if step is not None:
        title += f" ({step.kind})"
    if row is not None and row.status == StepStatus.FAILED and row.error:
        title += f". {row.error.strip().splitlines()[0][:160]}"
    elif row is not None and row.detail and row.status in (StepStatus.QUEUED, StepStatus.RUNNING):
        title += f". {row.detail}"
    anchor = (
        "compensation-" + node_id.split(":", 1)[1] if kind == COMPENSATION else f"step-{node_id}"
    )
    return GraphNode(node_id, label, " · ".join(words), kind, status, f"#{anchor}", title)


def _seconds(row: StepRun | None, now: datetime) -> float | None:
    if row is None or row.started_at is None:
        return None
    return ((row.finished_at or now) - row.started_at).total_seconds()


def definition_graph(
    definition: Definition,
    medians: Mapping[str, float] | None = None,
    *,
    compensations: bool = True,
) -> Graph:
    """``definition``'s steps and dependencies, for the definitions page: each node says the
    step's kind and, given ``medians`` (step id → seconds, ``deadlines.medians``), its typical
    duration; its tooltip the timeout, attempts and dependencies. ``compensations`` adds what
    undoes each step, dashed."""
    medians = medians or {}
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    for step in definition.steps:
        words = [step.kind]
        if step.id in medians:
            words.append(f"median {duration(medians[step.id])}")
        nodes.append(
            GraphNode(step.id, step.label, " · ".join(words), STEP, "", "", _step_title(step))
        )
        edges.extend(GraphEdge(before, step.id) for before in step.after)
        if compensations and step.compensation is not None:
            undo = step.compensation
            label = undo.title or f"Undo {step.label.lower()}"
            node_id = compensation_id(step.id)
            title = f"{label}: undoes {step.label} on roll-back ({undo.kind})"
            nodes.append(GraphNode(node_id, label, undo.kind, COMPENSATION, "", "", title))
            edges.append(GraphEdge(step.id, node_id, "undo", COMPENSATION))
    return Graph(nodes, edges, "RIGHT", f"Steps of {definition.title}", RELATION)


def _step_title(step: Step) -> str:
    text = f"{step.label} ({step.kind}): times out after {duration(step.timeout_seconds)}"
    if step.retry.attempts > 1:
        text += f", tried up to {step.retry.attempts} times"
    if step.after:
        text += f", after {', '.join(step.after)}"
    if step.deadline_seconds:
        text += f", deadline {duration(step.deadline_seconds)}"
    return text
