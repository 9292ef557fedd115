"""From renderings and correspondence fields to weighted 2D-3D correspondences.

The field is read on a regular grid of crop pixels, ``GRID_STRIDE`` apart: the grid
point (i, j) is the crop pixel ``(u, v) = (stride * j + stride // 2, stride * i +
stride // 2)``. Its 3D point is the rendered location field there (object frame, metres)
and its 2D target is that pixel plus the field. Fields of any resolution covering the
whole crop are sampled bilinearly at those pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

GRID_STRIDE = 4


@dataclass(frozen=True)
class Correspondences:
    """Weighted 2D-3D correspondences, one set per object.

    Attributes:
        pts_obj: (B, N, 3) object-frame points, metres (0 where invalid).
        uv_src: (B, N, 2) crop pixels where each point is rendered at the current pose.
        uv_tgt: (B, N, 2) crop pixels where the field says the point truly is.
        weight: (B, N) in [0, 1]; 0 where no surface was rendered.
        valid: (B, N) bool, True where the rendering has a surface.
    """

    pts_obj: torch.Tensor
    uv_src: torch.Tensor
    uv_tgt: torch.Tensor
    weight: torch.Tensor
    valid: torch.Tensor


def grid_pixels(size: int, device=None, dtype=torch.float32, stride: int = GRID_STRIDE):
    """Integer pixel coordinates of the grid: (N, 2) as (u, v), row-major, N = (size/stride)^2."""
    c = torch.arange(stride // 2, size, stride, device=device)
    v, u = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1).to(dtype)


def sample_map(
    maps: torch.Tensor, uv: torch.Tensor, size: int, mode: str = "bilinear"
) -> torch.Tensor:
    """Sample (B, C, h, w) maps covering a ``size`` x ``size`` crop at crop pixels uv (B, N, 2).

    Returns (B, N, C). Outside the crop the map's border value is used.
    """
    grid = (uv + 0.5) / size * 2.0 - 1.0
    out = F.grid_sample(
        maps, grid[:, :, None, :], mode=mode, padding_mode="border", align_corners=False
    )
    return out[..., 0].permute(0, 2, 1)


def correspondences(
    xyz_obj: torch.Tensor,
    mask: torch.Tensor,
    flow_px: torch.Tensor,
    weight: torch.Tensor,
    stride: int = GRID_STRIDE,
) -> Correspondences:
    """Read a field at the grid.

    Args:
        xyz_obj: (B, S, S, 3) rendered location field (object frame, metres).
        mask: (B, S, S) bool rendered mask.
        flow_px: (B, 2, h, w) field in crop pixels, covering the crop.
        weight: (B, 1, h, w) weights in [0, 1].
    """
    B, S = mask.shape[:2]
    uv = grid_pixels(S, mask.device, xyz_obj.dtype, stride)
    ui, vi = uv[:, 0].long(), uv[:, 1].long()
    pts = xyz_obj[:, vi, ui]  # (B, N, 3)
    valid = mask[:, vi, ui]
    uv_src = uv[None].expand(B, -1, -1)
    flow = sample_map(flow_px, uv_src, S)
    w = sample_map(weight, uv_src, S)[..., 0] * valid
    return Correspondences(pts_obj=pts, uv_src=uv_src, uv_tgt=uv_src + flow, weight=w, valid=valid)
