"""The demo model's plan when a call offers tools: the same steps every time, so that agent runs
work offline and tests know what comes.

It searches the user's conversations for the goal's longest word, calculates the goal's arithmetic
(or 6 * 7), writes a report of what it found, and, when the goal names an e-mail address, asks to
send the report there; each once, in that order, skipping a tool it was not offered. With every
step answered it writes its final answer, quoting the results.
"""

import re
from typing import Any

import orjson

from providers.base import ChatRequest, ToolCall

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ARITHMETIC = re.compile(r"[\d(][\d\s+\-*/().^%]*[\d)]")
_WORD = re.compile(r"[^\W\d_]{2,}")


def goal_of(request: ChatRequest) -> str:
    return next((m.get("content", "") for m in request.messages if m.get("role") == "user"), "")


def results_of(request: ChatRequest) -> list[str]:
    return [m.get("content", "") for m in request.messages if m.get("role") == "tool"]


def next_call(request: ChatRequest) -> ToolCall | None:
    """The plan's next tool call, or None once every step it could take has its result."""
    offered = {tool["name"] for tool in request.tools}
    called = {call["name"] for m in request.messages for call in m.get("tool_calls") or ()}
    for name, arguments in _steps(goal_of(request), results_of(request)):
        if name in offered and name not in called:
            return ToolCall(f"demo-call-{len(called) + 1}", name, orjson.dumps(arguments).decode())
    return None


def _steps(goal: str, results: list[str]) -> list[tuple[str, dict[str, Any]]]:
    title = " ".join(goal.split())[:60] or "Report"
    words = sorted(_WORD.findall(_EMAIL.sub(" ", goal)), key=len, reverse=True)
    arithmetic = [found for found in _ARITHMETIC.findall(goal) if re.search(r"\d\s*[-+*/^%]\s*[\d(]", found)]
    steps: list[tuple[str, dict[str, Any]]] = [
        ("search_conversations", {"query": words[0] if words else "parley"}),
        ("calculate", {"expression": arithmetic[0].strip() if arithmetic else "6 * 7"}),
        ("write_report", {"title": title, "markdown": report(title, results)}),
    ]
    if email := _EMAIL.search(goal):
        steps.append(("send_email", {"to": email.group(0), "subject": f"Report: {title}", "body": report(title, results)}))
    return steps


def report(title: str, results: list[str]) -> str:
    lines = [f"# {title}", "", "What the demo model found, step by step:", ""]
    lines += [f"{n}. `{result[:300]}`" for n, result in enumerate(results, 1)] or ["Nothing yet."]
    return "\n".join(lines)


def final_answer(request: ChatRequest) -> str:
    results = results_of(request)
    done = f"{len(results)} {'step' if len(results) == 1 else 'steps'}"
    return "\n".join([f"Done in {done}. Here is what each one returned:", "", *(f"- `{r[:200]}`" for r in results)])
