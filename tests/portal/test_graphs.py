"""portal.graphs and its include: the data graph.js reads (shape, CSS-safe statuses), the checks
a graph must pass, escaping (a label saying ``</script>`` ends nothing), the fallback list, two
graphs on one page, and the fragments a live push sends."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from django.template.loader import render_to_string

from portal.graphs import Graph, GraphEdge, GraphNode, css_token, graph_data, graph_fragments

NASTY = '</script><script>alert("x")</script> & <b>'


def small_graph(**options) -> Graph:
    return Graph(
        nodes=[
            GraphNode("api", "API", sublabel="RUNNING · healthy", kind="Agent", status="RUNNING",
                      href="/?agent=api", title="API (RUNNING)"),
            GraphNode("db", "Database", status="degraded"),
            GraphNode("queue", "agents:wow-cache:tasks", kind="stream"),
        ],
        edges=[
            GraphEdge("api", "db", label="12/s", status="in flight"),
            GraphEdge("api", "queue"),
        ],
        **{"label": "Services", "relation": "uses"} | options,
    )  # fmt: skip


def include(graph: Graph, prefix: str = "g", **extra) -> str:
    return render_to_string("portal/graph.html", {"graph": graph, "prefix": prefix, **extra})


class Elements(HTMLParser):
    """Every element's tag and attributes, and the text of each script, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data) -> None:
        if self._in_script:
            self.scripts[-1] += data


def parsed(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    return parser


def test_graph_data_has_every_field_and_css_safe_classes() -> None:
    data = graph_data(small_graph())

    assert data == {
        "direction": "RIGHT",
        "label": "Services",
        "relation": "uses",
        "nodes": [
            {"id": "api", "label": "API", "sublabel": "RUNNING · healthy", "kind": "agent",
             "status": "running", "href": "/?agent=api", "title": "API (RUNNING)"},
            {"id": "db", "label": "Database", "sublabel": "", "kind": "", "status": "degraded",
             "href": "", "title": ""},
            {"id": "queue", "label": "agents:wow-cache:tasks", "sublabel": "", "kind": "stream",
             "status": "", "href": "", "title": ""},
        ],
        "edges": [
            {"id": "api->db", "source": "api", "target": "db", "label": "12/s", "status": "in-flight"},
            {"id": "api->queue", "source": "api", "target": "queue", "label": "", "status": ""},
        ],
    }  # fmt: skip
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize(
    ("value", "token"),
    [("RUNNING", "running"), ("in flight", "in-flight"), (' a"b<c> ', "a-b-c"), ("x_y-1", "x_y-1"),
     ("", "")],
)  # fmt: skip
def test_css_token_keeps_only_what_a_class_name_can_hold(value, token) -> None:
    assert css_token(value) == token


def test_down_is_the_other_direction() -> None:
    assert graph_data(small_graph(direction="DOWN"))["direction"] == "DOWN"
    with pytest.raises(ValueError, match="direction 'LEFT'"):
        small_graph(direction="LEFT")


@pytest.mark.parametrize(
    ("nodes", "edges", "message"),
    [
        (["a", "a"], [], "node id 'a' is used twice"),
        (["a b"], [], "node id 'a b'"),
        ([""], [], "node id ''"),
        (["a"], [GraphEdge("a", "gone")], "names 'gone', which is not a node"),
        (["a", "b"], [GraphEdge("a", "b"), GraphEdge("a", "b")], "'a->b' is there twice"),
        (["a", "b"], [GraphEdge("a", "b", id="one two")], "edge id 'one two'"),
    ],
)
def test_a_graph_that_cannot_be_drawn_is_refused_with_what_is_wrong(nodes, edges, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Graph([GraphNode(node_id, node_id) for node_id in nodes], edges)


def test_two_edges_between_the_same_nodes_need_ids() -> None:
    graph = Graph(
        [GraphNode("a", "A"), GraphNode("b", "B")],
        [GraphEdge("a", "b", id="tasks"), GraphEdge("a", "b", id="replies")],
    )
    assert [edge["id"] for edge in graph_data(graph)["edges"]] == ["tasks", "replies"]


def test_the_include_holds_the_data_a_list_and_a_canvas() -> None:
    html = include(small_graph(), "services", focus="api")
    page = parsed(html)

    (figure,) = [attrs for tag, attrs in page.elements if tag == "figure"]
    assert figure["id"] == "services" and "data-graph" in figure
    assert figure["class"] == "graph" and figure["aria-label"] == "Services"
    assert figure["data-graph-focus"] == "api"
    assert re.fullmatch(r"/static/vendor/elk-0\.12\.\d+\.bundled\.js", figure["data-graph-elk"])
    (script,) = [attrs for tag, attrs in page.elements if tag == "script"]
    assert script == {"type": "application/json", "id": "services-data"}  # not marked for a swap
    assert json.loads(page.scripts[0]) == graph_data(small_graph())
    assert ("div", {"class": "graph-canvas"}) in page.elements
    assert ("div", {"class": "graph-fallback", "id": "services-list"}) in page.elements

    list_html = html[html.index('id="services-list"') :]
    assert '<a href="/?agent=api">API</a>: RUNNING · healthy' in list_html
    assert '<li data-id="db">Database</li>' in list_html
    assert (
        "API uses Database (12/s)" in list_html and "API uses agents:wow-cache:tasks" in list_html
    )


def test_labels_cannot_end_the_script_or_add_markup() -> None:
    graph = Graph(
        [GraphNode("a", NASTY, sublabel=NASTY, title=NASTY, href='/x?a=1&b="2"'),
         GraphNode("b", "B")],
        [GraphEdge("a", "b", label=NASTY)],
        label=NASTY,
    )  # fmt: skip
    html = include(graph)

    assert "</script><script>" not in html and "<b>" not in html
    assert html.count("</script>") == 1  # the data script's own end
    page = parsed(html)
    (text,) = page.scripts
    assert "<" not in text and ">" not in text and "&" not in text  # \u003C, \u003E, \u0026
    data = json.loads(text)
    assert data["nodes"][0]["label"] == data["edges"][0]["label"] == data["label"] == NASTY
    assert data["nodes"][0]["href"] == '/x?a=1&b="2"'
    assert ("a", {"href": '/x?a=1&b="2"'}) in page.elements
    assert not any(tag == "b" for tag, _ in page.elements)


def test_two_graphs_on_one_page_have_ids_of_their_own() -> None:
    html = include(small_graph(), "left") + include(small_graph(), "right")

    ids = [attrs["id"] for _, attrs in parsed(html).elements if "id" in attrs]
    assert ids == ["left", "left-data", "left-list", "right", "right-data", "right-list"]


def test_no_nodes_says_so() -> None:
    html = include(Graph([]), "none", empty="No agents to show.")

    assert "No agents to show." in html and 'id="none-data"' in html
    assert json.loads(parsed(html).scripts[0])["nodes"] == []
    assert "Nothing to show." in include(Graph([]), "none")


def test_a_live_push_sends_the_data_and_the_list_to_swap_by_id() -> None:
    graph = small_graph()
    fragments = graph_fragments(graph, "services")

    assert list(fragments) == ["services-data", "services-list"]
    data, listing = (parsed(html) for html in fragments.values())
    assert data.elements == [
        ("script", {"type": "application/json", "id": "services-data", "hx-swap-oob": "true"})
    ]
    assert json.loads(data.scripts[0]) == graph_data(graph)
    assert listing.elements[0] == (
        "div", {"class": "graph-fallback", "id": "services-list", "hx-swap-oob": "true"}
    )  # fmt: skip
    # The same markup as the include's, marked for the swap.
    page = include(graph, "services")
    for html in fragments.values():
        assert html.replace(' hx-swap-oob="true"', "") in page
