"""The shared first-token and idle timeouts of `Provider.stream`, on a provider that paces itself."""

import asyncio
import time

import pytest

from providers.base import ChatRequest, ErrorCode, Finish, Provider, StreamError, TextDelta, Timeouts, collect


class Paced(Provider):
    name = "paced"
    label = "Paced"

    def __init__(self, timeouts: Timeouts, gaps: list[float]) -> None:
        super().__init__(timeouts)
        self.gaps = gaps

    async def _stream(self, request: ChatRequest):
        for index, gap in enumerate(self.gaps):
            await asyncio.sleep(gap)
            yield TextDelta(f"{index} ")
        yield Finish("stop", "paced")


REQUEST = ChatRequest(model="paced", messages=[{"role": "user", "content": "hi"}])


async def test_steady_tokens_outlast_many_idle_limits():
    # 12 gaps of 0.1 s under a 0.25 s idle limit: the one timer must keep moving its deadline.
    reply = await collect(Paced(Timeouts(5, first_token=0.25, idle=0.25), [0.1] * 12), REQUEST)
    assert reply.error is None
    assert reply.text == "".join(f"{i} " for i in range(12))


async def test_a_stall_after_steady_tokens_times_out_as_idle():
    started = time.monotonic()
    reply = await collect(Paced(Timeouts(5, first_token=5, idle=0.3), [0.05] * 5 + [5]), REQUEST)
    assert reply.text == "0 1 2 3 4 "
    assert reply.error is not None and reply.error.code == ErrorCode.TIMEOUT
    assert "the next token" in reply.error.message
    assert time.monotonic() - started < 2


async def test_the_first_token_has_its_own_limit():
    reply = await collect(Paced(Timeouts(5, first_token=0.2, idle=5), [3]), REQUEST)
    assert reply.text == ""
    assert reply.error is not None and "the first token" in reply.error.message


async def test_a_slow_consumer_is_not_counted_as_provider_silence():
    provider = Paced(Timeouts(5, first_token=0.2, idle=0.2), [0.01] * 4)
    texts = []
    async for event in provider.stream(REQUEST):
        if isinstance(event, TextDelta):
            texts.append(event.text)
            await asyncio.sleep(0.4)  # longer than the idle limit, spent outside the provider
        assert not isinstance(event, StreamError)
    assert texts == ["0 ", "1 ", "2 ", "3 "]


async def test_cancelling_the_consumer_is_not_turned_into_a_timeout():
    provider = Paced(Timeouts(5, first_token=0.3, idle=0.3), [10])

    async def consume():
        return await collect(provider, REQUEST)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
