"""Settings and results of the refiner (``refine.refiner``): what a caller sets and gets.

``RefinerConfig`` holds every setting with its documented default, chosen by measurement
(README, "How it works"; docs/benchmarks.md); ``RefineResult`` is one refined object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config_dict import check_off_or_positive, dataclass_from_dict
from ..solver.gauss_newton import SolverConfig
from ..track.covariance import COVARIANCE_INFLATION
from .polish import PolishConfig
from .region import RegionConfig

__all__ = ["MODES", "RefinerConfig", "RefineResult"]

#: The refiner's modes (``RefinerConfig.mode``).
MODES = ("learned", "region", "flow", "gcf-adam")


@dataclass(frozen=True)
class RefinerConfig:
    """Settings of :class:`Refiner` (documented defaults; chosen by measurement, see README).

    Attributes:
        mode: ``"learned"`` (the network's field, with the region modality when
            ``region.weight`` > 0), ``"region"`` (training-free: the region modality alone,
            no network), ``"flow"`` (training-free OpenCV optical flow through the same
            solver) or ``"gcf-adam"`` (the GCF paper's procedure).
        iterations: outer render-and-compare iterations at most.
        field_weight: scale of the learned field's correspondence weights where the
            region modality joins it (RGB). 1 was best measured on real and synthetic
            images alike (0.3 lost 12 points of ADD(-S) on synthetic ones).
        region: the region (silhouette) modality (``refine.region``), which joins the
            field in ``learned`` mode unless ``weight`` is 0; with a depth image it runs
            only when ``region.with_depth``. Its colour model comes from bands 36 px
            wide (``band_px``; the tracker keeps 12), which the render-free lines read
            at 24 offsets per side (``band_samples``): the wider the bands, the less
            the colours depend on where the current pose puts the outline, and the less
            the lines follow the pose. Real images (lmo-dev, Intel Xeon), every offset
            read: bands of 12 / 24 / 36 / 48 px gave ADD(-S)@0.1d 36.9 / 40.6 / 42.0 /
            39.3%, made worse 12.7 / 11.6 / 11.4 / 11.2%; 36 px read at 6 / 12 / 24
            offsets: 37.9 / 40.4 / 41.8% (the time per object grows with the offsets);
            the render-free polish started at the truth ends within ADD(-S)@0.1d for
            49.3% (12 px), 55.0% (24 px). Synthetic RGB (the benchmark): 62.5% (12 px),
            60.5% (36 px, 24 offsets). docs/benchmarks.md, "The release before
            (2026-12-03, sixth)". On the fine lines (8 px and shorter) an edge found
            more than 2 px from the model's counts less (``outlier_px``: a Cauchy
            weight beyond a dead zone), so that a stretch of contour behind an
            occluder the refiner does not know, or against clutter of the object's
            colours, does not drag the pose:
            the polish started at the truth ends within ADD(-S)@0.1d for 59.1% of
            lmo-dev's instances instead of 51.3% (those behind unknown occluders 55.6%
            instead of 36.1%); the whole check 41.8 -> 42.0%, median rotation error
            11.2 -> 10.6 deg, made worse 12.1 -> 9.1% (docs/benchmarks.md, "This
            release (2026-12-03, seventh)").
        region_lead_iterations: with the region modality, the first this many iterations
            run without the network (the silhouette alone, long lines).
        loop_best_iterate: with the region modality, each object leaves the
            render-and-compare iterations at the iterate with the highest region score
            (the coarse pose included) rather than at the last one: where an iteration
            lowered the score, the loop drifted (on real images: the outline dragged over
            an occluder the refiner does not know). Measured on lmo-dev (RGB):
            ADD(-S)@0.1d 42.0 -> 42.6% (grey meshes 41.0 -> 41.7%), synthetic RGB 63.0 ->
            64.0%; one more rendering per object (about 20 ms here).
        keep_coarse_margin: with the region modality, a refinement whose region score
            (contour agreement with this image's colours) at the refined pose does not
            exceed the coarse pose's by this margin, or is below ``keep_coarse_below``, is
            not trusted: the result is the coarse pose, flagged ``diverged`` and
            ``kept_coarse``.
        keep_coarse_below: see ``keep_coarse_margin``.
        depth_prior_weight: with the region modality and no depth image: weight (as that
            of this many one-pixel residuals) of a prior holding the object's distance at
            the coarse pose's. Off by default: it stops the silhouette's distance drift
            on real images, but it also stops the field from correcting the distance where
            the field is right; the region score's gate catches the drifted ones instead.
        region_polish: with the region modality, after the loop: line half lengths (crop
            pixels) of the render-free region measurements (``track.measure.region_solve``,
            from each object's sparse viewpoint model), coarse to fine; () turns it off.
            Many cheap silhouette steps where the loop affords a few rendered ones: on
            real images (lmo-dev) 12 steps took the refined median rotation error from
            14.8 to 10.0 deg before the gate; with the edge snap (``region``), 24 steps
            reach 33.9% ADD(-S)@0.1d where 12 reach 31.8% (36: no better on 272
            instances).
        region_polish_lm: LM iterations after each of those measurements (and the
            consensus's).
        region_max_px_scale: the render-free region steps (polish, consensus, restarts)
            measure in crop pixels (one crop pixel: the zoom-in window's side over
            ``crop_size``), but in pixels no larger than this many image pixels: a
            large object's window is wider than the crop, and measuring its outline at
            the crop's coarser resolution threw precision away. Measured (AMD EPYC, one
            thread) against 0 (the crop's scale, as before): real images (lmo-dev)
            37.9 -> 38.1% ADD(-S)@0.1d, median e_R 10.7 -> 10.3 deg, made worse 13.4%
            both; synthetic RGB 60.0 -> 62.0%, 4.17 -> 4.01 deg. 0 turns it off.
        region_stop_px: the render-free region steps (polish, consensus, restarts) end
            their schedule's final run of equal line lengths at the first step that moves
            no contour point by this many crop pixels (the measure's pixels): the steps
            after it do not settle but wander (the colour model and the edge snap move
            with the pose), and cost time. Started 3 deg and 1% of the distance from the
            truth on real images (lmo-dev, 272 instances), the polish's median rotation
            error went 5.45 -> 4.91 deg with 0.3 against 0 (every step), in 41% fewer
            steps. 0 runs every step.
        consensus_starts: with the region modality, the refined pose is re-solved
            region-only from this many perturbed starts (``consensus_schedule``); when
            they end further than ``consensus_max_spread`` diameters from it (mean over
            surface points), the refinement is not trusted (see ``keep_coarse_margin``).
            0 turns the check off.
        consensus_max_spread, consensus_schedule: see ``consensus_starts``.
        restarts: with the region modality, a refinement the gate rejects is solved again,
            render-free and region-only, from the coarse pose and from this many (0 to 6)
            rotations of it by ``restart_deg`` about the camera axes
            (``refine.restarts``); the best-scoring start that passes the gate with a
            consensus spread below ``restart_max_spread``, near the coarse pose
            (``restart_max_shift``), replaces the coarse pose. 0
            turns it off; it runs only with the polish (``region_polish``) and the
            consensus check (``consensus_starts`` > 0), whose steps it reuses.
        restart_deg, restart_max_spread: see ``restarts``.
        restart_max_shift: a restart's result (``restarts`` and ``restart_loops``) is
            taken only when the object's position moved less than this many diameters
            from the coarse pose: a restart searches around the detection, and one that
            ends further away has mostly locked onto something else. On lmo-dev, of the
            loop restarts' results that pass the gate at a region score of 0.45, those
            that moved 0.5 diameters or more were right (ADD(-S)@0.1d) for 10% and made
            the pose worse for 67%; those that moved less were right for 38% and made it
            worse for 33% (docs/benchmarks.md). Raise it for a detector whose positions
            are often further off than this (in diameters of the object).
        restart_agreed_max_shift: the bound of ``restart_max_shift`` for a loop
            restart's result that the result of another start confirms (within 5 deg
            and 0.1 diameter, ``refine.restarts.confirmed``): two starts that find the
            same pose are evidence for it. 0.4 alone on lmo-dev (offline): 47.4% / 7.86
            deg / 13.5% made worse; with 0.75 for confirmed results 47.9% / 7.78 / 14.1%.
        restart_keep: of an object's starts, only this many, the best by the
            render-free region score once the polish's lines reach their final length,
            are polished to the end, scored with a rendering and checked for consensus
            (7: every start). A speed setting: on real images (lmo-dev) 2 cost half the
            time of 7 per rejected object and lost a point of ADD(-S)@0.1d (36.3% against
            37.5%); 3 did no better than 2.
        restart_loops: for an object still rejected after the restarts, the whole
            refinement (network and region loop, then the polish) runs again from the
            first this many (0 to 6, at most ``restarts``) of the restarts' rotated starts, with the
            occluder map of the refinement; the best-scoring result that passes the gate
            of the main refinement (``keep_coarse_margin``, ``consensus_max_spread``) with
            a region score of at least ``restart_loop_min_score``, near the coarse pose
            (``restart_max_shift``, ``restart_agreed_max_shift``), replaces the coarse
            pose. 0 turns it off. It costs about one refinement per start, for the
            rejected objects only (``refine.restarts``).
        restart_loop_min_score: see ``restart_loops``; it replaces the main gate's
            ``keep_coarse_below`` for these results, which must also stay near the coarse
            pose (``restart_max_shift``). Without that bound, 0.5 reached 45.7%
            ADD(-S)@0.1d on lmo-dev with 16.8% made worse and 0.55 45.1% with 13.4%; with
            it, 0.45 reaches 48.0% with 13.5% (docs/benchmarks.md).
        covariance_inflation: with the region modality, each returned refinement gets a
            pose covariance (``RefineResult.covariance``) from its contour lines
            (``track.covariance``), their standard deviations multiplied by this factor:
            the lines' errors are correlated, so the independent-lines covariance is
            too small. The default is calibrated on real images
            (``track.covariance.COVARIANCE_INFLATION``). 0: no covariance.
        crop_size: side of the square zoom-in crop, pixels (multiple of 8).
        crop_margin: crop side over the projected extent of the object's bounding box.
        gru_iters: recurrent steps per network pass (``None``: the checkpoint's).
        use_depth: add depth residuals when a depth image is given.
        depth_gate_diameters, depth_gate_m: a depth sample joins the solve only within
            ``depth_gate_diameters * diameter + depth_gate_m`` of the point's depth at the
            current pose.
        early_stop_deg, early_stop_mm: an object whose update is below both is done.
        min_score: results scoring below this are flagged ``diverged``.
        max_rotation_jump_deg: a refined rotation further than this from the initial one
            is flagged ``diverged``.
        max_shift_diameters: a refined position further than this many object diameters
            (sideways) or half the initial distance (in depth) is flagged ``diverged``.
        solver: LM settings.
        polish: the RGB-D depth polish after each iteration's solve (``refine.polish``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        cpu_threads: torch's intra-op threads for this process when > 0 (0: torch's
            default). On a 2-core CPU shared with other work, 1 thread refined an object
            in 137 ms and 2 contending threads in 422 ms.
        renderer: renderer backend, see ``render.make_renderer``.
        adam_steps, adam_lr: the ``gcf-adam`` procedure (paper: 1000 updates, lr 0.05).
    """

    mode: str = "learned"
    iterations: int = 4
    field_weight: float = 1.0
    region: RegionConfig = RegionConfig(band_px=36, band_samples=24, outlier_px=2.0)
    region_lead_iterations: int = 0
    loop_best_iterate: bool = True
    keep_coarse_margin: float = 0.0
    keep_coarse_below: float = 0.5
    depth_prior_weight: float = 0.0
    region_polish: tuple = (24.0, 16.0, 16.0, 8.0, 8.0, 8.0) + (6.0,) * 18
    region_polish_lm: int = 2
    region_max_px_scale: float = 1.0
    region_stop_px: float = 0.3
    consensus_starts: int = 3
    consensus_max_spread: float = 0.1
    consensus_schedule: tuple = (16.0, 8.0, 6.0, 6.0, 6.0, 6.0)
    restarts: int = 6
    restart_deg: float = 20.0
    restart_max_spread: float = 0.03
    restart_max_shift: float = 0.4
    restart_agreed_max_shift: float = 0.75
    restart_keep: int = 7
    restart_loops: int = 6
    restart_loop_min_score: float = 0.45
    covariance_inflation: float = COVARIANCE_INFLATION
    crop_size: int = 128
    crop_margin: float = 1.4
    gru_iters: int | None = None
    use_depth: bool = True
    depth_gate_diameters: float = 0.5
    depth_gate_m: float = 0.03
    early_stop_deg: float = 0.05
    early_stop_mm: float = 0.2
    min_score: float = 0.15
    max_rotation_jump_deg: float = 90.0
    max_shift_diameters: float = 1.5
    solver: SolverConfig = SolverConfig()
    polish: PolishConfig = PolishConfig()
    device: str = "auto"
    cpu_threads: int = 0
    renderer: str = "auto"
    adam_steps: int = 1000
    adam_lr: float = 0.05

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if self.crop_size < 32 or self.crop_size % 8:
            raise ValueError(f"crop_size: expected a multiple of 8 >= 32, got {self.crop_size}")
        if self.iterations < 1:
            raise ValueError(f"iterations: expected >= 1, got {self.iterations}")
        for name in ("region_polish", "consensus_schedule"):
            v = tuple(float(x) for x in getattr(self, name))
            if v and min(v) <= 0:
                raise ValueError(f"{name}: expected positive line half lengths, got {v}")
            object.__setattr__(self, name, v)
        if self.consensus_starts < 0 or self.consensus_starts > 6:
            raise ValueError(f"consensus_starts: expected 0 to 6, got {self.consensus_starts}")
        if not 0 <= self.restarts <= 6:
            raise ValueError(f"restarts: expected 0 to 6, got {self.restarts}")
        if not 0 <= self.restart_loops <= 6:
            raise ValueError(f"restart_loops: expected 0 to 6, got {self.restart_loops}")
        if not 0 < self.restart_max_shift <= self.restart_agreed_max_shift:
            raise ValueError("restart_max_shift, restart_agreed_max_shift: expected "
                             "0 < restart_max_shift <= restart_agreed_max_shift (object "
                             f"diameters), got {self.restart_max_shift}, "
                             f"{self.restart_agreed_max_shift}")
        if not 0 <= self.restart_loop_min_score <= 1:
            raise ValueError("restart_loop_min_score: expected in [0, 1], got "
                             f"{self.restart_loop_min_score}")
        if self.restart_keep < 1:
            raise ValueError(f"restart_keep: expected >= 1, got {self.restart_keep}")
        if not 0 < self.restart_deg <= 90:
            raise ValueError(f"restart_deg: expected in (0, 90], got {self.restart_deg}")
        if self.consensus_starts and not self.consensus_schedule:
            raise ValueError("consensus_schedule: empty while consensus_starts > 0")
        check_off_or_positive(self, "covariance_inflation", "region_max_px_scale",
                              "region_stop_px")
        if self.region_polish_lm < 1:
            raise ValueError(f"region_polish_lm: expected >= 1, got {self.region_polish_lm}")

    @classmethod
    def from_dict(cls, d: dict) -> RefinerConfig:
        """Build from a plain dict (YAML, checkpoint); unknown keys raise ``ValueError``."""
        return dataclass_from_dict(
            cls, d, "refiner config",
            nested=(("solver", SolverConfig), ("polish", PolishConfig), ("region", RegionConfig)),
        )


@dataclass(frozen=True)
class RefineResult:
    """The refinement of one object.

    Attributes:
        class_id: registry class of the object.
        T_cam_obj: (4, 4) refined pose (float64).
        T_cam_obj_init: (4, 4) the pose it started from.
        iterates: (n + 1, 4, 4) the initial pose and every iterate.
        score: confidence in [0, 1] of the pose returned. With the region modality (RGB,
            the default): the region score, the share of the visible contour whose edge
            this image's colours put within ``region.agree_px`` of the pose's
            (``refine.region``). Without it: the weighted share of the rendered surface
            whose correspondences agree with the pose solved from them (before the depth
            polish, in RGB-D) within 2 crop pixels. Higher means lower error (see
            README, "Confidence").
        diverged: True when the result must not be trusted; ``reason`` says why. With
            ``kept_coarse`` the pose returned is the coarse one; otherwise a caller can
            keep the initial pose.
        reason: empty, or why ``diverged`` is set.
        mode: ``"rgb"`` or ``"rgbd"``: which residuals the solve used.
        timing_ms: per stage: ``crop``, ``render``, ``network``, ``solve`` (with the
            depth polish), ``total`` (shared stages of a batch are divided evenly among
            its objects).
        iterations: outer iterations run.
        kept_coarse: the refinement was not trusted (``reason``) and ``T_cam_obj`` is
            the coarse pose it started from (``iterates[-1]`` holds the rejected one).
        score_coarse: with the region modality, the region score of the coarse pose
            (``score`` is the refined pose's); else None.
        restarted: the refinement was rejected and one of the restarts
            (``RefinerConfig.restarts``) replaced it: ``T_cam_obj`` comes from a
            region-only solve.
        covariance: (6, 6) covariance of ``T_cam_obj`` (float64), in the order and
            meaning of ROS's ``geometry_msgs/PoseWithCovariance``: the position of the
            object's origin (x, y, z, metres) and a rotation about axes through it
            parallel to the camera's (rx, ry, rz, radians), camera optical frame
            (``track.covariance``). Only with the region modality (RGB) and for a
            refined pose; None otherwise (RGB-D, other modes, ``kept_coarse``: the
            coarse pose's uncertainty is its detector's).
    """

    class_id: str
    T_cam_obj: np.ndarray
    T_cam_obj_init: np.ndarray
    iterates: np.ndarray
    score: float
    diverged: bool
    reason: str
    mode: str
    timing_ms: dict = field(default_factory=dict)
    iterations: int = 0
    kept_coarse: bool = False
    score_coarse: float | None = None
    restarted: bool = False
    covariance: np.ndarray | None = None
