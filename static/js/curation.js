/* Curation pages: live word count under the answer, Ctrl/Cmd+S to save the editor, the
 * category's position beside it, and review keys (a, r, j, k; Ctrl/Cmd+Enter sends a
 * request for changes). Everything works without this file; it only makes it quicker. */
(function () {
  "use strict";

  // The PALMS limits count whitespace-separated tokens, as Python's str.split() does.
  function countWords(text) {
    var trimmed = text.trim();
    return trimmed ? trimmed.split(/\s+/).length : 0;
  }

  function showCount(line, words) {
    var min = Number(line.dataset.min);
    var max = Number(line.dataset.max);
    var inside = words >= min && words <= max;
    line.textContent = words + " word" + (words === 1 ? "" : "s") + " — " +
      (inside ? "within " : "needs ") + min + "–" + max;
    line.classList.toggle("in", inside);
    line.classList.toggle("out", !inside);
  }

  function update(textarea) {
    var words = countWords(textarea.value);
    var lines = document.querySelectorAll('[data-wordcount-for="' + textarea.id + '"]');
    lines.forEach(function (line) { showCount(line, words); });
  }

  function updateAll() {
    document.querySelectorAll("textarea[data-wordcount]").forEach(update);
    var category = document.querySelector("#sample-form select[name=category]");
    if (category) showCategoryBrief(category);
  }

  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("textarea[data-wordcount]")) {
      update(event.target);
    }
  });

  document.addEventListener("keydown", function (event) {
    var isSave = (event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey &&
      event.key && event.key.toLowerCase() === "s";
    if (!isSave) return;
    var form = document.querySelector("form[data-save-shortcut]");
    if (!form) return;
    event.preventDefault();  // not the browser's "save page"
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
  });

  function typing(target) {
    return target.closest && target.closest("input, textarea, select, [contenteditable]");
  }

  // Review keys, only on a sample opened from "waiting for my review".
  var REVIEW_KEYS = {
    a: function () {
      var approve = document.querySelector("#approve-form button[type=submit]:not([disabled])");
      if (approve) approve.click();
    },
    r: function () {
      var box = document.getElementById("id_changes_body");
      if (box) { box.focus(); box.scrollIntoView({block: "center"}); }
    },
    j: function () { follow('[data-key="j"]'); },
    k: function () { follow('[data-key="k"]'); },
  };

  function follow(selector) {
    var link = document.querySelector(selector);
    if (link) window.location.href = link.href;
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) &&
        event.target.id === "id_changes_body") {
      event.preventDefault();
      var form = event.target.form;
      if (form.requestSubmit) form.requestSubmit(); else form.submit();
      return;
    }
    if (!document.querySelector("[data-review-keys]")) return;
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var action = REVIEW_KEYS[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });

  // The editor's side panel shows the position of the category chosen in its form.
  function showCategoryBrief(select) {
    var chosen = select.value || "";
    document.querySelectorAll("[data-category-brief]").forEach(function (panel) {
      panel.hidden = panel.dataset.categoryBrief !== chosen;
    });
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("#sample-form select[name=category]")) {
      showCategoryBrief(event.target);
    }
  });

  // Text restored by the browser (back button) or swapped in by htmx gets counted too.
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", updateAll);
  } else {
    updateAll();
  }
  document.addEventListener("htmx:afterSettle", updateAll);
})();
