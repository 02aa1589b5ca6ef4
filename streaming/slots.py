"""This process's generation slots: how many replies it runs at once, and their tasks.

A send takes a slot before anything else, so a full process refuses at once (`busy`) instead of
queueing work it cannot serve; the generation gives it back when its reply is stored.
"""

import asyncio
from collections.abc import Coroutine
from typing import Any

from observability import metrics


class Slots:
    def __init__(self) -> None:
        self.taken = 0
        self.generations: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    def take(self, limit: int) -> bool:
        """Take a slot, or refuse when the process already runs `limit` replies."""
        if self.taken >= limit:
            metrics.admission_refused("slots_full")
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken -= 1

    def run(self, coroutine: Coroutine[Any, Any, None], name: str, context: Any) -> asyncio.Task[None]:
        """Run a generation that holds a slot, tracked until it ends."""
        task = asyncio.create_task(coroutine, name=name, context=context)
        self.generations.add(task)
        metrics.stream_started()
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.generations.discard(task)
        metrics.stream_ended()

    async def interrupt_all(self, grace: float) -> int:
        """The process is stopping: cancel every running generation (a generation cancelled from
        outside ends its reply as `interrupted`, text kept) and wait for them to store it. Returns
        how many were running."""
        running = list(self.generations)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=grace)
        return len(running)
