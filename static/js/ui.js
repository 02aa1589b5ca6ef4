// Small page helpers shared by the chat and account pages: copy buttons and confirm-before-submit.

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
