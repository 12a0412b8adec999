"""Bounds on the work a service admits at once, in bytes of request payload."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ddnn.errors import Overloaded


class ByteBudget:
    """Payload bytes in flight in one service, refused (RESOURCE_EXHAUSTED) above ``limit``.

    Together with the message size limit this bounds the memory requests can pin: a request is
    counted from admission until its answer left, and one refused is dropped at once.
    """

    def __init__(self, limit: int, what: str = "service", gauge=None):
        self.limit = limit
        self.what = what
        self.used = 0
        self.gauge = gauge

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        if self.used + nbytes > self.limit:
            raise Overloaded(f"{self.what} has {self.used} payload bytes in flight; {nbytes} more would pass "
                             f"max_inflight_bytes={self.limit}; retry later")
        self.used += nbytes
        self._export()
        try:
            yield
        finally:
            self.used -= nbytes
            self._export()

    def _export(self) -> None:
        if self.gauge is not None:
            self.gauge.set(self.used)
