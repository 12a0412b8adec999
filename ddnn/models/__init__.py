"""Multi-exit CNNs (CIFAR ResNets, the 8-block plain CNN), edge/cloud splitting and costs.

Names load their submodule on first use, so ``ddnn.models.spec`` (what torch-free serving code
needs: the model spec and exit names) is importable without torch.
"""

import importlib

_WHERE = {
    "LayerCost": "complexity", "count_macs": "complexity", "count_params": "complexity", "layer_costs": "complexity",
    "MultiExitNet": "network", "build_model": "network",
    "ModelSpec": "spec", "QuantSpec": "spec", "exit_block": "spec", "exit_name": "spec",
    "CloudPart": "split", "EdgePart": "split", "Split": "split", "aux_principal": "split", "cloud_part": "split",
    "raw_input_split": "split", "split_at": "split",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
