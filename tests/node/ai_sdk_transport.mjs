// The `ai` package's own transport and reader against a Parley server.
// Usage: node ai_sdk_transport.mjs '<json>'; prints one JSON line.
//   {"mode": "send", "url", "token", "chatId", "text", "model"?, "trigger"?}
//     -> {"message": <final UIMessage>, "chunks": [chunk types]}
//   {"mode": "drop-and-resume", "url", "resumeUrl", "token", "chatId", "text", "words"}
//     sends, aborts the fetch once `words` words have arrived, then resumes from `resumeUrl`
//     -> {"before": <text read before the drop>, "message": <resumed UIMessage>, "chunks": [...]}
//   {"mode": "resume", "url", "token", "chatId"} -> {"message": <UIMessage or null>}
//   {"mode": "stop", "url", "token", "stopToken", "chatId", "text", "words"}
//     sends, and once `words` words have come stops the reply with POST /api/messages/<id>/stop
//     (a chat-scoped `stopToken`), reading on to the end -> {"message", "chunks"}
import { DefaultChatTransport, readUIMessageStream } from "ai";

const args = JSON.parse(process.argv[2]);
const transport = (url) =>
  new DefaultChatTransport({ api: `${url}/api/ai-sdk/chat`, headers: { Authorization: `Bearer ${args.token}` } });

const userMessage = (text) => ({ id: `u-${Date.now()}`, role: "user", parts: [{ type: "text", text }] });

/** The stream's chunks read by the SDK's own reader into the final UIMessage; the chunk types seen on the way. */
async function readAll(stream) {
  const types = [];
  const watched = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        types.push(chunk.type);
        controller.enqueue(chunk);
      },
    }),
  );
  let last = null;
  for await (const message of readUIMessageStream({ stream: watched, terminateOnError: false })) last = message;
  return { message: last, chunks: types };
}

async function send() {
  const stream = await transport(args.url).sendMessages({
    chatId: args.chatId,
    messages: [userMessage(args.text)],
    trigger: args.trigger ?? "submit-message",
    messageId: undefined,
    abortSignal: undefined,
    body: args.model ? { model: args.model } : undefined,
  });
  return readAll(stream);
}

async function dropAndResume() {
  const controller = new AbortController();
  const stream = await transport(args.url).sendMessages({
    chatId: args.chatId,
    messages: [userMessage(args.text)],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: controller.signal,
  });
  const reader = stream.getReader();
  let before = "";
  while (before.split(/\s+/).filter(Boolean).length < args.words) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the reply ended before the drop");
    if (value.type === "text-delta") before += value.delta;
  }
  controller.abort(); // the page goes away mid-reply
  await reader.cancel().catch(() => {});
  const resumed = await transport(args.resumeUrl).reconnectToStream({ chatId: args.chatId });
  if (resumed === null) throw new Error("nothing to resume");
  return { before, ...(await readAll(resumed)) };
}

async function resume() {
  const stream = await transport(args.url).reconnectToStream({ chatId: args.chatId });
  return stream === null ? { message: null } : readAll(stream);
}

async function sendAndStop() {
  const stream = await transport(args.url).sendMessages({
    chatId: args.chatId,
    messages: [userMessage(args.text)],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
  let text = "";
  let stopped = false;
  let messageId = null;
  const watched = stream.pipeThrough(
    new TransformStream({
      async transform(chunk, controller) {
        if (chunk.type === "start") messageId = chunk.messageId;
        if (chunk.type === "text-delta") text += chunk.delta;
        controller.enqueue(chunk);
        if (!stopped && text.split(/\s+/).filter(Boolean).length >= args.words) {
          stopped = true;
          const response = await fetch(`${args.url}/api/messages/${messageId}/stop`, {
            method: "POST",
            headers: { Authorization: `Bearer ${args.stopToken}` },
          });
          if (response.status !== 202) throw new Error(`stop: ${response.status} ${await response.text()}`);
        }
      },
    }),
  );
  return readAll(watched);
}

const modes = { send, "drop-and-resume": dropAndResume, resume, stop: sendAndStop };
try {
  console.log(JSON.stringify(await modes[args.mode]()));
} catch (error) {
  console.log(JSON.stringify({ error: String(error.message ?? error) }));
  process.exitCode = 3;
}
