// A reply's details, under its Details button: the model that answered and the version its
// provider reported, the routing rule that chose it (for `auto`), tokens (marked when estimated),
// time to first token, duration and cost. Every value is set as text, never as HTML.

const number = (value) => Number(value).toLocaleString();
const seconds = (ms) => (ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`);

function cost(usage) {
  // No cost beside counted tokens: the model's price is unknown, and the call was billed at 0.
  if (usage.cost_usd == null) return usage.prompt_tokens == null ? null : "unknown (price not set; billed $0)";
  const value = Number(usage.cost_usd);
  if (value === 0) return "$0";
  // Model calls often cost a fraction of a cent: enough digits to see it.
  return `$${value < 0.01 ? value.toPrecision(2) : value.toFixed(4)}`;
}

/** What a reply's dict (from the page or the API) or its `done` event says of it. */
export function infoOf(message) {
  return {
    provider: message.provider ?? null,
    model: message.model ?? null,
    modelVersion: message.model_version ?? null,
    usage: message.usage ?? {},
    ttft: message.ttft_ms ?? null,
    duration: message.duration_ms ?? null,
    notice: message.notice ?? null,
    routing: message.routing ?? null,
  };
}

/** A final event's figures over what was known when the reply started: after a failover, another
 * model answered (its provider is then only known from the stored reply). */
export function withEnd(info, event) {
  const otherModel = event.model != null && event.model !== info.model;
  return {
    ...info,
    model: event.model ?? info.model,
    provider: otherModel ? null : info.provider,
    notice: event.notice !== undefined ? event.notice : info.notice,
    routing: event.routing !== undefined ? event.routing : info.routing,
    modelVersion: event.model_version ?? info.modelVersion,
    usage: event.usage ?? info.usage,
    ttft: event.ttft_ms ?? info.ttft,
    duration: event.duration_ms ?? info.duration,
  };
}

/** The provider attempts that failed before this reply's first token, in words. */
function attempts(routing) {
  const failed = routing?.attempts ?? [];
  if (!failed.length) return null;
  const each = failed.map((attempt) => `${attempt.model}: ${attempt.code.replaceAll("_", " ")}`);
  return `${failed.length} failed before this answer (${each.join("; ")}), none billed`;
}

/** Which of the `auto` model's rules chose the reply's model, and why (routing/router.py). */
function chosenBy(routing) {
  if (!routing?.rule) return null;
  return `Chosen by rule “${routing.rule}”${routing.why ? `: ${routing.why}` : ""}`;
}

export function rows(info) {
  const { usage } = info;
  const estimated = usage.estimated ? " (estimated)" : "";
  const tokens = usage.prompt_tokens == null ? null
    : `${number(usage.prompt_tokens)} in, ${number(usage.completion_tokens ?? 0)} out${estimated}`;
  const answeredBy = [info.model, info.provider && `(${info.provider})`].filter(Boolean).join(" ");
  return [
    ["Model", answeredBy || null],
    ["Version reported", info.modelVersion && info.modelVersion !== info.model ? info.modelVersion : null],
    ["Routing", chosenBy(info.routing)],
    ["Tokens", tokens],
    ["First token after", info.ttft == null ? null : seconds(info.ttft)],
    ["Duration", info.duration == null ? null : seconds(info.duration)],
    ["Cost", cost(usage)],
    ["Attempts", attempts(info.routing)],
    ["Cached", info.routing?.cached ? "replayed from the response cache; billed nothing" : null],
    ["Note", info.notice],
  ].filter(([, value]) => value != null && value !== "");
}

/** Shows or hides the details of the reply drawn in `element`; returns whether they are shown. */
export function toggle(element, info, button) {
  const open = element.querySelector(".msg-details");
  if (open) {
    open.remove();
    button.setAttribute("aria-expanded", "false");
    return false;
  }
  const list = document.createElement("dl");
  list.className = "msg-details";
  list.id = `details-${element.dataset.id}`;
  for (const [label, value] of rows(info)) {
    const term = document.createElement("dt");
    term.textContent = label;
    const description = document.createElement("dd");
    description.textContent = value;
    list.append(term, description);
  }
  element.querySelector(".msg-actions").after(list);
  button.setAttribute("aria-expanded", "true");
  button.setAttribute("aria-controls", list.id);
  return true;
}
