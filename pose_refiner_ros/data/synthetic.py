"""Synthetic scenes rendered from meshes: :func:`generate_scene`, a full ``H x W`` image
with several annotated objects at random poses, rendered in one renderer call and
composited by depth; used to write datasets to disk (``data.bop.write_bop``), for the
demo, the benchmark and end-to-end tests. :class:`SyntheticConfig` holds the settings
of this generator and of the training crops (:mod:`.training_batch`), which share its
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

from pose_refiner_ros.config_dict import dataclass_from_dict
from pose_refiner_ros.data.perturb import perturb_pose

from .backgrounds import _background, _background_depth, _random_polygon_mask
from .draws import _log_uniform, _random_color, _torch_gen, _uniform
from .image_effects import _finish_image, _sensor_depth
from .item_shading import _phong, _retexture, _sample_lights

__all__ = ["SyntheticConfig", "SceneObject", "Scene", "generate_scene"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic generators (defaults are the training defaults).

    Camera and placement:
        image_width, image_height: full image size, pixels (640 x 480).
        focal_range_px: ``f_x = f_y`` drawn uniformly in this range, pixels.
        principal_jitter_px: principal point = image centre + U(-j, j) per axis, pixels.
        apparent_size_px: the target's projected diameter in the full image is drawn
            log-uniformly in this range (sets the distance), pixels.
        distance_range_m: the target's depth is clipped to this range, metres.
        centre_margin: the target's projected centre lies in the image's central
            ``1 - 2 * margin`` fraction.
        objects_per_scene: (min, max) annotated objects per :func:`generate_scene`.
        distractors_per_scene: (min, max) unannotated distractor objects per scene.

    Initial poses (the protocol's standard perturbation):
        sigma_r_deg, sigma_t_m: see :func:`~pose_refiner_ros.data.perturb.perturb_pose`.
        min_init_depth_ratio: ``t_init.z`` is clipped to at least this times ``t_gt.z``
            (only binds for close objects and large depth noise; keeps the window finite).

    Crops (training batches):
        crop_margin: window side = projected extent of the bbox corners at ``T_init``
            times this (``compute_crops``'s ``margin``).
        crop_jitter_scale, crop_jitter_shift: the window is scaled by
            ``exp(U(-s, s))`` and shifted by ``U(-d, d)`` crop sides (the affine
            augmentation; labels stay exact).
        simulate_resolution: down/up-sample crops whose window is smaller than the crop.

    Appearance:
        texture_prob: probability that the target's colours are replaced (partly or
            fully) by a random 3D pattern (stripes, checker, noise) evaluated on the
            object-frame surface point; teaches robustness to CAD colours that differ
            from reality. The renderings of the refiner still use the model's colours.
        ambient_range, diffuse_range, specular_range, shininess_range: per-item Phong
            parameters drawn uniformly; the light comes from a random direction of the
            camera-facing hemisphere (``light_elevation_min_deg`` above the image plane).
        light_tint: each light channel gain in ``[1 - tint, 1]``.

    Clutter and occlusion:
        bg_shapes: (min, max) random shapes drawn on the background.
        photo_background_prob: probability that a background is a random crop of a
            real photograph (the ones scikit-image ships inside its wheel, see
            :func:`_photo_background`) rather than procedural clutter.
        distractor_prob: probability of a distractor object behind the target (crops).
        occluder_prob: probability of an object occluder in front of the target (crops).
        occluder2d_prob: probability of a flat random-polygon occluder (crops and scenes).
        sprites_per_sample: distractor/occluder objects rendered per training sample
            (they are rendered once per batch and pasted, scaled and mirrored, into the
            samples; 0.25 means one rendered object for every 4 samples).
        min_visib_fract: occluders are removed from samples whose target would be less
            visible than this.
        occluders_per_scene: (min, max) object occluders per scene.

    Sensor:
        noise_std_range: additive Gaussian noise std on [0, 1] intensities.
        mult_noise_std: multiplicative per-pixel noise std (upper bound).
        blur_prob, blur_sigma_range: Gaussian blur (sigma in crop/image pixels).
        motion_blur_prob, motion_blur_len_px: linear motion blur (max kernel length 7).
        jpeg_prob, jpeg_quality_range: JPEG re-compression.
        brightness, contrast, saturation, hue, channel_gain: colour jitter amplitudes
            (factors ``1 + U(-a, a)``, hue shift ``U(-hue, hue)`` turns).
        gamma_range: ``I ** gamma``.
        depth_noise_m: (a, b): depth noise std ``a + b * z^2`` metres (z in metres).
        depth_dropout_max: per-pixel dropout probability drawn in ``[0, max]``.
        depth_hole_prob: probability of blob-shaped holes.
        depth_edge_drop_prob: dropout probability at depth discontinuities.
        depth_missing_prob: probability that a sample has no depth at all (all zeros).
        depth_max_m: returns beyond this are 0 (no return).
        background_depth_prob: probability that the background is a plane with depth
            returns (else it has none: 0).
    """

    image_width: int = 640
    image_height: int = 480
    focal_range_px: tuple[float, float] = (450.0, 1100.0)
    principal_jitter_px: float = 15.0
    apparent_size_px: tuple[float, float] = (60.0, 360.0)
    distance_range_m: tuple[float, float] = (0.3, 2.5)
    centre_margin: float = 0.15
    objects_per_scene: tuple[int, int] = (1, 4)
    distractors_per_scene: tuple[int, int] = (0, 3)

    sigma_r_deg: float = 15.0
    sigma_t_m: tuple[float, float, float] = (0.01, 0.01, 0.05)
    min_init_depth_ratio: float = 0.5

    crop_margin: float = 1.4
    crop_jitter_scale: float = 0.05
    crop_jitter_shift: float = 0.03
    simulate_resolution: bool = True

    texture_prob: float = 0.25
    ambient_range: tuple[float, float] = (0.25, 0.7)
    diffuse_range: tuple[float, float] = (0.3, 0.9)
    specular_range: tuple[float, float] = (0.0, 0.5)
    shininess_range: tuple[float, float] = (4.0, 64.0)
    light_elevation_min_deg: float = 15.0
    light_tint: float = 0.15

    bg_shapes: tuple[int, int] = (3, 14)
    photo_background_prob: float = 0.0
    distractor_prob: float = 0.5
    occluder_prob: float = 0.35
    occluder2d_prob: float = 0.2
    sprites_per_sample: float = 0.25
    min_visib_fract: float = 0.35
    occluders_per_scene: tuple[int, int] = (0, 2)

    noise_std_range: tuple[float, float] = (0.0, 0.04)
    mult_noise_std: float = 0.05
    blur_prob: float = 0.3
    blur_sigma_range: tuple[float, float] = (0.3, 1.3)
    motion_blur_prob: float = 0.1
    motion_blur_len_px: tuple[int, int] = (3, 7)
    jpeg_prob: float = 0.2
    jpeg_quality_range: tuple[int, int] = (40, 95)
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    hue: float = 0.03
    channel_gain: float = 0.08
    gamma_range: tuple[float, float] = (0.8, 1.25)

    depth_noise_m: tuple[float, float] = (0.001, 0.0015)
    depth_dropout_max: float = 0.03
    depth_hole_prob: float = 0.4
    depth_edge_drop_prob: float = 0.5
    depth_missing_prob: float = 0.05
    depth_max_m: float = 5.0
    background_depth_prob: float = 0.8

    @classmethod
    def from_dict(cls, d: dict) -> SyntheticConfig:
        """Build from a plain dict (e.g. YAML); lists become tuples; unknown keys raise."""
        return dataclass_from_dict(cls, d, "SyntheticConfig", lists_to_tuples=True)


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
