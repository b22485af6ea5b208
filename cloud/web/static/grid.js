/* The camera grid: one tile per camera, live previews with boxes, updated by server-sent events. */
"use strict";

(() => {
  const grid = document.getElementById("grid");
  const empty = document.getElementById("empty");
  const banner = document.getElementById("banner");
  const tpl = document.getElementById("tile-tpl");
  const tiles = new Map();

  function makeTile(cam) {
    const node = tpl.content.firstElementChild.cloneNode(true);
    const t = {
      cam, node, view: "preview", shown: null, pending: null, loading: false,
      img: node.querySelector("img.frame"), boxes: node.querySelector(".boxes"),
      placeholder: node.querySelector(".stage-empty"), dot: node.querySelector(".dot"),
      legend: node.querySelector(".legend"), seg: node.querySelector(".seg"),
    };
    node.dataset.camera = cam;
    const link = "/cameras/" + encodeURIComponent(cam);
    node.querySelector(".cam-name").textContent = cam;
    node.querySelector(".cam-name").href = link;
    node.querySelector(".stage").href = link;
    t.seg.addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (!b) return;
      t.view = b.dataset.view;
      t.seg.querySelectorAll("button").forEach((x) => x.classList.toggle("on", x === b));
      if (t.shown) { t.pending = t.shown; t.shown = null; pump(t); }
    });
    tiles.set(cam, t);
    const names = [...tiles.keys()].sort();
    const next = tiles.get(names[names.indexOf(cam) + 1]);
    grid.insertBefore(node, next ? next.node : null);
    return t;
  }

  function setCamera(t, c) {
    t.dot.classList.toggle("online", c.online);
    t.dot.title = c.online ? "online" : "offline";
    t.node.classList.toggle("offline", !c.online);
    t.node.querySelector(".tile-state").textContent = c.online ? "" : "offline · last seen " + LC.ago(c.last_seen_us);
    t.node.querySelector(".badge-task").textContent = c.task || "–";
    if (c.task === "depth") {
      t.seg.classList.remove("hidden");
      t.node.querySelector(".s-objs-label").textContent = "Depth";
    }
  }

  /** Show the newest result; loads at most one image at a time per tile (a slow network skips frames). */
  function offer(t, r) {
    if (t.pending && t.pending.sequence >= r.sequence) return;
    if (t.shown && t.shown.sequence >= r.sequence) return;
    t.pending = r;
    pump(t);
  }

  function pump(t) {
    if (t.loading || !t.pending) return;
    const r = t.pending;
    t.pending = null;
    t.loading = true;
    const useDepth = t.view === "depth" && r.depth;
    const url = "/api/frames/" + encodeURIComponent(r.camera_id) + "/" + r.sequence + (useDepth ? "/depth.png" : "/preview.png");
    const img = new Image();
    img.onload = () => {
      t.img.src = img.src;
      t.img.classList.remove("hidden");
      t.placeholder.classList.add("hidden");
      LC.drawBoxes(t.boxes, useDepth ? [] : r.boxes, r.width, r.height);
      LC.depthLegend(t.legend, useDepth ? r.depth : null);
      stats(t, r);
      t.shown = r;
      t.loading = false;
      pump(t);
    };
    img.onerror = () => { t.loading = false; pump(t); };
    img.src = url;
  }

  function stats(t, r) {
    const q = (s) => t.node.querySelector(s);
    q(".s-seq").textContent = "#" + r.sequence;
    q(".s-bytes").textContent = LC.bytes(r.base_bytes);
    q(".s-bpp").textContent = LC.bpp(r.base_bpp);
    q(".s-objs").textContent = r.depth
      ? (r.depth.near_m !== undefined ? r.depth.near_m.toFixed(1) + "–" + r.depth.far_m.toFixed(1) + " m" : "–")
      : String(LC.visible(r.boxes).length);
    q(".s-lat").textContent = r.latency_ms === null ? "–" : (r.latency_ms < 1000 ? Math.round(r.latency_ms) + " ms" : (r.latency_ms / 1000).toFixed(1) + " s");
    t.node.querySelector(".stage").title = "frame " + r.sequence + " captured " + LC.dateTime(r.capture_time_us);
  }

  async function refreshCameras(first) {
    const res = await LC.api("/api/cameras");
    if (!res.ok) {
      LC.notice(banner, "error", res.data.title || "Error", res.data.message || "");
      return;
    }
    banner.classList.add("hidden");
    const cams = res.data.cameras;
    empty.classList.toggle("hidden", cams.length > 0);
    const online = cams.filter((c) => c.online).length;
    document.getElementById("grid-summary").textContent =
      cams.length + " camera" + (cams.length === 1 ? "" : "s") + ", " + online + " online · live base-layer previews with the cloud's results";
    for (const c of cams) {
      const t = tiles.get(c.camera_id) || makeTile(c.camera_id);
      setCamera(t, c);
      if (first) {
        if (c.latest) offer(t, c.latest);
        else if (c.last_sequence > 0) {
          const r = await LC.api("/api/frames/" + encodeURIComponent(c.camera_id) + "/" + c.last_sequence + "/result");
          if (r.ok) offer(t, r.data);
        }
      }
    }
  }

  LC.live({
    result(r) {
      const t = tiles.get(r.camera_id);
      if (t) offer(t, r);
      else refreshCameras(false).then(() => { const n = tiles.get(r.camera_id); if (n) offer(n, r); });
    },
  });
  LC.bindMinScore(() => {
    for (const t of tiles.values()) {
      if (!t.shown) continue;
      LC.drawBoxes(t.boxes, t.view === "depth" && t.shown.depth ? [] : t.shown.boxes, t.shown.width, t.shown.height);
      stats(t, t.shown);
    }
  });
  refreshCameras(true);
  setInterval(() => refreshCameras(false), 5000);
})();
