"""Link profiles as data, and the ``tc`` arguments that impose them.

A profile describes one direction of the edge<->cloud link; the testbed applies it to both ends,
so ``delay_ms`` is one-way and the round trip is twice it. Profiles live in ``profiles.json``
beside this module (``ddnn.testbed.profiles/v1``); a user edits that file or passes another.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

PROFILES_FILE = Path(__file__).with_name("profiles.json")
FORMAT = "ddnn.testbed.profiles/v1"
NETEM_LIMIT_PACKETS = 10000  # netem's queue (default 1000); tbf gets the equivalent in bytes below
TBF_MIN_BURST_BYTES = 16 * 1024
TBF_MIN_LIMIT_BYTES = 4 * 1024 * 1024  # above Linux TCP small queues' per-socket budget: no tail drops


@dataclass(frozen=True)
class LinkProfile:
    """One direction of a link: rate (None = unlimited), one-way delay and jitter, loss, or down."""

    name: str
    rate_mbit: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    down: bool = False
    description: str = ""

    def __post_init__(self):
        where = f"link profile {self.name!r}"
        if self.rate_mbit is not None and not (self.rate_mbit > 0 and math.isfinite(self.rate_mbit)):
            raise ValueError(f"{where}: rate_mbit must be > 0 or null (unlimited), got {self.rate_mbit}")
        for key in ("delay_ms", "jitter_ms"):
            v = getattr(self, key)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{where}: {key} must be >= 0, got {v}")
        if not 0 <= self.loss_pct <= 100:
            raise ValueError(f"{where}: loss_pct must be in [0, 100], got {self.loss_pct}")
        if self.jitter_ms > self.delay_ms:
            raise ValueError(f"{where}: jitter_ms ({self.jitter_ms}) larger than delay_ms ({self.delay_ms})")

    @classmethod
    def from_dict(cls, name: str, d: dict) -> LinkProfile:
        known = {"rate_mbit", "delay_ms", "jitter_ms", "loss_pct", "down", "description"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"link profile {name!r}: unknown fields {sorted(unknown)} (known: {sorted(known)})")
        rate = d.get("rate_mbit")
        return cls(name, None if rate is None else float(rate), float(d.get("delay_ms", 0)),
                   float(d.get("jitter_ms", 0)), float(d.get("loss_pct", 0)), bool(d.get("down", False)),
                   str(d.get("description", "")))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def rtt_floor_ms(self) -> float:
        """The round trip the profile alone adds (both directions' delay)."""
        return 2 * self.delay_ms

    def summary(self) -> str:
        if self.down:
            return "link down"
        parts = [f"{self.rate_mbit:g} Mbit/s" if self.rate_mbit else "unlimited", f"{self.delay_ms:g} ms"]
        if self.jitter_ms:
            parts[-1] += f" ±{self.jitter_ms:g}"
        if self.loss_pct:
            parts.append(f"{self.loss_pct:g}% loss")
        return ", ".join(parts)


def load_profiles(path: str | Path | None = None) -> dict[str, LinkProfile]:
    """Read a ``ddnn.testbed.profiles/v1`` file (default: the shipped one)."""
    path = Path(path) if path else PROFILES_FILE
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: expected \"format\": \"{FORMAT}\", got {doc.get('format')!r}")
    profiles = doc.get("profiles")
    if not isinstance(profiles, dict) or not profiles:
        raise ValueError(f"{path}: \"profiles\" must be a non-empty object of name -> profile")
    return {name: LinkProfile.from_dict(name, d) for name, d in profiles.items()}


def _rate(mbit: float) -> str:
    return f"{round(mbit * 1000)}kbit"


def netem_args(p: LinkProfile) -> list[str]:
    """``tc qdisc replace dev X root netem ARGS`` for one direction."""
    args = ["delay", f"{p.delay_ms:g}ms"]
    if p.jitter_ms:
        args.append(f"{p.jitter_ms:g}ms")
    if p.loss_pct:
        args += ["loss", f"{p.loss_pct:g}%"]
    if p.rate_mbit:
        args += ["rate", _rate(p.rate_mbit)]
    return [*args, "limit", str(NETEM_LIMIT_PACKETS)]


def tbf_args(p: LinkProfile) -> list[str] | None:
    """``tc qdisc replace dev X root tbf ARGS`` for the rate alone (the nfqueue shaper), None if unlimited.

    The bucket holds 4 ms at the rate (at least 16 KiB, so tbf splits a large GSO packet rather
    than sending it in one go) and the queue at least 4 MiB or half a second at the rate.
    """
    if not p.rate_mbit:
        return None
    bytes_per_s = p.rate_mbit * 1e6 / 8
    burst = max(TBF_MIN_BURST_BYTES, int(bytes_per_s * 0.004))
    limit = max(TBF_MIN_LIMIT_BYTES, int(bytes_per_s * 0.5))
    return ["rate", _rate(p.rate_mbit), "burst", str(burst), "limit", str(limit)]


def parse_schedule(text: str, profiles: dict[str, LinkProfile]) -> list[tuple[str, float]]:
    """``good:30,constrained:30,outage:30,good:30`` -> [(profile, seconds), ...]."""
    out = []
    for part in filter(None, (t.strip() for t in text.split(","))):
        name, sep, secs = part.partition(":")
        try:
            duration = float(secs) if sep else float("nan")
        except ValueError:
            duration = float("nan")
        if not (duration > 0 and math.isfinite(duration)):
            raise ValueError(f"schedule: expected PROFILE:SECONDS like good:30, got {part!r}")
        if name not in profiles:
            raise ValueError(f"schedule: unknown profile {name!r} (known: {', '.join(profiles)})")
        out.append((name, duration))
    if not out:
        raise ValueError("schedule: empty; expected e.g. good:30,constrained:30,outage:30,good:30")
    return out
