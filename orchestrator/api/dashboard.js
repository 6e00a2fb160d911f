// The dashboard's only script: replace each section in place from the server's events.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  // The page refreshes itself only when scripts are off (its <noscript> meta tag).
  var source = new EventSource("/ui/stream");
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
