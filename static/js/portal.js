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

  function dismissLater(toast) {
    if (toast.classList.contains("toast-error")) return; // errors stay until dismissed
    setTimeout(function () { toast.remove(); }, 6000);
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
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") document.body.classList.remove("sidebar-open");
  });

  document.addEventListener("DOMContentLoaded", function () {
    setTheme(root.dataset.theme === "light" ? "light" : "dark");
    document.querySelectorAll("#toasts .toast").forEach(dismissLater);
    // Toasts added later (htmx swaps, WebSocket pushes) dismiss themselves too.
    new MutationObserver(function (mutations) {
      mutations.forEach(function (m) { m.addedNodes.forEach(function (n) { if (n.classList && n.classList.contains("toast")) dismissLater(n); }); });
    }).observe(document.getElementById("toasts"), { childList: true });
  });
})();
