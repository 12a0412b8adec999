"""The Edge gRPC service: answer confident samples at once, offload the rest, relay answers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ddnn.codec import Payload, decode, encode, payload_bytes
from ddnn.control.modes import LinkState, ModeSelector
from ddnn.control.slo import Decision, SloController, SloTarget, probs_from_logits
from ddnn.control.telemetry import Reservoir, Telemetry
from ddnn.data import IMAGE_SHAPE
from ddnn.errors import InvalidInput, NotReady, Overloaded, PolicyError
from ddnn.export.bundle import Mode
from ddnn.inference import EdgeResult
from ddnn.outcome import Outcome
from ddnn.pb.ddnn.v1 import cloud_pb2, edge_pb2, edge_pb2_grpc, tensor_pb2
from ddnn.serving.admission import ByteBudget
from ddnn.serving.control import ControlGuard
from ddnn.serving.convert import from_proto, outcome_to_proto, to_proto
from ddnn.serving.errors import Misconfigured, error_fields, status_name
from ddnn.serving.streams import answer_concurrently
from services.edge import metrics
from services.edge.cloud_link import CloudLink
from services.edge.runtime import EdgeConfig, EdgeRuntime

log = logging.getLogger(__name__)
Emit = Callable[[edge_pb2.ResultBatch], None]


class EdgeServicer(edge_pb2_grpc.EdgeServicer):
    """Every sample id of every batch gets exactly one SampleResult (or its batch one error)."""

    def __init__(self, runtime: EdgeRuntime, link: CloudLink | None, max_batch: int, max_inflight_samples: int,
                 cloud_timeout_s: float, monitor: ChannelMonitor | None = None, max_inflight_bytes: int = 2**30,
                 guard: ControlGuard | None = None):
        self.runtime = runtime
        self.budget = ByteBudget(max_inflight_bytes, "edge", metrics.INFLIGHT_BYTES)
        self.guard = guard or ControlGuard()
        self.link = link
        self.max_batch = max_batch
        self.max_inflight = max_inflight_samples
        self.cloud_timeout_s = cloud_timeout_s
        self.inflight = 0
        self.by_outcome: Counter[str] = Counter()
        # Edge compute is CPU-bound: one thread, batches in arrival order; torch uses its own threads.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-compute")
        self.monitor = monitor or ChannelMonitor(runtime, link, ModeSelector())
        self.telemetry: Telemetry | None = None
        self.slo: SloLoop | None = None
        # Every series exists from the start, so dashboards and alerts see 0 rather than nothing.
        exits = {e for r in runtime.config.routes.values() for e in r.exits}
        for label in (*sorted(exits), *(o.label for o in (Outcome.CLOUD, Outcome.DROPPED, Outcome.DEGRADED))):
            metrics.SAMPLES.labels(label)
        for reason in ("unavailable", "local_mode"):
            metrics.CLOUD_ERRORS.labels(reason)
        metrics.BATCHES.labels("OK")

    # -- decisions -------------------------------------------------------------------------

    def effective_mode(self, cfg: EdgeConfig) -> Mode:
        return self.monitor.effective(cfg)

    def _validate(self, batch: edge_pb2.ImageBatch) -> np.ndarray:
        images = decode(from_proto(batch.images), expect_shape=IMAGE_SHAPE, max_batch=self.max_batch)
        if images.dtype != np.uint8:
            raise InvalidInput(f"images must be uint8 pixels (dtype 4), got {images.dtype.name}")
        ids = batch.sample_ids
        if len(ids) != len(images):
            raise InvalidInput(f"{len(ids)} sample ids for {len(images)} images")
        if len(set(ids)) != len(ids):
            raise InvalidInput("duplicate sample ids in the batch")
        return images

    def _results(self, ids, res: EdgeResult, idx: np.ndarray, outcome: Outcome | None, t0: float, *,
                 link_s: float = 0.0, cloud_s: float = 0.0, offload_bytes: int = 0,
                 fallback_exit: str = "") -> list[edge_pb2.SampleResult]:
        """SampleResults for rows ``idx`` of ``res``; ``outcome`` None keeps each row's own outcome
        (the edge's answers). Degraded samples are answered by ``fallback_exit``, the deepest edge
        exit that ran."""
        now = time.perf_counter()
        total = now - t0
        path = (outcome or Outcome.EDGE).label  # the stage histograms' path: edge, cloud or degraded
        out = []
        for i in idx:
            o = outcome or Outcome(int(res.outcome[i]))
            exit = o.label if o in (Outcome.CLOUD, Outcome.DROPPED) else res.exit[i]
            if o == Outcome.DEGRADED:
                exit = fallback_exit
            pred = -1 if o == Outcome.DROPPED else int(res.prediction[i])
            out.append(edge_pb2.SampleResult(
                sample_id=ids[i], outcome=outcome_to_proto(o), exit=exit, prediction=pred,
                confidence=float(res.confidence[i]),
                timing=edge_pb2.Timing(edge_compute_s=res.compute_s, link_s=link_s, cloud_compute_s=cloud_s,
                                       total_s=total),
                offload_bytes=offload_bytes, edge_prediction=int(res.edge_prediction[i])))
            label = res.exit[i] if o == Outcome.EDGE else o.label
            self.by_outcome[label] += 1
            metrics.SAMPLES.labels(label).inc()
        n = len(out)
        if n and self.telemetry is not None:
            self.telemetry.record(np.full(n, total), outcome == Outcome.CLOUD, offload_bytes * n,
                                  edge_s=max(0.0, total - link_s - cloud_s))
        if n:
            metrics.STAGE_SECONDS.labels("edge_compute", path).observe(res.compute_s)
            metrics.STAGE_SECONDS.labels("total", path).observe(total)
            if outcome == Outcome.CLOUD:
                metrics.STAGE_SECONDS.labels("link", path).observe(link_s)
                metrics.STAGE_SECONDS.labels("cloud_compute", path).observe(cloud_s)
        return out

    async def process(self, batch: edge_pb2.ImageBatch, emit: Emit) -> None:
        """Answer one image batch through ``emit``; domain errors propagate to the caller."""
        t0 = time.perf_counter()
        images = self._validate(batch)
        n = len(images)
        if self.inflight + n > self.max_inflight:
            raise Overloaded(f"edge has {self.inflight} samples in flight, limit {self.max_inflight}; retry later")
        with self.budget.hold(len(batch.images.data)):
            self.inflight += n
            metrics.INFLIGHT.set(self.inflight)
            try:
                await self._process(batch, images, emit, t0)
            finally:
                self.inflight -= n
                metrics.INFLIGHT.set(self.inflight)

    async def _run_engine(self, route, images: np.ndarray) -> EdgeResult:
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, route.engine.run, images)
        except PolicyError as exc:  # the policy in effect does not fit the model: the server's fault
            raise Misconfigured(f"the edge's exit policy cannot run on its model: {exc}") from None


    async def _process(self, batch, images, emit: Emit, t0: float) -> None:
        cfg = self.runtime.config
        mode = self.effective_mode(cfg)
        route = cfg.route(mode)
        ids = list(batch.sample_ids)
        res = await self._run_engine(route, images)
        local = np.flatnonzero(res.outcome != Outcome.CLOUD)
        if len(local):
            emit(edge_pb2.ResultBatch(batch_id=batch.batch_id, results=self._results(ids, res, local, None, t0)))
        off = res.offload_idx
        if not len(off) or res.payload is None:  # (no offloaded rows is the same as no payload)
            return
        if mode == Mode.LOCAL or self.link is None:
            metrics.CLOUD_ERRORS.labels("local_mode").inc(len(off))
            emit(edge_pb2.ResultBatch(batch_id=batch.batch_id,
                                      results=self._results(ids, res, off, Outcome.DEGRADED, t0,
                                                            fallback_exit=route.exits[-1])))
            return
        enc = encode(res.payload, cfg.payload)
        fb = cloud_pb2.FeatureBatch(batch_id=self.link.next_batch_id(), sample_ids=[ids[i] for i in off],
                                    split=route.split, model_sha256=self.runtime.cloud_sha256, features=to_proto(enc))
        t_send = time.perf_counter()
        try:
            cr = await self.link.infer(fb, self.cloud_timeout_s)
            if cr.HasField("error"):
                raise NotReady(f"cloud rejected the batch: {cr.error.message}")
        except NotReady as exc:
            log.debug("offload of %d samples failed: %s", len(off), exc)
            metrics.CLOUD_ERRORS.labels("unavailable").inc(len(off))
            emit(edge_pb2.ResultBatch(batch_id=batch.batch_id,
                                      results=self._results(ids, res, off, Outcome.DEGRADED, t0,
                                                            fallback_exit=route.exits[-1])))
            return
        rtt = time.perf_counter() - t_send
        metrics.CLOUD_RTT.observe(rtt)
        metrics.OFFLOAD_BYTES.labels(cfg.payload).inc(enc.nbytes)
        metrics.OFFLOAD_SAMPLES.labels(cfg.payload).inc(len(off))
        res.prediction[off] = np.asarray(cr.predictions, np.int64)
        res.confidence[off] = np.asarray(cr.confidences, np.float32)
        cloud_s = cr.queue_s + cr.compute_s
        emit(edge_pb2.ResultBatch(batch_id=batch.batch_id, results=self._results(
            ids, res, off, Outcome.CLOUD, t0, link_s=max(0.0, rtt - cloud_s), cloud_s=cloud_s,
            offload_bytes=enc.nbytes // len(off))))

    # -- RPCs ------------------------------------------------------------------------------

    async def _answer(self, batch: edge_pb2.ImageBatch, emit: Emit) -> None:
        try:
            await self.process(batch, emit)
            metrics.BATCHES.labels("OK").inc()
        except Exception as exc:  # in-band: the stream keeps serving later batches
            code, msg = error_fields(exc)
            metrics.BATCHES.labels(status_name(code)).inc()
            emit(edge_pb2.ResultBatch(batch_id=batch.batch_id, sample_ids=batch.sample_ids,
                                      error=tensor_pb2.Error(code=code, message=msg)))

    async def Classify(self, request_iterator, context):
        async for result in answer_concurrently(request_iterator, self._answer):
            yield result

    async def ClassifyBatch(self, request, context):
        parts: list[edge_pb2.ResultBatch] = []
        await self.process(request, parts.append)
        results = [r for p in parts for r in p.results]
        order = {sid: i for i, sid in enumerate(request.sample_ids)}
        results.sort(key=lambda r: order[r.sample_id])
        return edge_pb2.ResultBatch(batch_id=request.batch_id, results=results)

    def status(self) -> edge_pb2.EdgeStatus:
        cfg = self.runtime.config
        mode = self.effective_mode(cfg)
        route = cfg.route(mode)
        link = self.link
        return edge_pb2.EdgeStatus(
            mode=cfg.mode, effective_mode=mode, active_exits=list(route.exits),
            knobs={e: c.knob for e, c in cfg.policy.criteria.items()},
            policy_json=json.dumps(cfg.policy.to_dict()), payload=cfg.payload,
            cloud_connected=bool(link and link.connected), checkpoint_sha256=self.runtime.model.sha256,
            samples_by_outcome=dict(self.by_outcome),
            link=edge_pb2.LinkEstimate(rtt_s=link.estimate.rtt_s, throughput_bytes_per_s=link.estimate.throughput_bps,
                                       error_rate=link.estimate.error_rate, inflight_batches=link.inflight)
            if link else None,
            inflight_samples=self.inflight,
            slo=f"{self.slo.target.kind}={self.slo.target.value:g}" if self.slo else "",
            slo_measured=self.slo.last.measured if self.slo and self.slo.last else 0.0,
            slo_offload_target=self.slo.last.offload_target if self.slo and self.slo.last else 0.0)

    def set_slo(self, target: SloTarget | None, interval_s: float = 1.0, window_s: float = 5.0) -> None:
        """Start, retarget or stop the SLO controller."""
        if self.slo is not None:
            self.slo.stop()
            self.slo = None
            self.runtime.clear_control()
        if target is None:
            log.info("SLO controller off")
            return
        self.slo = SloLoop(self, target, interval_s, window_s)
        self.slo.start()

    async def GetStatus(self, request, context):
        return self.status()

    async def Configure(self, request, context):
        """All or nothing: every field is checked (the policy against the model) before any applies."""
        self.guard.check(context)
        slo = parse_slo(request.slo) if request.slo and request.slo != "off" else None
        self.runtime.configure(request.policy_json, dict(request.knobs), request.mode, request.payload)
        if request.slo:  # cannot fail: the target was parsed above
            self.set_slo(slo)
        log.info("reconfigured: mode=%s payload=%s knobs=%s", self.runtime.config.mode, self.runtime.config.payload,
                 dict(request.knobs))
        return self.status()


def parse_slo(text: str) -> SloTarget:
    """The ``slo`` field of a Configure request, or INVALID_ARGUMENT naming it."""
    try:
        target = SloTarget.parse(text)
    except ValueError as exc:
        raise InvalidInput(f"slo: {exc} (or 'off')") from None
    if not np.isfinite(target.value):
        raise InvalidInput(f"slo: the target must be a finite number > 0, got {text!r}")
    return target


class ChannelMonitor:
    """Feeds link estimates to a :class:`ModeSelector` periodically; exports the mode in effect."""

    def __init__(self, runtime: EdgeRuntime, link: CloudLink | None, selector: ModeSelector,
                 interval_s: float = 0.25):
        self.runtime = runtime
        self.link = link
        self.selector = selector
        self.interval_s = interval_s
        self._last: Mode | None = None
        self._task: asyncio.Task | None = None

    def link_state(self) -> LinkState:
        if self.link is None:
            return LinkState(False, 0.0, 0.0, 1.0)
        e = self.link.estimate
        # A cloud that says NOT_SERVING is as good as gone for offloading.
        return LinkState(self.link.connected and self.link.serving, e.rtt_s, e.throughput_bps, e.error_rate,
                         self.link.inflight)

    def effective(self, cfg: EdgeConfig) -> Mode:
        """The configured mode; in auto mode the channel's choice, where the SLO controller's exit
        depth replaces ws/normal (a lost cloud still means local)."""
        if cfg.mode != Mode.AUTO:
            return cfg.mode
        mode = self.selector.mode
        return cfg.depth if cfg.depth and mode != Mode.LOCAL else mode

    def tick(self) -> Mode:
        self.selector.update(self.link_state())
        mode = self.effective(self.runtime.config)
        if mode != self._last:
            if self._last is not None:
                log.info("mode %s -> %s (%s)", self._last, mode, self.link_state())
                metrics.MODE_SWITCHES.labels(mode).inc()
            for m in (Mode.NORMAL, Mode.WS, Mode.LOCAL):
                metrics.EFFECTIVE_MODE.labels(m).set(1 if m == mode else 0)
            self._last = mode
        return mode

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self.tick()
        self._task = asyncio.create_task(self.run(), name="channel-monitor")

    def stop(self) -> None:
        if self._task:
            self._task.cancel()


class SloLoop:
    """Runs the :class:`SloController` every ``interval_s`` against the edge's live measurements."""

    def __init__(self, servicer: EdgeServicer, target: SloTarget, interval_s: float = 1.0, window_s: float = 5.0):
        self.servicer = servicer
        self.target = target
        self.interval_s = interval_s
        self.controller = SloController(target)
        self.reservoir = Reservoir()
        self.last: Decision | None = None
        self.telemetry = servicer.telemetry = Telemetry(window_s)
        servicer.runtime.observer = self.observe
        servicer.runtime.clear_control()  # rebuild engines with the observer
        self._task: asyncio.Task | None = None
        metrics.SLO_TARGET.labels(target.kind).set(target.value)

    def observe(self, exit: str, logits: np.ndarray) -> None:
        self.reservoir.add(exit, probs_from_logits(logits))

    def tick(self) -> Decision | None:
        sv, rt = self.servicer, self.servicer.runtime
        cfg = rt.config
        mode = sv.effective_mode(cfg)
        if mode == Mode.LOCAL:
            return None
        route = cfg.route(mode)
        exit = route.exits[-1]
        key = rt.policy_key(exit)
        probs = self.reservoir.get(exit)
        if probs is None:
            return None
        sizes = {p.value: float(payload_bytes(route.feature_shape, p)) for p in Payload}
        snap = self.telemetry.snapshot()
        d = self.controller.step(snap, cfg.policy.criterion(key), rt.base_policy.criterion(key), probs, cfg.payload,
                                 sizes, Mode.WS if mode == Mode.WS else Mode.NORMAL)
        rt.control({key: d.knob} if d.knob is not None else None, d.payload,
                   d.depth if cfg.mode == Mode.AUTO else None)
        metrics.SLO_MEASURED.labels(self.target.kind).set(d.measured)
        metrics.SLO_OFFLOAD_TARGET.set(d.offload_target)
        self.last = d
        return d

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.tick()
            except Exception:  # the controller must never take the edge down
                log.exception("SLO controller step failed")

    def start(self) -> None:
        log.info("SLO controller on: %s=%g", self.target.kind, self.target.value)
        self._task = asyncio.create_task(self.run(), name="slo-controller")

    def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self.servicer.runtime.observer = None
