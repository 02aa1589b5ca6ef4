// Model output as Markdown, safely: the one path every reply and task result is drawn through.

import { Marked } from "../vendor/marked-18.2.1.esm.js";
import DOMPurify from "../vendor/purify-3.4.18.es.js";
import hljs from "../vendor/highlight-11.12.0.es.min.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const markdown = new Marked({
  gfm: true,
  renderer: {
    // Raw HTML written by the model is shown as the text it is: readable, and nothing runs.
    html({ text, block }) {
      return block ? `<p class="raw-html">${escapeHtml(text)}</p>` : escapeHtml(text);
    },
    // Images would fetch URLs the model chose (a way to leak the chat); offer them as links.
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
    code({ text, lang }) {
      const language = (lang || "").trim().split(/\s+/)[0];
      const known = language && hljs.getLanguage(language);
      const body = known ? hljs.highlight(text, { language, ignoreIllegals: true }).value : escapeHtml(text);
      return (
        `<div class="code-block"><div class="code-head"><span>${escapeHtml(language || "text")}</span>` +
        `<button type="button" class="copy-code">Copy</button></div>` +
        `<pre><code class="hljs">${body}</code></pre></div>`
      );
    },
  },
});

// DOMPurify is the real guard; the renderer above only decides how things look.
const PURIFY = {
  FORBID_TAGS: ["img", "style", "form", "input", "textarea", "select", "iframe", "svg", "math", "video", "audio"],
  FORBID_ATTR: ["style"],
  ADD_ATTR: ["target"],
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

export function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(markdown.parse(text), PURIFY);
}
