"""Graphs drawn in the browser: nodes and edges as data, laid out by ELK and drawn as SVG by
``static/js/graph.js``.

A page builds a :class:`Graph` and includes ``portal/graph.html`` with it and an element id
prefix (two graphs on one page need two prefixes)::

    {% include "portal/graph.html" with graph=graph prefix="dependencies" %}

The include renders ``<figure class="graph" data-graph id="<prefix>">`` holding the graph as
JSON in ``<script type="application/json" id="<prefix>-data">`` and a plain list of its nodes
and edges (``id="<prefix>-list"``) for screen readers and browsers without JavaScript.

A live update sends :func:`graph_fragments` (those two elements, ids unchanged, each marked
``hx-swap-oob="true"``) to the pages showing the graph. The renderer lays the graph out again only
when nodes or edges came or went; when only labels, statuses, links or titles changed, it
updates the drawn nodes and edges in place and nothing moves.

Portal imports no app: agents, observability and the workflow pages all draw with this.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

Direction = Literal["RIGHT", "DOWN"]
DIRECTIONS: tuple[Direction, ...] = ("RIGHT", "DOWN")
TEMPLATE = "portal/graph.html"

_NOT_IN_TOKEN = re.compile(r"[^a-z0-9_-]+")
_SPACE = re.compile(r"\s")


def css_token(value: str) -> str:
    """``value`` as a CSS class suffix: lower case, every run of anything but letters, digits,
    ``-`` and ``_`` turned into one ``-`` (``"RUNNING"`` → ``running``, ``"in flight"`` →
    ``in-flight``)."""
    return _NOT_IN_TOKEN.sub("-", value.strip().lower()).strip("-")


@dataclass(frozen=True)
class GraphNode:
    """A box in the drawing. ``kind`` and ``status`` become the classes ``graph-node--<kind>``
    and ``is-<status>`` (a state or a health: running, errored, healthy, critical...), which
    colour it; ``href`` makes it a link; ``title`` is its tooltip."""

    id: str
    label: str
    sublabel: str = ""
    kind: str = ""
    status: str = ""
    href: str = ""
    title: str = ""


@dataclass(frozen=True)
class GraphEdge:
    """An arrow from ``source`` to ``target`` (node ids), with an optional label (a rate, a
    count) and status (class ``is-<status>``). ``id`` is needed only to tell apart two edges
    between the same nodes; it defaults to ``<source>-><target>``."""

    source: str
    target: str
    label: str = ""
    status: str = ""
    id: str = ""

    @property
    def key(self) -> str:
        return self.id or f"{self.source}->{self.target}"


@dataclass(frozen=True)
class Graph:
    """Nodes and the edges between them, drawn left to right (``RIGHT``) or top to bottom
    (``DOWN``). ``label`` names the drawing for assistive technology; ``relation`` is how an
    edge reads in words (``"WowSupport depends on WowSearch"``). Node ids must be unique and
    without whitespace (they go into element ids), and every edge must join two of the nodes:
    a :class:`ValueError` says which is not."""

    nodes: Sequence[GraphNode]
    edges: Sequence[GraphEdge] = ()
    direction: Direction = "RIGHT"
    label: str = ""
    relation: str = "→"
    _by_id: dict[str, GraphNode] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "edges", tuple(self.edges))
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r}: use one of {', '.join(DIRECTIONS)}")
        by_id: dict[str, GraphNode] = {}
        for node in self.nodes:
            if not node.id or _SPACE.search(node.id):
                raise ValueError(f"node id {node.id!r}: ids must be non-empty, without spaces")
            if node.id in by_id:
                raise ValueError(f"node id {node.id!r} is used twice")
            by_id[node.id] = node
        keys: set[str] = set()
        for edge in self.edges:
            for end in (edge.source, edge.target):
                if end not in by_id:
                    raise ValueError(f"edge {edge.key!r} names {end!r}, which is not a node")
            if _SPACE.search(edge.key):
                raise ValueError(f"edge id {edge.key!r}: ids must be without spaces")
            if edge.key in keys:
                raise ValueError(f"edge {edge.key!r} is there twice: give them ids")
            keys.add(edge.key)
        object.__setattr__(self, "_by_id", by_id)

    def node(self, node_id: str) -> GraphNode:
        return self._by_id[node_id]

    def edge_ends(self) -> Iterator[tuple[GraphEdge, GraphNode, GraphNode]]:
        """Each edge with its source and target nodes (the fallback list names them)."""
        for edge in self.edges:
            yield edge, self._by_id[edge.source], self._by_id[edge.target]

    @property
    def json(self) -> SafeString:
        """:func:`graph_json`, for templates."""
        return graph_json(self)


def graph_data(graph: Graph) -> dict[str, Any]:
    """The graph as JSON-safe data, the shape ``graph.js`` reads: every field present (empty
    strings for what is not set), kind and status as CSS class suffixes (:func:`css_token`)."""
    return {
        "direction": graph.direction,
        "label": graph.label,
        "relation": graph.relation,
        "nodes": [
            {
                "id": node.id,
                "label": node.label,
                "sublabel": node.sublabel,
                "kind": css_token(node.kind),
                "status": css_token(node.status),
                "href": node.href,
                "title": node.title,
            }
            for node in graph.nodes
        ],
        "edges": [
            {
                "id": edge.key,
                "source": edge.source,
                "target": edge.target,
                "label": edge.label,
                "status": css_token(edge.status),
            }
            for edge in graph.edges
        ],
    }


# What Django's json_script escapes: the JSON can then sit inside <script> whatever the labels
# say (a "</script>" in one ends nothing) and reads the same once parsed.
_SCRIPT_ESCAPES = {ord("<"): "\\u003C", ord(">"): "\\u003E", ord("&"): "\\u0026"}


def graph_json(graph: Graph) -> SafeString:
    """:func:`graph_data` as JSON safe to put inside ``<script type="application/json">``."""
    text = json.dumps(graph_data(graph), ensure_ascii=False, separators=(",", ":"))
    return mark_safe(text.translate(_SCRIPT_ESCAPES))  # noqa: S308 - escaped as json_script does


def graph_fragments(graph: Graph, prefix: str) -> dict[str, str]:
    """What a live push sends to pages showing the graph under ``prefix``: element id → HTML
    of its data script and its fallback list, the same partials the include renders, marked
    for an out-of-band swap (``portal.realtime.publish(group, graph_fragments(...))``)."""
    context = {"graph": graph, "prefix": prefix, "oob": True}
    return {
        f"{prefix}-data": render_to_string(f"{TEMPLATE}#data", context),
        f"{prefix}-list": render_to_string(f"{TEMPLATE}#list", context),
    }
