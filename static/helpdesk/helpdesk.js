// The help desk search: arrow keys move between the search box and the results, Enter opens one.
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    var box = document.getElementById("hd-q");
    var links = Array.prototype.slice.call(document.querySelectorAll("[data-hd-hits] .hd-hit"));
    if (!box || !links.length) return;
    var at = links.indexOf(document.activeElement);
    if (document.activeElement !== box && at < 0) return;
    event.preventDefault();
    if (event.key === "ArrowDown") {
      (links[at + 1] || links[links.length - 1]).focus();
    } else if (at <= 0) {
      box.focus();
    } else {
      links[at - 1].focus();
    }
  });
})();
