"""The refiner's training crops (:func:`make_training_batch`); training streams them
with ``train.stream.TrainStream``.

Each sample picks a model, a ground-truth pose ``T_gt`` and intrinsics ``K``, draws
``T_init`` by the protocol's perturbation
(:func:`~pose_refiner_ros.data.perturb.perturb_pose`), takes the zoom-in window of
``T_init`` (:func:`~pose_refiner_ros.geometry.crop.compute_crops` on the model's
bounding-box corners) and renders the object at ``T_gt`` *directly into the crop* with
``K_crop`` at crop resolution: the same pixels as rendering the full image and cropping
it, for about a twentieth of the cost. When the window is smaller than the crop (a far
object), the crop is down- and up-sampled to the window's resolution so that it carries
no more detail than a crop of a real image would. The ingredients (backgrounds, per-item
lighting, sensor simulation, pixel augmentations) are those of the full scenes of
:mod:`.synthetic`. Distractors and object occluders are rendered once per batch
(``sprites_per_sample``) in the same renderer call as the targets and pasted, scaled
and mirrored, into several samples; flat random polygons are cheaper occluders still.

Augmentations of the GCF supplementary (mirroring, affine, pixel-level):

- **Mirroring is not applied.** A mirrored image is the image of the mirror-image
  object, which is not the registered mesh (unless the mesh has a mirror symmetry), so no
  pose of the known mesh explains it; folding it into ``K`` (``f_x < 0``) would give a
  left-handed camera no real sensor has. Distractor sprites (clutter, no label) are
  mirrored freely.
- **Affine:** only the parts that keep the geometry exact: random scale and shift of the
  crop window around the ``T_init`` window (``crop_jitter_*``), applied to ``K_crop``
  and ``box_xyxy`` before rendering, so labels stay exact. In-plane rotation of the image
  equals a camera roll only about the principal point; random object rotations already
  cover it, so it is not applied separately.
- **Pixel-level:** :mod:`.image_effects`.

Randomness: every random choice is drawn from the numpy ``rng`` argument (torch noise
from a ``torch.Generator`` seeded by it), so the output is a deterministic function of
the rng's state, the models and the config.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import numpy as np
from scipy.spatial.transform import Rotation
import torch
import torch.nn.functional as F

from .backgrounds import _background, _background_depth, _random_polygon_mask
from .draws import _random_color, _torch_gen
from .image_effects import _finish_image, _sensor_depth
from .item_shading import _phong, _retexture, _sample_lights
from .synthetic import (
    SyntheticConfig,
    _albedo,
    _init_poses,
    _render_meshes,
    _sample_intrinsics,
    _sample_poses,
)

__all__ = ["make_training_batch", "draw_targets"]


def _jitter_crops(rng, K: torch.Tensor, K_crop: torch.Tensor, box: torch.Tensor, S: int,
                  cfg: SyntheticConfig):
    """Scale/shift the windows; returns the new ``(K_crop, box_xyxy)`` (exact geometry).

    With ``M = K_crop K^-1`` (full-image pixels -> crop pixels), the jitter ``J`` acts in
    crop pixels: ``M' = J M``; box corners map through ``M'^-1 M``.
    """
    B = K.shape[0]
    if cfg.crop_jitter_scale <= 0 and cfg.crop_jitter_shift <= 0:
        return K_crop, box
    s = np.exp(rng.uniform(-cfg.crop_jitter_scale, cfg.crop_jitter_scale, B))
    sh = rng.uniform(-cfg.crop_jitter_shift, cfg.crop_jitter_shift, (B, 2)) * S
    c = (S - 1) / 2
    J = np.tile(np.eye(3), (B, 1, 1))
    J[:, 0, 0] = J[:, 1, 1] = s
    J[:, :2, 2] = c - s[:, None] * c + sh
    J = torch.as_tensor(J, dtype=torch.float64)
    M = K_crop.double() @ torch.linalg.inv(K.double())
    M2 = J @ M
    A = torch.linalg.inv(M2) @ M  # full-image point of old crop -> full-image point of new
    corners = torch.stack([box[:, :2], box[:, 2:]], 1).double()  # (B, 2, 2)
    hom = torch.cat([corners, torch.ones(B, 2, 1, dtype=torch.float64)], -1)
    new = hom @ A.transpose(1, 2)
    new = new[..., :2] / new[..., 2:]
    box2 = torch.cat([new[:, 0], new[:, 1]], -1)
    return (M2 @ K.double()).to(K_crop.dtype), box2.to(box.dtype)


def _paste(src: torch.Tensor, src_depth: torch.Tensor, sprite_idx: np.ndarray,
           centre: np.ndarray, scale: np.ndarray, flip: np.ndarray, S: int):
    """Warp sprites into crops: returns rgb (P, 3, S, S), mask (P, S, S), depth (P, S, S).

    ``centre`` (P, 2) in crop pixels, ``scale`` (P,) output/sprite size ratio.
    """
    P = len(sprite_idx)
    theta = np.zeros((P, 2, 3))
    cn = (centre + 0.5) / S * 2 - 1  # normalised (align_corners=False)
    theta[:, 0, 0] = np.where(flip, -1.0, 1.0) / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, 0, 2] = -cn[:, 0] / scale * np.where(flip, -1.0, 1.0)
    theta[:, 1, 2] = -cn[:, 1] / scale
    grid = F.affine_grid(torch.as_tensor(theta, dtype=torch.float32), (P, 1, S, S),
                         align_corners=False)
    si = torch.as_tensor(sprite_idx)
    col = F.grid_sample(src[si], grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    dep = F.grid_sample(src_depth[si], grid, mode="nearest", padding_mode="zeros",
                        align_corners=False)[:, 0]
    mask = (col[:, 3] > 0.5) & (dep > 0)
    return col[:, :3] / col[:, 3:].clamp_min(1e-3), mask, dep


def draw_targets(rng: np.random.Generator, n_models: int, n: int,
                 target_probs: Sequence[float] | None = None) -> np.ndarray:
    """(n,) int64 indices of the models that ``n`` samples show: uniform over
    ``n_models``, or drawn with ``target_probs`` ((n_models,), summing to 1)."""
    if target_probs is None:
        return rng.integers(0, n_models, n)
    p = np.asarray(target_probs, dtype=np.float64)
    if p.shape != (n_models,) or (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"target_probs: expected {n_models} non-negative probabilities "
                         f"summing to 1, got shape {p.shape}, sum {p.sum():.4f}")
    return rng.choice(n_models, n, p=p / p.sum())


def make_training_batch(
    models: Sequence,
    rng: np.random.Generator,
    batch_size: int,
    crop_size: int,
    cfg: SyntheticConfig = SyntheticConfig(),
    renderer=None,
    distractor_models: Sequence | None = None,
    device: torch.device | str = "cpu",
    target_probs: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """Draw a batch of zoom-in training crops (see the module docstring).

    Args:
        models: ``ObjectModel`` s; each sample's target is drawn from them
            (:func:`draw_targets`).
        rng: numpy generator; the batch is a deterministic function of its state.
        batch_size: ``B``.
        crop_size: ``S``, the side of the square crops, pixels.
        cfg: settings.
        renderer: default ``make_renderer("torch")``.
        distractor_models: models of distractor/occluder sprites; default ``models``
            (a sprite is never pasted into a sample whose target is the same model).
        device: where rendering and compositing run; the outputs are on the CPU.
        target_probs: (len(models),) probability of each model being a sample's target
            (summing to 1); default: uniform.

    Returns:
        a dict of CPU tensors:

        - ``image`` (B, 3, S, S) float32 RGB in [0, 1].
        - ``depth_m`` (B, 1, S, S) float32 sensor-like depth, metres; 0 = no return.
        - ``K_crop`` (B, 3, 3) float32 intrinsics of the crop, pixels.
        - ``box_xyxy`` (B, 4) float32 the crop window in the full image, pixels.
        - ``K`` (B, 3, 3) float32 intrinsics of the (virtual) full image.
        - ``T_gt`` (B, 4, 4) float32 ground-truth ``T_cam_obj``, metres.
        - ``T_init`` (B, 4, 4) float32 initial pose (the protocol's perturbation; the
          crop was computed from it).
        - ``mesh_idx`` (B,) int64 index into ``models``.
        - ``visib_mask`` (B, 1, S, S) bool: pixels where the target is visible.
        - ``mask_gt`` (B, 1, S, S) bool: the target's unoccluded silhouette at ``T_gt``.
        - ``depth_gt_m`` (B, 1, S, S) float32: the target's clean rendered depth at
          ``T_gt`` (unoccluded; 0 outside the silhouette).
        - ``visib_fract`` (B,) float32: visible / silhouette pixels.
    """
    from pose_refiner_ros.geometry.crop import compute_crops

    if len(models) == 0:
        raise ValueError("models: expected at least one ObjectModel, got none")
    if renderer is None:
        from pose_refiner_ros.render.base import make_renderer

        renderer = make_renderer("torch")
    B, S = int(batch_size), int(crop_size)
    dev = torch.device(device)
    gen = _torch_gen(rng)
    distractor_models = list(models) if distractor_models is None else list(distractor_models)
    same_pool = distractor_models == list(models)

    # --- poses, intrinsics, initial poses, crops ---------------------------------------
    mesh_idx = draw_targets(rng, len(models), B, target_probs)
    diam = np.array([models[i].diameter_m for i in mesh_idx])
    K = _sample_intrinsics(rng, cfg, B)
    T_gt = _sample_poses(rng, cfg, K, diam)
    T_init = _init_poses(rng, cfg, T_gt)
    corners = torch.as_tensor(
        np.stack([np.asarray(models[i].bbox_corners_m) for i in mesh_idx]), dtype=torch.float32
    )
    K_t = torch.as_tensor(K, dtype=torch.float32)
    crop = compute_crops(K_t, torch.as_tensor(T_init, dtype=torch.float32), corners, S,
                         margin=cfg.crop_margin)
    K_crop, box = _jitter_crops(rng, K_t, crop.K_crop.float(), crop.box_xyxy.float(), S, cfg)

    # --- sprites (distractors / occluders), rendered with the targets in one call ------
    n_spr = int(math.ceil(B * cfg.sprites_per_sample)) if len(distractor_models) else 0
    spr_model = rng.integers(0, len(distractor_models), n_spr)
    spr_diam = np.array([distractor_models[j].diameter_m for j in spr_model])
    K_spr = np.array([[S, 0, (S - 1) / 2], [0, S, (S - 1) / 2], [0, 0, 1.0]])
    T_spr = np.tile(np.eye(4), (n_spr, 1, 1))
    if n_spr:
        T_spr[:, :3, :3] = Rotation.random(n_spr, random_state=rng).as_matrix()
    T_spr[:, 2, 3] = spr_diam / 0.8  # the sprite's diameter spans 0.8 S

    # only the meshes this batch uses are converted, rendered and coloured
    all_models = list(models) if same_pool else list(models) + distractor_models
    d_off = 0 if same_pool else len(models)
    used, local = np.unique(np.concatenate([mesh_idx, spr_model + d_off]), return_inverse=True)
    meshes = _render_meshes([all_models[i] for i in used], dev)
    idx_all = torch.as_tensor(local.reshape(-1), dtype=torch.int64)
    K_all = torch.cat([K_crop, torch.as_tensor(np.tile(K_spr, (n_spr, 1, 1)),
                                               dtype=torch.float32)])
    T_all = torch.as_tensor(np.concatenate([T_gt, T_spr]), dtype=torch.float32)
    frags = renderer.render(meshes, idx_all.to(dev), K_all.to(dev), T_all.to(dev), S, S)
    albedo = _albedo(frags, meshes, idx_all.to(dev)).cpu()
    frags = _to_cpu(frags)
    diam_all = torch.as_tensor(np.concatenate([diam, spr_diam]), dtype=torch.float32)
    tex = np.concatenate([np.full(B, cfg.texture_prob), np.zeros(n_spr)])
    albedo = _retexture_items(rng, gen, albedo, frags, diam_all, tex)
    rgb = _phong(frags, albedo, K_all, _sample_lights(rng, B + n_spr, cfg))  # (N, S, S, 3)
    rgb = rgb.permute(0, 3, 1, 2)

    tgt_rgb, tgt_mask, tgt_depth = rgb[:B], frags.mask[:B], frags.depth_m[:B]
    z_gt = torch.as_tensor(T_gt[:, 2, 3], dtype=torch.float32)

    # --- background: clutter image and a plane of depth ---------------------------------
    bg = np.stack([_background(rng, S, S, cfg) for _ in range(B)])
    bg = torch.from_numpy(bg).permute(0, 3, 1, 2).float() / 255
    bg_depth = torch.from_numpy(np.stack([
        _background_depth(rng, K_crop[b].double().numpy(), S, S,
                          T_gt[b, :3, 3] * (1 + diam[b] / 2 / T_gt[b, 2, 3]), cfg)
        for b in range(B)
    ]))

    # --- layers: background < distractor < target < occluders, composited by depth ------
    inf = float("inf")
    layer_rgb = [bg, tgt_rgb]
    layer_z = [torch.where(bg_depth > 0, bg_depth, inf), torch.where(tgt_mask, tgt_depth, inf)]
    occ_rgb, occ_z = [], []
    if n_spr:
        spr = torch.cat([rgb[B:], frags.mask[B:, None].float()], 1)  # (n_spr, 4, S, S)
        spr_depth = (frags.depth_m[B:] - torch.as_tensor(T_spr[:, 2, 3], dtype=torch.float32)
                     [:, None, None])[:, None]
        spr_depth = torch.where(frags.mask[B:, None], spr_depth + 1e3, 0.0)  # relief + 1 km
        for role, prob in (("distractor", cfg.distractor_prob), ("occluder", cfg.occluder_prob)):
            use = rng.random(B) < prob
            cand = [
                [k for k in range(n_spr) if not (same_pool and spr_model[k] == mesh_idx[b])]
                for b in range(B)
            ]
            items = [b for b in range(B) if use[b] and cand[b]]
            if not items:
                continue
            k_sel = np.array([cand[b][rng.integers(len(cand[b]))] for b in items])
            ang = rng.uniform(0, 2 * np.pi, len(items))
            rad = rng.uniform(0.25, 0.6, len(items)) * S
            centre = (S - 1) / 2 + np.stack([np.cos(ang), np.sin(ang)], 1) * rad[:, None]
            size = rng.uniform(0.3, 0.8, len(items)) * S
            flip = rng.random(len(items)) < 0.5
            p_rgb, p_mask, p_dep = _paste(spr, spr_depth, k_sel, centre, size / (0.8 * S),
                                          flip, S)
            bi = torch.as_tensor(items)
            zt, dt, ds = z_gt[bi], torch.as_tensor(diam[items]), torch.as_tensor(spr_diam[k_sel])
            if role == "distractor":
                zc = zt + dt / 2 + ds / 2 + torch.as_tensor(rng.uniform(0, 0.3, len(items)))
            else:
                zc = zt - dt / 2 - ds / 2 - torch.as_tensor(rng.uniform(0.01, 0.2, len(items)))
            zc = zc.float().clamp_min(0.05)
            z = torch.where(p_mask, p_dep - 1e3 + zc[:, None, None], inf)
            full_rgb = torch.zeros(B, 3, S, S)
            full_z = torch.full((B, S, S), inf)
            full_rgb[bi], full_z[bi] = p_rgb, z
            (layer_rgb if role == "distractor" else occ_rgb).append(full_rgb)
            (layer_z if role == "distractor" else occ_z).append(full_z)

    # flat occluders: random polygons in front of the target
    use2d = np.nonzero(rng.random(B) < cfg.occluder2d_prob)[0]
    if len(use2d):
        full_rgb = torch.zeros(B, 3, S, S)
        full_z = torch.full((B, S, S), inf)
        for b in use2d:
            ang = rng.uniform(0, 2 * np.pi)
            c = (S - 1) / 2 + np.array([np.cos(ang), np.sin(ang)]) * rng.uniform(0.2, 0.5) * S
            m = torch.from_numpy(_random_polygon_mask(rng, S, S, c, rng.uniform(0.15, 0.4) * S))
            col = torch.as_tensor(_random_color(rng), dtype=torch.float32)
            tex_ = 1 + 0.15 * torch.randn((1, S, S), generator=gen)
            full_rgb[b] = (col[:, None, None] * tex_).clamp(0, 1) * m
            zc = max(0.05, float(z_gt[b]) - diam[b] / 2 - rng.uniform(0.01, 0.2))
            full_z[b] = torch.where(m, torch.tensor(zc), torch.tensor(inf))
        occ_rgb.append(full_rgb)
        occ_z.append(full_z)

    # drop the occluders of samples that would become too occluded
    n_sil = tgt_mask.flatten(1).sum(1).float()
    if occ_z:
        zo = torch.stack(occ_z).amin(0)
        vis_with = tgt_mask & (tgt_depth < zo)
        vf = vis_with.flatten(1).sum(1).float() / n_sil.clamp_min(1)
        drop = (vf < cfg.min_visib_fract) & (n_sil > 0)
        for z in occ_z:
            z[drop] = inf
        layer_rgb += occ_rgb
        layer_z += occ_z

    Z = torch.stack(layer_z)  # (L, B, S, S)
    zmin, who = Z.min(0)
    RGB = torch.stack(layer_rgb)  # (L, B, 3, S, S)
    image = torch.gather(RGB, 0, who[None, :, None].expand(1, B, 3, S, S))[0]
    depth = torch.where(torch.isfinite(zmin), zmin, torch.zeros_like(zmin))[:, None]
    visib = (who == 1) & tgt_mask
    visib_fract = visib.flatten(1).sum(1).float() / n_sil.clamp_min(1)

    # --- resolution of a real crop, sensor, augmentations -------------------------------
    if cfg.simulate_resolution:
        image, depth = _simulate_resolution(image, depth, box, S)
    image = _finish_image(rng, gen, image, cfg)
    depth = _sensor_depth(rng, gen, depth, cfg)

    return batch_dict(image, depth, K_crop, box, K_t, T_gt, T_init, mesh_idx, visib,
                      tgt_mask.clone(), tgt_depth.clone(), visib_fract)


def batch_dict(image, depth, K_crop, box, K, T_gt, T_init, mesh_idx, visib, mask_gt,
               depth_gt, visib_fract) -> dict:
    """The training batch as :func:`make_training_batch` documents it, from its parts
    (masks and depths ``(B, S, S)``, given a channel axis here); shared with the batches
    of real frames (``adapt.real_batch``)."""
    return {
        "image": image.float().contiguous(),
        "depth_m": depth.float().contiguous(),
        "K_crop": K_crop.float(),
        "box_xyxy": box.float(),
        "K": K,
        "T_gt": torch.as_tensor(T_gt, dtype=torch.float32),
        "T_init": torch.as_tensor(T_init, dtype=torch.float32),
        "mesh_idx": torch.as_tensor(mesh_idx, dtype=torch.int64),
        "visib_mask": visib[:, None],
        "mask_gt": mask_gt[:, None],
        "depth_gt_m": depth_gt[:, None].float(),
        "visib_fract": visib_fract,
    }


def _to_cpu(frags):
    if frags.mask.device.type == "cpu":
        return frags
    return type(frags)(**{k: getattr(frags, k).cpu() for k in frags.__dataclass_fields__})


def _retexture_items(rng, gen, albedo, frags, diam, prob_per_item):
    """:func:`_retexture` with a per-item probability."""
    pick = rng.random(len(prob_per_item)) < prob_per_item
    if not pick.any():
        return albedo
    sub = np.nonzero(pick)[0]
    sel = torch.as_tensor(sub)
    sub_frags = type(frags)(**{k: getattr(frags, k)[sel] for k in frags.__dataclass_fields__})
    out = albedo.clone()
    out[sel] = _retexture(rng, gen, albedo[sel], sub_frags, diam[sel], 1.0)
    return out


def _simulate_resolution(image, depth, box, S: int):
    """Down- and up-sample crops whose window spans fewer than ``S`` full-image pixels."""
    side = (box[:, 2] - box[:, 0]).abs()
    out_i, out_d = image.clone(), depth.clone()
    for b in torch.nonzero(side < S * 0.95).flatten().tolist():
        n = max(4, int(round(float(side[b]))))
        small = F.interpolate(image[b : b + 1], size=(n, n), mode="area")
        out_i[b] = F.interpolate(small, size=(S, S), mode="bilinear", align_corners=False)[0]
        sd = F.interpolate(depth[b : b + 1], size=(n, n), mode="nearest")
        out_d[b] = F.interpolate(sd, size=(S, S), mode="nearest")[0]
    return out_i, out_d
