"""The edge's runtime configuration: policy, mode and payload, swappable while serving.

A batch takes one immutable :class:`EdgeConfig` snapshot when it starts, so a reconfiguration
(new thresholds, mode or payload) applies from the next batch on and never loses a sample.

Two parties change the configuration: the user (``Configure`` RPC / ``ddnn control``), who sets
the *base* policy, mode and payload, and the SLO controller, which overrides knobs, payload and
exit depth on top of that base without forgetting it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from ddnn.codec import PAYLOADS, Payload
from ddnn.errors import InvalidInput, PolicyError
from ddnn.export.bundle import MODES, SPLIT_MODES, Mode
from ddnn.inference import EdgeEngine
from ddnn.policies import EdgePolicy
from services.edge import metrics
from services.edge.model import EdgeModel
from services.edge.policy_check import check_policy_runs, parse_policy_json, policy_from_doc, with_knobs
from services.edge.settings import parse_modes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """How one mode runs: the engine, the cloud split it feeds, its edge exits and payload shape."""

    engine: EdgeEngine
    split: str
    exits: tuple[str, ...]
    feature_shape: tuple[int, ...]


@dataclass(frozen=True)
class EdgeConfig:
    policy: EdgePolicy  # in effect: base policy + controller knobs
    mode: Mode  # configured
    payload: Payload  # in effect
    routes: dict[Mode, Route] = field(default_factory=dict)  # by split mode: normal, ws
    depth: Mode | None = None  # the SLO controller's exit depth (ws | normal), honoured in auto mode

    def route(self, mode: Mode) -> Route:
        """The route a mode runs on: local reuses normal's exits; a mode the policy does not cover
        (auto may pick ws without a ws criterion) falls back to normal."""
        return self.routes.get(Mode.NORMAL if mode == Mode.LOCAL else mode) or self.routes[Mode.NORMAL]


class EdgeRuntime:
    """Builds routes for an edge model (engine) and swaps configurations atomically.

    ``model`` is an :class:`~services.edge.model.EdgeModel`; a torch ``Checkpoint`` (and
    ``principal``) is accepted too and runs on the torch engine.
    """

    def __init__(self, model, policy: EdgePolicy, mode: str, payload: str, modes_text: str = "",
                 principal=None, observer=None):
        if not isinstance(model, EdgeModel):
            model = EdgeModel.from_checkpoint(model, principal)
        self.model = self.ck = model
        self.aux = model.aux
        self.observer = observer
        self.cloud_sha256 = model.cloud_sha256
        edge_exits = list(model.edge_exits)
        if not edge_exits:
            raise ValueError(f"{model.path} has no early exit: nothing for the edge to answer with")
        self.mode_exits: dict[Mode, list[str]] = {Mode.WS: [edge_exits[0]], Mode.NORMAL: [edge_exits[-1]]}
        self.mode_exits.update(parse_modes(modes_text))
        for m, exits in self.mode_exits.items():
            unknown = [e for e in exits if e not in edge_exits]
            if unknown:
                raise ValueError(f"--modes: {m} uses exits {unknown} that {model.path} does not have at the edge "
                                 f"(edge exits: {edge_exits})")
        self.policy_exits = edge_exits
        self._parts: dict = {}  # (exits, raw) -> engine: sessions are built once, reused by every configuration
        self._lock = threading.Lock()
        self.base_policy, self.base_mode, self.base_payload = policy, mode, payload
        self.override_knobs: dict[str, float] = {}
        self.override_payload: str | None = None
        self.override_depth: Mode | None = None
        self.config = self._build()

    def policy_key(self, exit: str) -> str:
        """The policy's name for an engine exit (the aux arrangement prefixes ``aux_``)."""
        return exit[4:] if self.aux and exit.startswith("aux_") else exit

    def _route(self, policy: EdgePolicy, mode: Mode, payload: Payload) -> Route:
        exits = self.mode_exits[mode]
        names = list(exits)
        if self.aux:
            names = [f"aux_{e}" for e in exits]
            policy = EdgePolicy({f"aux_{e}": policy.criterion(e) for e in exits}, policy.drop, policy.meta)
        raw = payload == Payload.RAW
        part = self._parts.get((tuple(exits), raw))
        if part is None:
            part = self.model.part(exits, "input" if raw or self.aux else "features")
            self._parts[(tuple(exits), raw)] = part
        engine = EdgeEngine(part, policy, observer=self.observer, exits=names)
        return Route(engine, part.split, tuple(names), tuple(part.feature_shape))

    def _build(self) -> EdgeConfig:
        mode = self.base_mode
        payload = self.override_payload or self.base_payload
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if payload not in PAYLOADS:
            raise InvalidInput(f"payload must be one of {', '.join(PAYLOADS)}, got {payload!r}")
        mode, payload = Mode(mode), Payload(payload)
        if self.aux and payload != Payload.RAW:
            raise InvalidInput(f"the aux/principal arrangement offloads the raw input: payload must be "
                               f"{Payload.RAW.value!r}")
        knobs = {e: k for e, k in self.override_knobs.items() if e in self.base_policy.criteria}
        policy = self.base_policy.with_knobs(knobs) if knobs else self.base_policy
        routes: dict[Mode, Route] = {}
        missing: dict[Mode, str] = {}
        for m in self.mode_exits:
            try:
                routes[m] = self._route(policy, m, payload)
            except PolicyError as exc:
                missing[m] = str(exc)
        needed = set(SPLIT_MODES) if mode == Mode.AUTO else {Mode.NORMAL} if mode == Mode.LOCAL else {mode}
        if not routes or (needed - set(routes) and mode != Mode.AUTO):
            m = next(iter(needed - set(routes)))
            raise PolicyError(f"the policy cannot drive mode {m.value!r}: {missing[m]}")
        if needed - set(routes):
            log.warning("policy covers no exit of mode(s) %s; auto mode will not use them",
                        sorted(m.value for m in needed - set(routes)))
        cfg = EdgeConfig(policy, mode, payload, routes, self.override_depth)
        for exit, crit in cfg.policy.criteria.items():
            metrics.THRESHOLD.labels(exit, crit.kind).set(crit.knob)
        for m in Mode:
            metrics.MODE.labels(m).set(1 if m == cfg.mode else 0)
        return cfg

    def configure(self, policy_json: str = "", knobs: dict[str, float] | None = None, mode: str = "",
                  payload: str = "") -> EdgeConfig:
        """The user's change to the base configuration; nothing changes if anything is wrong."""
        with self._lock:
            old = (self.base_policy, self.base_mode, self.base_payload, dict(self.override_knobs),
                   self.override_payload)
            built = False
            try:
                if policy_json:
                    doc = parse_policy_json(policy_json)
                    self.base_policy = policy_from_doc(doc, self.policy_exits, self.model.num_classes)
                if knobs:
                    self.base_policy = with_knobs(self.base_policy, knobs)
                    for e in knobs:  # an explicit knob wins over the controller's, until it acts again
                        self.override_knobs.pop(e, None)
                self.base_mode = mode or self.base_mode
                if payload:
                    self.base_payload = payload
                    self.override_payload = None
                config, built = self._build(), True
                check_policy_runs(config.policy, self.mode_exits, self.model.num_classes)
                self.config = config
            except Exception:
                (self.base_policy, self.base_mode, self.base_payload, self.override_knobs,
                 self.override_payload) = old
                if built:  # _build exported the rejected configuration's metrics: export the restored one's
                    self.config = self._build()
                raise
            return self.config

    def control(self, knobs: dict[str, float] | None = None, payload: str | None = None,
                depth: str | None = None) -> EdgeConfig:
        """The SLO controller's overrides (None leaves a field as it is)."""
        with self._lock:
            if knobs:
                self.override_knobs.update(knobs)
            if payload:
                self.override_payload = None if payload == self.base_payload else payload
            if depth:
                self.override_depth = Mode(depth)
            self.config = self._build()
            return self.config

    def clear_control(self) -> EdgeConfig:
        with self._lock:
            self.override_knobs, self.override_payload, self.override_depth = {}, None, None
            self.config = self._build()
            return self.config
