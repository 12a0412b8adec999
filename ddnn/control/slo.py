"""An SLO controller for the edge (beyond the papers).

Given one target — a p95 latency, a cloud request-rate budget (samples/s offloaded) or a link
bandwidth budget (bytes/s) — the controller sets, once per interval:

* the **offload fraction** it aims for, and from it the active exit's **knob**. The knob that
  yields an offload fraction f is read off the recent traffic itself: each criterion reports,
  per sample, the knob value at which its decision flips (``critical_knob``), so on a reservoir
  of the last samples' softmax outputs the knob for f is a quantile. Budgets are met by
  feed-forward (budget / arrival rate) with a multiplicative integral trim on the measured
  error; the latency target uses additive-increase / multiplicative-decrease.
* the **payload**: with a bandwidth budget that binds, the smallest allowed payload per sample
  (raw uint8 input, int8, fp16 features) replaces fp32, and fp32 returns when fp32 would fit.
* the **exit depth**: with a latency target, when the samples answered at the edge are
  themselves over the target (edge compute and queueing are the tail, so offloading less cannot
  help), the shallow (ws) exit is used; otherwise the deep (normal) one. The offload fraction is
  cut only while the tail comes from the cloud path.

With too few answers in the window (a pause in traffic) it holds everything as it is: an empty
window says nothing about the link or the load.

It never offloads more than the base policy would (the accuracy-preferred operating point): it
only trades accuracy for the target, and gives it back when there is headroom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ddnn.codec import Payload
from ddnn.export.bundle import Mode
from ddnn.policies import ExitCriterion, softmax

KINDS = ("p95_latency", "cloud_rate", "bandwidth")


@dataclass(frozen=True)
class SloTarget:
    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"SLO kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.value > 0:
            raise ValueError(f"SLO target must be > 0, got {self.value}")

    @classmethod
    def parse(cls, text: str) -> SloTarget:
        """'p95_latency=0.2' | 'cloud_rate=50' | 'bandwidth=1e6'."""
        kind, sep, value = text.partition("=")
        try:
            if not sep:
                raise ValueError
            return cls(kind.strip(), float(value))
        except ValueError as exc:
            raise ValueError(f"--slo expects KIND=VALUE with KIND in {', '.join(KINDS)}, got {text!r}"
                             f"{': ' + str(exc) if str(exc) else ''}") from None


def offload_fraction(crit: ExitCriterion, probs: np.ndarray) -> float:
    """Fraction of ``probs`` rows the criterion does not let exit."""
    return float(1.0 - crit.accept(probs).mean()) if len(probs) else 0.0


def knob_for_offload(crit: ExitCriterion, probs: np.ndarray, f: float) -> float:
    """The knob at which about a fraction ``f`` of these samples would not exit."""
    flips = np.sort(crit.critical_knob(probs))
    flips = flips[np.isfinite(flips)] if np.isfinite(flips).any() else flips
    e = 1.0 - float(np.clip(f, 0.0, 1.0))  # exit fraction wanted
    if crit.knob_increases_exits:  # exits iff knob is above its flip point
        return float(np.quantile(flips, e))
    return float(np.quantile(flips, 1.0 - e))  # exits iff knob is below its flip point


@dataclass
class Decision:
    knob: float | None
    payload: Payload | None  # None: leave as is
    depth: Mode | None  # ws or normal; None: leave as is
    offload_target: float
    measured: float


@dataclass
class SloController:
    """See the module docstring. ``step`` is pure: measurements in, a decision out."""

    target: SloTarget
    payloads: tuple[Payload, ...] = (Payload.FP32, Payload.RAW, Payload.INT8, Payload.FP16)
    gain: float = 0.3  # per-step integral gain; the 5 s window lags a 1 s step, so keep it gentle
    f_min: float = 0.0
    min_samples: int = 64
    trim: float = 1.0
    f_cmd: float | None = None
    history: list = field(default_factory=list)

    def measured(self, m: dict) -> float:
        return {"p95_latency": m["p95_latency_s"], "cloud_rate": m["offload_rate"],
                "bandwidth": m["bytes_rate"]}[self.target.kind]

    def step(self, m: dict, crit: ExitCriterion, base: ExitCriterion, probs: np.ndarray,
             payload: str, payload_bytes: Mapping[str, float], depth: str) -> Decision:
        """One control interval.

        Args:
            m: :meth:`Telemetry.snapshot` of the last window.
            crit: the active exit's criterion now; ``base`` the base policy's.
            probs: recent softmax outputs at the active exit (the reservoir).
            payload: payload in use; ``payload_bytes`` bytes per offloaded sample of each payload.
            depth: :class:`Mode` normal or ws, the route in use.
        """
        f_base = offload_fraction(base, probs)
        if self.f_cmd is None:
            self.f_cmd = offload_fraction(crit, probs)
        measured = self.measured(m)
        if m["count"] < self.min_samples:
            return Decision(None, None, None, self.f_cmd, measured)
        arrival = max(m["answer_rate"], 1e-9)
        new_payload: Payload | None = None
        new_depth: Mode | None = None
        if self.target.kind == "p95_latency":
            edge_tail = m["p95_edge_path_s"] > 0.9 * self.target.value
            if measured > self.target.value and not edge_tail:
                self.f_cmd *= 0.7  # the cloud path is the tail: offload less
            elif measured < 0.85 * self.target.value or edge_tail:
                self.f_cmd = self.f_cmd * 1.15 + 0.01  # headroom, or offloading is not the problem
            want_depth = Mode.WS if edge_tail else Mode.NORMAL
            new_depth = want_depth if want_depth != depth else None
        else:
            per_sample = 1.0 if self.target.kind == "cloud_rate" else payload_bytes[payload]
            if self.target.kind == "bandwidth":
                # Smallest payload when the budget binds with fp32; back to fp32 when it fits with room.
                fp32_fits = arrival * f_base * payload_bytes[Payload.FP32] <= 0.8 * self.target.value
                best = min(self.payloads, key=lambda p: payload_bytes[p])
                choice = Payload.FP32 if fp32_fits else best
                if choice != payload:
                    new_payload, per_sample = choice, payload_bytes[choice]
            feed_forward = self.target.value / (arrival * per_sample)
            if measured > 0 and m["count"] > 0 and new_payload is None:
                self.trim *= float(np.clip((self.target.value / measured) ** self.gain, 0.5, 2.0))
                self.trim = float(np.clip(self.trim, 0.1, 10.0))
            self.f_cmd = feed_forward * self.trim
        self.f_cmd = float(np.clip(self.f_cmd, self.f_min, f_base))
        knob = knob_for_offload(crit, probs, self.f_cmd) if len(probs) else None
        self.history.append((measured, self.f_cmd, knob))
        return Decision(knob, new_payload, new_depth, self.f_cmd, measured)


def probs_from_logits(logits: np.ndarray) -> np.ndarray:
    return softmax(logits).astype(np.float32)
