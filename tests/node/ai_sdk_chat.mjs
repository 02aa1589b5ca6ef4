// The `ai` package's AbstractChat (what useChat wraps) against a Parley server, with a plain state.
// Usage: node ai_sdk_chat.mjs '{"url", "token", "chatId", "text", "regenerate"?: true}'
//   -> {"status", "error", "messages": [UIMessage...], "finished": [onFinish's message ids]}
// With "reloadAfterWords": N and "resumeUrl", the page stops reading once N words have come (the
// SDK's stop), then a new chat of the same id (a reloaded page) resumes from resumeUrl:
//   -> {"before": <text the first page had>, ...the reloaded chat's state}
import { AbstractChat, DefaultChatTransport } from "ai";

const args = JSON.parse(process.argv[2]);

class PlainState {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (message) => { this.messages = [...this.messages, message]; };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (index, message) => { this.messages = this.messages.map((m, i) => (i === index ? message : m)); };
  snapshot = (thing) => structuredClone(thing);
}

class NodeChat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new PlainState() });
  }
}

const finished = [];
const page = (url) =>
  new NodeChat({
    id: args.chatId,
    transport: new DefaultChatTransport({ api: `${url}/api/ai-sdk/chat`, headers: { Authorization: `Bearer ${args.token}` } }),
    onFinish: ({ message }) => finished.push(message.id),
  });
const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
const state = (chat) => ({ status: chat.status, error: chat.error?.message ?? null, messages: chat.messages, finished });

const chat = page(args.url);
if (args.reloadAfterWords) {
  const sent = chat.sendMessage({ text: args.text });
  const words = () => textOf(chat.messages.at(-1)).split(/\s+/).filter(Boolean).length;
  while (chat.messages.at(-1)?.role !== "assistant" || words() < args.reloadAfterWords) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await chat.stop(); // the page goes away
  await sent;
  const before = textOf(chat.messages.at(-1));
  finished.length = 0;
  const reloaded = page(args.resumeUrl);
  await reloaded.resumeStream(); // what useChat({ resume: true }) does on mount
  console.log(JSON.stringify({ before, ...state(reloaded) }));
} else {
  await chat.sendMessage({ text: args.text });
  if (args.regenerate) await chat.regenerate();
  console.log(JSON.stringify(state(chat)));
}
