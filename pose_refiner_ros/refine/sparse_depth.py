"""The depth modality without rendering: point-to-plane residuals of sparse surface points.

Each object's nearest precomputed view (``refine.viewpoint_model``) holds visible surface
points with normals. At the current pose each point is projected into the depth image;
the measured surface there (back-projected, camera frame) is what the point must lie on,
along the point's normal: a ``solver.terms.PlaneTerm`` (projective association, as in
KinectFusion's ICP and ICG's depth modality). Matches further than a gate from the
point's predicted depth (background, occluders) are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..solver.terms import PlaneTerm
from .viewpoint_model import ViewpointModel, gather_views

__all__ = ["sparse_depth_term"]


def sparse_depth_term(models: Sequence[ViewpointModel], model_idx: torch.Tensor,
                      view: torch.Tensor, T: torch.Tensor, depth: torch.Tensor,
                      K: torch.Tensor, K_s: torch.Tensor, gate_m: torch.Tensor,
                      weight: float = 1.0, huber: float = 4.0,
                      min_depth_m: float = 1e-3) -> PlaneTerm:
    """Point-to-plane residuals of the views' surface points against a depth image.

    Args:
        models, model_idx: viewpoint models and which each object uses; view: (B,)
            the view of each (as picked for the contour).
        T: (B, 4, 4) poses; depth: (1, 1, H, W) metres, 0 = no data.
        K: (B, 3, 3) the depth image's intrinsics (registered to the colour image);
            K_s: (B, 3, 3) those of the scaled image the residuals are expressed in.
        gate_m: (B,) matches further than this from the predicted depth are dropped.
        weight, huber: the term's scale and Huber threshold (scaled-pixel equivalents).
    """
    B = T.shape[0]
    dtype, dev = T.dtype, T.device
    pts = gather_views(models, model_idx, view, "surf_pts", dtype)
    nrm = gather_views(models, model_idx, view, "surf_normals", dtype)
    ok = gather_views(models, model_idx, view, "surf_valid")
    pc = pts @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    z = pc[..., 2].clamp_min(1e-6)
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None]
    c = K[:, None, :2, 2]
    uv = pc[..., :2] / z[..., None] * f + c
    H, W = depth.shape[-2:]
    grid = (uv + 0.5) / torch.tensor([W, H], dtype=dtype, device=dev) * 2 - 1
    d = F.grid_sample(depth.expand(B, -1, -1, -1), grid[:, :, None], mode="nearest",
                      padding_mode="zeros", align_corners=False)[:, 0, :, 0]  # (B, Ns)
    ok = ok & (pc[..., 2] > min_depth_m) & (d > 0) & ((d - pc[..., 2]).abs() < gate_m[:, None])
    # The pixel's centre, back-projected to the measured depth.
    uv_pix = uv.round()
    X = torch.cat([(uv_pix - c) / f * d[..., None], d[..., None]], -1)
    return PlaneTerm(pts, X, nrm, ok.to(dtype), K_s, scale=weight, huber=huber,
                     min_depth_m=min_depth_m)
