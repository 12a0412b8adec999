"""Typed service settings from ``DDNN_<SERVICE>_*`` environment variables, with CLI overrides.

Each service declares a dataclass; :func:`load_settings` builds an argparse parser from its
fields (``--field-name``), takes defaults from the environment, and fails fast naming the bad
variable or flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable or flag."""


def _base_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _convert(raw: str, tp: Any, where: str) -> Any:
    base = _base_type(tp)
    if raw == "" and type(None) in typing.get_args(tp):
        return None
    try:
        if base is bool:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if base in (int, float, str):
            return base(raw)
    except ValueError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    raise SettingsError(f"{where}: unsupported setting type {tp}")


def load_settings(cls: type[T], prefix: str, argv: list[str] | None = None, description: str = "") -> T:
    """Build ``cls`` from ``{prefix}_{FIELD}`` env vars, overridden by ``--field`` flags in ``argv``."""
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env = f"{prefix}_{f.name.upper()}"
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if env in os.environ:
            default = _convert(os.environ[env], tp, f"environment variable {env}")
        doc = f.metadata.get("help", "")
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=default,
                            type=_flag_type(tp, f"--{f.name.replace('_', '-')}"), help=f"{doc} [env {env}]".strip())
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            raise SettingsError("invalid command-line arguments (see the usage above)") from None
        raise
    values = vars(args)
    missing = [f.name for f in dataclasses.fields(cls) if values.get(f.name) is None
               and type(None) not in typing.get_args(hints[f.name])]
    if missing:
        name = missing[0]
        raise SettingsError(f"missing setting: pass --{name.replace('_', '-')} or set {prefix}_{name.upper()}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SettingsError(str(exc)) from None


def _flag_type(tp: Any, flag: str) -> Callable[[str], Any]:
    """argparse's ``type=`` for a setting: the raw text converted to the field's type, errors naming ``flag``."""
    return lambda raw: _convert(raw, tp, flag)


def setting(default: Any = dataclasses.MISSING, help: str = "", **kw) -> Any:
    """A dataclass field with a help text for the generated flag."""
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


# -- the settings every ddnn process shares -----------------------------------------------------
# Services subclass these (redefining a field keeps its place and changes its default), so a
# fix to, say, message sizes or the ready file lands in the edge, the cloud and the load generator.

MESSAGE_SLACK_BYTES = 64 * 1024


@dataclasses.dataclass
class ProcessSettings:
    """Settings of every ddnn process: metrics, ready file, gRPC channel limits, logging, shutdown."""

    metrics_addr: str = setting("127.0.0.1", "address of the Prometheus /metrics endpoint")
    metrics_port: int = setting(0, "port of the /metrics endpoint (0 = any free port)")
    max_message_bytes: int = setting(0, "gRPC message size limit, both directions (0 = derived from the largest "
                                        "valid request: max batch x bytes per sample + --message-slack-bytes)")
    message_slack_bytes: int = setting(MESSAGE_SLACK_BYTES, "room for ids and framing on top of the largest "
                                                            "valid payload, when the message limit is derived")
    keepalive_s: float = setting(30.0, "HTTP/2 keepalive ping interval on long-lived streams and idle clients")
    connect_timeout_s: float = setting(2.0, "time allowed to (re)connect to the next service")
    grace_s: float = setting(10.0, "on SIGTERM, time given to in-flight calls")
    ready_file: str = setting("", "write {pid, ports} here as JSON once serving")
    log_json: bool = setting(False, "log JSON lines")

    def check_common(self) -> None:
        """Fail fast on a bad shared setting, naming the flag."""
        for name in ("max_message_bytes", "message_slack_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        for name in ("keepalive_s", "connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0")
        if self.grace_s < 0:
            raise ValueError("--grace-s must be >= 0")

    def message_limit(self, payload_bytes: int) -> int:
        """The message size limit: the explicit setting, else ``payload_bytes`` + slack."""
        return self.max_message_bytes or payload_bytes + self.message_slack_bytes


@dataclasses.dataclass
class ServerSettings(ProcessSettings):
    """A gRPC server's settings on top of :class:`ProcessSettings`: address, TLS, admission, health."""

    listen: str = setting("127.0.0.1:0", "gRPC listen address (host:port, port 0 = any free port)")
    tls_cert: str = setting("", "server certificate (PEM); enables TLS")
    tls_key: str = setting("", "server private key (PEM)")
    tls_ca: str = setting("", "CA bundle for client certificates; enables mutual TLS")
    max_inflight_bytes: int = setting(256 * 1024 * 1024, "request payload bytes admitted at once; more are "
                                                         "refused RESOURCE_EXHAUSTED")
    health_interval_s: float = setting(0.5, "how often health is re-checked against the backend")
    health_timeout_s: float = setting(1.0, "a backend that does not answer its readiness check within this is "
                                           "not ready (health NOT_SERVING)")
    control: str = setting("on", "the Configure RPC: on | off (refused with PERMISSION_DENIED)")
    control_token: str = setting("", "when set, Configure needs metadata 'authorization: Bearer <token>'")
    control_clients: str = setting("", "when set (with mutual TLS), only these client certificate names "
                                       "(CN or DNS SAN, comma-separated) may call Configure")

    def check_common(self) -> None:
        super().check_common()
        if self.max_inflight_bytes < 1:
            raise ValueError("--max-inflight-bytes must be >= 1")
        if self.health_interval_s <= 0 or self.health_timeout_s <= 0:
            raise ValueError("--health-interval-s and --health-timeout-s must be > 0")
        if self.control not in ("on", "off"):
            raise ValueError(f"--control must be 'on' or 'off', got {self.control!r}")
        if self.control_clients and not self.tls_ca:
            raise ValueError("--control-clients names client certificates: it needs mutual TLS (--tls-ca)")

    @property
    def tls(self):
        from ddnn.serving.server import TlsFiles

        return TlsFiles(self.tls_cert or None, self.tls_key or None, self.tls_ca or None)
