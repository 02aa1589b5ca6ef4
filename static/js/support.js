// The support console: replies drawn as Markdown through the chat's own safe path (marked, then
// DOMPurify), also when a reveal swaps a message's text in.

import { renderMarkdown } from "./markdown.js";

function drawPending(root) {
  for (const body of root.querySelectorAll(".msg-body.markdown.pending")) {
    renderMarkdown(body, body.textContent);
    body.classList.remove("pending");
  }
}

drawPending(document);
// A reveal's answer replaces a message's text out of band; draw it once htmx has put it in.
document.body.addEventListener("htmx:afterSettle", () => drawPending(document));
