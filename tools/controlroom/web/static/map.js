// Pink Button console: the map of the kiosks (Leaflet, vendored in static/vendor/leaflet).
// Nothing is fetched from outside this console: the background is either this control
// room's own tiles (/map-tiles/z/x/y.png, `serve --map-tiles DIR`) or the bundled country
// outline plus a latitude/longitude grid. The kiosks come over the console's WebSocket
// (console.js calls window.pbOnFleet with views.fleet()). Device-supplied text (site names,
// device ids) goes into the page as text nodes only: a tooltip gets a DOM element, never an
// HTML string.
"use strict";
(function () {
  const body = document.body;
  const COLORS = { alerting: "#e03131", acknowledged: "#f08c00", failing: "#7048e8",
                   offline: "#868e96", idle: "#2f9e44" };
  const LABELS = { alerting: "ALERTING", acknowledged: "acknowledged", failing: "failing",
                   offline: "offline", idle: "idle" };
  const state = { markers: {}, kiosks: {}, fitted: false, messages: 0 };
  window.pbMap = state;  // read by the browser tests

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  const map = L.map("map", { worldCopyJump: true, minZoom: 2, maxZoom: 18 }).setView([25, 70], 3);
  map.attributionControl.setPrefix("Leaflet");  // text: no link off the machine
  state.map = map;
  if (body.dataset.tiles === "on") {
    L.tileLayer("/map-tiles/{z}/{x}/{y}.png",
                { maxZoom: 19, attribution: "map data © OpenStreetMap contributors" }).addTo(map);
  } else {
    fetch("/static/vendor/outline/countries-50m.geojson", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (geo) {
        const pane = map.createPane("outline");  // above tiles, below the grid and kiosks
        pane.style.zIndex = 250;
        pane.style.pointerEvents = "none";
        L.geoJSON(geo, { interactive: false, pane: "outline",
                         renderer: L.canvas({ padding: 0.2, pane: "outline" }),
                         style: { color: "#7a8a99", weight: 1, fillColor: "#eef1ea",
                                  fillOpacity: 1 } }).addTo(map);
        state.outline = true;
      });
    map.attributionControl.addAttribution("outline: Natural Earth");
  }

  // -- the latitude/longitude grid: a step that suits the zoom, drawn for the view only --------
  const grid = L.layerGroup().addTo(map);
  function drawGrid() {
    grid.clearLayers();
    const z = map.getZoom();
    const step = z < 4 ? 10 : z < 6 ? 5 : z < 8 ? 1 : z < 11 ? 0.1 : 0.01;
    const b = map.getBounds();
    const west = Math.floor(b.getWest() / step) * step, east = Math.ceil(b.getEast() / step) * step;
    const south = Math.max(-85, Math.floor(b.getSouth() / step) * step);
    const north = Math.min(85, Math.ceil(b.getNorth() / step) * step);
    const style = { color: "#9aa7b4", weight: 0.6, dashArray: "3 4", interactive: false };
    for (let lat = south; lat <= north + 1e-9; lat += step) {
      grid.addLayer(L.polyline([[lat, west], [lat, east]], style));
    }
    for (let lon = west; lon <= east + 1e-9; lon += step) {
      grid.addLayer(L.polyline([[south, lon], [north, lon]], style));
    }
  }
  map.on("moveend", drawGrid);
  drawGrid();

  // -- the kiosks -----------------------------------------------------------------------------
  function target(k) {
    return k.incident ? "/incident/" + encodeURIComponent(k.incident)
      : "/fleet#kiosk-" + encodeURIComponent(k.device_id);
  }
  function tooltip(k) {
    const box = el("div", null, "kiosk-tip");
    box.appendChild(el("b", k.site_name || "(no site name)", "tip-site"));
    box.appendChild(el("div", k.device_id, "tip-device"));
    box.appendChild(el("div", LABELS[k.state] + (k.incident ? ": click for the incident" : ""),
                       "tip-state st-text-" + k.state));
    box.appendChild(el("div", k.located_by === "heartbeat" ? "position from its heartbeat"
                       : "position from its alert of " + k.located_at, "tip-where"));
    return box;
  }
  function place(k) {
    const old = state.markers[k.device_id];
    const was = state.kiosks[k.device_id];
    if (old && was && was.state === k.state && was.lat === k.lat && was.lon === k.lon) {
      if (was.site_name !== k.site_name || was.incident !== k.incident ||
          was.located_by !== k.located_by || was.located_at !== k.located_at) {
        old.setTooltipContent(tooltip(k));
      }
      old.pbKiosk = k;
      return;
    }
    if (old) map.removeLayer(old);
    const m = L.circleMarker([k.lat, k.lon], {
      radius: k.state === "alerting" ? 12 : 9, weight: 2, color: "#222",
      fillColor: COLORS[k.state], fillOpacity: 0.95,
      className: "kiosk-marker st-" + k.state });
    m.pbKiosk = k;
    m.bindTooltip(tooltip(k), { direction: "top", offset: [0, -8] });
    m.on("click", function () { window.location.href = target(m.pbKiosk); });
    m.addTo(map);
    const e = m.getElement();
    if (e) e.setAttribute("data-device-id", k.device_id);
    state.markers[k.device_id] = m;
  }

  window.pbOnFleet = function (msg) {
    state.messages += 1;
    const seen = new Set();
    const unplaced = [];
    const bounds = [];
    msg.kiosks.forEach(function (k) {
      if (k.lat === null || k.lon === null || k.lat === undefined) { unplaced.push(k); return; }
      seen.add(k.device_id);
      place(k);
      state.kiosks[k.device_id] = k;
      bounds.push([k.lat, k.lon]);
    });
    Object.keys(state.markers).forEach(function (id) {
      if (!seen.has(id)) {  // gone from the store, or no longer placed
        map.removeLayer(state.markers[id]);
        delete state.markers[id];
        delete state.kiosks[id];
      }
    });
    const ul = document.getElementById("unplaced");
    ul.replaceChildren.apply(ul, unplaced.map(function (k) {
      const li = el("li", null, "st-text-" + k.state);
      const a = el("a", k.device_id);
      a.href = target(k);
      li.appendChild(a);
      li.appendChild(el("span", " " + (k.site_name || "") + " · " + LABELS[k.state] +
                        ": no position yet (older firmware, no alert)"));
      return li;
    }));
    document.getElementById("unplaced-none").hidden = unplaced.length > 0;
    if (!state.fitted && bounds.length) {
      state.fitted = true;
      map.fitBounds(L.latLngBounds(bounds).pad(0.5), { maxZoom: 13 });
    }
  };
})();
