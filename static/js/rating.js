/* Keyboard-first rating: 1–5 choose a score, Enter submits, S skips, F flags, C comments.
 * The page works without this file (plain forms); with it, the same forms are submitted
 * by key, and htmx swaps the next output in. Nothing here knows anything about models. */
(function () {
  "use strict";

  var inFlight = 0; // htmx requests under way; keys wait for the next output

  function task() { return document.getElementById("task"); }

  function busy() { return inFlight > 0 || !task(); }

  document.addEventListener("htmx:beforeRequest", function () { inFlight += 1; });
  document.addEventListener("htmx:afterRequest", function () {
    inFlight = Math.max(0, inFlight - 1);
  });

  function button(key) {
    var t = task();
    return t ? t.querySelector('button[data-key="' + key + '"]') : null;
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && target.type !== "radio");
  }

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

  function press(key) {
    if (key === "enter" && needsScore()) return true;
    var b = button(key);
    if (b && !b.disabled) {
      // htmx wires up swapped-in content a moment after the swap; make sure this form is
      // wired now, or a quick key would submit it the old-fashioned way (a full reload).
      if (window.htmx) window.htmx.process(task());
      // A click (not requestSubmit) so htmx sees which button it was and honours its
      // formaction (skip and flag post to their own URLs).
      b.click();
      return true;
    }
    return false;
  }

  function openFlag() {
    var box = document.getElementById("flag-box");
    if (!box) return false;
    box.open = true;
    var reason = box.querySelector('input[name="reason"]');
    if (reason) reason.focus();
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (!task() || event.altKey || event.isComposing) return;
    var target = event.target;
    var key = event.key;

    if (typing(target)) {
      if (key === "Escape") { target.blur(); task().focus(); event.preventDefault(); return; }
      if (key === "Enter" && target.name === "reason") {
        event.preventDefault();
        if (!busy()) press("f");
        return;
      }
      if (key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (!busy()) press("enter");
      }
      return; // every other key types into the field
    }
    if (event.ctrlKey || event.metaKey) return;
    if (busy()) { if (key === "Enter") event.preventDefault(); return; }

    var handled = false;
    if (key >= "1" && key <= "5") {
      handled = chooseScore(key);
      var error = document.getElementById("score-error");
      if (handled && error) error.hidden = true;
    } else if (key === "Enter") {
      handled = press("enter");
    } else if (key === "s" || key === "S") {
      handled = press("s");
    } else if (key === "f" || key === "F") {
      handled = openFlag();
    } else if (key === "c" || key === "C") {
      var comment = task().querySelector('textarea[name="comment"]');
      if (comment) { comment.focus(); handled = true; }
    }
    if (handled) event.preventDefault();
  });

  // The server answers a refused submit with the task panel and a message; show it.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if ((status === 400 || status === 409) && event.detail.target && event.detail.target.id === "task") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // After a new output arrives, start reading from the top with focus in the panel, so
  // the keys keep working and screen readers announce the new text.
  document.addEventListener("htmx:afterSwap", function (event) {
    var t = task();
    if (t && event.detail.target && (event.detail.target === t || event.detail.target.id === "task")) {
      t.focus({ preventScroll: true });
      t.scrollIntoView({ block: "start", behavior: "instant" });
    }
  });
})();
