"""The demo model's fixed plan when tools are offered: search, calculate, report, then ask to
e-mail when the goal names an address, skipping what it was not offered, then its final answer."""

import json

from providers.base import ChatRequest, Finish, TextDelta, ToolCall
from providers.demo import DemoProvider

ALL_TOOLS = tuple({"name": name, "description": name, "parameters": {"type": "object", "properties": {}}}
                  for name in ("calculate", "search_conversations", "write_report", "send_email"))


async def run_plan(goal: str, tools=ALL_TOOLS) -> tuple[list[ToolCall], str]:
    """Answer every call the way a runner would, until the model writes its answer."""
    demo = DemoProvider(tokens_per_second=0)
    messages: list[dict] = [{"role": "user", "content": goal}]
    calls: list[ToolCall] = []
    for _ in range(10):
        events = [event async for event in demo.stream(ChatRequest("parley-demo", messages, tools=tools))]
        call = next((event for event in events if isinstance(event, ToolCall)), None)
        if call is None:
            assert events[-1] == Finish("stop", "parley-demo-1")
            return calls, "".join(event.text for event in events if isinstance(event, TextDelta))
        assert events[-1].reason == "tool_calls"
        calls.append(call)
        messages += [
            {"role": "assistant", "content": "", "tool_calls": [{"id": call.call_id, "name": call.name, "arguments": call.arguments}]},
            {"role": "tool", "tool_call_id": call.call_id, "content": f"result of {call.name}"},
        ]
    raise AssertionError("the plan never ended")


async def test_the_plan_calls_every_offered_tool_once_in_order_then_answers():
    calls, answer = await run_plan("Plan a picnic budget: 12 * 4 + 30, and mail it to ann@example.com")
    assert [call.name for call in calls] == ["search_conversations", "calculate", "write_report", "send_email"]
    arguments = [json.loads(call.arguments) for call in calls]
    assert arguments[0] == {"query": "picnic"} and arguments[1] == {"expression": "12 * 4 + 30"}
    assert arguments[2]["title"].startswith("Plan a picnic budget") and "result of calculate" in arguments[2]["markdown"]
    assert arguments[3]["to"] == "ann@example.com" and arguments[3]["subject"].startswith("Report: ")
    assert len({call.call_id for call in calls}) == 4
    assert answer.startswith("Done in 4 steps.") and "result of send_email" in answer


async def test_without_an_address_or_an_offered_tool_those_steps_are_skipped():
    calls, _ = await run_plan("Summarize my notes about bread")
    assert [call.name for call in calls] == ["search_conversations", "calculate", "write_report"]
    assert json.loads(calls[1].arguments) == {"expression": "6 * 7"}
    only_math = tuple(tool for tool in ALL_TOOLS if tool["name"] == "calculate")
    calls, answer = await run_plan("What is (2 + 3) ^ 2? mail bob@example.com", tools=only_math)
    assert [(call.name, json.loads(call.arguments)) for call in calls] == [("calculate", {"expression": "(2 + 3) ^ 2"})]
    assert answer.startswith("Done in 1 step.")


async def test_the_plan_is_the_same_every_time():
    goal = "Compare 3 + 4 with my earlier chats, then email me at me@example.org"
    assert await run_plan(goal) == await run_plan(goal)
