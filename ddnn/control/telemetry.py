"""Sliding-window measurements of what the edge answered, and a reservoir of recent exit outputs."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np


class Telemetry:
    """Per-sample answers over the last ``window_s`` seconds: rates, bytes, latency percentiles."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self._events: deque = deque()  # (t, latency_s, offloaded, bytes, edge_s)
        self._lock = threading.Lock()

    def record(self, latency_s: np.ndarray, offloaded: bool, nbytes: int, edge_s: float) -> None:
        """A group of samples answered together (one path of one batch)."""
        t = self.clock()
        per = nbytes / max(1, len(latency_s))
        with self._lock:
            for lat in np.atleast_1d(latency_s):
                self._events.append((t, float(lat), offloaded, per, edge_s))

    def _window(self) -> list:
        cutoff = self.clock() - self.window_s
        with self._lock:
            while self._events and self._events[0][0] < cutoff:
                self._events.popleft()
            return list(self._events)

    def snapshot(self) -> dict:
        """answer_rate, offload_rate (samples/s), bytes_rate (B/s), p95_latency_s, edge_share, count."""
        ev = self._window()
        if not ev:
            return {"count": 0, "answer_rate": 0.0, "offload_rate": 0.0, "bytes_rate": 0.0, "p95_latency_s": 0.0,
                    "p95_edge_path_s": 0.0, "edge_share": 0.0, "offload_fraction": 0.0, "span_s": 0.0}
        a = np.array([(lat, off, b, e) for _, lat, off, b, e in ev], dtype=np.float64)
        # Rates over the time the window actually covers (at least 1 s), not the nominal window.
        span = max(1.0, min(self.window_s, self.clock() - ev[0][0]))
        local = a[:, 1] == 0
        return {"count": len(ev), "answer_rate": len(ev) / span, "offload_rate": a[:, 1].sum() / span,
                "bytes_rate": a[:, 2].sum() / span, "p95_latency_s": float(np.percentile(a[:, 0], 95)),
                # The edge path's own tail: offloading less cannot bring the p95 below this.
                "p95_edge_path_s": float(np.percentile(a[local, 0], 95)) if local.any() else 0.0,
                "edge_share": float(np.mean(a[:, 3] / np.maximum(a[:, 0], 1e-9))),
                "offload_fraction": float(a[:, 1].mean()), "span_s": span}


class Reservoir:
    """The softmax outputs of the last ``size`` samples that reached each exit."""

    def __init__(self, size: int = 2048):
        self.size = size
        self._data: dict[str, deque] = {}
        self._lock = threading.Lock()

    def add(self, exit: str, probs: np.ndarray) -> None:
        with self._lock:
            buf = self._data.setdefault(exit, deque(maxlen=self.size))
            buf.extend(np.asarray(probs, np.float32))

    def get(self, exit: str) -> np.ndarray | None:
        with self._lock:
            buf = self._data.get(exit)
            return np.stack(buf) if buf else None
