"""Occlusion among the objects of one image, for the region modality.

A contour of one object that another detected object covers tells nothing about the
first object's edge. The refiner renders every object of the frame together, at a
reduced resolution, and gives each object the z-buffer of the *others*
(:func:`occluder_inv_depth`); ``refine.region`` stops its lines there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["occluder_inv_depth"]


def occluder_inv_depth(renderer, meshes, mesh_idx: torch.Tensor, K: torch.Tensor,
                       T_cam_obj: torch.Tensor, height: int, width: int,
                       downscale: int = 2) -> torch.Tensor:
    """Per object, the inverse depth of the nearest *other* object of the same image.

    All objects are rendered together at ``1 / downscale`` of the image's resolution
    (occlusion needs no more) and, for each, the others' z-buffer is kept.

    Args:
        renderer: a ``render.Renderer``; meshes, mesh_idx: as for ``Renderer.render``.
        K: (B, 3, 3) the image's intrinsics; T_cam_obj: (B, 4, 4) every object's pose.
        height, width: the image's size, pixels.

    Returns:
        (B, 1, height, width) inverse depth, 1/m, of the nearest other object; 0 where
        no other object is rendered.
    """
    B = T_cam_obj.shape[0]
    s = float(downscale)
    K_s = K.clone()
    K_s[:, :2] = K[:, :2] / s
    K_s[:, :2, 2] = (K[:, :2, 2] + 0.5) / s - 0.5  # pixel centres stay pixel centres
    h, w = -(-height // downscale), -(-width // downscale)
    frags = renderer.render(meshes, mesh_idx, K_s, T_cam_obj, h, w)
    inv = torch.where(frags.mask, 1.0 / frags.depth_m.clamp_min(1e-6),
                      torch.zeros_like(frags.depth_m))  # (B, h, w)
    if B == 1:
        return torch.zeros(1, 1, height, width, dtype=inv.dtype, device=inv.device)
    top, arg = inv.topk(2, dim=0)  # nearest and second nearest object per pixel
    own = torch.arange(B, device=inv.device)[:, None, None]
    other = torch.where(arg[0][None] == own, top[1][None], top[0][None])  # (B, h, w)
    other = F.interpolate(other[:, None], scale_factor=downscale, mode="nearest")
    return other[..., :height, :width].contiguous()
