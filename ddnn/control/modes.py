"""Dynamic network sizing (Lo et al. §IV): pick the edge's operating mode from the channel.

* ``ws`` (workload sharing): the shallow exit; more samples go to the cloud. Used when the link
  is fast (low RTT, high throughput).
* ``normal``: the deepest edge exit; fewer samples offloaded. Used when the link is constrained.
* ``local``: nothing offloaded (every would-be offload is answered locally, marked degraded).
  Used when the cloud is unreachable or the link loses too many requests.

Switches need the new mode's condition to hold for ``dwell_s`` (hysteresis in time), and the
enter/leave thresholds of ``ws`` and ``local`` differ (hysteresis in value), so a link near a
threshold does not make the edge flap. Losing the connection switches to ``local`` at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ddnn.export.bundle import Mode


@dataclass(frozen=True)
class LinkState:
    """What the monitor knows about the edge->cloud link right now."""

    connected: bool
    rtt_s: float  # network round trip (probe), 0 if unknown
    throughput_bps: float  # bytes/s achieved by offloads, 0 if unknown
    error_rate: float  # smoothed fraction of failed offloads/probes
    inflight_batches: int = 0


@dataclass(frozen=True)
class ModeThresholds:
    """Thresholds of the mode selector (defaults suit a LAN vs a 10 Mbit/s, 40 ms WAN)."""

    ws_enter_rtt_s: float = 0.010
    ws_leave_rtt_s: float = 0.020
    ws_enter_throughput_bps: float = 8e6  # 64 Mbit/s
    ws_leave_throughput_bps: float = 4e6
    local_enter_error_rate: float = 0.5
    local_leave_error_rate: float = 0.1
    max_inflight_batches: int = 64  # more than this in flight: the link is saturated, not "good"
    dwell_s: float = 2.0


class ModeSelector:
    """Chooses normal / ws / local (a :class:`~ddnn.export.bundle.Mode`) from successive :class:`LinkState`
    observations."""

    def __init__(self, thresholds: ModeThresholds | None = None, initial: str = Mode.NORMAL,
                 clock: Callable[[], float] = time.monotonic):
        self.t = thresholds or ModeThresholds()
        self.clock = clock
        self.mode = Mode(initial)
        self._candidate = self.mode
        self._since = clock()
        self.switches = 0

    def candidate(self, s: LinkState) -> Mode:
        """The mode the link calls for now, before the dwell time (value hysteresis applied)."""
        t = self.t
        if not s.connected:
            return Mode.LOCAL
        local_limit = t.local_leave_error_rate if self.mode == Mode.LOCAL else t.local_enter_error_rate
        if s.error_rate >= local_limit:
            return Mode.LOCAL
        in_ws = self.mode == Mode.WS
        rtt_ok = s.rtt_s > 0 and s.rtt_s <= (t.ws_leave_rtt_s if in_ws else t.ws_enter_rtt_s)
        # Throughput is only known once offloads happened; an unknown value does not block ws.
        tput_limit = t.ws_leave_throughput_bps if in_ws else t.ws_enter_throughput_bps
        tput_ok = s.throughput_bps == 0 or s.throughput_bps >= tput_limit
        if rtt_ok and tput_ok and s.inflight_batches <= t.max_inflight_batches:
            return Mode.WS
        return Mode.NORMAL

    def update(self, s: LinkState) -> Mode:
        """Feed one observation; return the mode in effect after it."""
        now = self.clock()
        want = self.candidate(s)
        if want != self._candidate:
            self._candidate, self._since = want, now
        if want != self.mode and (not s.connected or now - self._since >= self.t.dwell_s):
            self.mode = want
            self.switches += 1
        return self.mode
