"""Serving a bidirectional stream whose requests are answered concurrently, as they finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

Req = TypeVar("Req")
Resp = TypeVar("Resp")
_END = object()


class _Failed:
    """Sentinel carrying the error that ended the request side of the stream."""

    def __init__(self, exc: BaseException):
        self.exc = exc


async def answer_concurrently(requests: AsyncIterator[Req],
                              handle: Callable[[Req, Callable[[Resp], None]], Coroutine[Any, Any, None]],
                              ) -> AsyncIterator[Resp]:
    """Run ``handle(request, emit)`` for each request as it arrives; yield whatever is emitted.

    Answers leave in the order they are ready, not the order requests came in. The stream ends
    once the client stopped sending and every handler returned. If reading the requests fails
    (an undecodable message, a broken stream), no further request is read, every request already
    accepted is still answered, and *then* the error is raised, so the call ends with a non-OK
    status and no accepted request is dropped silently. ``handle`` must not raise (answer errors
    in-band). If the client goes away (this generator is closed or cancelled), pending handlers
    are cancelled: nobody is left to answer.
    """
    out: asyncio.Queue = asyncio.Queue()
    tasks: set[asyncio.Task] = set()

    async def read():
        failure: BaseException | None = None
        try:
            async for req in requests:
                task = asyncio.create_task(handle(req, out.put_nowait))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the request side broke: answer what was accepted, then report
            failure = exc
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
        out.put_nowait(_Failed(failure) if failure is not None else _END)

    reader = asyncio.create_task(read())
    try:
        while (item := await out.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        reader.cancel()
        for t in list(tasks):
            t.cancel()
