// The dashboard's only script: replace each section in place from the server's events.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  // The page refreshes itself only when scripts are off (its <noscript> meta tag).
  // The stream of this page (a fleet's deployment pages are under /d/NAME/), named by the page.
  var me = document.currentScript;
  var source = new EventSource((me && me.getAttribute("data-stream")) || "/ui/stream");
  source.addEventListener("state", function (message) {
    var state = JSON.parse(message.data);
    Object.keys(state.sections).forEach(function (id) {
      var node = document.getElementById(id);
      if (node && node.innerHTML !== state.sections[id]) { node.innerHTML = state.sections[id]; }
    });
    var updated = document.getElementById("updated");
    if (updated) { updated.textContent = state.updated; }
    document.body.setAttribute("data-stream", "live");
  });
  source.addEventListener("error", function () {
    document.body.setAttribute("data-stream", "reconnecting");
  });
})();
