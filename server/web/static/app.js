// ragkb's web page: the script every page loads (no build step, no inline code: the CSP forbids it). The Ask
// page's conversation thread is in ask.js, which builds on the helpers here.
// Every text from users and documents is put in the page with textContent, never as HTML.
"use strict";

const KEY = "ragkb.key";
const MARKER = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g;
// The job states the API ends in (ingest/queue.py TERMINAL); any other is still under way.
const JOB_TERMINAL = ["done", "failed"];
// How long a page waits for a reviewer or a job before it stops and says so (RAGKB_WEB_WAIT_SECONDS).
const waitMs = () => Number(document.body.dataset.waitSeconds || 600) * 1000;

// -- talking to the API -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function storedKey() {
  return sessionStorage.getItem(KEY) || "";
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const key = storedKey();
  if (key) headers.Authorization = "Bearer " + key;
  return headers;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  const message = body && body.error ? body.error : "the server answered " + response.status;
  return new ApiError(response.status, body && body.code ? body.code : "http_" + response.status, message);
}

async function send(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = authHeaders(opts.headers);
  let response;
  try {
    response = await fetch(path, opts);
  } catch (_) {
    throw new ApiError(0, "unreachable", "Cannot reach the ragkb server. Is it running?");
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function getJSON(path) {
  return (await send(path)).json();
}

async function postJSON(path, body) {
  const response = await send(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.status === 204 ? null : response.json();
}

function explain(error) {
  if (!(error instanceof ApiError)) return "Something went wrong: " + error;
  if (error.status === 401) return "Sign in with a valid API key to continue (" + error.message + ").";
  if (error.status === 403) return "Your API key may not do this: " + error.message;
  if (error.status === 413) return "Too large: " + error.message;
  if (error.status === 415) return "Not accepted: " + error.message;
  return error.message;
}

// -- small page helpers ------------------------------------------------------------------------------------

function $(id) {
  return document.getElementById(id);
}

function fromTemplate(id) {
  return $(id).content.firstElementChild.cloneNode(true);
}

function setText(root, selector, text) {
  const el = root.querySelector(selector);
  if (el) el.textContent = text == null ? "" : String(text);
  return el;
}

function say(id, text, kind) {
  const el = $(id);
  if (!el) return;
  el.textContent = text || "";
  el.dataset.kind = kind || "";
}

function banner(text, withSignIn) {
  const el = $("banner");
  el.textContent = "";
  if (!text) {
    el.hidden = true;
    return;
  }
  el.append(document.createTextNode(text + " "));
  if (withSignIn && document.body.dataset.page !== "signin") {
    const link = document.createElement("a");
    link.href = "/signin";
    link.textContent = "Sign in";
    el.append(link);
  }
  el.hidden = false;
}

function reportError(error, statusId) {
  const message = explain(error);
  if (error instanceof ApiError && (error.status === 0 || error.status === 401)) {
    banner(message, error.status === 401);
  }
  if (statusId) say(statusId, message, "error");
}

// The signed-in identity (null until known): what the page shows depends on what the key may do.
let me = null;

function applyAbilities(who) {
  me = who;
  document.querySelectorAll("[data-needs]").forEach((el) => {
    el.hidden = !(who && who.can[el.dataset.needs]);
  });
  const signin = document.querySelector("[data-signin]");
  if (signin) signin.hidden = Boolean(who && who.open);
  let text = "Not signed in";
  if (who && who.open) text = "Open demo (no API keys): everything is allowed";
  else if (who) text = "Signed in as " + who.key + " (" + who.scope + ")";
  $("who").textContent = text;
}

async function identify() {
  try {
    const who = await getJSON("/v1/whoami");
    applyAbilities(who);
    banner("");
    return who;
  } catch (error) {
    applyAbilities(null);
    reportError(error);
    return null;
  }
}

function fillCollections(select, names, preferred) {
  select.textContent = "";
  names.forEach((name) => {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    option.selected = name === preferred;
    select.append(option);
  });
}

// -- Documents ------------------------------------------------------------------------------------------------

let collectionNames = [];

async function loadDocuments() {
  const root = $("collections");
  let collections;
  try {
    collections = await getJSON("/v1/collections");
  } catch (error) {
    reportError(error, "docs-status");
    return;
  }
  collectionNames = collections.map((c) => c.name);
  const datalist = $("collection-names");
  datalist.textContent = "";
  collectionNames.forEach((name) => {
    const option = document.createElement("option");
    option.value = name;
    datalist.append(option);
  });
  const blocks = [];
  for (const info of collections) {
    let docs = [];
    try {
      docs = await getJSON("/v1/ui/collections/" + encodeURIComponent(info.name) + "/documents");
    } catch (error) {
      reportError(error, "docs-status");
    }
    blocks.push(collectionBlock(info, docs));
  }
  root.textContent = "";
  blocks.forEach((b) => root.append(b));
  if (!collections.length) say("docs-status", "No collections yet: upload a document to create one.", "");
  applyAbilities(me);
}

function collectionBlock(info, docs) {
  const block = fromTemplate("collection-block");
  block.dataset.collection = info.name;
  setText(block, ".name", info.name);
  setText(block, ".count", docs.length + (docs.length === 1 ? " document" : " documents") + ", " + info.chunks + " chunks");
  const body = block.querySelector("tbody");
  docs.forEach((doc) => {
    const row = fromTemplate("document-row");
    row.dataset.document = doc.document_id;
    setText(row, ".title", doc.title);
    setText(row, ".source", doc.source);
    setText(row, ".pages", doc.pages == null ? "–" : doc.pages);
    setText(row, ".chunks", doc.chunks);
    setText(row, ".ingested", doc.ingested_at ? doc.ingested_at.replace("T", " ").slice(0, 16) : "–");
    const button = row.querySelector(".delete");
    button.setAttribute("aria-label", "Delete " + (doc.title || doc.source));
    button.addEventListener("click", () => confirmDelete(info.name, doc, button));
    body.append(row);
  });
  block.querySelector(".empty").hidden = docs.length > 0;
  block.querySelector("table").hidden = docs.length === 0;
  return block;
}

function confirmDelete(collection, doc, opener) {
  const dialog = $("confirm-delete");
  $("confirm-name").textContent = doc.title || doc.source;
  dialog.returnValue = "";
  dialog.onclose = null;
  dialog.addEventListener(
    "close",
    async () => {
      if (dialog.returnValue !== "delete") {
        opener.focus();
        return;
      }
      try {
        const path = "/v1/collections/" + encodeURIComponent(collection) + "/documents/" + encodeURIComponent(doc.document_id);
        await send(path, { method: "DELETE" });
        say("docs-status", "Deleted “" + (doc.title || doc.source) + "” from " + collection + ".", "ok");
        await loadDocuments();
      } catch (error) {
        reportError(error, "docs-status");
      }
    },
    { once: true },
  );
  dialog.showModal();
  $("confirm-cancel").focus();
}

function setUploadState(item, state, reason) {
  item.dataset.state = state;
  setText(item, ".state", state);
  setText(item, ".reason", reason || "");
}

function describeReport(report) {
  const parts = [];
  if (report.added) parts.push("added");
  if (report.updated) parts.push("updated");
  if (report.unchanged) parts.push("unchanged");
  return parts.join(", ") + (report.chunks_added ? " (" + report.chunks_added + " chunks)" : "");
}

function uploadOne(collection, file, item) {
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("files", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/collections/" + encodeURIComponent(collection) + "/documents");
    const key = storedKey();
    if (key) xhr.setRequestHeader("Authorization", "Bearer " + key);
    const bar = item.querySelector("progress");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) bar.value = Math.round((100 * event.loaded) / event.total);
    });
    xhr.upload.addEventListener("load", () => {
      bar.value = 100;
      setUploadState(item, "running", "ingesting…");
    });
    xhr.addEventListener("error", () => {
      setUploadState(item, "failed", "Cannot reach the ragkb server. Is it running?");
      resolve();
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) {
        body = null;
      }
      if (xhr.status === 200) {
        setUploadState(item, "done", describeReport(body));
      } else if (xhr.status === 202) {
        const job = body.jobs[0];
        setUploadState(item, "queued", "waiting for a worker");
        followJob(job.status_url, item).then(resolve);
        return;
      } else if (xhr.status === 422 && body && body.failures && body.failures.length) {
        setUploadState(item, "failed", body.failures[0].error);
      } else {
        const error = new ApiError(xhr.status, body && body.code, body && body.error ? body.error : "HTTP " + xhr.status);
        setUploadState(item, "failed", explain(error));
        if (xhr.status === 401) banner(explain(error), true);
      }
      resolve();
    });
    setUploadState(item, "uploading", "");
    xhr.send(form);
  });
}

async function followJob(url, item) {
  const deadline = Date.now() + waitMs();
  for (;;) {
    if (Date.now() >= deadline) {
      setUploadState(item, "failed", "still not ingested; stopped watching (its job goes on: see ragkb jobs)");
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
    let job;
    try {
      job = await getJSON(url);
    } catch (error) {
      setUploadState(item, "failed", explain(error));
      return;
    }
    const state = job.status || "queued";
    if (JOB_TERMINAL.includes(state)) {
      if (state === "failed") setUploadState(item, "failed", job.error || "ingestion failed");
      else setUploadState(item, "done", "ingested");
      return;
    }
    const words = { queued: "waiting for a worker", retrying: "retrying after an error", stalled: "its worker died; redelivering" };
    setUploadState(item, state, words[state] || "");
  }
}

async function uploadFiles(fileList) {
  const collection = $("upload-collection").value.trim();
  if (!$("upload-collection").checkValidity() || !collection) {
    say("docs-status", "Name a collection (3-63 letters, digits, dots, dashes or underscores) first.", "error");
    $("upload-collection").focus();
    return;
  }
  const files = Array.from(fileList);
  if (!files.length) return;
  const items = files.map((file) => {
    const item = fromTemplate("upload-item");
    setText(item, ".name", file.name);
    item.querySelector("progress").setAttribute("aria-label", "Upload of " + file.name);
    $("uploads").prepend(item);
    return item;
  });
  for (let i = 0; i < files.length; i++) {
    await uploadOne(collection, files[i], items[i]);
  }
  await loadDocuments();
}

async function initDocuments(who) {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((name) =>
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    }),
  );
  ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    uploadFiles(event.dataTransfer.files);
  });
  $("files").addEventListener("change", (event) => {
    uploadFiles(event.target.files).then(() => {
      event.target.value = "";
    });
  });
  $("upload-form").addEventListener("submit", (event) => event.preventDefault());
  if (!who) return;
  $("upload-collection").value = who.default_collection;
  $("formats").textContent =
    "PDF, Word, PowerPoint, Excel, CSV, OpenDocument text, RTF, EPUB, e-mail (EML, MSG), scans and images (OCR), Markdown, HTML and text files.";
  await loadDocuments();
}

// -- Review ---------------------------------------------------------------------------------------------------

let openReview = null;

async function loadQueue() {
  const list = $("queue");
  let found;
  try {
    found = await getJSON("/v1/reviews?status=pending");
  } catch (error) {
    if (error.status === 404 && error.code !== "review_not_found") {
      say("review-status", "This server has no review queue.", "error");
    } else {
      reportError(error, "review-status");
    }
    return;
  }
  list.textContent = "";
  found.reviews.forEach((review) => {
    const item = fromTemplate("queue-item");
    setText(item, ".q", review.question);
    setText(item, ".meta", review.collection + " · " + (review.reasons || []).join(", "));
    item.querySelector(".open").addEventListener("click", () => showReview(review.id));
    item.dataset.review = review.id;
    list.append(item);
  });
  $("queue-empty").hidden = found.reviews.length > 0;
}

async function showReview(id) {
  let review;
  try {
    review = await getJSON("/v1/reviews/" + encodeURIComponent(id));
  } catch (error) {
    reportError(error, "review-status");
    return;
  }
  openReview = review;
  $("review").hidden = false;
  $("review").dataset.review = review.id;
  $("review-question").textContent = review.question;
  $("review-collection").textContent = review.collection;
  $("review-reasons").textContent = (review.reasons || []).join(", ") || "sent for review";
  $("review-answer").value = review.answer || "";
  $("review-note").value = "";
  const list = $("review-passages");
  list.textContent = "";
  const passages = review.citations && review.citations.length ? review.citations : review.context || [];
  passages.forEach((c, i) => {
    const card = fromTemplate("review-card");
    setText(card, ".num", "[" + (c.n || i + 1) + "]");
    setText(card, ".title", c.title || c.source);
    setText(card, ".loc", [c.source, c.page ? "page " + c.page : "", c.heading || ""].filter(Boolean).join(" · "));
    setText(card, ".passage", c.text || c.snippet || "");
    list.append(card);
  });
  $("review-answer").focus();
}

async function decide(action) {
  if (!openReview) return;
  const id = encodeURIComponent(openReview.id);
  const note = $("review-note").value.trim();
  try {
    if (action === "approve") {
      const edited = $("review-answer").value;
      const body = edited.trim() && edited !== openReview.answer ? { answer: edited } : {};
      await postJSON("/v1/reviews/" + id + "/approve", body);
      say("review-status", "Approved: the asker now gets this answer.", "ok");
    } else {
      const body = { retry: action === "retry" };
      if (note) body.note = note;
      await postJSON("/v1/reviews/" + id + "/reject", body);
      say("review-status", action === "retry" ? "Rejected; a new answer will be tried." : "Rejected.", "ok");
    }
  } catch (error) {
    reportError(error, "review-status");
    return;
  }
  openReview = null;
  $("review").hidden = true;
  await loadQueue();
  $("queue-heading").focus();
}

async function initReview(who) {
  $("approve").addEventListener("click", () => decide("approve"));
  $("reject").addEventListener("click", () => decide("reject"));
  $("retry").addEventListener("click", () => decide("retry"));
  $("queue-heading").tabIndex = -1;
  if (!who) return;
  if (!who.can.review) {
    say("review-status", "Your API key has no review scope: ask an administrator for a review key.", "error");
    return;
  }
  await loadQueue();
}

// -- Sign-in --------------------------------------------------------------------------------------------------

async function initSignin(who) {
  if (who && who.open) say("signin-status", "This server has no API keys yet: no sign-in is needed.", "ok");
  else if (who) say("signin-status", "Signed in as " + who.key + " (" + who.scope + ").", "ok");
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) {
      say("signin-status", "Paste an API key first.", "error");
      $("key").focus();
      return;
    }
    sessionStorage.setItem(KEY, key);
    $("key").value = "";
    try {
      const found = await getJSON("/v1/whoami");
      applyAbilities(found);
      banner("");
      say("signin-status", "Signed in as " + found.key + " (" + found.scope + ").", "ok");
    } catch (error) {
      sessionStorage.removeItem(KEY);
      applyAbilities(null);
      say("signin-status", error.status === 401 ? "That key is not valid (unknown, malformed or revoked)." : explain(error), "error");
    }
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    applyAbilities(null);
    say("signin-status", "Signed out: the key is gone from this tab.", "ok");
  });
}

// -- start ----------------------------------------------------------------------------------------------------

// Each page's start; the Ask page's lives in ask.js (loaded after this script on that page only).
const PAGES = { documents: initDocuments, review: initReview, signin: initSignin };

document.addEventListener("DOMContentLoaded", async () => {
  const who = await identify();
  const init = PAGES[document.body.dataset.page];
  if (init) await init(who);
  document.body.dataset.ready = "true";
});
