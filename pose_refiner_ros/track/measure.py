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
measurement and Gauss-Newton step in torch, nearly all of it dispatch), and so was
NumPy's (1.9 ms per measurement): the lines are read in one compiled loop
(``track.line_kernel``). The arithmetic is the same, sample for sample
(``test/track/test_measure.py`` checks it against the torch modality).

Frames and units: poses ``T_cam_obj`` (4, 4) map object-frame metres to the camera's
optical frame; image positions are pixels with the centre of the top-left pixel at
(0, 0) (as ``torch.nn.functional.grid_sample`` with ``align_corners=False`` reads them);
lengths along lines are scaled pixels unless named ``_m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..refine.region import RegionConfig
from .line_kernel import contour_projection, line_measurements, moved_px

__all__ = ["ViewArrays", "Contour", "Lines", "project_contour", "measure_lines",
           "region_solve", "match_depth", "compile_kernels"]


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
    """Nearest view's contour at pose ``T`` (4, 4) in the scaled image of ``K_s`` (3, 3)
    (the arithmetic in ``track.line_kernel.contour_projection``)."""
    view = va.nearest_view(T)
    idx, uv, n_uv, fg, bg, z = contour_projection(
        va.pts[view], va.normals[view], va.valid[view], va.fg_m[view], va.bg_m[view],
        np.ascontiguousarray(T, np.float64), np.ascontiguousarray(K_s, np.float64), 1e-3)
    return Contour(va.pts[view][idx], uv, n_uv, fg, bg, z, view)


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
    s = np.linspace(-half_len_px, half_len_px, cfg.samples)
    a = cfg.band_offsets()
    band = np.concatenate([-a[::-1], a])
    occ = (_NO_MAP if occluder_inv_depth is None
           else np.ascontiguousarray(occluder_inv_depth, np.float32))
    earlier = _NO_HIST if hist is None else np.ascontiguousarray(np.stack(hist), np.float64)
    reuse = hist is not None and hist_rate == 0  # the earlier colours as they are
    mean, var, agree, seen, h_f, h_b = line_measurements(
        np.ascontiguousarray(img, np.float32), (c.uv * px_scale).astype(np.float32),
        (c.normal * px_scale).astype(np.float32), s,
        band, c.fg_px, c.bg_px, c.depth_m, occ, earlier, float(hist_rate), not reuse,
        cfg.bins, cfg.eps, cfg.min_std_px, cfg.agree_px, cfg.edge_snap_px,
        cfg.edge_min_change)
    return Lines(mean, var, agree, seen, h_f, h_b, float(agree.sum() / max(seen.sum(), 1)))


def compile_kernels() -> float:
    """Compile (first run on a machine, about 10 s here) or load from Numba's cache
    (about 1 s) the compiled loops of the measurements and the solve, so that the first
    tracked frame or refinement does not wait for them; returns the seconds it took."""
    import time

    from .solve_kernel import line_normal_equations, lm_candidate, point_normal_equations

    t0 = time.perf_counter()
    one = np.ones(2)
    line_measurements(np.zeros((4, 4, 3), np.float32), np.full((2, 2), 2.0, np.float32),
                      np.ones((2, 2), np.float32),
                      np.linspace(-2.0, 2.0, 5), np.array([-1.5, 1.5]), one, one, one,
                      _NO_MAP, _NO_HIST, 1.0, True, 4, 0.1, 0.5, 1.5, 2.0, 0.05)
    line_normal_equations(np.zeros((2, 3)), np.zeros((2, 2)), np.ones((2, 2)), one,
                          np.eye(3), 2.0, 1e-3, np.eye(4), True)
    point_normal_equations(np.zeros((2, 3)), np.zeros((2, 2)), one, np.eye(3), 2.0, 1e-3,
                           np.eye(4), True)
    lm_candidate(np.eye(6), np.zeros(6), 1e-3, 0.5, np.eye(4), True)
    contour_projection(np.zeros((2, 3)), np.ones((2, 3)), np.ones(2, np.bool_), one, one,
                       np.eye(4), np.eye(3), 1e-3)
    moved_px(np.zeros((2, 3)), np.eye(4), np.eye(4), np.eye(3))
    return time.perf_counter() - t0


_NO_MAP = np.zeros((0, 0), np.float32)  # no occluder map (one compiled signature)
_NO_HIST = np.zeros((0, 0))  # no earlier colours


def region_solve(img: np.ndarray, K: np.ndarray, T: np.ndarray, va: ViewArrays,
                 px_scale: float, cfg: RegionConfig, schedule, lm_iterations: int = 1,
                 max_step_rad: float = 0.5, min_depth_m: float = 1e-3,
                 occluder_inv_depth: np.ndarray | None = None, stop_px: float = 0.0):
    """Coarse-to-fine region-only refinement of one object (as
    ``refine.sparse_region.sparse_region_solve``): ``(T (4, 4), score)``.

    A fresh colour model at every measurement; ``schedule``: the line half length of each
    measurement (scaled pixels, one scaled pixel = ``px_scale`` image pixels), each
    followed by ``lm_iterations`` LM steps (``track.solve``). ``stop_px`` > 0: within the
    schedule's final run of equal lengths, the first step that moves no contour point by
    this many scaled pixels is the last.
    """
    from .solve import LineResiduals, lm_steps

    K_s = K.copy()
    K_s[:2] /= px_scale
    score = 0.0
    schedule = tuple(schedule)
    final_run = len(schedule) - 1  # index of the first of the final run of equal lengths
    while final_run > 0 and schedule[final_run - 1] == schedule[-1]:
        final_run -= 1
    for i, half in enumerate(schedule):
        c = project_contour(va, T, K_s)
        lines = measure_lines(img, c, px_scale, cfg, half,
                              occluder_inv_depth=occluder_inv_depth)
        w, huber = cfg.line_weights(lines.mean_px, lines.var_px2, lines.seen, half)
        term = LineResiduals(c.pts_obj, c.uv + lines.mean_px[:, None] * c.normal, c.normal,
                             w * max(cfg.weight, 1e-6), K_s, huber, min_depth_m)
        T_prev = T
        T = lm_steps(T, [term], lm_iterations, max_step_rad=max_step_rad)
        score = lines.score
        # In the schedule's last run of equal lengths, a step that moved no contour point
        # by ``stop_px`` ends it: the rest would only wander (RefinerConfig.region_stop_px).
        if stop_px > 0 and i >= final_run and _moved_px(c.pts_obj, T_prev, T, K_s) < stop_px:
            break
    return T, score


def _moved_px(pts: np.ndarray, A: np.ndarray, B: np.ndarray, K: np.ndarray) -> float:
    """Largest image motion (pixels of ``K``) of the points ``pts`` (N, 3), object
    frame, from pose ``A`` to pose ``B``; inf when one is behind the camera
    (``track.line_kernel.moved_px``)."""
    f64 = [np.ascontiguousarray(x, np.float64) for x in (pts, A, B, K)]
    return float(moved_px(*f64))


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
