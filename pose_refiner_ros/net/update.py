"""Recurrent update block: a convolutional GRU that refines the field and its weights."""

from __future__ import annotations

import torch
from torch import nn


class ConvGRU(nn.Module):
    """Convolutional GRU cell (as in RAFT / RNNPose supp. 1.2), 3x3 kernels."""

    def __init__(self, hidden: int, inp: int):
        super().__init__()
        self.convz = nn.Conv2d(hidden + inp, hidden, 3, padding=1)
        self.convr = nn.Conv2d(hidden + inp, hidden, 3, padding=1)
        self.convq = nn.Conv2d(hidden + inp, hidden, 3, padding=1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class UpdateBlock(nn.Module):
    """One recurrent step: (hidden, context, correlation, field) -> (hidden, d_field, logit).

    Shapes at the 1/8 grid (h, w): hidden (B, hidden, h, w), context (B, ctx, h, w),
    corr (B, corr_ch, h, w), flow (B, 2, h, w) in grid cells. Returns the new hidden
    state, a field increment (B, 2, h, w) in grid cells and weight logits (B, 1, h, w).
    """

    def __init__(self, corr_ch: int, hidden: int = 64, ctx: int = 64):
        super().__init__()
        self.enc_corr = nn.Sequential(nn.Conv2d(corr_ch, 64, 1), nn.ReLU(inplace=True))
        self.enc_flow = nn.Sequential(
            nn.Conv2d(2, 32, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 16, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.enc_motion = nn.Sequential(nn.Conv2d(64 + 16, 62, 3, padding=1), nn.ReLU(inplace=True))
        self.gru = ConvGRU(hidden, 64 + ctx)
        self.flow_head = nn.Sequential(
            nn.Conv2d(hidden, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 2, 3, padding=1),
        )
        self.weight_head = nn.Sequential(
            nn.Conv2d(hidden, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 1, 3, padding=1),
        )

    def forward(self, h, ctx, corr, flow):
        motion = self.enc_motion(torch.cat([self.enc_corr(corr), self.enc_flow(flow)], dim=1))
        h = self.gru(h, torch.cat([motion, flow, ctx], dim=1))
        return h, self.flow_head(h), self.weight_head(h)
