"""The edge cascade and the cloud segment, as used by the edge service and by in-process runs.

:class:`EdgeEngine` is the one implementation of "run the edge exits on a batch and decide":
the edge service calls it, and so does :class:`InProcessPipeline`, which evaluates a split
and a policy on a dataset without any server. Both therefore give the same per-sample exits
and predictions for the same checkpoint and policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ddnn.codec import decode, encode
from ddnn.data.transforms import to_tensor
from ddnn.errors import InvalidInput
from ddnn.models.split import CloudPart, EdgePart, Split
from ddnn.policies import Decision, EdgePolicy, softmax

# Outcome codes, equal to ddnn.v1.Outcome.
EDGE, CLOUD, DROPPED, DEGRADED = 1, 2, 3, 4
OUTCOME_NAMES = {EDGE: "edge", CLOUD: "cloud", DROPPED: "dropped", DEGRADED: "degraded"}


@dataclass
class EdgeResult:
    """What the edge decided for one image batch.

    ``outcome`` is EDGE, CLOUD (to be offloaded) or DROPPED per sample; ``exit`` names the exit
    ("block7", "cloud", "dropped"). For offloaded samples ``prediction``/``confidence`` hold the
    deepest edge exit's answer, the fallback if the cloud fails, until the cloud's answer replaces
    them; ``edge_prediction`` keeps the edge's answer for every sample. ``offload_idx`` lists the
    offloaded samples' positions in the batch, in the order of ``payload``'s rows.
    """

    outcome: np.ndarray
    exit: list[str]
    prediction: np.ndarray
    confidence: np.ndarray
    offload_idx: np.ndarray
    payload: np.ndarray | None
    compute_s: float
    edge_prediction: np.ndarray


def validate_images(images: np.ndarray, max_batch: int | None = None) -> np.ndarray:
    """Check an image batch: uint8, shape (N, 32, 32, 3), 0 < N <= max_batch."""
    if images.dtype != np.uint8:
        raise InvalidInput(f"images must be uint8 pixels, got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise InvalidInput(f"images must have shape [N, 32, 32, 3], got {list(images.shape)}")
    if images.shape[0] == 0:
        raise InvalidInput("empty batch: no images")
    if max_batch is not None and images.shape[0] > max_batch:
        raise InvalidInput(f"batch of {images.shape[0]} images exceeds the limit of {max_batch}")
    return images


class EdgeEngine:
    """Runs an :class:`EdgePart` cascade on image batches and applies an :class:`EdgePolicy`.

    A sample leaves at the first exit whose criterion accepts it; only the others continue to
    the next segment (the batch shrinks as it goes). After the last edge exit, hopeless samples
    are dropped (if the policy has a drop rule) and the rest are offloaded.
    """

    def __init__(self, edge: EdgePart, policy: EdgePolicy, device: str | torch.device = "cpu",
                 observer=None):
        for name in edge.exit_names:
            policy.criterion(name)  # fail now, naming the exit, not on the first batch
        self.edge = edge.eval()
        self.policy = policy
        self.device = torch.device(device)
        # observer(exit_name, logits) sees every exit's logits before the decision (SLO control).
        self.observer = observer

    @torch.inference_mode()
    def run(self, images: np.ndarray) -> EdgeResult:
        t0 = time.perf_counter()
        n = len(images)
        outcome = np.full(n, CLOUD, np.int8)
        exits = ["cloud"] * n
        prediction = np.zeros(n, np.int64)
        confidence = np.zeros(n, np.float32)
        x = to_tensor(images, self.device)
        h, alive = x, np.arange(n)
        segments = list(self.edge.segments)
        for i, seg in enumerate(segments):
            h = seg.trunk(h)
            logits = seg.head(h).float().cpu().numpy()
            if self.observer is not None:
                self.observer(seg.name, logits)
            dec = self.policy.decide(seg.name, logits, last=i == len(segments) - 1)
            prediction[alive] = dec.prediction
            confidence[alive] = dec.confidence
            leave = dec.decision == Decision.EXIT
            for j in alive[leave]:
                exits[j] = seg.name
            outcome[alive[leave]] = EDGE
            dropped = dec.decision == Decision.DROP
            outcome[alive[dropped]] = DROPPED
            for j in alive[dropped]:
                exits[j] = "dropped"
            keep = dec.decision == Decision.CONTINUE
            if not keep.all():
                h = h[torch.from_numpy(np.flatnonzero(keep)).to(h.device)]
                alive = alive[keep]
            if len(alive) == 0:
                break
        payload = None
        if len(alive):
            payload = images[alive] if self.edge.offload == "input" else h.float().cpu().numpy()
        return EdgeResult(outcome, exits, prediction, confidence, alive, payload, time.perf_counter() - t0,
                          prediction.copy())


class CloudRunner:
    """The cloud segment in-process (the ``--backend torch`` path and offline evaluation)."""

    def __init__(self, cloud: CloudPart, device: str | torch.device = "cpu"):
        self.cloud = cloud.eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def logits(self, payload: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(payload, copy=not payload.flags.writeable)).to(self.device)
        return self.cloud(x).float().cpu().numpy()


def cloud_answers(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and max-softmax confidence from final logits (shared by every backend)."""
    p = softmax(logits)
    return p.argmax(axis=1), p.max(axis=1).astype(np.float32)


@dataclass
class SampleOutcomes:
    """Per-sample results over a dataset (the columns of a per-sample report)."""

    sample_id: np.ndarray
    outcome: np.ndarray
    exit: list[str]
    prediction: np.ndarray
    confidence: np.ndarray
    edge_prediction: np.ndarray


class InProcessPipeline:
    """Edge engine + payload codec + cloud segment, in one process: the offline reference run
    of a split and policy, decision for decision what the services do."""

    def __init__(self, split: Split, policy: EdgePolicy, payload: str = "fp32", device: str = "cpu"):
        if split.edge.offload == "input" and payload != "raw":
            raise InvalidInput(f"split {split.name!r} offloads the raw input; payload must be 'raw', got {payload!r}")
        self.engine = EdgeEngine(split.edge, policy, device)
        self.cloud = CloudRunner(split.cloud, device)
        self.payload = payload

    def run_batch(self, images: np.ndarray) -> EdgeResult:
        res = self.engine.run(images)
        if res.payload is not None and len(res.offload_idx):
            sent = decode(encode(res.payload, self.payload))
            pred, conf = cloud_answers(self.cloud.logits(sent))
            res.prediction[res.offload_idx] = pred
            res.confidence[res.offload_idx] = conf
        return res

    def run(self, images: np.ndarray, batch_size: int = 32, progress: bool = False) -> SampleOutcomes:
        """Run every image in batches of ``batch_size`` (the load generator's default)."""
        from tqdm import tqdm

        n = len(images)
        outcome = np.zeros(n, np.int8)
        exits: list[str] = [""] * n
        pred = np.zeros(n, np.int64)
        edge_pred = np.zeros(n, np.int64)
        conf = np.zeros(n, np.float32)
        for start in tqdm(range(0, n, batch_size), desc="in-process", unit="batch", disable=not progress):
            res = self.run_batch(images[start : start + batch_size])
            sl = slice(start, start + len(res.outcome))
            outcome[sl], pred[sl], conf[sl] = res.outcome, res.prediction, res.confidence
            edge_pred[sl] = res.edge_prediction
            exits[sl] = res.exit
        pred[outcome == DROPPED] = -1
        return SampleOutcomes(np.arange(n), outcome, exits, pred, conf, edge_pred)
