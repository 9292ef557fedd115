"""The region modality without rendering: contour lines from sparse viewpoint models.

The same measurement as ``refine.region`` (colour model of this image, lines along the
contour's normals, edge posterior, point-to-line residuals), but the contour comes
from the object's :class:`~.viewpoint_model.ViewpointModel` (the nearest precomputed
view, its points moved with the pose) instead of a rendering, and the lines are read
from the full image instead of a zoom-in crop. One measurement and solve costs a few
milliseconds per object on a CPU, so many coarse-to-fine steps fit where one rendering
did (as in ICG, Stoiber et al.).

This batched torch version is the reference: what runs (the refiner's polish and
consensus, the tracker) is the same arithmetic in NumPy, one object at a time
(``track.measure``, ``track.solve``), which ``test/track/test_measure.py`` holds to it.

Units: every length of :class:`~.region.RegionConfig` (line half lengths, bands, the
standard deviation floor, the Huber threshold) is in *crop pixels*, as for the rendered
modality: here one crop pixel is the side of the object's zoom-in window
(``geometry.crop.compute_crops`` with the refiner's ``crop_size`` and ``crop_margin``)
over ``crop_size``, so the settings mean the same for a near and a far object. The
solve runs in that scaled image (intrinsics divided by the scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..solver.gauss_newton import SolverConfig, gauss_newton_steps
from ..solver.terms import LineTerm
from .colour_model import colour_bins, colour_histograms
from .edge_snap import snap_to_edge
from .region import RegionConfig, edge_posterior
from .viewpoint_model import ViewpointModel, gather_views, nearest_views

__all__ = ["SparseContour", "SparseLines", "sparse_contour", "sparse_lines",
           "sparse_line_term", "sparse_region_solve", "scaled_intrinsics"]


@dataclass(frozen=True)
class SparseContour:
    """The contour of the nearest views, projected at the poses.

    Attributes:
        pts_obj: (B, N, 3) edge points, object frame, metres.
        uv: (B, N, 2) their projections, scaled-image pixels.
        normal: (B, N, 2) unit outward normals in the scaled image.
        fg_px, bg_px: (B, N) usable line length inside / outside, scaled pixels.
        depth_m: (B, N) camera depth of the points.
        valid: (B, N) bool.
        view: (B,) index of the view used.
    """

    pts_obj: torch.Tensor
    uv: torch.Tensor
    normal: torch.Tensor
    fg_px: torch.Tensor
    bg_px: torch.Tensor
    depth_m: torch.Tensor
    valid: torch.Tensor
    view: torch.Tensor


@dataclass(frozen=True)
class SparseLines:
    """Line measurements along a :class:`SparseContour` (as ``region.LineMeasurements``).

    Attributes:
        mean_px, var_px2, agree, seen: (B, N) the edge's offset from the model's edge
            (scaled pixels), its variance, the posterior mass within ``agree_px``, and
            whether the line was usable.
        hist_f, hist_b: (B, bins^3) the normalised colour histograms of the object and of
            its surroundings the measurement used.
        score: (B,) share of the usable contour whose edge is within ``agree_px``.
    """

    mean_px: torch.Tensor
    var_px2: torch.Tensor
    agree: torch.Tensor
    seen: torch.Tensor
    hist_f: torch.Tensor
    hist_b: torch.Tensor
    score: torch.Tensor


def sparse_contour(models: Sequence[ViewpointModel], model_idx: torch.Tensor,
                   T: torch.Tensor, K_s: torch.Tensor) -> SparseContour:
    """Pick each object's nearest view and project its contour (module docstring).

    Args:
        models: distinct viewpoint models; model_idx: (B,) which one each object uses.
        T: (B, 4, 4) poses ``T_cam_obj``; K_s: (B, 3, 3) intrinsics of the scaled image.
    """
    dtype = T.dtype
    view = nearest_views(models, model_idx, T)
    pts, nrm = (gather_views(models, model_idx, view, k, dtype) for k in ("pts", "normals"))
    fg, bg = (gather_views(models, model_idx, view, k, dtype) for k in ("fg_m", "bg_m"))
    valid = gather_views(models, model_idx, view, "valid")
    R, t = T[:, :3, :3], T[:, :3, 3]
    pc = pts @ R.transpose(1, 2) + t[:, None]
    z = pc[..., 2].clamp_min(1e-6)
    f = torch.stack([K_s[:, 0, 0], K_s[:, 1, 1]], -1)[:, None]  # (B, 1, 2)
    uv = pc[..., :2] / z[..., None] * f + K_s[:, None, :2, 2]
    n_cam = nrm @ R.transpose(1, 2)
    # The image of the normal: derivative of the projection along it.
    n_uv = f * (n_cam[..., :2] - pc[..., :2] * (n_cam[..., 2:] / z[..., None])) / z[..., None]
    n_uv = n_uv / n_uv.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    f_over_z = f.mean(-1) / z
    return SparseContour(pts_obj=pts, uv=uv, normal=n_uv, fg_px=fg * f_over_z,
                         bg_px=bg * f_over_z, depth_m=z, valid=valid & (pc[..., 2] > 1e-3),
                         view=view)


def _sample(img: torch.Tensor, pos_px: torch.Tensor, mode: str = "bilinear"):
    """Values of ``img`` at full-image pixel positions ``pos_px`` (B, N, M, 2): (B, C, N, M),
    and (B, N, M) bool inside the image. ``img`` is (1, C, H, W), shared by every object
    (sampled in one call, without copying it per object), or (B, C, H, W)."""
    H, W = img.shape[-2:]
    B, N, M, _ = pos_px.shape
    scale = torch.tensor([W, H], dtype=pos_px.dtype, device=pos_px.device)
    grid = (pos_px + 0.5) / scale * 2.0 - 1.0
    if img.shape[0] == 1 and B > 1:
        out = F.grid_sample(img, grid.reshape(1, B * N, M, 2), mode=mode,
                            padding_mode="border", align_corners=False)
        out = out.reshape(img.shape[1], B, N, M).transpose(0, 1)
    else:
        out = F.grid_sample(img, grid, mode=mode, padding_mode="border", align_corners=False)
    inside = (grid.abs() <= 1.0).all(-1)
    return out, inside


def sparse_lines(img: torch.Tensor, contour: SparseContour, px_scale: torch.Tensor,
                 cfg: RegionConfig, half_len_px: float,
                 occluder_inv_depth: torch.Tensor | None = None,
                 hist: tuple | None = None, hist_rate: float = 1.0) -> SparseLines:
    """Colour model and line measurements along the sparse contour.

    Args:
        img: (1, 3, H, W) the image, RGB in [0, 1].
        contour: :func:`sparse_contour` in the scaled image.
        px_scale: (B,) full-image pixels per scaled pixel.
        cfg: the region settings (lengths in scaled pixels); half_len_px: the lines'.
        occluder_inv_depth: optional (B, 1, H, W) inverse depth of the nearest other
            object, 0 where none.
        hist: optional ``(hist_f, hist_b)`` (B, bins^3) histograms of earlier frames
            (tracking); the ones of this measurement are blended in with weight
            ``hist_rate``, as ICG's temporal colour model does.
    """
    B, N = contour.valid.shape
    dtype, dev = contour.uv.dtype, contour.uv.device
    M = cfg.samples
    sc = px_scale[:, None, None, None]
    n = contour.normal[:, :, None, :]
    uv = contour.uv[:, :, None, :]
    s = torch.linspace(-half_len_px, half_len_px, M, dtype=dtype, device=dev)
    pos = (uv + s[None, None, :, None] * n) * sc
    rgb_l, in_l = _sample(img, pos)
    free_l = True
    z = contour.depth_m[..., None]
    if occluder_inv_depth is not None:
        occ_l, _ = _sample(occluder_inv_depth, pos, "nearest")
        free_l = occ_l[:, 0] * z < 1.0
    # Colour model: the bands inside and outside the edge (RegionConfig.band_offsets).
    a = torch.as_tensor(cfg.band_offsets(), dtype=dtype, device=dev)  # (A,)
    band = torch.cat([-a.flip(0), a])  # (2A,)
    pos_b = (uv + band[None, None, :, None] * n) * sc
    rgb_b, in_b = _sample(img, pos_b)
    use_b = in_b & contour.valid[..., None]
    if occluder_inv_depth is not None:
        occ_b, _ = _sample(occluder_inv_depth, pos_b, "nearest")
        use_b = use_b & (occ_b[:, 0] * z < 1.0)
    inner = (band[None, None] < 0) & (-band[None, None] <= contour.fg_px[..., None])
    outer = (band[None, None] > 0) & (band[None, None] <= contour.bg_px[..., None])
    h_f, h_b = colour_histograms(colour_bins(rgb_b, cfg.bins),
                                 (use_b & inner).to(dtype).reshape(B, -1),
                                 (use_b & outer).to(dtype).reshape(B, -1), cfg.bins)
    if hist is not None:
        h_f = (1 - hist_rate) * hist[0] + hist_rate * h_f
        h_b = (1 - hist_rate) * hist[1] + hist_rate * h_b
    p_f = h_f / (h_f + h_b)
    pf = torch.gather(p_f, 1, colour_bins(rgb_l, cfg.bins)).reshape(B, N, M)
    # Usable samples: in the image, not behind another object, and within the model's
    # unbroken silhouette (inside) or free space (outside), up to the first failure.
    c = M // 2
    within = torch.where(s[None, None] < 0, -s[None, None] <= contour.fg_px[..., None],
                         s[None, None] <= contour.bg_px[..., None])
    good = in_l & free_l & within
    inner_ok = torch.flip(torch.cumprod(torch.flip(good[..., :c], [-1]).to(dtype), -1), [-1])
    outer_ok = torch.cumprod(good[..., c + 1:].to(dtype), -1)
    ok = torch.cat([inner_ok, (in_l & free_l)[..., c:c + 1].to(dtype), outer_ok], -1) > 0.5
    mean, var, agree = edge_posterior(pf, ok, s, cfg.eps, cfg.min_std_px, cfg.agree_px)
    if cfg.edge_snap_px > 0:
        mean = snap_to_edge(rgb_l, ok, s, mean, cfg.edge_snap_px, cfg.edge_min_change)
    seen = contour.valid & ok[..., c]
    zero = torch.zeros_like(mean)
    agree = torch.where(seen, agree, zero)
    return SparseLines(mean_px=torch.where(seen, mean, zero),
                       var_px2=torch.where(seen, var, torch.full_like(var, 1e6)),
                       agree=agree, seen=seen, hist_f=h_f, hist_b=h_b,
                       score=agree.sum(-1) / seen.sum(-1).clamp_min(1))


def scaled_intrinsics(K: torch.Tensor, px_scale: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) intrinsics of the scaled image: ``u_s = u / px_scale`` exactly (the
    principal point is scaled too)."""
    K_s = K.clone()
    K_s[:, :2] = K[:, :2] / px_scale[:, None, None]
    return K_s


def sparse_region_solve(img: torch.Tensor, K: torch.Tensor, T: torch.Tensor,
                        models: Sequence[ViewpointModel], model_idx: torch.Tensor,
                        px_scale: torch.Tensor, cfg: RegionConfig,
                        schedule: Sequence[float], solver: SolverConfig | None = None,
                        lm_iterations: int = 1,
                        occluder_inv_depth: torch.Tensor | None = None):
    """Coarse-to-fine region-only pose refinement from the sparse contour.

    Args:
        img: (1, 3, H, W) RGB in [0, 1]; K: (B, 3, 3) its intrinsics; T: (B, 4, 4) poses.
        models, model_idx: viewpoint models and which each object uses.
        px_scale: (B,) full-image pixels per scaled ("crop") pixel, held fixed.
        cfg: region settings; schedule: line half length (scaled pixels) of each
            measurement; lm_iterations: Gauss-Newton steps on each measurement
            (``solver.gauss_newton_steps``).
        occluder_inv_depth: optional (B, 1, H, W), see :func:`sparse_lines`.

    Returns:
        ``(T (B, 4, 4), score (B,))``: the refined poses and the share of the contour
        whose edge is found within ``agree_px`` at the last measurement.
    """
    K_s = scaled_intrinsics(K, px_scale)
    solver = solver or SolverConfig()
    score = torch.zeros(T.shape[0], dtype=T.dtype, device=T.device)
    for half in schedule:
        contour = sparse_contour(models, model_idx, T, K_s)
        # A colour model per measurement: kept for a whole line length it let a
        # synthetic object's position drift (the pose's first guess colours it).
        lines = sparse_lines(img, contour, px_scale, cfg, half, occluder_inv_depth)
        term = sparse_line_term(contour, lines, K_s, cfg, half, solver.min_depth_m)
        T = gauss_newton_steps(T, [term], lm_iterations, max_step_rad=solver.max_step_rad)
        score = lines.score
    return T, score


def sparse_line_term(contour: SparseContour, lines: SparseLines, K_s: torch.Tensor,
                     cfg: RegionConfig, half_len_px: float, min_depth_m: float = 1e-3):
    """The point-to-line residuals of the measured edges (as ``region.line_term``)."""
    w, huber = cfg.line_weights(lines.mean_px, lines.var_px2, lines.seen, half_len_px)
    target = contour.uv + lines.mean_px[..., None] * contour.normal
    return LineTerm(contour.pts_obj, target, contour.normal, w, K_s,
                    scale=max(cfg.weight, 1e-6), huber=huber, min_depth_m=min_depth_m)
