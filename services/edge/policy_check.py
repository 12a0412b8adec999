"""A policy checked against the running model before it is accepted (``Configure``, start-up).

Bounds come from the model, not from the policy: its exits must be exits the edge runs, a
criterion's ``num_classes`` must be the model's (a larger one would also cost memory growing with
its square before anything else could refuse it), and every criterion must decide a batch of the
model's outputs. A policy that passes cannot make later batches fail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from ddnn.errors import PolicyError
from ddnn.export.bundle import Mode
from ddnn.policies import EdgePolicy


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_policy_json(text: str, source: str = "policy_json"):
    """JSON text to a document, refusing NaN/Infinity and nesting deep enough to exhaust the parser."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise PolicyError(f"{source}: nested too deeply to be a policy") from None
    except ValueError as exc:  # JSONDecodeError and the constants above
        raise PolicyError(f"{source} is not valid JSON ({exc})") from None


def check_policy_doc(doc, exits: list[str], num_classes: int, source: str = "policy_json") -> None:
    """Cheap structural bounds on a policy document, before it is parsed."""
    if not isinstance(doc, dict):
        raise PolicyError(f"{source}: expected a JSON object with 'format' and 'exits', got {type(doc).__name__}")
    crits = doc.get("exits")
    if not isinstance(crits, dict) or not crits:
        raise PolicyError(f"{source}: field 'exits' must map exit names ({', '.join(exits)}) to criteria")
    unknown = sorted(set(crits) - set(exits))
    if unknown:
        raise PolicyError(f"{source}: exits {unknown} are not exits of this edge's model; expected some of {exits}")
    for name, crit in crits.items():
        if isinstance(crit, dict) and "num_classes" in crit and crit["num_classes"] != num_classes:
            raise PolicyError(f"{source}: exits.{name}.num_classes must be {num_classes} (the model's classes), "
                              f"got {crit['num_classes']!r}")


def policy_from_doc(doc, exits: list[str], num_classes: int, source: str = "policy_json") -> EdgePolicy:
    """A policy from a document checked by :func:`check_policy_doc`; any malformed field is a PolicyError."""
    check_policy_doc(doc, exits, num_classes, source)
    try:
        return EdgePolicy.from_dict(doc, source=source)
    except PolicyError:
        raise
    except (OverflowError, TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        raise PolicyError(f"{source}: malformed criterion ({type(exc).__name__}: {exc})") from None


def check_policy_runs(policy: EdgePolicy, mode_exits: Mapping[Mode, Sequence[str]], num_classes: int) -> None:
    """Every exit a mode uses decides a batch of the model's logits without error."""
    logits = np.zeros((2, num_classes), np.float32)
    logits[1, 0] = 1.0
    for exits in mode_exits.values():
        for i, exit in enumerate(exits):
            if exit in policy.criteria:
                try:
                    policy.decide(exit, logits, last=i == len(exits) - 1)
                except (ValueError, IndexError, TypeError) as exc:
                    raise PolicyError(f"policy for exit {exit!r} cannot decide this model's "
                                      f"{num_classes}-class outputs: {exc}") from None


def with_knobs(policy: EdgePolicy, knobs: dict[str, float]) -> EdgePolicy:
    """``policy`` with some knobs replaced; a bad one is a PolicyError naming ``knobs[exit]``."""
    for exit, knob in knobs.items():
        try:
            policy.with_knobs({exit: knob})
        except PolicyError as exc:
            raise PolicyError(f"knobs[{exit!r}]: {exc}") from None
    return policy.with_knobs(dict(knobs))
