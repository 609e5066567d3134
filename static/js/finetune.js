/* The fine-tune launch form: when the arm changes, show the warning for that arm (the
 * server rendered one per arm that does not follow the snapshot's dataset) without
 * reloading the form, so nothing typed meanwhile is lost. Without this file the warning
 * for the arm first shown stays, and Launch refuses an unconfirmed mismatch anyway. */
(function () {
  "use strict";

  document.addEventListener("change", function (event) {
    if (!event.target.matches || !event.target.matches("#finetune-form select[name=arm]")) return;
    var arm = event.target.value;
    var shown = false;
    document.querySelectorAll("[data-arm-warning]").forEach(function (warning) {
      warning.hidden = warning.dataset.armWarning !== arm;
      shown = shown || !warning.hidden;
    });
    var box = document.getElementById("arm-mismatch");
    var follows = document.getElementById("arm-follows");
    if (box) box.hidden = !shown;
    if (follows) follows.hidden = shown;
  });
})();
