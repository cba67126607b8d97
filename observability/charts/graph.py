"""The dependency graph of the agents, laid out in layers and coloured by state."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from observability.charts.svg import (
    SVG_NS,
    Node,
    _classes,
    _n,
    _tag,
)

# --- dependency graph ------------------------------------------------------------------------

NODE_WIDTH, NODE_HEIGHT = 180, 46
COLUMN_GAP = 64  # room for the edges between layers
ROW_GAP = 14
ROUTE_HEIGHT = 12  # the slot an edge passing through a layer takes
GRAPH_PAD = 8
_NAME_CHARS = 20  # what fits on a node at the chart's font size


@dataclass
class _Slot:
    """A place in a layer: an agent, or the route of the edges to ``target`` passing through."""

    key: tuple[str, str, int]  # ("node", slug, layer) or ("route", target slug, layer)
    layer: int
    height: float
    y: float = 0.0

    @property
    def is_node(self) -> bool:
        return self.key[0] == "node"

    @property
    def centre(self) -> float:
        return self.y + self.height / 2


@dataclass
class GraphLayout:
    """Where everything goes: slots per layer (left to right) and the chain of slots each
    dependency edge passes through, from the dependent to the dependency."""

    layers: list[list[_Slot]]
    layer_of: dict[str, int]
    chains: dict[tuple[str, str], list[_Slot]]
    width: float
    height: float

    def x_of(self, layer: int) -> float:
        return GRAPH_PAD + layer * (NODE_WIDTH + COLUMN_GAP)

    def slot(self, slug: str) -> _Slot:
        return next(s for s in self.layers[self.layer_of[slug]] if s.key[:2] == ("node", slug))


def _layers(slugs: list[str], depends: dict[str, list[str]]) -> dict[str, int]:
    """Longest path to a node without dependencies; an edge closing a cycle is ignored."""
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(slug: str) -> int:
        if slug in layer:
            return layer[slug]
        if slug in visiting:
            return -1
        visiting.add(slug)
        below = [visit(dep) for dep in depends[slug]]
        visiting.discard(slug)
        layer[slug] = 1 + max(below, default=-1)
        return layer[slug]

    for slug in slugs:
        visit(slug)
    return layer


def _crossings(upper: list[_Slot], lower: list[_Slot], links: set[tuple]) -> int:
    position = {slot.key: i for i, slot in enumerate(lower)}
    pairs = sorted(
        (i, position[b]) for i, slot in enumerate(upper) for a, b in links if a == slot.key
    )
    count = 0
    for i, (a1, b1) in enumerate(pairs):
        for a2, b2 in pairs[i + 1 :]:
            if a1 < a2 and b1 > b2:
                count += 1
    return count


def layout_graph(nodes: Sequence[Node], edges: Iterable[tuple[str, str]]) -> GraphLayout:
    """Layers by dependency depth (layer 0 depends on nothing), edges that skip layers routed
    through the layers between (one shared route per dependency, so twelve edges into the event
    bus become one line, not twelve), order within a layer by barycentre sweeps keeping the
    ordering with the fewest crossings, then heights pulled towards neighbours."""
    slugs = [node.slug for node in nodes]
    known = set(slugs)
    depends: dict[str, list[str]] = {slug: [] for slug in slugs}
    for dependent, dependency in edges:
        if dependent in known and dependency in known and dependency not in depends[dependent]:
            depends[dependent].append(dependency)
    layer_of = _layers(slugs, depends)
    layer_count = max(layer_of.values(), default=-1) + 1

    slots: dict[tuple, _Slot] = {}

    def slot_for(key: tuple[str, str, int]) -> _Slot:
        if key not in slots:
            height = NODE_HEIGHT if key[0] == "node" else ROUTE_HEIGHT
            slots[key] = _Slot(key, key[2], height)
        return slots[key]

    for slug in slugs:
        slot_for(("node", slug, layer_of[slug]))
    chains: dict[tuple[str, str], list[_Slot]] = {}
    links: set[tuple] = set()  # (upper slot key, lower slot key) between adjacent layers
    for dependent in slugs:
        for dependency in depends[dependent]:
            top, bottom = layer_of[dependent], layer_of[dependency]
            chain = [slot_for(("node", dependent, top))]
            chain += [
                slot_for(("route", dependency, layer)) for layer in range(top - 1, bottom, -1)
            ]
            chain.append(slot_for(("node", dependency, bottom)))
            chains[(dependent, dependency)] = chain
            for upper, lower in itertools.pairwise(chain):
                if upper.layer == lower.layer + 1:
                    links.add((upper.key, lower.key))

    layers: list[list[_Slot]] = [[] for _ in range(layer_count)]
    for slot in slots.values():  # insertion order: nodes as given, then routes
        layers[slot.layer].append(slot)
    down = {key: [b for a, b in links if a == key] for key in slots}
    up = {key: [a for a, b in links if b == key] for key in slots}

    def total_crossings(order: list[list[_Slot]]) -> int:
        return sum(_crossings(order[i + 1], order[i], links) for i in range(len(order) - 1))

    def reorder(layer: list[_Slot], neighbours: dict, reference: list[_Slot]) -> list[_Slot]:
        position = {slot.key: i for i, slot in enumerate(reference)}

        def barycentre(item: tuple[int, _Slot]) -> tuple[float, int]:
            index, slot = item
            around = [position[k] for k in neighbours[slot.key] if k in position]
            # Scaled so a slot without neighbours keeps roughly its place.
            centre = sum(around) / len(around) if around else index * len(reference) / len(layer)
            return centre, index

        return [slot for _, slot in sorted(enumerate(layer), key=barycentre)]

    best = [list(layer) for layer in layers]
    best_count = total_crossings(best)
    order = [list(layer) for layer in layers]
    for _ in range(6):
        for i in range(1, layer_count):
            order[i] = reorder(order[i], down, order[i - 1])
        for i in range(layer_count - 2, -1, -1):
            order[i] = reorder(order[i], up, order[i + 1])
        count = total_crossings(order)
        if count < best_count:
            best, best_count = [list(layer) for layer in order], count
    layers = best

    _place_vertically(layers, up, down, slots)
    lowest = max((s.y + s.height for layer in layers for s in layer), default=0.0)
    width = GRAPH_PAD * 2 + layer_count * NODE_WIDTH + max(0, layer_count - 1) * COLUMN_GAP
    return GraphLayout(layers, layer_of, chains, width, lowest + GRAPH_PAD)


def _place_vertically(layers, up, down, slots) -> None:
    """Stack each layer in order, then pull slots towards the height of what they connect to
    (keeping order and gaps), a few sweeps each way; finally start the drawing at the top."""

    def gap(a: _Slot, b: _Slot) -> float:
        # Routes keep clear of boxes, so a junction is never mistaken for an arrow into one.
        return ROW_GAP if a.is_node or b.is_node else ROW_GAP / 2

    for layer in layers:
        y = 0.0
        for i, slot in enumerate(layer):
            slot.y = y if i == 0 else y + gap(layer[i - 1], slot)
            y = slot.y + slot.height

    def settle(layer: list[_Slot], neighbours: dict) -> None:
        if not layer:
            return
        wanted = []
        for slot in layer:
            around = [slots[k].centre for k in neighbours[slot.key]]
            wanted.append(sum(around) / len(around) - slot.height / 2 if around else slot.y)
        # Top to bottom: as wanted, but never overlapping the slot above.
        for i, slot in enumerate(layer):
            slot.y = (
                wanted[i]
                if i == 0
                else max(wanted[i], layer[i - 1].y + layer[i - 1].height + gap(layer[i - 1], slot))
            )
        # Pushed-down slots drag the whole layer up by their mean excess, so no side is favoured.
        excess = sum(slot.y - w for slot, w in zip(layer, wanted, strict=True)) / len(layer)
        for slot in layer:
            slot.y -= excess

    for _ in range(4):
        for i in range(1, len(layers)):
            settle(layers[i], down)
        for i in range(len(layers) - 2, -1, -1):
            settle(layers[i], up)
    top = min((slot.y for layer in layers for slot in layer), default=0)
    for layer in layers:
        for slot in layer:
            slot.y += GRAPH_PAD - top


def _ports(slot: _Slot, others: list[_Slot]) -> dict[tuple, float]:
    """Where edges meet a node's side: spread along it in the order of their other ends, so
    lines leave and arrive without crossing at the box."""
    if not slot.is_node:
        return {other.key: slot.centre for other in others}
    ordered = sorted(others, key=lambda other: other.centre)
    usable = slot.height - 16
    if len(ordered) == 1:
        return {ordered[0].key: slot.centre}
    return {
        other.key: slot.y + 8 + usable * i / (len(ordered) - 1) for i, other in enumerate(ordered)
    }


def _short_name(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1].rstrip() + "…"


def _node_inner(node: Node, dependency_names: list[str], href: str | None) -> str:
    """What is inside a node's positioned ``<g id="graph-node-…">``: what a live update swaps."""
    status = node.state.upper()
    if node.health and node.health != "unknown":
        status += f" · {node.health}"
    tooltip = f"{node.name} ({status}). Depends on: {', '.join(dependency_names) or 'nothing'}."
    content = (
        _tag("title", escape(tooltip))
        + _tag("rect", class_="graph-node-box", width=NODE_WIDTH, height=NODE_HEIGHT, rx=8)
        + _tag("rect", class_="graph-node-bar", x=6, y=6, width=4, height=NODE_HEIGHT - 12, rx=2)
        + _tag("text", escape(_short_name(node.name)), class_="graph-node-name", x=18, y=19)
        + _tag("text", escape(status), class_="graph-node-state", x=18, y=36)
    )
    classes = _classes(
        "graph-node",
        f"state-{node.state.lower()}",
        f"tier-{node.tier}" if node.tier else "",
        f"health-{node.health}" if node.health else "",
    )
    if href:
        return _tag("a", content, class_=classes, href=href)
    return _tag("g", content, class_=classes, tabindex=0)


def dependency_graph(
    nodes: Sequence[Node],
    edges: Iterable[tuple[str, str]],
    *,
    link: Callable[[str], str] | None = None,
    label: str = "Agent dependencies",
) -> SafeString:
    """The agents and what each depends on, left to right: an agent stands right of everything
    it depends on, and arrows point from the dependent to its dependency. Each node is coloured
    by state (the badges' ``state-*`` classes) with the state also written out, links to
    ``link(slug)``, is focusable, and tells its dependencies in a tooltip. Its
    ``<g id="graph-node-<slug>">`` holds its place while a live update swaps what is inside
    (see ``dependency_graph_node``). Drawn at its natural size inside a horizontally scrollable
    ``<div class="graph-scroll">``, never shrunk below legibility."""
    edges = list(edges)
    if not nodes:
        return mark_safe(  # noqa: S308 - constant
            '<div class="graph-scroll graph-empty"><p class="muted">No agents to show.</p></div>'
        )
    layout = layout_graph(nodes, edges)
    names = {node.slug: node.name for node in nodes}
    edge_paths = _edge_paths(layout)

    edge_parts = [
        _tag(
            "path",
            _tag("title", escape(f"{names[dependent]} depends on {names[dependency]}")),
            class_="graph-edge",
            d=d,
            data_from=dependent,
            data_to=dependency,
            marker_end="url(#graph-arrow)",
        )
        for (dependent, dependency), d in edge_paths.items()
    ]
    dependency_names: dict[str, list[str]] = {node.slug: [] for node in nodes}
    for dependent, dependency in layout.chains:
        dependency_names[dependent].append(names[dependency])
    node_parts = []
    for node in nodes:
        slot = layout.slot(node.slug)
        node_parts.append(
            _tag(
                "g",
                _node_inner(node, dependency_names[node.slug], link(node.slug) if link else None),
                id=f"graph-node-{node.slug}",
                class_="graph-node-place",
                transform=f"translate({_n(layout.x_of(slot.layer))} {_n(slot.y)})",
                data_layer=slot.layer,
            )
        )

    arrow = _tag(
        "marker",
        _tag("path", d="M0 0.5 L8 4 L0 7.5 Z"),
        id="graph-arrow",
        class_="graph-arrow",
        viewBox="0 0 8 8",
        refX=7,
        refY=4,
        markerWidth=8,
        markerHeight=8,
        markerUnits="userSpaceOnUse",
        orient="auto",
    )
    width, height = _n(layout.width), _n(layout.height)
    svg = _tag(
        "svg",
        _tag("title", escape(label))
        + _tag("defs", arrow)
        + _tag("g", "".join(edge_parts), class_="graph-edges")
        + _tag("g", "".join(node_parts), class_="graph-nodes"),
        xmlns=SVG_NS,
        class_="graph-svg",
        width=width,
        height=height,
        viewBox=f"0 0 {width} {height}",
        role="group",
        aria_label=f"{label}: {len(nodes)} agents; arrows point from an agent to what it needs",
    )
    return mark_safe(_tag("div", svg, class_="graph-scroll"))  # noqa: S308 - built from escaped parts


def _edge_paths(layout: GraphLayout) -> dict[tuple[str, str], str]:
    """Each dependency edge's path: out of the dependent's left side, along its route through
    the layers it skips, into the dependency's right side, as smooth S-bends between layers."""
    segments: dict[tuple, tuple[_Slot, _Slot]] = {}
    for chain in layout.chains.values():
        for upper, lower in itertools.pairwise(chain):
            segments[(upper.key, lower.key)] = (upper, lower)
    left_ends: dict[tuple, list[_Slot]] = {}  # per slot, what its left side connects to
    right_ends: dict[tuple, list[_Slot]] = {}
    slots: dict[tuple, _Slot] = {}
    for upper, lower in segments.values():
        left_ends.setdefault(upper.key, []).append(lower)
        right_ends.setdefault(lower.key, []).append(upper)
        slots[upper.key], slots[lower.key] = upper, lower
    left_ports = {key: _ports(slots[key], others) for key, others in left_ends.items()}
    right_ports = {key: _ports(slots[key], others) for key, others in right_ends.items()}

    paths = {}
    for (dependent, dependency), chain in layout.chains.items():
        if layout.layer_of[dependent] <= layout.layer_of[dependency]:
            continue  # an edge closing a cycle has no left-to-right route; leave it out
        d = f"M{_n(layout.x_of(chain[0].layer))} {_n(left_ports[chain[0].key][chain[1].key])}"
        for upper, lower in itertools.pairwise(chain):
            x1 = layout.x_of(upper.layer)
            if not upper.is_node:
                d += f" H{_n(x1)}"  # straight through the layer the route crosses
            y1 = left_ports[upper.key][lower.key]
            x2 = layout.x_of(lower.layer) + NODE_WIDTH
            y2 = right_ports[lower.key][upper.key]
            bend = (x1 - x2) / 2
            d += f" C{_n(x1 - bend)} {_n(y1)} {_n(x2 + bend)} {_n(y2)} {_n(x2)} {_n(y2)}"
        paths[(dependent, dependency)] = d
    return paths


def dependency_graph_node(
    node: Node, dependency_names: Sequence[str], *, link: Callable[[str], str] | None = None
) -> SafeString:
    """One node's new content for a live update: an ``<svg>`` wrapper (so the browser parses
    what is inside as SVG) carrying ``hx-swap-oob="innerHTML:#graph-node-<slug>"``. htmx puts
    the node's new state, colour and tooltip inside the positioned group; the layout stays."""
    inner = _node_inner(node, list(dependency_names), link(node.slug) if link else None)
    return mark_safe(  # noqa: S308 - built from escaped parts
        _tag("svg", inner, xmlns=SVG_NS, hx_swap_oob=f"innerHTML:#graph-node-{node.slug}")
    )
