/* Keyboard-first pairwise judging: ←/1 A better, →/2 B better, T tie, X both bad, Enter
 * submits, S skips, F flags, C writes a reason, U changes the last judgment (Esc goes back). The page works without this file (plain
 * forms); with it, the same forms are submitted by key and htmx swaps the next pair in. The
 * shared parts are in task-keys.js. Nothing here knows anything about models: the page only
 * has "A" and "B". */
(function () {
  "use strict";

  var task = window.PalmsTask.task;
  var VERDICT_KEYS = { ArrowLeft: "a", "1": "a", ArrowRight: "b", "2": "b",
    t: "tie", T: "tie", x: "both_bad", X: "both_bad" };

  function choose(verdict) {
    var radio = task().querySelector('input[name="verdict"][value="' + verdict + '"]');
    if (!radio) return false;
    radio.checked = true;
    radio.focus({ preventScroll: true });
    var error = document.getElementById("verdict-error");
    if (error) error.hidden = true;
    return true;
  }

  // Enter without a verdict says what to do, in the page (not the browser's bubble).
  function needsVerdict() {
    var form = task() && task().querySelector("#pair-form");
    if (!form || form.querySelector('input[name="verdict"]:checked')) return false;
    var error = document.getElementById("verdict-error");
    if (error) error.hidden = false;
    return true;
  }

  document.addEventListener("invalid", function (event) {
    if (event.target && event.target.name === "verdict") {
      event.preventDefault();
      needsVerdict();
    }
  }, true);

  window.PalmsTask.onKeys({
    flagField: "flag_reason",
    press: function (key) {
      if (key === "enter" && needsVerdict()) return true;
      return window.PalmsTask.click(key);
    },
    keys: function (key) {
      if (VERDICT_KEYS[key]) return choose(VERDICT_KEYS[key]);
      // U: change the last judgment; Esc: back from changing it to the pair held.
      var link = key === "u" || key === "U" ? document.getElementById("revise-link")
        : key === "Escape" ? document.getElementById("revise-back") : null;
      if (link) { link.click(); return true; }
      if (key === "c" || key === "C") {
        var reason = task().querySelector('textarea[name="reason"]');
        if (reason) { reason.focus(); return true; }
      }
      return false;
    },
  });
})();
