// Darkroom's web page: upload photos, follow them through the pipeline, look at what was found,
// search your images, name and correct the people in them, and (admins) watch the queues and
// replay poison messages.
//
// Plain ES module, no build step, no third-party code. Every string that comes from the API is
// put into the page with textContent / attributes, never parsed as HTML, and there are no inline
// scripts, styles or handler attributes (the API serves the page under a strict CSP).

const KEY_STORAGE = "darkroom.apiKey";
const FINAL = new Set(["done", "rejected", "failed"]);
const POLL_MS = 1000;
const POLL_SHARE_MS = 600; // per image being followed
const REPLAY_WAIT_MS = 60_000; // a replayed image's document changes within this
const PARALLEL_UPLOADS = 3;
const NOT_INGESTED_GIVE_UP_MS = 180_000; // a blob whose document never appears
const LIBRARY_PAGE = 24;
const OPS_REFRESH_MS = 5000;
const DOC_CACHE_MS = 5 * 60_000; // image documents kept for face crops (read links last 15 min)
const CROP_SIDE = 96; // CSS px of a face crop
const CROP_THUMB_MIN = 48; // thumbnail px a face needs to be cropped from the thumbnail
const COVER_WORKERS = 2; // people's covers loaded at once (each is one or two API calls)
// Headers a page may not set on XMLHttpRequest (the browser sets them itself).
const FORBIDDEN_HEADERS = new Set([
  "content-length", "host", "connection", "keep-alive", "transfer-encoding", "origin",
  "referer", "cookie", "date", "expect", "te", "trailer", "upgrade", "via",
]);
// The media types POST /api/uploads accepts; a file the browser gives no type is named by its
// extension.
const UPLOAD_TYPES = {
  jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", gif: "image/gif", webp: "image/webp",
  bmp: "image/bmp", tif: "image/tiff", tiff: "image/tiff", avif: "image/avif", heic: "image/heic",
  heif: "image/heif",
};

const $ = (id) => document.getElementById(id);

const state = {
  key: null,
  me: null,
  session: 0, // bumped at sign-out: loops of an older session stop
  view: "upload",
  uploads: [], // upload items, in the order they were added
  uploading: 0,
  detail: null, // the document shown in the detail panel
  photoFor: null, // which image the <img> was loaded for (read URLs change on every GET)
  // What the deployment analyses, as each capability declares it (GET /api/capabilities).
  capabilities: [],
  toggles: {}, // capability name → its boxes are drawn
  library: { continuation: null, query: {} },
  // Admins: the library falls back to operator uploads once, when they have no images of
  // their own (after `make run`, every photo is an operator upload).
  ownerChosen: false,
  opsTimer: null,
  people: new Map(), // id → person, as GET /api/people last said
  peopleLoaded: false,
  personId: null, // the person open in the People view
  docs: new Map(), // image id → {at, promise}: documents for face crops
  pictures: new Map(), // read URL → Promise<HTMLImageElement>
  covers: new Map(), // person id → {face, canvas}: drawn covers, kept across list refreshes
  similarFor: null, // which image the similar strip was loaded for
};

// ---------------------------------------------------------------------------------------------
// small helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function announce(message) {
  $("announce").textContent = message;
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function formatScore(score) {
  return Number.isFinite(score) ? `${Math.round(score * 100)}%` : "";
}

function contentTypeOf(file) {
  const known = new Set(Object.values(UPLOAD_TYPES));
  if (known.has(file.type)) return file.type;
  const extension = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
  return UPLOAD_TYPES[extension] ?? null;
}

// An upload's blob is named <caller>/<unique>/<file name>: people know it by the last part.
function displayName(doc) {
  const name = doc?.source?.name ?? doc?.name;
  return name ? String(name).split("/").pop() : String(doc?.id ?? "");
}

function stepName(spec) {
  return String(spec).split(".").pop();
}

function labelOf(item) {
  return String(item?.name ?? item?.label ?? "");
}

function textOf(analysis) {
  const text = analysis?.text;
  if (!text) return { full: "", lines: [] };
  if (typeof text === "string") return { full: text, lines: [] };
  return {
    full: String(text.full ?? text.text ?? ""),
    lines: Array.isArray(text.lines) ? text.lines : [],
  };
}

function isBox(box) {
  return Array.isArray(box) && box.length === 4 && box.every(Number.isFinite);
}

function chip(status) {
  return el("span", { class: "chip", dataset: { status: String(status) }, text: status });
}

// ---------------------------------------------------------------------------------------------
// the API

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function retryAfterSeconds(response) {
  const value = Number.parseFloat(response.headers.get("Retry-After") ?? "");
  return Number.isFinite(value) && value >= 0 ? Math.min(value, 60) : 1;
}

async function api(path, { method = "GET", body, etag, retries = 3 } = {}) {
  const session = state.session;
  const headers = { Accept: "application/json" };
  if (state.key) headers["x-api-key"] = state.key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (etag) headers["If-None-Match"] = etag;
  for (let attempt = 0; ; attempt += 1) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch {
      throw new ApiError(0, "the service cannot be reached", 2);
    }
    if (response.status === 429 && attempt < retries) {
      await sleep(retryAfterSeconds(response) * 1000);
      if (session !== state.session) throw new ApiError(0, "signed out", 0);
      continue;
    }
    if (response.status === 304) return { status: 304, data: null, etag };
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const message =
        data && typeof data.error === "string" ? data.error : `HTTP ${response.status}`;
      if (response.status === 401 && path !== "/api/me" && session === state.session) {
        signOut("The service no longer accepts your key: sign in again.");
      }
      throw new ApiError(response.status, message, retryAfterSeconds(response));
    }
    return { status: response.status, data, etag: response.headers.get("ETag") };
  }
}

const imagePath = (id) => `/api/images/${encodeURIComponent(id)}`;

// ---------------------------------------------------------------------------------------------
// signing in and out

async function signIn(key) {
  state.key = key;
  try {
    const { data } = await api("/api/me");
    state.me = data || {};
    const { data: declared } = await api("/api/capabilities");
    showCapabilities(declared?.items || []);
  } catch (error) {
    state.key = null;
    throw error;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  showApp();
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  state.session += 1;
  state.key = null;
  state.me = null;
  state.uploads = [];
  state.uploading = 0;
  state.detail = null;
  state.photoFor = null;
  state.people = new Map();
  state.peopleLoaded = false;
  state.personId = null;
  state.docs = new Map();
  state.pictures = new Map();
  state.covers = new Map();
  state.similarFor = null;
  stopOpsRefresh();
  $("uploads").replaceChildren();
  $("library").replaceChildren();
  $("people").replaceChildren();
  $("person").hidden = true;
  if ($("forget-dialog").open) $("forget-dialog").close();
  $("search-person").replaceChildren(el("option", { value: "", text: "anyone" }));
  $("detail").hidden = true;
  $("nav").hidden = true;
  $("who").hidden = true;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

function showApp() {
  const me = state.me;
  $("sign-in").hidden = true;
  $("sign-in-error").textContent = "";
  $("nav").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = `${me.name ?? me.caller ?? "signed in"}${me.admin ? " (admin)" : ""}`;
  document.querySelector('.tab[data-view="ops"]').hidden = !me.admin;
  $("search-owner").hidden = !me.admin;
  $("search-owner").value = "me";
  state.ownerChosen = false;
  showView("upload");
}

function showView(view) {
  if (view === "ops" && !state.me?.admin) view = "upload";
  state.view = view;
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-pressed", String(tab.dataset.view === view));
  }
  $("view-upload").hidden = view !== "upload";
  $("view-library").hidden = view !== "library";
  $("view-people").hidden = view !== "people";
  $("view-ops").hidden = view !== "ops";
  stopOpsRefresh();
  if (view === "library") {
    loadLibrary(true);
    if (!state.peopleLoaded) refreshPeopleFilter();
  }
  if (view === "people") loadPeople();
  if (view === "ops") startOpsRefresh();
}

// ---------------------------------------------------------------------------------------------
// uploads

function addFiles(fileList) {
  const files = Array.from(fileList || []);
  for (const file of files) {
    const item = { file, id: null, etag: null, doc: null, local: "waiting", error: "" };
    item.progress = el("progress", { max: "1", value: "0", "aria-label": `upload of ${file.name}` });
    item.chip = chip("waiting");
    item.steps = el("ol", { class: "steps", "aria-label": "Steps" });
    item.message = el("p", { class: "error" });
    item.view = el("button", { type: "button", class: "quiet", hidden: true, text: "View" });
    item.view.addEventListener("click", () => item.doc && showDetail(item.doc, true));
    item.li = el(
      "li",
      { class: "upload", dataset: { status: "waiting", name: file.name } },
      el(
        "div",
        { class: "upload-head" },
        el("span", { class: "upload-name", text: file.name }),
        el("span", { class: "note", text: formatBytes(file.size) }),
        item.chip,
        item.view,
      ),
      item.progress,
      item.steps,
      item.message,
    );
    state.uploads.push(item);
    $("uploads").append(item.li);
  }
  if (files.length) announce(`${files.length} photo${files.length > 1 ? "s" : ""} added`);
  pumpUploads();
}

function pumpUploads() {
  while (state.uploading < PARALLEL_UPLOADS) {
    const next = state.uploads.find((item) => item.local === "waiting");
    if (!next) return;
    state.uploading += 1;
    next.local = "uploading";
    const session = state.session;
    uploadOne(next, session).finally(() => {
      if (session !== state.session) return;
      state.uploading -= 1;
      pumpUploads();
    });
  }
}

function setItemStatus(item, status, message = "") {
  item.li.dataset.status = status;
  item.chip.dataset.status = status;
  item.chip.textContent = status;
  item.message.textContent = message;
}

async function uploadOne(item, session) {
  setItemStatus(item, "uploading");
  try {
    const contentType = contentTypeOf(item.file);
    if (!contentType) throw new Error("not a supported image type (JPEG, PNG, WebP, GIF, TIFF…)");
    const { data: grant } = await api("/api/uploads", {
      method: "POST",
      body: { name: item.file.name, content_type: contentType, size: item.file.size },
    });
    if (session !== state.session) return;
    item.id = grant.id;
    item.li.dataset.id = grant.id;
    await putBlob(item, grant);
    item.progress.value = 1;
    item.local = "uploaded";
    setItemStatus(item, "queued");
  } catch (error) {
    if (session !== state.session) return;
    item.local = "error";
    setItemStatus(item, "error", error.message || String(error));
    announce(`${item.file.name}: ${error.message}`);
    return;
  }
  follow(item, session); // not awaited: the next upload may start
}

function putBlob(item, grant) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(grant.method || "PUT", grant.upload_url);
    for (const [name, value] of Object.entries(grant.headers || {})) {
      if (!FORBIDDEN_HEADERS.has(name.toLowerCase())) xhr.setRequestHeader(name, String(value));
    }
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && event.total > 0) item.progress.value = event.loaded / event.total;
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else reject(new Error(`storage refused the upload (HTTP ${xhr.status})`));
    });
    xhr.addEventListener("error", () => reject(new Error("upload failed: storage unreachable")));
    xhr.addEventListener("timeout", () => reject(new Error("upload timed out")));
    xhr.send(item.file);
  });
}

// Poll the image's document (with its ETag) until its status is final. Each image is polled
// about once a second; with many in flight the interval grows so that all of them together stay
// under the API's per-caller rate (~2 requests a second).
let following = 0;
async function follow(item, session) {
  following += 1;
  try {
    await followLoop(item, session);
  } finally {
    following -= 1;
  }
}

async function followLoop(item, session) {
  const started = Date.now();
  while (session === state.session) {
    let wait = Math.max(POLL_MS, following * POLL_SHARE_MS);
    try {
      const response = await api(imagePath(item.id), { etag: item.etag });
      if (session !== state.session) return;
      if (response.status !== 304 && response.data) {
        item.etag = response.etag;
        item.doc = response.data;
        if (!item.stale || item.doc.updated_at !== item.stale.updatedAt) renderUpload(item);
        if (state.detail?.id === item.id) showDetail(item.doc, false);
        else if (item.doc.status === "done" && !state.detail) showDetail(item.doc, false);
      }
      const stale =
        item.stale && item.doc?.updated_at === item.stale.updatedAt && Date.now() < item.stale.until;
      if (item.doc && FINAL.has(item.doc.status) && !stale) {
        item.stale = null;
        announce(`${item.file.name}: ${item.doc.status}`);
        return;
      }
    } catch (error) {
      if (session !== state.session) return;
      if (error.status === 404 && Date.now() - started < NOT_INGESTED_GIVE_UP_MS) {
        // the upload's event has not reached the pipeline yet
      } else if (error.status === 429 || error.status === 0 || error.status >= 500) {
        wait = Math.max(wait, (error.retryAfter || 2) * 1000);
        item.message.textContent = `${error.message}; retrying`;
      } else {
        setItemStatus(item, "error", error.message);
        return;
      }
    }
    await sleep(wait);
  }
}

// After a replay, this tab's failed uploads go on: follow them again.
function refollowUploads(target) {
  for (const item of state.uploads) {
    if (!item.doc || !["failed", "rejected"].includes(item.doc.status)) continue;
    if (target?.image && target.image !== item.id) continue;
    // Until the replayed message runs, the document still says what it said before.
    item.stale = { updatedAt: item.doc.updated_at, until: Date.now() + REPLAY_WAIT_MS };
    item.etag = null;
    setItemStatus(item, "queued");
    follow(item, state.session);
  }
}

function renderUpload(item) {
  const doc = item.doc;
  setItemStatus(item, doc.status, doc.reason ? String(doc.reason) : "");
  renderSteps(item.steps, doc);
  item.view.hidden = false;
}

function renderSteps(list, doc) {
  const pending = doc.pending?.step ? stepName(doc.pending.step) : null;
  const chips = (Array.isArray(doc.route) ? doc.route : []).map((spec) => {
    const name = stepName(spec);
    const record = doc.steps?.[name];
    let status = record?.status ?? (name === pending && !FINAL.has(doc.status) ? "waiting" : "pending");
    if (!record && doc.status === "processing" && name === pending) status = "waiting";
    const ms = Number.isFinite(record?.duration_ms) ? ` ${Math.round(record.duration_ms)} ms` : "";
    return el(
      "li",
      {
        class: "step chip",
        dataset: { step: name, status },
        title: record?.reason ? String(record.reason) : null,
      },
      el("span", { class: "step-name", text: name }),
      el("span", { class: "step-status", text: ` ${status}${ms}` }),
    );
  });
  list.replaceChildren(...chips);
}

// ---------------------------------------------------------------------------------------------
// the detail panel

function showDetail(doc, focus) {
  const previous = state.detail;
  state.detail = doc;
  const panel = $("detail");
  panel.hidden = false;
  panel.dataset.id = doc.id;
  panel.dataset.status = doc.status;
  $("detail-title").textContent = displayName(doc);
  const status = $("detail-status");
  status.textContent = doc.status;
  status.dataset.status = doc.status;
  $("detail-reason").textContent = doc.reason ? String(doc.reason) : "";
  renderSteps($("detail-steps"), doc);
  renderPhoto(doc);
  renderFacts(doc);
  renderPublished(doc);
  renderSimilar(doc);
  resetDelete();
  if (focus) {
    $("detail-title").setAttribute("tabindex", "-1");
    $("detail-title").focus();
    panel.scrollIntoView({ block: "start" });
  }
  if (!FINAL.has(doc.status) && previous?.id !== doc.id && !state.uploads.some((u) => u.id === doc.id)) {
    followDetail(doc.id, state.session);
  }
}

async function followDetail(id, session) {
  let etag = null;
  for (let i = 0; i < 600 && session === state.session && state.detail?.id === id; i += 1) {
    await sleep(POLL_MS);
    try {
      const response = await api(imagePath(id), { etag });
      if (session !== state.session || state.detail?.id !== id) return;
      if (response.status !== 304 && response.data) {
        etag = response.etag;
        showDetail(response.data, false);
        if (FINAL.has(response.data.status)) return;
      }
    } catch (error) {
      if (error.status && error.status < 500 && error.status !== 429) return;
    }
  }
}

async function openImage(id) {
  try {
    const { data } = await api(imagePath(id));
    showDetail(data, true);
  } catch (error) {
    announce(`cannot open the image: ${error.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// capabilities: each declares how it is drawn (pipeline/vision/capability.py, Drawing)

const BOX_KINDS = new Set(["boxes", "text", "faces", "mask"]);

// A capability's result sits under `analysis`; a model step's under its own name, with its
// labels or objects inside.
function valueOf(capability, doc) {
  if (capability.source !== "step") return doc.analysis?.[capability.name];
  const value = doc[capability.name] || {};
  if (capability.drawing.kind === "labels") return value.labels;
  if (capability.drawing.kind === "boxes") return value.objects;
  return value;
}

// One section in the facts and, for box kinds, one toggle over the photo, per capability.
function showCapabilities(items) {
  state.capabilities = items;
  const toggles = [];
  const sections = [];
  for (const capability of items) {
    const { name, drawing } = capability;
    const body =
      drawing.kind === "faces"
        ? el("ul", { id: "faces-list", class: "plain-list faces-list" })
        : drawing.kind === "labels" || drawing.kind === "boxes" || drawing.kind === "mask"
          ? el("ul", { id: name, class: "tags" })
          : el("p", { id: name, class: drawing.kind === "text" ? "ocr" : null });
    sections.push(el("h3", { text: drawing.title }), body);
    if (!BOX_KINDS.has(drawing.kind)) continue;
    if (!(name in state.toggles)) state.toggles[name] = drawing.shown;
    const toggle = el(
      "button",
      { type: "button", class: "toggle", dataset: { kind: name }, "aria-pressed": String(state.toggles[name]) },
      `${drawing.title} `,
      el("span", { class: "count" }),
    );
    toggle.addEventListener("click", () => {
      state.toggles[name] = !state.toggles[name];
      toggle.setAttribute("aria-pressed", String(state.toggles[name]));
      drawBoxes();
    });
    toggles.push(toggle);
  }
  $("box-toggles").replaceChildren(...toggles);
  $("capability-facts").replaceChildren(...sections);
}

// What a capability puts over the photo: [{box, label, points?}].
function overlayOf(capability, doc) {
  const value = valueOf(capability, doc);
  switch (capability.drawing.kind) {
    case "faces":
      return facePeople(doc).map((f) => ({ box: f.box, label: f.label, points: f.points }));
    case "boxes":
      return (Array.isArray(value) ? value : []).map((o) => ({ box: o.box, label: `${labelOf(o)} ${formatScore(o.score)}` }));
    case "text":
      return textOf({ text: value }).lines.map((l) => ({ box: l.box, label: String(l.text ?? "") }));
    case "mask":
      return doc.links?.masks?.[capability.name] ? [{ mask: doc.links.masks[capability.name] }] : [];
    default:
      return [];
  }
}

function renderCapability(capability, doc) {
  const { name, drawing } = capability;
  const value = valueOf(capability, doc);
  if (drawing.kind === "faces") {
    renderFaceList(doc);
  } else if (drawing.kind === "labels" || drawing.kind === "boxes") {
    const items = (Array.isArray(value) ? value : []).map((t) =>
      el("li", { class: "tag" }, labelOf(t), el("span", { class: "score", text: ` ${formatScore(t.score)}` })),
    );
    $(name).replaceChildren(...(items.length ? items : [el("li", { class: "note", text: "none" })]));
  } else if (drawing.kind === "verdict") {
    const node = $(name);
    if (value && typeof value === "object") {
      const verdict = String(value.verdict ?? "unknown");
      const extra = Object.entries(value)
        .filter(([k, v]) => k !== "verdict" && k !== "score" && (typeof v === "string" || typeof v === "number" || typeof v === "boolean"))
        .map(([k, v]) => `${k}: ${v}`);
      node.replaceChildren(
        el("span", { class: "verdict", dataset: { verdict }, text: verdict }),
        Number.isFinite(value.score) ? ` score ${value.score.toFixed(3)}` : "",
        extra.length ? ` (${extra.join(", ")})` : "",
      );
    } else {
      node.textContent = "not checked";
    }
  } else if (drawing.kind === "text") {
    $(name).textContent = textOf({ text: value }).full.trim() || "none found";
  } else if (drawing.kind === "sentence") {
    $(name).textContent = String(value?.text ?? "").trim() || "none";
  } else if (drawing.kind === "mask") {
    const shares = Object.entries(value?.coverage || {}).sort((a, b) => b[1] - a[1]);
    const items = shares.map(([label, share]) =>
      el("li", { class: "tag" }, label, el("span", { class: "score", text: ` ${formatScore(share)}` })),
    );
    $(name).replaceChildren(...(items.length ? items : [el("li", { class: "note", text: "none" })]));
  }
}

function renderPhoto(doc) {
  const img = $("photo");
  const url = doc.links?.original || doc.links?.thumbnail || null;
  const caption = $("photo-caption");
  for (const capability of state.capabilities) {
    const toggle = $("box-toggles").querySelector(`.toggle[data-kind="${capability.name}"]`);
    if (toggle) toggle.querySelector(".count").textContent = `(${overlayOf(capability, doc).length})`;
  }
  if (!url) {
    $("stage").hidden = true;
    state.photoFor = null;
    img.removeAttribute("src");
    caption.textContent = FINAL.has(doc.status) ? "No picture to show." : "The picture appears when the image is processed.";
    drawBoxes();
    return;
  }
  $("stage").hidden = false;
  const size = doc.image ? `${doc.image.width} × ${doc.image.height} px, ${doc.image.format ?? ""}` : "";
  caption.textContent = size;
  // A read URL carries a fresh signature on every GET: reload only for another image.
  if (state.photoFor !== doc.id || !img.getAttribute("src")) {
    state.photoFor = doc.id;
    $("boxes").dataset.boxes = "[]";
    $("boxes").dataset.ready = "false";
    img.alt = `Photo ${displayName(doc)}`;
    img.src = url;
  } else {
    drawBoxes();
  }
}

// Boxes are [x, y, w, h] in upright original pixels (doc.image.width × height); the browser
// shows the photo upright too (image-orientation: from-image), so scaling to the drawn size
// is all that is needed. The drawn boxes are published on the canvas as data-boxes (CSS px).
function drawBoxes() {
  const img = $("photo");
  const canvas = $("boxes");
  const doc = state.detail;
  const ctx = canvas.getContext("2d");
  const width = img.clientWidth;
  const height = img.clientHeight;
  if (!doc || !img.getAttribute("src") || !img.complete || !img.naturalWidth || !width) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    canvas.dataset.boxes = "[]";
    return;
  }
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const sourceWidth = doc.image?.width || img.naturalWidth;
  const sourceHeight = doc.image?.height || img.naturalHeight;
  const sx = width / sourceWidth;
  const sy = height / sourceHeight;
  const drawn = [];
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "top";
  // the first capability's boxes (faces) are drawn last, on top
  for (const capability of [...state.capabilities].reverse()) {
    const kind = capability.name;
    if (!BOX_KINDS.has(capability.drawing.kind) || !state.toggles[kind]) continue;
    const colour = capability.drawing.colour || "#ffffff";
    if (capability.drawing.kind === "mask") {
      if (drawMask(ctx, capability, doc, width, height)) drawn.push({ kind, index: 0, label: "mask" });
      continue;
    }
    overlayOf(capability, doc).forEach((item, index) => {
      if (!isBox(item.box)) return;
      const [x, y, w, h] = item.box;
      const box = { kind, index, label: item.label, x: x * sx, y: y * sy, w: w * sx, h: h * sy };
      ctx.lineWidth = 2;
      ctx.strokeStyle = colour;
      ctx.strokeRect(box.x, box.y, box.w, box.h);
      if (Array.isArray(item.points)) {
        ctx.fillStyle = colour;
        for (const point of item.points) {
          if (Array.isArray(point) && point.length >= 2) {
            ctx.fillRect(point[0] * sx - 1.5, point[1] * sy - 1.5, 3, 3);
          }
        }
      }
      if (item.label) {
        const textWidth = ctx.measureText(item.label).width + 6;
        const ty = box.y >= 16 ? box.y - 16 : box.y;
        ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
        ctx.fillRect(box.x, ty, textWidth, 16);
        ctx.fillStyle = colour;
        ctx.fillText(item.label, box.x + 3, ty + 2);
      }
      drawn.push({
        ...box,
        x: round2(box.x),
        y: round2(box.y),
        w: round2(box.w),
        h: round2(box.h),
      });
    });
  }
  canvas.dataset.boxes = JSON.stringify(drawn);
  canvas.dataset.width = String(width);
  canvas.dataset.height = String(height);
  canvas.dataset.ready = "true";
}

const round2 = (n) => Math.round(n * 100) / 100;

// A segmenting model step's mask (a palette PNG at the photo's size) over the photo, half
// transparent; loaded once per image and drawn again when it arrives.
const masks = new Map(); // read URL → HTMLImageElement
function drawMask(ctx, capability, doc, width, height) {
  const url = doc.links?.masks?.[capability.name];
  if (!url) return false;
  let image = masks.get(url);
  if (!image) {
    image = new Image();
    image.addEventListener("load", drawBoxes);
    image.src = url;
    masks.set(url, image);
  }
  if (!image.complete || !image.naturalWidth) return false;
  ctx.save();
  ctx.globalAlpha = 0.45;
  ctx.drawImage(image, 0, 0, width, height);
  ctx.restore();
  return true;
}

function renderFacts(doc) {
  const analysis = doc.analysis || {};
  for (const capability of state.capabilities) renderCapability(capability, doc);

  const exif = doc.exif && typeof doc.exif === "object" ? doc.exif : {};
  const rows = [];
  for (const [name, value] of Object.entries(exif)) {
    if (value === null || typeof value === "object") continue;
    rows.push(el("dt", { text: name.replaceAll("_", " ") }), el("dd", { text: String(value) }));
  }
  $("exif").replaceChildren(...(rows.length ? rows : [el("dt", { text: "none" }), el("dd")]));

  const gps = doc.gps;
  $("gps-block").hidden = !gps;
  if (gps) {
    const parts = [`${Number(gps.lat).toFixed(5)}, ${Number(gps.lon).toFixed(5)}`];
    if (Number.isFinite(gps.alt)) parts.push(`altitude ${Math.round(gps.alt)} m`);
    $("gps").textContent = parts.join(" · ");
  }

  const errors = analysis.errors && typeof analysis.errors === "object" ? analysis.errors : {};
  $("analysis-errors").textContent = Object.entries(errors)
    .map(([capability, why]) => `${capability}: ${typeof why === "string" ? why : JSON.stringify(why)}`)
    .join("; ");
}

function renderPublished(doc) {
  const img = $("published");
  const caption = $("published-caption");
  const published = doc.published;
  const url = doc.links?.published || null;
  if (url) {
    if (img.dataset.for !== doc.id) {
      img.dataset.for = doc.id;
      img.src = url;
    }
    img.hidden = false;
    const anonymised = published?.anonymised;
    const parts = [];
    if (published?.width) parts.push(`${published.width} × ${published.height} px`);
    if (anonymised) {
      const how = { blur: "blurred", pixelate: "pixelated" }[anonymised.mode] ?? "hidden";
      const counts = [
        [anonymised.faces, "face"],
        [anonymised.text_regions, "text region"],
      ]
        .filter(([n]) => Number(n) > 0)
        .map(([n, noun]) => `${n} ${noun}${Number(n) === 1 ? "" : "s"}`);
      parts.push(counts.length ? `${counts.join(" and ")} ${how}` : "no face hidden");
    }
    parts.push("no location");
    caption.textContent = parts.join(" · ");
  } else {
    img.hidden = true;
    img.removeAttribute("src");
    delete img.dataset.for;
    caption.textContent = published?.withheld
      ? `Withheld: ${published.withheld}`
      : FINAL.has(doc.status) ? "Not published." : "Not yet.";
  }
}

function resetDelete() {
  const button = $("detail-delete");
  button.dataset.confirm = "false";
  button.textContent = "Delete image";
}

async function deleteShown() {
  const button = $("detail-delete");
  const doc = state.detail;
  if (!doc) return;
  if (button.dataset.confirm !== "true") {
    button.dataset.confirm = "true";
    button.textContent = "Really delete? Press again";
    return;
  }
  try {
    await api(imagePath(doc.id), { method: "DELETE" });
    announce(`${displayName(doc)} deleted`);
    closeDetail();
    for (const item of state.uploads.filter((u) => u.id === doc.id)) item.li.remove();
    state.uploads = state.uploads.filter((u) => u.id !== doc.id);
    for (const li of $("library").querySelectorAll("li")) if (li.dataset.id === doc.id) li.remove();
  } catch (error) {
    button.textContent = `Delete failed: ${error.message}`;
    button.dataset.confirm = "false";
  }
}

function closeDetail() {
  state.detail = null;
  state.photoFor = null;
  state.similarFor = null;
  $("detail").hidden = true;
  $("photo").removeAttribute("src");
  drawBoxes();
}

// ---------------------------------------------------------------------------------------------
// my images

async function loadLibrary(reset) {
  const list = $("library");
  const more = $("library-more");
  if (reset) {
    const text = $("search-text").value.trim();
    const by = $("search-by").value;
    const status = $("search-status").value;
    const object = $("search-object").value.trim();
    const person = $("search-person").value;
    const moderation = $("search-moderation").value;
    const owner = state.me?.admin ? $("search-owner").value : "me";
    state.library = { continuation: null, query: {} };
    if (owner !== "me") state.library.query.owner = owner;
    if (text) state.library.query[by] = text;
    if (status) state.library.query.status = status;
    if (object) state.library.query.object = object;
    if (person) state.library.query.person = person;
    if (moderation) state.library.query.moderation = moderation;
  }
  const params = new URLSearchParams({ ...state.library.query, limit: String(LIBRARY_PAGE) });
  if (!reset && state.library.continuation) params.set("continuation", state.library.continuation);
  $("library-error").textContent = "";
  if (reset) $("library-note").textContent = "";
  $("library-title").textContent = state.library.query.owner === "none" ? "Operator uploads" : "My images";
  list.setAttribute("aria-busy", "true");
  try {
    const { data } = await api(`/api/images?${params}`);
    const items = Array.isArray(data?.items) ? data.items : [];
    if (reset && !items.length && !state.ownerChosen && state.me?.admin && !Object.keys(state.library.query).length) {
      // An admin with no images of their own: show the operator's (make run, pipeline submit).
      state.ownerChosen = true;
      $("search-owner").value = "none";
      await loadLibrary(true);
      $("library-note").textContent =
        "You have no images of your own yet: these are operator uploads (make run, python -m pipeline submit), which have no owner.";
      return;
    }
    if (reset) list.replaceChildren();
    for (const doc of items) list.append(libraryItem(doc));
    if (reset && !items.length) list.append(el("li", { class: "note", text: "No images match." }));
    state.library.continuation = data?.continuation ?? null;
    more.hidden = !state.library.continuation;
  } catch (error) {
    $("library-error").textContent = error.message;
  } finally {
    list.removeAttribute("aria-busy");
  }
}

function libraryItem(doc) {
  const name = displayName(doc);
  const thumb = doc.links?.thumbnail
    ? el("img", { class: "thumb", src: doc.links.thumbnail, alt: "", loading: "lazy" })
    : el("span", { class: "thumb thumb-empty", "aria-hidden": "true" });
  const tags = (doc.analysis?.tags || []).slice(0, 3).map(labelOf).join(", ");
  const open = el("button", { type: "button", class: "link", text: name });
  open.addEventListener("click", () => openImage(doc.id));
  return el(
    "li",
    { class: "library-item", dataset: { id: doc.id, status: doc.status } },
    thumb,
    el("div", { class: "library-text" }, open, el("span", { class: "note", text: tags })),
    chip(doc.status),
  );
}

// ---------------------------------------------------------------------------------------------
// faces and people in the image view

const plural = (n, noun) => `${n} ${noun}${Number(n) === 1 ? "" : "s"}`;

function personName(person) {
  return person?.name ? String(person.name) : "Unnamed";
}

// One entry per analysis.faces[i]: its box and who it is. recognition.faces[].face indexes
// analysis.faces; a person with no name is "person 1", "person 2"… within this image.
function facePeople(doc) {
  const faces = Array.isArray(doc?.analysis?.faces) ? doc.analysis.faces : [];
  const recognition = doc?.recognition && typeof doc.recognition === "object" ? doc.recognition : null;
  const entries = Array.isArray(recognition?.faces) ? recognition.faces : [];
  const byIndex = new Map();
  entries.forEach((entry, i) => byIndex.set(Number.isInteger(entry?.face) ? entry.face : i, entry));
  const numbers = new Map();
  return faces.map((face, index) => {
    const base = { index, box: face.box, points: face.landmarks, score: face.score };
    if (!recognition) return { ...base, label: `face ${formatScore(face.score)}`, entry: null };
    const entry = byIndex.get(index) ?? null;
    const person = entry?.person ? String(entry.person) : null;
    if (entry?.hide) return { ...base, entry, person: null, label: "hidden" };
    if (person) {
      const name = entry.person_name ?? state.people.get(person)?.name ?? null;
      if (name) return { ...base, entry, person, name: String(name), label: String(name) };
      if (!numbers.has(person)) numbers.set(person, numbers.size + 1);
      return { ...base, entry, person, label: `person ${numbers.get(person)}` };
    }
    return { ...base, entry, person: null, label: "unknown" };
  });
}

function renderFaceList(doc) {
  const list = $("faces-list");
  const faces = facePeople(doc);
  const recognition = doc.recognition;
  if (!faces.length) {
    const why = recognition?.reason ? ` (${recognition.reason})` : "";
    list.replaceChildren(el("li", { class: "note", text: `none${why}` }));
    return;
  }
  list.replaceChildren(
    ...faces.map((face) => {
      const entry = face.entry;
      const notes = [];
      if (!recognition) notes.push(FINAL.has(doc.status) ? "not recognised (no recognize step)" : "not recognised yet");
      else if (!entry) notes.push("not looked at");
      else if (entry.hide) notes.push("hidden in the published copy (consent withdrawn)");
      else if (!entry.usable) notes.push(`not used for matching: ${entry.reason ?? "unknown reason"}`);
      else if (!face.person) notes.push("no person yet");
      let who = el("span", { class: "face-who", text: recognition ? face.label : `detected ${formatScore(face.score)}` });
      if (face.person) {
        who = el("button", {
          type: "button",
          class: "link face-who",
          text: face.label,
          "aria-label": `Open ${face.label} in People`,
        });
        const person = face.person;
        who.addEventListener("click", () => {
          showView("people");
          openPerson(person, true);
        });
      }
      return el(
        "li",
        {
          class: "face-item",
          dataset: {
            face: String(face.index),
            person: face.person ?? "",
            usable: String(Boolean(entry?.usable)),
          },
        },
        el("span", { class: "face-n", text: `Face ${face.index + 1}: ` }),
        who,
        notes.length ? el("span", { class: "note face-reason", text: ` — ${notes.join("; ")}` }) : "",
      );
    }),
  );
}

async function renderSimilar(doc) {
  const block = $("similar-block");
  // Near-duplicates are looked up among the caller's own images, once the hash exists.
  if (!doc.image?.phash || doc.owner !== state.me?.id) {
    block.hidden = true;
    state.similarFor = null;
    return;
  }
  if (state.similarFor === doc.id) return;
  state.similarFor = doc.id;
  const list = $("similar");
  try {
    const { data } = await api(`${imagePath(doc.id)}/similar`);
    if (state.detail?.id !== doc.id) return;
    const items = Array.isArray(data?.items) ? data.items : [];
    list.replaceChildren(...items.map((item) => imageTile(item.id, item.name, item.links?.thumbnail, `${plural(item.distance, "bit")} apart`)));
    if (!items.length) list.append(el("li", { class: "note", text: "No near-duplicates." }));
    block.hidden = false;
  } catch {
    if (state.detail?.id === doc.id) block.hidden = true;
  }
}

// A thumbnail that opens the image view.
function imageTile(id, name, thumbnail, note) {
  const label = String(name || id);
  const open = el(
    "button",
    { type: "button", class: "tile", dataset: { id: String(id) }, "aria-label": `Open ${label}` },
    thumbnail
      ? el("img", { class: "thumb", src: thumbnail, alt: "", loading: "lazy" })
      : el("span", { class: "thumb thumb-empty", "aria-hidden": "true" }),
    el("span", { class: "tile-name", text: label }),
    note ? el("span", { class: "note", text: note }) : "",
  );
  open.addEventListener("click", () => openImage(id));
  return el("li", { dataset: { id: String(id) } }, open);
}

// ---------------------------------------------------------------------------------------------
// face crops: the box of a face, cut from the image's thumbnail (or original when the face is
// small there) onto a small canvas. Documents and pictures are cached: a person's faces often
// share images.

function cachedDoc(id) {
  const hit = state.docs.get(id);
  if (hit && Date.now() - hit.at < DOC_CACHE_MS) return hit.promise;
  const promise = api(imagePath(id)).then(({ data }) => data);
  state.docs.set(id, { at: Date.now(), promise });
  promise.catch(() => state.docs.delete(id));
  return promise;
}

function primeDoc(doc) {
  if (doc?.id && doc.links) state.docs.set(doc.id, { at: Date.now(), promise: Promise.resolve(doc) });
}

function loadPicture(url) {
  if (!state.pictures.has(url)) {
    const picture = new Promise((resolve, reject) => {
      const img = new Image();
      img.addEventListener("load", () => resolve(img));
      img.addEventListener("error", () => {
        state.pictures.delete(url);
        reject(new Error("the picture could not be loaded"));
      });
      img.src = url;
    });
    state.pictures.set(url, picture);
  }
  return state.pictures.get(url);
}

function faceCrop(image, box, label) {
  const ratio = window.devicePixelRatio || 1;
  const canvas = el("canvas", {
    class: "crop",
    width: String(Math.round(CROP_SIDE * ratio)),
    height: String(Math.round(CROP_SIDE * ratio)),
    dataset: { image: String(image), ready: "false" },
  });
  if (label) {
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", label);
  } else {
    canvas.setAttribute("aria-hidden", "true");
  }
  drawCrop(canvas, image, box).catch(() => {
    canvas.dataset.ready = "error";
    canvas.title = "no picture";
  });
  return canvas;
}

async function drawCrop(canvas, image, box) {
  const doc = await cachedDoc(image);
  const width = doc?.image?.width;
  const height = doc?.image?.height;
  if (!isBox(box) || !width || !height) throw new Error("no box");
  const [x, y, w, h] = box;
  // a square around the face with some margin, inside the picture
  const side = Math.min(Math.max(w, h) * 1.5, width, height);
  const left = Math.min(Math.max(x + w / 2 - side / 2, 0), width - side);
  const top = Math.min(Math.max(y + h / 2 - side / 2, 0), height - side);
  const thumbWidth = doc.derived?.thumbnail?.width || 0;
  const small = thumbWidth && (side * thumbWidth) / width < CROP_THUMB_MIN;
  const url = (small && doc.links?.original) || doc.links?.thumbnail || doc.links?.original;
  if (!url) throw new Error("no picture");
  const picture = await loadPicture(url);
  // both are upright (the thumbnail is made upright; the browser applies EXIF to originals)
  const k = picture.naturalWidth / width;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(picture, left * k, top * k, side * k, side * k, 0, 0, canvas.width, canvas.height);
  canvas.dataset.ready = "true";
  canvas.dataset.source = url === doc.links?.thumbnail ? "thumbnail" : "original";
}

// ---------------------------------------------------------------------------------------------
// people

let peopleLoading = null;
async function loadPeople() {
  if (peopleLoading) return peopleLoading;
  peopleLoading = loadPeopleNow().finally(() => {
    peopleLoading = null;
  });
  return peopleLoading;
}

async function loadPeopleNow() {
  const list = $("people");
  const session = state.session;
  $("people-error").textContent = "";
  list.setAttribute("aria-busy", "true");
  try {
    const { data } = await api("/api/people");
    if (session !== state.session) return;
    const items = Array.isArray(data?.items) ? data.items : [];
    setPeople(items);
    const cards = items.map(personCard);
    list.replaceChildren(...cards);
    if (!items.length) {
      list.append(el("li", { class: "note", text: "No people yet: upload photos with faces." }));
    }
    list.dataset.count = String(items.length);
    loadCovers(cards, session);
  } catch (error) {
    if (session === state.session) $("people-error").textContent = error.message;
  } finally {
    list.removeAttribute("aria-busy");
  }
}

function setPeople(items) {
  state.people = new Map(items.map((p) => [String(p.id), p]));
  state.peopleLoaded = true;
  fillPersonFilter();
}

async function refreshPeopleFilter() {
  try {
    const { data } = await api("/api/people");
    setPeople(Array.isArray(data?.items) ? data.items : []);
  } catch {
    // the filter stays as it was
  }
}

function fillPersonFilter() {
  const select = $("search-person");
  const chosen = select.value;
  const options = [...state.people.values()].map((p) =>
    el("option", { value: String(p.id), text: `${personName(p)} (${plural(p.images ?? 0, "image")})` }),
  );
  select.replaceChildren(el("option", { value: "", text: "anyone" }), ...options);
  select.value = state.people.has(chosen) ? chosen : "";
}

function personCounts(p) {
  return `${plural(p.faces ?? 0, "face")} · ${plural(p.images ?? 0, "image")}`;
}

function personCard(p) {
  const id = String(p.id);
  const name = personName(p);
  const drawn = state.covers.get(id);
  const cover =
    drawn && p.cover && drawn.face === p.cover && drawn.canvas.dataset.ready === "true"
      ? drawn.canvas
      : el("span", { class: "crop crop-empty", "aria-hidden": "true" });
  const open = el(
    "button",
    { type: "button", class: "person-open", "aria-label": `Open ${name}` },
    cover,
    el("span", { class: "person-name", text: name }),
  );
  open.addEventListener("click", () => openPerson(id, true));

  const input = el("input", {
    id: `name-${id}`,
    type: "text",
    value: p.name ?? "",
    placeholder: "Name",
    maxlength: "100",
    autocomplete: "off",
    spellcheck: "false",
  });
  const rename = el(
    "form",
    { class: "inline-form rename" },
    el("label", { for: `name-${id}`, class: "visually-hidden", text: `Name of ${name}` }),
    input,
    el("button", { type: "submit", text: "Save" }),
  );
  rename.addEventListener("submit", (event) => {
    event.preventDefault();
    renamePerson(id, input.value.trim());
  });

  const others = [...state.people.values()].filter((o) => String(o.id) !== id && o.model === p.model);
  const select = el(
    "select",
    { id: `merge-${id}` },
    el("option", { value: "", text: "Same person as…" }),
    ...others.map((o) => el("option", { value: String(o.id), text: `${personName(o)} (${personCounts(o)})` })),
  );
  const merge = el(
    "form",
    { class: "inline-form merge", hidden: !others.length },
    el("label", { for: `merge-${id}`, class: "visually-hidden", text: `Merge another person into ${name}` }),
    select,
    el("button", { type: "submit", text: "Merge" }),
  );
  merge.addEventListener("submit", (event) => {
    event.preventDefault();
    if (select.value) mergePeople(id, select.value);
    else select.focus();
  });

  return el(
    "li",
    { class: "person-card", dataset: { id, name: p.name ?? "", faces: String(p.faces ?? 0) } },
    open,
    el("span", { class: "note person-counts", text: personCounts(p) }),
    rename,
    merge,
  );
}

// The list names each person's cover face; its image and box come with the person.
async function loadCovers(cards, session) {
  const queue = cards.filter((card) => card.querySelector(".crop-empty") && state.people.get(card.dataset.id)?.faces);
  const worker = async () => {
    while (queue.length && session === state.session) {
      const card = queue.shift();
      const id = card.dataset.id;
      const person = state.people.get(id);
      try {
        const { data } = await api(`/api/people/${encodeURIComponent(id)}`);
        const faces = Array.isArray(data?.face_list) ? data.face_list : [];
        const face = faces.find((f) => f.face_id === person?.cover) ?? faces[0];
        const slot = card.querySelector(".crop");
        if (face && slot && card.isConnected) {
          const canvas = faceCrop(face.image, face.box, null);
          slot.replaceWith(canvas);
          state.covers.set(id, { face: face.face_id, canvas });
        }
      } catch {
        // no cover: the card keeps its empty square
      }
    }
  };
  await Promise.all(Array.from({ length: COVER_WORKERS }, worker));
}

function peopleMessage(text) {
  $("people-message").textContent = text;
  announce(text);
}

async function renamePerson(id, name) {
  $("people-error").textContent = "";
  try {
    const { data } = await api(`/api/people/${encodeURIComponent(id)}`, {
      method: "PATCH",
      body: { name: name || null },
    });
    const person = { ...state.people.get(id), ...data };
    state.people.set(id, person);
    const shown = personName(person);
    for (const card of $("people").querySelectorAll(".person-card")) {
      if (card.dataset.id === id) {
        card.dataset.name = person.name ?? "";
        card.querySelector(".person-name").textContent = shown;
        card.querySelector(".person-open").setAttribute("aria-label", `Open ${shown}`);
        card.querySelector("label").textContent = `Name of ${shown}`;
      } else {
        for (const option of card.querySelectorAll("select option")) {
          if (option.value === id) option.textContent = `${shown} (${personCounts(person)})`;
        }
      }
    }
    fillPersonFilter();
    if (state.personId === id) $("person-title").textContent = shown;
    peopleMessage(person.name ? `Named ${shown}.` : "Name removed.");
    if (state.detail) refreshDetail();
  } catch (error) {
    $("people-error").textContent = `Rename failed: ${error.message}`;
  }
}

async function mergePeople(keep, other) {
  $("people-error").textContent = "";
  const otherName = personName(state.people.get(other));
  try {
    const { data } = await api(`/api/people/${encodeURIComponent(keep)}/merge`, {
      method: "POST",
      body: { other },
    });
    peopleMessage(
      `Merged ${otherName} into ${personName(state.people.get(keep))}: ${plural(data?.moved ?? 0, "face")} moved.`,
    );
    await loadPeople();
    if (state.personId === other || state.personId === keep) openPerson(keep, false);
    if (state.detail) refreshDetail();
  } catch (error) {
    $("people-error").textContent = `Merge failed: ${error.message}`;
  }
}

async function recluster() {
  $("people-error").textContent = "";
  try {
    const { data } = await api("/api/people/recluster", { method: "POST" });
    peopleMessage(`${plural(data?.joined ?? 0, "face")} joined a person.`);
    await loadPeople();
  } catch (error) {
    $("people-error").textContent = `Matching failed: ${error.message}`;
  }
}

async function openPerson(id, focus) {
  const panel = $("person");
  const session = state.session;
  state.personId = id;
  panel.dataset.id = id;
  panel.dataset.ready = "false";
  $("person-error").textContent = "";
  if (panel.hidden) {
    $("person-title").textContent = personName(state.people.get(id));
    $("person-faces").replaceChildren();
    $("person-images").replaceChildren();
  }
  panel.hidden = false;
  if (focus) {
    $("person-title").focus();
    panel.scrollIntoView({ block: "start" });
  }
  try {
    const path = `/api/people/${encodeURIComponent(id)}`;
    const query = new URLSearchParams({ person: id, limit: "100" });
    const [{ data: person }, { data: images }] = await Promise.all([api(path), api(`/api/images?${query}`)]);
    if (session !== state.session || state.personId !== id) return;
    const docs = Array.isArray(images?.items) ? images.items : [];
    for (const doc of docs) primeDoc(doc);
    renderPerson(person, docs);
  } catch (error) {
    if (session !== state.session || state.personId !== id) return;
    if (error.status === 404) {
      closePerson();
      peopleMessage("That person is no longer there.");
    } else {
      $("person-error").textContent = error.message;
    }
  }
}

function renderPerson(person, docs) {
  const id = String(person.id);
  const name = personName(person);
  state.people.set(id, { ...state.people.get(id), ...person });
  $("person-title").textContent = name;
  const faces = Array.isArray(person.face_list) ? person.face_list : [];
  $("person-counts").textContent = personCounts({ faces: faces.length, images: (person.image_ids || []).length });
  const names = new Map(docs.map((d) => [d.id, displayName(d)]));
  $("person-faces").replaceChildren(
    ...faces.map((face, n) => {
      const where = names.get(face.image) ?? "an image";
      const out = el("button", {
        type: "button",
        class: "take-out",
        text: "Not this person",
        "aria-label": `Face ${n + 1} (in ${where}) is not ${name}: take it out`,
      });
      const li = el(
        "li",
        { class: "person-face", dataset: { face: String(face.face_id), image: String(face.image) } },
        faceCrop(face.image, face.box, `Face ${n + 1} of ${name}, in ${where}`),
        el("span", { class: "note", text: where }),
        out,
      );
      out.addEventListener("click", () => takeOut(id, String(face.face_id), li));
      return li;
    }),
  );
  if (!faces.length) $("person-faces").append(el("li", { class: "note", text: "No faces left." }));
  const shown = new Set(docs.map((d) => d.id));
  const tiles = docs.map((d) => imageTile(d.id, displayName(d), d.links?.thumbnail, ""));
  // images the filtered listing did not give (a later page): open them by id
  for (const image of person.image_ids || []) {
    if (!shown.has(image)) tiles.push(imageTile(image, image, null, ""));
  }
  $("person-images").replaceChildren(...tiles);
  $("person").dataset.ready = "true";
}

async function takeOut(person, face, li) {
  $("person-error").textContent = "";
  const next = li.nextElementSibling?.querySelector("button") ?? li.previousElementSibling?.querySelector("button");
  try {
    await api(`/api/people/${encodeURIComponent(person)}/faces/${encodeURIComponent(face)}`, { method: "DELETE" });
    li.remove();
    (next ?? $("person-title")).focus();
    peopleMessage(`Face taken out of ${personName(state.people.get(person))}.`);
    await Promise.all([openPerson(person, false), loadPeople()]);
    if (state.detail) refreshDetail();
  } catch (error) {
    $("person-error").textContent = `Taking the face out failed: ${error.message}`;
  }
}

function closePerson() {
  state.personId = null;
  $("person").hidden = true;
}

function searchPerson(id) {
  const select = $("search-person");
  if (![...select.options].some((o) => o.value === id)) {
    select.append(el("option", { value: id, text: personName(state.people.get(id)) }));
  }
  select.value = id;
  $("search-text").value = "";
  $("search-object").value = "";
  $("search-status").value = "";
  $("search-moderation").value = "";
  $("search-owner").value = "me"; // people are the caller's own
  state.ownerChosen = true;
  showView("library");
  $("library-title").setAttribute("tabindex", "-1");
  $("library-title").focus();
}

function askForget() {
  if (!state.personId) return;
  $("forget-name").textContent = personName(state.people.get(state.personId));
  $("forget-dialog").showModal();
  $("forget-cancel").focus();
}

async function forgetPerson() {
  const id = state.personId;
  const dialog = $("forget-dialog");
  if (!id) {
    dialog.close();
    return;
  }
  const name = personName(state.people.get(id));
  try {
    const { data } = await api(`/api/people/${encodeURIComponent(id)}`, { method: "DELETE" });
    dialog.close();
    closePerson();
    peopleMessage(
      `${name} forgotten: ${plural(data?.faces_deleted ?? 0, "face embedding")} deleted; ` +
        `${plural(data?.images_remade ?? 0, "image")} being published again with the face hidden.`,
    );
    await loadPeople();
    $("people-title").setAttribute("tabindex", "-1");
    $("people-title").focus();
  } catch (error) {
    dialog.close();
    $("person-error").textContent = `Forgetting failed: ${error.message}`;
  }
}

// The open image again (its people changed).
async function refreshDetail() {
  const id = state.detail?.id;
  if (!id) return;
  try {
    const { data } = await api(imagePath(id));
    if (state.detail?.id === id && data) showDetail(data, false);
  } catch {
    // it stays as it was
  }
}

// ---------------------------------------------------------------------------------------------
// operations (admin)

function startOpsRefresh() {
  stopOpsRefresh();
  loadOps();
  state.opsTimer = setInterval(() => {
    if (!document.hidden) loadOps();
  }, OPS_REFRESH_MS);
}

function stopOpsRefresh() {
  if (state.opsTimer) clearInterval(state.opsTimer);
  state.opsTimer = null;
}

let opsLoading = false;
async function loadOps() {
  if (opsLoading) return;
  opsLoading = true;
  const session = state.session;
  try {
    const [queues, poison, failed] = await Promise.all([
      api("/api/ops/queues"),
      api("/api/ops/poison"),
      api("/api/ops/failed"),
    ]);
    if (session !== state.session) return;
    $("ops-error").textContent = "";
    renderQueues(queues.data?.queues || []);
    renderPoison(poison.data?.items || []);
    renderFailed(failed.data?.items || []);
    $("view-ops").dataset.loaded = String(Date.now());
  } catch (error) {
    if (session === state.session) $("ops-error").textContent = error.message;
  } finally {
    opsLoading = false;
  }
}

// POST /api/ops/replay takes {} (every poison queue), {step} or {image}.
function replayButton(target, label, name) {
  const button = el("button", {
    type: "button",
    class: "replay",
    dataset: target,
    text: label,
    "aria-label": name,
  });
  button.addEventListener("click", () => replay(target));
  return button;
}

function renderQueues(queues) {
  const rows = queues.map((q) =>
    el(
      "tr",
      { dataset: { queue: String(q.queue), step: String(q.step), lane: String(q.lane) } },
      el("td", { text: q.step }),
      el("td", { text: q.lane }),
      el("td", { class: "mono", text: q.queue }),
      el("td", { class: "num depth", text: q.depth ?? "?" }),
      el("td", {
        class: `num poison${q.poison > 0 ? " hot" : ""}`,
        title: q.poison_queue ? String(q.poison_queue) : null,
        text: q.poison ?? "?",
      }),
      el(
        "td",
        {},
        q.poison > 0 ? replayButton({ step: String(q.step) }, "Replay", `Replay ${q.step}'s poison messages`) : "",
      ),
    ),
  );
  $("ops-queues").tBodies[0].replaceChildren(...rows);
}

function renderPoison(items) {
  $("ops-poison-empty").hidden = items.length > 0;
  $("ops-poison").replaceChildren(
    ...items.map((p) =>
      el(
        "li",
        { class: "ops-item", dataset: { imageId: String(p.image_id ?? ""), queue: String(p.queue ?? "") } },
        el("span", { class: "mono", text: p.queue }),
        " ",
        el("span", { text: `${p.step ?? "?"} (${p.lane ?? "live"})` }),
        " ",
        p.document_status ? chip(p.document_status) : "",
        p.image_id ? replayButton({ image: String(p.image_id) }, "Replay", `Replay image ${p.image_id}`) : "",
        el("p", { class: "note", text: [p.image_id, p.problem, p.document_reason].filter(Boolean).join(" · ") }),
      ),
    ),
  );
}

function renderFailed(items) {
  $("ops-failed-empty").hidden = items.length > 0;
  $("ops-failed").replaceChildren(
    ...items.map((f) => {
      const open = el("button", { type: "button", class: "link", text: displayName(f) });
      open.addEventListener("click", () => openImage(f.id));
      return el(
        "li",
        { class: "ops-item", dataset: { id: String(f.id), status: String(f.status) } },
        open,
        " ",
        chip(f.status),
        f.step ? el("span", { class: "note", text: ` at ${f.step}` }) : "",
        el("p", { class: "reason", text: f.reason ?? "" }),
      );
    }),
  );
}

async function replay(target) {
  const message = $("ops-message");
  message.textContent = "Replaying…";
  $("ops-error").textContent = "";
  try {
    const { data } = await api("/api/ops/replay", { method: "POST", body: target || {} });
    const n = Number(data?.replayed ?? 0);
    const what = target?.step ? ` from ${target.step}` : target?.image ? ` for ${target.image}` : "";
    const others = [];
    if (data?.skipped) others.push(`${data.skipped} skipped`);
    if (data?.unreadable) others.push(`${data.unreadable} unreadable`);
    message.textContent =
      `Replayed ${n} message${n === 1 ? "" : "s"}${what}.` + (others.length ? ` (${others.join(", ")})` : "");
    if (n > 0) refollowUploads(target);
  } catch (error) {
    message.textContent = "";
    $("ops-error").textContent = `Replay failed: ${error.message}`;
  }
  loadOps();
  // Replayed messages run within seconds: look again sooner than the periodic refresh.
  for (const delay of [1000, 2500]) setTimeout(() => state.view === "ops" && loadOps(), delay);
}

// ---------------------------------------------------------------------------------------------
// wiring

function wire() {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    const error = $("sign-in-error");
    if (!key) {
      error.textContent = "Enter your API key.";
      return;
    }
    error.textContent = "";
    try {
      await signIn(key);
    } catch (e) {
      error.textContent = e.status === 401 || e.status === 403 ? "That key was not accepted." : e.message;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }

  const input = $("file-input");
  $("choose").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragenter", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("over");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    addFiles(event.dataTransfer?.files);
  });
  // A photo dropped beside the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  $("photo").addEventListener("load", drawBoxes);
  $("photo").addEventListener("error", () => {
    $("photo-caption").textContent = "The picture could not be loaded.";
    drawBoxes();
  });
  new ResizeObserver(() => drawBoxes()).observe($("photo"));
  $("detail-close").addEventListener("click", closeDetail);
  $("detail-delete").addEventListener("click", deleteShown);

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadLibrary(true);
  });
  $("library-more").addEventListener("click", () => loadLibrary(false));
  $("search-owner").addEventListener("change", () => {
    state.ownerChosen = true;
    loadLibrary(true);
  });

  $("people-refresh").addEventListener("click", loadPeople);
  $("people-recluster").addEventListener("click", recluster);
  $("person-close").addEventListener("click", closePerson);
  $("person-search").addEventListener("click", () => state.personId && searchPerson(state.personId));
  $("person-forget").addEventListener("click", askForget);
  $("forget-cancel").addEventListener("click", () => $("forget-dialog").close());
  $("forget-confirm").addEventListener("click", forgetPerson);
  $("forget-dialog").addEventListener("close", () => $("person-forget").focus());

  $("ops-refresh").addEventListener("click", loadOps);
  $("ops-replay-all").addEventListener("click", () => replay(null));
}

async function start() {
  wire();
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (!key) {
    signOut();
    return;
  }
  try {
    await signIn(key);
  } catch (error) {
    signOut(error.status === 401 ? "" : `Cannot sign in: ${error.message}`);
  }
}

start();
