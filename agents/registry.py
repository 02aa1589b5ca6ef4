"""The tools agent runs may call (agents/builtin.py does their work), and the checks before a call:
the tool exists, this user may use it, and its arguments fit its schema."""

from typing import Any

from accounts.models import User
from agents import builtin
from agents.schema import validated
from agents.tools import Tool, ToolRefused


def _object(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


REGISTRY: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="calculate",
            title="Calculating",
            description="Compute an arithmetic expression exactly: numbers, + - * / // % ** and parentheses.",
            parameters=_object({"expression": {"type": "string", "minLength": 1, "maxLength": 500}}, ["expression"]),
            run=builtin.calculate,
            timeout_seconds=2.0,
        ),
        Tool(
            name="search_conversations",
            title="Searching your conversations",
            description="Search the user's own earlier conversations for words; returns matching messages with their conversation.",
            parameters=_object(
                {"query": {"type": "string", "minLength": 2, "maxLength": 200},
                 "limit": {"type": "integer", "minimum": 1, "maximum": 20}},
                ["query"],
            ),
            run=builtin.search_conversations,
        ),
        Tool(
            name="list_files",
            title="Listing the attached files",
            description="List the files the user attached to this conversation: name, type, size in bytes and characters of text.",
            parameters=_object({}, []),
            run=builtin.list_files,
            timeout_seconds=5.0,
        ),
        Tool(
            name="read_file",
            title="Reading an attached file",
            description=(
                "Read the text of a file the user attached to this conversation (text, Markdown, CSV or PDF), by its "
                "name as list_files gives it: up to max_chars characters from offset. When `truncated` is true, more "
                "text follows: read on from offset + the length of `text`."
            ),
            parameters=_object(
                {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                 "offset": {"type": "integer", "minimum": 0},
                 "max_chars": {"type": "integer", "minimum": 1, "maximum": 20_000}},
                ["name"],
            ),
            run=builtin.read_file,
            timeout_seconds=10.0,
        ),
        Tool(
            name="write_report",
            title="Writing the report",
            description="Save a Markdown report the user can download; returns its name.",
            parameters=_object(
                {"title": {"type": "string", "minLength": 1, "maxLength": 100},
                 "markdown": {"type": "string", "minLength": 1, "maxLength": 200_000}},
                ["title", "markdown"],
            ),
            run=builtin.write_report,
            side_effects=True,
        ),
        Tool(
            name="send_email",
            title="Sending an e-mail",
            description="Send a plain-text e-mail to an address the user gave. A person approves it first.",
            parameters=_object(
                {"to": {"type": "string", "format": "email", "maxLength": 254},
                 "subject": {"type": "string", "minLength": 1, "maxLength": 200},
                 "body": {"type": "string", "minLength": 1, "maxLength": 20_000}},
                ["to", "subject", "body"],
            ),
            run=builtin.send_email,
            permission="agents.use_email_tool",
            risk="high",
            timeout_seconds=30.0,
            side_effects=True,
        ),
    )
}


def offered_to(user: User) -> list[Tool]:
    """The tools a run of this user may be offered, in a stable order."""
    return [tool for tool in REGISTRY.values() if tool.allowed_for(user)]


def tool_for(user: User, name: object) -> Tool:
    tool = REGISTRY.get(name) if isinstance(name, str) else None
    if tool is None:
        raise ToolRefused(f"There is no tool named {str(name)[:60]!r}.")
    if not tool.allowed_for(user):
        raise ToolRefused(f"This account may not use the {tool.name} tool.")
    return tool


def prepare(user: User, name: object, arguments: object) -> tuple[Tool, dict[str, Any]]:
    """The tool and its checked arguments, or ToolRefused / InvalidArguments with words for the model."""
    tool = tool_for(user, name)
    return tool, validated(tool.parameters, arguments)
