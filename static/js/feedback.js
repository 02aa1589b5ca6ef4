// A reply's rating: thumbs up ("Good reply") and down ("Bad reply") in its row of tools, pressed as
// the user left them. The other thumb switches, the pressed one takes the rating back; after a
// thumb a small form takes an optional comment, and "Comment" opens it again later.
// The rating lives on the message element (data-rating, data-comment) so that a redraw of the row
// (branches.js) shows it again; the page and the API hand it over with each reply.

import { actionButton, requestJson } from "./ui.js";

const THUMBS = [
  ["up", "Good reply"],
  ["down", "Bad reply"],
];
// One thumb, drawn as lines (no emoji font needed); the other is the same turned over.
const THUMB_PATH = "M5 7v6.5H2.5V7zM5 7l2.6-5c1 0 1.7.8 1.5 1.8L8.6 6.5h4a1.4 1.4 0 0 1 1.4 1.6l-.8 4.4a1.6 1.6 0 0 1-1.6 1.5H5";
const SVG = "http://www.w3.org/2000/svg";

function thumbIcon(rating) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("width", "15");
  svg.setAttribute("height", "15");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", THUMB_PATH);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "1.3");
  path.setAttribute("stroke-linejoin", "round");
  if (rating === "down") path.setAttribute("transform", "rotate(180 8 8)");
  svg.append(path);
  return svg;
}

/** Keeps a reply's rating (`{rating, comment}` or null, as the page and the API give it). */
export function remember(element, feedback) {
  element.dataset.rating = feedback?.rating ?? "";
  element.dataset.comment = feedback?.comment ?? "";
}

/** Adds the thumbs, and "Comment" once rated, to the row branches.js drew for a finished reply. */
export function drawButtons(element) {
  const bar = element.querySelector(".msg-actions");
  const group = document.createElement("span");
  group.className = "msg-rating";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", "Rate this reply");
  for (const [rating, label] of THUMBS) {
    const thumb = actionButton(`msg-rate msg-rate-${rating}`, "", label);
    thumb.append(thumbIcon(rating));
    thumb.dataset.rating = rating;
    group.append(thumb);
  }
  group.append(actionButton("msg-feedback-comment", "Comment", "Comment on your rating"));
  bar.append(group);
  bar.hidden = false;
  show(element);
}

/** The buttons as the element's rating says. */
function show(element) {
  const rating = element.dataset.rating || "";
  for (const thumb of element.querySelectorAll(".msg-rate")) {
    thumb.setAttribute("aria-pressed", String(thumb.dataset.rating === rating));
  }
  const comment = element.querySelector(".msg-feedback-comment");
  if (comment) comment.hidden = !rating;
}

async function post(element, body) {
  return requestJson(`/api/messages/${Number(element.dataset.id)}/feedback`, { method: "POST", body });
}

/** A thumb pressed: rate, switch or (the pressed one) take the rating back. */
export async function press(element, thumb, { onError }) {
  const rating = thumb.getAttribute("aria-pressed") === "true" ? null : thumb.dataset.rating;
  thumb.disabled = true;
  const result = await post(element, { rating });
  thumb.disabled = false;
  if (!result.ok) {
    onError(result.error.text);
    return;
  }
  remember(element, result.data.feedback);
  show(element);
  if (rating) openForm(element);
  else closeForm(element);
}

/** The comment form under the reply's tools: Save, Cancel; Escape cancels. */
export function openForm(element) {
  const open = element.querySelector(".msg-feedback-form textarea");
  if (open) {
    open.focus();
    return;
  }
  const id = Number(element.dataset.id);
  const form = document.createElement("form");
  form.className = "msg-feedback-form";
  const label = document.createElement("label");
  label.htmlFor = `feedback-${id}`;
  label.textContent = element.dataset.rating === "down" ? "What was wrong? (optional)" : "What was good? (optional)";
  const input = document.createElement("textarea");
  input.id = label.htmlFor;
  input.rows = 2;
  input.maxLength = Number(document.getElementById("chat")?.dataset.feedbackCommentMax) || 2000;
  input.value = element.dataset.comment || "";
  const error = document.createElement("p");
  error.className = "msg-feedback-error";
  error.setAttribute("role", "alert");
  error.hidden = true;
  const row = document.createElement("div");
  row.className = "msg-editor-row";
  const cancel = Object.assign(document.createElement("button"), { type: "button", className: "button small", textContent: "Cancel" });
  const save = Object.assign(document.createElement("button"), { type: "submit", className: "button primary small", textContent: "Save" });
  row.append(cancel, save);
  form.append(label, input, error, row);
  element.querySelector(".msg-actions").after(form);
  const close = () => {
    closeForm(element);
    element.querySelector('.msg-rate[aria-pressed="true"]')?.focus();
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    const result = await post(element, { rating: element.dataset.rating || null, comment: input.value });
    save.disabled = false;
    if (!result.ok) {
      error.textContent = result.error.text;
      error.hidden = false;
      return;
    }
    remember(element, result.data.feedback);
    show(element);
    close();
  });
  cancel.addEventListener("click", close);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation(); // closes the form only, not the sidebar or the reply being written
      close();
    }
  });
  input.focus();
}

export function closeForm(element) {
  element.querySelector(".msg-feedback-form")?.remove();
}
