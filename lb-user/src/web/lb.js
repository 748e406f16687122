// The overview's live numbers: /live.json every 2 s, written into the
// cells the server rendered (the page works without this script).
"use strict";
(function () {
  const KEEP = 150, PERIOD = 2;
  function si(v) {
    if (v >= 1e9) return (v / 1e9).toFixed(2) + " G";
    if (v >= 1e6) return (v / 1e6).toFixed(2) + " M";
    if (v >= 1e3) return (v / 1e3).toFixed(2) + " k";
    return v.toFixed(1);
  }
  function points(series, i) {
    const span = KEEP * PERIOD;
    const max = Math.max(1, ...series.map(p => p[i]));
    return series.map(p => (300 * (1 - p[0] / span)).toFixed(1) + "," + (58 - 56 * p[i] / max).toFixed(1)).join(" ");
  }
  function set(root, sel, text) {
    const el = root.querySelector(sel);
    if (el && el.textContent !== String(text)) el.textContent = text;
  }
  function byData(attr, value) {
    return Array.from(document.querySelectorAll("[" + attr + "]")).find(e => e.getAttribute(attr) === value);
  }
  async function tick() {
    let o;
    try {
      const r = await fetch("/live.json", { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { window.location = "/login"; return; }
      if (!r.ok) return;
      o = await r.json();
    } catch (e) { return; }
    let missing = false;
    for (const s of o.services) {
      const sec = byData("data-service", s.service);
      if (!sec || sec.tagName !== "SECTION") { missing = true; continue; }
      set(sec, "dd.active", s.active); set(sec, "dd.inactive", s.inactive);
      set(sec, "dd.conns", s.conns); set(sec, "dd.cps", si(s.cps)); set(sec, "dd.bps", si(s.bps));
      const svg = sec.querySelector("svg.chart");
      if (svg) {
        svg.querySelector("polyline.cps").setAttribute("points", points(s.series, 1));
        svg.querySelector("polyline.bps").setAttribute("points", points(s.series, 2));
      }
      for (const r of s.reals) {
        const row = Array.from(sec.querySelectorAll("tr.real")).find(e => e.getAttribute("data-real") === r.real);
        if (!row) { missing = true; continue; }
        set(row, "td.weight", r.weight); set(row, "td.active", r.active); set(row, "td.inactive", r.inactive);
        set(row, "td.conns", r.conns); set(row, "td.cps", si(r.cps)); set(row, "td.bps", si(r.bps));
        const h = row.querySelector("td.health");
        if (h && h.textContent !== r.health) { h.textContent = r.health; h.className = "health " + r.health; }
      }
    }
    if (missing || document.querySelectorAll("section.service").length !== o.services.length) {
      window.location.reload();
    }
  }
  setInterval(tick, PERIOD * 1000);
})();
