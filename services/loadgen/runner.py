"""Replays image batches against the edge over gRPC streams and records every sample."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
from tqdm import tqdm

from ddnn.data import IMAGE_BYTES
from ddnn.outcome import Outcome
from ddnn.pb.ddnn.v1 import edge_pb2, edge_pb2_grpc
from ddnn.runreport import OUTCOME_LABELS, Records
from ddnn.serving.convert import images_to_proto
from ddnn.serving.errors import status_name
from ddnn.serving.server import TlsFiles, channel_credentials, grpc_options
from services.loadgen import metrics
from services.loadgen.settings import LoadgenSettings

log = logging.getLogger(__name__)


@dataclass
class Batch:
    batch_id: int
    ids: np.ndarray  # sample ids (= record positions)
    message: edge_pb2.ImageBatch
    sent_at: float = 0.0
    remaining: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self):
        self.remaining = len(self.ids)


class Replay:
    """One run: batches to send, the records they fill, and the bookkeeping of answers."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, order: np.ndarray, s: LoadgenSettings):
        """Replay ``images[order]`` ``s.repeat`` times; sample id = dataset index + repeat * len(images)."""
        self.s = s
        n, m = len(images), len(order)
        ids_all = (order[None, :] + n * np.arange(s.repeat)[:, None]).ravel()
        self.records = Records(len(ids_all))
        self.records.sample_id[:] = ids_all
        self.records.label[:] = labels[ids_all % n]
        self.position = {int(sid): i for i, sid in enumerate(ids_all)}
        self.batches: list[Batch] = []
        for start in range(0, len(ids_all), s.batch_size):
            pos = np.arange(start, min(len(ids_all), start + s.batch_size))
            if pos[0] // m != pos[-1] // m:  # keep batches within one repeat, like the papers' testbeds
                pos = pos[pos // m == pos[0] // m]
            ids = ids_all[pos]
            msg = edge_pb2.ImageBatch(batch_id=len(self.batches), sample_ids=ids.tolist(),
                                      images=images_to_proto(np.ascontiguousarray(images[ids % n])))
            self.batches.append(Batch(len(self.batches), pos, msg))
        self.by_id = {b.batch_id: b for b in self.batches}
        self.unknown = 0
        self.bar = tqdm(total=len(self.records.label), unit="img", desc="replay", disable=not s.progress)
        self.t0 = time.perf_counter()
        # Running accuracy per scope: the edge's answers, the cloud's, and all.
        self.correct = {Outcome.EDGE.label: 0, Outcome.CLOUD.label: 0, "all": 0}
        self.count = dict.fromkeys(self.correct, 0)

    def on_result_batch(self, rb: edge_pb2.ResultBatch) -> None:
        now = time.perf_counter()
        batch = self.by_id.get(rb.batch_id)
        if batch is None:
            self.unknown += len(rb.results) or len(rb.sample_ids)
            return
        r = self.records
        if rb.HasField("error"):
            for sample_id in rb.sample_ids:
                i = self._answer(batch, int(sample_id), now)
                if i is not None:
                    r.outcome[i] = Outcome.REJECTED
                    r.exit[i] = Outcome.REJECTED.label
                    r.error[i] = f"{status_name(rb.error.code)}: {rb.error.message}"
            return
        for res in rb.results:
            sid = self._answer(batch, int(res.sample_id), now)
            if sid is None:
                continue
            r.outcome[sid] = res.outcome
            r.exit[sid] = res.exit
            r.prediction[sid] = res.prediction
            r.edge_prediction[sid] = res.edge_prediction
            r.confidence[sid] = res.confidence
            r.edge_compute_s[sid] = res.timing.edge_compute_s
            r.link_s[sid] = res.timing.link_s
            r.cloud_compute_s[sid] = res.timing.cloud_compute_s
            r.server_total_s[sid] = res.timing.total_s
            r.offload_bytes[sid] = res.offload_bytes

    def _answer(self, batch: Batch, sample_id: int, now: float) -> int | None:
        """Count an answer; return the sample's record position (None if unknown or a repeat)."""
        r = self.records
        sid = self.position.get(sample_id)
        if sid is None:
            self.unknown += 1
            return None
        r.answers[sid] += 1
        if r.answers[sid] > 1:
            log.error("sample %d answered %d times", sample_id, r.answers[sid])
            return None
        r.latency_s[sid] = now - batch.sent_at
        batch.remaining -= 1
        self.bar.update(1)
        if batch.remaining == 0:
            metrics.INFLIGHT.dec()
            batch.done.set()
        return sid

    def account(self, sid: int) -> None:
        """Update running metrics for one answered sample (after its fields are set)."""
        r = self.records
        path = OUTCOME_LABELS.get(int(r.outcome[sid]), Outcome.REJECTED.label)
        ok = bool(r.prediction[sid] == r.label[sid] and r.prediction[sid] >= 0)
        metrics.SAMPLES.labels(path).inc()
        metrics.LATENCY.labels(path).observe(float(r.latency_s[sid]))
        if ok:
            metrics.CORRECT.labels(path).inc()
        for scope in ("all", path):
            if scope in self.count:
                self.count[scope] += 1
                self.correct[scope] += ok
        for scope, name in ((Outcome.EDGE.label,) * 2, (Outcome.CLOUD.label,) * 2, ("all", "overall")):
            if self.count[scope]:
                metrics.ACCURACY.labels(name).set(self.correct[scope] / self.count[scope])

    def fail(self, batch: Batch, reason: str) -> None:
        """Answer every sample of ``batch`` not answered yet as failed (outcome rejected), saying why."""
        now, r = time.perf_counter(), self.records
        for pos in batch.ids:
            if r.answers[pos] == 0:
                i = self._answer(batch, int(r.sample_id[pos]), now)
                if i is not None:  # (always: an unanswered sample of a known batch)
                    r.outcome[i], r.exit[i], r.error[i] = Outcome.REJECTED, Outcome.REJECTED.label, reason
                    self.account(i)

    def mark_sent(self, batch: Batch) -> None:
        batch.sent_at = time.perf_counter()
        self.records.sent_s[batch.ids] = batch.sent_at - self.t0
        metrics.INFLIGHT.inc()


def replay_order(n: int, limit: int, shuffle: bool, seed: int) -> np.ndarray:
    """Dataset indices to replay: the first ``limit`` of a seeded permutation (or of 0..n-1)."""
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    return order[:limit]


def make_channel(s: LoadgenSettings) -> grpc.aio.Channel:
    # The largest message is a full image batch out (answers coming back are smaller).
    opts = grpc_options(s.message_limit(s.batch_size * (IMAGE_BYTES + 16)), s.keepalive_s)
    if s.tls_server_name:
        opts.append(("grpc.ssl_target_name_override", s.tls_server_name))
    tls = TlsFiles(s.tls_cert or None, s.tls_key or None, s.tls_ca or None)
    if tls.enabled:
        return grpc.aio.secure_channel(s.edge, channel_credentials(tls), options=opts)
    return grpc.aio.insecure_channel(s.edge, options=opts)


async def _stream(stub, replay: Replay, queue: asyncio.Queue, deadline_s: float) -> None:
    """Classify streams: send what the queue yields, record every answer until the queue ends.

    When the stream breaks before the queue ends (the edge restarted or crashed), the samples the edge
    had not answered are failed with the reason, never silently lost, and a new stream is opened for the
    rest of the queue; it waits for the edge to be back (``wait_for_ready``).
    """
    finished = False
    carry: list[Batch | None] = []  # taken from the queue as a stream ended: the next stream sends them

    async def requests(sent: list[Batch], ended: asyncio.Event):
        nonlocal finished
        while True:
            if carry:
                b = carry.pop(0)
            else:
                getter = asyncio.ensure_future(queue.get())
                ender = asyncio.ensure_future(ended.wait())
                await asyncio.wait({getter, ender}, return_when=asyncio.FIRST_COMPLETED)
                ender.cancel()
                if not getter.done():
                    getter.cancel()
                    return
                b = getter.result()
            if ended.is_set():  # this stream is over: hand the item to the next one
                carry.append(b)
                return
            if b is None:
                finished = True
                return
            replay.mark_sent(b)
            sent.append(b)
            yield b.message

    while True:
        sent: list[Batch] = []
        ended = asyncio.Event()
        call = stub.Classify(requests(sent, ended), timeout=deadline_s, wait_for_ready=True)
        reason = "the edge ended the stream"
        try:
            async for rb in call:
                replay.on_result_batch(rb)
                ids = rb.sample_ids if rb.HasField("error") else [r.sample_id for r in rb.results]
                for sample_id in ids:
                    pos = replay.position.get(int(sample_id))
                    if pos is not None and replay.records.answers[pos] == 1:
                        replay.account(pos)
        except grpc.aio.AioRpcError as exc:
            reason = f"{exc.code().name}: {exc.details()}"
        ended.set()
        lost = [b for b in sent if b.remaining > 0]
        for b in lost:
            replay.fail(b, f"stream to the edge lost before an answer ({reason})")
        if finished:
            return
        log.warning("stream to the edge lost (%s), %d batches failed; reconnecting", reason, len(lost))
        await asyncio.sleep(0.5)


async def run_replay(images: np.ndarray, labels: np.ndarray, order: np.ndarray,
                     s: LoadgenSettings) -> tuple[Records, float, int]:
    """Replay ``images[order]`` and return (records, wall seconds, answers with unknown ids)."""
    replay = Replay(images, labels, order, s)
    channel = make_channel(s)
    try:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        except asyncio.TimeoutError:
            raise ConnectionError(f"edge at {s.edge} is not reachable (30s)") from None
        stub = edge_pb2_grpc.EdgeStub(channel)
        queues: list[asyncio.Queue[Batch | None]] = [asyncio.Queue() for _ in range(s.concurrency)]
        streams = [asyncio.create_task(_stream(stub, replay, q, s.deadline_s)) for q in queues]
        t0 = replay.t0 = time.perf_counter()
        if s.loop == "closed":
            work: asyncio.Queue = asyncio.Queue()
            for b in replay.batches:
                work.put_nowait(b)

            async def worker(q: asyncio.Queue):
                while not work.empty():
                    b = work.get_nowait()
                    q.put_nowait(b)
                    await _wait_batch(b, s.batch_timeout_s)
                q.put_nowait(None)

            await asyncio.gather(*(worker(q) for q in queues))
        else:
            interval = 1.0 / s.rate
            for i, b in enumerate(replay.batches):
                target = t0 + i * interval
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                queues[i % len(queues)].put_nowait(b)
            await asyncio.gather(*(_wait_batch(b, s.batch_timeout_s) for b in replay.batches))
            for q in queues:
                q.put_nowait(None)
        await asyncio.wait_for(asyncio.gather(*streams, return_exceptions=True), timeout=s.batch_timeout_s)
        for t in streams:
            if t.done() and t.exception():
                log.error("stream ended with %r", t.exception())
        wall = time.perf_counter() - t0
    finally:
        replay.bar.close()
        await channel.close()
    return replay.records, wall, replay.unknown


async def _wait_batch(b: Batch, timeout: float) -> None:
    try:
        await asyncio.wait_for(b.done.wait(), timeout)
    except asyncio.TimeoutError:
        log.error("batch %d: %d samples not answered within %.0fs", b.batch_id, b.remaining, timeout)
