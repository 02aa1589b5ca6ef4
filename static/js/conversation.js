// The open conversation's own controls in the chat page's header: its system prompt (with the
// admins' presets), sharing a read-only copy by link, and the export links.

import { copyText, flashButton, requestJson } from "./ui.js";

const $ = (id) => document.getElementById(id);
const ui = {
  promptButton: $("system-prompt-button"),
  promptTag: $("system-prompt-tag"),
  promptDialog: $("system-prompt-dialog"),
  promptForm: $("system-prompt-form"),
  promptText: $("system-prompt-text"),
  promptPreset: $("system-prompt-preset"),
  promptFollows: $("system-prompt-follows"),
  promptError: $("system-prompt-error"),
  promptSave: $("system-prompt-save"),
  promptCancel: $("system-prompt-cancel"),
  menu: $("conversation-menu"),
  exportMd: $("export-md"),
  exportJson: $("export-json"),
  shareButton: $("share-button"),
  shareDialog: $("share-dialog"),
  shareShowOwner: $("share-show-owner"),
  shareCreate: $("share-create"),
  shareError: $("share-error"),
  shareList: $("share-list"),
  shareEmpty: $("share-empty"),
  shareClose: $("share-close"),
};

const presets = new Map(JSON.parse($("prompt-presets").textContent).map((preset) => [String(preset.id), preset]));

// What chat.js provides: the open conversation's id, and how a conversation made here becomes the page's.
let page = { conversation: () => null, adopt: () => {}, model: () => undefined };

export function setUp(hooks) {
  page = hooks;
}

/** The page now shows conversation `id` (a first send or a saved prompt made it): its menu works. */
export function showConversation(id) {
  ui.menu.hidden = !id;
  if (!id) return;
  ui.exportMd.href = `/api/conversations/${id}/export?format=md`;
  ui.exportJson.href = `/api/conversations/${id}/export?format=json`;
}

function showError(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

// ---------------------------------------------------------------- system prompt

let savedPrompt = { text: ui.promptText.value, preset: ui.promptPreset?.value ?? "" };

// Whether the text shown follows the preset picked (kept as offered, so that the preset's next
// versions reach the conversation) or is the conversation's own copy; said under the picker.
function showFollows() {
  if (!ui.promptFollows) return;
  const preset = presets.get(ui.promptPreset.value);
  ui.promptFollows.hidden = !preset;
  if (!preset) return;
  ui.promptFollows.textContent = ui.promptText.value.trim() === preset.text
    ? `Follows “${preset.name}” (version ${preset.version}): when admins change it, the next reply gets the new text.`
    : `Edited: this conversation keeps your text; later changes to “${preset.name}” will not reach it.`;
}

ui.promptButton.addEventListener("click", () => {
  ui.promptText.value = savedPrompt.text;
  if (ui.promptPreset) ui.promptPreset.value = savedPrompt.preset;
  showFollows();
  showError(ui.promptError, "");
  ui.promptDialog.showModal();
  ui.promptText.focus();
});

ui.promptCancel.addEventListener("click", () => ui.promptDialog.close());

ui.promptPreset?.addEventListener("change", () => {
  const preset = presets.get(ui.promptPreset.value);
  if (preset) ui.promptText.value = preset.text;
  showFollows();
});

ui.promptText.addEventListener("input", showFollows);

ui.promptForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = ui.promptText.value;
  const presetId = ui.promptPreset?.value || "";
  // The text as shown (perhaps a preset's, edited), and the preset it started from.
  const body = { system_prompt: text, preset: presetId ? Number(presetId) : null };
  if (!page.conversation() && !text.trim() && !presetId) {
    ui.promptDialog.close(); // nothing to keep: no conversation is made for an empty prompt
    return;
  }
  ui.promptSave.disabled = true;
  try {
    const id = page.conversation();
    let answer;
    if (id) {
      answer = await requestJson(`/api/conversations/${id}/`, { method: "PATCH", body });
    } else {
      // A new chat: the conversation is made now, so that its first reply already follows the prompt.
      answer = await requestJson("/api/conversations/", { method: "POST", body: { ...body, model: page.model() } });
      if (answer.ok) page.adopt(answer.data);
    }
    if (!answer.ok) return showError(ui.promptError, answer.error.text);
    savedPrompt = { text: answer.data.system_prompt, preset: answer.data.preset ? String(answer.data.preset) : "" };
    ui.promptTag.hidden = !answer.data.system_prompt;
    ui.promptDialog.close();
  } finally {
    ui.promptSave.disabled = false;
  }
});

// ---------------------------------------------------------------- share links

function linkItem(link) {
  const item = document.createElement("li");
  item.className = "share-item";
  item.dataset.id = link.id;
  const input = Object.assign(document.createElement("input"), { type: "text", readOnly: true, value: link.url, id: `share-url-${link.id}` });
  input.setAttribute("aria-label", `Link made ${new Date(link.created).toLocaleString()}`);
  const copy = Object.assign(document.createElement("button"), { type: "button", className: "button small share-copy", textContent: "Copy" });
  copy.addEventListener("click", async () => {
    input.select();
    flashButton(copy, await copyText(link.url));
  });
  const revoke = Object.assign(document.createElement("button"), { type: "button", className: "button small danger share-revoke", textContent: "Revoke" });
  revoke.addEventListener("click", () => revokeLink(link, item));
  const note = Object.assign(document.createElement("span"), { className: "muted share-note" });
  note.textContent = `${new Date(link.created).toLocaleString()}${link.show_owner ? " · shows your name" : ""}`;
  item.append(input, copy, revoke, note);
  return item;
}

function showLinks(links) {
  ui.shareList.replaceChildren(...links.map(linkItem));
  ui.shareEmpty.hidden = links.length > 0;
}

async function loadLinks() {
  const answer = await requestJson(`/api/conversations/${page.conversation()}/shares`);
  if (!answer.ok) return showError(ui.shareError, answer.error.text);
  showLinks(answer.data.results);
}

async function revokeLink(link, item) {
  if (!window.confirm("Revoke this link? Anyone holding it will no longer see the conversation.")) return;
  const answer = await requestJson(`/api/shares/${link.id}`, { method: "DELETE" });
  if (!answer.ok && answer.error.code !== "not_found") return showError(ui.shareError, answer.error.text);
  item.remove();
  ui.shareEmpty.hidden = ui.shareList.children.length > 0;
}

ui.shareButton.addEventListener("click", () => {
  ui.menu.open = false;
  showError(ui.shareError, "");
  ui.shareDialog.showModal();
  loadLinks();
});

ui.shareCreate.addEventListener("click", async () => {
  ui.shareCreate.disabled = true;
  showError(ui.shareError, "");
  try {
    const answer = await requestJson(`/api/conversations/${page.conversation()}/share`, {
      method: "POST",
      body: { show_owner: ui.shareShowOwner.checked },
    });
    if (!answer.ok) return showError(ui.shareError, answer.error.text);
    const item = linkItem(answer.data);
    ui.shareList.prepend(item);
    ui.shareEmpty.hidden = true;
    item.querySelector("input").select();
  } finally {
    ui.shareCreate.disabled = false;
  }
});

ui.shareClose.addEventListener("click", () => ui.shareDialog.close());

// A click outside the menu closes it, as the account menu's <details> does not on its own.
document.addEventListener("click", (event) => {
  if (ui.menu.open && !ui.menu.contains(event.target)) ui.menu.open = false;
});
