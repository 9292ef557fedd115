"""The correspondence-field network.

For every cell of a 1/8-scale grid over the zoom-in crop, it predicts where the surface
point rendered there truly lies in the image (a 2D displacement, the correspondence
field) and how much to trust that (a weight logit). The design is RAFT's, made small:

- one encoder, shared by the image crop and the shaded rendering, gives matching
  features; the correlation of the two is computed once per pass (``corr.CorrPyramid``);
- a context encoder sees the rendering's geometry (mask, normals, relative depth) and
  the image, and initialises a convolutional GRU;
- the GRU refines the field over ``gru_iters`` steps, each reading the correlation
  around the current estimate; every step's field and weights are returned so training
  can apply a sequence loss (later steps weigh more).

Inputs are normalised so the network is not tied to one object size, distance or
camera: the crop is zoomed to the object's projected extent, depth enters as
``(depth - z_centre) / diameter``, and fields are in crop pixels.

Why this design (figures in README, "The network"): a correlation volume lets the same
weights match textures and shapes never seen in training, which plain concatenation
networks (DeepIM-style) learn per object; the 1/8 grid and 64 channels keep a pass at
about the cost budgeted for a 250 ms CPU refinement of four iterations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .corr import CorrPyramid
from .encoder import Encoder
from .update import UpdateBlock

#: Channels of the rendering input: shaded RGB (3), mask (1), normals (3), relative depth (1).
RENDER_CHANNELS = 8


@dataclass(frozen=True)
class NetConfig:
    """Architecture of :class:`CorrespondenceNet` (stored in every checkpoint).

    Attributes:
        feat_dim: matching-feature channels.
        hidden: GRU hidden channels.
        ctx: context channels.
        width: encoder width (channels of its last stage).
        corr_levels: correlation pyramid levels.
        corr_radius: look-up radius in cells.
        gru_iters: recurrent steps per pass.
        init_from_matching: start the GRU from the field implied by the correlation
            (soft-argmax of each rendered cell's row over the image cells) instead of 0.
            Measured on this CPU: from 0, the field stayed at the zero-field error for
            500+ steps while the matching loss was already falling; from the matching,
            every gain in matching shows in the field at once.
    """

    feat_dim: int = 64
    hidden: int = 64
    ctx: int = 64
    width: int = 64
    corr_levels: int = 3
    corr_radius: int = 3
    gru_iters: int = 4
    init_from_matching: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FieldOutput:
    """Output of one network pass.

    Attributes:
        flows_px: list over GRU steps of (B, 2, S/8, S/8) fields: the displacement (du, dv)
            in crop pixels from the pixel at the centre of each grid cell to where the
            surface point rendered there is in the image crop.
        weight_logits: list over GRU steps of (B, 1, S/8, S/8) logits of the weights.
        corr: (B, h*w, h*w) level-0 correlation (rendering cell x image cell), for the
            matching loss of training; ``None`` when not asked for.
    """

    flows_px: list
    weight_logits: list
    corr: torch.Tensor | None = None


def normalise_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) colours in [0, 1] -> roughly zero-mean, unit-variance inputs."""
    return (rgb - 0.45) / 0.25


class CorrespondenceNet(nn.Module):
    """Predicts the correspondence field and its weights from an image crop and a rendering.

    Args:
        cfg: architecture.
    """

    STRIDE = 8

    def __init__(self, cfg: NetConfig = NetConfig()):
        super().__init__()
        self.cfg = cfg
        self.fnet = Encoder(3, cfg.feat_dim, cfg.width)
        self.cnet = Encoder(RENDER_CHANNELS + 3, cfg.hidden + cfg.ctx, cfg.width)
        corr_ch = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        self.update = UpdateBlock(corr_ch, cfg.hidden, cfg.ctx)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) image crop in [0, 1] -> (B, feat_dim, S/8, S/8) features."""
        return self.fnet(normalise_rgb(image))

    def forward(
        self,
        image: torch.Tensor,
        render: torch.Tensor,
        image_features: torch.Tensor | None = None,
        gru_iters: int | None = None,
    ) -> FieldOutput:
        """One pass.

        Args:
            image: (B, 3, S, S) image crop, RGB in [0, 1].
            render: (B, 8, S, S) rendering at the current pose, see :func:`render_input`.
            image_features: optional precomputed ``encode_image(image)`` (reused when the
                crop does not change between passes).
            gru_iters: recurrent steps (default ``cfg.gru_iters``).
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image: expected (B, 3, S, S), got {tuple(image.shape)}")
        if render.shape[0] != image.shape[0] or render.shape[1] != RENDER_CHANNELS:
            raise ValueError(
                f"render: expected ({image.shape[0]}, {RENDER_CHANNELS}, S, S), "
                f"got {tuple(render.shape)}"
            )
        f_img = self.encode_image(image) if image_features is None else image_features
        f_ren = self.fnet(normalise_rgb(render[:, :3]))
        corr = CorrPyramid(f_ren, f_img, self.cfg.corr_levels, self.cfg.corr_radius)
        c = self.cnet(torch.cat([render, normalise_rgb(image)], dim=1))
        h, ctx = torch.split(c, [self.cfg.hidden, self.cfg.ctx], dim=1)
        h, ctx = torch.tanh(h), torch.relu(ctx)

        B, _, hh, ww = f_ren.shape
        ys, xs = torch.meshgrid(
            torch.arange(hh, dtype=image.dtype, device=image.device),
            torch.arange(ww, dtype=image.dtype, device=image.device),
            indexing="ij",
        )
        coords0 = torch.stack([xs, ys], dim=0)[None].expand(B, 2, hh, ww)
        if self.cfg.init_from_matching:
            prob = torch.softmax(corr.pyramid[0].reshape(B, hh * ww, hh * ww), dim=-1)
            grid = coords0[0].reshape(2, -1).t()  # (h*w, 2) image cell centres (x, y)
            expected = (prob @ grid).transpose(1, 2).reshape(B, 2, hh, ww)
            flow = expected - coords0
        else:
            flow = torch.zeros_like(coords0)
        flows, logits = [], []
        for _ in range(gru_iters or self.cfg.gru_iters):
            # The field is re-read at its own estimate each step but not differentiated
            # through the look-up position (RAFT's choice: stabler training).
            window = corr.lookup((coords0 + flow).detach())
            h, d_flow, logit = self.update(h, ctx, window, flow)
            flow = flow + d_flow
            flows.append(flow * self.STRIDE)
            logits.append(logit)
        corr0 = corr.pyramid[0].reshape(B, hh * ww, hh * ww) if self.training else None
        return FieldOutput(flows_px=flows, weight_logits=logits, corr=corr0)
