// Parley's chat page: one WebSocket, replies streamed by cursor (see docs/streaming.md).
//
// Every assistant reply that is still being written is "attached" with the last cursor seen, so a
// reload, a second tab or a reconnect after a network blip continues exactly where it left off.
// Agent runs ("Run as task", `/task <goal>`) are drawn and followed the same way by tasks.js.
// The page shows one branch of the conversation's message tree; edits and regenerations make new
// branches, and "‹ 2 / 3 ›" (branches.js) switches between them.

import * as branches from "./branches.js";
import * as details from "./details.js";
import * as feedback from "./feedback.js";
import * as files from "./files.js";
import { renderMarkdown } from "./markdown.js";
import * as conversationTools from "./conversation.js";
import * as tasks from "./tasks.js";
import { copyText, flashButton, requestJson } from "./ui.js";

const ACTIVE = new Set(["queued", "streaming"]);
const FINAL_LABELS = {
  stopped: "Stopped",
  interrupted: "Interrupted: the server stopped while writing this reply; the text so far is kept.",
};
const BACKOFF_MS = { first: 500, max: 15000 };

// ---------------------------------------------------------------- page elements and state

const $ = (id) => document.getElementById(id);
const chat = $("chat");
const ui = {
  messages: $("messages"),
  list: $("messages-inner"),
  welcome: $("welcome"),
  title: $("chat-title"),
  connection: $("connection"),
  form: $("composer"),
  input: $("composer-input"),
  error: $("composer-error"),
  counter: $("counter"),
  send: $("send-button"),
  task: $("task-button"),
  runNotices: $("run-notices"),
  stop: $("stop-button"),
  picker: $("model-picker"),
  demoTag: $("demo-tag"),
  banner: $("limit-banner"),
  limitText: $("limit-text"),
  countdown: $("limit-countdown"),
  meter: $("usage-meter"),
  attach: $("attach-button"),
  attachInput: $("attach-input"),
  uploads: $("upload-list"),
  uploadTotal: $("upload-total"),
  shell: $("shell"),
  sidebarToggle: $("sidebar-toggle"),
  scrim: $("scrim"),
};

const state = {
  conversation: Number(chat.dataset.conversation) || null,
  maxChars: Number(chat.dataset.maxChars) || 32000,
  uploadMaxBytes: Number(chat.dataset.uploadMaxBytes) || 5 * 1024 * 1024,
  imageMaxBytes: Number(chat.dataset.imageMaxBytes) || 3840 * 1024,
  attachmentsMax: Number(chat.dataset.attachmentsMax) || 10,
  replies: new Map(), // assistant message id -> Reply, for every reply drawn on the page
  pending: null, // the send awaiting its `message` answer: {ref, frame, sent}
  stopping: new Set(),
  nextRef: 1,
  startingTask: false, // a "Run as task" request is under way
  awaitingTitle: false, // the open conversation's automatic title is still to come
  provisionalTitle: "", // the title its first send gave it, which its model's title replaces
  lock: null, // sending is paused by a plan limit: {until: ms since epoch (null: until told otherwise), countdownLabel}
  lockTimer: null,
};

const codePoints = (text) => {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
};

/** "<offset>-<seq>" -> offset, or null for anything else. */
const cursorOffset = (cursor) => {
  const match = /^(\d+)(?:-\d+)?$/.exec(String(cursor ?? ""));
  return match ? Number(match[1]) : null;
};

// ---------------------------------------------------------------- drawing messages

class Reply {
  constructor(message, element) {
    this.id = message.id;
    this.element = element;
    this.body = element.querySelector(".msg-body");
    this.foot = element.querySelector(".msg-foot");
    this.status = message.status;
    this.text = message.content || "";
    this.length = codePoints(this.text);
    this.cursor = "";
    this.painting = false;
    this.watched = ACTIVE.has(message.status); // this tab follows it as it is written: its end is announced
    this.controlsFor = null; // the status its Regenerate or Retry was drawn for
    this.info = details.infoOf(message); // what its Details show; its `done` event completes it
  }

  get active() {
    return ACTIVE.has(this.status);
  }
}

function messageElement(message) {
  const element = document.createElement("article");
  element.className = `msg msg-${message.role}`;
  element.dataset.id = message.id;
  element.dataset.parent = message.parent ?? "";
  branches.setSiblings(element, message.siblings);
  element.dataset.created = Date.parse(message.created); // task cards are placed among messages by time
  const notice = document.createElement("p");
  notice.className = "msg-notice";
  notice.hidden = !message.notice;
  notice.textContent = message.notice || "";
  const body = document.createElement("div");
  body.className = message.role === "user" ? "msg-body plain" : "msg-body markdown";
  const foot = document.createElement("div");
  foot.className = "msg-foot";
  const actions = document.createElement("div");
  actions.className = "msg-actions";
  element.append(notice, body, foot, actions);
  return element;
}

const appendMessage = (message) => addMessage(message, (element) => ui.list.append(element));

/** Draws a message where `place` puts it: a user's as plain text, a reply through markdown and DOMPurify. */
function addMessage(message, place) {
  ui.welcome.hidden = true;
  const element = messageElement(message);
  place(element);
  if (message.role === "user") {
    element.querySelector(".msg-body").textContent = message.content; // never HTML
    if (message.attachments?.length) element.querySelector(".msg-body").after(files.messageFiles(message.attachments));
    branches.drawControls(element, { role: "user" });
    return null;
  }
  feedback.remember(element, message.feedback);
  const reply = new Reply(message, element);
  state.replies.set(reply.id, reply);
  paint(reply);
  if (message.error) showFailure(reply, message.error.text, null);
  return reply;
}

const nearBottom = () => ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 120;
const scrollToBottom = () => { ui.messages.scrollTop = ui.messages.scrollHeight; };

function paint(reply) {
  const stick = nearBottom();
  reply.element.dataset.status = reply.status;
  if (reply.text) {
    renderMarkdown(reply.body, reply.text);
  } else if (reply.active) {
    reply.body.innerHTML = '<span class="typing" aria-label="Writing"><i></i><i></i><i></i></span>';
  } else {
    reply.body.textContent = "";
  }
  reply.element.classList.toggle("streaming", reply.active);
  const label = FINAL_LABELS[reply.status];
  if (label) setFoot(reply, label, `status-${reply.status}`);
  if (reply.controlsFor !== reply.status) {
    // Only when the status changes: paint runs every frame while text streams in.
    branches.drawControls(reply.element, { role: "assistant", status: reply.status, active: reply.active });
    if (!reply.active) feedback.drawButtons(reply.element); // a reply can be rated once it has ended
    reply.controlsFor = reply.status;
  }
  if (stick) scrollToBottom();
}

/** Re-renders at most once per animation frame however many deltas arrive. */
function schedulePaint(reply) {
  if (reply.painting) return;
  reply.painting = true;
  const run = () => { reply.painting = false; paint(reply); };
  // Hidden tabs get no animation frames; a timer keeps their text current for when they return.
  if (document.hidden) setTimeout(run, 250);
  else requestAnimationFrame(run);
}

function setFoot(reply, text, className) {
  reply.foot.replaceChildren();
  const line = document.createElement("p");
  line.className = className;
  line.textContent = text;
  reply.foot.append(line);
}

const retryHint = (seconds) => {
  if (!seconds) return "";
  const whole = Math.max(1, Math.ceil(seconds));
  return ` Wait about ${whole} second${whole > 1 ? "s" : ""} before retrying.`;
};

function showFailure(reply, text, retryAfter) {
  setFoot(reply, (text || "The reply failed.") + retryHint(retryAfter), "msg-error");
  if (reply.element.isConnected && !reply.active) announce(reply.foot.textContent);
}

// ---------------------------------------------------------------- the event stream

function onDelta(event) {
  const reply = state.replies.get(event.message);
  if (!reply) return;
  const end = cursorOffset(event.cursor);
  const chars = Array.from(event.text || "");
  if (end !== null && end <= reply.length) return; // already have it (a resend after reconnect)
  // Keep only the part past what we hold, in case a resend overlaps what arrived before.
  const skip = end === null ? 0 : Math.max(0, reply.length - (end - chars.length));
  reply.text += chars.slice(skip).join("");
  reply.length = end ?? reply.length + chars.length - skip;
  reply.cursor = event.cursor ?? reply.cursor;
  if (reply.status === "queued") reply.status = "streaming";
  schedulePaint(reply);
}

// Screen readers hear a reply once, when it ends, from a live region of its own: the messages
// themselves are not live, or every token painted would be read out.
let announceTimer = null;
function announce(text) {
  const region = $("announcer");
  region.textContent = "";
  clearTimeout(announceTimer);
  // Emptied first and filled a moment later, so that the same words twice are still read.
  announceTimer = setTimeout(() => { region.textContent = text; }, 100);
}

const ANNOUNCED_ENDINGS = { stopped: "Reply stopped.", interrupted: "The reply was interrupted." };

function announceEnd(reply, status) {
  if (!reply.watched) return; // only replies this tab saw being written, not stored ones drawn on load
  reply.watched = false;
  if (status === "complete") announce(`Reply: ${reply.body.innerText.trim().slice(0, 2000)}`);
  else if (ANNOUNCED_ENDINGS[status]) announce(ANNOUNCED_ENDINGS[status]);
}

function finish(reply, event) {
  // A failed reply's error event says which model failed last, like a done event says which answered.
  if (event.type === "done" || event.model !== undefined) reply.info = details.withEnd(reply.info, event);
  showNotice(reply, reply.info.notice);
  reply.status = event.status;
  reply.cursor = event.cursor ?? reply.cursor;
  state.stopping.delete(reply.id);
  paint(reply);
  announceEnd(reply, event.status); // after the paint: the text in full
  updateComposer();
  refreshSidebar(); // an automatic title may have been given
  scheduleUsageLoad(); // the reply has been charged: the meter moves
}

/** A reply's notice (a fallback model, a failover, left-out turns), as text. */
function showNotice(reply, text) {
  const notice = reply.element.querySelector(".msg-notice");
  if (!notice) return;
  notice.textContent = text || "";
  notice.hidden = !text;
}

const PLACEHOLDER_TITLES = new Set(["New chat"]);
const hasPlaceholderTitle = () => PLACEHOLDER_TITLES.has(ui.title.textContent.trim());

function onDone(event) {
  const reply = state.replies.get(event.message);
  if (reply) finish(reply, event);
  if (reply && state.awaitingTitle) {
    // The automatic title comes as a notice, and the notice triggers a sidebar refresh; a refresh
    // can be lost while htmx swaps the list, so look again once the title task has had its time.
    state.awaitingTitle = false;
    for (const delay of [2500, 7000]) setTimeout(refreshSidebar, delay);
  }
}

function onError(event) {
  const reply = event.message != null && state.replies.get(event.message);
  if (reply) {
    finish(reply, { status: event.status || "failed", cursor: event.cursor, model: event.model, notice: event.notice, routing: event.routing });
    showFailure(reply, event.text, event.retry_after);
    return;
  }
  const ref = String(event.ref ?? "");
  if (ref.startsWith("attach:") || ref.startsWith("stop:")) return onFrameRefused(ref, event);
  if (ref.startsWith("attach_run:")) return tasks.onAttachRefused(ref, event);
  if (!event.ref && event.code === "provider_unavailable" && streamingReplies().length) {
    // A reply's stream broke on the server side: follow it again from the last cursor.
    setTimeout(() => streamingReplies().forEach(attach), 1000);
    return;
  }
  if (state.pending && (!event.ref || event.ref === state.pending.ref)) state.pending = null;
  showRefusal(event);
  updateComposer();
}

/** A send or a task the server refused; the typed text stays in the box for another try. */
function showRefusal(error) {
  if (error.code === "quota_exceeded" || error.code === "suspended") {
    showLimit(error);
  } else {
    showComposerError(error.text + retryHint(error.retry_after));
  }
}

/** An attach or stop was refused: the reply is gone, over, or the server is busy for a moment. */
function onFrameRefused(ref, event) {
  const [kind, id] = ref.split(":");
  const reply = state.replies.get(Number(id));
  if (!reply || event.code === "already_finished") return;
  state.stopping.delete(reply.id);
  if (kind === "attach" && event.code === "busy") {
    setTimeout(() => attach(reply), Math.max(1, event.retry_after || 3) * 1000);
  } else if (kind === "attach") {
    reply.status = "failed";
    paint(reply);
    showFailure(reply, event.text, null);
  } else {
    showComposerError(event.text + retryHint(event.retry_after));
  }
  updateComposer();
}

function onMessage(event) {
  if ("origin" in event) {
    onNoticeOfSend(event);
    return;
  }
  if (state.pending && event.ref === state.pending.ref) {
    const { frame } = state.pending;
    state.pending = null;
    if (frame.type === "send") {
      ui.input.value = "";
      onInput();
    }
  }
  files.forgetSent(event.user_message);
  state.awaitingTitle = hasPlaceholderTitle();
  if (!state.conversation) adoptConversation(event.conversation);
  else if (state.awaitingTitle && event.conversation.id === state.conversation) setTitle(event.conversation.title);
  // The first send names the conversation by its question's words until its model's title comes.
  if (state.awaitingTitle) state.provisionalTitle = event.conversation.title;
  const reply = placeTurn(event);
  if (reply) reply.cursor = ""; // the server attached this socket to the reply from its start
  else reloadThread();
  announce("Writing a reply…");
  scrollToBottom();
  updateComposer();
  refreshSidebar();
}

const shownMessage = (id) => ui.list.querySelector(`:scope > .msg[data-id="${Number(id)}"]`);

/**
 * Draws a send, an edit or a regenerate where it belongs in the branch shown: after the message it
 * follows, in place of whatever came after that (an older branch). Null when the page does not
 * show that message (another branch, or an older page): the caller then redraws the thread.
 */
function placeTurn(event) {
  const user = event.user_message;
  const drawn = shownMessage(user.id); // a regenerate: a new reply to a message shown
  const anchor = drawn || (user.parent == null ? null : shownMessage(user.parent));
  if (!anchor && user.parent != null) return null;
  clearAfter(anchor);
  if (drawn) {
    branches.setSiblings(drawn, user.siblings);
    branches.drawControls(drawn, { role: "user" });
  } else {
    appendMessage(user);
  }
  const reply = appendMessage(event.assistant_message);
  tasks.reposition();
  return reply;
}

/** Removes the messages after `anchor` (all of them when null): the branch they were on is no longer shown. */
function clearAfter(anchor) {
  const all = [...ui.list.querySelectorAll(":scope > .msg")];
  for (const element of all.slice(anchor ? all.indexOf(anchor) + 1 : 0)) {
    state.replies.delete(Number(element.dataset.id));
    element.remove();
  }
  if (!anchor) setEarlier(null);
}

/** Points "Load earlier messages" at the page before the oldest message shown, or hides it. */
function setEarlier(url) {
  const earlier = $("earlier");
  if (!earlier) return;
  earlier.replaceChildren();
  earlier.hidden = !url;
  if (!url) return;
  const button = Object.assign(document.createElement("button"), {
    type: "button", className: "button small", id: "load-earlier", textContent: "Load earlier messages",
  });
  button.setAttribute("hx-get", url);
  button.setAttribute("hx-target", "#earlier");
  button.setAttribute("hx-swap", "outerHTML settle:0ms");
  button.setAttribute("hx-sync", "this:drop");
  earlier.append(button);
  window.htmx?.process(earlier);
}

/** Draws the branch a conversation's detail (GET /api/conversations/<id>/) carries, and follows its replies. */
function renderThread(detail) {
  clearAfter(null);
  for (const message of detail.messages) appendMessage(message);
  const oldest = detail.messages[0];
  setEarlier(detail.has_more && oldest ? `${conversationUrl(detail.id)}earlier/?before=${oldest.id}` : null);
  ui.welcome.hidden = detail.messages.length > 0;
  tasks.reposition();
  for (const reply of state.replies.values()) {
    if (reply.active) {
      reply.cursor = "";
      attach(reply);
    }
  }
  updateComposer();
}

/** The branch shown changed in a way this page cannot draw from the event alone: read it again. */
async function reloadThread() {
  if (!state.conversation) return;
  const loaded = await requestJson(`/api/conversations/${state.conversation}/`);
  if (!loaded.ok) return;
  renderThread(loaded.data);
  scrollToBottom();
}

/** "‹" or "›": show the branch through that version; stored, so a reload shows it too. */
async function showVersion(id, focusClass) {
  if (state.pending) return;
  const shown = await requestJson(`/api/messages/${id}/show`, { method: "POST" });
  if (!shown.ok) {
    showComposerError(shown.error.text + retryHint(shown.error.retry_after));
    return;
  }
  renderThread(shown.data);
  const element = shownMessage(id);
  if (element) {
    element.scrollIntoView({ block: "nearest" });
    const same = element.querySelector(`.${focusClass}:not(:disabled)`) || element.querySelector(".branch-nav button:not(:disabled)");
    same?.focus({ preventScroll: true });
  }
}

function startEdit(element) {
  branches.openEditor(element, {
    onSave: (content) => saveEdit(element, content),
    onClose: () => ui.input.focus(),
  });
}

/** Save & send: a new version of the message, answered like a send; the editor stays open if it is refused. */
function saveEdit(element, content) {
  if (!content.trim()) {
    showComposerError("The message is empty. Write something, or press Escape to keep it as it was.");
    return;
  }
  const length = codePoints(content);
  if (length > state.maxChars) {
    showComposerError(`The message is ${length.toLocaleString()} characters long; the limit is ${state.maxChars.toLocaleString()}.`);
    return;
  }
  sendTurn({ type: "edit", message: Number(element.dataset.id), content });
}

ui.list.addEventListener("click", (event) => {
  const button = event.target.closest(".msg-action");
  if (!button || button.disabled) return;
  const element = button.closest(".msg");
  if (button.dataset.target) {
    showVersion(Number(button.dataset.target), button.classList.contains("branch-prev") ? "branch-prev" : "branch-next");
  } else if (button.classList.contains("msg-edit")) {
    startEdit(element);
  } else if (button.classList.contains("msg-copy")) {
    const reply = state.replies.get(Number(element.dataset.id));
    if (reply) copyText(reply.text).then((copied) => flashButton(button, copied));
  } else if (button.classList.contains("msg-details-toggle")) {
    const reply = state.replies.get(Number(element.dataset.id));
    if (reply) details.toggle(element, reply.info, button);
  } else if (button.classList.contains("msg-rate")) {
    feedback.press(element, button, { onError: showComposerError });
  } else if (button.classList.contains("msg-feedback-comment")) {
    feedback.openForm(element);
  } else {
    sendTurn({ type: "regenerate", message: Number(element.dataset.id) }); // Regenerate and Retry alike
  }
});

/** Another tab (or an API client) sent a message: follow its reply if it belongs to this page. */
function onNoticeOfSend(event) {
  refreshSidebar();
  if (event.conversation.id === state.conversation) files.forgetSent(event.user_message);
  if (event.conversation.id !== state.conversation || state.replies.has(event.assistant_message.id)) return;
  const reply = placeTurn(event);
  if (reply) {
    reply.cursor = "";
    attach(reply);
  } else {
    reloadThread();
  }
  scrollToBottom();
  updateComposer();
}

/** A conversation changed elsewhere, e.g. it got its automatic title. */
function onConversation(event) {
  if (event.conversation.id === state.conversation) setTitle(event.conversation.title);
  refreshSidebar();
}

/** The first send on the home page created a conversation: the page becomes that conversation. */
function adoptConversation(conversation) {
  state.conversation = conversation.id;
  chat.dataset.conversation = conversation.id;
  history.replaceState(null, "", conversationUrl(conversation.id));
  setTitle(conversation.title);
  if (ui.picker) {
    chat.dataset.vision = files.modelSees() ? "1" : ""; // read before the picker goes
    // The model is fixed once the conversation exists: show it the way the conversation page does.
    const badge = document.createElement("span");
    badge.className = "model-badge";
    badge.textContent = ui.picker.selectedOptions[0]?.textContent ?? "";
    ui.picker.replaceWith(badge);
    ui.demoTag?.remove();
    ui.picker = null;
  }
  conversationTools.showConversation(conversation.id);
}

const conversationUrl = (id) => chat.dataset.conversationUrl.replace(/0\/$/, `${id}/`);

function setTitle(title) {
  ui.title.textContent = title;
  document.title = `${title} · Parley`;
}

const HANDLERS = {
  delta: onDelta, done: onDone, error: onError, message: onMessage, conversation: onConversation, run: tasks.onRunNotice,
  ...Object.fromEntries(tasks.RUN_EVENTS.map((type) => [type, tasks.onRunEvent])),
};

// ---------------------------------------------------------------- the WebSocket

const socket = {
  ws: null,
  attempt: 0,
  timer: 0,
  signedOut: false,

  connect() {
    clearTimeout(this.timer);
    if (this.signedOut || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/chat/`);
    this.ws = ws;
    ws.addEventListener("open", () => { this.attempt = 0; onOpen(); });
    ws.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      HANDLERS[event.type]?.(event);
    });
    ws.addEventListener("close", (close) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (close.code === 4401) {
        this.signedOut = true;
        setConnection("signed-out");
      } else {
        setConnection("reconnecting");
        this.retryLater();
      }
      onDisconnect();
    });
  },

  /** Exponential backoff with jitter so a restarted server is not stampeded by every tab at once. */
  retryLater() {
    const delay = Math.min(BACKOFF_MS.max, BACKOFF_MS.first * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  },

  /** Reconnect now (network back, tab visible again) instead of waiting out the backoff. */
  nudge() {
    if (!this.ws && !this.signedOut) {
      this.attempt = 0;
      this.connect();
    }
  },

  get open() {
    return this.ws?.readyState === WebSocket.OPEN;
  },

  send(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  },
};

function onOpen() {
  setConnection("open");
  for (const reply of state.replies.values()) {
    if (reply.active) attach(reply);
  }
  tasks.reattach();
  if (state.pending && !state.pending.sent) {
    state.pending.sent = socket.send(state.pending.frame);
  }
  updateComposer();
}

/** Follow a reply from the last cursor we hold, or from its start. */
function attach(reply) {
  if (!reply.active) return;
  if (!reply.cursor) {
    // From the start: the stored text may be an older checkpoint, so the stream replaces it.
    reply.text = "";
    reply.length = 0;
  }
  socket.send({ type: "attach", message: reply.id, after: reply.cursor, ref: `attach:${reply.id}` });
}

function onDisconnect() {
  if (state.pending?.sent) {
    // The frame left but its answer did not arrive: it may or may not have been stored.
    state.pending = null;
    showComposerError("The connection dropped while sending. If your message does not appear, send it again.");
  }
  updateComposer();
}

function setConnection(status) {
  const labels = { open: "", reconnecting: "Reconnecting…", "signed-out": "Signed out" };
  ui.connection.textContent = labels[status] ?? "";
  ui.connection.dataset.status = status;
  if (status === "signed-out") {
    showComposerError("Your session has ended. Reload the page to sign in again.");
  }
}

// ---------------------------------------------------------------- the composer

const streamingReplies = () => [...state.replies.values()].filter((reply) => reply.active);

function updateComposer() {
  const streaming = streamingReplies().length > 0;
  ui.stop.hidden = !streaming;
  ui.stop.disabled = streaming && streamingReplies().every((reply) => state.stopping.has(reply.id));
  ui.stop.textContent = ui.stop.disabled ? "Stopping…" : "■ Stop";
  ui.send.hidden = streaming;
  ui.send.disabled = Boolean(state.pending) || state.startingTask || socket.signedOut || Boolean(state.lock);
  ui.task.disabled = ui.send.disabled;
  ui.form.classList.toggle("locked", Boolean(state.lock));
  ui.send.textContent = state.pending ? "Sending…" : "Send";
  ui.task.textContent = state.startingTask ? "Starting…" : narrowScreen.matches ? "Task" : "Run as task";
  ui.form.classList.toggle("busy", streaming || Boolean(state.pending));
}

// On a phone the task button says "Task" (its accessible name stays "Run as task"), so that the
// composer's buttons fit on one row.
const narrowScreen = window.matchMedia("(max-width: 800px)");
narrowScreen.addEventListener("change", () => updateComposer());

function showComposerError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function onInput() {
  // Grow with the text up to a third of the screen, then scroll inside.
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, window.innerHeight / 3)}px`;
  const length = codePoints(ui.input.value);
  const near = length > state.maxChars * 0.8;
  ui.counter.textContent = near ? `${length.toLocaleString()} / ${state.maxChars.toLocaleString()}` : "";
  ui.counter.classList.toggle("over", length > state.maxChars);
  if (!ui.error.hidden && length <= state.maxChars) showComposerError("");
}

function submit() {
  const content = ui.input.value;
  if (!content.trim()) {
    ui.input.focus();
    return;
  }
  if (TASK_COMMAND.test(content)) {
    startTask(content);
    return;
  }
  const length = codePoints(content);
  if (length > state.maxChars) {
    showComposerError(
      `Your message is ${length.toLocaleString()} characters long; the limit is ${state.maxChars.toLocaleString()}. ` +
        "Shorten it or send it in parts.",
    );
    return;
  }
  const frame = { type: "send", conversation: state.conversation, content };
  if (!state.conversation && ui.picker?.value) frame.model = ui.picker.value;
  sendTurn(frame);
}

/** A send, an edit or a regenerate: one at a time, and not while a reply is being written. */
function sendTurn(frame) {
  if (streamingReplies().length) {
    showComposerError("A reply is still being written. Wait for it to finish or press Stop.");
    return;
  }
  if (state.pending) return;
  if (state.lock) {
    ui.banner.animate?.([{ opacity: 0.4 }, { opacity: 1 }], 400); // Enter while paused: point at why
    return;
  }
  if (ui.attach.getAttribute("aria-busy") === "true") {
    showComposerError("Files are still being attached; send once they show above the message.");
    return;
  }
  const ref = `${frame.type}:${state.nextRef++}`;
  Object.assign(frame, { ref });
  if (frame.type === "send" && files.chipIds().length) frame.attachments = files.chipIds();
  showComposerError("");
  state.pending = { ref, frame, sent: socket.send(frame) };
  if (!state.pending.sent) socket.nudge(); // sent as soon as the connection is back
  updateComposer();
}

const TASK_COMMAND = /^\s*\/task(?:\s|$)/;

/** "Run as task" or `/task <goal>`: the text becomes an agent run's goal, in this conversation or a
 * new one (made first, as a first message would make it). */
async function startTask(text) {
  const goal = text.replace(TASK_COMMAND, "").trim();
  if (!goal) {
    showComposerError("Write what the task should do, e.g. “/task Summarise what we said about the budget”.");
    ui.input.focus();
    return;
  }
  if (state.pending || state.startingTask) return;
  if (state.lock) {
    ui.banner.animate?.([{ opacity: 0.4 }, { opacity: 1 }], 400);
    return;
  }
  state.startingTask = true;
  showComposerError("");
  updateComposer();
  try {
    if (!state.conversation) {
      const model = ui.picker?.value || undefined;
      const created = await requestJson("/api/conversations/", { method: "POST", body: { model, title: goal.slice(0, 80) } });
      if (!created.ok) return showRefusal(created.error);
      adoptConversation(created.data);
      refreshSidebar();
    }
    const started = await tasks.start(state.conversation, goal);
    if (started.error) return showRefusal(started.error);
    ui.input.value = "";
    onInput();
    scrollToBottom();
  } finally {
    state.startingTask = false;
    updateComposer();
  }
}

function stop() {
  for (const reply of streamingReplies()) {
    if (socket.send({ type: "stop", message: reply.id, ref: `stop:${reply.id}` })) state.stopping.add(reply.id);
  }
  if (!socket.open) showComposerError("Not connected right now; press Stop again once the connection is back.");
  updateComposer();
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
ui.input.addEventListener("keydown", (event) => {
  // isComposing: Enter that confirms an IME composition (Japanese, Chinese, ...) must not send.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submit();
  } else if (event.key === "ArrowUp" && !ui.input.value && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
    // As in other chat apps: up in an empty composer edits the last message sent.
    const last = [...ui.list.querySelectorAll(":scope > .msg-user")].pop();
    if (last) {
      event.preventDefault();
      startEdit(last);
    }
  }
});
ui.input.addEventListener("input", onInput);
ui.stop.addEventListener("click", stop);
ui.task.addEventListener("click", () => startTask(ui.input.value));

function syncDemoTag() {
  if (ui.picker && ui.demoTag) ui.demoTag.hidden = !ui.picker.selectedOptions[0]?.hasAttribute("data-demo");
}
ui.picker?.addEventListener("change", () => {
  syncDemoTag();
  files.showTotal();
});

// Code blocks: copy button.
ui.list.addEventListener("click", async (event) => {
  const button = event.target.closest(".copy-code");
  if (!button) return;
  const code = button.closest(".code-block")?.querySelector("code");
  if (code) flashButton(button, await copyText(code.textContent));
});

// ---------------------------------------------------------------- plan limits: banner, countdown, meter

const MINUTE = 60;
const HOUR = 3600;
const DAY = 86400;
const METER_GROUPS = [
  ["Today", ["requests_per_day", "tokens_per_day"]],
  ["This month", ["tokens_per_month", "cost_per_month"]],
];
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const SUSPENDED_TEXT = "Your account is suspended: you can read your conversations, but not send messages.";

const pad = (number) => String(number).padStart(2, "0");

/** 42 -> "0:42", 4000 -> "1:06:40", 300000 -> "3 days, 11:20:00". */
function countdownText(seconds) {
  const days = Math.floor(seconds / DAY);
  const hours = Math.floor((seconds % DAY) / HOUR);
  const clock = `${pad(Math.floor((seconds % HOUR) / MINUTE))}:${pad(seconds % MINUTE)}`;
  if (days) return `${days} day${days > 1 ? "s" : ""}, ${hours}:${clock}`;
  return hours ? `${hours}:${clock}` : clock.replace(/^0/, "");
}

function leftText(allowance) {
  const left = Math.max(0, allowance.allowed - allowance.used);
  if (allowance.unit === "usd") return `$${left.toFixed(2)}`;
  return `${compact.format(left)} ${allowance.unit === "requests" ? "messages" : "tokens"}`;
}

function usedText(allowance) {
  if (allowance.unit === "usd") return `$${allowance.used.toFixed(2)}`;
  return allowance.used.toLocaleString();
}

/** Pause sending until `until` (ms since epoch; null: until the server says otherwise), with a live countdown. */
function lockSending(text, until, countdownLabel = "Resets in") {
  clearInterval(state.lockTimer);
  state.lock = { until, countdownLabel };
  ui.limitText.textContent = text;
  ui.banner.hidden = false;
  showComposerError("");
  tick();
  if (until) state.lockTimer = setInterval(tick, 1000);
  updateComposer();
}

function unlockSending() {
  clearInterval(state.lockTimer);
  state.lock = null;
  ui.banner.hidden = true;
  updateComposer();
}

function tick() {
  const until = state.lock?.until;
  if (!until) {
    ui.countdown.textContent = "";
    return;
  }
  const seconds = Math.ceil((until - Date.now()) / 1000);
  if (seconds <= 0) {
    unlockSending();
    loadUsage();
    return;
  }
  ui.countdown.textContent = `${state.lock.countdownLabel} ${countdownText(seconds)}`;
}

function showLimit(event) {
  if (event.code === "suspended") return lockSending(SUSPENDED_TEXT, null);
  const limit = event.limit || {};
  // resets_in, not resets_at: it counts from the server's clock, so a wrong clock here cannot matter.
  const seconds = limit.resets_in ?? event.retry_after ?? 2;
  const text = limit.label ? `You have reached your plan's limit of ${limit.label}.` : event.text;
  if (limit.resets_in == null) {
    // Replies at a time: a slot frees when one of them ends, which this page may not see.
    lockSending(`${text} Wait for a reply to finish.`, Date.now() + seconds * 1000, "Try again in");
  } else {
    lockSending(text, Date.now() + seconds * 1000);
  }
}

function renderUsage(usage) {
  if (!usage) return;
  const byName = new Map(usage.allowances.map((allowance) => [allowance.name, allowance]));
  const items = [];
  for (const [label, names] of METER_GROUPS) {
    const limited = names.map((name) => byName.get(name)).filter(Boolean);
    if (!limited.length) continue;
    const share = Math.min(...limited.map((a) => (a.allowed > 0 ? Math.max(0, 1 - a.used / a.allowed) : 0)));
    const item = document.createElement("span");
    item.className = `usage-item${share < 0.2 ? " low" : ""}`;
    item.title = limited.map((a) => `${usedText(a)} used of ${a.label}`).join("\n");
    const meter = document.createElement("meter");
    Object.assign(meter, { min: 0, max: 1, low: 0.2, high: 0.5, optimum: 1, value: share });
    meter.setAttribute("aria-label", `${label}: ${Math.round(share * 100)} % left`);
    const text = document.createElement("span");
    text.textContent = `${label}: ${limited.map(leftText).join(" · ")} left`;
    item.append(meter, text);
    items.push(item);
  }
  ui.meter.replaceChildren(...items);
  ui.meter.hidden = !items.length;
  if (usage.suspended) return lockSending(SUSPENDED_TEXT, null);
  if (state.lock && !state.lock.until) unlockSending(); // the suspension was lifted
  const spent = usage.allowances.find((a) => a.used >= a.allowed);
  if (spent && !state.lock) {
    lockSending(`You have reached your plan's limit of ${spent.label}.`, Date.now() + spent.resets_in * 1000);
  }
}

async function loadUsage() {
  try {
    const response = await fetch("/api/usage/", { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.ok) renderUsage(await response.json());
  } catch {
    // the meter waits for the next reply; sending is unaffected
  }
}

let usageLoad = null;
function scheduleUsageLoad() {
  // The charge lands just after the final event; several replies ending together make one request.
  clearTimeout(usageLoad);
  usageLoad = setTimeout(loadUsage, 600);
}

// ---------------------------------------------------------------- earlier messages (htmx partial)

// "Load earlier messages" swaps #earlier for the next one (chat/views.py `earlier`), which carries
// the older page as JSON. Its messages are drawn like every other, above the first one, and the
// view keeps its distance from the bottom, so what the reader was looking at stays put.
let earlierFromBottom = null;

document.body.addEventListener("htmx:beforeSwap", (event) => {
  if (event.detail.target?.id === "earlier") earlierFromBottom = ui.messages.scrollHeight - ui.messages.scrollTop;
});

document.body.addEventListener("htmx:afterSwap", (event) => {
  const earlier = event.target;
  if (earlier.id !== "earlier") return;
  const data = earlier.querySelector('script[type="application/json"]');
  const messages = data ? JSON.parse(data.textContent) : [];
  data?.remove();
  const first = ui.list.querySelector(".msg");
  for (const message of messages) {
    const reply = addMessage(message, (element) => ui.list.insertBefore(element, first));
    if (reply?.active) attach(reply);
  }
  tasks.reposition();
  if (earlierFromBottom !== null) ui.messages.scrollTop = ui.messages.scrollHeight - earlierFromBottom;
  earlierFromBottom = null;
  // htmx keeps focus on the next button; at the start of the conversation, move it to the oldest message.
  const oldest = ui.list.querySelector(".msg");
  if (!$("load-earlier") && messages.length && (!document.activeElement || document.activeElement === document.body)) {
    oldest.tabIndex = -1;
    oldest.focus({ preventScroll: true });
  }
  updateComposer();
});

document.body.addEventListener("htmx:responseError", onEarlierFailed);
document.body.addEventListener("htmx:sendError", onEarlierFailed);

function onEarlierFailed(event) {
  const button = event.detail.elt;
  if (button?.id === "load-earlier") button.textContent = "Could not load earlier messages. Try again";
}

// ---------------------------------------------------------------- sidebar (htmx partials)

function refreshSidebar() {
  document.body.dispatchEvent(new CustomEvent("parley:conversations-changed"));
}

// The list is redrawn when conversations change (here or in another tab), but never under a
// rename form someone is typing in, nor while one is on its way: the redraw waits until the form
// is saved or cancelled. A redraw already in flight when Rename was pressed is not swapped in.
let sidebarStale = false;
let renamePending = false;
const isRenameButton = (elt) => Boolean(elt?.classList?.contains("rename-button"));
const renaming = () => renamePending || Boolean(document.querySelector("#conversation-list .rename-form"));
document.body.addEventListener("htmx:beforeRequest", (event) => {
  if (isRenameButton(event.detail.elt)) renamePending = true;
  else if (event.detail.elt?.id === "conversation-list" && renaming()) {
    event.preventDefault();
    sidebarStale = true;
  }
});
// The button is gone once its form is swapped in, so its later events never reach the body:
// the wait ends here, when the form is about to take its place (or the answer was an error).
// (htmx names the element an event is dispatched on `elt`; the one that asked is the request's.)
document.body.addEventListener("htmx:beforeSwap", (event) => {
  if (isRenameButton(event.detail.requestConfig?.elt)) renamePending = false;
  else if (event.detail.elt?.id === "conversation-list" && renaming()) {
    event.detail.shouldSwap = false;
    sidebarStale = true;
  }
});
document.body.addEventListener("htmx:afterRequest", (event) => {
  if (event.detail.successful) return;
  // No answer, or one that was not swapped in: nothing will settle, so the waiting redraw goes now.
  if (isRenameButton(event.detail.requestConfig?.elt)) renamePending = false;
  redrawIfStale();
});
document.body.addEventListener("htmx:afterSettle", redrawIfStale);
function redrawIfStale() {
  if (sidebarStale && !renaming()) {
    sidebarStale = false;
    refreshSidebar();
  }
}

document.body.addEventListener("parley:conversation-renamed", (event) => {
  if (event.detail?.id === state.conversation) setTitle(event.detail.title);
});

// After a refresh, pick up an automatic title for the open conversation.
document.body.addEventListener("htmx:afterSettle", () => {
  const link = state.conversation && document.querySelector(`#conversation-${state.conversation} .conversation-link`);
  // Only a placeholder or the question's words are replaced: a sidebar rendered a moment earlier
  // must not undo a newer title.
  const current = ui.title.textContent.trim();
  const replaceable = hasPlaceholderTitle() || (state.provisionalTitle && current === state.provisionalTitle);
  if (link && replaceable && link.textContent.trim() !== current) setTitle(link.textContent.trim());
});

function setSidebar(open) {
  ui.shell.classList.toggle("sidebar-open", open);
  ui.sidebarToggle.setAttribute("aria-expanded", String(open));
  ui.scrim.hidden = !open;
}
ui.sidebarToggle.addEventListener("click", () => setSidebar(!ui.shell.classList.contains("sidebar-open")));
ui.scrim.addEventListener("click", () => setSidebar(false));
// Keyboard: Escape closes the sidebar, else stops the reply being written (not while a form or
// dialog has the key: it cancels those); Ctrl+Shift+O (⌘⇧O) starts a new chat, as elsewhere.
document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing) return;
  if (event.key === "Escape") {
    if (ui.shell.classList.contains("sidebar-open")) return setSidebar(false);
    if (event.target.closest?.("dialog, form:not(#composer)")) return;
    if (!ui.stop.hidden && !ui.stop.disabled) {
      event.preventDefault();
      stop();
    }
  } else if ((event.ctrlKey || event.metaKey) && event.shiftKey && event.key.toLowerCase() === "o") {
    event.preventDefault();
    window.location.assign($("new-chat").href);
  }
});

// ---------------------------------------------------------------- start

function start() {
  tasks.setUp({
    list: ui.list,
    welcome: ui.welcome,
    notices: ui.runNotices,
    send: (frame) => socket.send(frame),
    conversation: () => state.conversation,
    conversationUrl,
    nearBottom,
    scrollToBottom,
  });
  conversationTools.setUp({
    conversation: () => state.conversation,
    model: () => ui.picker?.value || undefined,
    adopt: (conversation) => {
      adoptConversation(conversation);
      refreshSidebar();
    },
  });
  conversationTools.showConversation(state.conversation);
  const messages = JSON.parse($("chat-messages").textContent);
  for (const message of messages) appendMessage(message);
  tasks.showConversation(state.conversation);
  syncDemoTag();
  renderUsage(JSON.parse($("chat-usage").textContent));
  files.setUp({
    list: ui.uploads,
    total: ui.uploadTotal,
    button: ui.attach,
    input: ui.attachInput,
    chat,
    limits: { imageMaxBytes: state.imageMaxBytes, uploadMaxBytes: state.uploadMaxBytes, attachmentsMax: state.attachmentsMax },
    conversation: () => state.conversation,
    picker: () => ui.picker,
    showError: showComposerError,
    showRefusal,
    adoptConversation,
    refreshSidebar,
  });
  files.showUploads(JSON.parse($("chat-uploads").textContent));
  onInput();
  scrollToBottom(); // after the meter and the composer have taken their height
  updateComposer();
  socket.connect();
  window.addEventListener("online", () => socket.nudge());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) socket.nudge();
  });
  if (!("ontouchstart" in window)) ui.input.focus();
}

start();
