"""Synthetic scenes rendered from meshes: :func:`generate_scene`, a full ``H x W`` image
with several annotated objects at random poses, rendered in one renderer call and
composited by depth; used to write datasets to disk (``data.bop.write_bop``), for the
demo, the benchmark and end-to-end tests. :class:`SyntheticConfig`
(:mod:`.synthetic_config`, re-exported here) holds the settings of this generator and of
the training crops (:mod:`.training_batch`), which share its
ingredients: backgrounds (:mod:`.backgrounds`), per-item lighting and retexturing
(:mod:`.item_shading`), distractors, occluders, sensor simulation and pixel
augmentations (:mod:`.image_effects`).

Randomness: every random choice is drawn from the numpy ``rng`` argument (torch noise
from a ``torch.Generator`` seeded by it), so the output is a deterministic function of
the rng's state, the models and the config.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation
import torch

from pose_refiner_ros.data.perturb import perturb_pose

from .backgrounds import _background, _background_depth, _random_polygon_mask
from .draws import _log_uniform, _random_color, _torch_gen, _uniform
from .image_effects import _finish_image, _sensor_depth
from .item_shading import _phong, _retexture, _sample_lights
from .synthetic_config import SyntheticConfig

__all__ = ["SyntheticConfig", "SceneObject", "Scene", "generate_scene"]


@dataclass(frozen=True)
class SceneObject:
    """One annotated object of a :class:`Scene`.

    Attributes:
        class_id: the model's ``class_id``.
        T_cam_obj_gt: (4, 4) float64 ground-truth pose, metres.
        T_cam_obj_init: (4, 4) float64 initial pose from the standard perturbation.
        visib_fract: visible pixels / pixels of the unoccluded silhouette (0 when the
            silhouette is empty).
    """

    class_id: str
    T_cam_obj_gt: np.ndarray
    T_cam_obj_init: np.ndarray
    visib_fract: float


@dataclass(frozen=True)
class Scene:
    """A rendered synthetic scene.

    Attributes:
        image_rgb: (H, W, 3) uint8 RGB.
        depth_m: (H, W) float32 depth along the optical axis, metres; 0 = no return.
        K: (3, 3) float64 pinhole intrinsics, pixels.
        objects: the annotated objects.
        instance_map: (H, W) int16: index into ``objects`` of the object visible at each
            pixel, -1 elsewhere (background, distractors, occluders).
        mask_full: (N, H, W) bool: unoccluded silhouette of every annotated object.
    """

    image_rgb: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray
    objects: list[SceneObject]
    instance_map: np.ndarray = field(repr=False)
    mask_full: np.ndarray = field(repr=False)


# ---------------------------------------------------------------------------------------
# render meshes of models (cached per model object)
# ---------------------------------------------------------------------------------------

_MESH_CACHE: OrderedDict = OrderedDict()
_MESH_CACHE_MAX = 1024


def _render_meshes(models: Sequence, device: torch.device | str = "cpu") -> list:
    """``RenderMesh`` of every model, cached by the model's identity (LRU, 1024)."""
    from pose_refiner_ros.render.base import RenderMesh

    out = []
    dev = torch.device(device)
    for m in models:
        key = (id(m), str(dev))
        hit = _MESH_CACHE.get(key)
        if hit is None or hit[0] is not m:
            hit = (m, RenderMesh.from_object(m, dev))
            _MESH_CACHE[key] = hit
            if len(_MESH_CACHE) > _MESH_CACHE_MAX:
                _MESH_CACHE.popitem(last=False)
        else:
            _MESH_CACHE.move_to_end(key)
        out.append(hit[1])
    return out


def _albedo(frags, meshes: Sequence, mesh_idx: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) vertex colours interpolated at every covered pixel, 0 elsewhere."""
    from pose_refiner_ros.render.base import PackedMeshes, interpolate

    B, H, W = frags.mask.shape
    out = torch.zeros(B, H, W, 3, dtype=torch.float32, device=frags.mask.device)
    pix = frags.mask.view(-1).nonzero().squeeze(1)
    if pix.numel() == 0:
        return out
    packed = PackedMeshes.from_meshes(meshes)
    b = torch.div(pix, H * W, rounding_mode="floor")
    mesh_of_pix = mesh_idx.to(pix.device).index_select(0, b)
    face = frags.face_id.view(-1).index_select(0, pix)
    bary = frags.bary.view(-1, 3).index_select(0, pix)
    vidx = packed.face_vertices(mesh_of_pix, face)
    out.view(-1, 3).index_copy_(0, pix, interpolate(packed.vert_colors, vidx, bary))
    return out


# ---------------------------------------------------------------------------------------
# pose and camera samplers
# ---------------------------------------------------------------------------------------


def _sample_intrinsics(rng, cfg: SyntheticConfig, n: int) -> np.ndarray:
    f = _uniform(rng, cfg.focal_range_px, n)
    j = cfg.principal_jitter_px
    cx = (cfg.image_width - 1) / 2 + rng.uniform(-j, j, n)
    cy = (cfg.image_height - 1) / 2 + rng.uniform(-j, j, n)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = f
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = cx, cy, 1.0
    return K


def _sample_poses(rng, cfg: SyntheticConfig, K: np.ndarray, diam: np.ndarray) -> np.ndarray:
    """Random rotations and in-view positions; depth from the apparent size."""
    n = len(diam)
    f = K[:, 0, 0]
    size_px = _log_uniform(rng, cfg.apparent_size_px, n)
    z = np.clip(f * diam / size_px, *cfg.distance_range_m)
    m = cfg.centre_margin
    u = rng.uniform(m, 1 - m, n) * (cfg.image_width - 1)
    v = rng.uniform(m, 1 - m, n) * (cfg.image_height - 1)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=rng).as_matrix()
    T[:, 0, 3] = (u - K[:, 0, 2]) / f * z
    T[:, 1, 3] = (v - K[:, 1, 2]) / K[:, 1, 1] * z
    T[:, 2, 3] = z
    return T


def _init_poses(rng, cfg: SyntheticConfig, T_gt: np.ndarray) -> np.ndarray:
    T_init = perturb_pose(T_gt, rng, cfg.sigma_r_deg, cfg.sigma_t_m)
    T_init[:, 2, 3] = np.maximum(T_init[:, 2, 3], cfg.min_init_depth_ratio * T_gt[:, 2, 3])
    return T_init


# ---------------------------------------------------------------------------------------
# full scenes
# ---------------------------------------------------------------------------------------


def _place_without_overlap(rng, cfg, K, diam, n_try: int = 30):
    """Poses for objects of diameters ``diam`` whose projected discs barely overlap."""
    Ts, discs = [], []
    for d in diam:
        for _ in range(n_try):
            T = _sample_poses(rng, cfg, K[None], np.array([d]))[0]
            u = K[0, 0] * T[0, 3] / T[2, 3] + K[0, 2]
            v = K[1, 1] * T[1, 3] / T[2, 3] + K[1, 2]
            r = 0.5 * K[0, 0] * d / T[2, 3]
            if all(np.hypot(u - u2, v - v2) > 0.8 * (r + r2) for u2, v2, r2 in discs):
                break
        Ts.append(T)
        discs.append((u, v, r))
    return np.stack(Ts) if Ts else np.zeros((0, 4, 4))


def generate_scene(
    models: Sequence,
    rng: np.random.Generator,
    cfg: SyntheticConfig = SyntheticConfig(),
    renderer=None,
    distractor_models: Sequence | None = None,
) -> Scene:
    """Render one synthetic scene with several annotated objects.

    Args:
        models: ``ObjectModel`` s the annotated objects are drawn from (without
            replacement while possible).
        rng: numpy generator (the scene is a deterministic function of its state).
        cfg: settings.
        renderer: a :class:`~pose_refiner_ros.render.base.Renderer`; default
            ``make_renderer("torch")``.
        distractor_models: models of the unannotated distractors and occluders; default:
            the models of ``models`` not annotated in this scene (none when all are).

    Returns:
        a :class:`Scene`. Every object, distractor and occluder is rendered at full
        resolution in one renderer call and composited by depth.
    """
    if len(models) == 0:
        raise ValueError("models: expected at least one ObjectModel, got none")
    if renderer is None:
        from pose_refiner_ros.render.base import make_renderer

        renderer = make_renderer("torch")
    H, W = cfg.image_height, cfg.image_width
    gen = _torch_gen(rng)
    K = _sample_intrinsics(rng, cfg, 1)[0]

    n_obj = int(rng.integers(cfg.objects_per_scene[0], cfg.objects_per_scene[1] + 1))
    n_obj = max(1, n_obj)
    replace = n_obj > len(models)
    obj_idx = rng.choice(len(models), n_obj, replace=replace)
    diam = np.array([models[i].diameter_m for i in obj_idx])
    T_gt = _place_without_overlap(rng, cfg, K, diam)
    T_init = _init_poses(rng, cfg, T_gt)

    # distractors (anywhere, behind the objects) and occluders (in front of one object)
    if distractor_models is None:
        rest = sorted(set(range(len(models))) - set(obj_idx.tolist()))
        distractor_models = [models[i] for i in rest]
    all_models = list(models) + list(distractor_models)
    extra_idx, extra_T = [], []
    if len(distractor_models):
        n_d = int(rng.integers(cfg.distractors_per_scene[0], cfg.distractors_per_scene[1] + 1))
        n_o = int(rng.integers(cfg.occluders_per_scene[0], cfg.occluders_per_scene[1] + 1))
        for k in range(n_d + n_o):
            j = int(rng.integers(len(distractor_models)))
            dm = distractor_models[j]
            T = _sample_poses(rng, cfg, K[None], np.array([dm.diameter_m]))[0]
            if k < n_d:  # push behind the farthest object
                T[:3, 3] *= (T_gt[:, 2, 3].max() + diam.max()) / T[2, 3] + rng.uniform(0, 0.5)
            else:  # in front of a random object, overlapping its projection
                o = int(rng.integers(n_obj))
                z = T_gt[o, 2, 3] - diam[o] / 2 - dm.diameter_m / 2 - rng.uniform(0.01, 0.2)
                if z < 0.1:
                    continue
                shift = rng.normal(0, 0.5, 2) * diam[o]
                T[:3, 3] = T_gt[o, :3, 3] * z / T_gt[o, 2, 3] + [shift[0], shift[1], 0]
            extra_idx.append(len(models) + j)
            extra_T.append(T)

    idx = np.concatenate([obj_idx, np.asarray(extra_idx, dtype=np.int64)]).astype(np.int64)
    T_all = np.concatenate([T_gt] + ([np.stack(extra_T)] if extra_T else []))
    used, local = np.unique(idx, return_inverse=True)
    meshes = _render_meshes([all_models[i] for i in used])
    n = len(idx)
    Kt = torch.as_tensor(np.tile(K, (n, 1, 1)), dtype=torch.float32)
    idx_t = torch.as_tensor(local.reshape(-1), dtype=torch.int64)
    frags = renderer.render(meshes, idx_t, Kt, torch.as_tensor(T_all, dtype=torch.float32), H, W)
    albedo = _albedo(frags, meshes, idx_t)
    diam_all = torch.as_tensor([all_models[i].diameter_m for i in idx], dtype=torch.float32)
    albedo = _retexture(rng, gen, albedo, frags, diam_all, cfg.texture_prob)
    rgb = _phong(frags, albedo, Kt, _sample_lights(rng, n, cfg))  # (n, H, W, 3)

    # composite by depth over the background
    bg = torch.from_numpy(_background(rng, H, W, cfg)).float() / 255
    far = int(np.argmax(T_gt[:, 2, 3] + diam))
    p_far = T_gt[far, :3, 3] * (1 + diam[far] / T_gt[far, 2, 3])
    bg_depth = torch.from_numpy(_background_depth(rng, K, H, W, p_far, cfg))
    inf = torch.tensor(float("inf"))
    z = torch.where(frags.mask, frags.depth_m, inf)  # (n, H, W)
    zmin, who = z.min(0)
    covered = torch.isfinite(zmin)
    bg_z = torch.where(bg_depth > 0, bg_depth, inf)
    front = covered & (zmin <= bg_z)
    img = torch.where(front[..., None], rgb[who, torch.arange(H)[:, None], torch.arange(W)], bg)
    depth = torch.where(front, zmin, bg_depth)
    who = torch.where(front, who, torch.full_like(who, -1))

    # a flat occluder
    if rng.random() < cfg.occluder2d_prob:
        o = int(rng.integers(n_obj))
        uv = K @ (T_gt[o, :3, 3] / T_gt[o, 2, 3])
        r = 0.5 * K[0, 0] * diam[o] / T_gt[o, 2, 3]
        c = (uv[0] + rng.normal(0, 0.6) * r, uv[1] + rng.normal(0, 0.6) * r)
        m = torch.from_numpy(_random_polygon_mask(rng, H, W, c, r * rng.uniform(0.3, 0.7)))
        col = torch.as_tensor(_random_color(rng), dtype=torch.float32)
        tex = 1 + 0.15 * torch.randn((int(m.sum()), 1), generator=gen)
        img[m] = (col * tex).clamp(0, 1)
        depth[m] = float(max(0.1, T_gt[o, 2, 3] - diam[o] / 2 - rng.uniform(0.02, 0.2)))
        who[m] = -1

    img = _finish_image(rng, gen, img.permute(2, 0, 1)[None], cfg, blur_scale=1.0)[0]
    depth_s = _sensor_depth(rng, gen, depth[None, None], cfg)[0, 0]

    visible = who[None] == torch.arange(n_obj)[:, None, None]
    full = frags.mask[:n_obj]
    vf = visible.flatten(1).sum(1).float() / full.flatten(1).sum(1).clamp_min(1).float()
    objects = [
        SceneObject(models[i].class_id, T_gt[k].copy(), T_init[k].copy(), float(vf[k]))
        for k, i in enumerate(obj_idx)
    ]
    inst = torch.where(who < n_obj, who, torch.full_like(who, -1)).to(torch.int16)
    return Scene(
        image_rgb=(img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8),
        depth_m=depth_s.numpy().astype(np.float32),
        K=K,
        objects=objects,
        instance_map=inst.numpy(),
        mask_full=full.numpy(),
    )
