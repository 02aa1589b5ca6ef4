// Parley's chat page: one WebSocket, replies streamed by cursor (see docs/streaming.md).
//
// Every assistant reply that is still being written is "attached" with the last cursor seen, so a
// reload, a second tab or a reconnect after a network blip continues exactly where it left off.
// Agent runs ("Run as task", `/task <goal>`) are drawn and followed the same way by tasks.js.

import { renderMarkdown } from "./markdown.js";
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
  shell: $("shell"),
  sidebarToggle: $("sidebar-toggle"),
  scrim: $("scrim"),
};

const state = {
  conversation: Number(chat.dataset.conversation) || null,
  maxChars: Number(chat.dataset.maxChars) || 32000,
  uploadMaxBytes: Number(chat.dataset.uploadMaxBytes) || 5 * 1024 * 1024,
  replies: new Map(), // assistant message id -> Reply, for every reply drawn on the page
  pending: null, // the send awaiting its `message` answer: {ref, frame, sent}
  stopping: new Set(),
  nextRef: 1,
  startingTask: false, // a "Run as task" request is under way
  awaitingTitle: false, // the open conversation's automatic title is still to come
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
  }

  get active() {
    return ACTIVE.has(this.status);
  }
}

function messageElement(message) {
  const element = document.createElement("article");
  element.className = `msg msg-${message.role}`;
  element.dataset.id = message.id;
  element.dataset.created = Date.parse(message.created); // task cards are placed among messages by time
  const notice = document.createElement("p");
  notice.className = "msg-notice";
  notice.hidden = !message.notice;
  notice.textContent = message.notice || "";
  const body = document.createElement("div");
  body.className = message.role === "user" ? "msg-body plain" : "msg-body markdown";
  const foot = document.createElement("div");
  foot.className = "msg-foot";
  element.append(notice, body, foot);
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
    return null;
  }
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

function finish(reply, event) {
  reply.status = event.status;
  reply.cursor = event.cursor ?? reply.cursor;
  state.stopping.delete(reply.id);
  paint(reply);
  updateComposer();
  refreshSidebar(); // an automatic title may have been given
  scheduleUsageLoad(); // the reply has been charged: the meter moves
}

const PLACEHOLDER_TITLES = new Set(["New chat", "New conversation"]);
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
    finish(reply, { status: event.status || "failed", cursor: event.cursor });
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
    state.pending = null;
    ui.input.value = "";
    onInput();
  }
  if (!state.conversation) adoptConversation(event.conversation);
  state.awaitingTitle = hasPlaceholderTitle();
  appendMessage(event.user_message);
  const reply = appendMessage(event.assistant_message);
  if (reply) reply.cursor = ""; // the server attached this socket to the reply from its start
  scrollToBottom();
  updateComposer();
  refreshSidebar();
}

/** Another tab (or an API client) sent a message: follow its reply if it belongs to this page. */
function onNoticeOfSend(event) {
  refreshSidebar();
  if (event.conversation.id !== state.conversation || state.replies.has(event.assistant_message.id)) return;
  appendMessage(event.user_message);
  const reply = appendMessage(event.assistant_message);
  if (reply) {
    reply.cursor = "";
    attach(reply);
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
    // The model is fixed once the conversation exists: show it the way the conversation page does.
    const badge = document.createElement("span");
    badge.className = "model-badge";
    badge.textContent = ui.picker.selectedOptions[0]?.textContent ?? "";
    ui.picker.replaceWith(badge);
    ui.demoTag?.remove();
    ui.picker = null;
  }
  ui.attach.disabled = false; // files belong to a conversation: now there is one
  ui.attach.title = ui.attach.dataset.title;
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
  ui.task.textContent = state.startingTask ? "Starting…" : "Run as task";
  ui.form.classList.toggle("busy", streaming || Boolean(state.pending));
}

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
  if (streamingReplies().length) {
    showComposerError("A reply is still being written. Wait for it to finish or press Stop.");
    return;
  }
  if (state.pending) return;
  if (state.lock) {
    ui.banner.animate?.([{ opacity: 0.4 }, { opacity: 1 }], 400); // Enter while paused: point at why
    return;
  }
  const ref = `send:${state.nextRef++}`;
  const frame = { type: "send", conversation: state.conversation, content, ref };
  if (!state.conversation && ui.picker?.value) frame.model = ui.picker.value;
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
  }
});
ui.input.addEventListener("input", onInput);
ui.stop.addEventListener("click", stop);
ui.task.addEventListener("click", () => startTask(ui.input.value));

function syncDemoTag() {
  if (ui.picker && ui.demoTag) ui.demoTag.hidden = !ui.picker.selectedOptions[0]?.hasAttribute("data-demo");
}
ui.picker?.addEventListener("change", syncDemoTag);

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
  // The list is a live region: a page of old messages is not news to read out.
  ui.messages.setAttribute("aria-live", "off");
  for (const message of messages) {
    const reply = addMessage(message, (element) => ui.list.insertBefore(element, first));
    if (reply?.active) attach(reply);
  }
  tasks.reposition();
  if (earlierFromBottom !== null) ui.messages.scrollTop = ui.messages.scrollHeight - earlierFromBottom;
  earlierFromBottom = null;
  requestAnimationFrame(() => ui.messages.setAttribute("aria-live", "polite"));
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

// ---------------------------------------------------------------- attached files

// The same token htmx sends (base.html): the upload and delete requests ride on the session cookie.
const CSRF_TOKEN = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";

function sizeText(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  return bytes >= 1024 ? `${Math.round(bytes / 1024)} KB` : `${bytes} bytes`;
}

function uploadItem(upload) {
  const item = document.createElement("li");
  item.className = "upload-item";
  item.dataset.id = upload.id;
  const link = Object.assign(document.createElement("a"), { href: `/api/uploads/${upload.id}`, textContent: upload.name, title: upload.name });
  const size = Object.assign(document.createElement("span"), { className: "upload-size", textContent: sizeText(upload.size) });
  const remove = Object.assign(document.createElement("button"), {
    type: "button", className: "icon-button danger upload-remove", textContent: "×", title: "Remove",
  });
  remove.setAttribute("aria-label", `Remove ${upload.name}`);
  item.append(link, size, remove);
  return item;
}

function showUploads(uploads) {
  ui.uploads.append(...uploads.map(uploadItem));
  ui.uploads.hidden = !ui.uploads.children.length;
}

/** The error's words from the API's one error shape, or a fallback. */
async function errorText(response, fallback) {
  try {
    return (await response.json()).error?.text || fallback;
  } catch {
    return fallback;
  }
}

const api = (url, options) =>
  fetch(url, { credentials: "same-origin", ...options, headers: { Accept: "application/json", "X-CSRFToken": CSRF_TOKEN } });

async function attachFile(file) {
  if (file.size > state.uploadMaxBytes) {
    showComposerError(`${file.name}: the file is larger than ${sizeText(state.uploadMaxBytes)}, the most a file may have.`);
    return;
  }
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await api(`/api/conversations/${state.conversation}/uploads`, { method: "POST", body });
    if (!response.ok) {
      showComposerError(`${file.name}: ${await errorText(response, "the file could not be attached.")}`);
      return;
    }
    showUploads([(await response.json()).upload]);
  } catch {
    showComposerError(`${file.name}: the file could not be sent. Check the connection and try again.`);
  }
}

ui.attach.addEventListener("click", () => ui.attachInput.click());
ui.attachInput.addEventListener("change", async () => {
  const files = [...ui.attachInput.files];
  ui.attachInput.value = ""; // the same file may be chosen again
  if (!state.conversation || !files.length) return;
  showComposerError("");
  ui.attach.disabled = true;
  ui.attach.setAttribute("aria-busy", "true");
  for (const file of files) await attachFile(file);
  ui.attach.disabled = false;
  ui.attach.removeAttribute("aria-busy");
});

ui.uploads.addEventListener("click", async (event) => {
  const button = event.target.closest(".upload-remove");
  if (!button) return;
  const item = button.closest(".upload-item");
  button.disabled = true;
  try {
    const response = await api(`/api/uploads/${item.dataset.id}`, { method: "DELETE" });
    // 404: already removed, from another tab.
    if (response.ok || response.status === 404) {
      item.remove();
      ui.uploads.hidden = !ui.uploads.children.length;
      return;
    }
    showComposerError(await errorText(response, "The file could not be removed."));
  } catch {
    showComposerError("The file could not be removed. Check the connection and try again.");
  }
  button.disabled = false;
});

// ---------------------------------------------------------------- sidebar (htmx partials)

function refreshSidebar() {
  document.body.dispatchEvent(new CustomEvent("parley:conversations-changed"));
}

document.body.addEventListener("parley:conversation-renamed", (event) => {
  if (event.detail?.id === state.conversation) setTitle(event.detail.title);
});

// After a refresh, pick up an automatic title for the open conversation.
document.body.addEventListener("htmx:afterSettle", () => {
  const link = state.conversation && document.querySelector(`#conversation-${state.conversation} .conversation-link`);
  // Only a placeholder is replaced: a sidebar rendered a moment earlier must not undo a newer title.
  if (link && hasPlaceholderTitle() && link.textContent.trim() !== ui.title.textContent) setTitle(link.textContent.trim());
});

function setSidebar(open) {
  ui.shell.classList.toggle("sidebar-open", open);
  ui.sidebarToggle.setAttribute("aria-expanded", String(open));
  ui.scrim.hidden = !open;
}
ui.sidebarToggle.addEventListener("click", () => setSidebar(!ui.shell.classList.contains("sidebar-open")));
ui.scrim.addEventListener("click", () => setSidebar(false));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") setSidebar(false);
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
  const messages = JSON.parse($("chat-messages").textContent);
  for (const message of messages) appendMessage(message);
  tasks.showConversation(state.conversation);
  syncDemoTag();
  renderUsage(JSON.parse($("chat-usage").textContent));
  showUploads(JSON.parse($("chat-uploads").textContent));
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
