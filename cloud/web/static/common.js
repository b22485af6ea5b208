/* Shared helpers of the operator page: API calls with the CSRF token, formatting, boxes, live events. */
"use strict";

const LC = (() => {
  const body = document.body;
  const csrf = body.dataset.csrf || "";
  const role = body.dataset.role || "";
  const PALETTE = ["#f43f5e", "#22c55e", "#3b82f6", "#f59e0b", "#a855f7", "#06b6d4", "#ec4899", "#84cc16", "#f97316", "#14b8a6"];

  /** fetch JSON; never throws for HTTP errors: returns {ok, status, data}. */
  async function api(path, opts = {}) {
    const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...opts };
    if (init.method && init.method !== "GET") init.headers["X-CSRF-Token"] = csrf;
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      return { ok: false, status: 0, data: { error: "network", title: "Connection lost", message: "The operator page does not answer: " + err } };
    }
    if (resp.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); }
    let data = null;
    try { data = await resp.json(); } catch (_) { data = { error: "bad_response", title: "Error " + resp.status, message: resp.statusText }; }
    return { ok: resp.ok, status: resp.status, data };
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(n < 10240 ? 2 : 1) + " KiB";
    return (n / 1048576).toFixed(2) + " MiB";
  }
  const bpp = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));
  const seconds = (s) => (s < 1 ? (s * 1000).toFixed(0) + " ms" : s.toFixed(2) + " s");
  function clock(us) {
    if (!us) return "–";
    const d = new Date(us / 1000);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }
  function dateTime(us) {
    if (!us) return "";
    const d = new Date(us / 1000);
    return d.toLocaleDateString() + " " + clock(us);
  }
  function ago(us) {
    if (!us) return "never";
    const s = Math.max(0, (Date.now() - us / 1000) / 1000);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return new Date(us / 1000).toLocaleDateString();
  }
  const colour = (classId) => PALETTE[classId % PALETTE.length];

  /** The operator's confidence threshold (kept in this browser). */
  function minScore() {
    const v = Number(localStorage.getItem("layercast.minScore"));
    return Number.isFinite(v) && localStorage.getItem("layercast.minScore") !== null ? v : 0.5;
  }
  function bindMinScore(onChange) {
    const el = document.getElementById("min-score");
    if (!el) return;
    el.value = String(minScore());
    if (el.value === "") el.value = "0.5";
    el.addEventListener("change", () => { localStorage.setItem("layercast.minScore", el.value); onChange(); });
  }
  const visible = (boxes) => (boxes || []).filter((b) => b.score >= minScore());

  /** Draw the boxes at or above the threshold (frame pixel coordinates) over an image of w x h pixels. */
  function drawBoxes(layer, boxes, w, h) {
    layer.replaceChildren();
    if (!boxes || !w || !h) return;
    for (const b of visible(boxes)) {
      const el = document.createElement("div");
      el.className = "box";
      const c = colour(b.class_id);
      el.style.left = (100 * b.x1 / w) + "%";
      el.style.top = (100 * b.y1 / h) + "%";
      el.style.width = (100 * (b.x2 - b.x1) / w) + "%";
      el.style.height = (100 * (b.y2 - b.y1) / h) + "%";
      el.style.borderColor = c;
      if (b.y1 / h < 0.08) el.classList.add("label-inside");
      const label = document.createElement("span");
      label.className = "box-label";
      label.style.background = c;
      label.textContent = b.class_name + " " + Math.round(b.score * 100) + "%";
      el.appendChild(label);
      layer.appendChild(el);
    }
  }

  function setPill(el, kind, text) {
    if (!el) return;
    el.className = "pill pill-" + kind;
    el.textContent = text;
  }

  /** Live events: calls handlers.result(data) per live frame; keeps the top-bar pill current. */
  function live(handlers) {
    const pill = document.getElementById("feed-status");
    const es = new EventSource("/api/events");
    es.addEventListener("result", (e) => handlers.result && handlers.result(JSON.parse(e.data)));
    es.addEventListener("status", (e) => {
      const s = JSON.parse(e.data);
      if (s.state === "signed_out") { es.close(); location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); return; }
      if (s.state === "live") setPill(pill, "ok", "Live");
      else if (s.state === "closed") setPill(pill, "bad", "Page stopped");
      else setPill(pill, "warn", s.state === "connecting" ? "Connecting…" : "Reconnecting…");
      if (pill) pill.title = s.message || "";
      handlers.status && handlers.status(s);
    });
    es.addEventListener("dropped", (e) => { if (pill) pill.title = JSON.parse(e.data).dropped + " live events skipped (slow connection)"; });
    es.onerror = () => setPill(pill, "bad", "Disconnected");
    return es;
  }

  function notice(el, kind, title, message, details) {
    el.className = "notice notice-" + kind;
    el.replaceChildren();
    if (title) { const t = document.createElement("strong"); t.textContent = title; el.appendChild(t); }
    el.appendChild(document.createTextNode(message || ""));
    if (details) { const d = document.createElement("small"); d.className = "details-line"; d.textContent = details; el.appendChild(d); }
  }

  function depthLegend(el, depth) {
    if (!el) return;
    if (!depth || depth.near_m === undefined) { el.classList.add("hidden"); return; }
    el.querySelector(".near").textContent = "near " + depth.near_m.toFixed(1) + " m";
    el.querySelector(".far").textContent = "far " + depth.far_m.toFixed(1) + " m";
    el.classList.remove("hidden");
  }

  return { api, ago, minScore, bindMinScore, visible, bytes, bpp, seconds, clock, dateTime, colour, drawBoxes, setPill, live, notice, depthLegend, role, csrf };
})();
