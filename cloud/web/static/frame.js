/* The frame view: timeline within retention, preview with results, Enhance on request. */
"use strict";

(() => {
  const page = document.getElementById("frame-page");
  const cam = page.dataset.camera;
  const camPath = encodeURIComponent(cam);
  const $ = (id) => document.getElementById(id);
  const list = $("timeline");
  const enhanceBtn = $("enhance");
  const msg = $("enhance-msg");
  const banner = $("banner");
  const canEnhance = LC.role === "enhancer";
  const frames = new Map();
  let selected = null;
  let result = null;
  let view = "preview";
  let oldest = 0;
  let enhancing = false;
  let loaded = false;
  let lastEnhanced = null;
  let refreshTimer = null;

  if (!canEnhance) {
    enhanceBtn.classList.replace("btn-primary", "btn-locked");
    enhanceBtn.title = "Your role (" + LC.role + ") may not request enhancement";
  }

  function item(f) {
    const li = document.createElement("li");
    li.dataset.seq = f.sequence;
    const seq = document.createElement("span"); seq.className = "tl-seq"; seq.textContent = "#" + f.sequence;
    const time = document.createElement("span"); time.className = "tl-time"; time.textContent = LC.clock(f.capture_time_us);
    const size = document.createElement("span"); size.className = "tl-size"; size.textContent = LC.bytes(f.base_bytes);
    li.append(seq, time, size);
    if (f.enhanced) flagEnhanced(li);
    li.addEventListener("click", () => select(f.sequence));
    return li;
  }
  function flagEnhanced(li) {
    if (li.querySelector(".tl-flag")) return;
    const flag = document.createElement("span"); flag.className = "tl-flag"; flag.textContent = "✓ enhanced (cached in the cloud)";
    li.appendChild(flag);
  }

  async function loadFrames(older) {
    const q = older && oldest ? "?before=" + oldest : "";
    const res = await LC.api("/api/cameras/" + camPath + "/frames" + q);
    if (!res.ok) { LC.notice(banner, "error", res.data.title, res.data.message, res.data.details); return; }
    banner.classList.add("hidden");
    const c = res.data.camera;
    if (c) {
      LC.setPill($("cam-status"), c.online ? "ok" : "muted", c.online ? "online" : "offline");
      $("cam-meta").textContent = c.task + " · base model " + c.base_model_id + " · " + c.frames_stored + " frames in the cloud";
    }
    const fresh = res.data.frames.filter((f) => !frames.has(f.sequence));
    for (const f of fresh) frames.set(f.sequence, f);
    const nodes = fresh.map(item);
    if (older) list.append(...nodes);
    else list.prepend(...nodes);
    if (res.data.frames.length) {
      const min = Math.min(...res.data.frames.map((f) => f.sequence));
      oldest = oldest ? Math.min(oldest, min) : min;
    }
    if (older || !loaded) $("tl-more").classList.toggle("hidden", !res.data.has_more);
    loaded = true;
    $("tl-count").textContent = frames.size + " frames";
    if (!selected && frames.size) {
      const want = Number(page.dataset.sequence);
      select(want && frames.has(want) ? want : Math.max(...frames.keys()));
    } else if (!frames.size) {
      $("pv-empty").textContent = "No frame of this camera is stored in the cloud.";
    }
  }

  function resetReconstruction() {
    $("rc-img").classList.add("hidden");
    $("rc-boxes").replaceChildren();
    $("rc-placeholder").classList.remove("hidden");
    $("rc-progress").classList.add("hidden");
    $("rc-cost").textContent = "";
    $("c-enh").textContent = "not fetched";
    $("c-total").textContent = "–";
    $("c-fetch").textContent = "–";
    msg.classList.add("hidden");
  }

  async function select(seq) {
    if (enhancing) return;
    selected = seq;
    const f = frames.get(seq);
    list.querySelectorAll("li").forEach((li) => li.classList.toggle("selected", Number(li.dataset.seq) === seq));
    history.replaceState(null, "", "?seq=" + seq);
    $("frame-title").textContent = "Frame #" + seq;
    $("frame-time").textContent = "captured " + LC.dateTime(f.capture_time_us);
    $("c-size").textContent = f.width + " × " + f.height + " px";
    $("c-base").textContent = LC.bytes(f.base_bytes) + " · " + LC.bpp(f.base_bpp) + " bpp";
    $("pv-cost").textContent = LC.bytes(f.base_bytes) + " · " + LC.bpp(f.base_bpp) + " bpp";
    enhanceBtn.disabled = false;
    resetReconstruction();
    result = null;
    const res = await LC.api("/api/frames/" + camPath + "/" + seq + "/result");
    if (selected !== seq) return;
    result = res.ok ? res.data : null;
    $("pv-seg").classList.toggle("hidden", !(result && result.depth));
    showPreview();
    details(result);
  }

  function showPreview() {
    const seq = selected;
    const useDepth = view === "depth" && result && result.depth;
    const img = $("pv-img");
    $("pv-title").textContent = useDepth ? "Depth from the base layer" : "Base-layer preview";
    img.onload = () => {
      if (seq !== selected) return;
      img.classList.remove("hidden");
      $("pv-empty").classList.add("hidden");
      LC.drawBoxes($("pv-boxes"), useDepth || !result ? [] : result.boxes, result && result.width, result && result.height);
      LC.depthLegend($("pv-legend"), useDepth ? result.depth : null);
    };
    img.onerror = () => { img.classList.add("hidden"); $("pv-empty").classList.remove("hidden"); $("pv-empty").textContent = "The preview of this frame is no longer available."; };
    img.src = "/api/frames/" + camPath + "/" + seq + (useDepth ? "/depth.png" : "/preview.png");
  }

  function details(r) {
    const tbody = document.querySelector("#detections tbody");
    tbody.replaceChildren();
    $("c-lat").textContent = r && r.latency_ms !== null ? Math.round(r.latency_ms) + " ms (capture → result)" : "–";
    if (!r) { $("det-count").textContent = "no result stored"; return; }
    document.querySelector("#detections thead").classList.toggle("hidden", !!r.depth);
    $("min-score-label").classList.toggle("hidden", !!r.depth);
    if (r.depth) {
      $("det-title").textContent = "Depth";
      $("det-count").textContent = r.depth.width + " × " + r.depth.height;
      const tr = document.createElement("tr");
      const td = document.createElement("td"); td.colSpan = 3;
      td.textContent = r.depth.near_m !== undefined ? "near " + r.depth.near_m.toFixed(2) + " m · far " + r.depth.far_m.toFixed(2) + " m (2nd–98th percentile)" : "depth map";
      tr.appendChild(td); tbody.appendChild(tr);
      return;
    }
    const shown = LC.visible(r.boxes);
    const hidden = r.boxes.length - shown.length;
    $("det-count").textContent = shown.length + " object" + (shown.length === 1 ? "" : "s") +
      (hidden ? " · " + hidden + " below " + Math.round(LC.minScore() * 100) + "% hidden" : "");
    for (const b of [...shown].sort((a, c) => c.score - a.score)) {
      const tr = document.createElement("tr");
      const name = document.createElement("td");
      const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = LC.colour(b.class_id);
      name.append(sw, b.class_name);
      const score = document.createElement("td"); score.textContent = (b.score * 100).toFixed(1) + "%";
      const box = document.createElement("td"); box.textContent = [b.x1, b.y1, b.x2, b.y2].map((v) => Math.round(v)).join(", ");
      tr.append(name, score, box);
      tbody.appendChild(tr);
    }
  }

  async function enhance() {
    if (selected === null || enhancing) return;
    const seq = selected;
    enhancing = true;
    enhanceBtn.disabled = true;
    msg.classList.add("hidden");
    $("rc-placeholder").classList.add("hidden");
    $("rc-progress").classList.remove("hidden");
    const started = performance.now();
    const text = $("rc-progress-text");
    const tick = setInterval(() => {
      text.textContent = "Fetching the enhancement layer from " + cam + " and reconstructing… " + ((performance.now() - started) / 1000).toFixed(1) + " s";
    }, 100);
    const res = await LC.api("/api/frames/" + camPath + "/" + seq + "/enhance", { method: "POST" });
    clearInterval(tick);
    enhancing = false;
    enhanceBtn.disabled = false;
    $("rc-progress").classList.add("hidden");
    if (seq !== selected) return;
    if (!res.ok) {
      $("rc-placeholder").classList.remove("hidden");
      const kind = res.status === 403 ? "warn" : "error";
      LC.notice(msg, kind, res.data.title || "Enhancement failed", res.data.message || "", res.data.details);
      msg.dataset.error = res.data.error || "";
      return;
    }
    const d = res.data;
    lastEnhanced = d;
    const img = $("rc-img");
    img.onload = () => {
      img.classList.remove("hidden");
      if (d.result && !d.result.depth) LC.drawBoxes($("rc-boxes"), d.result.boxes, d.result.width, d.result.height);
    };
    img.src = d.image;
    $("rc-cost").textContent = "+" + LC.bytes(d.enhancement_bytes) + " · " + LC.bpp(d.total_bpp) + " bpp total";
    $("c-enh").textContent = LC.bytes(d.enhancement_bytes) + (d.cached ? " (cached in the cloud)" : "");
    $("c-total").textContent = LC.bytes(d.total_bytes) + " · " + LC.bpp(d.total_bpp) + " bpp";
    $("c-fetch").textContent = LC.seconds(d.fetch_seconds) + " from the camera · " + LC.seconds(d.elapsed_seconds) + " in all";
    LC.notice(msg, "ok", "", "Enhanced frame #" + seq + ": " + LC.bytes(d.enhancement_bytes) + " fetched " + (d.cached ? "earlier (served from the cloud's cache)" : "from " + cam) + " in " + LC.seconds(d.elapsed_seconds) + ".");
    msg.dataset.error = "";
    const li = list.querySelector('li[data-seq="' + seq + '"]');
    if (li) flagEnhanced(li);
  }

  LC.bindMinScore(() => {
    if (result) { details(result); showPreview(); }
    if (lastEnhanced && lastEnhanced.sequence === selected && lastEnhanced.result) {
      LC.drawBoxes($("rc-boxes"), lastEnhanced.result.boxes, lastEnhanced.result.width, lastEnhanced.result.height);
    }
  });
  enhanceBtn.addEventListener("click", enhance);
  $("tl-more").addEventListener("click", () => loadFrames(true));
  $("pv-seg").addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    view = b.dataset.view;
    $("pv-seg").querySelectorAll("button").forEach((x) => x.classList.toggle("on", x === b));
    if (selected !== null) showPreview();
  });
  // New frames of this camera: refresh the newest page of the timeline, at most every 2 s.
  LC.live({
    result(r) {
      if (r.camera_id !== cam || refreshTimer) return;
      refreshTimer = setTimeout(() => { refreshTimer = null; loadFrames(false); }, 2000);
    },
  });
  loadFrames(false);
})();
