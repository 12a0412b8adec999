"""What happened to a sample: the one outcome vocabulary of the library, the services and the reports.

:class:`Outcome` numbers are those of ``ddnn.v1.Outcome`` (``protos/ddnn/v1/edge.proto``), so an
outcome crosses the wire as itself; ``tests/unit/test_outcome.py`` pins the two together. Each
outcome's :attr:`~Outcome.label` (``"edge"``, ``"cloud"``, ``"dropped"``, ...) is how reports,
metrics labels and the ``exit`` column name it.
"""

from __future__ import annotations

from enum import IntEnum


class Outcome(IntEnum):
    """How a sample was answered (numbers equal to ``ddnn.v1.Outcome``'s)."""

    EDGE = 1  # by an early exit at the edge (the result's exit names which)
    CLOUD = 2  # by the cloud's final exit
    DROPPED = 3  # too uncertain even for the cloud (drop rule): no prediction
    DEGRADED = 4  # should have gone to the cloud, which failed or timed out: the deepest edge exit answered
    # Never on the wire: the load generator's mark for a sample whose whole batch was refused.
    REJECTED = 9

    @property
    def label(self) -> str:
        """The outcome's name in reports, metrics labels and per-sample files: ``"cloud"``, ``"dropped"``..."""
        return self.name.lower()


CLIENT_ONLY = frozenset({Outcome.REJECTED})  # outcomes a service never sends
