"""Measurements shared by the experiments: cascades on cached logits, and in-process latency."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ddnn.data import to_tensor
from ddnn.evaluation import accuracy_metrics, route_samples
from ddnn.models import MultiExitNet, split_at
from ddnn.policies import EdgePolicy, ExitCriterion, softmax


def cascade(logits: dict[str, np.ndarray], labels: np.ndarray, exits: Sequence[str],
            criterion: ExitCriterion) -> dict:
    """The papers' accuracies and exit rates with the same ``criterion`` at every edge exit in ``exits``."""
    exits = tuple(exits)
    policy = EdgePolicy({e: criterion for e in exits})
    outcomes = route_samples(policy, logits, exits)
    return accuracy_metrics(outcomes, labels, {e: logits[e] for e in (*exits, "final")})


@dataclass(frozen=True)
class Latency:
    """Per-sample latencies in milliseconds (a sample's latency is that of the batch it rode in)."""

    edge_ms: float | None  # samples answered at the edge: their batch's edge step
    cloud_ms: float | None  # offloaded samples: their batch's edge step plus the cloud step on the offloaded rows
    overall_ms: float  # mean over all samples of their own latency
    per_image_ms: float  # summed (fastest) batch times divided by the number of images (throughput view)
    images: int
    batch_size: int


@torch.inference_mode()
def cascade_latency(model: MultiExitNet, exit: str, criterion: ExitCriterion, images: np.ndarray,
                    batch_size: int = 32, repeats: int = 1) -> Latency:
    """Time the edge part up to ``exit`` (with its decision) and the cloud part on the offloaded rows.

    In-process on this machine's CPU, batch ``batch_size`` as Lee et al.'s test node sends; the
    link between edge and cloud is not modelled. Each batch is timed ``repeats`` times and the
    fastest kept (less scheduling noise from other processes).
    """
    return paired_latency([(model, exit, criterion)], images, batch_size, repeats)[0]


@torch.inference_mode()
def paired_latency(cascades: Sequence[tuple[MultiExitNet, str, ExitCriterion]], images: np.ndarray,
                   batch_size: int = 32, repeats: int = 1) -> list[Latency]:
    """:func:`cascade_latency` for several (model, exit, criterion), timed batch by batch in turn.

    Interleaving puts every cascade under the same load from other processes at the same moment,
    so their differences come from their exit decisions rather than from when they were timed.
    """
    splits = []
    for model, exit, crit in cascades:
        model.eval()
        splits.append((split_at(model, exit, [exit]), exit, crit))
    Stats = tuple[list[float], list[float], list[int], list[int]]
    stats: list[Stats] = [([], [], [], []) for _ in splits]  # edge s, cloud s, exited, offloaded per batch
    walls = [0.0] * len(splits)
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size])
        for j, (split, exit, crit) in enumerate(splits):
            best_e = best_c = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                logits, feats = split.edge(x)
                accept = crit.accept(softmax(logits[exit].numpy()))
                t1 = time.perf_counter()
                rest = ~accept
                if rest.any():
                    split.cloud(feats[torch.from_numpy(rest)])
                t2 = time.perf_counter()
                best_e, best_c = min(best_e, t1 - t0), min(best_c, t2 - t1)
            edge_t, cloud_t, n_exit, n_cloud = stats[j]
            edge_t.append(best_e)
            cloud_t.append(best_c)
            n_exit.append(int(accept.sum()))
            n_cloud.append(int(rest.sum()))
            walls[j] += best_e + best_c
    out = []
    n = max(1, len(images))
    for (edge_t, cloud_t, n_exit, n_cloud), wall in zip(stats, walls, strict=True):
        e, c = np.array(edge_t) * 1e3, np.array(cloud_t) * 1e3
        ne, nc = np.array(n_exit), np.array(n_cloud)
        edge_ms = float((e * ne).sum() / ne.sum()) if ne.sum() else None
        cloud_ms = float(((e + c) * nc).sum() / nc.sum()) if nc.sum() else None
        overall = float(((e * ne) + (e + c) * nc).sum() / n)
        out.append(Latency(edge_ms, cloud_ms, overall, wall * 1e3 / n, len(images), batch_size))
    return out


def shuffled(images: np.ndarray, limit: int | None = None, seed: int = 0) -> np.ndarray:
    """A fixed random order (test packs are sorted by class, which would make whole batches exit together)."""
    idx = np.random.default_rng(seed).permutation(len(images))
    return images[idx[:limit] if limit else idx]
