// A message's versions and what can be done with it: "‹ 2 / 3 ›" between the versions of a
// message (its edits) or of a reply (its regenerations), Edit on the user's messages (an inline
// editor), Regenerate on finished replies and Retry on failed, stopped or interrupted ones, and
// Copy (the reply's Markdown) and Details (details.js) on every finished reply; feedback.js adds
// its thumbs after them.
// chat.js owns what they do (frames on the socket, the branch shown); this draws them.

import { actionButton } from "./ui.js";

const RETRYABLE = new Set(["failed", "stopped", "interrupted"]);

/** The ids of the versions of a message, oldest first, itself among them. */
export function siblingsOf(element) {
  return (element.dataset.siblings || element.dataset.id).split(",").map(Number);
}

export function setSiblings(element, siblings) {
  element.dataset.siblings = (siblings?.length ? siblings : [Number(element.dataset.id)]).join(",");
}

function control(text, className, label, target) {
  const node = actionButton(className, text, label);
  if (target === null) node.disabled = true;
  else if (target !== undefined) node.dataset.target = target;
  return node;
}

/** (Re)draws the row under a message; replies call it again whenever their status changes. */
export function drawControls(element, { role, status, active }) {
  const bar = element.querySelector(".msg-actions");
  const siblings = siblingsOf(element);
  const items = [];
  if (siblings.length > 1) {
    const index = siblings.indexOf(Number(element.dataset.id));
    const nav = document.createElement("span");
    nav.className = "branch-nav";
    nav.setAttribute("role", "group");
    nav.setAttribute("aria-label", role === "user" ? "Versions of this message" : "Versions of this reply");
    const position = document.createElement("span");
    position.className = "branch-position";
    position.textContent = `${index + 1} / ${siblings.length}`;
    nav.append(
      control("‹", "branch-prev", "Previous version", index > 0 ? siblings[index - 1] : null),
      position,
      control("›", "branch-next", "Next version", index < siblings.length - 1 ? siblings[index + 1] : null),
    );
    items.push(nav);
  }
  if (role === "user") {
    items.push(control("Edit", "msg-edit", "Edit message"));
  } else if (!active && RETRYABLE.has(status)) {
    items.push(control("Retry", "msg-retry", "Retry this reply"));
  } else if (!active) {
    items.push(control("Regenerate", "msg-regenerate", "Regenerate reply"));
  }
  if (role !== "user" && !active) {
    items.push(control("Copy", "msg-copy", "Copy reply as Markdown"));
    const details = control("Details", "msg-details-toggle", "Show reply details");
    details.setAttribute("aria-expanded", "false");
    items.push(details);
  }
  bar.replaceChildren(...items);
  bar.hidden = !items.length;
}

/** The inline editor of a user message: Save & send, Cancel; Enter saves, Escape cancels. */
export function openEditor(element, { onSave, onClose }) {
  const open = element.querySelector(".msg-editor textarea");
  if (open) {
    open.focus();
    return;
  }
  const form = document.createElement("form");
  form.className = "msg-editor";
  const label = document.createElement("label");
  label.className = "visually-hidden";
  label.htmlFor = `edit-${element.dataset.id}`;
  label.textContent = "Edit message";
  const input = document.createElement("textarea");
  input.id = label.htmlFor;
  input.rows = 3;
  input.value = element.querySelector(".msg-body").textContent; // the message's raw text
  const row = document.createElement("div");
  row.className = "msg-editor-row";
  const cancel = Object.assign(document.createElement("button"), { type: "button", className: "button small", textContent: "Cancel" });
  const save = Object.assign(document.createElement("button"), { type: "submit", className: "button primary small", textContent: "Save & send" });
  row.append(cancel, save);
  form.append(label, input, row);
  element.classList.add("editing");
  element.querySelector(".msg-body").after(form);
  const close = () => {
    closeEditor(element);
    onClose();
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onSave(input.value);
  });
  cancel.addEventListener("click", close);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation(); // Escape here closes the editor only, not the sidebar too
      close();
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      onSave(input.value);
    }
  });
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

export function closeEditor(element) {
  element.querySelector(".msg-editor")?.remove();
  element.classList.remove("editing");
}
