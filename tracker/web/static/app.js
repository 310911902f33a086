// Progressive enhancement only: every page works without this file.
// 1. Live dashboard: re-fetch the #live fragment every few seconds (no reload).
(function () {
  "use strict";
  function live(el) {
    var url = el.getAttribute("data-live");
    var every = parseInt(el.getAttribute("data-interval") || "3000", 10);
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "X-Poll": "1" } })
        .then(function (r) {
          if (r.redirected || r.status === 401 || r.status === 303) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined) {
            var doc = new DOMParser().parseFromString(html, "text/html");
            var main = doc.querySelector("main");
            el.innerHTML = main ? main.innerHTML.replace(/^\s*/, "") : html;
          }
        })
        .catch(function () { /* keep the last picture; try again */ })
        .finally(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("live");
    if (el) { live(el); }
    // 2. A signature dialog focuses its password field when opened.
    document.querySelectorAll("details.sign").forEach(function (d) {
      d.addEventListener("toggle", function () {
        var pw = d.querySelector("input[type=password]");
        if (d.open && pw) { pw.focus(); }
      });
    });
  });
})();
