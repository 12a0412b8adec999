"""Serving a bidirectional stream whose requests are answered concurrently, as they finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

Req = TypeVar("Req")
Resp = TypeVar("Resp")
_END = object()


async def answer_concurrently(requests: AsyncIterator[Req],
                              handle: Callable[[Req, Callable[[Resp], None]], Awaitable[None]]) -> AsyncIterator[Resp]:
    """Run ``handle(request, emit)`` for each request as it arrives; yield whatever is emitted.

    Answers leave in the order they are ready, not the order requests came in; the stream ends
    once the client stopped sending and every handler returned. ``handle`` must not raise (answer
    errors in-band); if the client goes away, pending handlers are cancelled.
    """
    out: asyncio.Queue = asyncio.Queue()
    tasks: set[asyncio.Task] = set()

    async def read():
        try:
            async for req in requests:
                task = asyncio.create_task(handle(req, out.put_nowait))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
        finally:
            out.put_nowait(_END)

    reader = asyncio.create_task(read())
    try:
        while (item := await out.get()) is not _END:
            yield item
    finally:
        reader.cancel()
        for t in list(tasks):
            t.cancel()
