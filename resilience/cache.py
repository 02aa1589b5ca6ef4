"""The exact-match response cache: a reply to the very same request, replayed instead of asked again.

Opt-in per model (ChatModel.cache_responses), and only for a request that would come out the same
again: at temperature 0, unless the admin set "cache at any temperature". The key is a hash of
everything the model is sent (the model and its endpoint, the resolved system prompt, every
message with its files, the most output, the tools and the temperature), so any difference is a
miss. A hit is replayed as text deltas through the same streaming path at a natural pace, with
zero provider tokens: the ledger bills nothing, and the reply is marked as cached for support.
"""

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from django.conf import settings

from chat.models import ChatModel
from providers.base import ChatRequest, Finish, Image, StreamEvent, TextDelta, TextFile, Usage

logger = logging.getLogger(__name__)

# Replay pace: the original's own rate of pieces a second, within these bounds; a piece is a word
# with its spacing, about what a provider streams at a time.
SLOWEST, FASTEST = 30.0, 400.0
PIECE = re.compile(r"\s*\S+\s*|\s+")


def eligible(model: ChatModel, request: ChatRequest) -> bool:
    return model.cache_responses and (request.temperature == 0 or model.cache_any_temperature)


def key_of(model: ChatModel, request: ChatRequest) -> str:
    """The cache key: a hash of the model and everything it is sent."""
    described = {
        "model": model.name, "remote": request.model, "endpoint": model.endpoint or model.provider,
        "base_url": request.base_url, "system": request.system, "messages": [_turn(message) for message in request.messages],
        "max_output_tokens": request.max_output_tokens, "tools": list(request.tools), "temperature": request.temperature,
        "stop": list(request.stop), "top_p": request.top_p, "tool_choice": request.tool_choice,
    }
    digest = hashlib.sha256(orjson.dumps(described, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{settings.PARLEY_KEY_PREFIX}:cache:{digest}"


def _turn(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the key sees it: its files by name and content (images by a hash of their bytes)."""
    out = {name: value for name, value in message.items() if name != "attachments"}
    files = []
    for item in message.get("attachments", ()):
        if isinstance(item, TextFile):
            files.append({"name": item.name, "text": item.text})
        elif isinstance(item, Image):
            files.append({"name": item.name, "type": item.media_type, "sha256": hashlib.sha256(item.data).hexdigest()})
    if files:
        out["attachments"] = files
    return out


@dataclass(frozen=True, slots=True)
class Hit:
    text: str
    finish_reason: str
    model_version: str
    stored_at: float
    pieces_per_second: float

    def as_routing(self, key: str) -> dict[str, Any]:
        return {"key": key.rsplit(":", 1)[-1][:16], "stored_at": int(self.stored_at)}


async def lookup(client: aioredis.Redis, key: str) -> Hit | None:
    try:
        raw = await client.get(key)
    except aioredis.RedisError:
        logger.warning("The response cache could not be read", exc_info=True)
        return None
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
        return Hit(data["text"], data["finish_reason"], data.get("model_version", ""), data["stored_at"], data["pace"])
    except (ValueError, KeyError, TypeError):
        return None


async def store(client: aioredis.Redis, key: str, text: str, finish: Finish | None, ttft_ms: int | None, duration_ms: int | None) -> None:
    """Keep a complete reply for PARLEY_CACHE_SECONDS, with the pace it was written at."""
    if not text:
        return
    pieces = len(PIECE.findall(text))
    writing = max(0.001, ((duration_ms or 0) - (ttft_ms or 0)) / 1000)
    value = {
        "text": text, "finish_reason": finish.reason if finish else "stop",
        "model_version": finish.model_version if finish else "", "stored_at": time.time(), "pace": pieces / writing,
    }
    try:
        await client.set(key, orjson.dumps(value), ex=settings.PARLEY_CACHE_SECONDS)
    except aioredis.RedisError:
        logger.warning("A reply could not be cached", exc_info=True)


async def replay(hit: Hit) -> AsyncIterator[StreamEvent]:
    """The stored reply as a provider would stream it: pieces at its own pace (within bounds),
    then zero usage (no provider produced anything) and its finish."""
    interval = 1 / min(FASTEST, max(SLOWEST, hit.pieces_per_second))
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for piece in PIECE.findall(hit.text):
        yield TextDelta(piece)
        next_at += interval
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    yield Usage(0, 0)
    yield Finish(hit.finish_reason, hit.model_version)
