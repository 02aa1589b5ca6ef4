// Task cards: agent runs drawn in the conversation among its messages and followed live (see
// docs/streaming.md, "Agent runs' events").
//
// A card is built from the run as the database has it (GET /api/runs/<id>), then follows the run's
// log from the run's `cursor` over the page's WebSocket, so a reload, a second tab or a reconnect
// shows every step once. Whatever the run or the model wrote is set as text; only the final result
// is Markdown, drawn through markdown.js like a reply.

import { renderMarkdown } from "./markdown.js";
import { requestJson } from "./ui.js";

const ACTIVE = new Set(["queued", "running", "awaiting_approval"]);
const RUN_LABELS = {
  queued: "Queued",
  running: "Working",
  awaiting_approval: "Waiting for your approval",
  succeeded: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
  interrupted: "Interrupted",
};
const STEP_LABELS = {
  running: "Running",
  awaiting_approval: "Waiting",
  succeeded: "Done",
  failed: "Failed",
  refused: "Refused",
  rejected: "Rejected",
  skipped: "Skipped",
};
// When a run that ended badly has no words of its own.
const ENDINGS = {
  failed: "The task failed.",
  interrupted: "The task stopped before it finished: the server working on it was lost.",
};
const TASK_ICON =
  '<svg viewBox="0 0 20 20" width="18" height="18" aria-hidden="true"><path d="M4 5.5l1.5 1.5L8 4.5M4 10.5l1.5 1.5L8 9.5M4 15.5l1.5 1.5L8 14.5M11 6h6M11 11h6M11 16h4" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round" stroke-linejoin="round"/></svg>';

let page = null; // what chat.js lends: {list, welcome, notices, send, conversation, conversationUrl, nearBottom, scrollToBottom}
const tasks = new Map(); // run id -> Task, for every card on the page
const waitingElsewhere = new Map(); // run id -> its banner, for runs of other conversations awaiting approval
let shown = null; // the conversation whose runs were loaded
let loading = null; // the conversation whose runs are being loaded

/** "<n>-<seq>" -> a number that orders cursors, or null. */
const cursorKey = (cursor) => {
  const match = /^(\d+)-(\d+)$/.exec(String(cursor ?? ""));
  return match ? Number(match[1]) * 2 + Number(match[2]) : null;
};

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text; // never HTML
  return node;
}

function button(label, className, onClick) {
  const node = element("button", className, label);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

const pretty = (value) => JSON.stringify(value, null, 2) ?? "null";
const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  return bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KB` : `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function durationText(started, finished) {
  const seconds = Math.round((Date.parse(finished) - Date.parse(started)) / 1000);
  if (!(seconds >= 0)) return "";
  return seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

// ---------------------------------------------------------------- one card

class Task {
  constructor(run) {
    this.id = run.id;
    this.steps = new Map(); // index -> step, as AgentStep.as_dict() has it
    this.stepViews = new Map(); // index -> its list item
    this.key = -1;
    this.build();
    this.load(run);
  }

  get active() {
    return ACTIVE.has(this.run.status);
  }

  build() {
    const card = element("article", "task-card");
    card.dataset.run = this.id;
    card.setAttribute("aria-live", "off"); // not live as a whole: only the parts below speak
    const head = element("header", "task-head");
    const icon = element("span", "task-icon");
    icon.innerHTML = TASK_ICON; // a constant, no data
    const heading = element("div", "task-heading");
    this.label = element("p", "task-label");
    this.state = element("span", "task-state");
    this.state.setAttribute("aria-live", "polite");
    this.label.append("Task · ", this.state);
    this.goal = element("h2", "task-goal");
    heading.append(this.label, this.goal);
    this.cancelButton = button("Cancel", "button small task-cancel", () => this.cancel());
    head.append(icon, heading, this.cancelButton);

    this.progress = element("div", "task-progress");
    this.bar = element("progress");
    this.bar.max = 100;
    this.bar.setAttribute("aria-label", "Task progress");
    this.percent = element("span", "task-percent");
    this.percent.setAttribute("aria-hidden", "true"); // the bar says it
    this.current = element("p", "task-current");
    this.current.setAttribute("aria-live", "polite");
    const track = element("div", "task-track");
    track.append(this.bar, this.percent);
    this.progress.append(track, this.current);

    this.approval = element("section", "task-approval");
    this.approval.setAttribute("aria-label", "Approval");
    this.notice = element("p", "task-notice");
    this.notice.setAttribute("role", "alert");
    this.notice.hidden = true;
    this.error = element("p", "task-error");
    this.result = element("div", "task-result markdown");
    this.files = element("ul", "task-files");
    this.files.setAttribute("aria-label", "Files");

    this.log = element("details", "task-log");
    this.logSummary = element("summary");
    this.stepList = element("ol", "task-steps");
    this.log.append(this.logSummary, this.stepList);
    this.totals = element("span", "task-totals");
    this.foot = element("div", "task-foot");
    this.foot.append(this.log, this.totals);

    card.append(head, this.progress, this.approval, this.notice, this.error, this.result, this.files, this.foot);
    this.card = card;
  }

  /** Draw the run as the database has it: on the first sight of it, and once it has ended. */
  load(run) {
    this.run = { ...run };
    this.artifacts = run.artifacts || [];
    for (const step of run.steps || []) this.steps.set(step.index, { ...step });
    this.key = Math.max(this.key, cursorKey(run.cursor) ?? -1);
    this.cursor = run.cursor || "0-0";
    this.card.dataset.created = Date.parse(run.created);
    for (const step of this.steps.values()) this.paintStep(step);
    this.paint();
  }

  /** What only the database knows mid-run (step ids for approvals, expiry, refusals, files); the
   * log goes on from where this card is, so nothing streamed is lost. */
  async merge() {
    const answer = await requestJson(`/api/runs/${this.id}`);
    if (!answer.ok) return;
    const run = answer.data.run;
    if (!ACTIVE.has(run.status) && this.active) return this.refresh(run);
    for (const stored of run.steps) {
      const step = this.steps.get(stored.index);
      if (!step) continue;
      Object.assign(step, { id: stored.id, expires: stored.expires, decided_by: stored.decided_by });
      if (stored.status === "refused") step.status = "refused";
      this.paintStep(step);
    }
    this.artifacts = run.artifacts;
    this.paint();
  }

  /** The ended run, whole: final statuses and the files. */
  async refresh(run = null) {
    if (!run) {
      const answer = await requestJson(`/api/runs/${this.id}`);
      if (!answer.ok) return;
      run = answer.data.run;
    }
    const stick = page.nearBottom();
    this.load(run);
    if (stick) page.scrollToBottom();
  }

  attach() {
    if (this.active) page.send({ type: "attach_run", run: this.id, after: this.cursor, ref: `attach_run:${this.id}` });
  }

  apply(event) {
    const key = cursorKey(event.cursor);
    if (key !== null && key <= this.key) return; // drawn already (a resend after a reconnect)
    if (key !== null) {
      this.key = key;
      this.cursor = event.cursor;
    }
    const stick = page.nearBottom();
    EVENTS[event.type]?.(this, event, this.steps.get(event.step));
    this.paint();
    if (stick) page.scrollToBottom();
  }

  addStep(event) {
    // An approval waits once `approval_requested` brings what it is for.
    const step = { index: event.step, kind: event.kind, title: event.title, text: "", arguments: {}, result: null, error: null, status: "running" };
    this.steps.set(step.index, step);
    return step;
  }

  async cancel() {
    this.cancelButton.disabled = true;
    this.cancelButton.textContent = "Cancelling…";
    const answer = await requestJson(`/api/runs/${this.id}/cancel`, { method: "POST", body: {} });
    if (!answer.ok && answer.error.code !== "run_finished") {
      this.say(answer.error.text);
      this.cancelButton.disabled = false;
      this.cancelButton.textContent = "Cancel";
    }
    // The run's own `run_finished` brings the end; this covers a socket that is down meanwhile.
    if (!answer.ok || !ACTIVE.has(answer.data.run.status)) setTimeout(() => this.active && this.refresh(), 1500);
  }

  async decide(step, decision) {
    const hadFocus = this.approval.contains(document.activeElement);
    for (const control of this.approval.querySelectorAll("button")) control.disabled = true;
    if (!step.id) await this.merge(); // the event named the step's place; approvals go by its id
    const answer = step.id
      ? await requestJson(`/api/runs/${this.id}/approvals/${step.id}`, { method: "POST", body: { decision } })
      : { ok: false, error: { text: "The step could not be found. Reload the page and try again." } };
    if (answer.ok) {
      Object.assign(step, { status: answer.data.step.status, decided_by: answer.data.step.decided_by });
      this.run.status = "queued";
      this.say("");
    } else {
      this.say(answer.error.text);
      for (const control of this.approval.querySelectorAll("button")) control.disabled = false;
      this.merge(); // decided in another tab, or expired: show what is so
    }
    this.paintStep(step);
    this.paint();
    if (hadFocus && this.approval.hidden) {
      // The panel and its buttons are gone: keep the keyboard's place on the card, not the page.
      this.card.tabIndex = -1;
      this.card.focus({ preventScroll: true });
    }
  }

  say(text) {
    this.notice.textContent = text;
    this.notice.hidden = !text;
  }

  // -------------------------------------------------------------- drawing

  paint() {
    const run = this.run;
    const active = this.active;
    this.card.dataset.status = run.status;
    this.state.textContent = RUN_LABELS[run.status] ?? run.status;
    this.goal.textContent = run.goal;

    this.progress.hidden = !active;
    // While a step waits, its panel below says what for.
    this.current.hidden = run.status === "awaiting_approval";
    this.bar.value = run.progress;
    this.percent.textContent = `${run.progress} %`;
    const current = run.current_step || (run.status === "queued" ? "Waiting to start" : "Starting");
    if (this.current.textContent !== current) this.current.textContent = current; // read out only when it changes
    this.cancelButton.hidden = !active;
    if (!active) this.cancelButton.disabled = false;

    this.paintApproval();
    const ending = run.status === "failed" || run.status === "interrupted" ? run.error_text || ENDINGS[run.status] : "";
    this.error.textContent = ending;
    this.error.hidden = !ending;
    const result = run.status === "succeeded" ? run.result || "" : "";
    if (result !== this.drawnResult) renderMarkdown(this.result, result);
    this.drawnResult = result;
    this.result.hidden = !result;
    this.paintFiles();

    const count = [...this.steps.values()].filter((step) => step.kind !== "approval").length;
    this.logSummary.textContent = count ? `Steps (${count})` : "Steps";
    this.log.hidden = !this.steps.size;
    this.totals.textContent = active ? "" : this.totalsText();
    this.foot.hidden = this.log.hidden && !this.totals.textContent;
  }

  totalsText() {
    const parts = [];
    if (this.run.tokens) parts.push(`${this.run.tokens.toLocaleString()} tokens`);
    const cost = Number(this.run.cost_usd);
    if (cost > 0) parts.push(`$${cost < 0.01 ? cost.toFixed(4) : cost.toFixed(2)}`);
    if (this.run.started && this.run.finished) parts.push(durationText(this.run.started, this.run.finished));
    return parts.filter(Boolean).join(" · ");
  }

  paintFiles() {
    const names = this.artifacts.map((file) => `${file.name}:${file.size}`).join("/");
    if (names === this.drawnFiles) return;
    this.drawnFiles = names;
    this.files.replaceChildren(
      ...this.artifacts.map((file) => {
        const item = element("li");
        const link = element("a", "task-file", file.name);
        link.href = `/api/runs/${this.id}/artifacts/${encodeURIComponent(file.name)}`;
        link.download = file.name;
        item.append(link, element("span", "task-file-size", sizeText(file.size)));
        return item;
      }),
    );
    this.files.hidden = !this.artifacts.length;
  }

  /** The step that waits for the user: its exact arguments, with Approve and Reject. Built once per
   * step, so repainting never takes the focus from its buttons. */
  paintApproval() {
    const step = this.active && [...this.steps.values()].find((s) => s.status === "awaiting_approval");
    const drawn = step ? JSON.stringify([step.index, step.expires, step.arguments]) : null;
    if (drawn === this.drawnApproval) return;
    this.drawnApproval = drawn;
    this.approval.hidden = !step;
    if (!step) {
      this.approval.replaceChildren();
      return;
    }
    const what = element("p", "task-approval-what");
    what.append("This step needs your approval before it runs: ", element("code", "", step.tool || "a tool"), " with exactly these arguments.");
    const actions = element("div", "task-approval-actions");
    actions.append(
      button("Approve", "button primary small", () => this.decide(step, "approve")),
      button("Reject", "button danger small", () => this.decide(step, "reject")),
    );
    if (step.expires) actions.append(element("span", "task-approval-expiry", `Counts as rejected if not decided by ${clock(step.expires)}.`));
    this.approval.replaceChildren(
      element("h3", "task-approval-title", step.title),
      what,
      element("pre", "task-json", pretty(step.arguments)),
      actions,
    );
  }

  paintStep(step) {
    let view = this.stepViews.get(step.index);
    if (!view) {
      view = { item: element("li", "task-step"), details: element("details"), summary: element("summary") };
      view.title = element("span", "task-step-title");
      view.status = element("span", "task-step-status");
      view.body = element("div", "task-step-body");
      view.error = element("p", "task-step-error");
      view.summary.append(view.title, view.status);
      view.details.append(view.summary, view.body);
      view.item.append(view.details, view.error);
      view.item.dataset.index = step.index;
      this.stepViews.set(step.index, view);
      const next = [...this.stepViews.keys()].filter((index) => index > step.index).sort((a, b) => a - b)[0];
      this.stepList.insertBefore(view.item, next === undefined ? null : this.stepViews.get(next).item);
    }
    view.item.dataset.status = step.status;
    view.item.dataset.kind = step.kind;
    view.title.textContent = step.title;
    view.status.textContent = STEP_LABELS[step.status] ?? step.status;
    const parts = stepBody(step);
    view.body.replaceChildren(...parts);
    // A step with nothing to show is a plain line: no disclosure to open, no stop for the Tab key.
    view.item.classList.toggle("bare", !parts.length);
    view.summary.tabIndex = parts.length ? 0 : -1;
    view.error.textContent = step.error || "";
    view.error.hidden = !step.error;
  }
}

function stepBody(step) {
  const parts = [];
  const block = (label, value) => parts.push(element("p", "task-step-label", label), element("pre", "task-json", pretty(value)));
  if (step.kind === "model" && step.text) parts.push(element("p", "task-step-text", step.text));
  if (step.kind !== "model" && step.arguments && (step.tool || Object.keys(step.arguments).length)) {
    block("Arguments", step.arguments);
  }
  if (step.kind === "tool" && step.result != null) block("Result", step.result);
  if (step.kind === "approval" && step.decided_by) {
    const verb = step.status === "rejected" ? "Rejected" : "Approved";
    parts.push(element("p", "task-step-text", `${verb} by ${step.decided_by}${step.note ? `: ${step.note}` : "."}`));
  } else if (step.kind === "approval" && step.note) {
    parts.push(element("p", "task-step-text", step.note));
  }
  return parts;
}

// What each event of a run's log changes; every handler's card is painted after it.
const EVENTS = {
  run_started(task) {
    if (task.run.status === "queued") task.run.status = "running";
  },
  step_started(task, event) {
    task.paintStep(task.addStep(event));
  },
  step_delta(task, event, step) {
    if (!step) return;
    step.text += event.text;
    task.paintStep(step);
  },
  tool_call(task, event, step) {
    if (!step) return;
    Object.assign(step, { tool: event.tool, call_id: event.call_id, arguments: event.arguments });
    task.paintStep(step);
  },
  tool_result(task, event, step) {
    if (!step) return;
    Object.assign(step, { result: event.result, error: event.error });
    task.paintStep(step);
  },
  approval_requested(task, event, step) {
    if (!step) return;
    Object.assign(step, { tool: event.tool, arguments: event.arguments, status: "awaiting_approval" });
    task.run.status = "awaiting_approval";
    task.paintStep(step);
    task.merge(); // for the step's id, which its approval is posted to
  },
  approval_decided(task, event, step) {
    if (!step) return;
    Object.assign(step, { status: event.decision === "approve" ? "succeeded" : "rejected", note: event.note });
    task.run.status = "queued";
    task.run.current_step = event.decision === "approve" ? "Approved; going on" : "Rejected; going on without it";
    task.paintStep(step);
    task.merge(); // who decided
  },
  step_finished(task, event, step) {
    if (!step) return;
    if (step.status !== "refused") step.status = event.status;
    step.tokens = event.tokens;
    task.paintStep(step);
  },
  progress(task, event) {
    if (task.run.status === "queued") task.run.status = "running";
    Object.assign(task.run, { progress: event.percent, current_step: event.current });
  },
  run_finished(task, event) {
    const { status, result, error_code, error_text, tokens, cost_usd } = event;
    Object.assign(task.run, { status, result, error_code, error_text, tokens, cost_usd, current_step: "" });
    if (status === "succeeded") task.run.progress = 100;
    task.refresh(); // final step statuses, the files, the times
  },
};

/** The types of a run's log events (streaming/events.py), for the socket to hand to this module. */
export const RUN_EVENTS = Object.keys(EVENTS);

// ---------------------------------------------------------------- the page's side

/** Where cards go among the messages: before the first item that came later. */
function place(card) {
  const at = Number(card.dataset.created);
  const items = page.list.querySelectorAll(":scope > .msg, :scope > .task-card");
  const later = [...items].find((item) => item !== card && Number(item.dataset.created) > at);
  page.list.insertBefore(card, later ?? null);
}

function show(run) {
  let task = tasks.get(run.id);
  if (task) return task;
  task = new Task(run);
  tasks.set(run.id, task);
  page.welcome.hidden = true;
  place(task.card);
  task.attach();
  return task;
}

export function setUp(hooks) {
  page = hooks;
}

/** The runs of the conversation the page shows, from the database; the active ones are followed. */
export async function showConversation(conversation) {
  if (!conversation || shown === conversation || loading === conversation) return;
  loading = conversation;
  const answer = await requestJson(`/api/conversations/${conversation}/runs`);
  loading = null;
  if (!answer.ok) return; // tried again when the socket (re)opens
  shown = conversation;
  for (const run of answer.data.runs) show(run);
}

/** Start a run of `goal` in the conversation; {error} when refused. */
export async function start(conversation, goal) {
  const answer = await requestJson(`/api/conversations/${conversation}/runs`, { method: "POST", body: { goal } });
  if (!answer.ok) return { error: answer.error };
  show(answer.data.run);
  return {};
}

/** The socket is open (again): follow every active run from where its card is. */
export function reattach() {
  if (page.conversation() && shown !== page.conversation()) showConversation(page.conversation());
  for (const task of tasks.values()) task.attach();
}

/** Cards go back among the messages after a page of earlier messages was drawn above them. */
export function reposition() {
  for (const task of tasks.values()) place(task.card);
}

export function onRunEvent(event) {
  tasks.get(event.run)?.apply(event);
}

/** A run of the user's started, waits, was decided or ended, in this tab or any other. */
export async function onRunNotice(event) {
  const run = event.run;
  noteElsewhere(run);
  if (run.conversation !== page.conversation()) return;
  const task = tasks.get(run.id);
  if (task) {
    // Its `run_finished` comes through the log; should the log have failed this card, read the end.
    if (!ACTIVE.has(run.status)) setTimeout(() => task.active && task.refresh(), 2000);
    return;
  }
  const answer = await requestJson(`/api/runs/${run.id}`); // started elsewhere: draw it whole
  if (answer.ok) show(answer.data.run);
}

/** A frame about a run was refused: try again when it makes sense, or say so on the card. */
export function onAttachRefused(ref, event) {
  const task = tasks.get(Number(ref.split(":")[1]));
  if (!task) return;
  if (event.code === "busy" || event.code === "server_error") {
    setTimeout(() => task.attach(), Math.max(1, event.retry_after || 1) * 1000);
  } else {
    task.say(event.text);
  }
}

/** A banner for a run of another conversation that waits for an approval, until it no longer does. */
function noteElsewhere(run) {
  const banner = waitingElsewhere.get(run.id);
  if (run.status !== "awaiting_approval" || run.conversation === page.conversation()) {
    banner?.remove();
    waitingElsewhere.delete(run.id);
    return;
  }
  if (banner) return;
  const line = element("p", "run-notice");
  const goal = run.goal.length > 80 ? `${run.goal.slice(0, 79)}…` : run.goal;
  const link = element("a", "", "Open it");
  link.href = page.conversationUrl(run.conversation);
  const dismiss = button("×", "icon-button", () => {
    line.remove();
    waitingElsewhere.delete(run.id);
  });
  dismiss.setAttribute("aria-label", "Dismiss");
  line.append(element("span", "", `A task in another conversation is waiting for your approval: “${goal}”.`), " ", link, dismiss);
  page.notices.append(line);
  waitingElsewhere.set(run.id, line);
}
