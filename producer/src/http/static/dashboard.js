// The warmlane dashboard's script: plain JS, no build step, no dependencies.
// Everything shown comes from the shim's public API; text from the server is
// always set with textContent (never innerHTML), so a prompt cannot inject markup.
"use strict";

const KEY_STORE = "warmlane.apiKey";
const POLL_MS = 3000;
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = $("api-key").value.trim();
  if (key) h["x-api-key"] = key;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const res = await fetch(path, opts);
  let body = null;
  const type = res.headers.get("content-type") || "";
  if (type.includes("application/json")) body = await res.json();
  return { res, body };
}

function errorText(body, res) {
  if (body && body.error) return `${body.error.code} (${body.error.reason}): ${body.error.message}`;
  return `HTTP ${res.status}`;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// ---- models and the form ----------------------------------------------------

let models = [];

async function loadModels() {
  const { res, body } = await api("/models");
  if (!res.ok) { $("form-error").textContent = errorText(body, res); return; }
  models = body;
  const select = $("model");
  select.replaceChildren(...models.map((m) => el("option", { value: m.name }, `${m.display_name} (${m.name})`)));
  applyModelDefaults();
}

function applyModelDefaults() {
  const m = models.find((x) => x.name === $("model").value);
  if (!m) return;
  for (const f of ["width", "height", "frames"]) {
    const input = $(f);
    input.value = m[f].default;
    if (m[f].min !== null && m[f].min !== undefined) input.min = m[f].min;
    if (m[f].max !== null && m[f].max !== undefined) input.max = m[f].max;
  }
}

async function submit(event) {
  event.preventDefault();
  $("form-error").textContent = "";
  const m = models.find((x) => x.name === $("model").value);
  const req = { model: $("model").value, prompt: $("prompt").value };
  if (m) { req.steps = m.steps.default; req.cfg = m.cfg.default; }
  const neg = $("negative-prompt").value.trim();
  if (neg) req.negative_prompt = neg;
  for (const f of ["width", "height", "frames", "seed"]) if ($(f).value !== "") req[f] = Number($(f).value);
  $("submit").disabled = true;
  try {
    const { res, body } = await api("/generate", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(req) });
    if (res.status !== 202) { $("form-error").textContent = errorText(body, res); return; }
    startTask(body);
  } catch (e) {
    $("form-error").textContent = `request failed: ${e}`;
  } finally {
    $("submit").disabled = false;
  }
}

// ---- following a task -------------------------------------------------------

let following = 0;

function startTask(accepted) {
  const token = ++following;
  $("task-id").textContent = accepted.task_id;
  $("task-lane").textContent = accepted.lane + (accepted.fallback_cause ? ` (fallback: ${accepted.fallback_cause})` : "");
  $("task-status").textContent = "pending";
  $("task-error").textContent = "";
  $("progress").value = 0;
  $("progress-text").textContent = "";
  for (const id of ["result", "preview"]) {
    const el = $(id);
    el.hidden = true;
    el.removeAttribute("src");
  }
  $("result-link").hidden = true;
  follow(accepted.task_id, token);
}

function showTask(view) {
  $("task-status").textContent = view.status;
  if (view.lane) $("task-lane").textContent = view.lane + (view.fallback_cause ? ` (fallback: ${view.fallback_cause})` : "");
  if (view.progress) {
    $("progress").max = view.progress.steps || 1;
    $("progress").value = view.progress.step;
    $("progress-text").textContent = `${view.progress.step}/${view.progress.steps}`;
  }
  const t = view.timings || {};
  const parts = [];
  if (t.queued_ms !== null && t.queued_ms !== undefined) parts.push(`queued ${t.queued_ms} ms`);
  if (t.inference_ms !== null && t.inference_ms !== undefined) parts.push(`inference ${t.inference_ms} ms`);
  $("task-timings").textContent = parts.join(", ") || "–";
  if (view.error) $("task-error").textContent = `${view.error.code} (${view.error.reason || ""}): ${view.error.message || ""}`;
}

// Server-sent events read through fetch (EventSource cannot send the API key header);
// falls back to polling when the stream breaks.
async function follow(taskId, token) {
  try {
    const res = await fetch(`/tasks/${encodeURIComponent(taskId)}/events`, { headers: headers({ accept: "text/event-stream" }) });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done || token !== following) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (name === "task" && data) {
          const view = JSON.parse(data);
          showTask(view);
          if (view.terminal) { await finished(view, token); return; }
        } else if (name === "error" && data) {
          $("task-error").textContent = errorText(JSON.parse(data), res);
          return;
        }
      }
    }
  } catch (e) {
    console.warn("event stream failed, polling instead", e);
  }
  await poll(taskId, token);
}

async function poll(taskId, token) {
  while (token === following) {
    const { res, body } = await api(`/tasks/${encodeURIComponent(taskId)}?wait=20`);
    if (!res.ok) { $("task-error").textContent = errorText(body, res); return; }
    showTask(body);
    if (body.terminal) { await finished(body, token); return; }
  }
}

// The files need the API key header, which <video src> cannot send: they are
// fetched and shown from blob URLs.
async function blobUrl(path, what) {
  const res = await fetch(path, { headers: headers() });
  if (!res.ok) { $("task-error").textContent = `${what}: HTTP ${res.status}`; return null; }
  return URL.createObjectURL(await res.blob());
}

async function showPreview(view, token) {
  if (!view.preview_url || token !== following) return;
  const url = await blobUrl(view.preview_url, "preview");
  if (!url || token !== following) return;
  const img = $("preview");
  img.src = url;
  img.hidden = false;
}

async function finished(view, token) {
  if (view.status !== "done" || !view.result_url || token !== following) return;
  const type = view.content_type || "video/mp4";
  const url = await blobUrl(view.result_url, "result");
  if (!url || token !== following) return;
  const link = $("result-link");
  link.href = url;
  link.download = `${view.task_id}.${type === "image/gif" ? "gif" : "mp4"}`;
  link.textContent = type === "image/gif" ? "download the GIF" : "download the MP4";
  link.hidden = false;
  if (type === "image/gif") {
    // A task finished before MP4: its result is the GIF itself.
    const img = $("preview");
    img.src = url;
    img.hidden = false;
    return;
  }
  const video = $("result");
  if (!video.canPlayType(type)) { await showPreview(view, token); return; }
  video.onerror = () => { video.hidden = true; showPreview(view, token); };
  video.src = url;
  video.hidden = false;
  video.play().catch(() => {});  // autoplay may be refused; the controls remain
}

// ---- lanes and memory, polled every 3 s ---------------------------------------

function levelOf(u) { return u >= 0.8 ? "red" : u >= 0.6 ? "amber" : "green"; }

async function refreshReady() {
  try {
    const res = await fetch("/ready");
    const ok = res.ok;
    $("ready").replaceChildren(el("span", { class: ok ? "dot ok" : "dot bad" }), ok ? "ready" : "not ready");
  } catch (e) {
    $("ready").replaceChildren(el("span", { class: "dot bad" }), "unreachable");
  }
}

// Replaces `container`'s children with `nodes`, keeping an existing node (matched by
// its `data-key`) where it renders the same: a button does not vanish under a click
// because the 3 s refresh redrew its card.
function reconcile(container, nodes) {
  const old = new Map([...container.children].filter((n) => n.dataset.key).map((n) => [n.dataset.key, n]));
  const keep = nodes.map((n) => {
    const prev = old.get(n.dataset.key);
    return prev && prev.outerHTML === n.outerHTML ? prev : n;
  });
  keep.forEach((n, i) => { if (container.children[i] !== n) container.insertBefore(n, container.children[i] || null); });
  while (container.children.length > keep.length) container.lastElementChild.remove();
}

// ---- lanes: status, and enable/disable with the admin key ---------------------

const ADMIN_STORE = "warmlane.adminKey";

function adminKey() { return $("admin-key").value.trim(); }

async function setLane(name, action) {
  $("lanes-error").textContent = "";
  const opts = { method: "POST", headers: { "x-admin-key": adminKey() } };
  if (action === "disable") {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify({ cause: "manual", note: "from the dashboard" });
  }
  try {
    const { res, body } = await api(`/admin/lanes/${encodeURIComponent(name)}/${action}`, opts);
    if (!res.ok) $("lanes-error").textContent = `${action} ${name}: ${errorText(body, res)}`;
  } catch (e) {
    $("lanes-error").textContent = `${action} ${name}: request failed: ${e}`;
  }
  await refreshLanes();
}

function laneButton(name, l) {
  if (!adminKey() || !l.dedicated) return null;
  const action = l.disabled ? "enable" : "disable";
  return el("button", { type: "button", class: `lane-${action}${action === "disable" ? " danger" : ""}`, "data-lane": name },
    action === "disable" ? "Disable lane" : "Enable lane");
}

function laneCard(name, l) {
  const fb = l.disabled ? `disabled (${l.disabled.cause})` : l.fallback ? l.fallback.cause : "none";
  const badge = l.disabled ? el("span", { class: "badge red lane-disabled" }, "disabled")
    : el("span", { class: `badge ${l.ready ? "green" : "red"}` }, l.ready ? "ready" : "not ready");
  return el("div", { class: "card lane", "data-lane": name, "data-key": name },
    el("h3", {}, name, " ", badge),
    el("div", {}, `warm workers: ${l.warm_workers}`),
    el("div", {}, `queue depth: ${l.queue_depth ?? "–"}`),
    el("div", {}, `fallback: ${fb}`),
    el("div", { class: "muted" }, `cold starts: ${l.cold_starts}`),
    l.disabled && l.disabled.note ? el("div", { class: "muted" }, `note: ${l.disabled.note}`) : null,
    laneButton(name, l));
}

async function refreshLanes() {
  const { res, body } = await api("/lanes");
  if (!res.ok) { $("lanes").replaceChildren(el("p", { class: "error" }, errorText(body, res))); return; }
  const cards = Object.entries(body.lanes).map(([name, l]) => laneCard(name, l));
  const d = body.degraded || {};
  cards.push(el("div", { class: "card lane", "data-lane": "degraded", "data-key": "degraded" },
    el("h3", {}, "degraded ", el("span", { class: `badge ${d.workers ? "green" : "red"}` }, `${d.workers || 0} worker(s)`)),
    el("div", {}, `queue depth: ${d.queue_depth ?? "–"} / ${d.max_depth}`),
    el("div", {}, `oldest wait: ${d.oldest_wait_ms === null || d.oldest_wait_ms === undefined ? "–" : `${d.oldest_wait_ms} ms`}`),
    el("div", { class: "muted" }, `cold starts: ${d.cold_starts}`)));
  reconcile($("lanes"), cards);
  $("lanes-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// A component of a worker's memory snapshot (shared/src/memory.rs): `device` is
// "gpu", "cpu" or "offloaded", `bytes` what is accounted to it now.
function placementOf(c) {
  if (c.device === "offloaded") return "released";
  return c.device === "gpu" ? "device" : "cpu";
}

function pipelineList(memory) {
  const pipelines = (memory && memory.pipelines) || [];
  if (!pipelines.length) return el("div", { class: "muted" }, "no pipeline resident");
  return el("div", {}, ...pipelines.map((p) => el("div", {},
    el("strong", {}, p.model),
    ...(p.components || []).map((c) => {
      const where = placementOf(c);
      const label = where === "device" ? "device" : where === "cpu" ? "CPU" : "released";
      const size = c.bytes;
      return el("div", { class: "placement" }, `${c.role}: `, el("span", { class: where }, label),
        c.placement ? ` · ${c.placement}` : "", size ? ` · ${bytes(size)}` : "");
    }))));
}

// What the worker measured, beside the manager's estimate: NVML's device memory on a
// GPU (the whole card, every process), else the RSS of the worker and its runner.
function measuredBar(w) {
  const m = w.memory && w.memory.measured;
  if (!m || !w.budget_bytes) return [];
  const gpu = m.device_used_bytes !== null && m.device_used_bytes !== undefined;
  const value = gpu ? m.device_used_bytes : m.worker_rss_bytes + (m.runner_rss_bytes || 0);
  const share = value / w.budget_bytes;
  const source = gpu ? "NVML, whole device" : "RSS, worker + runner";
  return [
    el("div", { class: "bar measured", title: `measured ${bytes(value)} (${source}) of ${bytes(w.budget_bytes)}` },
      el("span", { class: levelOf(share), style: `width:${Math.min(100, share * 100).toFixed(1)}%` })),
    el("div", { class: "measured-text" }, `measured (${source}): ${(share * 100).toFixed(0)} % · ${bytes(value)}`),
  ];
}

async function refreshMemory() {
  const { res, body } = await api("/api/v1/hardware/vram");
  if (!res.ok) { $("memory").replaceChildren(el("p", { class: "error" }, errorText(body, res))); return; }
  if (!body.workers.length) { $("memory").replaceChildren(el("p", { class: "muted" }, "no live workers")); return; }
  $("memory").replaceChildren(...body.workers.map((w) => {
    const u = w.utilization;
    const parts = [el("h3", {}, w.worker_id, " ", el("span", { class: "badge" }, `${w.lane} · ${w.state}`))];
    if (u === null || u === undefined) {
      parts.push(el("div", { class: "muted" }, "no memory budget reported",
        w.memory && w.memory.measured ? ` · process ${bytes(w.memory.measured.worker_rss_bytes)}` : ""));
    } else {
      const level = levelOf(u);
      parts.push(el("div", { class: "bar", title: `used ${bytes(w.used_bytes)} of ${bytes(w.budget_bytes)}, free ${bytes(w.free_bytes)}` },
        el("span", { class: level, style: `width:${Math.min(100, u * 100).toFixed(1)}%` })));
      parts.push(el("div", {}, `estimate: ${(u * 100).toFixed(0)} % · used ${bytes(w.used_bytes)} / ${bytes(w.budget_bytes)} · free ${bytes(w.free_bytes)}`));
      if (u >= 0.9) parts.push(el("div", { class: "warn" }, "⚠ memory critical (≥ 90 %)"));
      parts.push(...measuredBar(w));
    }
    // While a task holds the engine the worker repeats its last snapshot.
    const asOf = w.memory && w.memory.as_of_ms;
    if (asOf && w.at_ms - asOf > 2000) {
      parts.push(el("div", { class: "muted" }, `snapshot from ${Math.round((w.at_ms - asOf) / 1000)} s ago (taken before the running task)`));
    }
    parts.push(pipelineList(w.memory));
    return el("div", { class: "card worker", "data-worker": w.worker_id }, ...parts);
  }));
}

async function refresh() {
  await Promise.allSettled([refreshReady(), refreshLanes(), refreshMemory()]);
}

// ---- start ---------------------------------------------------------------------

function start() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => localStorage.setItem(KEY_STORE, key.value.trim()));
  // The admin key lives in this tab only: sessionStorage, never localStorage or a URL.
  const admin = $("admin-key");
  admin.value = sessionStorage.getItem(ADMIN_STORE) || "";
  admin.addEventListener("input", () => {
    if (adminKey()) sessionStorage.setItem(ADMIN_STORE, adminKey()); else sessionStorage.removeItem(ADMIN_STORE);
    refreshLanes();
  });
  $("lanes").addEventListener("click", (event) => {
    const b = event.target.closest("button[data-lane]");
    if (!b || b.disabled) return;
    b.disabled = true;
    setLane(b.dataset.lane, b.classList.contains("lane-enable") ? "enable" : "disable");
  });
  $("model").addEventListener("change", applyModelDefaults);
  $("generate-form").addEventListener("submit", submit);
  loadModels();
  refresh();
  setInterval(refresh, POLL_MS);
}

start();
