/* Keyboard-first rating: 1–5 choose a score, Enter submits, S skips, F flags, C comments.
 * The page works without this file (plain forms); with it, the same forms are submitted
 * by key, and htmx swaps the next output in. The shared parts are in task-keys.js.
 * Nothing here knows anything about models. */
(function () {
  "use strict";

  var task = window.PalmsTask.task;

  function chooseScore(value) {
    var radio = task().querySelector('input[name="score"][value="' + value + '"]');
    if (radio) {
      radio.checked = true;
      radio.focus({ preventScroll: true });
      return true;
    }
    return false;
  }

  // A submit without a score says what to do, in the page (not the browser's bubble).
  function needsScore() {
    var t = task();
    var form = t && t.querySelector("#rate-form");
    if (!form || form.querySelector('input[name="score"]:checked')) return false;
    var error = t.querySelector("#score-error");
    if (error) {
      error.textContent = "Pick a score 1–5 first";
      error.hidden = false;
    }
    var first = form.querySelector('input[name="score"]');
    if (first) first.focus({ preventScroll: false });
    return true;
  }

  document.addEventListener("invalid", function (event) {
    if (event.target && event.target.name === "score") {
      event.preventDefault();
      needsScore();
    }
  }, true);

  document.addEventListener("change", function (event) {
    if (event.target && event.target.name === "score") {
      var error = document.getElementById("score-error");
      if (error) error.hidden = true;
    }
  });

  window.PalmsTask.onKeys({
    flagField: "reason",
    press: function (key) {
      if (key === "enter" && needsScore()) return true;
      return window.PalmsTask.click(key);
    },
    keys: function (key) {
      if (key >= "1" && key <= "5") {
        var chosen = chooseScore(key);
        var error = document.getElementById("score-error");
        if (chosen && error) error.hidden = true;
        return chosen;
      }
      if (key === "c" || key === "C") {
        var comment = task().querySelector('textarea[name="comment"]');
        if (comment) { comment.focus(); return true; }
      }
      return false;
    },
  });
})();
