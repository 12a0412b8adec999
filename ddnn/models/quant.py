"""Quantized edge layers of Long et al. (``001_…`` §II-A): QuanConv = BN → activation quantization
→ convolution with quantized weights.

Quantizer (activations and weights, ``k`` bits, ``Z = 2**k - 1`` steps), Long et al. Eq. (1)/(3)
with the constants ``v0 = 1, v1 = 2, v2 = 1/2``::

    Q_k(x) = 2 * floor((clamp(x, -1, 1) + 1) / 2 * Z + 1/2) / Z - 1

a symmetric uniform quantizer on [-1, 1] with ``2**k`` levels (the uniform quantizer of DoReFa-Net,
Zhou et al. 2016, arXiv:1606.06160, written on [-1, 1] instead of [0, 1] because BN before it makes
the inputs zero-mean). For ``k = 1`` it is ``sign`` with ``sign(0) = +1``: levels {-1, +1}.

* Activations: ``Q_k(x)`` on the BN output. Gradient: the clipped straight-through estimator
  (Hubara et al. 2016; XNOR-Net, Rastegari et al. 2016): ``dQ/dx = 1`` where ``|x| <= 1``, else 0.
* Weights, per output filter ``W`` with ``n = c*w*h`` entries: ``W_Q = Q_k(W / max|W|)`` and
  ``W ≈ α W_Q`` with ``α = ‖W‖₁ / ‖W_Q‖₁``. For binary weights ``‖W_Q‖₁ = n``, so ``α = ‖W‖₁/n``
  and ``α W_Q = α sign(W)`` exactly as XNOR-Net (Eq. 2); for k > 1 the same rule keeps the L1
  norm of the quantized filter equal to the real one's (``‖W‖₁/n`` assumes ``|W_Q| = 1``, which only
  holds for binary weights). Gradient: straight-through (identity) to the real-valued weights,
  which the optimizer keeps updating, as in XNOR-Net's training algorithm.

XNOR-Net's per-position activation scale ``K`` is not used: Long et al. only scale by ``α``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ddnn.models.resnet import option_a_shortcut

QUANT_BITS = (1, 2, 4, 8)


def quantize_uniform(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``Q_k``: clamp to [-1, 1] and round to ``2**bits`` evenly spaced levels (no gradient logic)."""
    z = float(2**bits - 1)
    x = x.clamp(-1.0, 1.0)
    # floor(v + 1/2), not torch.round: round-half-to-even would send 0 to -1 for binary.
    return 2.0 * torch.floor((x + 1.0) * (z / 2.0) + 0.5) / z - 1.0


def quantize_activations(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``Q_k(x)`` forward; clipped straight-through gradient (1 inside [-1, 1], 0 outside)."""
    clipped = x.clamp(-1.0, 1.0)
    return clipped + (quantize_uniform(clipped, bits) - clipped).detach()


def quantize_weights(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``α W_Q`` per output filter (dim 0) forward; identity (straight-through) gradient to ``w``."""
    flat = w.detach().flatten(1)
    scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    q = quantize_uniform(flat / scale, bits)
    alpha = flat.abs().sum(dim=1, keepdim=True) / q.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
    wq = (alpha * q).view_as(w)
    return w + (wq - w).detach()


def xnor_alpha(w: torch.Tensor) -> torch.Tensor:
    """XNOR-Net's binary scaling ``α = ‖W‖₁ / n`` of every output filter, shape (out_channels,)."""
    return w.detach().flatten(1).abs().mean(dim=1)


class ActQuant(nn.Module):
    """Activation quantization layer of a QuanConv (``Q_k`` with a clipped straight-through gradient)."""

    def __init__(self, bits: int):
        super().__init__()
        if bits not in QUANT_BITS:
            raise ValueError(f"quantization bits must be one of {QUANT_BITS}, got {bits}")
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_activations(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class QuantConv2d(nn.Conv2d):
    """Conv2d whose weights are quantized to ``bits`` bits (times α per filter) in the forward pass.

    ``bits`` is read by :func:`ddnn.models.layer_costs`, so MAC and energy accounting see the
    layer's precision. The real-valued weights stay the trainable parameters.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bits: int = 1):
        super().__init__(in_ch, out_ch, kernel_size, stride, padding, bias=False)
        if bits not in QUANT_BITS:
            raise ValueError(f"quantization bits must be one of {QUANT_BITS}, got {bits}")
        self.bits = bits

    def quantized_weight(self) -> torch.Tensor:
        """The effective weights ``α W_Q`` used in the forward pass."""
        return quantize_weights(self.weight, self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.quantized_weight(), None, self.stride, self.padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bits={self.bits}"


class QuanConv(nn.Sequential):
    """Long et al.'s QuanConv layer: BatchNorm → activation quantization → quantized 3x3 convolution."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, bits: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.quant = ActQuant(bits)
        self.conv = QuantConv2d(in_ch, out_ch, 3, stride, 1, bits=bits)


class QuantBasicBlock(nn.Module):
    """A ResNet basic block built from two QuanConv layers with a full-precision shortcut.

    Drop-in for :class:`ddnn.models.resnet.BasicBlock` (same constructor, same shapes): the
    shortcut is the same parameter-free option-A identity (strided, zero-padded channels) and the
    residual addition stays full precision, as Long et al. Fig. 2. There is no ReLU: the BN and
    quantizer at the head of the next QuanConv are the non-linearity (XNOR-Net's block order).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, bits: int = 1):
        super().__init__()
        self.conv1 = QuanConv(in_ch, out_ch, stride, bits)
        self.conv2 = QuanConv(out_ch, out_ch, 1, bits)
        self.stride = stride
        self.pad = out_ch - in_ch
        self.bits = bits

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return option_a_shortcut(x, self.stride, self.pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + self.shortcut(x)
