"""``python -m ddnn.testbed.delayer``: netem's delay, jitter and loss in user space, for kernels without it.

Runs inside a network namespace. Queues every IPv4 packet arriving on ``--dev`` to nfnetlink_queue
(see :mod:`ddnn.testbed.netlink`), holds each for the configured delay (plus uniform jitter,
never reordering, as netem does with a rate), drops a configured fraction, and hands the rest
back to the kernel. The rate is the sending end's tbf; so a direction of the link is: the
sender's tbf (rate), the wire, the receiver's delayer (delay, loss) — netem's order too.

Control: one JSON object per line on stdin, e.g. ``{"delay_ms": 40, "jitter_ms": 0, "loss_pct": 5}``;
each is answered on stdout by one JSON line with the packet counters so far. The first line on
stdout, ``{"ready": true, ...}``, says the rule and the queue are in place. EOF on stdin or SIGTERM
ends it; the nf_tables table is removed on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass

from ddnn.testbed.netlink import NF_ACCEPT, NF_DROP, PacketQueue, add_queue_rule, delete_table


@dataclass
class Impairment:
    """What the delayer applies to each packet."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> Impairment:
        imp = cls(float(d.get("delay_ms", 0)), float(d.get("jitter_ms", 0)), float(d.get("loss_pct", 0)))
        if imp.delay_ms < 0 or imp.jitter_ms < 0 or not 0 <= imp.loss_pct <= 100:
            raise ValueError(f"bad impairment {d}: delay and jitter >= 0, loss in [0, 100]")
        return imp


class Delayer:
    """FIFO of (release time, packet id); due packets are accepted with one batch verdict."""

    def __init__(self, queue: PacketQueue, imp: Impairment, seed: int = 0):
        self.q = queue
        self.imp = imp
        self.rng = random.Random(seed)
        self.pending: deque[tuple[float, int]] = deque()
        self.last_release = 0.0
        self.counts = {"accepted": 0, "dropped": 0, "max_pending": 0}

    def arrive(self, ids: list[int], now: float) -> None:
        loss = self.imp.loss_pct / 100.0
        delay, jitter = self.imp.delay_ms / 1000.0, self.imp.jitter_ms / 1000.0
        for pid in ids:
            if loss and (loss >= 1.0 or self.rng.random() < loss):
                self.q.verdict(pid, NF_DROP)
                self.counts["dropped"] += 1
                continue
            hold = delay + (self.rng.uniform(-jitter, jitter) if jitter else 0.0)
            self.last_release = max(self.last_release, now + max(0.0, hold))
            self.pending.append((self.last_release, pid))
        self.counts["max_pending"] = max(self.counts["max_pending"], len(self.pending))

    def release_due(self, now: float) -> float | None:
        """Accept every due packet; return seconds until the next one is due (None if none waits)."""
        last, n = None, 0
        while self.pending and self.pending[0][0] <= now:
            last = self.pending.popleft()[1]
            n += 1
        if last is not None:
            self.q.verdict(last, NF_ACCEPT, batch=True)
            self.counts["accepted"] += n
        return self.pending[0][0] - now if self.pending else None

    def flush(self) -> None:
        if self.pending:
            self.q.verdict(self.pending[-1][1], NF_ACCEPT, batch=True)
            self.counts["accepted"] += len(self.pending)
            self.pending.clear()


def _reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run(dev: str, queue_num: int, table: str, imp: Impairment, max_s: float, ingress: bool = True) -> int:
    ifindex = socket.if_nametoindex(dev)
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    q = PacketQueue(queue_num)
    add_queue_rule(table, ifindex, queue_num, ingress)
    d = Delayer(q, imp, seed=queue_num)
    _reply({"ready": True, "dev": dev, "ifindex": ifindex, "queue": queue_num,
            "direction": "ingress" if ingress else "egress", "impairment": asdict(imp)})
    stdin = sys.stdin.fileno()
    buf = b""
    deadline = time.monotonic() + max_s
    try:
        while not stop and time.monotonic() < deadline:
            wait = d.release_due(time.monotonic())
            ready, _, _ = select.select([q, stdin], [], [], 0.5 if wait is None else min(0.5, max(0.0, wait)))
            if q in ready:
                d.arrive(q.read(), time.monotonic())
            if stdin in ready:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        try:
                            d.imp = Impairment.from_dict(json.loads(line))
                            _reply({"ok": True, "impairment": asdict(d.imp), **d.counts})
                        except (ValueError, TypeError) as exc:
                            _reply({"ok": False, "error": str(exc), **d.counts})
    finally:
        d.flush()
        try:
            delete_table(table)
        finally:
            q.close()
        _reply({"stopped": True, **d.counts})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ddnn.testbed.delayer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev", required=True, help="interface whose incoming packets are delayed")
    p.add_argument("--egress", action="store_true", help="delay the packets leaving --dev instead (throttles "
                   "local TCP senders: their packets still count against the socket while held)")
    p.add_argument("--queue", type=int, default=0, help="nfnetlink_queue number")
    p.add_argument("--table", default="ddnn_testbed", help="nf_tables table holding the queue rule")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss-pct", type=float, default=0.0)
    p.add_argument("--max-s", type=float, default=6 * 3600.0, help="exit after this long whatever happens")
    a = p.parse_args(argv)
    imp = Impairment.from_dict({"delay_ms": a.delay_ms, "jitter_ms": a.jitter_ms, "loss_pct": a.loss_pct})
    return run(a.dev, a.queue, a.table, imp, a.max_s, ingress=not a.egress)


if __name__ == "__main__":
    sys.exit(main())
