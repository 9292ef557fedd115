"""Convolutional encoders: image/rendering features and rendering context, at 1/8 scale.

Small on purpose: the refiner runs several network passes per object on a CPU. A
(B, C_in, S, S) input gives (B, C_out, S/8, S/8); S must be a multiple of 8.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _norm(ch: int) -> nn.Module:
    # GroupNorm keeps behaviour independent of the batch size (one object or sixteen).
    return nn.GroupNorm(num_groups=math.gcd(8, ch), num_channels=ch)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection, at constant resolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.norm1 = _norm(ch)
        self.norm2 = _norm(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return torch.relu(x + y)


class Encoder(nn.Module):
    """(B, in_ch, S, S) -> (B, out_ch, S/8, S/8).

    Stride-2 stages at 32, 48 and 64 channels, one residual block at 1/4 and 1/8.
    """

    def __init__(self, in_ch: int, out_ch: int, width: int = 64):
        super().__init__()
        w1, w2, w3 = width // 2, (3 * width) // 4, width
        self.layers = nn.Sequential(
            nn.Conv2d(in_ch, w1, 3, stride=2, padding=1),
            _norm(w1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w1, w2, 3, stride=2, padding=1),
            _norm(w2),
            nn.ReLU(inplace=True),
            ResidualBlock(w2),
            nn.Conv2d(w2, w3, 3, stride=2, padding=1),
            _norm(w3),
            nn.ReLU(inplace=True),
            ResidualBlock(w3),
            nn.Conv2d(w3, out_ch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"Encoder input: H and W must be multiples of 8, got {tuple(x.shape)}")
        return self.layers(x)
