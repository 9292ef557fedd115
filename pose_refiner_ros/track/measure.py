"""The tracker's measurements of one object in one frame, in NumPy.

The same measurements as the render-free region modality (``refine.sparse_region``) and
depth modality (``refine.sparse_depth``), which the refiner runs batched in torch:

- :func:`project_contour`: the nearest precomputed view of the object's sparse viewpoint
  model (``refine.viewpoint_model``), its contour points projected at the pose into the
  *scaled* image (one scaled pixel = one pixel of the refiner's zoom-in crop, see
  ``refine.sparse_region``), with their outward normals and usable line lengths;
- :func:`measure_lines`: this image's colour model (histograms of bands inside and
  outside the contour, optionally blended with earlier frames'), the object
  probability along a line per contour point, the edge posterior (``refine.region``'s
  :func:`~pose_refiner_ros.refine.region.edge_posterior`) snapped to the strongest
  colour change (``refine.edge_snap``), and the region score;
- :func:`match_depth`: the surface points of the view matched to the depth image by
  projection (point-to-plane targets).

Used by the tracker, and by the refiner's render-free polish and consensus
(:func:`region_solve`). Why a second implementation: each call measures one object on
arrays of a few thousand samples. At that size torch's per-operation overhead
is most of the cost (measured on this project's 2-core CPU, one thread: 3.3 ms per
measurement and Gauss-Newton step in torch, nearly all of it dispatch). The arithmetic
below is the same, sample for sample (``test/track/test_measure.py`` checks it against the
torch modality); only the array library differs.

Frames and units: poses ``T_cam_obj`` (4, 4) map object-frame metres to the camera's
optical frame; image positions are pixels with the centre of the top-left pixel at
(0, 0) (as ``torch.nn.functional.grid_sample`` with ``align_corners=False`` reads them);
lengths along lines are scaled pixels unless named ``_m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..refine.region import RegionConfig

__all__ = ["ViewArrays", "Contour", "Lines", "project_contour", "measure_lines",
           "region_solve", "match_depth", "sample_bilinear", "edge_posterior",
           "snap_to_edge"]


@dataclass(frozen=True)
class ViewArrays:
    """A :class:`~pose_refiner_ros.refine.viewpoint_model.ViewpointModel` as float64
    NumPy arrays (same field names and shapes: V views, N contour points, Ns surface
    points per view)."""

    dirs: np.ndarray
    centre: np.ndarray
    pts: np.ndarray
    normals: np.ndarray
    fg_m: np.ndarray
    bg_m: np.ndarray
    valid: np.ndarray
    surf_pts: np.ndarray
    surf_normals: np.ndarray
    surf_valid: np.ndarray

    @classmethod
    def from_model(cls, vm) -> ViewArrays:
        """The arrays of a ``ViewpointModel`` (a ``ViewArrays`` is returned as it is)."""
        if isinstance(vm, ViewArrays):
            return vm

        def arr(name):
            a = getattr(vm, name).detach().cpu().numpy()
            return a if a.dtype == bool else a.astype(np.float64)

        return cls(**{k: arr(k) for k in cls.__dataclass_fields__})

    def nearest_view(self, T: np.ndarray) -> int:
        """The view nearest to where the camera of ``T`` (4, 4) sees the object from."""
        cam = -T[:3, :3].T @ T[:3, 3]  # camera centre, object frame
        return int(np.argmax(self.dirs @ (cam - self.centre)))


@dataclass(frozen=True)
class Contour:
    """The usable contour points of the nearest view, projected at a pose.

    Attributes:
        pts_obj: (N, 3) edge points, object frame, metres.
        uv: (N, 2) their projections, scaled pixels; normal: (N, 2) unit outward normals.
        fg_px, bg_px: (N,) usable line length inside / outside the edge, scaled pixels.
        depth_m: (N,) camera depth of the points.
        view: the view's index.
    """

    pts_obj: np.ndarray
    uv: np.ndarray
    normal: np.ndarray
    fg_px: np.ndarray
    bg_px: np.ndarray
    depth_m: np.ndarray
    view: int


def project_contour(va: ViewArrays, T: np.ndarray, K_s: np.ndarray) -> Contour:
    """Nearest view's contour at pose ``T`` (4, 4) in the scaled image of ``K_s`` (3, 3)."""
    view = va.nearest_view(T)
    keep = va.valid[view]
    pts, nrm = va.pts[view][keep], va.normals[view][keep]
    R, t = T[:3, :3], T[:3, 3]
    pc = pts @ R.T + t
    keep = pc[:, 2] > 1e-3
    pts, nrm, pc = pts[keep], nrm[keep], pc[keep]
    z = pc[:, 2]
    f = np.array([K_s[0, 0], K_s[1, 1]])
    uv = pc[:, :2] / z[:, None] * f + K_s[:2, 2]
    n_cam = nrm @ R.T
    # The image of the normal: the derivative of the projection along it.
    n_uv = f * (n_cam[:, :2] - pc[:, :2] * (n_cam[:, 2:] / z[:, None])) / z[:, None]
    n_uv /= np.maximum(np.linalg.norm(n_uv, axis=1, keepdims=True), 1e-9)
    f_over_z = f.mean() / z
    vk = va.valid[view]
    fg, bg = va.fg_m[view][vk][keep], va.bg_m[view][vk][keep]
    return Contour(pts, uv, n_uv, fg * f_over_z, bg * f_over_z, z, view)


def sample_bilinear(img: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear values of ``img`` (H, W, C) float32 at pixel positions ``pos`` (N, M, 2)
    (x, y): ``(values (N, M, C), inside (N, M) bool)``. Positions outside the image read
    the nearest border pixel (as ``grid_sample``'s border padding); ``inside`` is within
    half a pixel of the image. OpenCV's ``remap`` does the interpolation (about 9x
    faster than NumPy gathers here)."""
    H, W = img.shape[:2]
    p = pos.astype(np.float32, copy=False)
    out = cv2.remap(img, p[..., 0], p[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    if out.ndim == 2:
        out = out[..., None]
    inside = ((p[..., 0] >= -0.5) & (p[..., 0] <= W - 0.5)
              & (p[..., 1] >= -0.5) & (p[..., 1] <= H - 0.5))
    return out, inside


def _bins(rgb: np.ndarray, bins: int) -> np.ndarray:
    q = np.minimum((np.clip(rgb, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    return (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]


def _histogram(idx: np.ndarray, w: np.ndarray, bins: int) -> np.ndarray:
    """Normalised histogram with a small prior per bin (``refine.colour_model``'s)."""
    h = np.bincount(idx, weights=w, minlength=bins**3)
    return (h + 1.0 / bins**3) / (w.sum() + 1.0)


def edge_posterior(pf: np.ndarray, ok: np.ndarray, s: np.ndarray, eps: float,
                   min_std_px: float, agree_px: float):
    """``(mean, var, agree)`` (N,) of the edge along lines of object probabilities
    ``pf`` (N, M), object side first; see ``refine.region.edge_posterior``."""
    step = s[1] - s[0]
    pf = np.where(ok, np.clip(pf, eps, 1.0 - eps), 0.5)
    cf = np.cumsum(np.log(pf), -1)
    cb = np.cumsum(np.log(1.0 - pf)[:, ::-1], -1)[:, ::-1]
    loglik = np.where(ok[:, :-1] & ok[:, 1:], cf[:, :-1] + cb[:, 1:], -1e4)
    d = 0.5 * (s[:-1] + s[1:])
    post = np.exp(loglik - loglik.max(-1, keepdims=True))
    post /= post.sum(-1, keepdims=True)
    mean = post @ d
    var = np.maximum((post * (d - mean[:, None]) ** 2).sum(-1) + step**2 / 12, min_std_px**2)
    agree = post @ (np.abs(d) <= agree_px).astype(np.float64)
    return mean, var, agree


def snap_to_edge(rgb: np.ndarray, ok: np.ndarray, s: np.ndarray, mean: np.ndarray,
                 window_px: float, min_change: float) -> np.ndarray:
    """Each line's edge estimate moved to the strongest nearby colour change (N,);
    ``rgb`` (N, M, 3); see ``refine.edge_snap.snap_to_edge``."""
    M = rgb.shape[1]
    if M < 5:
        return mean
    step = s[1] - s[0]
    diff = rgb[:, 2:] - rgb[:, :-2]
    change = np.sqrt((diff * diff).sum(-1))
    sc = s[1:-1]
    win = np.exp(-0.5 * ((sc - mean[:, None]) / window_px) ** 2)
    score = np.where(ok[:, 2:] & ok[:, :-2], change * win, 0.0)
    j = np.clip(score.argmax(-1), 1, M - 4)
    r = np.arange(len(j))
    g0, g1, g2 = score[r, j - 1], score[r, j], score[r, j + 1]
    curv = g0 - 2.0 * g1 + g2
    frac = np.clip(np.where(curv < -1e-9, 0.5 * (g0 - g2) / np.minimum(curv, -1e-9), 0.0),
                   -0.5, 0.5)
    return np.where(g1 > min_change, sc[j] + frac * step, mean)


@dataclass(frozen=True)
class Lines:
    """Line measurements along a :class:`Contour` (as ``refine.sparse_region.SparseLines``).

    Attributes:
        mean_px, var_px2, agree: (N,) the edge's offset from the model's edge (scaled
            pixels), its variance, the posterior mass within ``agree_px``.
        seen: (N,) bool, the line was usable.
        hist_f, hist_b: (bins^3,) the colour histograms used.
        score: share of the usable contour whose edge is within ``agree_px``.
    """

    mean_px: np.ndarray
    var_px2: np.ndarray
    agree: np.ndarray
    seen: np.ndarray
    hist_f: np.ndarray
    hist_b: np.ndarray
    score: float


def measure_lines(img: np.ndarray, c: Contour, px_scale: float, cfg: RegionConfig,
                  half_len_px: float, hist: tuple | None = None,
                  hist_rate: float = 1.0, occluder_inv_depth: np.ndarray | None = None) -> Lines:
    """Colour model and line measurements along the contour ``c``.

    Args:
        img: (H, W, 3) float RGB in [0, 1] (the region of the frame around the objects;
            ``c`` was projected with intrinsics of that region, scaled).
        px_scale: image pixels per scaled pixel.
        cfg: region settings (lengths in scaled pixels); half_len_px: the lines'.
        hist: optional ``(hist_f, hist_b)`` of earlier frames or measurements, blended
            with this measurement's with weight ``hist_rate`` (tracking); with
            ``hist_rate`` 0 they are used as they are and no colours are sampled.
        occluder_inv_depth: optional (H, W) float32 inverse depth of the nearest other
            object, 0 where none (``refine.occlusion``): samples behind it are not used.
    """
    M = cfg.samples
    s = np.linspace(-half_len_px, half_len_px, M)
    # Sample positions in float32 (what OpenCV reads), in image pixels.
    n = (c.normal * px_scale).astype(np.float32)[:, None, :]
    uv = (c.uv * px_scale).astype(np.float32)[:, None, :]
    pos_l = uv + s.astype(np.float32)[None, :, None] * n
    rgb_l, in_l = sample_bilinear(img, pos_l)
    free_l = _free(occluder_inv_depth, pos_l, c.depth_m)
    if hist is not None and hist_rate == 0:
        h_f, h_b = hist
    else:
        a = np.arange(cfg.gap_px, cfg.band_px, dtype=np.float64) + 0.5
        band = np.concatenate([-a[::-1], a])
        pos_b = uv + band.astype(np.float32)[None, :, None] * n
        rgb_b, in_b = sample_bilinear(img, pos_b)
        in_b = in_b & _free(occluder_inv_depth, pos_b, c.depth_m)
        inner = (band < 0) & (-band <= c.fg_px[:, None])
        outer = (band > 0) & (band <= c.bg_px[:, None])
        idx_b = _bins(rgb_b, cfg.bins).ravel()
        h_f = _histogram(idx_b, (in_b & inner).ravel().astype(np.float64), cfg.bins)
        h_b = _histogram(idx_b, (in_b & outer).ravel().astype(np.float64), cfg.bins)
        if hist is not None:
            h_f = (1 - hist_rate) * hist[0] + hist_rate * h_f
            h_b = (1 - hist_rate) * hist[1] + hist_rate * h_b
    pf = (h_f / (h_f + h_b))[_bins(rgb_l, cfg.bins)]
    # Usable samples: in the image and within the model's unbroken silhouette (inside)
    # or free space (outside), up to the first failure from the edge outwards.
    ctr = M // 2
    within = np.where(s < 0, -s <= c.fg_px[:, None], s <= c.bg_px[:, None])
    good = in_l & free_l & within
    ok = np.concatenate([np.logical_and.accumulate(good[:, ctr - 1::-1], 1)[:, ::-1],
                         (in_l & free_l)[:, ctr:ctr + 1],
                         np.logical_and.accumulate(good[:, ctr + 1:], 1)], 1)
    mean, var, agree = edge_posterior(pf, ok, s, cfg.eps, cfg.min_std_px, cfg.agree_px)
    if cfg.edge_snap_px > 0:
        mean = snap_to_edge(rgb_l, ok, s, mean, cfg.edge_snap_px, cfg.edge_min_change)
    seen = ok[:, ctr]
    agree = np.where(seen, agree, 0.0)
    return Lines(np.where(seen, mean, 0.0), np.where(seen, var, 1e6), agree, seen, h_f, h_b,
                 float(agree.sum() / max(seen.sum(), 1)))


def _free(occ: np.ndarray | None, pos: np.ndarray, depth_m: np.ndarray):
    """(N, M) bool: the samples at ``pos`` (N, M, 2) lie in front of the nearest other
    object (``occ``: its inverse depth, nearest pixel), or True without an occluder map."""
    if occ is None:
        return True
    inv = cv2.remap(occ, pos[..., 0], pos[..., 1], cv2.INTER_NEAREST,
                    borderMode=cv2.BORDER_REPLICATE)
    return inv * depth_m[:, None] < 1.0


def region_solve(img: np.ndarray, K: np.ndarray, T: np.ndarray, va: ViewArrays,
                 px_scale: float, cfg: RegionConfig, schedule, lm_iterations: int = 1,
                 max_step_rad: float = 0.5, min_depth_m: float = 1e-3,
                 occluder_inv_depth: np.ndarray | None = None):
    """Coarse-to-fine region-only refinement of one object (as
    ``refine.sparse_region.sparse_region_solve``): ``(T (4, 4), score)``.

    A fresh colour model at every measurement; ``schedule``: the line half length of each
    measurement (scaled pixels, one scaled pixel = ``px_scale`` image pixels), each
    followed by ``lm_iterations`` LM steps (``track.solve``).
    """
    from .solve import LineResiduals, lm_steps

    K_s = K.copy()
    K_s[:2] /= px_scale
    floor_min = cfg.min_std_px
    score = 0.0
    for half in schedule:
        c = project_contour(va, T, K_s)
        lines = measure_lines(img, c, px_scale, cfg, half,
                              occluder_inv_depth=occluder_inv_depth)
        floor = max(floor_min, cfg.std_fraction * half)
        w = lines.seen * (floor**2 / np.maximum(lines.var_px2, floor**2))
        term = LineResiduals(c.pts_obj, c.uv + lines.mean_px[:, None] * c.normal, c.normal,
                             w * max(cfg.weight, 1e-6), K_s, max(cfg.huber_px, floor),
                             min_depth_m)
        T = lm_steps(T, [term], lm_iterations, max_step_rad=max_step_rad)
        score = lines.score
    return T, score


def match_depth(va: ViewArrays, view: int, T: np.ndarray, depth: np.ndarray, K: np.ndarray,
                gate_m: float, min_depth_m: float = 1e-3):
    """Surface points of ``view`` matched to the depth image (projective association).

    Args:
        T: (4, 4) pose; depth: (H, W) metres, 0 = none; K: (3, 3) its intrinsics.
        gate_m: matches further than this from the predicted depth are dropped.

    Returns:
        ``(pts_obj (n, 3), normals_obj (n, 3), X_cam (n, 3))``: the matched points, their
        normals, and the measured surface point (the pixel's centre back-projected).
    """
    keep = va.surf_valid[view]
    pts, nrm = va.surf_pts[view][keep], va.surf_normals[view][keep]
    pc = pts @ T[:3, :3].T + T[:3, 3]
    z = np.maximum(pc[:, 2], 1e-6)
    f, c = np.array([K[0, 0], K[1, 1]]), K[:2, 2]
    uv_pix = np.round(pc[:, :2] / z[:, None] * f + c)
    H, W = depth.shape
    inside = ((uv_pix[:, 0] >= 0) & (uv_pix[:, 0] < W) & (uv_pix[:, 1] >= 0)
              & (uv_pix[:, 1] < H))
    d = np.zeros(len(pts))
    d[inside] = depth[uv_pix[inside, 1].astype(np.int64), uv_pix[inside, 0].astype(np.int64)]
    ok = (pc[:, 2] > min_depth_m) & (d > 0) & (np.abs(d - pc[:, 2]) < gate_m)
    X = np.concatenate([(uv_pix[ok] - c) / f * d[ok, None], d[ok, None]], 1)
    return pts[ok], nrm[ok], X
