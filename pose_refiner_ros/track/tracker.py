"""Frame-to-frame tracking of refined objects at camera rate, without rendering.

Between detections a grasp planner still wants a pose on every frame; a full
render-and-compare refinement costs hundreds of milliseconds on a CPU. The tracker, in
the style of ICG (Stoiber et al.), moves each object from its last pose with a few
Gauss-Newton steps over

- the region modality along the contour of the object's sparse viewpoint model
  (``refine.sparse_region``: the nearest precomputed view, lines along its normals, this
  image's colours), with a colour model carried from frame to frame (``hist_rate``);
- with a depth image, the depth modality (``refine.sparse_depth``: point-to-plane
  against the measured surface),

no rendering and no network: a few milliseconds per object on one CPU core.

Each result carries the tracking **quality** (the region score of the last measurement:
the share of the visible contour whose edge the image's colours put where the pose
does) and ``lost`` when it falls below ``lost_below``: the caller then re-registers the
object with the full refiner (``refine.Refiner``), from the last pose or a new
detection. The tracker itself never hides a loss.

Example::

    tracker = Tracker(refiner.viewpoint_model, TrackerConfig())
    tracker.reset([(r.class_id, r.T_cam_obj) for r in refined])
    for image in frames:
        for res in tracker.step(image, K):
            res.T_cam_obj, res.quality, res.lost
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
import time

import numpy as np
import torch

from ..config_dict import dataclass_from_dict
from ..geometry.crop import compute_crops
from ..refine.refiner import as_image_tensor
from ..refine.region import RegionConfig
from ..refine.sparse_depth import sparse_depth_term
from ..refine.sparse_region import (
    scaled_intrinsics,
    sparse_contour,
    sparse_line_term,
    sparse_lines,
)
from ..solver.gauss_newton import SolverConfig, gauss_newton_steps

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
        lost_below: a quality below this marks the object ``lost``.
        depth_weight: weight of the depth residuals relative to a contour residual (RGB-D).
        depth_gate_m: depth matches further than this from the prediction are dropped.
        crop_size, crop_margin: the scale lengths are measured in (as the refiner's).
        region: the region modality's settings.
        solver: ``max_step_rad`` and ``min_depth_m`` are used.
    """

    schedule: tuple = (12.0, 8.0, 6.0)
    lm_iterations: int = 1
    hist_rate: float = 0.3
    lost_below: float = 0.3
    depth_weight: float = 1.0
    depth_gate_m: float = 0.03
    crop_size: int = 128
    crop_margin: float = 1.4
    region: RegionConfig = RegionConfig()
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

    @classmethod
    def from_dict(cls, d: dict) -> TrackerConfig:
        return dataclass_from_dict(cls, d, "tracker config",
                                   nested=(("region", RegionConfig), ("solver", SolverConfig)))


@dataclass(frozen=True)
class TrackResult:
    """One object after one tracked frame.

    Attributes:
        class_id: registry class.
        T_cam_obj: (4, 4) float64 tracked pose, metres.
        quality: region score in [0, 1] of the last measurement.
        lost: ``quality < lost_below``: re-register before trusting the pose.
        timing_ms: ``total`` per object (the frame's time divided among its objects).
    """

    class_id: str
    T_cam_obj: np.ndarray
    quality: float
    lost: bool
    timing_ms: dict = field(default_factory=dict)


class Tracker:
    """Tracks a set of objects from frame to frame (module docstring).

    Args:
        viewpoint_model: ``class_id -> ViewpointModel`` on the tracker's device (e.g.
            ``Refiner.viewpoint_model``, which builds or loads the cached model).
        cfg: settings.
        corners: ``class_id -> (8, 3)`` bounding-box corners, object frame, metres (the
            scale of the lines, as the refiner's crops); default: the box of the
            viewpoint model's contour points.
        device: torch device of the state.
    """

    def __init__(self, viewpoint_model: Callable, cfg: TrackerConfig = TrackerConfig(),
                 corners: Callable | None = None, device: str | torch.device = "cpu"):
        self.viewpoint_model = viewpoint_model
        self.cfg = cfg
        self.device = torch.device(device)
        self._corners = corners
        self._corner_cache: dict = {}
        self.class_ids: list = []
        self.T: torch.Tensor | None = None
        self._hist: tuple | None = None

    def reset(self, objects: Sequence[tuple]) -> None:
        """Start tracking ``(class_id, T_cam_obj (4, 4))`` pairs (forgets the colours)."""
        self.class_ids = [c for c, _ in objects]
        self.T = (torch.as_tensor(np.stack([np.asarray(T, np.float64) for _, T in objects]),
                                  dtype=torch.float32, device=self.device)
                  if objects else None)
        self._hist = None
        for c in self.class_ids:
            self.viewpoint_model(c)  # built (or loaded) now, not on the first frame

    def set_pose(self, k: int, T_cam_obj: np.ndarray) -> None:
        """Replace object ``k``'s pose (after a re-registration); keeps its colours."""
        self.T[k] = torch.as_tensor(np.asarray(T_cam_obj), dtype=torch.float32,
                                    device=self.device)

    def keep(self, indices: Sequence[int]) -> None:
        """Go on tracking only the objects ``indices`` (in this order), with their colours."""
        idx = [int(i) for i in indices]
        self.class_ids = [self.class_ids[i] for i in idx]
        if not idx:
            self.T, self._hist = None, None
            return
        sel = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        self.T = self.T[sel]
        if self._hist is not None:
            self._hist = tuple(h[sel] for h in self._hist)

    def _box_corners(self, ids, models) -> torch.Tensor:
        if self._corners is not None:
            for c in self.class_ids:
                if c not in self._corner_cache:
                    # A copy: the registry's arrays are read-only.
                    self._corner_cache[c] = torch.tensor(
                        np.array(self._corners(c), dtype=np.float32), device=self.device)
            return torch.stack([self._corner_cache[c] for c in self.class_ids])
        out = []
        for c in self.class_ids:
            if c not in self._corner_cache:
                p = models[ids.index(c)].pts.reshape(-1, 3)
                lo, hi = p.min(0).values, p.max(0).values
                self._corner_cache[c] = torch.stack(torch.meshgrid(
                    *[torch.stack([lo[i], hi[i]]) for i in range(3)], indexing="ij"),
                    -1).reshape(8, 3).to(self.device)
            out.append(self._corner_cache[c])
        return torch.stack(out)

    def step(self, image, K, depth_m=None) -> list[TrackResult]:
        """Track every object into this frame.

        Args:
            image: (H, W, 3) RGB, uint8 or float in [0, 1] (numpy or torch).
            K: (3, 3) intrinsics, pixels.
            depth_m: optional (H, W) registered depth, metres, 0 = none.
        """
        if self.T is None or not self.class_ids:
            return []
        t0 = time.perf_counter()
        cfg = self.cfg
        B = len(self.class_ids)
        H, W = np.shape(image)[:2]
        Kt = torch.as_tensor(np.asarray(K, np.float64), dtype=torch.float32,
                             device=self.device)[None].expand(B, 3, 3)
        ids = list(dict.fromkeys(self.class_ids))
        models = [self.viewpoint_model(c) for c in ids]
        midx = torch.tensor([ids.index(c) for c in self.class_ids], device=self.device)
        crop = compute_crops(Kt, self.T, self._box_corners(ids, models), cfg.crop_size,
                             cfg.crop_margin)
        px_scale = (crop.box_xyxy[:, 2] - crop.box_xyxy[:, 0]) / cfg.crop_size
        # Only the image around the objects is read: the union of their windows, grown by
        # the longest line and band. Converting the whole frame to float cost more than
        # the measurements (1.5 of 11 ms per 640x480 frame).
        reach = (max(cfg.schedule) + cfg.region.band_px) * px_scale[:, None]
        box = torch.cat([crop.box_xyxy[:, :2] - reach, crop.box_xyxy[:, 2:] + reach], -1)
        x0, y0 = (int(max(0, min(np.floor(box[:, i].min().item()), s - 1)))
                  for i, s in ((0, W), (1, H)))
        x1, y1 = (int(min(s, max(np.ceil(box[:, i].max().item()) + 1, x0 + 1)))
                  for i, s in ((2, W), (3, H)))
        img = as_image_tensor(image[y0:y1, x0:x1], self.device)
        K_roi = Kt.clone()
        K_roi[:, 0, 2] -= x0
        K_roi[:, 1, 2] -= y0
        depth = None
        if depth_m is not None:
            depth = torch.as_tensor(np.asarray(depth_m[y0:y1, x0:x1], np.float32),
                                    device=self.device)
            depth = torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)[None, None]
        Kt = K_roi
        K_s = scaled_intrinsics(Kt, px_scale)
        T = self.T
        hist, new_hist, quality = self._hist, None, None
        for half in cfg.schedule:
            contour = sparse_contour(models, midx, T, K_s)
            lines = sparse_lines(img, contour, px_scale, cfg.region, half, None, hist,
                                 cfg.hist_rate if hist is not None else 1.0)
            if new_hist is None:  # the colours at the frame's starting pose
                new_hist = (lines.hist_f, lines.hist_b)
            terms = [sparse_line_term(contour, lines, K_s, cfg.region, half,
                                      cfg.solver.min_depth_m)]
            if depth is not None and cfg.depth_weight > 0:
                gate = torch.full((B,), cfg.depth_gate_m, device=self.device)
                terms.append(sparse_depth_term(models, midx, contour.view, T, depth, Kt, K_s,
                                               gate, cfg.depth_weight,
                                               min_depth_m=cfg.solver.min_depth_m))
            T = gauss_newton_steps(T, terms, cfg.lm_iterations,
                                   max_step_rad=cfg.solver.max_step_rad)
            quality = lines.score
        # The colour model follows the object: this frame's colours at the tracked pose.
        self._hist = new_hist
        self.T = T
        ms = 1e3 * (time.perf_counter() - t0) / B
        Tn = T.double().cpu().numpy()
        q = quality.float().cpu().numpy()
        return [TrackResult(c, Tn[k], float(q[k]), bool(q[k] < cfg.lost_below) or
                            not np.all(np.isfinite(Tn[k])), {"total": ms})
                for k, c in enumerate(self.class_ids)]
