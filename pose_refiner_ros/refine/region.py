"""The region (silhouette) modality: contour measurements from the image's own colours.

A photo and an untextured CAD rendering share little appearance, but they share the
object's outline. In the style of the region-based trackers (RBGT / SRT3D and the region
modality of ICG, Stoiber et al.), for every object and outer iteration:

1. **Contour.** From the rendered mask in the zoom-in crop, take up to ``points`` pixels
   on the silhouette's boundary, with the outward normal from the gradient of the
   Gaussian-blurred mask and the sub-pixel position of the edge along it (for a
   straight edge the blurred mask at distance ``d`` inside is ``Phi(d / sigma)``, so
   ``d = sigma * Phi^-1(value)``). The 3D point of each is the rendered location field
   there: it moves with the pose like the contour does, to first order.
2. **Colour model of this image** (``refine.colour_model``). RGB histograms (``bins``^3)
   of the pixels within ``band_px`` inside the rendered silhouette (object) and outside
   it (surroundings) give, per colour, the probability ``p_f`` that a pixel of that
   colour is the object's. Pixels outside the image are left out.
3. **Lines.** Along each contour normal, ``2 * half_len_px`` crop pixels centred on the
   model's edge, the per-pixel ``p_f`` is read. If the true edge is at offset ``d``,
   pixels before it are object and pixels after it surroundings; the posterior over
   ``d`` (uniform prior, ``p_f`` kept within ``[eps, 1 - eps]``) gives the edge's
   measured offset (mean) and its uncertainty (variance).
4. **Residuals.** Each contour point must move by the measured offset along its normal:
   a point-to-line residual (``solver.terms.LineTerm``) weighted by the inverse
   variance, so flat or two-peaked lines (no edge found, occluded contour, similar
   colours) count little. Lines are long in the first iterations and short later
   (coarse to fine, ``half_len_px``).

Everything is in crop pixels of the iteration's zoom-in crop, batched over objects. The
settings are :class:`~pose_refiner_ros.refine.region_config.RegionConfig` (re-exported
here).
Written here rather than taken from a library: no installable package does region-based
pose measurement (DLR's 3DObjectTracking is a C++ application; its ideas, not its code,
are used).

The same measurements give the **region score** (:func:`region_score`): the share of the
contour whose edge is found within ``agree_px`` of where the pose puts it. It needs no
labels and no training; the refiner compares it at the coarse and the refined pose to
decide whether to trust the refinement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .colour_model import foreground_probability
from .edge_snap import snap_to_edge
from .region_config import RegionConfig

__all__ = ["RegionConfig", "Contour", "contour_samples", "line_measurements", "region_score",
           "LineMeasurements", "region_measure", "line_term", "edge_posterior"]


@dataclass(frozen=True)
class Contour:
    """Contour samples of rendered silhouettes.

    Attributes:
        uv: (B, N, 2) crop pixel centres on the silhouette's boundary (inside it).
        normal: (B, N, 2) unit outward normals (crop pixel axes u, v).
        offset: (B, N) how far the edge lies beyond ``uv`` along ``normal``, pixels.
        pts_obj: (B, N, 3) the rendered surface point at ``uv``, object frame, metres.
        depth_m: (B, N) its camera depth, metres.
        valid: (B, N) bool; False for padding (fewer boundary pixels than N).
    """

    uv: torch.Tensor
    normal: torch.Tensor
    offset: torch.Tensor
    pts_obj: torch.Tensor
    depth_m: torch.Tensor
    valid: torch.Tensor


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, 1, H, W) blurred with a separable Gaussian, replicate padding."""
    r = max(1, int(round(3 * sigma)))
    k = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


def _priority(n_pix: int, device) -> torch.Tensor:
    """A fixed pseudo-random priority per pixel (deterministic point selection)."""
    g = torch.Generator().manual_seed(n_pix)
    return torch.rand(n_pix, generator=g).to(device)


def contour_samples(mask: torch.Tensor, xyz_obj: torch.Tensor, depth_m: torch.Tensor, n: int,
                    sigma_px: float = 1.0) -> Contour:
    """Up to ``n`` boundary pixels of each rendered silhouette (module docstring, step 1).

    Args:
        mask: (B, S, S) bool rendered silhouettes.
        xyz_obj: (B, S, S, 3) rendered location field, object frame, metres.
        depth_m: (B, S, S) rendered depth, metres.
        n: points per object.
        sigma_px: blur of the mask for the normals and the sub-pixel edge.
    """
    B, H, W = mask.shape
    m = mask[:, None].to(xyz_obj.dtype)
    # Inside pixels with an outside 8-neighbour; the crop's border counts as outside.
    outside = F.max_pool2d(F.pad(1.0 - m, (1, 1, 1, 1), value=1.0), 3, stride=1)
    boundary = (m > 0) & (outside > 0)
    blur = _gaussian_blur(m, sigma_px)
    gx = torch.zeros_like(blur)
    gy = torch.zeros_like(blur)
    gx[..., :, 1:-1] = 0.5 * (blur[..., :, 2:] - blur[..., :, :-2])
    gy[..., 1:-1, :] = 0.5 * (blur[..., 2:, :] - blur[..., :-2, :])
    gnorm = torch.sqrt(gx**2 + gy**2)
    boundary = boundary & (gnorm > 1e-3)
    flat = boundary.reshape(B, -1)
    prio = _priority(H * W, mask.device)[None].expand(B, -1)
    score = torch.where(flat, prio + 1.0, torch.zeros_like(prio))
    k = min(n, H * W)
    top, idx = score.topk(k, dim=-1)
    valid = top > 0
    vi, ui = idx // W, idx % W
    uv = torch.stack([ui, vi], -1).to(xyz_obj.dtype)
    bidx = torch.arange(B, device=mask.device)[:, None]
    g = gnorm[:, 0][bidx, vi, ui].clamp_min(1e-6)
    normal = -torch.stack([gx[:, 0][bidx, vi, ui], gy[:, 0][bidx, vi, ui]], -1) / g[..., None]
    inside = blur[:, 0][bidx, vi, ui].clamp(0.5, 0.999)
    offset = sigma_px * torch.special.ndtri(inside)
    pts = xyz_obj[bidx, vi, ui]
    return Contour(uv=uv, normal=normal * valid[..., None], offset=offset * valid,
                   pts_obj=pts * valid[..., None], depth_m=depth_m[bidx, vi, ui] * valid,
                   valid=valid)


@dataclass(frozen=True)
class LineMeasurements:
    """Where each contour's edge was found along its normal.

    Attributes:
        mean_px: (B, N) offset of the edge from the model's edge, along the normal, pixels.
        var_px2: (B, N) its variance, pixels^2 (floored).
        agree: (B, N) posterior probability that the edge is within ``agree_px`` of the
            model's edge.
        seen: (B, N) bool: a valid contour point that no other object covers.
    """

    mean_px: torch.Tensor
    var_px2: torch.Tensor
    agree: torch.Tensor
    seen: torch.Tensor


def line_measurements(p_f: torch.Tensor, mask: torch.Tensor, contour: Contour,
                      half_len_px: float, samples: int = 25, eps: float = 0.1,
                      min_std_px: float = 0.5, agree_px: float = 1.5,
                      occluder_inv_depth: torch.Tensor | None = None,
                      img: torch.Tensor | None = None, snap_px: float = 0.0,
                      snap_min_change: float = 0.05) -> LineMeasurements:
    """Measure each contour's edge along its normal (module docstring, step 3).

    A line is used only as far as the model's own silhouette is unbroken on each side of
    its edge (as ICG does): beyond, a long line would cross another part of the object
    (a leg, a handle, the far side of a thin part) and find that edge instead.

    Args:
        p_f: (B, 1, S, S) per-pixel object probability (:func:`foreground_probability`).
        mask: (B, S, S) bool rendered silhouettes the contour was taken from.
        contour: the model's contour in the same crops.
        occluder_inv_depth: optional (B, 1, S, S) inverse depth (1/m) of the nearest
            *other* object at each crop pixel, 0 where none. Samples where another object
            is in front of the contour point tell nothing about this object's edge: the
            line stops there, and a contour point that is itself covered is dropped.
        half_len_px: half length of the lines, pixels.
        samples: samples per line (odd).
        eps: ``p_f`` is kept within ``[eps, 1 - eps]``.
        min_std_px: floor of the standard deviation, pixels.
        agree_px: radius of ``agree``, pixels.
        img, snap_px, snap_min_change: with the (B, 3, S, S) crops and ``snap_px`` > 0,
            each edge estimate is snapped to the photo's edge (``refine.edge_snap``).
    """
    B, N = contour.valid.shape
    S = p_f.shape[-1]
    dtype, dev = p_f.dtype, p_f.device
    s = torch.linspace(-half_len_px, half_len_px, samples, dtype=dtype, device=dev)  # (M,)
    centre = contour.uv + contour.offset[..., None] * contour.normal  # model edge, (B, N, 2)
    pos = centre[:, :, None, :] + s[None, None, :, None] * contour.normal[:, :, None, :]
    grid = (pos + 0.5) / S * 2.0 - 1.0  # (B, N, M, 2), align_corners=False convention
    # Outside the crop nothing is known: 0.5.
    pf = F.grid_sample(p_f - 0.5, grid, mode="bilinear", padding_mode="zeros",
                       align_corners=False)[:, 0] + 0.5  # (B, N, M)
    # Model-side validity: inside samples up to the first model-background sample, outside
    # samples up to the first model-object sample (the centre sample, on the edge, is
    # always valid).
    m = F.grid_sample(mask[:, None].to(dtype), grid, mode="nearest", padding_mode="zeros",
                      align_corners=False)[:, 0] > 0.5  # (B, N, M)
    c = samples // 2
    free = torch.ones_like(m)
    if occluder_inv_depth is not None:
        occ = F.grid_sample(occluder_inv_depth, grid, mode="nearest", padding_mode="zeros",
                            align_corners=False)[:, 0]
        free = occ * contour.depth_m[..., None] < 1.0  # nothing in front of the contour
    inner = torch.flip(torch.cumprod(torch.flip((m & free)[..., :c], [-1]).to(dtype), -1),
                       [-1])
    outer = torch.cumprod((~m & free)[..., c + 1:].to(dtype), -1)
    ok = torch.cat([inner, free[..., c:c + 1].to(dtype), outer], -1) > 0.5
    mean, var, agree = edge_posterior(pf, ok, s, eps, min_std_px, agree_px)
    if img is not None and snap_px > 0:
        rgb = F.grid_sample(img, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        mean = snap_to_edge(rgb, ok, s, mean, snap_px, snap_min_change)
    zero = torch.zeros_like(mean)
    seen = contour.valid & ok[..., c]
    return LineMeasurements(mean_px=torch.where(seen, mean, zero),
                            var_px2=torch.where(seen, var, torch.full_like(var, 1e6)),
                            agree=torch.where(seen, agree, zero), seen=seen)


def edge_posterior(pf: torch.Tensor, ok: torch.Tensor, s: torch.Tensor, eps: float = 0.1,
                   min_std_px: float = 0.5, agree_px: float = 1.5):
    """Where the edge lies along lines of object probabilities (module docstring, step 3).

    Args:
        pf: (..., M) object probability at each line sample, object side first.
        ok: (..., M) bool: the sample tells something about this object's edge (unused
            samples count as 0.5).
        s: (M,) the samples' offsets from the model's edge along the line, pixels,
            increasing and evenly spaced.
        eps, min_std_px, agree_px: as in :class:`RegionConfig`.

    Returns:
        ``(mean, var, agree)``, each (...): the edge's offset from the model's edge
        (pixels), its variance (pixels^2, floored at ``min_std_px^2``), and the
        posterior probability that it lies within ``agree_px`` of the model's edge.
    """
    step = s[1] - s[0]
    pf = torch.where(ok, pf.clamp(eps, 1.0 - eps), torch.full_like(pf, 0.5))
    lf, lb = pf.log(), (1.0 - pf).log()
    # Edge between samples j-1 and j (j = 1..M-1): samples < j object, >= j surroundings.
    cf = torch.cumsum(lf, -1)  # cf[j] = sum_{i <= j} lf
    cb = torch.flip(torch.cumsum(torch.flip(lb, [-1]), -1), [-1])  # cb[j] = sum_{i >= j} lb
    loglik = cf[..., :-1] + cb[..., 1:]  # (..., M-1)
    loglik = torch.where(ok[..., :-1] & ok[..., 1:], loglik, torch.full_like(loglik, -1e4))
    d = 0.5 * (s[:-1] + s[1:])  # (M-1,) edge positions
    post = torch.softmax(loglik, -1)
    mean = (post * d).sum(-1)
    var = (post * (d - mean[..., None]) ** 2).sum(-1) + step**2 / 12
    var = var.clamp_min(min_std_px**2)
    agree = (post * ((d.abs() <= agree_px).to(pf.dtype))).sum(-1)
    return mean, var, agree


def region_score(lines: LineMeasurements, contour: Contour) -> torch.Tensor:
    """(B,) share of the visible contour whose edge is found where the pose puts it."""
    n = lines.seen.sum(-1).clamp_min(1)
    return (lines.agree * lines.seen).sum(-1) / n


def region_measure(img: torch.Tensor, in_image: torch.Tensor, mask: torch.Tensor,
                   xyz_obj: torch.Tensor, depth_m: torch.Tensor, cfg: RegionConfig,
                   half_len_px: float, occluder_inv_depth: torch.Tensor | None = None,
                   with_score: bool = True):
    """Contour, colour model and line measurements of one rendering (steps 1-3).

    Args:
        img: (B, 3, S, S) crops, RGB in [0, 1].
        in_image: (B, 1, S, S) 1 where the crop pixel lies inside the image.
        mask: (B, S, S) bool rendered silhouettes; xyz_obj: (B, S, S, 3) location field;
            depth_m: (B, S, S) rendered depth, metres (0 off the object).
        cfg: settings; half_len_px: the lines' half length.
        occluder_inv_depth: optional (B, 1, S, S) inverse depth of the nearest other
            object, 0 where none (see :func:`line_measurements`).

    Returns:
        ``(contour, lines, score)``: :class:`Contour`, :class:`LineMeasurements` at
        ``half_len_px``, and the (B,) :func:`region_score` measured with the finest lines
        (None unless ``with_score``).
    """
    contour = contour_samples(mask, xyz_obj, depth_m, cfg.points, cfg.sigma_px)
    hidden = None
    if occluder_inv_depth is not None:
        hidden = (occluder_inv_depth * depth_m[:, None] > 1.0).to(img.dtype)
    p_f = foreground_probability(img, mask, in_image, cfg.bins, cfg.band_px, cfg.gap_px,
                                 hidden)

    def measure(half, snap_px):
        return line_measurements(p_f, mask, contour, half, cfg.samples, cfg.eps,
                                 cfg.min_std_px, cfg.agree_px, occluder_inv_depth,
                                 img, snap_px, cfg.edge_min_change)

    lines = measure(half_len_px, cfg.edge_snap_px)
    if not with_score:
        return contour, lines, None
    fine = cfg.half_len_px[-1]
    # The score reads the posterior's agreement only, which the snap does not change.
    score_lines = lines if half_len_px == fine else measure(fine, 0.0)
    return contour, lines, region_score(score_lines, contour)


def line_term(contour: Contour, lines: LineMeasurements, K_crop: torch.Tensor,
              cfg: RegionConfig, half_len_px: float, min_depth_m: float = 1e-3):
    """The contour residuals of step 4 as a ``solver.terms.LineTerm``: each contour
    point must move by the measured offset along its normal. The weight is
    ``floor^2 / max(variance, floor^2)`` in (0, 1], times ``cfg.weight``, with the
    standard deviation floor ``max(min_std_px, std_fraction * half_len_px)``: on long
    lines every line counts alike, so that the far-off edges move the pose as much as
    the near ones hold it (coarse to fine); the Huber threshold is at least the floor;
    on the fine lines, edges far from the model's count less (``cfg.outlier_px``).

    Args:
        K_crop: (B, 3, 3) intrinsics of the crops the contour lives in.
    """
    from ..solver.terms import LineTerm

    target = contour.uv + lines.mean_px[..., None] * contour.normal
    w, huber = cfg.line_weights(lines.mean_px, lines.var_px2, lines.seen, half_len_px)
    return LineTerm(contour.pts_obj, target, contour.normal, w, K_crop, scale=cfg.weight,
                    huber=huber, min_depth_m=min_depth_m)
