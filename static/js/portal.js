// Small behaviours HTML cannot do alone: theme toggle, the mobile drawer, toasts.
(function () {
  "use strict";
  var root = document.documentElement;

  function setTheme(theme) {
    root.dataset.theme = theme;
    try { localStorage.setItem("waooaw-theme", theme); } catch (e) { /* private mode */ }
    document.querySelectorAll("[data-theme-toggle]").forEach(function (button) {
      button.setAttribute("aria-label", theme === "dark" ? "Switch to light theme" : "Switch to dark theme");
    });
  }

  // --- toasts ---------------------------------------------------------------------------
  // Errors (and critical alerts) stay until dismissed; the rest fade. Alert toasts of one rule
  // and change collapse into one line ("3 agents ERRORED: …"). At most MAX_TOASTS show at once:
  // the oldest give way (faded ones first) and a last line counts what was cleared.
  var MAX_TOASTS = 4;
  var FADE_MS = { "toast-info": 6000, "toast-success": 6000, "toast-warning": 10000 };

  function levelOf(toast) {
    return ["toast-error", "toast-warning", "toast-success", "toast-info"].filter(function (c) {
      return toast.classList.contains(c);
    })[0] || "toast-info";
  }

  function removeToast(toast) {
    if (toast.classList.contains("toast-leaving")) return;
    toast.classList.add("toast-leaving");
    setTimeout(function () { toast.remove(); }, 200);
  }

  function fadeLater(toast) {
    var wait = FADE_MS[levelOf(toast)];
    // An action's result offers Undo for a while: the button goes then, the toast just after.
    var undo = toast.querySelector(".toast-undo");
    if (undo && toast.dataset.undoSeconds) {
      var undoMs = Number(toast.dataset.undoSeconds) * 1000;
      setTimeout(function () { undo.remove(); }, undoMs);
      wait = Math.max(wait || 0, undoMs + 1500);
    }
    if (!wait || toast.dataset.fading) return;
    toast.dataset.fading = "1";
    setTimeout(function () { removeToast(toast); }, wait);
  }

  function toastElement(level, attrs, build) {
    var toast = document.createElement("div");
    toast.className = "toast " + level;
    toast.setAttribute("role", level === "toast-error" ? "alert" : "status"); // errors interrupt; the rest wait
    Object.keys(attrs).forEach(function (name) { toast.setAttribute(name, attrs[name]); });
    var text = document.createElement("span");
    build(text);
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.setAttribute("data-dismiss-toast", "");
    close.innerHTML = '<svg class="icon"><use href="#i-x"/></svg>';
    toast.append(text, close);
    return toast;
  }

  function link(href, words) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = words;
    return a;
  }

  // A new alert toast joins the others of its rule and change; returns the toast that stays.
  function grouped(toast) {
    var key = toast.dataset.groupKey;
    if (!key) return toast;
    var box = toast.parentNode;
    var same = Array.prototype.filter.call(box.querySelectorAll(".toast[data-group-key]"), function (t) {
      return t.dataset.groupKey === key && !t.classList.contains("toast-leaving");
    });
    if (same.length < 2) return toast;
    var agents = [];
    var level = "toast-info";
    same.forEach(function (t) {
      (t.dataset.agents ? JSON.parse(t.dataset.agents) : [t.dataset.agent]).forEach(function (name) {
        if (agents.indexOf(name) < 0) agents.push(name);
      });
      if (levelOf(t) === "toast-error" || level === "toast-error") level = "toast-error";
      else if (levelOf(t) === "toast-warning" || level === "toast-warning") level = "toast-warning";
      else level = levelOf(t);
    });
    var shown = agents.slice(0, 3).join(", ") + (agents.length > 3 ? " and " + (agents.length - 3) + " more" : "");
    var group = toastElement(level, {
      "data-group-key": key,
      "data-group-text": toast.dataset.groupText,
      "data-group-href": toast.dataset.groupHref,
      "data-agents": JSON.stringify(agents),
      "data-alert-group": String(agents.length),
    }, function (text) {
      text.append(toast.dataset.groupText.replace("{n}", agents.length) + ": " + shown + " ");
      text.append(link(toast.dataset.groupHref, "View alerts"));
    });
    same.forEach(function (t) { t.remove(); });
    box.appendChild(group);
    return group;
  }

  function capToasts(box) {
    var shown = Array.prototype.filter.call(box.querySelectorAll(".toast"), function (t) {
      return !t.classList.contains("toast-leaving") && !t.hasAttribute("data-toast-overflow");
    });
    var extra = shown.length - MAX_TOASTS;
    if (extra <= 0) return;
    // The oldest that would fade anyway go first, then the oldest of the rest.
    var order = shown.filter(function (t) { return FADE_MS[levelOf(t)]; })
      .concat(shown.filter(function (t) { return !FADE_MS[levelOf(t)]; }));
    var cleared = order.slice(0, extra);
    cleared.forEach(function (t) { t.remove(); });
    // Only what would have stayed (errors, critical alerts) is worth a word when it goes.
    cleared = cleared.filter(function (t) { return !FADE_MS[levelOf(t)]; });
    if (!cleared.length) return;
    var note = box.querySelector("[data-toast-overflow]");
    var count = (note ? Number(note.dataset.toastOverflow) : 0) + cleared.length;
    if (note) note.remove();
    note = toastElement("toast-info", { "data-toast-overflow": String(count) }, function (text) {
      text.append(count + " older notification" + (count === 1 ? "" : "s") + " cleared (open alerts stay on the Alerts page).");
    });
    box.insertBefore(note, box.firstChild);
    setTimeout(function () { removeToast(note); }, 10000);
  }

  // An Undo that was sent has done its work: its toast goes (the answer brings a new one).
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt.closest && event.detail.elt.closest(".toast-undo");
    if (form && event.detail.successful) removeToast(form.closest(".toast"));
  });

  function toastArrived(toast) {
    if (!toast.parentNode) return;
    toast = grouped(toast);
    fadeLater(toast);
    capToasts(toast.parentNode);
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target.closest("[data-theme-toggle]")) {
      setTheme(root.dataset.theme === "light" ? "dark" : "light");
    } else if (target.closest("[data-toggle-sidebar]")) {
      var open = document.body.classList.toggle("sidebar-open");
      target.closest("[data-toggle-sidebar]").setAttribute("aria-expanded", String(open));
    } else if (target.closest("[data-close-sidebar]")) {
      document.body.classList.remove("sidebar-open");
    } else if (target.closest("[data-dismiss-toast]")) {
      target.closest(".toast").remove();
    } else if (target.closest("[data-close-dialog]")) {
      target.closest("dialog").close();
    }
    // A click outside an open actions menu closes it.
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (!menu.contains(target) || target.closest(".menu-item")) menu.removeAttribute("open");
    });
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.body.classList.remove("sidebar-open");
    // Escape closes an open actions menu and gives the focus back to its button.
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      menu.removeAttribute("open");
      if (menu.contains(document.activeElement)) menu.querySelector("summary").focus();
    });
  });

  // Where the keyboard goes when a dialog closes: back to what opened it, or, when that was an
  // item of a menu that has closed meanwhile, to the menu's button.
  var lastFocused = null; // the menu item that asked for a dialog has lost the focus once it opens
  document.addEventListener("focusin", function (event) {
    if (!event.target.closest("dialog")) lastFocused = event.target;
  });
  function focusAfterDialog(opener) {
    if (!opener || !opener.isConnected) return;
    var menu = opener.closest && opener.closest("details.menu");
    if (menu && !menu.open) menu.querySelector("summary").focus();
    else opener.focus();
  }

  // A confirmation dialog fetched into #modal opens as a modal; it closes once its form is sent.
  document.addEventListener("htmx:afterSwap", function (event) {
    var dialog = event.detail.target.querySelector && event.detail.target.querySelector("dialog[data-open-modal]");
    if (dialog && !dialog.open) {
      var opener = document.activeElement === document.body ? lastFocused : document.activeElement;
      dialog.addEventListener("close", function () { focusAfterDialog(opener); }, { once: true });
      dialog.showModal();
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    var dialog = elt.closest && elt.closest("dialog");
    // A form marked data-keep-dialog answers with its own content (a refusal to show) or a
    // redirect; the dialog stays open meanwhile.
    if (dialog && elt.tagName === "FORM" && !elt.hasAttribute("data-keep-dialog")) dialog.close();
  });
  // A dialog's form refused for the role answers 403 with the reason; show it in the dialog.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var elt = event.detail.elt;
    if (event.detail.xhr.status === 403 && elt.hasAttribute && elt.hasAttribute("data-keep-dialog")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  // A form marked data-refusal-toast that is refused (403 for the role, 409, 400, 503...)
  // answers with only a toast and HX-Reswap: none (portal/htmx.py): let it in, so the person
  // reads why instead of seeing nothing.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var elt = event.detail.elt, xhr = event.detail.xhr;
    var refusal = xhr.status >= 400 && xhr.getResponseHeader("HX-Reswap") === "none";
    if (refusal && elt.closest && elt.closest("[data-refusal-toast]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  // A form marked data-swap-invalid answers bad input with 400 and itself, saying what was
  // wrong beside the field: swap it in like a success.
  document.addEventListener("htmx:beforeSwap", function (event) {
    // detail.elt is the swap's target; the element that asked is the request's.
    var config = event.detail.requestConfig, elt = (config && config.elt) || event.detail.elt;
    if (event.detail.xhr.status === 400 && elt.closest && elt.closest("[data-swap-invalid]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  document.addEventListener("close", function (event) {
    if (event.target.matches && event.target.matches("#modal dialog")) event.target.remove();
  }, true);

  // A filter form marked data-skip-unchanged sends nothing when its query is the one last sent
  // (typed and taken back within the delay): redrawing the same results would only close a menu
  // the person just opened. Submitting (Enter) always sends. The query counts as sent when the
  // request leaves (beforeRequest), not when it is asked for: a request queued behind another
  // is confirmed a second time when its turn comes.
  function formQuery(form) { return new URLSearchParams(new FormData(form)).toString(); }
  function skipsUnchanged(elt) { return elt && elt.matches && elt.matches("form[data-skip-unchanged]"); }
  document.addEventListener("htmx:confirm", function (event) {
    var form = event.detail.elt;
    if (!skipsUnchanged(form)) return;
    var trigger = event.detail.triggeringEvent;
    if (trigger && trigger.type === "submit") return;
    if (formQuery(form) === form.dataset.shownQuery) event.preventDefault();
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt;
    if (skipsUnchanged(form)) form.dataset.shownQuery = formQuery(form);
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-skip-unchanged]").forEach(function (form) { form.dataset.shownQuery = formQuery(form); });
  });

  // "next try in 4 s": count down without asking the server.
  setInterval(function () {
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      var seconds = Math.max(0, Math.round((Date.parse(el.dataset.countdown) - Date.now()) / 1000));
      var out = el.querySelector(".countdown");
      if (out) out.textContent = seconds > 0 ? "in " + seconds + " s" : "now";
    });
  }, 500);

  // Elapsed times that tick on their own ("12 s", "1 min 05 s") from the value the server
  // rendered: measured from when the element arrived, so the browser's clock does not matter.
  function formatSeconds(value) {
    var total = Math.max(0, Math.round(value));
    if (total < 60) return total + " s";
    var rest = total % 60;
    return Math.floor(total / 60) + " min " + (rest < 10 ? "0" : "") + rest + " s";
  }
  var arrived = new WeakMap();
  setInterval(function () {
    document.querySelectorAll("[data-elapsed][data-ticking]").forEach(function (el) {
      if (!arrived.has(el)) arrived.set(el, Date.now());
      el.textContent = formatSeconds(Number(el.dataset.elapsed) + (Date.now() - arrived.get(el)) / 1000);
    });
  }, 500);

  // A link to one error (#error-12) may point into a collapsed list of closed ones: open it.
  function revealTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (!target) return;
    for (var el = target.parentElement; el; el = el.parentElement) {
      if (el.tagName === "DETAILS") el.open = true;
    }
    target.scrollIntoView();
  }
  window.addEventListener("hashchange", revealTarget);
  document.addEventListener("DOMContentLoaded", revealTarget);

  // An error opened or closed somewhere: the live push carries a beat; an Errors page listening
  // for "errors:changed" fetches its list again, with its own filters.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    if (event.target && event.target.id === "errors-beat") htmx.trigger(document.body, "errors:changed");
    // Any beat that names its event (data-beat-event, e.g. the queue pages' "queue:changed").
    var named = event.target && event.target.dataset && event.target.dataset.beatEvent;
    if (named) htmx.trigger(document.body, named);
  });
  // The dead-letter panel refreshes live only while nobody is choosing in it: no letter ticked,
  // on the newest page, no confirmation open (a refresh would lose the ticks).
  window.portalDlqIdle = function () {
    var panel = document.getElementById("dead-letters");
    if (!panel || panel.dataset.firstPage !== "1") return false;
    if (panel.querySelector("input[name=ids]:checked")) return false;
    return !document.querySelector("#modal dialog[open]");
  };
  window.portalDlqPoll = function () { return !live.up && window.portalDlqIdle(); };
  // "Export selected": the ticked letters as JSON lines, a plain download.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-export-selected]");
    if (!button) return;
    var ids = Array.prototype.map.call(
      document.querySelectorAll("#dead-letters input[name=ids]:checked"), function (box) { return box.value; });
    if (!ids.length) { alert("Tick the letters to export first."); return; }
    var query = new URLSearchParams([["scope", "selected"]].concat(ids.map(function (id) { return ["ids", id]; })));
    window.location.href = button.dataset.exportSelected + "?" + query.toString();
  });

  // --- bulk selection on the agents page ----------------------------------------------------
  // The ticks live here, not in the checkboxes: cards and rows are replaced by live updates and
  // polling, and every replacement is ticked again from this set.
  var selected = new Set();

  function bulkBoxes() {
    return Array.prototype.slice.call(document.querySelectorAll("input[data-bulk-select]"));
  }

  function syncBulkSelection() {
    var bar = document.querySelector("[data-bulk-bar]");
    if (!bar) return;
    var boxes = bulkBoxes();
    var shown = new Set();
    var legal = new Set();
    boxes.forEach(function (box) {
      shown.add(box.value);
      box.checked = selected.has(box.value);
      var holder = box.closest(".agent-card, tr");
      if (holder) holder.classList.toggle("is-selected", box.checked);
      if (box.checked) (box.dataset.bulkActions || "").split(/\s+/).forEach(function (a) { if (a) legal.add(a); });
    });
    // An agent no longer on the page (filtered away) is no longer selected.
    selected.forEach(function (slug) { if (!shown.has(slug)) selected.delete(slug); });
    var count = selected.size;
    bar.classList.toggle("has-selection", count > 0);
    bar.querySelector("[data-bulk-count]").textContent = count + " selected";
    bar.querySelectorAll("[data-bulk-action]").forEach(function (button) {
      button.hidden = !legal.has(button.dataset.bulkAction);
    });
    var none = bar.querySelector("[data-bulk-none-legal]");
    if (none) none.hidden = !(count > 0 && legal.size === 0);
    document.querySelectorAll("input[data-bulk-select-all]").forEach(function (all) {
      all.checked = count > 0 && count === boxes.length;
      all.indeterminate = count > 0 && count < boxes.length;
    });
  }

  function pickBulk(rule) {
    selected.clear();
    if (rule !== "none") {
      var parts = rule.split(":");
      bulkBoxes().forEach(function (box) {
        if (rule === "all" || (parts[0] === "state" && box.dataset.state === parts[1]) ||
            (parts[0] === "tier" && box.dataset.tier === parts[1])) selected.add(box.value);
      });
    }
    syncBulkSelection();
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("input[data-bulk-select]")) {
      if (target.checked) selected.add(target.value); else selected.delete(target.value);
      syncBulkSelection();
    } else if (target.matches && target.matches("input[data-bulk-select-all]")) {
      pickBulk(target.checked ? "all" : "none");
    }
  });
  document.addEventListener("click", function (event) {
    var pick = event.target.closest && event.target.closest("[data-bulk-pick]");
    if (pick) pickBulk(pick.dataset.bulkPick);
  });
  ["htmx:afterSwap", "htmx:oobAfterSwap", "htmx:wsAfterMessage"].forEach(function (name) {
    document.addEventListener(name, syncBulkSelection);
  });
  document.addEventListener("DOMContentLoaded", function () {
    // Ticks the browser restored (back button) count as chosen.
    bulkBoxes().forEach(function (box) { if (box.checked) selected.add(box.value); });
    syncBulkSelection();
  });

  // --- live updates: the WebSocket, its indicator, and polling while it is down ---------------
  var RETRYABLE = [1006, 1011, 1012, 1013];
  var live = { up: false, everConnected: false, retries: 0, lastUpdate: Date.now(), lastBeat: Date.now(), socket: null };
  // Regions poll with hx-trigger="every Ns [portalLiveDown()]": only while no socket is live.
  window.portalLiveDown = function () { return !live.up; };

  function showLive(state, text) {
    var indicator = document.getElementById("live-indicator");
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.querySelector(".live-text").textContent = text;
  }

  function refreshIndicator() {
    if (live.up) { showLive("live", "Live"); return; }
    var age = Math.round((Date.now() - live.lastUpdate) / 1000);
    var offline = !navigator.onLine || live.retries >= 3;
    showLive(offline ? "offline" : "reconnecting", (offline ? "Offline" : "Reconnecting") + " · updated " + age + " s ago");
  }

  // What the page shows decides what it is sent: the frame's topics (data-live-topics) and one
  // per element a push would swap (data-live-subscribe). Synced at connect and after swaps that
  // add or remove such elements (a filter, a view switch, a new row pushed in).
  var subscribed = {};
  function wantedTopics() {
    var wanted = {};
    var shell = document.querySelector("[data-live-topics]");
    (shell ? shell.dataset.liveTopics : "").split(/\s+/).filter(Boolean).forEach(function (t) { wanted[t] = true; });
    document.querySelectorAll("[data-live-subscribe]").forEach(function (el) { wanted[el.dataset.liveSubscribe] = true; });
    return wanted;
  }
  function syncTopics() {
    if (!live.up || !live.socket) return;
    var wanted = wantedTopics();
    var add = Object.keys(wanted).filter(function (t) { return !subscribed[t]; });
    var drop = Object.keys(subscribed).filter(function (t) { return !wanted[t]; });
    var shell = document.querySelector("[data-live-since]");
    if (!live.sinceSent && shell) {
      // The page's first subscription says when its request began: what changed while it
      // loaded is sent again (or, for parts that cannot be, a #live-resync arrives).
      live.sinceSent = true;
      live.socket.send(JSON.stringify({ subscribe: add, since: Number(shell.dataset.liveSince) }));
    } else if (add.length) live.socket.send(JSON.stringify({ subscribe: add }));
    if (drop.length) live.socket.send(JSON.stringify({ unsubscribe: drop }));
    subscribed = wanted;
  }
  var syncPending = false;
  function syncTopicsSoon() {
    if (syncPending) return;
    syncPending = true;
    setTimeout(function () { syncPending = false; syncTopics(); }, 0);
  }
  document.addEventListener("htmx:oobAfterSwap", syncTopicsSoon);
  document.addEventListener("live:topics", syncTopicsSoon);  // elements added without htmx
  // An action's answer carries the fleet counts out of band only to a page that shows them.
  document.addEventListener("htmx:configRequest", function (event) {
    if (document.getElementById("fleet-counts")) event.detail.headers["X-Shows-Fleet-Counts"] = "1";
  });

  document.addEventListener("htmx:wsOpen", function (event) {
    live.socket = event.detail.socketWrapper;
    subscribed = {};  // a new socket has joined nothing yet
    var reconnected = live.everConnected;
    live.up = true; live.everConnected = true; live.retries = 0;
    live.lastUpdate = live.lastBeat = Date.now();
    syncTopics();
    refreshIndicator();
    // Whatever happened while the socket was down: fetch the current state once.
    if (reconnected) htmx.trigger(document.body, "live:resync");
  });

  document.addEventListener("htmx:wsClose", function (event) {
    var code = event.detail.event.code;
    live.up = false;
    live.retries += 1;
    if (code === 4401 || code === 4403) { showLive("offline", "Signed out · reload the page"); return; }
    refreshIndicator();
    // The extension retries only abnormal closes; a clean close (server restart) is retried here.
    if (RETRYABLE.indexOf(code) < 0) {
      var delay = Math.min(30000, 500 * Math.pow(2, Math.min(live.retries, 6))) * (0.5 + Math.random() / 2);
      setTimeout(function () { event.detail.socketWrapper.reconnect(); }, delay);
    }
  });

  document.addEventListener("htmx:wsAfterMessage", function (event) {
    // Parts of the page changed while it loaded and could not be pushed again: its live
    // regions fetch themselves (hx-trigger "live:resync from:body").
    var text = event.detail && event.detail.message;
    if (typeof text === "string" && text.indexOf('id="live-resync"') >= 0) htmx.trigger(document.body, "live:resync");
    // Heartbeats come every few seconds; a longer silence on a socket that stayed open (Redis
    // restarting under it) may have swallowed pushes: fetch the current state once.
    var shell = document.querySelector("[data-live-heartbeat]");
    var beatMs = shell ? Number(shell.dataset.liveHeartbeat) * 1000 : 5000;
    if (live.up && Date.now() - live.lastBeat > 2 * beatMs) htmx.trigger(document.body, "live:resync");
    live.lastUpdate = live.lastBeat = Date.now();
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    syncTopicsSoon();
    if (event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("[data-live-region]")) live.lastUpdate = Date.now();
  });

  setInterval(function () {
    // A socket that stopped hearing heartbeats is dead even if the browser has not noticed.
    var shell = document.querySelector("[data-live-heartbeat]");
    var beat = shell ? Number(shell.dataset.liveHeartbeat) * 1000 : 5000;
    if (live.up && Date.now() - live.lastBeat > 4 * beat && live.socket) {
      live.up = false;
      live.socket.reconnect();
    }
    refreshIndicator();
  }, 1000);

  document.addEventListener("DOMContentLoaded", function () {
    setTheme(root.dataset.theme === "light" ? "light" : "dark");
    document.querySelectorAll("#toasts .toast").forEach(toastArrived);
    // Toasts added later (htmx swaps, WebSocket pushes) are grouped, capped and fade too.
    new MutationObserver(function (mutations) {
      mutations.forEach(function (m) {
        m.addedNodes.forEach(function (n) {
          if (n.classList && n.classList.contains("toast") && !n.hasAttribute("data-toast-overflow")) toastArrived(n);
        });
      });
    }).observe(document.getElementById("toasts"), { childList: true });
  });
})();
