/* What the keyboard-first task pages share (rating.js for 1–5, pairwise.js for A/B): the
 * task panel, whether a request is under way, keys that press the panel's buttons, fields
 * that keep their keys, and the htmx swaps (a refused answer shows its message; a new task
 * takes the focus). Loaded before the page's own script; nothing here knows about models. */
window.PalmsTask = (function () {
  "use strict";

  var inFlight = 0; // htmx requests under way; keys wait for the next task

  function task() { return document.getElementById("task"); }

  function busy() { return inFlight > 0 || !task(); }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && target.type !== "radio");
  }

  // Press the panel's button for a key (data-key). A click, not requestSubmit, so htmx sees
  // which button it was and honours its formaction (skip and flag post to their own URLs).
  function click(key) {
    var t = task();
    var b = t ? t.querySelector('button[data-key="' + key + '"]') : null;
    if (!b || b.disabled) return false;
    // htmx wires swapped-in content a moment after the swap; wire this form now, or a quick
    // key would submit it the old-fashioned way (a full reload).
    if (window.htmx) window.htmx.process(t);
    b.click();
    return true;
  }

  function openFlag(field) {
    var box = document.getElementById("flag-box");
    if (!box) return false;
    box.open = true;
    var reason = box.querySelector('input[name="' + field + '"]');
    if (reason) reason.focus();
    return true;
  }

  /* options: flagField (the flag reason input's name), press(key) (the page's own
   * submit: may refuse Enter with a message), keys(key) (the page's own keys; true when
   * handled). Fields keep their keys but Esc (leave), Enter in the flag reason (flag) and
   * Ctrl/Cmd+Enter (submit). */
  function onKeys(options) {
    document.addEventListener("keydown", function (event) {
      if (!task() || event.altKey || event.isComposing) return;
      var target = event.target;
      var key = event.key;
      if (typing(target)) {
        if (key === "Escape") { target.blur(); task().focus(); event.preventDefault(); return; }
        if (key === "Enter" && target.name === options.flagField) {
          event.preventDefault();
          if (!busy()) options.press("f");
          return;
        }
        if (key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          if (!busy()) options.press("enter");
        }
        return; // every other key types into the field
      }
      if (event.ctrlKey || event.metaKey) return;
      if (busy()) { if (key === "Enter") event.preventDefault(); return; }
      var handled = false;
      if (key === "Enter") {
        handled = options.press("enter");
      } else if (key === "s" || key === "S") {
        handled = options.press("s");
      } else if (key === "f" || key === "F") {
        handled = openFlag(options.flagField);
      } else {
        handled = options.keys(key);
      }
      if (handled) event.preventDefault();
    });
  }

  document.addEventListener("htmx:beforeRequest", function () { inFlight += 1; });
  document.addEventListener("htmx:afterRequest", function () {
    inFlight = Math.max(0, inFlight - 1);
  });

  // The server answers a refused submit with the task panel and a message; show it.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if ((status === 400 || status === 409) && event.detail.target && event.detail.target.id === "task") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // After a new task arrives, start reading from the top with focus in the panel, so the
  // keys keep working and screen readers announce the new text.
  document.addEventListener("htmx:afterSwap", function (event) {
    var t = task();
    if (t && event.detail.target && (event.detail.target === t || event.detail.target.id === "task")) {
      t.focus({ preventScroll: true });
      t.scrollIntoView({ block: "start", behavior: "instant" });
    }
  });

  return { task: task, click: click, onKeys: onKeys };
})();
