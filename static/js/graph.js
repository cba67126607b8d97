// Graphs: every <figure data-graph> (templates/portal/graph.html, portal/graphs.py) is laid out
// by ELK's layered algorithm and drawn as SVG. ELK (static/vendor/elk-*.bundled.js, 1.6 MB) is
// loaded the first time a page holds a graph, from the URL the figure names.
//
// Live updates replace the figure's JSON script (or the whole figure). The graph is laid out
// again only when nodes or edges came or went; when only labels, statuses, links or titles
// changed, the drawn elements are updated in place and nothing moves. A figure replaced whole
// (a region polled again) with the same nodes and edges is drawn at once from the layout kept
// for its id, without asking ELK.
//
// The figure's own state is in data attributes, not classes: htmx puts back the class of an
// element swapped in by id when it settles. data-graph-state is laying-out, drawn, empty or
// failed; data-graph-layouts counts the layouts its id had (tests see nothing was moved).
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  // Below this share of its natural size a graph stops shrinking and scrolls instead.
  var MIN_SCALE = 0.75;
  var NODE = { minWidth: 120, maxWidth: 232, textX: 18, padRight: 12, height: 46, heightOneLine: 34 };
  var FONT = { label: "600 13px ", sublabel: "500 11px ", edge: "600 11px " };
  var EDGE_LABEL = { padX: 5, height: 17 };
  var ARROW = { length: 8, halfWidth: 4 };
  var BEND_RADIUS = 6;
  var BIG_GRAPH = 150;  // nodes

  var layouts = new Map();  // figure id -> {key, layout, count}: survives the figure's replacement
  var drawn = new WeakMap();  // figure -> {key, layout, data, nodes: Map, edges: Map}
  var pending = new WeakMap();  // figure -> {key}: a layout under way
  var elkLoading = null;
  var elk = null;

  // --- data ---------------------------------------------------------------------------------

  function readData(figure) {
    var script = figure.querySelector(":scope > script[type='application/json']");
    if (!script) return null;
    try {
      var data = JSON.parse(script.textContent);
      data.nodes = data.nodes || [];
      data.edges = data.edges || [];
      return data;
    } catch (error) {
      console.error("graph " + figure.id + ": its data is not JSON", error);
      return null;
    }
  }

  // What the layout depends on: which nodes and edges there are, the direction, and whether
  // nodes have a second line and edges a label (both take room). Labels' words do not count:
  // they are fitted into the room the layout gave them.
  function structureKey(data) {
    var nodes = data.nodes.map(function (n) { return n.id; }).sort();
    var edges = data.edges.map(function (e) { return [e.id, e.source, e.target, e.label ? 1 : 0].join(" "); }).sort();
    var twoLines = data.nodes.some(function (n) { return n.sublabel; });
    return JSON.stringify([data.direction, twoLines, nodes, edges]);
  }

  function token(value) {
    return String(value || "").toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "");
  }

  // --- measuring text -----------------------------------------------------------------------

  var measureContext = null;
  function textWidth(text, font, family) {
    if (!measureContext) measureContext = document.createElement("canvas").getContext("2d");
    measureContext.font = font + family;
    return measureContext.measureText(text).width;
  }

  // ``text`` shortened with an ellipsis to fit ``room`` pixels.
  function fitText(text, font, family, room) {
    text = String(text || "");
    if (textWidth(text, font, family) <= room) return text;
    var low = 0, high = text.length;
    while (low < high) {
      var middle = Math.ceil((low + high) / 2);
      if (textWidth(text.slice(0, middle).trimEnd() + "…", font, family) <= room) low = middle;
      else high = middle - 1;
    }
    return text.slice(0, low).trimEnd() + "…";
  }

  function fontFamily(figure) {
    return getComputedStyle(figure).fontFamily || "sans-serif";
  }

  // --- layout -------------------------------------------------------------------------------

  function loadElk(src) {
    if (elk) return Promise.resolve(elk);
    if (!elkLoading) {
      elkLoading = new Promise(function (resolve, reject) {
        if (window.ELK) { resolve(window.ELK); return; }
        var script = document.createElement("script");
        script.src = src;
        script.async = true;
        script.onload = function () { window.ELK ? resolve(window.ELK) : reject(new Error(src + " defined no ELK")); };
        script.onerror = function () { reject(new Error("could not load " + src)); };
        document.head.appendChild(script);
      }).then(function (ELK) {
        elk = new ELK();
        return elk;
      }, function (error) {
        elkLoading = null;  // the next graph tries again
        throw error;
      });
    }
    return elkLoading;
  }

  function nodeSize(node, family, twoLines) {
    var text = Math.max(
      textWidth(node.label, FONT.label, family),
      node.sublabel ? textWidth(node.sublabel, FONT.sublabel, family) : 0
    );
    var width = Math.ceil(text) + NODE.textX + NODE.padRight;
    return {
      width: Math.min(NODE.maxWidth, Math.max(NODE.minWidth, width)),
      height: twoLines ? NODE.height : NODE.heightOneLine,
    };
  }

  function edgeLabelSize(label, family) {
    // Room for a few more characters than now: live rates grow ("9/s" -> "120/s").
    var width = Math.max(textWidth(label, FONT.edge, family), textWidth("000.0/s", FONT.edge, family));
    return { width: Math.ceil(width) + 2 * EDGE_LABEL.padX, height: EDGE_LABEL.height };
  }

  function layOut(data, family) {
    var twoLines = data.nodes.some(function (n) { return n.sublabel; });
    var graph = {
      id: "root",
      layoutOptions: {
        "elk.algorithm": "layered",
        "elk.direction": data.direction === "DOWN" ? "DOWN" : "RIGHT",
        "elk.edgeRouting": "ORTHOGONAL",
        "elk.padding": "[top=14,left=14,bottom=14,right=14]",
        // Every edge keeps a track of its own: long edges never run along one another.
        "elk.layered.mergeEdges": "false",
        "elk.spacing.nodeNode": "20",
        "elk.spacing.edgeNode": "14",
        "elk.spacing.edgeEdge": "10",
        "elk.spacing.edgeLabel": "3",
        "elk.layered.spacing.nodeNodeBetweenLayers": "56",
        "elk.layered.spacing.edgeNodeBetweenLayers": "16",
        "elk.layered.spacing.edgeEdgeBetweenLayers": "10",
        // Network simplex draws straighter edges; past a few hundred nodes it takes seconds on
        // the page's thread, where Brandes-Koepf takes a fraction of that.
        "elk.layered.nodePlacement.strategy": data.nodes.length > BIG_GRAPH ? "BRANDES_KOEPF" : "NETWORK_SIMPLEX",
        "elk.layered.crossingMinimization.strategy": "LAYER_SWEEP",
        "elk.layered.thoroughness": "20",
        "elk.edgeLabels.placement": "CENTER",
        // Keep the server's order where it costs nothing, so a graph looks alike from day to day.
        "elk.layered.considerModelOrder.strategy": "NODES_AND_EDGES",
      },
      children: data.nodes.map(function (node) {
        var size = nodeSize(node, family, twoLines);
        return {
          id: node.id, width: size.width, height: size.height,
          // A node that many edges meet grows taller, so each arrives at a point of its own
          // instead of a comb of arrowheads on top of one another.
          layoutOptions: {
            "elk.nodeSize.constraints": "PORTS MINIMUM_SIZE",
            "elk.nodeSize.minimum": "(" + size.width + "," + size.height + ")",
            "elk.spacing.portPort": "10",
          },
        };
      }),
      edges: data.edges.map(function (edge) {
        var item = { id: edge.id, sources: [edge.source], targets: [edge.target] };
        if (edge.label) {
          var size = edgeLabelSize(edge.label, family);
          item.labels = [{ id: edge.id + " label", text: edge.label, width: size.width, height: size.height }];
        }
        return item;
      }),
    };
    return elk.layout(graph).then(function (result) {
      var layout = { width: Math.ceil(result.width), height: Math.ceil(result.height), nodes: {}, edges: {} };
      result.children.forEach(function (child) {
        layout.nodes[child.id] = { x: child.x, y: child.y, width: child.width, height: child.height };
      });
      result.edges.forEach(function (edge) {
        var points = [];
        (edge.sections || []).forEach(function (section) {
          points.push(section.startPoint);
          (section.bendPoints || []).forEach(function (point) { points.push(point); });
          points.push(section.endPoint);
        });
        var label = edge.labels && edge.labels[0];
        layout.edges[edge.id] = {
          points: points,
          label: label ? { x: label.x, y: label.y, width: label.width, height: label.height } : null,
        };
      });
      return layout;
    });
  }

  // --- drawing ------------------------------------------------------------------------------

  function svg(name, attributes) {
    var element = document.createElementNS(SVG_NS, name);
    Object.keys(attributes || {}).forEach(function (key) {
      if (attributes[key] !== null && attributes[key] !== undefined) element.setAttribute(key, attributes[key]);
    });
    return element;
  }

  function round(n) { return Math.round(n * 10) / 10; }

  // The edge's polyline with its corners rounded, stopping short of the end for the arrowhead.
  function edgePath(points) {
    if (points.length < 2) return "";
    var last = points[points.length - 1], before = points[points.length - 2];
    var length = Math.hypot(last.x - before.x, last.y - before.y) || 1;
    var trimmed = points.slice(0, -1).concat([{
      x: last.x - (last.x - before.x) / length * (ARROW.length - 1),
      y: last.y - (last.y - before.y) / length * (ARROW.length - 1),
    }]);
    var d = "M" + round(trimmed[0].x) + " " + round(trimmed[0].y);
    for (var i = 1; i < trimmed.length - 1; i++) {
      var a = trimmed[i - 1], b = trimmed[i], c = trimmed[i + 1];
      var ab = Math.hypot(b.x - a.x, b.y - a.y), bc = Math.hypot(c.x - b.x, c.y - b.y);
      var r = Math.min(BEND_RADIUS, ab / 2, bc / 2);
      if (!r) { d += " L" + round(b.x) + " " + round(b.y); continue; }
      var p = { x: b.x - (b.x - a.x) / ab * r, y: b.y - (b.y - a.y) / ab * r };
      var q = { x: b.x + (c.x - b.x) / bc * r, y: b.y + (c.y - b.y) / bc * r };
      d += " L" + round(p.x) + " " + round(p.y) + " Q" + round(b.x) + " " + round(b.y) + " " + round(q.x) + " " + round(q.y);
    }
    var end = trimmed[trimmed.length - 1];
    return d + " L" + round(end.x) + " " + round(end.y);
  }

  function arrowHead(points) {
    if (points.length < 2) return "";
    var tip = points[points.length - 1], from = points[points.length - 2];
    var length = Math.hypot(tip.x - from.x, tip.y - from.y) || 1;
    var ux = (tip.x - from.x) / length, uy = (tip.y - from.y) / length;
    var baseX = tip.x - ux * ARROW.length, baseY = tip.y - uy * ARROW.length;
    return "M" + round(tip.x) + " " + round(tip.y) +
      " L" + round(baseX - uy * ARROW.halfWidth) + " " + round(baseY + ux * ARROW.halfWidth) +
      " L" + round(baseX + uy * ARROW.halfWidth) + " " + round(baseY - ux * ARROW.halfWidth) + " Z";
  }

  function nodeTooltip(node) {
    return node.title || node.label + (node.sublabel ? " (" + node.sublabel + ")" : "");
  }

  function nodeClass(node, focus) {
    var classes = ["graph-node"];
    if (token(node.kind)) classes.push("graph-node--" + token(node.kind));
    if (token(node.status)) classes.push("is-" + token(node.status));
    if (focus.id === node.id) classes.push("is-focus");
    else if (focus.near.has(node.id)) classes.push("is-near");
    return classes.join(" ");
  }

  function edgeClass(edge, focus) {
    var classes = ["graph-edge"];
    if (token(edge.status)) classes.push("is-" + token(edge.status));
    if (focus.id && (edge.source === focus.id || edge.target === focus.id)) classes.push("is-near");
    return classes.join(" ");
  }

  // The node in focus (data-graph-focus) and its neighbours.
  function focusOf(figure, data) {
    var id = figure.dataset.graphFocus || "";
    var near = new Set();
    if (id) {
      data.edges.forEach(function (edge) {
        if (edge.source === id) near.add(edge.target);
        if (edge.target === id) near.add(edge.source);
      });
    }
    return { id: id, near: near };
  }

  // A node's tooltip: a sibling of its link, not inside it, so the link's name is the words it
  // shows (axe label-content-name-mismatch counts a title inside a link as its visible text).
  function nodeTitle(node) {
    var title = svg("title");
    title.textContent = nodeTooltip(node);
    return title;
  }

  // A node link's name begins with the words it shows (WCAG 2.5.3, label in name): a label cut
  // short to fit is named "Shown… (Whole label)".
  function nodeName(node, shownLabel, shownSublabel) {
    function words(shown, whole) { return !shown || shown === whole ? whole : shown + " (" + whole + ")"; }
    return words(shownLabel, node.label) + (node.sublabel ? ", " + words(shownSublabel, node.sublabel) : "");
  }

  // A node's content: a link when it has one (focusable, named), a group otherwise.
  function nodeBody(node, box, family) {
    var body = node.href
      ? svg("a", { class: "graph-node-link", href: node.href })
      : svg("g", { class: "graph-node-body" });
    var room = box.width - NODE.textX - NODE.padRight;
    var twoLines = box.height >= NODE.height;
    var label = svg("text", { class: "graph-node-label", x: NODE.textX, y: twoLines ? 19 : round(box.height / 2 + 4.5) });
    label.textContent = fitText(node.label, FONT.label, family, room);
    var sublabel = svg("text", { class: "graph-node-sublabel", x: NODE.textX, y: 35 });
    sublabel.textContent = twoLines ? fitText(node.sublabel, FONT.sublabel, family, room) : "";
    if (node.href) body.setAttribute("aria-label", nodeName(node, label.textContent, sublabel.textContent));
    body.append(
      svg("rect", { class: "graph-node-box", width: box.width, height: box.height, rx: 8 }),
      svg("rect", { class: "graph-node-bar", x: 6, y: 6, width: 4, height: box.height - 12, rx: 2 }),
      label,
      " ", // the two lines read as two words: the link's name then contains its visible text
      sublabel
    );
    return body;
  }

  function edgeTitle(edge, data, labels) {
    var words = (labels[edge.source] || edge.source) + " " + (data.relation || "→") + " " + (labels[edge.target] || edge.target);
    return edge.label ? words + ": " + edge.label : words;
  }

  function edgeElement(prefix, edge, route, data, labels, focus, family) {
    var group = svg("g", { id: prefix + "-edge-" + edge.id, class: edgeClass(edge, focus), "data-id": edge.id, "data-source": edge.source, "data-target": edge.target });
    var title = svg("title");
    title.textContent = edgeTitle(edge, data, labels);
    group.append(title, svg("path", { class: "graph-edge-line", d: edgePath(route.points) }), svg("path", { class: "graph-edge-head", d: arrowHead(route.points) }));
    if (route.label) {
      var text = svg("text", { class: "graph-edge-label", x: round(route.label.x + route.label.width / 2), y: round(route.label.y + route.label.height / 2 + 4) });
      text.textContent = edge.label || "";
      group.append(svg("rect", { class: "graph-edge-label-box", x: round(route.label.x), y: round(route.label.y), width: route.label.width, height: route.label.height, rx: 4 }), text);
    }
    return group;
  }

  function labelsById(data) {
    var labels = {};
    data.nodes.forEach(function (node) { labels[node.id] = node.label; });
    return labels;
  }

  function draw(figure, data, key, layout, count, laidOut) {
    var canvas = figure.querySelector(":scope > .graph-canvas");
    if (!canvas) return;
    var family = fontFamily(figure);
    var prefix = figure.id;
    var focus = focusOf(figure, data);
    var labels = labelsById(data);
    var width = layout.width, height = layout.height;
    var drawing = svg("svg", {
      class: "graph-svg", viewBox: "0 0 " + width + " " + height, width: width, height: height,
      role: "group", "aria-label": data.label || null,
    });
    drawing.style.minWidth = Math.round(width * MIN_SCALE) + "px";
    var edgeLayer = svg("g", { class: "graph-edges" }), nodeLayer = svg("g", { class: "graph-nodes" });
    var state = { key: key, layout: layout, data: data, nodes: new Map(), edges: new Map() };
    data.edges.forEach(function (edge) {
      var element = edgeElement(prefix, edge, layout.edges[edge.id], data, labels, focus, family);
      edgeLayer.append(element);
      state.edges.set(edge.id, element);
    });
    data.nodes.forEach(function (node) {
      var box = layout.nodes[node.id];
      var element = svg("g", { id: prefix + "-node-" + node.id, class: nodeClass(node, focus), "data-id": node.id, transform: "translate(" + round(box.x) + " " + round(box.y) + ")" });
      element.append(nodeBody(node, box, family), nodeTitle(node));
      nodeLayer.append(element);
      state.nodes.set(node.id, element);
    });
    drawing.append(edgeLayer, nodeLayer);
    canvas.replaceChildren(drawing);
    drawn.set(figure, state);
    figure.dataset.graphState = "drawn";
    figure.dataset.graphLayouts = String(count);
    quietFallback(figure);
    figure.dispatchEvent(new CustomEvent("graph:drawn", { bubbles: true, detail: { laidOut: laidOut } }));
  }

  function drawEmpty(figure, data, key) {
    var canvas = figure.querySelector(":scope > .graph-canvas");
    if (canvas) canvas.replaceChildren();
    drawn.set(figure, { key: key, layout: null, data: data, nodes: new Map(), edges: new Map() });
    figure.dataset.graphState = "empty";
  }

  // Same nodes and edges: new classes, words, links and titles; nothing moves, and a node
  // keeps its element (and the keyboard focus inside it).
  function update(figure, state, data) {
    var family = fontFamily(figure);
    var focus = focusOf(figure, data);
    var labels = labelsById(data);
    data.nodes.forEach(function (node) {
      var element = state.nodes.get(node.id);
      var box = state.layout.nodes[node.id];
      element.setAttribute("class", nodeClass(node, focus));
      var body = element.firstElementChild;
      element.querySelector(":scope > title").textContent = nodeTooltip(node);
      if ((body.localName === "a") !== Boolean(node.href)) {
        body.replaceWith(nodeBody(node, box, family));
        return;
      }
      var room = box.width - NODE.textX - NODE.padRight;
      var shown = fitText(node.label, FONT.label, family, room);
      var shownSublabel = box.height >= NODE.height ? fitText(node.sublabel, FONT.sublabel, family, room) : "";
      body.querySelector(".graph-node-label").textContent = shown;
      body.querySelector(".graph-node-sublabel").textContent = shownSublabel;
      if (node.href) {
        body.setAttribute("href", node.href);
        body.setAttribute("aria-label", nodeName(node, shown, shownSublabel));
      }
    });
    data.edges.forEach(function (edge) {
      var element = state.edges.get(edge.id);
      element.setAttribute("class", edgeClass(edge, focus));
      element.querySelector("title").textContent = edgeTitle(edge, data, labels);
      var text = element.querySelector(".graph-edge-label");
      if (text) text.textContent = edge.label || "";
    });
    state.data = data;
    quietFallback(figure);
    figure.dispatchEvent(new CustomEvent("graph:updated", { bubbles: true }));
  }

  // Once drawn, the list stays for screen readers but its links leave the tab order: the
  // drawing's nodes are the links to tab to.
  function quietFallback(figure) {
    var drawnNow = figure.dataset.graphState === "drawn";
    figure.querySelectorAll(":scope > .graph-fallback a[href]").forEach(function (link) {
      if (drawnNow) link.setAttribute("tabindex", "-1"); else link.removeAttribute("tabindex");
    });
  }

  // --- rendering a figure -------------------------------------------------------------------

  function render(figure) {
    var data = readData(figure);
    if (!data) return;
    var key = structureKey(data);
    var state = drawn.get(figure);
    if (state && state.key === key) {
      pending.delete(figure);  // back to what is drawn: a layout under way is not wanted
      if (state.layout) update(figure, state, data);
      return;
    }
    if (!data.nodes.length) {
      pending.delete(figure);
      drawEmpty(figure, data, key);
      return;
    }
    var kept = layouts.get(figure.id);
    if (kept && kept.key === key) {
      pending.delete(figure);
      draw(figure, data, key, kept.layout, kept.count, false);
      return;
    }
    var under = pending.get(figure);
    if (under && under.key === key) return;  // it draws the newest data when it is done
    var job = { key: key };
    pending.set(figure, job);
    if (!figure.dataset.graphState) figure.dataset.graphState = "laying-out";
    loadElk(figure.dataset.graphElk)
      .then(function () { return layOut(data, fontFamily(figure)); })
      .then(function (layout) {
        if (pending.get(figure) !== job) return;  // a newer graph took over
        pending.delete(figure);
        var count = ((layouts.get(figure.id) || {}).count || 0) + 1;
        layouts.set(figure.id, { key: key, layout: layout, count: count });
        var newest = readData(figure);
        if (!figure.isConnected || !newest || structureKey(newest) !== key) return;
        draw(figure, newest, key, layout, count, true);
      })
      .catch(function (error) {
        if (pending.get(figure) === job) pending.delete(figure);
        if (figure.dataset.graphState === "laying-out") figure.dataset.graphState = "failed";
        console.error("graph " + figure.id + ": could not lay it out; its list stays", error);
      });
  }

  // Several changes in one task (a push swapping the data and the list) render once.
  var queued = new Set();
  function schedule(figure) {
    if (queued.has(figure)) return;
    queued.add(figure);
    if (queued.size > 1) return;
    queueMicrotask(function () {
      var figures = Array.from(queued);
      queued.clear();
      figures.forEach(function (f) { if (f.isConnected) render(f); });
    });
  }

  function figureOf(element) {
    var parent = element.parentElement;
    return parent && parent.matches("figure[data-graph]") ? parent : null;
  }

  new MutationObserver(function (mutations) {
    mutations.forEach(function (mutation) {
      mutation.addedNodes.forEach(function (added) {
        if (added.nodeType !== 1) return;
        if (added.matches("figure[data-graph]")) { schedule(added); return; }
        var figure = figureOf(added);
        if (figure && added.matches("script[type='application/json']")) schedule(figure);
        else if (figure && added.matches(".graph-fallback")) quietFallback(figure);
        else if (added.querySelector("figure[data-graph]")) added.querySelectorAll("figure[data-graph]").forEach(schedule);
      });
    });
  }).observe(document.documentElement, { childList: true, subtree: true });

  // Hovering or focusing a node picks out its edges.
  function trace(event, on) {
    var node = event.target.closest && event.target.closest(".graph-node");
    var figure = node && node.closest("figure[data-graph]");
    if (!figure) return;
    var id = node.dataset.id;
    if (on) figure.dataset.graphTracing = id; else delete figure.dataset.graphTracing;
    figure.querySelectorAll(".graph-edge").forEach(function (edge) {
      edge.classList.toggle("is-traced", on && (edge.dataset.source === id || edge.dataset.target === id));
    });
  }
  document.addEventListener("pointerover", function (event) { trace(event, true); });
  document.addEventListener("pointerout", function (event) { trace(event, false); });
  document.addEventListener("focusin", function (event) { trace(event, true); });
  document.addEventListener("focusout", function (event) { trace(event, false); });

  document.querySelectorAll("figure[data-graph]").forEach(schedule);
})();
