"""The edge's runtime configuration: policy, mode and payload, swappable while serving.

A batch takes one immutable :class:`EdgeConfig` snapshot when it starts, so a reconfiguration
(new thresholds, mode or payload) applies from the next batch on and never loses a sample.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

from ddnn.checkpoint import Checkpoint
from ddnn.errors import InvalidInput, PolicyError
from ddnn.inference import EdgeEngine
from ddnn.models import aux_principal, raw_input_split, split_at
from ddnn.policies import EdgePolicy
from services.edge import metrics
from services.edge.settings import MODES, parse_modes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """How one mode runs: the engine, the cloud split it feeds and the per-sample payload shape."""

    engine: EdgeEngine
    split: str
    exits: tuple[str, ...]


@dataclass(frozen=True)
class EdgeConfig:
    policy: EdgePolicy
    mode: str  # configured: auto | normal | ws | local
    payload: str
    routes: dict[str, Route] = field(default_factory=dict)  # by mode: normal, ws

    def route(self, mode: str) -> Route:
        """The route a mode runs on: local reuses normal's exits; a mode the policy does not cover
        (auto may pick ws without a ws criterion) falls back to normal."""
        return self.routes.get("normal" if mode == "local" else mode) or self.routes["normal"]


class EdgeRuntime:
    """Builds routes for a checkpoint and swaps configurations atomically."""

    def __init__(self, ck: Checkpoint, policy: EdgePolicy, mode: str, payload: str, modes_text: str = "",
                 principal: Checkpoint | None = None):
        self.ck = ck
        self.principal = principal
        self.cloud_sha256 = (principal or ck).sha256
        edge_exits = list(ck.exit_names[:-1]) if principal is None else list(ck.exit_names)
        if not edge_exits:
            raise ValueError(f"{ck.path} has no early exit: nothing for the edge to answer with")
        self.mode_exits = {"ws": [edge_exits[0]], "normal": [edge_exits[-1]]}
        self.mode_exits.update(parse_modes(modes_text))
        for m, exits in self.mode_exits.items():
            unknown = [e for e in exits if e not in edge_exits]
            if unknown:
                raise ValueError(f"--modes: {m} uses exits {unknown} that {ck.path} does not have at the edge "
                                 f"(edge exits: {edge_exits})")
        self._lock = threading.Lock()
        self.config = self._build(policy, mode, payload)

    def _policy_key(self, exit: str) -> str:
        return f"aux_{exit}" if self.principal is not None else exit

    def _route(self, policy: EdgePolicy, mode: str, payload: str) -> Route:
        exits = self.mode_exits[mode]
        if self.principal is not None:
            split = aux_principal(self.ck.model, self.principal.model, exits)
            policy = EdgePolicy({self._policy_key(e): policy.criterion(e) for e in exits}, policy.drop, policy.meta)
        elif payload == "raw":
            split = raw_input_split(self.ck.model, exits)
        else:
            split = split_at(self.ck.model, exits[-1], exits)
        return Route(EdgeEngine(split.edge, policy), split.name, tuple(split.edge.exit_names))

    def _build(self, policy: EdgePolicy, mode: str, payload: str) -> EdgeConfig:
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if self.principal is not None and payload != "raw":
            raise InvalidInput("the aux/principal arrangement offloads the raw input: payload must be 'raw'")
        routes, missing = {}, {}
        for m in self.mode_exits:
            try:
                routes[m] = self._route(policy, m, payload)
            except PolicyError as exc:
                missing[m] = str(exc)
        needed = {"normal", "ws"} if mode == "auto" else {"normal"} if mode == "local" else {mode}
        if not routes or (needed - set(routes) and mode != "auto"):
            m = next(iter(needed - set(routes)))
            raise PolicyError(f"the policy cannot drive mode {m!r}: {missing[m]}")
        if needed - set(routes):
            log.warning("policy covers no exit of mode(s) %s; auto mode will not use them",
                        sorted(needed - set(routes)))
        cfg = EdgeConfig(policy, mode, payload, routes)
        self._export(cfg)
        return cfg

    def _export(self, cfg: EdgeConfig) -> None:
        for exit, crit in cfg.policy.criteria.items():
            metrics.THRESHOLD.labels(exit, crit.kind).set(crit.knob)
        for m in MODES:
            metrics.MODE.labels(m).set(1 if m == cfg.mode else 0)

    def configure(self, policy_json: str = "", knobs: dict[str, float] | None = None, mode: str = "",
                  payload: str = "") -> EdgeConfig:
        """Validate and apply a change; the old configuration stays if anything is wrong."""
        from ddnn.codec import PAYLOADS

        with self._lock:
            cur = self.config
            policy = cur.policy
            if policy_json:
                try:
                    doc = json.loads(policy_json)
                except json.JSONDecodeError as exc:
                    raise PolicyError(f"policy_json is not valid JSON ({exc})") from None
                policy = EdgePolicy.from_dict(doc, source="policy_json")
            if knobs:
                policy = policy.with_knobs(dict(knobs))
            if payload and payload not in PAYLOADS:
                raise InvalidInput(f"payload must be one of {', '.join(PAYLOADS)}, got {payload!r}")
            self.config = self._build(policy, mode or cur.mode, payload or cur.payload)
            return self.config
