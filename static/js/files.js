// Files on the next message (chat.js's composer): each is uploaded to the conversation at once (the
// paperclip makes the conversation first on a new chat, as "Run as task" does) and shown as a chip
// with what it adds to the prompt; Send names them in its frame. A file stays in the conversation
// after it is sent, on its message; a chip removed before sending deletes the file. Names are set
// as text, never as HTML.

import { requestJson } from "./ui.js";

let env = null; // set by setUp: the composer's elements, limits and the chat's callbacks

// The same token htmx sends (base.html): the upload and delete requests ride on the session cookie.
const CSRF_TOKEN = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
const IMAGE_NAME = /\.(png|jpe?g|gif|webp)$/i;

function sizeText(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  return bytes >= 1024 ? `${Math.round(bytes / 1024)} KB` : `${bytes} bytes`;
}

const tokensText = (tokens) => `≈ ${Number(tokens).toLocaleString("en")} token${tokens === 1 ? "" : "s"}`;

function uploadItem(upload) {
  const item = document.createElement("li");
  item.className = `upload-item upload-${upload.kind}`;
  item.dataset.id = upload.id;
  item.dataset.tokens = upload.tokens;
  item.dataset.kind = upload.kind;
  const link = Object.assign(document.createElement("a"), { href: `/api/uploads/${upload.id}`, textContent: upload.name, title: upload.name });
  const tokens = Object.assign(document.createElement("span"), { className: "upload-tokens", textContent: tokensText(upload.tokens) });
  tokens.title = upload.kind === "image" ? `${upload.width}×${upload.height} pixels, ${sizeText(upload.size)}` : sizeText(upload.size);
  const remove = Object.assign(document.createElement("button"), {
    type: "button", className: "icon-button danger upload-remove", textContent: "×", title: "Remove",
  });
  remove.setAttribute("aria-label", `Remove ${upload.name}`);
  item.append(link, tokens, remove);
  return item;
}

const chips = () => [...env.list.querySelectorAll(".upload-item")];
export const chipIds = () => chips().map((item) => Number(item.dataset.id));

export function showUploads(uploads) {
  env.list.append(...uploads.map(uploadItem));
  showTotal();
}

/** The chips' count and tokens, and a warning when the model will refuse their images. */
export function showTotal() {
  const items = chips();
  env.list.hidden = !items.length;
  env.total.hidden = !items.length;
  if (!items.length) return;
  const tokens = items.reduce((sum, item) => sum + Number(item.dataset.tokens), 0);
  let text = `${items.length} file${items.length > 1 ? "s" : ""} with your message: ${tokensText(tokens)}.`;
  if (items.some((item) => item.dataset.kind === "image") && !modelSees()) {
    text += " This model can't read images; pick a model that can, or remove the image.";
  }
  env.total.textContent = text;
  env.total.classList.toggle("warn", text.includes("can't read"));
}

/** Whether the conversation's model (or the one picked for a new chat) reads images. */
export const modelSees = () => (env.picker() ? Boolean(env.picker().selectedOptions[0]?.hasAttribute("data-vision")) : Boolean(env.chat.dataset.vision));

/** The files a sent message took with it leave the composer (another tab may have sent them). */
export function forgetSent(message) {
  const sent = new Set((message.attachments || []).map((upload) => upload.id));
  for (const item of chips()) if (sent.has(Number(item.dataset.id))) item.remove();
  showTotal();
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
  const image = IMAGE_TYPES.has(file.type) || IMAGE_NAME.test(file.name);
  const limit = image ? env.limits.imageMaxBytes : env.limits.uploadMaxBytes;
  if (file.size > limit) {
    env.showError(`${file.name}: the ${image ? "image" : "file"} is larger than ${sizeText(limit)}, the most ${image ? "an image" : "a file"} may have.`);
    return;
  }
  const body = new FormData();
  body.append("file", file);
  try {
    const response = await api(`/api/conversations/${env.conversation()}/uploads`, { method: "POST", body });
    if (!response.ok) {
      env.showError(`${file.name}: ${await errorText(response, "the file could not be attached.")}`);
      return;
    }
    showUploads([(await response.json()).upload]);
  } catch {
    env.showError(`${file.name}: the file could not be sent. Check the connection and try again.`);
  }
}

/** Files belong to a conversation: a new chat gets one first, with the picked model. */
async function ensureConversation() {
  if (env.conversation()) return true;
  const created = await requestJson("/api/conversations/", { method: "POST", body: { model: env.picker()?.value || undefined } });
  if (!created.ok) {
    env.showRefusal(created.error);
    return false;
  }
  env.adoptConversation(created.data);
  env.refreshSidebar();
  return true;
}

/** A sent message's files, under its text: images as thumbnails, every file a download link. */
export function messageFiles(attachments) {
  const list = document.createElement("ul");
  list.className = "msg-files";
  list.setAttribute("aria-label", "Attached files");
  for (const upload of attachments) {
    const item = document.createElement("li");
    item.className = `msg-file msg-file-${upload.kind}`;
    const link = Object.assign(document.createElement("a"), { href: `/api/uploads/${upload.id}`, title: `${upload.name} (${tokensText(upload.tokens)})` });
    if (upload.kind === "image") {
      // Served by its own endpoint as the image type it was checked to be, sandboxed (chat/api.py).
      link.append(Object.assign(document.createElement("img"), { src: `/api/uploads/${upload.id}/image`, alt: upload.name, className: "msg-thumb", loading: "lazy" }));
    }
    link.append(Object.assign(document.createElement("span"), { className: "msg-file-name", textContent: upload.name }));
    item.append(link);
    list.append(item);
  }
  return list;
}

/** Called once by chat.js: the page's pieces and what the chat does on their behalf. */
export function setUp(pieces) {
  env = pieces;
  env.button.addEventListener("click", () => env.input.click());
  env.input.addEventListener("change", async () => {
    const files = [...env.input.files];
    env.input.value = ""; // the same file may be chosen again
    if (!files.length) return;
    env.showError("");
    env.button.disabled = true;
    env.button.setAttribute("aria-busy", "true");
    try {
      if (await ensureConversation()) {
        const room = env.limits.attachmentsMax - chips().length;
        if (files.length > room) env.showError(`A message may carry at most ${env.limits.attachmentsMax} files.`);
        for (const file of files.slice(0, Math.max(0, room))) await attachFile(file);
      }
    } finally {
      env.button.disabled = false;
      env.button.removeAttribute("aria-busy");
    }
  });

  env.list.addEventListener("click", async (event) => {
    const button = event.target.closest(".upload-remove");
    if (!button) return;
    const item = button.closest(".upload-item");
    button.disabled = true;
    try {
      const response = await api(`/api/uploads/${item.dataset.id}`, { method: "DELETE" });
      // 404: already removed, from another tab.
      if (response.ok || response.status === 404) {
        item.remove();
        showTotal();
        return;
      }
      env.showError(await errorText(response, "The file could not be removed."));
    } catch {
      env.showError("The file could not be removed. Check the connection and try again.");
    }
    button.disabled = false;
  });
}
