// The agent context switcher in the header, and the live parts of the Logs, Events and Alerts
// pages: what HTML and htmx cannot do alone.
(function () {
  "use strict";

  // --- the switcher: a search box over a listbox of agents (ARIA combobox pattern) ----------
  function switcher() {
    var root = document.querySelector("[data-ctx]");
    if (!root) return null;
    return {
      root: root,
      button: root.querySelector("[data-ctx-toggle]"),
      popover: root.querySelector("[data-ctx-popover]"),
      search: root.querySelector("[data-ctx-search]"),
      options: Array.prototype.slice.call(root.querySelectorAll("[data-ctx-option]")),
      empty: root.querySelector("[data-ctx-empty]"),
    };
  }

  function visibleOptions(ctx) {
    return ctx.options.filter(function (option) { return !option.hidden; });
  }

  function setActive(ctx, option, byPointer) {
    ctx.options.forEach(function (other) { other.classList.toggle("is-active", other === option); });
    ctx.search.setAttribute("aria-activedescendant", option ? option.id : "");
    if (option && !byPointer) option.scrollIntoView({ block: "nearest" });
  }

  function activeOption(ctx) {
    return ctx.options.filter(function (option) { return option.classList.contains("is-active") && !option.hidden; })[0] || null;
  }

  function filterOptions(ctx) {
    var words = ctx.search.value.toLowerCase().split(/\s+/).filter(Boolean);
    ctx.options.forEach(function (option) {
      var haystack = option.dataset.search || "";
      option.hidden = !words.every(function (word) { return haystack.indexOf(word) >= 0; });
    });
    var shown = visibleOptions(ctx);
    ctx.empty.hidden = shown.length > 0;
    // Typing puts the best match first: the first agent shown (not "All agents" unless only it).
    var best = words.length ? (shown.filter(function (o) { return o.value !== "all"; })[0] || shown[0]) : null;
    setActive(ctx, best || shown.filter(function (o) { return o.getAttribute("aria-selected") === "true"; })[0] || shown[0] || null);
  }

  function openSwitcher(ctx) {
    ctx.popover.hidden = false;
    ctx.button.setAttribute("aria-expanded", "true");
    ctx.root.classList.add("is-open");
    if (ctx.search.value) { ctx.search.value = ""; searchRemote(ctx); }  // the first options again
    filterOptions(ctx);
    ctx.search.focus();
  }

  function closeSwitcher(ctx, focusButton) {
    if (ctx.popover.hidden) return;
    ctx.popover.hidden = true;
    ctx.button.setAttribute("aria-expanded", "false");
    ctx.root.classList.remove("is-open");
    if (focusButton) ctx.button.focus();
  }

  function moveActive(ctx, step) {
    var shown = visibleOptions(ctx);
    if (!shown.length) return;
    var index = shown.indexOf(activeOption(ctx));
    var next = index < 0 ? (step > 0 ? 0 : shown.length - 1) : Math.min(shown.length - 1, Math.max(0, index + step));
    setActive(ctx, shown[next]);
  }

  document.addEventListener("click", function (event) {
    var ctx = switcher();
    if (!ctx) return;
    if (event.target.closest("[data-ctx-toggle]")) {
      if (ctx.popover.hidden) openSwitcher(ctx); else closeSwitcher(ctx, false);
    } else if (!ctx.root.contains(event.target)) {
      closeSwitcher(ctx, false);
    }
  });

  // A large fleet's switcher lists a few agents (data-ctx-remote): what is typed is searched on
  // the server, whose options replace the listed ones (the latest answer only).
  var remoteTimer = null, remoteAsked = 0;
  function searchRemote(ctx) {
    var listbox = ctx.root.querySelector("[data-ctx-remote]");
    if (!listbox) return;
    clearTimeout(remoteTimer);
    remoteTimer = setTimeout(function () {
      var asked = ++remoteAsked;
      var url = listbox.dataset.ctxRemote + "?q=" + encodeURIComponent(ctx.search.value.trim());
      fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null || asked !== remoteAsked) return;
          var fresh = switcher();
          fresh.options.forEach(function (option) { if (option.value !== "all") option.remove(); });
          fresh.empty.insertAdjacentHTML("beforebegin", html);
          filterOptions(switcher());
          document.body.dispatchEvent(new CustomEvent("live:topics"));  // subscribe to the new ones
        })
        .catch(function () { /* the listed options stay */ });
    }, 150);
  }

  document.addEventListener("input", function (event) {
    if (!event.target.matches || !event.target.matches("[data-ctx-search]")) return;
    var ctx = switcher();
    filterOptions(ctx);
    searchRemote(ctx);
  });

  document.addEventListener("keydown", function (event) {
    var ctx = switcher();
    if (!ctx) return;
    var inSearch = event.target.matches && event.target.matches("[data-ctx-search]");
    if (event.key === "Escape" && !ctx.popover.hidden) {
      event.preventDefault();
      closeSwitcher(ctx, true);
      return;
    }
    // Ctrl+K / Cmd+K opens the switcher from anywhere.
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "k") {
      event.preventDefault();
      openSwitcher(ctx);
      return;
    }
    if (!inSearch) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      moveActive(ctx, event.key === "ArrowDown" ? 1 : -1);
    } else if (event.key === "Home" || event.key === "End") {
      var shown = visibleOptions(ctx);
      if (shown.length) { event.preventDefault(); setActive(ctx, shown[event.key === "Home" ? 0 : shown.length - 1]); }
    } else if (event.key === "Enter") {
      event.preventDefault();
      var chosen = activeOption(ctx);
      if (chosen) chosen.click();
    } else if (event.key === "Tab" && !event.shiftKey) {
      // Tab leaves the listbox for the quick actions, or closes the popover.
      if (!ctx.popover.querySelector(".ctx-actions")) closeSwitcher(ctx, false);
    }
  });

  document.addEventListener("mousemove", function (event) {
    var option = event.target.closest && event.target.closest("[data-ctx-option]");
    if (!option) return;
    var ctx = switcher();
    if (ctx && activeOption(ctx) !== option) setActive(ctx, option, true);
  });

  // The quick Restart: once posted, the popover closes (the toast says how it went).
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.elt && event.detail.elt.matches && event.detail.elt.matches("[data-ctx-restart]")) {
      var ctx = switcher();
      if (ctx) closeSwitcher(ctx, false);
    }
  });

  // --- filters: the custom time range appears only when chosen ------------------------------
  document.addEventListener("change", function (event) {
    if (!event.target.matches || !event.target.matches("select[data-range]")) return;
    var custom = event.target.form.querySelector("[data-range-custom]");
    if (!custom) return;
    var on = event.target.value === "custom";
    custom.hidden = !on;
    custom.querySelectorAll("input").forEach(function (input) { input.disabled = !on; });
    // Choosing "Custom…" waits for the dates; anything else filters at once (the form's change).
    if (on) { event.stopPropagation(); custom.querySelector("input").focus(); }
  }, true);

  // A filter the page cannot use answers 400 with the list region saying why: show it.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (event.detail.xhr.status === 400 && target && /^(log|event|alert)-results$/.test(target.id)) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // A refused alert action (409: already resolved) answers with a toast: let it in.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var elt = event.detail.elt;
    if (event.detail.xhr.status === 409 && elt.closest && elt.closest("[data-refusal-toast]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // --- beats pushed over the WebSocket: the pages fetch what changed with their own filters ---
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var target = (event.detail && event.detail.target) || event.target;
    var id = target && target.id;
    if (id === "alerts-beat") htmx.trigger(document.body, "alerts:changed");
    else if (id === "events-beat") htmx.trigger(document.body, "events:changed");
    else if (id && id.indexOf("ctx-state-") === 0) showChosenState(id);
  });

  // An agent's state changed: the switcher's button shows the chosen agent's too.
  function showChosenState(id) {
    var badge = document.getElementById(id);
    var option = badge && badge.closest("[data-ctx-option]");
    var shown = document.querySelector("[data-ctx-state]");
    if (!option || !shown || option.getAttribute("aria-selected") !== "true") return;
    shown.className = badge.className + " ctx-state";
    shown.textContent = badge.textContent;
  }

  // The alert list is fetched again when alerts change, but not under someone's hands: while a
  // note is being typed or the Silence menu is open, the new list waits.
  var alertsWaiting = false;
  function alertsBusy(region) {
    var focused = document.activeElement;
    if (focused && region.contains(focused) && focused.matches("input[type=text]")) return true;
    if (region.querySelector("details[open]")) return true;
    return Array.prototype.some.call(region.querySelectorAll("input[name=note]"), function (input) { return input.value; });
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var region = event.detail.elt;
    if (region.id !== "alert-results" || event.detail.requestConfig.verb !== "get") return;
    if (event.detail.requestConfig.triggeringEvent && event.detail.requestConfig.triggeringEvent.type === "change") return;
    if (alertsBusy(region)) { event.preventDefault(); alertsWaiting = true; }
  });
  // Someone may have started typing while the list was on its way: keep what they typed.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var region = event.detail.target;
    if (!region || region.id !== "alert-results" || event.detail.elt !== region) return;
    if (alertsBusy(region)) { event.detail.shouldSwap = false; alertsWaiting = true; }
  });
  // The list waits for hands to leave it: focus moving on, the menu closing, or a swap (the beat
  // of an alert someone resolved can arrive before the answer that takes their note away).
  ["focusout", "toggle", "htmx:afterSettle"].forEach(function (name) {
    document.addEventListener(name, function () {
      if (!alertsWaiting) return;
      setTimeout(function () {
        var region = document.getElementById("alert-results");
        if (region && !alertsBusy(region)) { alertsWaiting = false; htmx.trigger(document.body, "alerts:changed"); }
      }, 300);
    }, true);
  });

  // --- the Logs page's live tail ----------------------------------------------------------------
  // observability.live pushes new rows, oldest first, into the page's inbox <tbody> (its id is the
  // results' data-tail). They move from there to their place at the top of the list, newest
  // first. Paused, pushes are counted and dropped; Resume fetches every line after the last one
  // shown (logs.after) and goes live again, so nothing is lost. The same fetch runs when the
  // socket comes back, and every few seconds while it is down.
  var MAX_ROWS = 3000;
  var tail = { paused: false, missed: 0, fetching: false };

  function tailResults() {
    var results = document.getElementById("log-results");
    return results && results.dataset.tail ? results : null;
  }

  function rowId(row) { return Number(row.dataset.id || 0); }

  function lastId() {
    var body = document.getElementById("log-lines");
    var highest = 0;
    if (body) body.querySelectorAll("tr[data-id]").forEach(function (row) { highest = Math.max(highest, rowId(row)); });
    return highest;
  }

  function wanted(results, row) {
    if (!row.dataset.id) return true; // "N more lines arrived at once"
    if (Number(row.dataset.level || 0) < Number(results.dataset.levelMin || 0)) return false;
    var text = (results.dataset.text || "").toLowerCase();
    var message = row.querySelector(".log-text");
    return !text || (message && message.textContent.toLowerCase().indexOf(text) >= 0);
  }

  // A new row goes above every row older than it (rows near the top are the newest).
  function placeRow(body, row) {
    var id = rowId(row);
    var existing = id && document.getElementById("log-" + id);
    if (existing && existing !== row && body.contains(existing)) return false;
    var before = body.firstElementChild;
    while (id && before && rowId(before) > id) before = before.nextElementSibling;
    body.insertBefore(row, before);
    row.classList.add("is-fresh");
    setTimeout(function () { row.classList.remove("is-fresh"); }, 2000);
    return true;
  }

  function trim(body) {
    var rows = body.querySelectorAll("tr");
    if (rows.length <= MAX_ROWS) return;
    for (var i = MAX_ROWS; i < rows.length; i++) rows[i].remove();
    // The Older link would skip what was trimmed: searching is the way back in time now.
    var older = document.getElementById("logs-older");
    if (older) older.innerHTML = '<span class="muted small">Older lines were dropped from this live view; choose a time range to read them.</span>';
  }

  function placeRows(rows) {
    var results = tailResults();
    var body = document.getElementById("log-lines");
    if (!results || !body) return 0;
    var placed = 0;
    rows.forEach(function (row) {
      if (wanted(results, row) && placeRow(body, row)) placed += 1; else row.remove();
    });
    if (placed) {
      var empty = results.querySelector("[data-no-lines]");
      if (empty) empty.remove();
    }
    trim(body);
    return placed;
  }

  function showTail() {
    var results = tailResults();
    if (!results) return;
    var toggle = results.querySelector("[data-live-toggle]");
    var note = results.querySelector("[data-tail-note]");
    if (toggle) {
      toggle.setAttribute("aria-pressed", String(!tail.paused));
      toggle.classList.toggle("is-paused", tail.paused);
      toggle.querySelector("[data-live-toggle-text]").textContent = tail.paused ? "Paused" : "Live";
    }
    if (note) {
      note.dataset.missed = String(tail.missed);
      note.textContent = tail.paused
        ? (tail.missed ? tail.missed + " new line" + (tail.missed === 1 ? "" : "s") + " since you paused; Resume shows them." : "Paused: new lines wait until you resume.")
        : "New lines appear at the top as they are written.";
    }
  }

  function fetchMissed() {
    var results = tailResults();
    if (!results || tail.fetching) return;
    tail.fetching = true;
    var url = results.dataset.resumeUrl + (results.dataset.resumeUrl.length > 1 ? "&" : "") + "after=" + lastId();
    fetch(location.pathname + url, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : ""; })
      .then(function (html) {
        if (!html.trim()) return;
        var template = document.createElement("template");
        template.innerHTML = "<table><tbody>" + html + "</tbody></table>";
        // Oldest first, so each finds its place above the ones before it.
        placeRows(Array.prototype.slice.call(template.content.querySelectorAll("tr")).reverse());
      })
      .catch(function () { /* the next resync or poll tries again */ })
      .then(function () { tail.fetching = false; });
  }

  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-live-toggle]")) return;
    tail.paused = !tail.paused;
    if (!tail.paused) { tail.missed = 0; fetchMissed(); }
    showTail();
  });

  document.addEventListener("htmx:wsBeforeMessage", function (event) {
    var results = tailResults();
    var message = event.detail.message;
    if (!results || !tail.paused || typeof message !== "string") return;
    if (message.indexOf('id="' + results.dataset.tail + '"') < 0) return;
    event.preventDefault(); // a message to the log group carries nothing but log rows
    tail.missed += (message.match(/ data-id="/g) || []).length;
    showTail();
  });

  // Fired for each element swapped in; detail.target is the element they went into.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var results = tailResults();
    var inbox = event.detail && event.detail.target;
    if (!results || !inbox || inbox.id !== results.dataset.tail) return;
    placeRows(Array.prototype.slice.call(inbox.querySelectorAll("tr")));
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.body.addEventListener("live:resync", function () { if (!tail.paused) fetchMissed(); });
  });
  setInterval(function () {
    if (tailResults() && !tail.paused && window.portalLiveDown && window.portalLiveDown()) fetchMissed();
  }, 3000);
  // A list shown for the first time (the page, or new filters) is live.
  function initTail() {
    var results = tailResults();
    if (!results || results.dataset.tailReady) return;
    results.dataset.tailReady = "1";
    tail.paused = false;
    tail.missed = 0;
    showTail();
  }
  document.addEventListener("DOMContentLoaded", initTail);
  document.addEventListener("htmx:afterSettle", initTail);

  // --- the events timeline: one heading per day, however pages were joined -------------------
  function tidyTimeline() {
    var timeline = document.getElementById("timeline");
    if (!timeline) return;
    var seen = {};
    timeline.querySelectorAll(".timeline-day").forEach(function (day) {
      if (seen[day.dataset.day]) day.remove(); else seen[day.dataset.day] = true;
    });
    if (timeline.querySelector(".timeline-item")) {
      var empty = document.querySelector("[data-no-events]");
      if (empty) empty.remove();
    }
  }
  document.addEventListener("htmx:afterSettle", tidyTimeline);
  document.addEventListener("htmx:oobAfterSwap", tidyTimeline);
  document.addEventListener("htmx:afterSwap", function (event) {
    // New events on top are marked for a moment, so the eye finds them.
    if (event.detail.target && event.detail.target.id === "timeline" && event.detail.requestConfig && /after=/.test(event.detail.requestConfig.path)) {
      markFresh(event.detail.target.querySelectorAll(".timeline-item:not([data-seen])"));
    }
  });

  function markFresh(items) {
    items.forEach(function (item) {
      item.setAttribute("data-seen", "");
      item.classList.add("is-fresh");
      setTimeout(function () { item.classList.remove("is-fresh"); }, 2500);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("#timeline .timeline-item").forEach(function (item) { item.setAttribute("data-seen", ""); });
  });
})();
