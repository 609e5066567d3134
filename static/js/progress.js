/* Counts ETAs down between the server's updates. The server renders the seconds left at
 * the moment it answered (data-eta-seconds); this ticks them down once a second until the
 * next poll replaces the element. Without this file the ETA simply updates with each poll. */
(function () {
  "use strict";

  function format(seconds) {
    var s = Math.round(seconds);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    function two(n) { return n < 10 ? "0" + n : String(n); }
    if (h) return h + " h " + two(m) + " min";
    if (m) return m + " min " + two(r) + " s";
    return r + " s";
  }

  function tick() {
    var now = Date.now();
    var items = document.querySelectorAll("[data-eta-seconds]");
    for (var i = 0; i < items.length; i++) {
      var item = items[i];
      if (!item.dataset.etaFrom) item.dataset.etaFrom = String(now);
      var left = Number(item.dataset.etaSeconds) - (now - Number(item.dataset.etaFrom)) / 1000;
      item.textContent = left >= 1 ? format(left) : "any moment now";
    }
  }

  document.addEventListener("htmx:afterSettle", tick);
  document.addEventListener("DOMContentLoaded", tick);
  setInterval(tick, 1000);
})();
