"""Multi-exit CNNs (CIFAR ResNets, the 8-block plain CNN), edge/cloud splitting and costs."""

from ddnn.models.complexity import LayerCost, count_macs, count_params, layer_costs
from ddnn.models.network import MultiExitNet, build_model
from ddnn.models.spec import ModelSpec, QuantSpec, exit_block, exit_name
from ddnn.models.split import CloudPart, EdgePart, Split, aux_principal, cloud_part, raw_input_split, split_at

__all__ = [
    "CloudPart",
    "EdgePart",
    "LayerCost",
    "ModelSpec",
    "MultiExitNet",
    "QuantSpec",
    "Split",
    "aux_principal",
    "build_model",
    "cloud_part",
    "count_macs",
    "count_params",
    "exit_block",
    "exit_name",
    "layer_costs",
    "raw_input_split",
    "split_at",
]
