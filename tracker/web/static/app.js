// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
  var alerts = { ctx: null };

  function count(name) {
    var n = parseInt(document.body.getAttribute("data-" + name) || "0", 10) + 1;
    document.body.setAttribute("data-" + name, String(n));
  }

  // A new action excursion: a sound and a browser notification, for users who allowed them.
  function alarm(ids) {
    if (window.localStorage.getItem("tracker.alerts") !== "on") { return; }
    if (alerts.ctx) {
      try {
        if (alerts.ctx.state === "suspended") { alerts.ctx.resume(); }
        var o = alerts.ctx.createOscillator(), g = alerts.ctx.createGain();
        o.frequency.value = 880; g.gain.value = 0.2;
        o.connect(g); g.connect(alerts.ctx.destination);
        o.start(); o.stop(alerts.ctx.currentTime + 0.5);
        count("sounded");
      } catch (e) { /* no audio device: the notification still comes */ }
    }
    var btn = document.getElementById("enable-alerts");
    if (window.Notification && Notification.permission === "granted" && btn) {
      ids.forEach(function (id) {
        var n = new Notification(btn.getAttribute("data-title") + " " + id, { tag: "excursion-" + id, body: btn.getAttribute("data-body") });
        n.onclick = function () { window.focus(); window.location.href = "/excursions/" + id; };
        count("notified");
      });
    }
  }

  function setupAlerts() {
    var btn = document.getElementById("enable-alerts");
    if (!btn) { return; }
    var state = document.getElementById("alerts-state");
    function show() {
      var on = window.localStorage.getItem("tracker.alerts") === "on";
      state.textContent = btn.getAttribute(on ? "data-on" : "data-off");
      btn.textContent = btn.getAttribute(on ? "data-disable" : "data-enable");
      if (on && !alerts.ctx && (window.AudioContext || window.webkitAudioContext)) {
        alerts.ctx = new (window.AudioContext || window.webkitAudioContext)();
      }
    }
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var on = window.localStorage.getItem("tracker.alerts") === "on";
      window.localStorage.setItem("tracker.alerts", on ? "off" : "on");
      if (!on && window.Notification && Notification.permission === "default") { Notification.requestPermission(); }
      show();
      if (alerts.ctx && alerts.ctx.state === "suspended") { alerts.ctx.resume(); }
    });
    show();
  }

  // Replace an element by the same element of a freshly fetched page (one fetch at a time).
  function refresher(el, url, pick, busyNow) {
    var busy = false, again = false;
    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      fetch(url(), { credentials: "same-origin", headers: { "X-Poll": "1" } })
        .then(function (r) {
          if (r.redirected || r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html) {
            var doc = new DOMParser().parseFromString(html, "text/html");
            var found = pick(doc);
            // someone started typing or ticking while the list was fetched: leave it to them
            if (busyNow && busyNow()) { staleNotice(); return; }
            if (found !== null) { el.innerHTML = found; el.setAttribute("data-refreshed", String(Date.now())); }
          }
        })
        .catch(function () { /* keep the last picture */ })
        .finally(function () { busy = false; if (again) { again = false; refresh(); } });
    }
    return refresh;
  }

  // Server-sent events: `change` names what changed; without EventSource, poll.
  function listen(url, onChange, fallbackMs) {
    if (!window.EventSource) { setInterval(function () { onChange({ kinds: ["readings", "excursions"], new_action: [] }); }, fallbackMs); return; }
    var es = new EventSource(url);
    es.addEventListener("change", function (ev) { onChange(JSON.parse(ev.data)); });
    es.addEventListener("hello", function () { document.body.setAttribute("data-live", "connected"); });
    es.onerror = function () {
      // closed for good (the session ended, the server refused): the page itself says why
      if (es.readyState === EventSource.CLOSED) { setTimeout(function () { window.location.reload(); }, 3000); }
    };
  }

  function staleNotice() {
    var note = document.getElementById("queue-stale");
    if (note) { note.hidden = false; }
    document.body.setAttribute("data-queue-stale", "1");
  }

  function queueBusy(el) {
    // never pull the list away from someone typing a comment or ticking excursions
    var typing = Array.prototype.some.call(el.querySelectorAll("input[type=text], input:not([type]), textarea"), function (i) { return i.value; });
    return typing || el.querySelector("input[type=checkbox]:checked") || el.querySelector("details[open]") || el.contains(document.activeElement);
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupAlerts();
    var live = document.getElementById("live");
    if (live) {
      var refresh = refresher(live, function () { return live.getAttribute("data-live"); }, function (doc) {
        var main = doc.querySelector("main"); return main ? main.innerHTML : doc.body.innerHTML;
      });
      listen(live.getAttribute("data-events"), function (d) {
        refresh();
        if (d.new_action && d.new_action.length) { alarm(d.new_action); }
      }, parseInt(live.getAttribute("data-interval") || "3000", 10));
    }
    var queue = document.getElementById("queue-live");
    if (queue) {
      var refreshQueue = refresher(queue, function () { return window.location.href; }, function (doc) {
        var q = doc.getElementById("queue-live"); return q ? q.innerHTML : null;
      }, function () { return queueBusy(queue); });
      listen(queue.getAttribute("data-events"), function (d) {
        if (d.kinds.indexOf("excursions") < 0) { return; }
        if (queueBusy(queue)) { staleNotice(); return; }
        refreshQueue();
      }, 10000);
      queue.addEventListener("change", function (ev) {
        if (ev.target && ev.target.id === "select-all") {
          queue.querySelectorAll("input[name=ids]").forEach(function (c) { c.checked = ev.target.checked; });
        }
      });
    }
    // A signature dialog focuses its password field when opened.
    document.querySelectorAll("details.sign").forEach(function (d) {
      d.addEventListener("toggle", function () {
        var pw = d.querySelector("input[type=password]");
        if (d.open && pw) { pw.focus(); }
      });
    });
  });
})();
