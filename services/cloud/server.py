"""The Cloud gRPC service: decode feature batches, run the deep segment, answer."""

from __future__ import annotations

import logging
import time

from ddnn.codec import decode
from ddnn.errors import InvalidInput, NotFound, Overloaded
from ddnn.inference import cloud_answers
from ddnn.pb.ddnn.v1 import cloud_pb2, cloud_pb2_grpc, tensor_pb2
from ddnn.serving.admission import ByteBudget
from ddnn.serving.convert import from_proto
from ddnn.serving.errors import error_fields, status_name
from ddnn.serving.streams import answer_concurrently
from services.cloud import metrics
from services.cloud.backends import SplitModel

log = logging.getLogger(__name__)


class CloudServicer(cloud_pb2_grpc.CloudServicer):
    """Answers feature batches; every batch gets exactly one CloudResult."""

    def __init__(self, backend, splits: dict[str, SplitModel], model_sha256: str, max_batch: int,
                 max_inflight: int, max_inflight_bytes: int = 2**30):
        self.backend = backend
        self.budget = ByteBudget(max_inflight_bytes, "cloud", metrics.INFLIGHT_BYTES)
        self.splits = splits
        self.model_sha256 = model_sha256
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.inflight = 0
        for s in splits:  # series exist from the start, so dashboards show 0 rather than nothing
            metrics.BATCHES.labels(s, "OK")
            metrics.SAMPLES.labels(s)
            metrics.RECEIVED_BYTES.labels(s)

    def _validate(self, fb: cloud_pb2.FeatureBatch):
        split = self.splits.get(fb.split)
        if split is None:
            raise NotFound(f"unknown split point {fb.split!r}; this cloud serves {sorted(self.splits)}")
        if fb.model_sha256 and fb.model_sha256 != self.model_sha256:
            raise InvalidInput(f"model mismatch: the edge runs checkpoint {fb.model_sha256[:12]}, "
                               f"this cloud serves {self.model_sha256[:12]}")
        x = decode(from_proto(fb.features), expect_shape=split.input_shape, max_batch=self.max_batch)
        if (split.input_dtype == "uint8") != (x.dtype.name == "uint8"):
            want = "uint8 raw pixels" if split.input_dtype == "uint8" else "float features (fp32, fp16 or int8)"
            raise InvalidInput(f"split {fb.split!r} takes {want}, got a {x.dtype.name} tensor")
        if len(fb.sample_ids) != len(x):
            raise InvalidInput(f"{len(fb.sample_ids)} sample ids for a batch of {len(x)} samples")
        return split, x

    async def handle(self, fb: cloud_pb2.FeatureBatch) -> cloud_pb2.CloudResult:
        """Answer one batch; raises domain errors for the caller to map."""
        t0 = time.perf_counter()
        split, x = self._validate(fb)
        if self.inflight >= self.max_inflight:
            raise Overloaded(f"cloud is at its limit of {self.max_inflight} batches in flight; retry later")
        with self.budget.hold(len(fb.features.data)):
            self.inflight += 1
            metrics.INFLIGHT.inc()
            try:
                t1 = time.perf_counter()
                logits = await self.backend.logits(split.split, x)
                t2 = time.perf_counter()
            finally:
                self.inflight -= 1
                metrics.INFLIGHT.dec()
        pred, conf = cloud_answers(logits)
        metrics.BATCHES.labels(split.split, "OK").inc()
        metrics.SAMPLES.labels(split.split).inc(len(x))
        metrics.RECEIVED_BYTES.labels(split.split).inc(len(fb.features.data))
        metrics.BATCH_SIZE.labels(split.split).observe(len(x))
        metrics.QUEUE_SECONDS.observe(t1 - t0)
        metrics.COMPUTE_SECONDS.labels(split.split).observe(t2 - t1)
        return cloud_pb2.CloudResult(batch_id=fb.batch_id, sample_ids=fb.sample_ids, predictions=pred.tolist(),
                                     confidences=conf.tolist(), queue_s=t1 - t0, compute_s=t2 - t1)

    async def _answer(self, fb: cloud_pb2.FeatureBatch) -> cloud_pb2.CloudResult:
        try:
            return await self.handle(fb)
        except Exception as exc:  # in-band: the stream survives a bad batch
            code, msg = error_fields(exc)
            metrics.BATCHES.labels(fb.split if fb.split in self.splits else "unknown", status_name(code)).inc()
            return cloud_pb2.CloudResult(batch_id=fb.batch_id, sample_ids=fb.sample_ids,
                                         error=tensor_pb2.Error(code=code, message=msg))

    async def Infer(self, request_iterator, context):
        async def answer(fb, emit):
            emit(await self._answer(fb))

        async for result in answer_concurrently(request_iterator, answer):
            yield result

    async def InferBatch(self, request, context):
        return await self.handle(request)

    async def GetStatus(self, request, context):
        return cloud_pb2.CloudStatus(
            backend=self.backend.name, model_sha256=self.model_sha256,
            splits=[cloud_pb2.SplitInfo(split=s.split, triton_model=s.triton_model, input_shape=list(s.input_shape),
                                        input_dtype=s.input_dtype) for s in self.splits.values()],
            inflight_batches=self.inflight, max_inflight_batches=self.max_inflight)

