"""Who may change a running service: the guard in front of every control RPC (``Configure``).

Three settings of :class:`~ddnn.serving.settings.ServerSettings`, combinable:
``control=off`` refuses every control call (PERMISSION_DENIED); ``control_token`` asks for
metadata ``authorization: Bearer <token>`` (UNAUTHENTICATED without it or with a wrong one);
``control_clients`` (with mutual TLS) admits only client certificates with one of these names
(CN or DNS subject alternative name; PERMISSION_DENIED for others).
"""

from __future__ import annotations

import hmac

from ddnn.serving.errors import Forbidden, Unauthenticated


class ControlGuard:
    """Checks a call's credentials before a control RPC changes anything."""

    def __init__(self, enabled: bool = True, token: str = "", clients: str = ""):
        self.enabled = enabled
        self.token = token
        self.clients = {c.strip() for c in clients.split(",") if c.strip()}

    @classmethod
    def from_settings(cls, s) -> ControlGuard:
        return cls(s.control == "on", s.control_token, s.control_clients)

    def check(self, context) -> None:
        """Raise Forbidden / Unauthenticated unless this call may reconfigure the service."""
        if not self.enabled:
            raise Forbidden("control is disabled on this service (setting control=off): Configure is refused")
        if self.token:
            given = ""
            for key, value in context.invocation_metadata() or ():
                if key == "authorization":
                    given = value if isinstance(value, str) else value.decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                raise Unauthenticated("Configure needs metadata 'authorization: Bearer <control token>' "
                                      "(missing or wrong)")
        if self.clients:
            names = self.peer_names(context)
            if not names & self.clients:
                raise Forbidden(f"client certificate {sorted(names) or '(none)'} may not call Configure; "
                                f"allowed: {sorted(self.clients)}")

    @staticmethod
    def peer_names(context) -> set[str]:
        auth = context.auth_context() or {}
        raw = [*auth.get("x509_common_name", []), *auth.get("x509_subject_alternative_name", [])]
        return {v.decode() if isinstance(v, bytes) else str(v) for v in raw}
