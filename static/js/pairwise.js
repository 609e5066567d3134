/* Keyboard-first pairwise judging: ←/1 A better, →/2 B better, T tie, X both bad, Enter
 * submits, S skips, F flags, C writes a reason. The page works without this file (plain
 * forms); with it, the same forms are submitted by key and htmx swaps the next pair in.
 * Nothing here knows anything about models: the page only has "A" and "B". */
(function () {
  "use strict";

  var inFlight = 0; // htmx requests under way; keys wait for the next pair
  var VERDICT_KEYS = { ArrowLeft: "a", "1": "a", ArrowRight: "b", "2": "b",
    t: "tie", T: "tie", x: "both_bad", X: "both_bad" };

  function task() { return document.getElementById("task"); }

  function busy() { return inFlight > 0 || !task(); }

  document.addEventListener("htmx:beforeRequest", function () { inFlight += 1; });
  document.addEventListener("htmx:afterRequest", function () {
    inFlight = Math.max(0, inFlight - 1);
  });

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && target.type !== "radio");
  }

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

  function press(key) {
    if (key === "enter" && needsVerdict()) return true;
    var b = task().querySelector('button[data-key="' + key + '"]');
    if (!b || b.disabled) return false;
    if (window.htmx) window.htmx.process(task()); // wire a just-swapped form first
    b.click(); // a click, so htmx honours the button's formaction (skip, flag)
    return true;
  }

  function openFlag() {
    var box = document.getElementById("flag-box");
    if (!box) return false;
    box.open = true;
    var reason = box.querySelector('input[name="flag_reason"]');
    if (reason) reason.focus();
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (!task() || event.altKey || event.isComposing) return;
    var target = event.target;
    var key = event.key;
    if (typing(target)) {
      if (key === "Escape") { target.blur(); task().focus(); event.preventDefault(); return; }
      if (key === "Enter" && target.name === "flag_reason") {
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
    if (VERDICT_KEYS[key]) {
      handled = choose(VERDICT_KEYS[key]);
    } else if (key === "Enter") {
      handled = press("enter");
    } else if (key === "s" || key === "S") {
      handled = press("s");
    } else if (key === "f" || key === "F") {
      handled = openFlag();
    } else if (key === "c" || key === "C") {
      var reason = task().querySelector('textarea[name="reason"]');
      if (reason) { reason.focus(); handled = true; }
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

  document.addEventListener("htmx:afterSwap", function (event) {
    var t = task();
    if (t && event.detail.target && (event.detail.target === t || event.detail.target.id === "task")) {
      t.focus({ preventScroll: true });
      t.scrollIntoView({ block: "start", behavior: "instant" });
    }
  });
})();
