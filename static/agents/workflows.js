// The Workflows list refreshes live, but not while runs are ticked for a bulk action (the
// refresh would clear the ticks).
(function () {
  "use strict";
  window.wfNoSelection = function () {
    return !document.querySelector("#wf-bulk input[name=run]:checked");
  };
  window.wfPollList = function () {
    return window.portalLiveDown() && window.wfNoSelection();
  };
})();
