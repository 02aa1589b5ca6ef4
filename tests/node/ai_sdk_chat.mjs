// The `ai` package's AbstractChat (what useChat wraps) against a Parley server, with a plain state.
// Usage: node ai_sdk_chat.mjs '{"url", "token", "chatId", "text", "regenerate"?: true}'
//   -> {"status", "error", "messages": [UIMessage...], "finished": <onFinish's message id>}
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
const chat = new NodeChat({
  id: args.chatId,
  transport: new DefaultChatTransport({
    api: `${args.url}/api/ai-sdk/chat`,
    headers: { Authorization: `Bearer ${args.token}` },
  }),
  onFinish: ({ message }) => finished.push(message.id),
});
await chat.sendMessage({ text: args.text });
if (args.regenerate) await chat.regenerate();
console.log(JSON.stringify({ status: chat.status, error: chat.error?.message ?? null, messages: chat.messages, finished }));
