"""The edge cascade and the cloud segment, as used by the edge service and by in-process runs.

:class:`EdgeEngine` is the one implementation of "run the edge exits on a batch and decide":
the edge service calls it, and so does :class:`InProcessPipeline`, which evaluates a split
and a policy on a dataset without any server. Both therefore give the same per-sample exits
and predictions for the same checkpoint, engine and policy. The model parts themselves run on
an engine (:mod:`ddnn.engines`: torch, ONNX Runtime, OpenVINO); this module imports no torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ddnn.codec import Payload, decode, encode
from ddnn.engines import CloudPartEngine, EdgePartEngine
from ddnn.errors import InvalidInput
from ddnn.outcome import Outcome
from ddnn.policies import Decision, EdgePolicy, softmax


@dataclass
class EdgeResult:
    """What the edge decided for one image batch.

    ``outcome`` is an :class:`~ddnn.outcome.Outcome` per sample, EDGE, CLOUD (to be offloaded) or
    DROPPED; ``exit`` names the exit ("block7", or the outcome's label: "cloud", "dropped"). For
    offloaded samples ``prediction``/``confidence`` hold the deepest edge exit's answer, the
    fallback if the cloud fails, until the cloud's answer replaces them; ``edge_prediction`` keeps
    the edge's answer for every sample. ``offload_idx`` lists the offloaded samples' positions in
    the batch, in the order of ``payload``'s rows.
    """

    outcome: np.ndarray
    exit: list[str]
    prediction: np.ndarray
    confidence: np.ndarray
    offload_idx: np.ndarray
    payload: np.ndarray | None
    compute_s: float
    edge_prediction: np.ndarray


def as_edge_engine(edge) -> EdgePartEngine:
    """An :class:`EdgePartEngine`, or a torch ``EdgePart`` wrapped as the torch engine."""
    if isinstance(edge, EdgePartEngine):
        return edge
    from ddnn.engines.torch_engine import TorchEdgePart

    return TorchEdgePart(edge)


def as_cloud_engine(cloud) -> CloudPartEngine:
    """A :class:`CloudPartEngine`, or a torch ``CloudPart`` wrapped as the torch engine."""
    if isinstance(cloud, CloudPartEngine):
        return cloud
    from ddnn.engines.torch_engine import TorchCloudPart

    return TorchCloudPart(cloud)


class EdgeEngine:
    """Runs an edge part (on any engine) on image batches and applies an :class:`EdgePolicy`.

    A sample leaves at the first of ``exits`` whose criterion accepts it; after the last edge exit,
    hopeless samples are dropped (if the policy has a drop rule) and the rest are offloaded with
    their features (or raw images). ``exits`` default to every exit the part computes.
    """

    def __init__(self, edge, policy: EdgePolicy, observer=None, exits: list[str] | tuple[str, ...] | None = None):
        self.part = as_edge_engine(edge)
        self.exits = tuple(exits or self.part.exits)
        unknown = [e for e in self.exits if e not in self.part.exits]
        if unknown:
            raise InvalidInput(f"exits {unknown} are not computed by the edge part (it has {list(self.part.exits)})")
        for name in self.exits:
            policy.criterion(name)  # fail now, naming the exit, not on the first batch
        self.policy = policy
        # observer(exit_name, logits) sees every exit's logits before the decision (SLO control).
        self.observer = observer

    def run(self, images: np.ndarray) -> EdgeResult:
        t0 = time.perf_counter()
        n = len(images)
        outcome = np.full(n, Outcome.CLOUD, np.int8)
        exits = [Outcome.CLOUD.label] * n
        prediction = np.zeros(n, np.int64)
        confidence = np.zeros(n, np.float32)
        all_logits, features = self.part.run(images)
        alive = np.arange(n)
        for i, name in enumerate(self.exits):
            logits = all_logits[name][alive]
            if self.observer is not None:
                self.observer(name, logits)
            dec = self.policy.decide(name, logits, last=i == len(self.exits) - 1)
            prediction[alive] = dec.prediction
            confidence[alive] = dec.confidence
            leave = dec.decision == Decision.EXIT
            for j in alive[leave]:
                exits[j] = name
            outcome[alive[leave]] = Outcome.EDGE
            dropped = dec.decision == Decision.DROP
            outcome[alive[dropped]] = Outcome.DROPPED
            for j in alive[dropped]:
                exits[j] = Outcome.DROPPED.label
            alive = alive[dec.decision == Decision.CONTINUE]
            if len(alive) == 0:
                break
        payload = features[alive] if len(alive) else None
        return EdgeResult(outcome, exits, prediction, confidence, alive, payload, time.perf_counter() - t0,
                          prediction.copy())


def __getattr__(name: str):
    # ``CloudRunner``: the torch cloud engine under its old name, imported (with torch) on use only.
    if name == "CloudRunner":
        from ddnn.engines.torch_engine import TorchCloudPart

        return TorchCloudPart
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    of a split and policy, decision for decision what the services do.

    ``edge``/``cloud`` are engines (:func:`ddnn.engines.edge_part`, :func:`ddnn.engines.cloud_part`);
    :meth:`from_split` builds the torch ones from a :class:`~ddnn.models.split.Split`.
    """

    def __init__(self, edge, cloud, policy: EdgePolicy, payload: str = Payload.FP32,
                 exits: list[str] | tuple[str, ...] | None = None):
        self.engine = EdgeEngine(edge, policy, exits=exits)
        if self.engine.part.offload == "input" and payload != Payload.RAW:
            raise InvalidInput(f"split {self.engine.part.split!r} offloads the raw input; payload must be "
                               f"{Payload.RAW.value!r}, got {str(payload)!r}")
        self.cloud = as_cloud_engine(cloud)
        self.payload = payload

    @classmethod
    def from_split(cls, split, policy: EdgePolicy, payload: str = Payload.FP32) -> InProcessPipeline:
        """The torch reference pipeline of a :class:`~ddnn.models.split.Split`."""
        from ddnn.engines.torch_engine import TorchCloudPart, TorchEdgePart

        return cls(TorchEdgePart(split.edge, split.name), TorchCloudPart(split.cloud, split.name), policy, payload)

    def run_batch(self, images: np.ndarray) -> EdgeResult:
        res = self.engine.run(images)
        if res.payload is not None and len(res.offload_idx):
            sent = decode(encode(res.payload, self.payload))
            pred, conf = cloud_answers(self.cloud.run(sent))
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
        pred[outcome == Outcome.DROPPED] = -1
        return SampleOutcomes(np.arange(n), outcome, exits, pred, conf, edge_pred)
