"""All-pairs correlation between rendering and image features, with local look-ups.

As in RAFT: the correlation of every rendering feature with every image feature is
computed once per network pass and pooled into a pyramid over the image side; each
recurrent step then reads a (2r+1)^2 window around the current estimate of where each
rendered point lies in the image, at every pyramid level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CorrPyramid:
    """Correlation volume of ``fmap_render`` (B, C, h, w) against ``fmap_image``.

    Args:
        fmap_render: (B, C, h, w) features of the rendering (the source of the field).
        fmap_image: (B, C, h, w) features of the image crop (where points are searched).
        levels: pyramid levels; level l pools the image side by 2^l.
        radius: look-up radius r, in cells of each level.
    """

    def __init__(
        self, fmap_render: torch.Tensor, fmap_image: torch.Tensor, levels: int = 3, radius: int = 3
    ):
        B, C, h, w = fmap_render.shape
        if fmap_image.shape != fmap_render.shape:
            raise ValueError(
                f"fmap_image: expected shape {tuple(fmap_render.shape)}, "
                f"got {tuple(fmap_image.shape)}"
            )
        self.radius = radius
        corr = torch.einsum("bchw,bcij->bhwij", fmap_render, fmap_image) / C**0.5
        corr = corr.reshape(B * h * w, 1, h, w)
        self.pyramid = [corr]
        for _ in range(levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2, ceil_mode=True)
            self.pyramid.append(corr)
        self.shape = (B, h, w)
        r = torch.arange(-radius, radius + 1, dtype=fmap_render.dtype, device=fmap_render.device)
        dy, dx = torch.meshgrid(r, r, indexing="ij")
        self.delta = torch.stack([dx, dy], dim=-1).reshape(1, -1, 1, 2)  # (1, (2r+1)^2, 1, 2)

    @property
    def channels(self) -> int:
        return len(self.pyramid) * (2 * self.radius + 1) ** 2

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """Correlation windows around ``coords``.

        Args:
            coords: (B, 2, h, w) positions (x, y) in image-feature cells (level 0), one
                per rendering cell.

        Returns:
            (B, levels * (2r+1)^2, h, w) correlation values; 0 outside the image.
        """
        B, h, w = self.shape
        centre = coords.permute(0, 2, 3, 1).reshape(B * h * w, 1, 1, 2)
        out = []
        for level, corr in enumerate(self.pyramid):
            hl, wl = corr.shape[-2:]
            # Cell centres of level l sit at (i + 0.5) * 2^l - 0.5 in level-0 cells.
            pos = (centre + 0.5) / 2**level - 0.5 + self.delta
            grid = torch.stack(
                [2 * (pos[..., 0] + 0.5) / wl - 1, 2 * (pos[..., 1] + 0.5) / hl - 1], dim=-1
            )
            win = F.grid_sample(
                corr, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            out.append(win.reshape(B, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()
