"""Frame-to-frame tracking of refined objects at camera rate, without rendering.

Between detections a grasp planner still wants a pose on every frame; a full
render-and-compare refinement costs hundreds of milliseconds on a CPU. The tracker, in
the style of ICG (Stoiber et al.), moves each object from its last pose with a few
Gauss-Newton steps over

- the region modality along the contour of the object's sparse viewpoint model (the
  nearest precomputed view, lines along its normals, this image's colours; the
  refiner's render-free modality ``refine.sparse_region``), with a colour model carried
  from frame to frame (``hist_rate``);
- the texture modality (``track.texture``): corners inside the object followed from
  the previous frame by optical flow, lifted onto the surface at the previous pose;
- with a depth image, the depth modality (point-to-plane against the measured surface,
  as ``refine.sparse_depth``),

no rendering and no network. The measurements (``track.measure``) and the solve
(``track.solve``) are written in NumPy, one object at a time: at this size torch's
per-operation overhead was most of the cost.

Each result carries the tracking **quality** (the region score of the last measurement:
the share of the visible contour whose edge the image's colours put where the pose
does) and ``lost`` when it falls below ``lost_below``: the caller then re-registers the
object with the full refiner (``refine.Refiner``), from the last pose or a new
detection. The tracker itself never hides a loss.

Example::

    tracker = Tracker(refiner.view_arrays, TrackerConfig())
    tracker.reset([(r.class_id, r.T_cam_obj) for r in refined])
    for image in frames:
        for res in tracker.step(image, K):
            res.T_cam_obj, res.quality, res.lost
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
import time

import cv2
import numpy as np

from ..config_dict import check_off_or_positive, dataclass_from_dict
from ..refine.region import RegionConfig
from ..solver.gauss_newton import SolverConfig
from .covariance import COVARIANCE_INFLATION, covariance_from_lines
from .measure import ViewArrays, match_depth, measure_lines, project_contour
from .solve import LineResiduals, PlaneResiduals, PointResiduals, lm_steps
from .texture import TextureConfig, follow_surface

__all__ = ["TrackerConfig", "TrackResult", "Tracker"]


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of :class:`Tracker` (lengths in crop pixels, see ``refine.sparse_region``).

    Attributes:
        schedule: line half length of each measurement per frame; each measurement is
            followed by ``lm_iterations`` Gauss-Newton steps.
        lm_iterations: Gauss-Newton steps per measurement.
        hist_rate: weight of this frame's colours in the colour model (1: this frame
            only; lower: carried over from earlier frames, steadier under occlusion).
            A colour model drawn from bands placed by the pose partly follows the pose
            (docs/benchmarks.md, "After the fourth release"); carried longer, it follows
            it less. RGB ADD(-S)@0.1d on 8 tracking sequences (AMD EPYC), re-registrations
            landing 9 frames later: 0.6 47.7%, 0.3 51.0%, 0.15 55.0%, 0.05 56.7% (more frames
            lost: 159 against 110); 6 frames later: 0.3 54.2%, 0.15 57.1%.
        lost_below: a quality below this marks the object ``lost``.
        reregister_below: without a depth image, a quality below this (at least
            ``lost_below``) asks for a re-registration (``TrackResult.reregister``): the
            caller refines the object fully, and keeps the tracked pose when that is not
            confident, unless lost. It corrects RGB's drift along the viewing ray; with
            depth, which holds that distance, only lost objects ask (measured on 4
            tracking sequences: RGB-D 95.6% ADD(-S)@0.1d so, 90.5% when RGB-D tracks were
            re-registered below 0.8 too).
        reregister_sigma: without a depth image, an object whose covariance
            (``covariance_inflation``) claims a distance standard deviation above this
            many object sizes (the diagonal of its bounding box) asks for a
            re-registration too, whatever its quality; 0: off. On the tracking
            benchmark the claimed deviation told failing frames from good ones better
            than the quality (AUC 0.91 against 0.86; 0.87 among frames of quality 0.8 or
            more, which the quality cannot flag); with 0.15, RGB went 66.5 -> 69.4% on
            the benchmark's four sequences and 30.4 -> 34.6% on four others (fixed
            re-registration latency; 0.1: 67.8%, more re-registrations).
        depth_weight: weight of the depth residuals relative to a contour residual (RGB-D).
        depth_gate_m: depth matches further than this from the prediction are dropped.
        crop_size, crop_margin: the scale lengths are measured in (as the refiner's).
        covariance_inflation: without depth, each tracked pose gets a covariance
            (``TrackResult.covariance``, ``track.covariance``) from the frame's last
            line measurement, with this factor on its standard deviations (the
            refiner's, calibrated on real images); 0: none.
        region: the region modality's settings.
        texture: the texture modality's (``track.texture``; RGB and RGB-D).
        solver: ``max_step_rad`` and ``min_depth_m`` are used.
    """

    schedule: tuple = (12.0, 8.0, 6.0)
    lm_iterations: int = 1
    hist_rate: float = 0.15
    lost_below: float = 0.3
    reregister_below: float = 0.8
    reregister_sigma: float = 0.15
    depth_weight: float = 1.0
    depth_gate_m: float = 0.03
    crop_size: int = 128
    crop_margin: float = 1.4
    covariance_inflation: float = COVARIANCE_INFLATION
    region: RegionConfig = RegionConfig()
    texture: TextureConfig = TextureConfig()
    solver: SolverConfig = SolverConfig()

    def __post_init__(self):
        sched = tuple(float(x) for x in self.schedule)
        if not sched or min(sched) <= 0:
            raise ValueError(f"tracker.schedule: expected positive lengths, got {sched}")
        object.__setattr__(self, "schedule", sched)
        if self.lm_iterations < 1:
            raise ValueError(f"tracker.lm_iterations: expected >= 1, got {self.lm_iterations}")
        if not 0 < self.hist_rate <= 1:
            raise ValueError(f"tracker.hist_rate: expected in (0, 1], got {self.hist_rate}")
        if not 0 <= self.lost_below <= 1:
            raise ValueError(f"tracker.lost_below: expected in [0, 1], got {self.lost_below}")
        check_off_or_positive(self, "covariance_inflation", "reregister_sigma",
                              prefix="tracker.")
        if not self.lost_below <= self.reregister_below <= 1:
            raise ValueError("tracker.reregister_below: expected in [lost_below, 1], got "
                             f"{self.reregister_below} (lost_below {self.lost_below})")

    @classmethod
    def from_dict(cls, d: dict) -> TrackerConfig:
        return dataclass_from_dict(cls, d, "tracker config",
                                   nested=(("region", RegionConfig), ("texture", TextureConfig),
                                           ("solver", SolverConfig)))


@dataclass(frozen=True)
class TrackResult:
    """One object after one tracked frame.

    Attributes:
        class_id: registry class.
        T_cam_obj: (4, 4) float64 tracked pose, metres.
        quality: region score in [0, 1] of the last measurement.
        lost: ``quality < lost_below`` (or a pose that is not finite): re-register before
            trusting the pose.
        reregister: lost, or (without depth) ``quality < reregister_below``: a full
            refinement should check the pose.
        timing_ms: ``total`` per object (the frame's time divided among its objects).
        covariance: (6, 6) covariance of ``T_cam_obj`` in ROS's order (as
            ``RefineResult.covariance``), from the frame's last line measurement; None
            with depth (the depth residuals are not in it) or too few usable lines.
    """

    class_id: str
    T_cam_obj: np.ndarray
    quality: float
    lost: bool
    reregister: bool = False
    timing_ms: dict = field(default_factory=dict)
    covariance: np.ndarray | None = None


class Tracker:
    """Tracks a set of objects from frame to frame (module docstring).

    Args:
        viewpoint_model: ``class_id -> ViewpointModel`` or ``ViewArrays`` (e.g.
            ``Refiner.view_arrays``, which builds or loads the cached model and shares
            its NumPy arrays with the refiner's polish); read once per class.
        cfg: settings.
        corners: ``class_id -> (8, 3)`` bounding-box corners, object frame, metres (the
            scale of the lines, as the refiner's crops); default: the box of the
            viewpoint model's contour points.
        device: accepted for the callers' symmetry with the refiner; the tracker runs on
            the CPU in NumPy (``track.measure``: a few thousand samples per object,
            where a GPU's launch overhead would exceed the work).
    """

    def __init__(self, viewpoint_model: Callable, cfg: TrackerConfig = TrackerConfig(),
                 corners: Callable | None = None, device=None):
        self.viewpoint_model = viewpoint_model
        self.cfg = cfg
        self._corners = corners
        self._arrays: dict = {}
        self._corner_cache: dict = {}
        self.class_ids: list = []
        self.T: np.ndarray | None = None  # (B, 4, 4) float64
        self._hist: list = []  # per object: (hist_f, hist_b) or None
        self._grey_prev: np.ndarray | None = None  # the previous frame, grey, for the texture
        self.resets = 0  # :meth:`reset` calls: a correction from before one no longer applies

    def _model(self, class_id: str) -> ViewArrays:
        if class_id not in self._arrays:
            self._arrays[class_id] = ViewArrays.from_model(self.viewpoint_model(class_id))
        return self._arrays[class_id]

    def _box(self, class_id: str) -> np.ndarray:
        if class_id not in self._corner_cache:
            if self._corners is not None:
                c = np.array(self._corners(class_id), dtype=np.float64).reshape(-1, 3)
            else:
                va = self._model(class_id)
                p = va.pts[va.valid]
                lo, hi = p.min(0), p.max(0)
                c = np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1).T
            self._corner_cache[class_id] = c
        return self._corner_cache[class_id]

    def reset(self, objects: Sequence[tuple]) -> None:
        """Start tracking ``(class_id, T_cam_obj (4, 4))`` pairs (forgets the colours)."""
        self.class_ids = [c for c, _ in objects]
        self.T = (np.stack([np.asarray(T, np.float64) for _, T in objects])
                  if objects else None)
        self._hist = [None] * len(self.class_ids)
        self._grey_prev = None
        self.resets += 1
        for c in self.class_ids:
            self._model(c)  # built (or loaded) now, not on the first frame

    def set_pose(self, k: int, T_cam_obj: np.ndarray) -> None:
        """Replace object ``k``'s pose (after a re-registration); keeps its colours."""
        self.T[k] = np.asarray(T_cam_obj, np.float64)

    def correct(self, k: int, T_then: np.ndarray, T_registered: np.ndarray) -> None:
        """Apply a re-registration that finished frames after the frame it refined.

        ``T_then``: object ``k``'s tracked pose in that frame; ``T_registered``: the
        refiner's pose for it. The motion tracked since then is kept and the object-frame
        correction ``inv(T_then) @ T_registered`` applied: the pose becomes
        ``T_now @ inv(T_then) @ T_registered`` (the registered pose moved as the track
        moved). Keeps the colours.
        """
        C = np.linalg.inv(np.asarray(T_then, np.float64)) @ np.asarray(T_registered, np.float64)
        self.T[k] = self.T[k] @ C

    def keep(self, indices: Sequence[int]) -> None:
        """Go on tracking only the objects ``indices`` (in this order), with their colours."""
        idx = [int(i) for i in indices]
        self.class_ids = [self.class_ids[i] for i in idx]
        self._hist = [self._hist[i] for i in idx]
        self.T = self.T[idx] if idx else None

    def _size(self, class_id: str) -> float:
        """The object's size: its bounding box's diagonal, metres."""
        box = self._box(class_id)
        return float(np.linalg.norm(box.max(0) - box.min(0)))

    def _window(self, class_id: str, T: np.ndarray, K: np.ndarray):
        """``(px_scale, extent)``: image pixels per crop pixel, from the refiner's zoom-in
        window at ``T`` (``geometry.crop.compute_crops``: the projected box's larger side
        times the margin, at least 8 pixels, over ``crop_size``), and the projected box's
        ``(lo (2,), hi (2,))`` in pixels, None when it is behind the camera."""
        pc = self._box(class_id) @ T[:3, :3].T + T[:3, 3]
        pc = pc[pc[:, 2] > 1e-3]
        if not len(pc):
            return max(2.0 * max(K[0, 2], K[1, 2]) + 1.0, 8.0) / self.cfg.crop_size, None
        uv = pc[:, :2] / pc[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
        lo, hi = uv.min(0), uv.max(0)
        side = float((hi - lo).max()) * self.cfg.crop_margin
        return max(side, 8.0) / self.cfg.crop_size, (lo, hi)

    def step(self, image, K, depth_m=None) -> list[TrackResult]:
        """Track every object into this frame.

        Args:
            image: (H, W, 3) RGB, uint8 or float in [0, 1] (numpy, or torch on the CPU).
            K: (3, 3) intrinsics, pixels.
            depth_m: optional (H, W) registered depth, metres, 0 = none.
        """
        if self.T is None or not self.class_ids:
            return []
        t0 = time.perf_counter()
        cfg = self.cfg
        image = np.asarray(image)
        K = np.asarray(K, np.float64)
        H, W = image.shape[:2]
        windows = [self._window(c, T, K) for c, T in zip(self.class_ids, self.T, strict=True)]
        scales = [sc for sc, _ in windows]
        # Only the image around the objects is read: the union of their windows, grown by
        # the longest line and band (converting a whole 640x480 frame to float costs
        # more than an object's measurements).
        lo, hi = np.array([W, H], float), np.zeros(2)
        for sc, extent in windows:
            if extent is None:
                lo, hi = np.zeros(2), np.array([W, H], float)
                continue
            b_lo, b_hi = extent
            reach = (max(cfg.schedule) + cfg.region.band_px) * sc + 0.5 * (
                cfg.crop_margin * (b_hi - b_lo).max())
            ctr = 0.5 * (b_lo + b_hi)
            lo, hi = np.minimum(lo, ctr - reach), np.maximum(hi, ctr + reach)
        x0, y0 = (int(np.clip(np.floor(lo[i]), 0, s - 1)) for i, s in ((0, W), (1, H)))
        x1, y1 = (int(np.clip(np.ceil(hi[i]) + 1, v + 1, s))
                  for i, s, v in ((0, W, x0), (1, H, y0)))
        roi = image[y0:y1, x0:x1]
        img = np.ascontiguousarray(roi, dtype=np.float32)  # pixel-interleaved for OpenCV
        if roi.dtype == np.uint8:
            img /= 255.0
        K_roi = K.copy()
        K_roi[0, 2] -= x0
        K_roi[1, 2] -= y0
        depth = None
        if depth_m is not None:
            depth = np.nan_to_num(np.asarray(depth_m[y0:y1, x0:x1], np.float64),
                                  nan=0.0, posinf=0.0, neginf=0.0)
        grey = None
        if cfg.texture.weight > 0:
            grey = cv2.cvtColor(image if image.dtype == np.uint8 else
                                (np.clip(image, 0, 1) * 255).astype(np.uint8),
                                cv2.COLOR_RGB2GRAY)
            if self._grey_prev is not None and self._grey_prev.shape != grey.shape:
                self._grey_prev = None
        results = []
        for k, c in enumerate(self.class_ids):
            followed = None
            if grey is not None and self._grey_prev is not None:
                p, uv = follow_surface(self._model(c), self.T[k], K, self._grey_prev, grey,
                                       cfg.texture)
                followed = (p, (uv - [x0, y0]) / scales[k])
            T, q, hist, cov = self._track_one(c, self.T[k], self._hist[k], img, K_roi,
                                              scales[k], depth, followed)
            self.T[k], self._hist[k] = T, hist
            results.append((c, T.copy(), q, cov))
        self._grey_prev = grey
        ms = 1e3 * (time.perf_counter() - t0) / len(self.class_ids)
        out = []
        for c, T, q, cov in results:
            lost = bool(q < cfg.lost_below) or not np.all(np.isfinite(T))
            drifting = depth_m is None and (q < cfg.reregister_below or (
                cfg.reregister_sigma > 0 and cov is not None
                and np.sqrt(cov[2, 2]) > cfg.reregister_sigma * self._size(c)))
            out.append(TrackResult(c, T, q, lost, lost or bool(drifting), {"total": ms},
                                   None if lost else cov))
        return out

    def _track_one(self, class_id, T, hist, img, K, px_scale, depth, followed=None):
        """One object's measurements and steps; returns ``(T, quality, hist, covariance)``,
        ``hist`` being this frame's colours at the frame's starting pose (the colour model
        follows the object), ``covariance`` the pose's (RGB only) or None. ``followed``:
        the texture modality's ``(pts_obj (n, 3), uv (n, 2))``, scaled pixels of the
        region ``img``, or None."""
        cfg, rc = self.cfg, self.cfg.region
        va = self._model(class_id)
        K_s = K.copy()
        K_s[:2] /= px_scale
        new_hist, quality = None, 0.0
        for half in cfg.schedule:
            contour = project_contour(va, T, K_s)
            lines = measure_lines(img, contour, px_scale, rc, half, hist,
                                  cfg.hist_rate if hist is not None else 1.0)
            if new_hist is None:
                new_hist = (lines.hist_f, lines.hist_b)
            w, huber = rc.line_weights(lines.mean_px, lines.var_px2, lines.seen, half)
            terms = [LineResiduals(contour.pts_obj,
                                   contour.uv + lines.mean_px[:, None] * contour.normal,
                                   contour.normal, w * max(rc.weight, 1e-6), K_s, huber,
                                   cfg.solver.min_depth_m)]
            if depth is not None and cfg.depth_weight > 0:
                p, n, X = match_depth(va, contour.view, T, depth, K, cfg.depth_gate_m,
                                      cfg.solver.min_depth_m)
                terms.append(PlaneResiduals(p, n, X, np.full(len(p), cfg.depth_weight), K_s,
                                            4.0, cfg.solver.min_depth_m))
            if followed is not None and len(followed[0]):
                terms.append(PointResiduals(followed[0], followed[1],
                                            np.full(len(followed[0]), cfg.texture.weight),
                                            K_s, cfg.texture.huber_px, cfg.solver.min_depth_m))
            T = lm_steps(T, terms, cfg.lm_iterations, max_step_rad=cfg.solver.max_step_rad)
            quality = lines.score
        cov = None
        if depth is None and cfg.covariance_inflation > 0 and np.all(np.isfinite(T)):
            # The last measurement's lines, at the pose they moved it to: no extra reads.
            cov = covariance_from_lines(contour, lines, K_s, T, rc.min_std_px,
                                        cfg.covariance_inflation)
        return T, quality, new_hist, cov
