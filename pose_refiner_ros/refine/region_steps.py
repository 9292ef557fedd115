"""The refiner's silhouette steps, shared by its loop, the render-free polish, the
consensus check (``refine.trust``) and the restarts (``refine.restarts``): the sparse
viewpoint models, the occluder map, the render-free region solve, and the rendered region
measurement and score.

A mixin of ``refine.refiner.Refiner`` (it reads the refiner's ``cfg``, ``renderer``,
``registry``, ``device`` and caches): split out so that each module reads in one sitting.
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry.crop import compute_crops, crop_images
from .occlusion import occluder_inv_depth
from .region import region_measure

__all__ = ["RegionSteps"]


class RegionSteps:
    """The silhouette steps of :class:`~pose_refiner_ros.refine.refiner.Refiner`."""

    def viewpoint_model(self, class_id: str):
        """The sparse viewpoint model of ``class_id`` (``refine.viewpoint_model``), loaded
        from the cache or built once."""
        from .viewpoint_model import default_cache_dir, load_or_build

        if class_id not in self._viewpoints:
            vm = load_or_build(self.renderer, self.render_mesh(class_id),
                               self.registry[class_id].diameter_m, default_cache_dir())
            self._viewpoints[class_id] = vm.to(self.device)
        return self._viewpoints[class_id]

    def view_arrays(self, class_id: str):
        """:meth:`viewpoint_model` as the NumPy arrays of ``track.measure.ViewArrays``,
        converted once; the render-free polish, the consensus and the tracker share them."""
        from ..track.measure import ViewArrays

        if class_id not in self._view_arrays:
            self._view_arrays[class_id] = ViewArrays.from_model(self.viewpoint_model(class_id))
        return self._view_arrays[class_id]

    def _occluders(self, img, K, T, meshes, mesh_idx):
        """The occluder map of the objects at ``T`` (``refine.occlusion``), None for one."""
        if T.shape[0] == 1:
            return None
        return occluder_inv_depth(self.renderer, meshes, mesh_idx, K, T, *img.shape[-2:])

    def _sparse(self, img, K, T, class_ids, mesh_idx, corners, schedule, lm=1, occ=None,
                with_score=False):
        """Region-only refinement from the sparse viewpoint models, lines scaled like the
        zoom-in crops (``px_scale`` from the crop at ``T``, at most
        ``region_max_px_scale``), ``lm`` LM iterations per
        measurement; ``occ``: the occluder map (:meth:`_occluders`). One object at a time
        in NumPy (``track.measure.region_solve``, the tracker's measurement): at a few
        thousand samples per object, torch's per-operation overhead cost three times the
        arithmetic. With ``with_score``, also the (B,) render-free region score of each
        object's last measurement."""
        from ..track.measure import region_solve

        cfg = self.cfg
        px_scale, rgb, Kn, Tn, occ_n = self._numpy_inputs(img, K, T, corners, occ)
        out = np.empty_like(Tn)
        scores = np.zeros(len(class_ids))
        for b, c in enumerate(class_ids):
            out[b], scores[b] = region_solve(rgb, Kn[b], Tn[b], self.view_arrays(c), px_scale[b],
                                     cfg.region, schedule, lm, cfg.solver.max_step_rad,
                                     cfg.solver.min_depth_m,
                                     None if occ_n is None else np.ascontiguousarray(occ_n[b]),
                                     stop_px=cfg.region_stop_px)
        out = torch.as_tensor(out, dtype=T.dtype, device=T.device)
        return (out, torch.as_tensor(scores, dtype=T.dtype, device=T.device)) if with_score else out

    def _px_scales(self, K, T, corners) -> list:
        """Per object, image pixels per scaled ("crop") pixel of the render-free steps:
        the zoom-in window's side at ``T`` over ``crop_size``, at most
        ``region_max_px_scale``."""
        cfg = self.cfg
        crop = compute_crops(K, T, corners, cfg.crop_size, cfg.crop_margin)
        px_scale = (crop.box_xyxy[:, 2] - crop.box_xyxy[:, 0]) / cfg.crop_size
        if cfg.region_max_px_scale > 0:  # never coarser than the image (RefinerConfig)
            px_scale = px_scale.clamp_max(cfg.region_max_px_scale)
        return px_scale.tolist()

    def _numpy_image(self, img) -> np.ndarray:
        """(H, W, 3) float32 copy of the (1, 3, H, W) image tensor, converted once per
        image: the polish, the consensus check and the covariance read the same one."""
        if self._np_image is None or self._np_image[0] is not img:
            self._np_image = (img, np.ascontiguousarray(
                img[0].permute(1, 2, 0).detach().cpu().numpy(), np.float32))
        return self._np_image[1]

    def _numpy_inputs(self, img, K, T, corners, occ):
        """What the NumPy steps read: ``(px_scale list, image (H, W, 3), K (B, 3, 3),
        T (B, 4, 4) float64, occluder maps (B, H, W) float32 or None)``."""
        occ_n = None if occ is None else occ[:, 0].detach().float().cpu().numpy()
        return (self._px_scales(K, T, corners), self._numpy_image(img),
                K.detach().double().cpu().numpy(), T.detach().double().cpu().numpy(), occ_n)

    def _covariances(self, img, K, T, class_ids, corners, occ=None) -> list:
        """Per object, the (6, 6) covariance of its pose ``T`` (B, 4, 4) from its contour
        lines at the polish's last line length (``track.covariance``: ROS's order,
        camera frame), or None where too few lines are usable."""
        from ..track.covariance import region_covariance

        cfg = self.cfg
        px_scale, rgb, Kn, Tn, occ_n = self._numpy_inputs(img, K, T, corners, occ)
        half = cfg.region_polish[-1] if cfg.region_polish else cfg.region.half_len_px[-1]
        return [region_covariance(rgb, Kn[b], Tn[b], self.view_arrays(c), px_scale[b],
                                  cfg.region, half, cfg.covariance_inflation,
                                  None if occ_n is None else np.ascontiguousarray(occ_n[b]))
                for b, c in enumerate(class_ids)]

    def _region_measure(self, img, K, T, meshes, mesh_idx, idx, crop, img_crop, frags,
                        half_len_px, with_score, occ=None):
        """``refine.region.region_measure`` for the objects ``idx`` of the image, in their
        crops ``crop`` (``img_crop``, rendered as ``frags``); every object of the image at
        its pose ``T`` (B, 4, 4) occludes the others."""
        ones = torch.ones_like(img[:, :1]).expand(len(idx), -1, -1, -1)
        in_image = crop_images(ones, crop)
        if occ is None:  # the others hide the contour
            occ = self._occluders(img, K, T, meshes, mesh_idx)
        if occ is not None:
            occ = crop_images(occ[idx], crop, mode="nearest")
        return region_measure(img_crop, in_image, frags.mask, frags.xyz_obj, frags.depth_m,
                              self.cfg.region, half_len_px, occ, with_score=with_score)

    def _region_score_at(self, img, K, T, meshes, mesh_idx, corners, diam, occ=None):
        """(B,) region score (``refine.region.region_score``) of the poses ``T``."""
        cfg, S = self.cfg, self.cfg.crop_size
        crop = compute_crops(K, T, corners, S, cfg.crop_margin)
        img_crop = crop_images(img.expand(len(T), -1, -1, -1), crop)
        frags = self.renderer.render(meshes, mesh_idx, crop.K_crop, T, S, S)
        idx = torch.arange(len(T), device=T.device)
        return self._region_measure(img, K, T, meshes, mesh_idx, idx, crop, img_crop, frags,
                                    cfg.region.half_len_px[-1], with_score=True, occ=occ)[2]
