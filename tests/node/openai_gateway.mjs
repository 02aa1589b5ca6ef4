// Parley's OpenAI-compatible gateway through the official `openai` npm package.
// Env: PARLEY_URL (the site, e.g. http://127.0.0.1:8000), PARLEY_TOKEN (a gateway-scoped API token),
// PARLEY_MODEL (a model the token may use). Prints one JSON object with what the client saw.
import OpenAI from "openai";

const { PARLEY_URL, PARLEY_TOKEN, PARLEY_MODEL } = process.env;
if (!PARLEY_URL || !PARLEY_TOKEN || !PARLEY_MODEL) {
  console.error("PARLEY_URL, PARLEY_TOKEN and PARLEY_MODEL are required");
  process.exit(2);
}
const client = new OpenAI({ baseURL: `${PARLEY_URL}/v1`, apiKey: PARLEY_TOKEN, maxRetries: 0 });

async function whole() {
  const completion = await client.chat.completions.create({
    model: PARLEY_MODEL,
    messages: [{ role: "user", content: "whole /words 4" }],
  });
  const choice = completion.choices[0];
  return { object: completion.object, text: choice.message.content, finish_reason: choice.finish_reason, usage: completion.usage };
}

async function streamed() {
  const stream = await client.chat.completions.create({
    model: PARLEY_MODEL,
    messages: [{ role: "user", content: "streamed /words 6" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let chunks = 0;
  let finish_reason = null;
  let usage = null;
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.choices.length) {
      text += chunk.choices[0].delta.content ?? "";
      finish_reason = chunk.choices[0].finish_reason ?? finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, chunks, finish_reason, usage };
}

async function refused() {
  try {
    await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] });
    return { raised: null };
  } catch (error) {
    return {
      raised: error.constructor.name,
      is_not_found: error instanceof OpenAI.NotFoundError,
      status: error.status,
      code: error.code,
      type: error.type,
    };
  }
}

async function models() {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  return ids;
}

console.log(JSON.stringify({ whole: await whole(), streamed: await streamed(), refused: await refused(), models: await models() }));
