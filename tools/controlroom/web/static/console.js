// Pink Button console: the alert queue and the incident view, kept current over one
// WebSocket (/ws) that pushes the store's state. Device-supplied text (site names, device
// ids, problems, notes) is only ever set with textContent, never parsed as HTML.
"use strict";
(function () {
  const body = document.body;
  const page = body.dataset.page;
  const state = { beeps: 0, offset: 0, known: null, untaken: 0, messages: 0, linked: false };
  window.pbConsole = state;  // read by the browser tests

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function byId(id) { return document.getElementById(id); }

  // -- sound: a two-tone chime made with WebAudio (no file, nothing fetched) -------------
  let audio = null;
  function audioContext() {
    if (!audio) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (Ctx) audio = new Ctx();
    }
    return audio;
  }
  function chime() {
    const ctx = audioContext();
    if (!ctx) return;
    if (ctx.state !== "running") {
      ctx.resume().catch(function () {});
      const banner = byId("sound-off");
      if (banner && ctx.state !== "running") banner.hidden = false;
    }
    const t = ctx.currentTime;
    [[880, 0], [660, 0.18], [880, 0.36]].forEach(function (tone) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = tone[0];
      gain.gain.setValueAtTime(0.2, t + tone[1]);
      gain.gain.exponentialRampToValueAtTime(0.001, t + tone[1] + 0.16);
      osc.connect(gain).connect(ctx.destination);
      osc.start(t + tone[1]);
      osc.stop(t + tone[1] + 0.17);
    });
    state.beeps += 1;
  }
  const soundOn = byId("sound-on");
  if (soundOn) {
    soundOn.addEventListener("click", function () {
      const ctx = audioContext();
      if (ctx) ctx.resume().then(function () { byId("sound-off").hidden = true; });
    });
  }
  setInterval(function () { if (state.untaken > 0) chime(); }, 10000);  // until taken

  // -- time since the press, ticking ------------------------------------------------------
  function since(ts) {
    if (ts === null || ts === undefined) return "?";
    const s = Math.max(0, Math.floor(Date.now() / 1000 + state.offset - ts));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const mm = (h ? String(m).padStart(2, "0") : String(m)) + ":" + String(sec).padStart(2, "0");
    return h ? h + ":" + mm : mm;
  }
  function tick() {
    document.querySelectorAll("[data-since]").forEach(function (e) {
      e.textContent = since(Number(e.dataset.since));
    });
  }
  setInterval(tick, 1000);

  function clock(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString([], { hour12: false }) + "." +
      String(d.getMilliseconds()).padStart(3, "0");
  }
  function status(inc) {
    if (inc.ended_at) return "ended";
    if (inc.dispatched_at) return "dispatched: " + (inc.dispatch_unit || "");
    if (inc.acked_at) return "acknowledged by " + (inc.acked_by || "?");
    return "WAITING";
  }
  function location_(inc) {
    return inc.lat === null || inc.lat === undefined ? "unknown"
      : Number(inc.lat).toFixed(5) + ", " + Number(inc.lon).toFixed(5);
  }

  // -- the queue ------------------------------------------------------------------------------
  function renderQueue(m) {
    const tbody = byId("queue-body");
    if (!tbody) return;
    const rows = [];
    let untaken = 0, fresh = 0;
    const seen = new Set();
    m.incidents.forEach(function (inc) {
      seen.add(inc.alert_id);
      const tr = el("tr");
      tr.dataset.alertId = inc.alert_id;
      const waiting = !inc.taken_by;
      if (waiting) untaken += 1;
      if (waiting && (state.known === null || !state.known.has(inc.alert_id))) fresh += 1;
      tr.className = [waiting ? "untaken" : "taken",
                      inc.escalated && !inc.acked_at ? "escalated" : "",
                      inc.kind === "test" ? "kind-test" : "kind-emergency"].join(" ");
      const site = el("td", null, "site");
      const a = el("a", inc.site_name || "?");
      a.href = "/incident/" + encodeURIComponent(inc.alert_id);
      site.appendChild(a);
      site.appendChild(el("small", inc.device_id, "device"));
      if (inc.escalated && !inc.acked_at) site.appendChild(el("span", "ESCALATED", "badge"));
      tr.appendChild(site);
      tr.appendChild(el("td", inc.kind, "kind"));
      const t = el("td", since(inc.pressed_ts), "since");
      if (inc.pressed_ts !== null) t.dataset.since = inc.pressed_ts;
      tr.appendChild(t);
      tr.appendChild(el("td", location_(inc), "location"));
      tr.appendChild(el("td", inc.presses, "presses"));
      const sig = el("td", inc.signature, "signature" + (inc.signature === "verified" ? "" : " warn"));
      if (inc.problems && inc.problems.length) {
        sig.appendChild(el("div", "FLAGGED: " + inc.problems.join("; "), "flagged"));
      }
      tr.appendChild(sig);
      tr.appendChild(el("td", status(inc) + (waiting ? " (not taken)" : " · taken by " + inc.taken_by), "status"));
      tr.appendChild(el("td", inc.health.text, "health " + (inc.health.ok ? "ok" : "bad")));
      tr.addEventListener("click", function (ev) {
        if (ev.target.tagName !== "A") window.location.href = a.href;
      });
      rows.push(tr);
    });
    tbody.replaceChildren.apply(tbody, rows);
    byId("queue-empty").hidden = rows.length > 0;
    state.known = seen;
    state.untaken = untaken;
    if (fresh > 0) chime();
    const list = byId("escalated-list");
    if (list) {
      const items = m.incidents.filter(function (i) { return m.escalated.indexOf(i.alert_id) >= 0; })
        .map(function (inc) {
          const li = el("li");
          const a = el("a", (inc.site_name || "?") + " (" + inc.device_id + ")");
          a.href = "/incident/" + encodeURIComponent(inc.alert_id);
          li.appendChild(a);
          li.appendChild(el("span", " waiting " + since(inc.pressed_ts)));
          return li;
        });
      list.replaceChildren.apply(list, items);
      byId("escalated-none").hidden = items.length > 0;
      byId("supervisor").classList.toggle("alarm", items.length > 0);
    }
  }

  // -- the incident view -------------------------------------------------------------------
  function renderIncident(m) {
    const inc = m.incident;
    byId("status").textContent = status(inc);
    byId("presses").textContent = inc.presses;
    byId("health").textContent = inc.health.text;
    byId("signature").textContent = inc.signature;
    const items = m.timeline.map(function (e) {
      const li = el("li", null, "tl-" + e.what);
      li.appendChild(el("time", clock(e.at)));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("b", e.title));
      if (e.by) {
        li.appendChild(document.createTextNode(" by "));
        li.appendChild(el("span", e.by, "by"));
      }
      if (e.text) {
        li.appendChild(document.createTextNode(" "));
        li.appendChild(el("span", e.text, "text"));
      }
      return li;
    });
    const ol = byId("timeline");
    ol.replaceChildren.apply(ol, items);
    const cmds = byId("commands");
    cmds.replaceChildren.apply(cmds, m.commands.map(function (c) {
      return el("li", c.verb + " by " + c.by + " at " + clock(c.at) + ": " + c.state);
    }));
    const tbody = document.querySelector("#evidence tbody");
    tbody.replaceChildren.apply(tbody, m.evidence.map(function (f) {
      const tr = el("tr");
      const td = el("td");
      const a = el("a", f.name);
      a.href = "/incident/" + encodeURIComponent(inc.alert_id) + "/evidence/" + encodeURIComponent(f.name);
      a.setAttribute("download", "");
      td.appendChild(a);
      tr.appendChild(td);
      tr.appendChild(el("td", f.kind));
      tr.appendChild(el("td", f.bytes));
      tr.appendChild(el("td", f.sha256 || "", "hash"));
      return tr;
    }));
    const none = byId("evidence-none");
    if (none) none.hidden = m.evidence.length > 0;
    if (inc.ended_at) {
      document.querySelectorAll(".actions form").forEach(function (f) { f.hidden = true; });
    }
  }

  // -- the WebSocket --------------------------------------------------------------------------
  function linkState(text, ok) {
    const e = byId("link-state");
    if (e) { e.textContent = text; e.className = "link-state " + (ok ? "ok" : "bad"); }
    state.linked = ok;
  }
  function connect() {
    let url = (location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + "/ws";
    if (page === "incident") url += "?incident=" + encodeURIComponent(body.dataset.alertId);
    if (page === "map" || page === "fleet") url += "?view=fleet";  // map.js, fleet.js
    const ws = new WebSocket(url);
    ws.onopen = function () { linkState("live", true); };
    ws.onmessage = function (ev) {
      const m = JSON.parse(ev.data);
      state.messages += 1;
      state.offset = m.now - Date.now() / 1000;
      if (m.type === "queue") renderQueue(m);
      else if (m.type === "incident") renderIncident(m);
      else if (m.type === "fleet" && window.pbOnFleet) window.pbOnFleet(m);
    };
    ws.onclose = function () {
      linkState("connection lost: reconnecting…", false);
      fetch("/api/queue", { credentials: "same-origin" }).then(function (r) {
        if (r.status === 401) window.location.href = "/login";
        else setTimeout(connect, 1000);
      }).catch(function () { setTimeout(connect, 2000); });
    };
  }
  if (["queue", "incident", "map", "fleet"].indexOf(page) >= 0) connect();

  // -- the live view (static/live.js, tools/controlroom/web/live.py) ----------------------------
  const video = byId("live-video");
  if (video && window.PinkLive) {
    state.live = window.PinkLive.play(video, "/live/" + encodeURIComponent(body.dataset.alertId), {
      from: "auto",
      onState: function (s) {
        byId("live-state").textContent = s.error ? "error: " + s.error
          : s.ended ? "the kiosk stopped streaming"
          : s.connected ? (video.currentTime > 0 ? "playing" : "waiting for the picture…")
          : "reconnecting…";
      },
    });
    video.addEventListener("playing", function () { byId("live-state").textContent = "playing"; });
  }
})();
