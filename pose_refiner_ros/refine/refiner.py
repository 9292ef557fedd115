"""The render-and-compare refiner: the public API used by the node, evaluation and benchmark.

For every object, each outer iteration:

1. computes the zoom-in crop around the current pose (``geometry.crop``);
2. renders the mesh in that crop (location field, normals, mask, depth, shading);
3. estimates the correspondence field and its weights (``refine.estimators``);
4. solves for the pose update from the weighted 2D-3D correspondences (and depth
   residuals in RGB-D mode) with robust LM (``solver``);
5. in RGB-D mode, polishes that pose with two rounds of point-to-plane ICP
   (``refine.polish``);

and stops early once no object moves more than ``early_stop_deg`` / ``early_stop_mm``.
All objects of one image are refined in one batch.

Example::

    refiner = Refiner.from_checkpoint("models/refiner.pt", ObjectRegistry.from_yaml(path))
    results = refiner.refine(image_rgb, K, [("mug", T_cam_obj_init)])
    results[0].T_cam_obj, results[0].score, results[0].diverged
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
import time

import numpy as np
import torch

from ..config_dict import dataclass_from_dict
from ..geometry.camera import backproject
from ..geometry.crop import compute_crops, crop_images
from ..geometry.lie import rotation_angle_deg, transform_points
from ..mesh.registry import ObjectRegistry
from ..net.model import CorrespondenceNet
from ..render.base import RenderMesh, make_renderer
from ..render.shading import shade
from ..solver.gauss_newton import SolverConfig, solve_pose
from ..solver.terms import DepthTerm
from .estimators import make_estimator
from .field import correspondences, sample_map
from .occlusion import occluder_inv_depth
from .polish import PassPoints, PolishConfig, polish_pose
from .region import RegionConfig, line_term, region_measure

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
            only when ``region.with_depth``.
        region_lead_iterations: with the region modality, the first this many iterations
            run without the network (the silhouette alone, long lines).
        keep_coarse_margin: with the region modality, a refinement whose region score
            (contour agreement with this image's colours) at the refined pose does not
            exceed the coarse pose's by this margin, or is below ``keep_coarse_below``, is
            not trusted: the result is the coarse pose, flagged ``diverged`` and
            ``kept_coarse``.
        keep_coarse_below: see ``keep_coarse_margin``.
        retry_region, retry_min_score: in ``learned`` mode, a refinement the gate rejects
            gets a second hypothesis: the silhouette alone from the coarse pose, kept when
            its region score reaches ``retry_min_score`` and beats the coarse pose's.
        depth_prior_weight: with the region modality and no depth image: weight (as that
            of this many one-pixel residuals) of a prior holding the object's distance at
            the coarse pose's. Off by default: it stops the silhouette's distance drift
            on real images, but it also stops the field from correcting the distance where
            the field is right; the region score's gate catches the drifted ones instead.
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
    region: RegionConfig = RegionConfig()
    region_lead_iterations: int = 0
    keep_coarse_margin: float = 0.0
    keep_coarse_below: float = 0.5
    retry_region: bool = True
    retry_min_score: float = 0.6
    depth_prior_weight: float = 0.0
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


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device: {device!r} asked for, but this machine has no CUDA device; "
            "use 'auto' or 'cpu'"
        )
    return dev


def render_input(frags, rgb: torch.Tensor, z_centre_m: torch.Tensor, diameter_m: torch.Tensor):
    """Stack the rendering channels the network takes: (B, 8, S, S).

    Args:
        frags: ``render.Fragments`` of a (B, S, S) rendering.
        rgb: (B, S, S, 3) shaded colour in [0, 1].
        z_centre_m: (B,) depth of the object origin at the rendered pose.
        diameter_m: (B,) object diameters.

    Channels: shaded RGB (3), mask (1), camera-frame normals (3), depth relative to the
    object centre in diameters (1); all 0 on the background.
    """
    mask = frags.mask.to(rgb.dtype)
    depth_rel = (frags.depth_m - z_centre_m[:, None, None]) / diameter_m[:, None, None] * mask
    return torch.cat(
        [
            rgb.permute(0, 3, 1, 2),
            mask[:, None],
            frags.normal_cam.permute(0, 3, 1, 2),
            depth_rel[:, None],
        ],
        dim=1,
    )


def as_image_tensor(image, device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB (numpy or torch) or float in [0, 1] -> (1, 3, H, W) float32."""
    t = torch.as_tensor(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if t.dim() != 3 or t.shape[-1] != 3:
        raise ValueError(f"image: expected (H, W, 3) RGB, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError("image: empty")
    t = t.to(device)
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    return t.permute(2, 0, 1)[None].contiguous()


def grid_normals_obj(frags, corr, T) -> torch.Tensor:
    """(B, N, 3) rendered normals at the correspondences' grid points, object frame.

    ``frags.normal_cam`` (B, S, S, 3) is in the camera frame of the pose ``T`` (B, 4, 4)
    it was rendered at; ``R^T n`` takes it to the object frame.
    """
    ui, vi = corr.uv_src[0, :, 0].long(), corr.uv_src[0, :, 1].long()
    return (T[:, None, :3, :3] * frags.normal_cam[:, vi, ui][..., :, None]).sum(-2)


def plane_terms(depth_crop, frags, corr, T, K_crop, gate_m) -> dict:
    """Point-to-plane matches of the correspondences' points (``solve_pose`` keywords).

    Each grid point is matched to the surface measured at the pixel where it is rendered
    now (projective association, as in KinectFusion's ICP), not where the field says it
    is: this pulls the rendered surface onto the measured one independently of the
    field's error. Matches further than ``gate_m`` from the rendered depth are dropped
    (background, occluders, a pose still far off).

    Args:
        depth_crop: (B, 1, S, S) measured depth in the crop, metres; 0 = none.
        frags: the crop's rendering at ``T`` (``normal_cam`` (B, S, S, 3), ``depth_m``).
        corr: the correspondences read from it (grid points ``uv_src`` (B, N, 2)).
        T: (B, 4, 4) the pose it was rendered at.
        K_crop: (B, 3, 3) the crop's intrinsics.
        gate_m: (B, 1) the match gate, metres.
    """
    # The grid points are whole crop pixels, the same for every object.
    ui, vi = corr.uv_src[0, :, 0].long(), corr.uv_src[0, :, 1].long()
    d = depth_crop[:, 0, vi, ui]  # (B, N)
    n_obj = grid_normals_obj(frags, corr, T)
    ok = corr.valid & (d > 0) & ((d - frags.depth_m[:, vi, ui]).abs() < gate_m)
    return dict(plane_target_cam_m=backproject(corr.uv_src, d, K_crop),
                plane_normals_obj=n_obj, plane_weights=ok.to(d.dtype))


class _Timer:
    def __init__(self, device: torch.device):
        self.device = device
        self.ms: dict = {}

    def section(self, name: str):
        timer = self

        class _Section:
            def __enter__(self):
                if timer.device.type == "cuda":
                    torch.cuda.synchronize(timer.device)
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if timer.device.type == "cuda":
                    torch.cuda.synchronize(timer.device)
                timer.ms[name] = timer.ms.get(name, 0.0) + 1e3 * (time.perf_counter() - self.t0)

        return _Section()


class Refiner:
    """Refines coarse 6D poses of registered objects in an RGB (or RGB-D) image.

    Args:
        registry: the registered objects.
        cfg: settings.
        net: the correspondence network (required for ``learned`` and ``gcf-adam``).
    """

    def __init__(
        self,
        registry: ObjectRegistry,
        cfg: RefinerConfig = RefinerConfig(),
        net: CorrespondenceNet | None = None,
    ):
        self.registry = registry
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        self.net = net.to(self.device).eval() if net is not None else None
        if cfg.mode in ("learned", "gcf-adam") and net is None:
            raise ValueError(f"mode {cfg.mode!r} needs a trained model: pass a checkpoint")
        self.renderer = make_renderer(cfg.renderer, self.device)
        if cfg.mode == "region":
            self.estimator = None  # training-free: the region modality alone
        else:
            est_mode = "flow" if cfg.mode == "flow" else "learned"
            kwargs = {"gru_iters": cfg.gru_iters} if est_mode == "learned" else {}
            self.estimator = make_estimator(est_mode, self.net, **kwargs)
        self._meshes: dict = {}

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        registry: ObjectRegistry,
        cfg: RefinerConfig | None = None,
        **overrides,
    ) -> Refiner:
        """Load a network checkpoint (see ``train.checkpoint``) and build a refiner."""
        from ..train.checkpoint import load_checkpoint

        net = load_checkpoint(path)
        cfg = replace(cfg or RefinerConfig(), **overrides)
        return cls(registry, cfg, net)

    # -- helpers -----------------------------------------------------------------------
    def render_mesh(self, class_id: str) -> RenderMesh:
        """The render mesh of ``class_id`` on this refiner's device (built once)."""
        if class_id not in self._meshes:
            if class_id not in self.registry:
                raise KeyError(
                    f"class_id {class_id!r} is not registered; "
                    f"known: {list(self.registry.class_ids)}"
                )
            self._meshes[class_id] = RenderMesh.from_object(self.registry[class_id], self.device)
        return self._meshes[class_id]

    def _object_tensors(self, class_ids: Sequence[str]):
        ids = list(dict.fromkeys(class_ids))
        meshes = [self.render_mesh(c) for c in ids]
        mesh_idx = torch.tensor([ids.index(c) for c in class_ids], device=self.device)
        models = [self.registry[c] for c in class_ids]
        corners = torch.as_tensor(
            np.stack([m.bbox_corners_m for m in models]), dtype=torch.float32, device=self.device
        )
        diam = torch.tensor([m.diameter_m for m in models], dtype=torch.float32, device=self.device)
        return meshes, mesh_idx, corners, diam

    def render_crops(self, meshes, mesh_idx, K_crop, T, size, diam):
        """Render and stack the network's rendering input: returns (fragments, (B, 8, S, S))."""
        frags = self.renderer.render(meshes, mesh_idx, K_crop, T, size, size)
        rgb = shade(frags, meshes, mesh_idx)
        return frags, render_input(frags, rgb, T[:, 2, 3], diam)

    # -- the API -----------------------------------------------------------------------
    def refine(self, image, K, objects: Sequence[tuple], depth_m=None) -> list:
        """Refine every object of one image.

        Args:
            image: (H, W, 3) RGB, uint8 or float in [0, 1], numpy or torch, undistorted
                (see ``CameraModel.rectify``).
            K: (3, 3) intrinsics of ``image``, pixels.
            objects: ``(class_id, T_cam_obj_init (4, 4))`` pairs, metres.
            depth_m: optional (H, W) depth registered to ``image``, metres, 0 = no data.

        Returns:
            One :class:`RefineResult` per object, in order.

        Raises:
            KeyError: an unregistered class id. ValueError: malformed inputs.
        """
        if len(objects) == 0:
            return []
        timer = _Timer(self.device)
        t_start = time.perf_counter()
        img = as_image_tensor(image, self.device)
        H, W = img.shape[-2:]
        K_np = np.array(K, dtype=np.float64)  # a copy: the caller's array may be read-only
        if (
            K_np.shape != (3, 3)
            or not np.all(np.isfinite(K_np))
            or K_np[0, 0] <= 0
            or K_np[1, 1] <= 0
        ):
            raise ValueError(
                "K: expected finite (3, 3) intrinsics with positive focal lengths, "
                f"got {K_np.tolist()}"
            )
        class_ids = [c for c, _ in objects]
        T0 = np.stack([np.asarray(T, dtype=np.float64) for _, T in objects])
        if T0.shape[1:] != (4, 4) or not np.all(np.isfinite(T0)):
            raise ValueError("objects: every initial pose must be a finite (4, 4) matrix")
        depth = None
        if depth_m is not None and self.cfg.use_depth:
            depth = torch.as_tensor(np.asarray(depth_m, dtype=np.float32), device=self.device)
            if tuple(depth.shape) != (H, W):
                raise ValueError(
                    f"depth_m: expected shape {(H, W)} like the image, got {tuple(depth.shape)}"
                )
            depth = torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)[None, None]

        meshes, mesh_idx, corners, diam = self._object_tensors(class_ids)
        B = len(objects)
        K_t = torch.as_tensor(K_np, dtype=torch.float32, device=self.device)[None].expand(B, 3, 3)
        T = torch.as_tensor(T0, dtype=torch.float32, device=self.device)

        if self.cfg.mode == "gcf-adam":
            from .gcf_adam import refine_gcf_adam

            T, iterates, score, n_iter = refine_gcf_adam(
                self, img, K_t, T, meshes, mesh_idx, corners, diam, timer
            )
            region_scores = None
        else:
            T, iterates, score, n_iter, region_scores = self._loop(
                img, depth, K_t, T, meshes, mesh_idx, corners, diam, timer
            )
            if region_scores is not None and self.cfg.mode == "learned" and self.cfg.retry_region:
                T, iterates, score, n_iter, region_scores = self._retry(
                    img, depth, K_t, T0, T, iterates, score, n_iter, region_scores,
                    meshes, mesh_idx, corners, diam, timer)
        total_ms = 1e3 * (time.perf_counter() - t_start)
        timing = {k: v / B for k, v in timer.ms.items()}
        timing["total"] = total_ms / B
        return self._results(
            class_ids,
            T0,
            T,
            iterates,
            score,
            n_iter,
            K_np,
            (H, W),
            diam,
            "rgbd" if depth is not None else "rgb",
            timing,
            region_scores,
        )

    def _trusted(self, region_scores) -> torch.Tensor:
        """(B,) bool: the gate of ``keep_coarse_*`` on (coarse, refined) region scores."""
        r_init, r_final = region_scores
        return (r_final > r_init + self.cfg.keep_coarse_margin) & (
            r_final >= self.cfg.keep_coarse_below)

    def _retry(self, img, depth, K, T0, T, iterates, score, n_iter, region_scores, meshes,
               mesh_idx, corners, diam, timer):
        """Second hypothesis for the refinements the gate rejects: the silhouette alone
        from the coarse pose (no network), kept when it scores at least
        ``retry_min_score`` and above the coarse pose. The other objects stay where the
        first pass put them (they still occlude)."""
        bad = ~self._trusted(region_scores)
        if not bad.any():
            return T, iterates, score, n_iter, region_scores
        T_coarse = torch.as_tensor(T0, dtype=T.dtype, device=T.device)
        T_start = torch.where(bad[:, None, None], T_coarse, T)
        T2, it2, _, n2, (r2_init, r2_final) = self._loop(
            img, depth, K, T_start, meshes, mesh_idx, corners, diam, timer, active=bad,
            region_only=True)
        r_init, r_final = region_scores
        take = bad & (r2_final >= self.cfg.retry_min_score) & (
            r2_final > r_init + self.cfg.keep_coarse_margin)
        T = torch.where(take[:, None, None], T2, T)
        score = torch.where(take, r2_final, score)
        r_final = torch.where(take, r2_final, r_final)
        return T, torch.cat([iterates, it2[:, 1:]], 1), score, n_iter + n2, (r_init, r_final)

    def _loop(self, img, depth, K, T, meshes, mesh_idx, corners, diam, timer, active=None,
              region_only=False):
        cfg, S = self.cfg, self.cfg.crop_size
        B = T.shape[0]
        use_region = region_only or cfg.mode == "region" or (
            cfg.mode == "learned" and cfg.region.weight > 0
            and (depth is None or cfg.region.with_depth))
        # The field's weights are scaled only where the region modality joins it.
        field_weight = cfg.field_weight if use_region else 1.0
        use_field = cfg.mode != "region" and not region_only and field_weight > 0
        iterates = [T.clone()]
        active = (torch.ones(B, dtype=torch.bool, device=self.device) if active is None
                  else active.clone())
        score = torch.zeros(B, device=self.device)
        region_init = torch.zeros(B, device=self.device)
        T0z = T[:, 2, 3].clone()
        n_iter = 0
        for it in range(cfg.iterations):
            idx = active.nonzero()[:, 0]
            n_iter += 1
            with timer.section("crop"):
                crop = compute_crops(K[idx], T[idx], corners[idx], S, cfg.crop_margin)
                img_crop = crop_images(img.expand(len(idx), -1, -1, -1), crop)
                depth_crop = (
                    crop_images(depth.expand(len(idx), -1, -1, -1), crop, mode="nearest")
                    if depth is not None
                    else None
                )
            with timer.section("render"):
                frags, ren = self.render_crops(
                    meshes, mesh_idx[idx], crop.K_crop, T[idx], S, diam[idx]
                )
            with timer.section("network"):
                if use_field and (not use_region or it >= cfg.region_lead_iterations):
                    flow, weight = self.estimator(img_crop, ren)
                    weight = weight * field_weight
                else:  # no field: zero weights keep the grid for the depth terms
                    flow = torch.zeros_like(ren[:, :2])
                    weight = torch.zeros_like(ren[:, :1])
            extra = []
            if use_region:
                with timer.section("region"):
                    contour, lines, r_score = self._region_measure(
                        img, K, T, meshes, mesh_idx, idx, crop, img_crop, frags,
                        cfg.region.half_len(it), with_score=it == 0)
                    extra.append(line_term(contour, lines, crop.K_crop, cfg.region,
                                           cfg.region.half_len(it), cfg.solver.min_depth_m))
                    if it == 0:
                        region_init[idx] = r_score
            if use_region and depth is None and cfg.depth_prior_weight > 0:
                # A depth term on the object origin: its distance stays near the coarse one.
                zero = torch.zeros_like(T[idx, :1, :3])
                extra.append(DepthTerm(zero, T0z[idx, None], torch.ones_like(zero[..., 0]),
                                       crop.K_crop, scale=cfg.depth_prior_weight,
                                       huber=1e6, min_depth_m=cfg.solver.min_depth_m))
            with timer.section("solve"):
                corr = correspondences(frags.xyz_obj, frags.mask, flow, weight)
                d_kw = {}
                if depth_crop is not None:
                    d = sample_map(depth_crop, corr.uv_tgt, S, mode="nearest")[..., 0]
                    # Only depths near the object count: where the field is wrong the
                    # sample is often background, which would drag the pose away.
                    z_now = transform_points(T[idx], corr.pts_obj)[..., 2]
                    gate = cfg.depth_gate_diameters * diam[idx, None] + cfg.depth_gate_m
                    plausible = (d > 0) & ((d - z_now).abs() < gate)
                    d_kw = dict(depth_target_m=d, depth_weights=corr.weight * plausible)
                    if cfg.solver.plane_weight > 0:
                        d_kw.update(plane_terms(depth_crop, frags, corr, T[idx], crop.K_crop, gate))
                res = solve_pose(
                    T[idx], corr.pts_obj, corr.uv_tgt, corr.weight, crop.K_crop, cfg.solver,
                    extra_terms=extra, **d_kw
                )
                T_new = res.T_cam_obj
                if depth is not None and cfg.polish.iterations > 0:
                    points = PassPoints(pts_obj=corr.pts_obj, uv_tgt=corr.uv_tgt,
                                        weight=corr.weight, valid=corr.valid,
                                        K_crop=crop.K_crop,
                                        normals_obj=d_kw.get("plane_normals_obj"))
                    if points.normals_obj is None:  # plane terms off in the loop's solve
                        points = replace(points,
                                         normals_obj=grid_normals_obj(frags, corr, T[idx]))
                    T_new = polish_pose(T_new, points, depth[0, 0], K[idx], diam[idx],
                                        cfg.polish, cfg.solver).T_cam_obj
                if not use_region:  # with it, the score is the region score (below)
                    agree = (res.residual_px < 2.0).float()
                    score[idx] = (corr.weight * agree).sum(-1) / corr.valid.sum(-1).clamp_min(1)
                d_rot = rotation_angle_deg(T_new[:, :3, :3], T[idx, :3, :3])
                d_mm = 1e3 * (T_new[:, :3, 3] - T[idx, :3, 3]).norm(dim=-1)
                T = T.clone()
                T[idx] = T_new
                done = (d_rot < cfg.early_stop_deg) & (d_mm < cfg.early_stop_mm)
                active[idx[done]] = False
            iterates.append(T.clone())
            if not active.any():
                break
        region_scores = None
        if use_region:
            with timer.section("region"):
                region_final = self._region_score_at(img, K, T, meshes, mesh_idx, corners, diam)
            region_scores = (region_init, region_final)
            score = region_final
        return T, torch.stack(iterates, 1), score, n_iter, region_scores

    def _region_measure(self, img, K, T, meshes, mesh_idx, idx, crop, img_crop, frags,
                        half_len_px, with_score):
        """``refine.region.region_measure`` for the objects ``idx`` of the image, in their
        crops ``crop`` (``img_crop``, rendered as ``frags``); every object of the image at
        its pose ``T`` (B, 4, 4) occludes the others."""
        ones = torch.ones_like(img[:, :1]).expand(len(idx), -1, -1, -1)
        in_image = crop_images(ones, crop)
        occ = None
        if T.shape[0] > 1:  # the image's other objects hide parts of the contour
            occ_full = occluder_inv_depth(self.renderer, meshes, mesh_idx, K, T,
                                          *img.shape[-2:])
            occ = crop_images(occ_full[idx], crop, mode="nearest")
        return region_measure(img_crop, in_image, frags.mask, frags.xyz_obj, frags.depth_m,
                              self.cfg.region, half_len_px, occ, with_score=with_score)

    def _region_score_at(self, img, K, T, meshes, mesh_idx, corners, diam):
        """(B,) region score (``refine.region.region_score``) of the poses ``T``."""
        cfg, S = self.cfg, self.cfg.crop_size
        crop = compute_crops(K, T, corners, S, cfg.crop_margin)
        img_crop = crop_images(img.expand(len(T), -1, -1, -1), crop)
        frags = self.renderer.render(meshes, mesh_idx, crop.K_crop, T, S, S)
        idx = torch.arange(len(T), device=T.device)
        return self._region_measure(img, K, T, meshes, mesh_idx, idx, crop, img_crop, frags,
                                    cfg.region.half_len_px[-1], with_score=True)[2]

    def _results(self, class_ids, T0, T, iterates, score, n_iter, K, hw, diam, mode, timing,
                 region_scores=None):
        cfg = self.cfg
        if region_scores is not None:
            trusted = self._trusted(region_scores).cpu().numpy()
            r_init, r_final = (x.float().cpu().numpy() for x in region_scores)
        H, W = hw
        T_np = T.double().cpu().numpy()
        it_np = iterates.double().cpu().numpy()
        score_np = score.float().cpu().numpy().clip(0, 1)
        diam_np = diam.double().cpu().numpy()
        out = []
        for i, cid in enumerate(class_ids):
            reasons = []
            Tn, Ti = T_np[i], T0[i]
            if not np.all(np.isfinite(Tn)):
                reasons.append("non-finite pose")
                Tn = Ti.copy()
            if score_np[i] < cfg.min_score:
                reasons.append(f"score {score_np[i]:.2f} < min_score {cfg.min_score:.2f}")
            z = Tn[2, 3]
            if z <= 0:
                reasons.append("object behind the camera")
            else:
                u, v = (K @ Tn[:3, 3])[:2] / z
                if not (0 <= u < W and 0 <= v < H):
                    reasons.append("object centre left the image")
            cos = (np.trace(Ti[:3, :3].T @ Tn[:3, :3]) - 1) / 2
            jump = np.degrees(np.arccos(np.clip(cos, -1, 1)))
            if jump > cfg.max_rotation_jump_deg:
                reasons.append(f"rotation jumped {jump:.0f} deg")
            dt = Tn[:3, 3] - Ti[:3, 3]
            if np.linalg.norm(dt[:2]) > cfg.max_shift_diameters * diam_np[i] or abs(
                dt[2]
            ) > 0.5 * abs(Ti[2, 3]):
                reasons.append("position jumped implausibly")
            kept_coarse = False
            if region_scores is not None and not trusted[i]:
                reasons.append(f"refinement not trusted (region score {r_init[i]:.2f} -> "
                               f"{r_final[i]:.2f}); kept the coarse pose")
                Tn, kept_coarse = Ti.copy(), True
                score_np[i] = r_init[i]  # the score of the pose returned
            out.append(
                RefineResult(
                    class_id=cid,
                    T_cam_obj=Tn,
                    T_cam_obj_init=Ti,
                    iterates=it_np[i],
                    score=float(score_np[i]),
                    diverged=bool(reasons),
                    reason="; ".join(reasons),
                    mode=mode,
                    timing_ms=dict(timing),
                    iterations=n_iter,
                    kept_coarse=kept_coarse,
                    score_coarse=None if region_scores is None else float(r_init[i]),
                )
            )
        return out
