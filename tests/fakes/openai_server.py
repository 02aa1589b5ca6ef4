"""A fake OpenAI Chat Completions endpoint: `POST /v1/chat/completions` with `stream: true`.

Wire format as the real API sends it: one `data: {chat.completion.chunk}` event per token (the
first carrying the role), a chunk with `finish_reason`, then - when `stream_options.include_usage`
is set - a chunk with empty `choices` and the `usage`, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import FakeServer, Scenario, argument_pieces, cli, token

CONTEXT_MESSAGE = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in 130412 tokens. "
    "Please reduce the length of the messages."
)


class OpenAIFake(FakeServer):
    route = "/v1/chat/completions"
    error_kinds = frozenset({"rate_limited", "server_error", "unauthorized", "context_length", "bad_request", "status"})

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def _key_matches(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def model_list(self, request: web.Request) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake"} for name in self.models],
        }

    def error_body(self, status: int, scenario: Scenario) -> dict[str, Any]:
        if scenario.kind == "context_length":
            error = {"message": CONTEXT_MESSAGE, "type": "invalid_request_error", "param": "messages",
                     "code": "context_length_exceeded"}
        elif status == 401:
            error = {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None,
                     "code": "invalid_api_key"}
        elif status == 429:
            error = {"message": "Rate limit reached for requests.", "type": "requests", "param": None,
                     "code": "rate_limit_exceeded"}
        elif status >= 500:
            error = {"message": "The server had an error while processing your request.", "type": "server_error",
                     "param": None, "code": None}
        else:
            error = {"message": "Invalid request.", "type": "invalid_request_error", "param": None, "code": None}
        return {"error": error}

    async def stream_reply(self, request: web.Request, scenario: Scenario, model: str) -> web.StreamResponse:
        body = self.last.json
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or scenario.tokens
        count = scenario.tokens if scenario.ignore_max_tokens else min(scenario.tokens, limit)
        response = await self.open_stream(request)
        chunk = _ChunkMaker(model)
        if scenario.kind == "tool_call" and body.get("tools") and (body.get("messages") or [{}])[-1].get("role") != "tool":
            return await self._stream_tool_call(response, chunk, scenario, body)
        if scenario.kind == "slow_first":
            await asyncio.sleep(scenario.delay)
        frames = [chunk.frame({"role": "assistant", "content": ""})]
        for index in range(count):
            if index == scenario.after and scenario.kind in {"cut", "truncate", "stall", "malformed"}:
                await self.send(response, frames, scenario)
                frames = []
                if scenario.kind == "cut":
                    self.abort(request)
                    return response
                if scenario.kind == "truncate":
                    await response.write_eof()
                    return response
                if scenario.kind == "stall":
                    await asyncio.sleep(scenario.delay)
                if scenario.kind == "malformed":
                    frames.append(b'data: {"id": "chatcmpl-fake", "choices": [{"delta": {"content": "oops"\n\n')
            frames.append(chunk.frame({"content": token(index)}))
            if len(frames) >= scenario.batch:
                await self.send(response, frames, scenario)
                frames = []
                await self.pace(scenario)
        frames.append(chunk.frame({}, finish_reason="length" if count < scenario.tokens else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            frames.append(chunk.usage_frame(_prompt_tokens(body), count + scenario.hidden_tokens))
        frames.append(b"data: [DONE]\n\n")
        await self.send(response, frames, scenario)
        await response.write_eof()
        return response


    async def _stream_tool_call(
        self, response: web.StreamResponse, chunk: "_ChunkMaker", scenario: Scenario, body: dict[str, Any]
    ) -> web.StreamResponse:
        name = scenario.called_tool([tool["function"]["name"] for tool in body["tools"]])
        opening = {"index": 0, "id": "call_fake1", "type": "function", "function": {"name": name, "arguments": ""}}
        frames = [chunk.frame({"role": "assistant", "content": None, "tool_calls": [opening]})]
        frames += [chunk.frame({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                   for piece in argument_pieces(scenario.tool_arguments)]
        frames.append(chunk.frame({}, finish_reason="tool_calls"))
        if (body.get("stream_options") or {}).get("include_usage"):
            frames.append(chunk.usage_frame(_prompt_tokens(body), len(scenario.tool_arguments) // 4 + 5))
        frames.append(b"data: [DONE]\n\n")
        await self.send(response, frames, scenario)
        await response.write_eof()
        return response


class _ChunkMaker:
    def __init__(self, model: str) -> None:
        self.base = {
            "id": "chatcmpl-fake123",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": f"{model}-2025-01-01",
            "system_fingerprint": "fp_fake",
        }

    def frame(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return b"data: " + orjson.dumps({**self.base, "choices": [choice]}) + b"\n\n"

    def usage_frame(self, prompt: int, completion: int) -> bytes:
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return b"data: " + orjson.dumps({**self.base, "choices": [], "usage": usage}) + b"\n\n"


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1


if __name__ == "__main__":
    cli(OpenAIFake, "Fake OpenAI Chat Completions streaming server")
