// The dashboard's history table and gallery: recent tasks from `GET /tasks`
// (newest first), Cancel on unfinished ones (`DELETE /tasks/{id}`), and the latest
// finished videos. Loaded after dashboard.js, whose helpers ($, el, api, headers,
// errorText, reconcile, startTask) it uses. Text from the server goes through
// textContent only.
"use strict";

const GALLERY_SIZE = 8;

// What a person calls the state of a task: a failed task whose code is `cancelled`
// was cancelled; a running one with a cancel request is being cancelled.
function shownStatus(v) {
  if (v.status === "failed" && v.error && v.error.code === "cancelled") return "cancelled";
  if (!v.terminal && v.cancel_requested) return "cancelling";
  return v.status;
}

const STATUS_COLOUR = { done: "green", failed: "red", processing: "amber", cancelling: "amber", pending: "blue" };

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "–";
}

function durations(t) {
  const parts = [];
  if (t.queued_ms !== null && t.queued_ms !== undefined) parts.push(`queued ${t.queued_ms} ms`);
  if (t.inference_ms !== null && t.inference_ms !== undefined) parts.push(`inference ${t.inference_ms} ms`);
  return parts.join(", ") || "–";
}

function progressCell(v) {
  if (!v.progress) return "–";
  const bar = el("progress", { max: String(v.progress.steps || 1), value: String(v.progress.step) });
  return el("span", {}, bar, ` ${v.progress.step}/${v.progress.steps}`);
}

function historyRow(v) {
  const status = shownStatus(v);
  const t = v.timings || {};
  const err = v.error ? el("span", { title: `${v.error.reason || ""}: ${v.error.message || ""}` }, v.error.code) : "–";
  const follow = el("a", { href: "#", class: "follow", title: `${v.task_id} (show it in the Task panel)` }, v.task_id.slice(0, 12));
  const canCancel = !v.terminal && !v.cancel_requested;
  return el("tr", { "data-key": v.task_id, "data-task": v.task_id, "data-status": status, "data-lane": v.lane || "" },
    el("td", { class: "id" }, follow),
    el("td", {}, v.model || "–"),
    el("td", {}, v.lane || "–"),
    el("td", { class: "status" }, el("span", { class: `badge ${STATUS_COLOUR[status] || ""}` }, status)),
    el("td", {}, progressCell(v)),
    el("td", {}, clock(t.submitted_at_ms)),
    el("td", {}, clock(t.finished_at_ms)),
    el("td", {}, durations(t)),
    el("td", { class: "code" }, err),
    el("td", {}, canCancel ? el("button", { type: "button", class: "cancel danger", "data-task": v.task_id }, "Cancel") : null));
}

function historyQuery() {
  const q = new URLSearchParams();
  if ($("history-status").value) q.set("status", $("history-status").value);
  if ($("history-model").value) q.set("model", $("history-model").value);
  const limit = Number($("history-limit").value);
  if (Number.isInteger(limit) && limit >= 1) q.set("limit", String(Math.min(limit, 200)));
  return q.toString();
}

async function refreshHistory() {
  const query = historyQuery();
  const { res, body } = await api(`/tasks${query ? `?${query}` : ""}`);
  if (!res.ok) { $("history-error").textContent = errorText(body, res); return; }
  $("history-error").textContent = "";
  const rows = body.tasks.map(historyRow);
  reconcile($("history").tBodies[0], rows);
  $("history-empty").hidden = rows.length > 0;
  $("history-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function cancelTask(id) {
  $("cancel-error").textContent = "";
  try {
    const { res, body } = await api(`/tasks/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (res.status === 200 || res.status === 202) {
      // 200: it was pending and is cancelled now; 202: it stops at its next step.
      const row = historyRow(body);
      const old = $("history").querySelector(`tr[data-task="${CSS.escape(id)}"]`);
      if (old) old.replaceWith(row);
    } else {
      $("cancel-error").textContent = `cancel ${id}: ${errorText(body, res)}`;
    }
  } catch (e) {
    $("cancel-error").textContent = `cancel ${id}: request failed: ${e}`;
  }
  await refreshHistory();
}

// ---- gallery ---------------------------------------------------------------------

// The files need the API key header, which <video src> cannot send: each clip is
// fetched once into blob URLs, kept while the clip is shown, revoked after.
const clips = new Map();

async function fetchBlob(path) {
  if (!path) return null;
  const res = await fetch(path, { headers: headers() });
  if (!res.ok) return null;
  return URL.createObjectURL(await res.blob());
}

function loadClip(v) {
  if (!clips.has(v.task_id)) {
    const clip = Promise.all([fetchBlob(v.result_url), fetchBlob(v.preview_url)])
      .then(([video, poster]) => ({ video, poster }), () => ({ video: null, poster: null }));
    // A failed load is tried again at the next refresh (the key may have been missing).
    clip.then(({ video }) => { if (!video && clips.get(v.task_id) === clip) clips.delete(v.task_id); });
    clips.set(v.task_id, clip);
  }
  return clips.get(v.task_id);
}

function forgetClips(keep) {
  for (const [id, clip] of clips) {
    if (keep.has(id)) continue;
    clips.delete(id);
    clip.then(({ video, poster }) => { for (const u of [video, poster]) if (u) URL.revokeObjectURL(u); });
  }
}

// One clip: the MP4 in a muted looping <video> (the GIF preview as its poster, when
// there is one); a GIF-only task as an <img>; a short note when the file is gone.
async function clipCard(v) {
  const { video, poster } = await loadClip(v);
  let media;
  if (!video) {
    media = el("p", { class: "muted" }, "video unavailable");
  } else if (v.content_type === "image/gif") {
    media = el("img", { src: video, alt: `task ${v.task_id}` });
  } else {
    // `muted` as a property too: the attribute alone does not mute an element made by
    // script, and browsers only autoplay muted video.
    media = el("video", { muted: "", autoplay: "", loop: "", playsinline: "", controls: "", preload: "auto" });
    media.muted = true;
    if (poster) media.setAttribute("poster", poster);
    media.setAttribute("src", video);
  }
  return el("div", { class: "card clip", "data-key": v.task_id, "data-task": v.task_id }, media,
    el("div", { class: "caption" }, el("strong", {}, v.model || "–"), ` · ${clock((v.timings || {}).finished_at_ms)} · `,
      el("span", { class: "muted" }, v.task_id)));
}

async function refreshGallery() {
  const { res, body } = await api(`/tasks?status=done&limit=${GALLERY_SIZE}`);
  if (!res.ok) {
    $("gallery-error").textContent = errorText(body, res);
    if (!$("gallery").querySelector(".clip")) $("gallery").replaceChildren();
    return;
  }
  $("gallery-error").textContent = "";
  const done = body.tasks.filter((v) => v.result_url);
  forgetClips(new Set(done.map((v) => v.task_id)));
  const cards = await Promise.all(done.map(clipCard));
  if (!cards.length) { $("gallery").replaceChildren(el("p", { class: "muted" }, "no finished videos yet")); return; }
  reconcile($("gallery"), cards);
}

// ---- start -------------------------------------------------------------------------

async function loadHistoryModels() {
  const { res, body } = await api("/models");
  if (!res.ok) return;
  $("history-model").append(...body.map((m) => el("option", { value: m.name }, m.name)));
}

function refreshTasks() {
  return Promise.allSettled([refreshHistory(), refreshGallery()]);
}

function startHistory() {
  $("history").addEventListener("click", (event) => {
    const cancel = event.target.closest("button.cancel");
    if (cancel && !cancel.disabled) {
      cancel.disabled = true;
      cancelTask(cancel.dataset.task);
      return;
    }
    const follow = event.target.closest("a.follow");
    if (follow) {
      event.preventDefault();
      const row = follow.closest("tr");
      startTask({ task_id: row.dataset.task, lane: row.dataset.lane });
    }
  });
  for (const id of ["history-status", "history-model", "history-limit"]) $(id).addEventListener("change", refreshHistory);
  $("history-filter").addEventListener("submit", (event) => { event.preventDefault(); refreshHistory(); });
  // A new key may see what the old one could not (clips that failed load again). The
  // gallery is not emptied first: `change` fires on the blur of a click elsewhere, and a
  // page that shrank under the pointer would lose that click.
  $("api-key").addEventListener("change", refreshTasks);
  loadHistoryModels();
  refreshTasks();
  setInterval(refreshTasks, POLL_MS);
}

startHistory();
