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
from dataclasses import replace
from pathlib import Path
import time

import numpy as np
import torch

from ..geometry.crop import compute_crops, crop_images
from ..geometry.lie import rotation_angle_deg, transform_points
from ..mesh.registry import ObjectRegistry
from ..net.model import CorrespondenceNet
from ..render.base import RenderMesh, make_renderer
from ..render.shading import shade
from ..solver.gauss_newton import solve_pose
from ..solver.terms import DepthTerm
from .config import MODES, RefinerConfig, RefineResult
from .estimators import make_estimator
from .field import correspondences, sample_map
from .inputs import StageTimer, as_image_tensor, render_input, resolve_device
from .polish import PassPoints, grid_normals_obj, plane_terms, polish_pose
from .region import line_term
from .region_steps import RegionSteps
from .restarts import loop_restarts, restart_rejected
from .trust import consensus_spread, verdicts

__all__ = ["MODES", "RefinerConfig", "RefineResult", "Refiner", "resolve_device",
           "render_input", "as_image_tensor"]

class Refiner(RegionSteps):
    """Refines coarse 6D poses of registered objects in an RGB (or RGB-D) image.

    Args:
        registry: the registered objects.
        cfg: settings.
        net: the correspondence network (required for ``learned`` and ``gcf-adam``).
    """

    def __init__(
        self,
        registry: ObjectRegistry,
        cfg: RefinerConfig | None = None,
        net: CorrespondenceNet | None = None,
    ):
        cfg = cfg or RefinerConfig()
        self.registry = registry
        self.cfg = cfg
        self._view_arrays: dict = {}  # class_id -> track.measure.ViewArrays
        self._np_image = None  # (image tensor, its (H, W, 3) NumPy copy) of the last _sparse
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
        self._viewpoints: dict = {}  # class_id -> ViewpointModel on self.device

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
    def refine(self, image, K, objects: Sequence[tuple], depth_m=None,
               restarts: bool = True) -> list:
        """Refine every object of one image.

        Args:
            image: (H, W, 3) RGB, uint8 or float in [0, 1], numpy or torch, undistorted
                (see ``CameraModel.rectify``).
            K: (3, 3) intrinsics of ``image``, pixels.
            objects: ``(class_id, T_cam_obj_init (4, 4))`` pairs, metres.
            depth_m: optional (H, W) depth registered to ``image``, metres, 0 = no data.
            restarts: False skips the restarts of rejected refinements
                (``RefinerConfig.restarts``) in this call: a tracker's re-registration,
                where a quick "lost" is worth more than a late pose.

        Returns:
            One :class:`RefineResult` per object, in order.

        Raises:
            KeyError: an unregistered class id. ValueError: malformed inputs.
        """
        if len(objects) == 0:
            return []
        timer = StageTimer(self.device)
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

        occ = None  # the occluder map at the current poses, when known
        restarted = None  # (B,) bool: a restart replaced the rejected refinement
        covariances = None  # per object, the (6, 6) covariance of T, or None
        if self.cfg.mode == "gcf-adam":
            from .gcf_adam import refine_gcf_adam

            T, iterates, score, n_iter = refine_gcf_adam(
                self, img, K_t, T, meshes, mesh_idx, corners, diam, timer
            )
            region_scores = None
        else:
            T, iterates, score, n_iter, region_scores = self._loop(
                img, depth, K_t, T, meshes, mesh_idx, corners, diam, timer,
                final_score=not self.cfg.region_polish or self.cfg.loop_best_iterate)
            if region_scores is not None and self.cfg.region_polish:
                with timer.section("polish"):
                    T = self._sparse(img, K_t, T, class_ids, mesh_idx, corners,
                                     self.cfg.region_polish, self.cfg.region_polish_lm,
                                     self._occluders(img, K_t, T, meshes, mesh_idx))
                    iterates = torch.cat([iterates, T[:, None]], 1)
                    # One occluder map at the polished poses serves the score and the
                    # consensus check.
                    occ = self._occluders(img, K_t, T, meshes, mesh_idx)
                    score = self._region_score_at(img, K_t, T, meshes, mesh_idx, corners,
                                                  diam, occ)
                    region_scores = (region_scores[0], score)
            if region_scores is not None and self.cfg.consensus_starts > 0:
                with timer.section("consensus"):
                    spread = consensus_spread(self, img, K_t, T, class_ids, mesh_idx,
                                              corners, meshes, diam, occ)
                region_scores = (*region_scores[:2], spread)
            if (restarts and region_scores is not None and len(region_scores) > 2
                    and self.cfg.restarts and self.cfg.region_polish):
                with timer.section("restarts"):
                    if occ is None:
                        occ = self._occluders(img, K_t, T, meshes, mesh_idx)
                    T, region_scores, restarted = restart_rejected(
                        self, img, K_t, torch.as_tensor(T0, dtype=T.dtype, device=T.device),
                        T, class_ids, mesh_idx, corners, meshes, diam, region_scores, occ)
                    if self.cfg.restart_loops:
                        T, region_scores, looped = loop_restarts(
                            self, img, K_t, torch.as_tensor(T0, dtype=T.dtype, device=T.device),
                            T, class_ids, mesh_idx, corners, meshes, diam, region_scores, occ)
                        restarted = restarted | looped
                    if restarted.any():
                        iterates = torch.cat([iterates, T[:, None]], 1)
                        score = torch.where(restarted, region_scores[1], score)
            if region_scores is not None and self.cfg.covariance_inflation > 0:
                with timer.section("covariance"):
                    if occ is None or (restarted is not None and restarted.any()):
                        occ = self._occluders(img, K_t, T, meshes, mesh_idx)
                    covariances = self._covariances(img, K_t, T, class_ids, corners, occ)
        total_ms = 1e3 * (time.perf_counter() - t_start)
        timing = {k: v / B for k, v in timer.ms.items()}
        timing["total"] = total_ms / B
        return verdicts(
            self.cfg,
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
            restarted,
            covariances,
        )

    def _loop(self, img, depth, K, T, meshes, mesh_idx, corners, diam, timer,
              final_score=True, occ_fixed=None):
        """The render-and-compare iterations. With the region modality the region scores
        of the starting poses and (unless not ``final_score``: a later stage scores its
        own result) of the final ones come back too; with ``loop_best_iterate`` (which
        needs ``final_score``) each object's pose is the iterate with the best region
        score, the coarse pose included. ``occ_fixed``: (B, 1, H, W) occluder maps to use
        instead of the batch's own (restarts: the batch holds several poses of one
        object, which must not hide each other)."""
        cfg, S = self.cfg, self.cfg.crop_size
        B = T.shape[0]
        use_region = cfg.mode == "region" or (
            cfg.mode == "learned" and cfg.region.weight > 0
            and (depth is None or cfg.region.with_depth))
        # The field's weights are scaled only where the region modality joins it.
        field_weight = cfg.field_weight if use_region else 1.0
        use_field = cfg.mode != "region" and field_weight > 0
        iterates = [T.clone()]
        occ = None
        active = torch.ones(B, dtype=torch.bool, device=self.device)
        score = torch.zeros(B, device=self.device)
        region_init = torch.zeros(B, device=self.device)
        keep_best = use_region and final_score and cfg.loop_best_iterate
        best_T, best_score = T.clone(), torch.full((B,), -1.0, device=self.device)
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
                    if it % 2 == 0:
                        # The others hide the contour. Rendering every object of the
                        # image costs as much as the measurement; between two refreshes
                        # the poses move a few pixels.
                        occ = (occ_fixed if occ_fixed is not None else
                               self._occluders(img, K, T, meshes, mesh_idx))
                    contour, lines, r_score = self._region_measure(
                        img, K, T, meshes, mesh_idx, idx, crop, img_crop, frags,
                        cfg.region.half_len(it), with_score=it == 0 or keep_best, occ=occ)
                    extra.append(line_term(contour, lines, crop.K_crop, cfg.region,
                                           cfg.region.half_len(it), cfg.solver.min_depth_m))
                    if it == 0:
                        region_init[idx] = r_score
                    if keep_best:  # the score of the pose this iteration starts from
                        up = r_score > best_score[idx]
                        best_score[idx[up]] = r_score[up]
                        best_T[idx[up]] = T[idx[up]]
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
            region_final = torch.zeros_like(region_init)
            if final_score:
                with timer.section("region"):
                    region_final = self._region_score_at(img, K, T, meshes, mesh_idx,
                                                         corners, diam, occ_fixed)
            if keep_best:
                # Where an earlier iterate scored higher than the last, the loop drifted
                # (on real images: dragged over an occluder the refiner does not know).
                back = best_score > region_final
                if back.any():
                    T = torch.where(back[:, None, None], best_T, T)
                    region_final = torch.where(back, best_score, region_final)
                    iterates.append(T.clone())
            region_scores = (region_init, region_final)
            score = region_final
        return T, torch.stack(iterates, 1), score, n_iter, region_scores
