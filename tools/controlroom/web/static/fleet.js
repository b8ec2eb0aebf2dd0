// Pink Button console: the fleet page, one row per kiosk (views.fleet() over the console's
// WebSocket: console.js calls window.pbOnFleet), sortable by any column. Device-supplied
// text (site names, device ids, firmware, faults, self-test reasons) is set with textContent.
"use strict";
(function () {
  const body = document.body;
  const canSelftest = body.dataset.canSelftest === "yes";
  const URGENCY = ["alerting", "acknowledged", "offline", "failing", "idle"];
  const LABELS = { alerting: "ALERTING", acknowledged: "acknowledged", failing: "failing",
                   offline: "offline", idle: "idle" };
  const state = { key: "state", dir: 1, last: null, messages: 0, scrolled: false };
  window.pbFleet = state;  // read by the browser tests

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function ago(s) {
    if (s === null || s === undefined) return "never";
    if (s < 120) return Math.round(s) + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function sortValue(k, key) {
    if (key === "state") return URGENCY.indexOf(k.state);
    if (key === "online") return k.online === true ? 1 : k.online === false ? 0 : -1;
    if (key === "faults") return k.faults.length;
    const v = k[key];
    return v === null || v === undefined ? null : v;
  }
  function compare(a, b) {
    const x = sortValue(a, state.key), y = sortValue(b, state.key);
    if (x === y) return a.device_id < b.device_id ? -1 : 1;
    if (x === null) return 1;  // unknown last, whichever the direction
    if (y === null) return -1;
    return (x < y ? -1 : 1) * state.dir;
  }

  function row(k) {
    const warn = k.cert_warn || k.selftest_ok === false;
    const tr = el("tr", null, "st-row-" + k.state + (warn ? " warn-row" : ""));
    tr.id = "kiosk-" + k.device_id;
    tr.dataset.deviceId = k.device_id;
    const who = el("td", null, "kiosk");
    who.appendChild(el("b", k.device_id, "device-id"));
    who.appendChild(el("small", k.site_name || "", "site"));
    tr.appendChild(who);
    const st = el("td", null, "state");
    st.appendChild(el("span", null, "swatch st-" + k.state));
    st.appendChild(document.createTextNode(" " + LABELS[k.state]));
    if (k.incident) {
      const a = el("a", " incident");
      a.href = "/incident/" + encodeURIComponent(k.incident);
      st.appendChild(a);
    }
    tr.appendChild(st);
    tr.appendChild(el("td", k.online === null ? "?" : k.online ? "online" : "OFFLINE",
                      "online" + (k.online ? "" : " warn")));
    const hb = el("td", ago(k.heartbeat_age_s), "heartbeat");
    if (k.heartbeat_at) hb.title = k.heartbeat_at;
    tr.appendChild(hb);
    let test = "never";
    if (k.selftest_at) {
      test = (k.selftest_ok === false ? "FAILED " : k.selftest_ok ? "ok " : "? ") + k.selftest_at;
      if (k.selftest_ok === false && k.selftest_failed) test += " (" + k.selftest_failed + ")";
    }
    const tc = el("td", test, "selftest" + (k.selftest_ok === false ? " warn" : ""));
    if (k.selftest_ok === false && k.selftest_why) tc.appendChild(el("div", k.selftest_why, "why"));
    tr.appendChild(tc);
    tr.appendChild(el("td", k.faults.length ? k.faults.join(", ") : "none",
                      "faults" + (k.faults.length ? " warn" : "")));
    tr.appendChild(el("td", k.firmware || "?", "firmware"));
    tr.appendChild(el("td", k.cert_days_left === null ? "?" :
                      k.cert_days_left + " days" + (k.cert_warn ? " WARN" : ""),
                      "cert" + (k.cert_warn ? " warn" : "")));
    const parts = [];
    parts.push(typeof k.temperature_c === "number" ? k.temperature_c.toFixed(1) + " °C" : "? °C");
    parts.push(typeof k.disk_free_mb === "number" ? Math.round(k.disk_free_mb) + " MiB free" : "disk ?");
    tr.appendChild(el("td", parts.join(", "), "env"));
    if (canSelftest) {
      const td = el("td");
      const form = el("form");
      form.method = "post";
      form.action = "/fleet/" + encodeURIComponent(k.device_id) + "/selftest";
      const csrf = el("input");
      csrf.type = "hidden";
      csrf.name = "csrf";
      csrf.value = body.dataset.csrf;
      form.appendChild(csrf);
      const b = el("button", "Run self-test", "selftest-button");
      b.type = "submit";
      form.appendChild(b);
      td.appendChild(form);
      tr.appendChild(td);
    }
    return tr;
  }

  function render() {
    const m = state.last;
    if (!m) return;
    const tbody = document.getElementById("fleet-body");
    // Every push re-renders the rows: keep a focused self-test button focused.
    const active = document.activeElement;
    const focused = active && active.classList.contains("selftest-button")
      ? active.closest("tr").dataset.deviceId : null;
    const rows = m.kiosks.slice().sort(compare).map(row);
    tbody.replaceChildren.apply(tbody, rows);
    if (focused !== null) {
      const again = rows.filter(function (r) { return r.dataset.deviceId === focused; })[0];
      if (again) again.querySelector("button.selftest-button").focus();
    }
    document.getElementById("fleet-empty").hidden = rows.length > 0;
    document.getElementById("warn-days").textContent = m.warn_days;
    document.querySelectorAll("button.sort").forEach(function (b) {
      const th = b.parentElement;
      th.setAttribute("aria-sort", b.dataset.key !== state.key ? "none"
                      : state.dir > 0 ? "ascending" : "descending");
    });
    const hash = decodeURIComponent(location.hash.slice(1));
    const focus = hash && document.getElementById(hash);
    if (focus) {
      focus.classList.add("target");
      if (!state.scrolled) { focus.scrollIntoView({ block: "center" }); state.scrolled = true; }
    }
  }
  document.querySelectorAll("button.sort").forEach(function (b) {
    b.addEventListener("click", function () {
      state.dir = state.key === b.dataset.key ? -state.dir : 1;
      state.key = b.dataset.key;
      render();
    });
  });
  window.pbOnFleet = function (m) { state.messages += 1; state.last = m; render(); };
})();
