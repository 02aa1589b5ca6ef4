// Small page helpers shared by the chat and account pages: copy buttons, confirm-before-submit, JSON requests.

/** Copies text; falls back to execCommand where the async clipboard is unavailable (plain http). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Permission denied or document not focused: try the old way below.
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.readOnly = true;
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}

/** A small button of a message's tools row, named for screen readers and on hover. */
export function actionButton(className, text, label) {
  const node = document.createElement("button");
  node.type = "button";
  node.className = `msg-action ${className}`;
  node.textContent = text;
  node.setAttribute("aria-label", label);
  node.title = label;
  return node;
}

/** Shows "Copied" (or a failure) on a button for a moment. */
export function flashButton(button, copied) {
  const label = button.dataset.label || button.textContent;
  button.dataset.label = label;
  button.textContent = copied ? "Copied" : "Copy failed — select and copy by hand";
  setTimeout(() => { button.textContent = label; }, 1600);
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copyTarget);
  if (!source) return;
  if (source.select) source.select();
  flashButton(button, await copyText(source.value ?? source.textContent));
});

document.addEventListener("submit", (event) => {
  const button = event.submitter?.closest("[data-confirm]") || event.target.querySelector("[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
});

/** The page's CSRF token: base.html hands it to htmx in `hx-headers`, and fetches send the same one. */
function csrfToken() {
  try {
    return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
  } catch {
    return "";
  }
}

/**
 * A request to Parley's JSON API that never throws: {ok: true, data} or {ok: false, error} with the
 * API's one error shape ({code, text, retry_after, ...}), a network failure included.
 */
export async function requestJson(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") Object.assign(headers, { "Content-Type": "application/json", "X-CSRFToken": csrfToken() });
  let response;
  try {
    response = await fetch(path, { method, headers, credentials: "same-origin", body: body && JSON.stringify(body) });
  } catch {
    return { ok: false, error: { code: "network", text: "Parley could not be reached. Check the connection and try again.", retry_after: null } };
  }
  const data = await response.json().catch(() => null);
  if (response.ok) return { ok: true, data };
  return { ok: false, error: data?.error ?? { code: "server_error", text: `The server answered ${response.status}.`, retry_after: null } };
}
