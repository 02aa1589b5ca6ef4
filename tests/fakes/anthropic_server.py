"""A fake Anthropic Messages endpoint: `POST /v1/messages` with `stream: true`.

Wire format as the real API sends it: `event: message_start` (model, input token usage),
`content_block_start`, a `ping`, one `content_block_delta`/`text_delta` per token,
`content_block_stop`, `message_delta` (stop_reason and output token usage), `message_stop`. A
request's `stop_sequences` end the reply at the token that would write one (`stop_sequence`).
Overload comes either as an HTTP 529 or, mid-reply, as an `event: error` with `overloaded_error`.
While stalled or slow to start it keeps sending pings, as the real API does, so clients must not
mistake pings for progress.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import FakeServer, Scenario, argument_pieces, cli, token

PING_SECONDS = 0.2
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


PING = event("ping", {"type": "ping"})


class AnthropicFake(FakeServer):
    route = "/v1/messages"
    error_kinds = frozenset(
        {"rate_limited", "server_error", "overloaded", "unauthorized", "context_length", "bad_request", "status"}
    )

    def _key_matches(self, request: web.Request) -> bool:
        # The API takes `x-api-key`; the current SDK sends the key as a bearer token instead.
        headers = request.headers
        return headers.get("x-api-key") == self.api_key or headers.get("Authorization") == f"Bearer {self.api_key}"

    def model_list(self, request: web.Request) -> dict[str, Any]:
        """One page, as the API pages it: `limit` (default 20) after `after_id`."""
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after_id")
        start = self.models.index(after) + 1 if after in self.models else 0
        page = self.models[start : start + limit]
        data = [
            {"type": "model", "id": name, "display_name": name.replace("-", " ").title(), "created_at": "2025-01-01T00:00:00Z"}
            for name in page
        ]
        return {
            "data": data, "has_more": start + limit < len(self.models),
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None,
        }

    def error_body(self, status: int, scenario: Scenario) -> dict[str, Any]:
        kind = ERROR_TYPES.get(status, "api_error")
        message = {
            "context_length": "prompt is too long: 208310 tokens > 200000 maximum",
            "overloaded": "Overloaded",
            "unauthorized": "invalid x-api-key",
            "rate_limited": "Number of request tokens has exceeded your per-minute rate limit",
        }.get(scenario.kind, "Internal server error" if status >= 500 else "Invalid request")
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}

    async def stream_reply(self, request: web.Request, scenario: Scenario, model: str) -> web.StreamResponse:
        body = self.last.json
        count = min(scenario.tokens, int(body.get("max_tokens", scenario.tokens)))
        if scenario.ignore_max_tokens:
            count = scenario.tokens
        stopped_at, sequence = _stop_point(body.get("stop_sequences") or [], count)
        response = await self.open_stream(request)
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_fake123", "type": "message", "role": "assistant", "content": [],
                "model": f"{model}-20250929", "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": _prompt_tokens(body), "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 1},
            },
        }
        await self.send(response, [event("message_start", start)], scenario)
        if scenario.kind == "tool_call" and body.get("tools") and not _answers_a_tool(body):
            return await self._stream_tool_use(response, scenario, body)
        if scenario.kind == "slow_first":
            await self._ping_for(response, scenario.delay)
        frames = [
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}),
            PING,
        ]
        for index in range(stopped_at):
            if index == scenario.after and scenario.kind in {"cut", "truncate", "stall", "malformed",
                                                               "overloaded_in_stream"}:
                await self.send(response, frames, scenario)
                frames = []
                if scenario.kind == "cut":
                    self.abort(request)
                    return response
                if scenario.kind == "truncate":
                    await response.write_eof()
                    return response
                if scenario.kind == "overloaded_in_stream":
                    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                    await self.send(response, [event("error", error)], scenario)
                    await response.write_eof()
                    return response
                if scenario.kind == "stall":
                    await self._ping_for(response, scenario.delay)
                if scenario.kind == "malformed":
                    frames.append(b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {\n\n')
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token(index)}}
            frames.append(event("content_block_delta", delta))
            if len(frames) >= scenario.batch:
                await self.send(response, frames, scenario)
                frames = []
                await self.pace(scenario)
        stop_reason = "stop_sequence" if sequence else "max_tokens" if count < scenario.tokens else "end_turn"
        frames += [
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": stop_reason, "stop_sequence": sequence},
                                    "usage": {"output_tokens": stopped_at}}),
            event("message_stop", {"type": "message_stop"}),
        ]
        await self.send(response, frames, scenario)
        await response.write_eof()
        return response

    async def _stream_tool_use(self, response: web.StreamResponse, scenario: Scenario, body: dict[str, Any]) -> web.StreamResponse:
        block = {"type": "tool_use", "id": "toolu_fake1", "name": scenario.called_tool([tool["name"] for tool in body["tools"]]), "input": {}}
        frames = [event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})]
        frames += [
            event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "input_json_delta", "partial_json": piece}})
            for piece in argument_pieces(scenario.tool_arguments)
        ]
        frames += [
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                    "usage": {"output_tokens": len(scenario.tool_arguments) // 4 + 5}}),
            event("message_stop", {"type": "message_stop"}),
        ]
        await self.send(response, frames, scenario)
        await response.write_eof()
        return response

    async def _ping_for(self, response: web.StreamResponse, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(min(PING_SECONDS, left))
            await response.write(PING)


def _answers_a_tool(body: dict[str, Any]) -> bool:
    content = (body.get("messages") or [{}])[-1].get("content")
    return isinstance(content, list) and any(block.get("type") == "tool_result" for block in content)


def _stop_point(sequences: list[str], count: int) -> tuple[int, str | None]:
    """How many tokens come before the reply would first hold one of the request's stop sequences
    (the API stops there and leaves the sequence out), and which one; else all of them."""
    text = ""
    for index in range(count):
        text += token(index)
        for sequence in sequences:
            if sequence in text:
                return index, sequence
    return count, None


def _prompt_tokens(body: dict[str, Any]) -> int:
    text = str(body.get("system", "")) + "".join(str(m.get("content", "")) for m in body.get("messages", []))
    return len(text) // 4 + 1


if __name__ == "__main__":
    cli(AnthropicFake, "Fake Anthropic Messages streaming server")
