"""The VGG-like net of :mod:`zoo.nets_vgg` as a Keras port stores it.

Keras layer names (``block1_conv1``, ``block1_bn1``, ``fc1``, ``predictions``) and Keras
layouts: convolution kernels ``(kh, kw, in, out)``, dense kernels ``(in, out)``, BatchNorm
``gamma``/``beta``/``moving_mean``/``moving_variance`` with Keras' epsilon 1e-3. Converting to
PyTorch needs a permute for every conv kernel and a transpose for every dense kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KERAS_BN_EPS = 1e-3


class KerasConv2D(nn.Module):
    """kernel (kh, kw, in, out), bias; 'same' padding, stride 1."""

    out_axis_last = True

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(k, k, cin, cout) * 0.1)
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, out, H, W)."""
        w = self.kernel.permute(3, 2, 0, 1)
        return F.conv2d(x, w, self.bias, padding=w.shape[-1] // 2)


class KerasBatchNorm(nn.Module):
    """gamma, beta, moving_mean, moving_variance (inference only)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(c))
        self.beta = nn.Parameter(torch.zeros(c))
        self.register_buffer("moving_mean", torch.zeros(c))
        self.register_buffer("moving_variance", torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → normalized."""
        return F.batch_norm(
            x,
            self.moving_mean,
            self.moving_variance,
            self.gamma,
            self.beta,
            False,
            0.0,
            KERAS_BN_EPS,
        )


class KerasDense(nn.Module):
    """kernel (in, out), bias."""

    out_axis_last = True

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(cin, cout) * 0.1)
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in) → (N, out)."""
        return x @ self.kernel + self.bias


CONVS = (
    ("block1", 3, 16),
    ("block1", 16, 16),
    ("block2", 16, 32),
    ("block2", 32, 32),
    ("block2", 32, 32),
)


class KerasVgg(nn.Module):
    """block{b}_conv{i}, block{b}_bn{i}, fc1, predictions (flat Keras layer names)."""

    def __init__(self, num_classes: int = 10, image: int = 16) -> None:
        super().__init__()
        self.order: list[tuple[str, str, bool]] = []
        counts: dict[str, int] = {}
        for j, (block, cin, cout) in enumerate(CONVS):
            counts[block] = counts.get(block, 0) + 1
            conv, bn = f"{block}_conv{counts[block]}", f"{block}_bn{counts[block]}"
            self.add_module(conv, KerasConv2D(cin, cout))
            self.add_module(bn, KerasBatchNorm(cout))
            last_of_block = j + 1 == len(CONVS) or CONVS[j + 1][0] != block
            self.order.append((conv, bn, last_of_block))
        side = image // 4
        self.fc1 = KerasDense(32 * side * side, 64)
        self.predictions = KerasDense(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (N, C, H, W) → logits."""
        for conv, bn, pool in self.order:
            x = F.relu(getattr(self, bn)(getattr(self, conv)(x)))
            if pool:
                x = F.max_pool2d(x, 2)
        return self.predictions(F.relu(self.fc1(x.flatten(1))))
