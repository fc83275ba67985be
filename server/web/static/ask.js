// The Ask page: a conversation thread. Every question is a turn of a stored conversation
// (POST /v1/conversations, then POST /v1/conversations/{id}/messages, streamed), so a follow-up ("And in 2019?")
// is made standalone by the server from the earlier turns; the page shows the question the server searched
// for when it differs. Earlier turns stay in the page, each with its answer, outcome and clickable sources.
// Loaded after app.js on the Ask page only; it uses app.js's helpers ($, send, postJSON, say, ...).
"use strict";

// The ids of the turn under way; an earlier turn is a copy of it without them.
const CURRENT_IDS = ["answer", "origin", "abstained", "low-confidence", "sources-section", "sources-heading", "sources"];

// The conversation the next question belongs to (null: the next question starts one), and its turns so far.
let conversation = null;
let turns = [];
let turnCount = 0; // turns shown since the page opened: each turn's source cards get ids of their own

// -- the stream -------------------------------------------------------------------------------------------------

// Yields [eventName, data] for each Server-Sent Event of a fetch response body.
async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      block.split("\n").forEach((line) => {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      });
      if (data.length) yield [name, JSON.parse(data.join("\n"))];
    }
  }
}

// -- one answer ---------------------------------------------------------------------------------------------------

function sourceId(turn, n) {
  return "t" + turn + "-source-" + n;
}

// The answer text with each [n] as a link to its source card (of the same turn).
function renderAnswer(el, answer, known, turn) {
  el.textContent = "";
  let last = 0;
  for (const match of answer.matchAll(MARKER)) {
    el.append(document.createTextNode(answer.slice(last, match.index)));
    const numbers = match[1].split(",").map((s) => Number(s.trim()));
    const group = document.createElement("span");
    group.className = "marker";
    numbers.forEach((n) => {
      if (known.has(n)) {
        const link = document.createElement("a");
        link.href = "#" + sourceId(turn, n);
        link.className = "cite";
        link.textContent = "[" + n + "]";
        link.setAttribute("aria-label", "source " + n);
        group.append(link);
      } else {
        group.append(document.createTextNode("[" + n + "]"));
      }
    });
    el.append(group);
    last = match.index + match[0].length;
  }
  el.append(document.createTextNode(answer.slice(last)));
}

function fileUrl(documentId, collection, page) {
  const base = "/v1/documents/" + encodeURIComponent(documentId) + "/file?collection=" + encodeURIComponent(collection);
  return page ? base + "#page=" + page : base;
}

// Opens an original document: a plain link in the open demo; with a key the file is fetched with the
// Bearer header and shown from a blob URL (a link cannot carry the header).
function openOriginal(event) {
  if (!storedKey()) return;
  event.preventDefault();
  const link = event.currentTarget;
  const target = window.open("", "_blank");
  const [path, hash] = link.href.split("#");
  send(path)
    .then((response) => response.blob())
    .then((blob) => {
      const url = URL.createObjectURL(blob) + (hash ? "#" + hash : "");
      if (target) target.location.href = url;
      else window.location.href = url;
    })
    .catch((error) => {
      if (target) target.close();
      say("ask-status", "Could not open the original: " + explain(error), "error");
    });
}

// The passage with the ranges the answer quotes in <mark> (ranges are sorted and do not overlap).
function passageInto(el, text, ranges) {
  el.textContent = "";
  let last = 0;
  (ranges || []).forEach(([start, end]) => {
    const mark = document.createElement("mark");
    mark.textContent = text.slice(start, end);
    el.append(document.createTextNode(text.slice(last, start)), mark);
    last = end;
  });
  el.append(document.createTextNode(text.slice(last)));
}

function sourceCard(n, chunk, collection, passage, turn) {
  const card = fromTemplate("source-card");
  card.id = sourceId(turn, n);
  card.tabIndex = -1;
  card.dataset.chunk = chunk.chunk_id;
  setText(card, ".num", n ? "[" + n + "]" : "");
  setText(card, ".title", chunk.title || chunk.source);
  setText(card, ".file", chunk.source);
  const where = [];
  if (chunk.page) where.push("page " + chunk.page);
  if (chunk.heading) where.push(chunk.heading);
  setText(card, ".loc", where.length ? "· " + where.join(" · ") : "");
  passageInto(card.querySelector(".passage"), passage, null);
  const link = card.querySelector(".original");
  link.href = fileUrl(chunk.document_id, collection, chunk.page);
  link.textContent = chunk.page ? "Open the original at page " + chunk.page : "Open the original";
  link.addEventListener("click", openOriginal);
  return card;
}

function originLabel(response) {
  const origin = response.origin || (response.cached ? "cached" : "generated");
  if (origin === "curated" || origin === "reviewed") {
    const c = response.curated;
    const by = c && c.reviewer ? " by " + c.reviewer : "";
    const when = c && c.approved_at ? " on " + String(c.approved_at).slice(0, 10) : "";
    return (origin === "curated" ? "Curated answer" : "Reviewed answer") + ", approved" + by + when;
  }
  if (origin === "cached") return "Cached answer";
  return "";
}

async function fillPassages(response, turn) {
  if (!response.citations.length) return;
  const body = {
    collection: response.collection,
    answer: response.answer,
    citations: response.citations.map((c) => ({ n: c.n, chunk_id: c.chunk_id })),
  };
  try {
    const found = await postJSON("/v1/passages", body);
    found.passages.forEach((p) => {
      const card = $(sourceId(turn, p.n));
      if (!card) return;
      const el = card.querySelector(".passage");
      if (p.text == null) {
        el.textContent = "This passage's document has been deleted since the answer was made.";
        el.classList.add("gone");
      } else {
        passageInto(el, p.text, p.highlights);
        const mark = el.querySelector("mark");
        if (mark) el.scrollTop = Math.max(0, mark.offsetTop - 24); // the quote in view inside its box
      }
    });
  } catch (error) {
    reportError(error);
  }
}

// "How long are backups kept?" and "how long are backups kept" are the same question.
function sameQuestion(a, b) {
  const plain = (s) => String(s || "").toLowerCase().replace(/[^\p{L}\p{N}]+/gu, " ").trim();
  return plain(a) === plain(b);
}

function showStandalone(question, standalone) {
  const el = $("current-turn").querySelector(".standalone");
  const differs = Boolean(standalone) && !sameQuestion(question, standalone);
  setText(el, ".standalone-text", differs ? standalone : "");
  el.hidden = !differs;
}

function showResponse(response) {
  const turn = Number($("current-turn").dataset.turn);
  const answerEl = $("answer");
  const known = new Set(response.citations.map((c) => c.n));
  renderAnswer(answerEl, response.answer, known, turn);
  answerEl.setAttribute("aria-busy", "false");
  const label = originLabel(response);
  const badge = $("origin");
  badge.textContent = label;
  badge.hidden = !label;
  $("abstained").hidden = !response.abstained;
  $("low-confidence").hidden = response.outcome !== "low_confidence";
  $("current-turn").dataset.outcome = response.abstained ? "abstained" : response.outcome || "answered";
  const list = $("sources");
  list.textContent = "";
  const chunks = response.abstained ? response.related : response.citations;
  chunks.forEach((chunk, i) => {
    const n = response.abstained ? i + 1 : chunk.n;
    list.append(sourceCard(n, chunk, response.collection, chunk.text || chunk.snippet || "", turn));
  });
  $("sources-heading").textContent =
    response.abstained || response.outcome === "low_confidence" ? "Closest passages" : "Sources";
  $("sources-section").hidden = chunks.length === 0;
  const feedback = $("feedback");
  feedback.hidden = false;
  feedback.dataset.requestId = response.request_id;
  resetFeedback();
  if (response.degraded) say("ask-status", "The language model failed; this is the extractive answer.", "warn");
  else say("ask-status", "");
  if (!response.abstained) fillPassages(response, turn);
}

function resetFeedback() {
  ["thumb-up", "thumb-down"].forEach((id) => $(id).setAttribute("aria-pressed", "false"));
  $("comment").value = "";
  say("feedback-status", "");
}

async function waitForReview(pending) {
  say("ask-status", "This collection's answers are checked by a reviewer first. Waiting for the review…", "wait");
  $("answer").textContent = "";
  const deadline = Date.now() + waitMs();
  for (;;) {
    if (Date.now() >= deadline) {
      const minutes = Math.round(waitMs() / 60000);
      say(
        "ask-status",
        "Still waiting for a reviewer after " + (minutes >= 1 ? minutes + " min" : Math.round(waitMs() / 1000) + " s") +
          ". Ask again later: the answer appears once it is approved (review " + pending.review_id + ").",
        "warn",
      );
      $("current-turn").dataset.outcome = "held";
      return null;
    }
    await new Promise((resolve) => setTimeout(resolve, 1500));
    let state;
    try {
      state = await getJSON("/v1/answers/" + encodeURIComponent(pending.review_id));
    } catch (error) {
      reportError(error, "ask-status");
      return null;
    }
    if (state.answer) {
      showResponse(state.answer);
      return state.answer;
    }
    if (state.status === "rejected") {
      say("ask-status", "A reviewer rejected the answer to this question.", "error");
      $("current-turn").dataset.outcome = "rejected";
      return null;
    }
  }
}

// -- the thread -------------------------------------------------------------------------------------------------

// The turn under way becomes an earlier turn: a copy without the current ids, put before it (the copy's
// links to its own source cards keep working; their "open the original" handlers are set again).
function archiveCurrentTurn() {
  const current = $("current-turn");
  const copy = current.cloneNode(true);
  copy.removeAttribute("id");
  copy.classList.add("earlier");
  CURRENT_IDS.forEach((id) => {
    const el = copy.querySelector("#" + id);
    if (el) el.removeAttribute("id");
  });
  copy.querySelectorAll("a.original").forEach((link) => link.addEventListener("click", openOriginal));
  current.before(copy);
}

function startTurn(question) {
  const current = $("current-turn");
  if (current.dataset.turn) archiveCurrentTurn();
  turnCount += 1;
  current.dataset.turn = String(turnCount);
  current.dataset.outcome = "";
  setText(current, ".question", question);
  showStandalone(question, null);
  $("abstained").hidden = true;
  $("low-confidence").hidden = true;
  $("sources-section").hidden = true;
  $("sources").textContent = "";
  $("feedback").hidden = true;
  $("origin").hidden = true;
  const answerEl = $("answer");
  answerEl.textContent = "";
  answerEl.setAttribute("aria-busy", "true");
  $("result").hidden = false;
  current.scrollIntoView({ block: "nearest" });
}

function clearThread() {
  const current = $("current-turn");
  $("thread").querySelectorAll(".turn.earlier").forEach((el) => el.remove());
  delete current.dataset.turn;
  $("result").hidden = true;
  $("feedback").hidden = true;
  conversation = null;
  turns = [];
  showThreadState();
}

function showThreadState() {
  $("new-conversation").disabled = turns.length === 0;
  $("question-label").textContent = turns.length ? "Follow-up question" : "Question";
  $("thread").dataset.turns = String(turns.length);
}

function newConversation() {
  clearThread();
  say("ask-status", "New conversation: the next question starts afresh.", "ok");
  $("question").focus();
}

async function startConversation(collection) {
  const created = await postJSON("/v1/conversations", { collection: collection || null });
  conversation = { id: created.id, collection: created.collection };
  $("thread").dataset.conversation = created.id;
}

// One turn through the conversation API; a conversation the server no longer has is started again once.
async function postTurn(question, collection) {
  if (!conversation) await startConversation(collection);
  const request = () =>
    send("/v1/conversations/" + encodeURIComponent(conversation.id) + "/messages", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ question: question, stream: true }),
    });
  try {
    return await request();
  } catch (error) {
    if (!(error instanceof ApiError) || error.code !== "conversation_not_found") throw error;
    await startConversation(collection);
    say("ask-status", "The earlier conversation is gone from the server; this question starts a new one.", "warn");
    return request();
  }
}

async function ask(event) {
  event.preventDefault();
  const box = $("question");
  const question = box.value.trim();
  if (!question) {
    say("ask-status", "Type a question first.", "error");
    box.focus();
    return;
  }
  const collection = $("collection").value || null;
  if (conversation && collection && conversation.collection !== collection) clearThread();
  const button = $("ask-button");
  button.disabled = true;
  startTurn(question);
  box.value = "";
  say("ask-status", "Answering…", "wait");
  const turn = { question: question, standalone: null, response: null };
  let done = null;
  try {
    const response = await postTurn(question, collection);
    turns.push(turn);
    showThreadState();
    if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
      const body = await response.json();
      turn.standalone = body.message.standalone_question;
      showStandalone(question, turn.standalone);
      done = response.status === 202 ? await waitForReview(body.held) : body.response;
      if (response.status !== 202) showResponse(done);
    } else {
      const answerEl = $("answer");
      for await (const [name, data] of serverEvents(response)) {
        if (name === "token") answerEl.append(document.createTextNode(data.text));
        else if (name === "error") say("ask-status", "The language model failed: " + data.error, "warn");
        else if (name === "done") {
          done = data;
          turn.standalone = data.standalone_question;
          showStandalone(question, turn.standalone);
          showResponse(data);
        }
      }
    }
    turn.response = done;
  } catch (error) {
    const answerEl = $("answer");
    answerEl.setAttribute("aria-busy", "false");
    if (answerEl.textContent === "") answerEl.textContent = "No answer.";
    $("current-turn").dataset.outcome = "failed";
    if (!box.value) box.value = question; // nothing is lost: the question is back in the box to send again
    reportError(error, "ask-status");
  } finally {
    button.disabled = false;
  }
}

async function sendFeedback(event) {
  event.preventDefault();
  const pressed = ["thumb-up", "thumb-down"].find((id) => $(id).getAttribute("aria-pressed") === "true");
  if (!pressed) {
    say("feedback-status", "Choose helpful or not helpful first.", "error");
    return;
  }
  const body = { request_id: $("feedback").dataset.requestId, rating: $(pressed).value };
  const comment = $("comment").value.trim();
  if (comment) body.comment = comment;
  try {
    await postJSON("/v1/feedback", body);
    say("feedback-status", "Thank you: your feedback was recorded.", "ok");
  } catch (error) {
    reportError(error, "feedback-status");
  }
}

async function initAsk(who) {
  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  $("new-conversation").addEventListener("click", newConversation);
  $("collection").addEventListener("change", () => {
    if (!turns.length) return;
    clearThread();
    say("ask-status", "Another collection: the next question starts a new conversation.", "ok");
  });
  ["thumb-up", "thumb-down"].forEach((id) =>
    $(id).addEventListener("click", () => {
      ["thumb-up", "thumb-down"].forEach((other) => $(other).setAttribute("aria-pressed", String(other === id)));
    }),
  );
  $("feedback").addEventListener("submit", sendFeedback);
  showThreadState();
  if (!who) return;
  try {
    const collections = await getJSON("/v1/collections");
    const names = collections.map((c) => c.name);
    if (!names.length) {
      say("ask-status", "No documents yet: add some on the Documents page first.", "warn");
    }
    fillCollections($("collection"), names, who.default_collection);
  } catch (error) {
    reportError(error, "ask-status");
  }
}

PAGES.ask = initAsk;
