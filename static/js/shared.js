// A shared conversation: the page has every message as escaped text; replies are drawn again as
// Markdown, through the same safe path as the chat page (marked, then DOMPurify).

import { renderMarkdown } from "./markdown.js";

const messages = JSON.parse(document.getElementById("shared-messages").textContent);

for (const element of document.querySelectorAll(".shared-messages .msg-assistant")) {
  const message = messages[Number(element.dataset.index)];
  const body = element.querySelector(".msg-body");
  if (!message || !body) continue;
  renderMarkdown(body, message.content);
  body.classList.remove("pending");
}
