// sqsjobs dashboard: refresh a live page's data region, and ask before a destructive button.
// No inline script anywhere (the CSP forbids it); everything the page shows is rendered by the server.
(function () {
  "use strict";

  function confirmForms(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  function refresh() {
    var live = document.getElementById("live");
    if (!live || document.hidden) return;
    var active = document.activeElement;
    if (active && live.contains(active) && active.tagName !== "BODY" && active.tagName !== "A") return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Sqsjobs-Refresh": "1" } })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("status " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh) {
          live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes));
          confirmForms(live);
          document.body.dataset.refreshedAt = String(Date.now());
        }
      })
      .catch(function () { /* the next tick tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    confirmForms(document);
    var seconds = parseFloat(document.body.dataset.refresh || "0");
    if (seconds > 0) window.setInterval(refresh, seconds * 1000);
  });
})();
