// orch dashboard: live updates. The page works without this script; with
// it, each live part of the page (an element with data-live) is re-fetched
// from its fragment URL when an event for the page arrives on
// /api/v1/events (debounced), and elapsed times keep counting. Only the
// events' kind, project, task_id and message are read.
(function () {
  "use strict";

  var roots = document.querySelectorAll("[data-live]");
  var status = document.getElementById("live-status");

  function say(text) {
    if (status) status.textContent = text;
  }

  function elapsedText(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var since = Date.parse(el.getAttribute("data-since"));
      if (!isNaN(since)) el.textContent = elapsedText(now - since);
    });
  }
  setInterval(tick, 1000);

  if (!roots.length || !window.EventSource || !window.fetch) {
    say("Live updates are off in this browser; reload to refresh.");
    return;
  }

  var first = roots[0];
  var task = first.getAttribute("data-task");
  var after = first.getAttribute("data-after") || "0";

  // A person typing in a form inside a live part is not interrupted.
  function editing(root) {
    var fields = root.querySelectorAll("input, textarea, select");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.type === "hidden") continue;
      if (f === document.activeElement) return true;
      if (f.tagName === "SELECT") {
        for (var k = 0; k < f.options.length; k++) {
          if (f.options[k].selected !== f.options[k].defaultSelected) return true;
        }
      } else if (f.value !== f.defaultValue) {
        return true;
      }
    }
    return false;
  }

  // One live part: its fragment is fetched at most once at a time, and
  // again after the fetch when events came in meanwhile.
  function Part(root) {
    this.root = root;
    this.fragment = root.getAttribute("data-live");
    this.timer = null;
    this.inFlight = false;
    this.pending = false;
  }

  Part.prototype.schedule = function (ms) {
    var self = this;
    if (self.timer === null) self.timer = setTimeout(function () { self.refresh(); }, ms);
  };

  Part.prototype.refresh = function () {
    var self = this;
    self.timer = null;
    if (self.inFlight) {
      self.pending = true;
      return;
    }
    if (editing(self.root)) {
      self.schedule(1000);
      return;
    }
    self.inFlight = true;
    fetch(self.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (r.status === 401) {
          // The token cookie is gone: the page itself asks for it.
          window.location.reload();
          throw new Error("logged out");
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        if (editing(self.root)) {
          self.pending = true;
          return;
        }
        self.root.innerHTML = html;
        self.root.setAttribute("data-updated", new Date().toISOString());
        tick();
      })
      .catch(function (e) {
        say("Update failed (" + e.message + "); retrying on the next event.");
      })
      .then(function () {
        self.inFlight = false;
        if (self.pending) {
          self.pending = false;
          self.schedule(250);
        }
      });
  };

  var parts = Array.prototype.map.call(roots, function (r) { return new Part(r); });

  var url = "/api/v1/events?after=" + encodeURIComponent(after);
  if (task) url += "&task=" + encodeURIComponent(task);
  var source = new EventSource(url);
  source.onopen = function () {
    say("Live: following events.");
  };
  source.onmessage = function (m) {
    var e;
    try {
      e = JSON.parse(m.data);
    } catch (_) {
      return;
    }
    if (task && e.task_id !== task) return;
    say("Live · " + (e.project || "") + " · " + (e.kind || "") + ": " + (e.message || ""));
    parts.forEach(function (p) { p.schedule(300); });
  };
  source.onerror = function () {
    say("Live updates lost; reconnecting…");
  };
})();
