// Runs a Parley agent through AG-UI's own client (@ag-ui/client HttpAgent), checks every event
// against the protocol's own zod schemas (@ag-ui/core/schemas EventSchemas), and prints what it
// saw as one JSON line for tests/test_gateway_ag_ui_live.py. Any failed check exits non-zero.
//
//   node tests/node/ag_ui_run.mjs <scenario> <goal>
//   env: PARLEY_URL (http://127.0.0.1:port), PARLEY_TOKEN, AG_UI_THREAD (a thread id)
//
// Scenarios: run (one run to its end), approval (a run that asks for approval, answered through
// the endpoint), resume (the connection dropped mid-run, then resumed with Last-Event-ID),
// cancel (the run cancelled through Parley's API while it streams).
import assert from "node:assert/strict";
import { HttpAgent, buildResumeArray, runHttpRequest, transformHttpEventStream, verifyEvents } from "@ag-ui/client";
import { EventSchemas } from "@ag-ui/core/schemas";
import { from, lastValueFrom, toArray } from "rxjs";

const [scenario, goal] = process.argv.slice(2);
const base = process.env.PARLEY_URL;
const token = process.env.PARLEY_TOKEN;
const threadId = process.env.AG_UI_THREAD;
const endpoint = `${base}/api/ag-ui/agent`;
const headers = { Authorization: `Bearer ${token}` };

// Every event exactly as the schema reads it: parsed, and nothing stripped (an unknown field would be).
function checked(event) {
  const parsed = EventSchemas.safeParse(event);
  assert.ok(parsed.success, `${event.type} is not a valid AG-UI event: ${JSON.stringify(parsed.error?.issues)}`);
  assert.deepStrictEqual(parsed.data, event, `${event.type} carries fields the schema does not know`);
  return event;
}

// The client's own order rules (RUN_STARTED first, messages and tool calls opened before use and
// closed before RUN_FINISHED, steps paired, nothing after the end) over a whole list of events.
async function verified(events) {
  return lastValueFrom(from(events).pipe(verifyEvents(), toArray()));
}

// fetch, but the connection breaks in the middle of the frame after the `limit`-th event.
function droppingFetch(limit) {
  return async (url, init) => {
    const response = await fetch(url, init);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const encoder = new TextEncoder();
    let buffer = "";
    let count = 0;
    const body = new ReadableStream({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) return controller.close();
        buffer += decoder.decode(value, { stream: true });
        let out = "";
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          const frame = buffer.slice(0, end + 2);
          buffer = buffer.slice(end + 2);
          out += frame;
          if (frame.includes("data:") && ++count === limit) {
            controller.enqueue(encoder.encode(out + buffer.slice(0, 7)));
            await reader.cancel();
            return controller.error(new TypeError("terminated: the connection was lost"));
          }
        }
        if (out) controller.enqueue(encoder.encode(out));
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

function newAgent(dropAfter) {
  return new HttpAgent({
    url: endpoint, headers, threadId,
    initialMessages: [{ id: `user-${Date.now()}`, role: "user", content: goal }],
    ...(dropAfter ? { fetch: droppingFetch(dropAfter) } : {}),
  });
}

async function run(agent, parameters = {}, onEach = () => {}) {
  const events = [];
  let outcome = null;
  let error = null;
  const subscriber = {
    async onEvent({ event, state }) {
      events.push(checked(structuredClone(event)));
      await onEach(event, state, events);
    },
    onRunFinishedEvent(params) {
      outcome = params.outcome === "interrupt" ? { outcome: "interrupt", interrupts: params.interrupts } : { outcome: params.outcome, result: params.result };
    },
    onRunErrorEvent({ event }) { outcome = { outcome: "error", code: event.code, message: event.message }; },
  };
  try {
    await agent.runAgent(parameters, subscriber);
  } catch (caught) {
    error = String(caught?.message ?? caught);
  }
  return { events, outcome, error, state: agent.state, messages: agent.messages, pending: agent.pendingInterrupts };
}

// A run's events read with the client's own HTTP and SSE parsing, after `lastEventId`.
async function fetchEvents(runId, lastEventId) {
  const extra = lastEventId === undefined ? {} : { "Last-Event-ID": String(lastEventId) };
  const url = `${endpoint}?threadId=${encodeURIComponent(threadId)}&runId=${encodeURIComponent(runId)}`;
  const events$ = transformHttpEventStream(runHttpRequest(() => fetch(url, { headers: { ...headers, ...extra } })));
  return (await lastValueFrom(events$.pipe(toArray()))).map(checked);
}

// The client's teardown cancels the body's reader and rethrows what that cancel rejects with: a
// connection lost mid-stream surfaces once more as an unhandled rejection. That one is expected.
process.on("unhandledRejection", (reason) => {
  if (!String(reason?.message ?? reason).includes("connection was lost")) throw reason;
});

const out = { scenario };
if (scenario === "run") {
  const agent = newAgent();
  Object.assign(out, await run(agent));
  await verified(out.events);
} else if (scenario === "approval") {
  const agent = newAgent();
  const first = await run(agent);
  await verified(first.events);
  assert.equal(first.outcome?.outcome, "interrupt", JSON.stringify(first.outcome ?? first.error));
  assert.equal(agent.pendingInterrupts.length, 1);
  const [interrupt] = agent.pendingInterrupts;
  const decision = process.env.AG_UI_DECISION ?? "approve";
  const resume = buildResumeArray(agent.pendingInterrupts, { [interrupt.id]: { status: "resolved", payload: { decision, note: "from AG-UI" } } });
  const second = await run(agent, { resume });
  await verified(second.events);
  Object.assign(out, { first, second, interrupt });
} else if (scenario === "resume") {
  const stopAfter = Number(process.env.AG_UI_STOP_AFTER ?? "8");
  const agent = newAgent(stopAfter);
  const first = await run(agent);
  const runId = first.events[0].runId;
  // The client may lose the last frames it read when the error overtakes them: it resumes after
  // the last event it has, whatever that is.
  assert.ok(first.events.length > 2 && first.events.length <= stopAfter, `${first.events.length} events before the drop`);
  assert.match(first.error ?? "", /connection was lost/);
  const rest = await fetchEvents(runId, first.events.length);
  const whole = await fetchEvents(runId);
  const joined = [...first.events, ...rest];
  await verified(joined);
  await verified(whole);
  assert.deepStrictEqual(joined, whole, "the resumed run differs from the run read whole");
  Object.assign(out, { first: first.events, rest, whole, runId });
} else if (scenario === "cancel") {
  // Cancelled through Parley's own API once the first step is under way.
  const agent = newAgent();
  let cancelled = null;
  Object.assign(out, await run(agent, {}, async (event, state) => {
    if (event.type === "STEP_STARTED" && cancelled === null) {
      cancelled = (await fetch(`${base}/api/runs/${state.run}/cancel`, { method: "POST", headers })).status;
    }
  }));
  out.cancelStatus = cancelled;
  await verified(out.events);
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
process.stdout.write(JSON.stringify(out) + "\n");
