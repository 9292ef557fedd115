"""Synthetic training data rendered from meshes: full scenes and zoom-in training crops.

Two generators share one set of ingredients (procedural backgrounds, per-item lighting,
distractors, occluders, sensor simulation, pixel augmentations):

- :func:`generate_scene`: a full ``H x W`` image with several annotated objects at
  random poses, rendered in one renderer call and composited by depth; used to write
  datasets to disk (``data.bop.write_bop``) and for end-to-end tests.
- :func:`make_training_batch`: the refiner's training crops. Each sample picks a model, a
  ground-truth pose ``T_gt`` and intrinsics ``K``, draws ``T_init`` by the protocol's
  perturbation (:func:`~pose_refiner_ros.data.perturb.perturb_pose`), takes the zoom-in
  window of ``T_init`` (:func:`~pose_refiner_ros.geometry.crop.compute_crops` on the
  model's bounding-box corners) and renders the object at ``T_gt`` *directly into the
  crop* with ``K_crop`` at crop resolution: the same pixels as rendering the full image
  and cropping it, for about a twentieth of the cost. When the window is smaller than the
  crop (a far object), the crop is down- and up-sampled to the window's resolution so
  that it carries no more detail than a crop of a real image would.

Shading is the model of :func:`pose_refiner_ros.render.shading.shade` (ambient + Lambert
+ Blinn-Phong, two-sided normals) written out here per item (``_phong``), because every
sample and sprite gets its own light direction, weights and tint, while ``shade`` takes
one light for the whole batch. Distractors and object occluders of the training crops
are rendered once per batch (``sprites_per_sample``) in the same renderer call as the
targets and pasted, scaled and mirrored, into several samples; flat random polygons
are cheaper occluders still.

Randomness: every random choice is drawn from the numpy ``rng`` argument (torch noise
from a ``torch.Generator`` seeded by it), so the output is a deterministic function of
the rng's state, the models and the config.

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
- **Pixel-level:** additive Gaussian and multiplicative noise, colour jitter (brightness,
  contrast, saturation, hue, per-channel gain, gamma), Gaussian and motion blur, JPEG
  compression; depth gets distance-dependent noise, dropout, hole blobs, edge holes and
  1 mm quantisation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
import colorsys
from dataclasses import dataclass, field
import math

import cv2
import numpy as np
from scipy.spatial.transform import Rotation
import torch
import torch.nn.functional as F

from pose_refiner_ros.config_dict import dataclass_from_dict
from pose_refiner_ros.data.perturb import perturb_pose

__all__ = [
    "SyntheticConfig",
    "SceneObject",
    "Scene",
    "generate_scene",
    "make_training_batch",
    "draw_targets",
    "SyntheticDataset",
]


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
# small samplers
# ---------------------------------------------------------------------------------------


def _uniform(rng, lo_hi, size=None):
    return rng.uniform(lo_hi[0], lo_hi[1], size)


def _log_uniform(rng, lo_hi, size=None):
    return np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]), size))


def _random_color(rng) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(rng.random(), rng.random() ** 0.7, rng.uniform(0.1, 1)))


def _torch_gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


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
# backgrounds (numpy / OpenCV, one image at a time)
# ---------------------------------------------------------------------------------------


#: Real photographs bundled in scikit-image's wheel (no download), used as backgrounds.
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass",
               "gravel", "coins", "moon", "clock", "page", "immunohistochemistry",
               "hubble_deep_field", "retina", "text")
_PHOTOS: list = []


def _photos() -> list:
    """The bundled photographs as (h, w, 3) uint8, loaded once."""
    if not _PHOTOS:
        try:
            import skimage.data
        except ImportError as exc:
            raise ImportError("photo backgrounds (SyntheticConfig.photo_background_prob > 0) "
                              "need scikit-image: pip install scikit-image") from exc
        for name in PHOTO_NAMES:
            im = np.asarray(getattr(skimage.data, name)())
            if im.ndim == 2:
                im = np.repeat(im[..., None], 3, axis=2)
            _PHOTOS.append(np.ascontiguousarray(im[..., :3]).astype(np.uint8))
    return _PHOTOS


def _photo_background(rng, h: int, w: int) -> np.ndarray:
    """A random crop of a random real photograph: random scale, flips, quarter turns and
    a colour tint; (h, w, 3) uint8."""
    im = _photos()[int(rng.integers(len(_photos())))]
    im = np.rot90(im, int(rng.integers(4)))
    if rng.random() < 0.5:
        im = im[:, ::-1]
    H, W = im.shape[:2]
    side = int(min(H, W) * rng.uniform(0.25, 1.0))
    y, x = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    crop = cv2.resize(np.ascontiguousarray(im[y:y + side, x:x + side]), (w, h),
                      interpolation=cv2.INTER_AREA if side > max(h, w) else cv2.INTER_LINEAR)
    tint = rng.uniform(0.6, 1.2, 3) * rng.uniform(0.7, 1.2)
    return np.clip(crop.astype(np.float32) * tint, 0, 255).astype(np.uint8)


def _background(rng, h: int, w: int, cfg: SyntheticConfig) -> np.ndarray:
    """Procedural clutter (a gradient or smooth-noise base and random shapes) or, with
    ``cfg.photo_background_prob``, a real photograph; (h, w, 3) uint8."""
    if cfg.photo_background_prob > 0 and rng.random() < cfg.photo_background_prob:
        return _photo_background(rng, h, w)
    c0, c1 = _random_color(rng), _random_color(rng)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        s = (np.cos(a) * xx + np.sin(a) * yy) / max(h, w)
        s = (s - s.min()) / max(float(np.ptp(s)), 1e-6)
        img = c0[None, None] * (1 - s[..., None]) + c1[None, None] * s[..., None]
    elif kind == 1:  # smooth noise
        g = int(rng.integers(2, 9))
        low = rng.random((g, g, 3)).astype(np.float32)
        img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        img = c0 * 0.5 + img * 0.5
    else:
        img = np.broadcast_to(c0, (h, w, 3)).copy()
    img = np.clip(img * 255, 0, 255).astype(np.uint8)

    scale = max(h, w)
    for _ in range(int(rng.integers(cfg.bg_shapes[0], cfg.bg_shapes[1] + 1))):
        col = tuple(int(x) for x in (_random_color(rng) * 255))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(scale * rng.uniform(0.03, 0.35))
        t = int(rng.choice([-1, -1, max(1, scale // 100), max(1, scale // 40)]))
        s = rng.integers(4)
        if s == 0:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r), col, t)
        elif s == 1:
            ax = (r, max(1, int(r * rng.uniform(0.3, 1))))
            cv2.ellipse(img, (cx, cy), ax, float(rng.uniform(0, 180)), 0, 360, col, t)
        elif s == 2:
            n = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.4, 1.0, n)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(img, [pts], col)
        else:
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, (cx, cy), p2, col, max(1, scale // int(rng.integers(40, 200))))
    if rng.random() < 0.3:  # fine texture
        amp = rng.uniform(5, 30)
        img = np.clip(img + rng.normal(0, amp, (h, w, 1)), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # out of focus
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0) * scale / 128)
    return img


def _random_polygon_mask(rng, h: int, w: int, centre: tuple[float, float], radius: float):
    n = int(rng.integers(3, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = radius * rng.uniform(0.5, 1.0, n)
    pts = np.stack([centre[0] + rad * np.cos(ang), centre[1] + rad * np.sin(ang)], 1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _background_depth(rng, K: np.ndarray, h: int, w: int, p_ref: np.ndarray,
                      cfg: SyntheticConfig) -> np.ndarray:
    """(h, w) float32 depth of a random plane behind the camera-frame point ``p_ref``.

    The plane crosses the ray through ``p_ref`` at ``U(0.05, 1.0)`` m behind it, tilted
    by up to 60 degrees; with probability ``1 - background_depth_prob`` there is no
    background return at all (zeros).
    """
    if rng.random() >= cfg.background_depth_prob:
        return np.zeros((h, w), np.float32)
    tilt = np.deg2rad(rng.uniform(0, 60))
    az = rng.uniform(0, 2 * np.pi)
    n = np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)])
    p_ref = np.asarray(p_ref, dtype=np.float64)
    x0 = p_ref / p_ref[2] * (p_ref[2] + rng.uniform(0.05, 1.0))
    c = float(n @ x0)  # the plane n . X = c, facing the camera
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    den = n[0] * x + n[1] * y + n[2]
    z = np.where(den > 1e-6, c / np.maximum(den, 1e-6), 0.0)
    z[(z > cfg.depth_max_m) | (z < 0)] = 0.0
    return z.astype(np.float32)


# ---------------------------------------------------------------------------------------
# shading, textures (torch, batched)
# ---------------------------------------------------------------------------------------


def _sample_lights(rng, n: int, cfg: SyntheticConfig) -> dict:
    el = np.deg2rad(rng.uniform(cfg.light_elevation_min_deg, 90, n))
    az = rng.uniform(0, 2 * np.pi, n)
    # towards the light, camera frame: mostly from the camera side (-z), tilted
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), -np.sin(el)], 1)
    tint = 1 - rng.uniform(0, cfg.light_tint, (n, 3))
    return {
        "dir": torch.as_tensor(d, dtype=torch.float32),
        "ambient": torch.as_tensor(_uniform(rng, cfg.ambient_range, n), dtype=torch.float32),
        "diffuse": torch.as_tensor(_uniform(rng, cfg.diffuse_range, n), dtype=torch.float32),
        "specular": torch.as_tensor(_uniform(rng, cfg.specular_range, n), dtype=torch.float32),
        "shininess": torch.as_tensor(_uniform(rng, cfg.shininess_range, n), dtype=torch.float32),
        "tint": torch.as_tensor(tint, dtype=torch.float32),
    }


def _phong(frags, albedo: torch.Tensor, K: torch.Tensor, light: dict) -> torch.Tensor:
    """Ambient + Lambert + Blinn-Phong specular per item; (B, H, W, 3) in [0, 1], 0 outside.

    Normals are flipped to face the camera (the renderer draws both sides of faces).
    """
    B, H, W = frags.mask.shape
    dev = albedo.device
    v, u = torch.meshgrid(
        torch.arange(H, dtype=torch.float32, device=dev),
        torch.arange(W, dtype=torch.float32, device=dev),
        indexing="ij",
    )
    K = K.to(dev, torch.float32)
    x = (u[None] - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None]
    y = (v[None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None]
    view = -F.normalize(torch.stack([x, y, torch.ones_like(x)], -1), dim=-1)  # to camera
    n = frags.normal_cam
    n = torch.where((n * view).sum(-1, keepdim=True) < 0, -n, n)
    ldir = F.normalize(light["dir"].to(dev), dim=-1)[:, None, None]
    lam = (n * ldir).sum(-1).clamp_min(0)
    half = F.normalize(ldir + view, dim=-1)
    spec = (n * half).sum(-1).clamp_min(0) ** light["shininess"].to(dev)[:, None, None]
    amb = light["ambient"].to(dev)[:, None, None, None]
    dif = light["diffuse"].to(dev)[:, None, None, None]
    sp = light["specular"].to(dev)[:, None, None, None]
    tint = light["tint"].to(dev)[:, None, None]
    rgb = albedo * (amb + dif * lam[..., None]) * tint + sp * spec[..., None] * tint
    return (rgb * frags.mask[..., None]).clamp(0, 1)


def _retexture(rng, gen, albedo, frags, diam: torch.Tensor, prob: float) -> torch.Tensor:
    """Replace the albedo of some items by a 3D pattern of the object-frame surface point."""
    B = albedo.shape[0]
    pick = rng.random(B) < prob
    if not pick.any():
        return albedo
    out = albedo.clone()
    for b in np.nonzero(pick)[0]:
        p = frags.xyz_obj[b] / float(diam[b])  # (H, W, 3), unit = diameter
        c0 = torch.as_tensor(_random_color(rng), dtype=torch.float32)
        c1 = torch.as_tensor(_random_color(rng), dtype=torch.float32)
        kind = rng.integers(3)
        if kind == 0:  # stripes
            d = torch.as_tensor(rng.normal(size=3), dtype=torch.float32)
            d = d / d.norm()
            w = (torch.sin(2 * math.pi * rng.uniform(2, 10) * (p @ d)) > 0).float()
        elif kind == 1:  # checker
            cell = rng.uniform(0.08, 0.3)
            w = (torch.floor(p / cell).sum(-1) % 2).float()
        else:  # smooth noise
            w = torch.zeros(p.shape[:-1])
            for _ in range(5):
                d = torch.as_tensor(rng.normal(size=3) * rng.uniform(1, 8), dtype=torch.float32)
                w = w + torch.sin(2 * math.pi * (p @ d) + rng.uniform(0, 2 * math.pi))
            w = (w / 5 + 0.5).clamp(0, 1)
        pat = c0 * (1 - w[..., None]) + c1 * w[..., None]
        alpha = 1.0 if rng.random() < 0.6 else rng.uniform(0.3, 0.8)
        out[b] = torch.where(frags.mask[b, ..., None], alpha * pat + (1 - alpha) * albedo[b],
                             albedo[b])
    return out


# ---------------------------------------------------------------------------------------
# sensor simulation and pixel augmentations (torch, batched)
# ---------------------------------------------------------------------------------------


def _blur_kernels(rng, B: int, cfg: SyntheticConfig, scale: float = 1.0) -> torch.Tensor | None:
    """(B, 1, k, k) per-item kernels (identity for items not blurred), or None."""
    g_blur = rng.random(B) < cfg.blur_prob
    m_blur = (rng.random(B) < cfg.motion_blur_prob) & ~g_blur
    if not (g_blur.any() or m_blur.any()):
        return None
    k = 7
    kern = np.zeros((B, k, k), np.float32)
    kern[:, k // 2, k // 2] = 1.0
    ax = np.arange(k) - k // 2
    for b in np.nonzero(g_blur)[0]:
        s = _uniform(rng, cfg.blur_sigma_range) * scale
        g = np.exp(-0.5 * (ax / max(s, 1e-3)) ** 2)
        kern[b] = np.outer(g, g) / np.outer(g, g).sum()
    for b in np.nonzero(m_blur)[0]:
        length = int(rng.integers(cfg.motion_blur_len_px[0], cfg.motion_blur_len_px[1] + 1))
        img = np.zeros((k, k), np.float32)
        a = rng.uniform(0, np.pi)
        dx, dy = np.cos(a) * (length - 1) / 2, np.sin(a) * (length - 1) / 2
        c = k // 2
        cv2.line(img, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
        kern[b] = img / img.sum()
    return torch.as_tensor(kern)[:, None]


def _apply_kernels(img: torch.Tensor, kern: torch.Tensor | None) -> torch.Tensor:
    """Per-item 2D convolution of (B, C, H, W) with (B, 1, k, k), reflect padding."""
    if kern is None:
        return img
    B, C, H, W = img.shape
    k = kern.shape[-1]
    x = F.pad(img.reshape(1, B * C, H, W), (k // 2,) * 4, mode="reflect")
    w = kern.to(img).repeat_interleave(C, 0)
    return F.conv2d(x, w, groups=B * C).reshape(B, C, H, W)


def _color_jitter(rng, img: torch.Tensor, cfg: SyntheticConfig) -> torch.Tensor:
    """Brightness, contrast, saturation, hue, channel gains and gamma; img (B, 3, H, W).

    The first five are affine in the colour, so they are folded into one per-item
    ``A @ rgb + c`` (one batched matrix product) before the gamma.
    """
    B, _, H, W = img.shape

    def fac(a, shape=(B,)):
        return 1 + rng.uniform(-a, a, shape)

    bright, contrast, sat = fac(cfg.brightness), fac(cfg.contrast), fac(cfg.saturation)
    theta = rng.uniform(-cfg.hue, cfg.hue, B) * 2 * np.pi
    gain = fac(cfg.channel_gain, (B, 3))
    gamma = torch.as_tensor(_log_uniform(rng, cfg.gamma_range, B), dtype=torch.float32)

    luma = np.array([0.299, 0.587, 0.114])
    ones = np.ones(3)
    axis = ones / np.sqrt(3)  # hue: rotate the chroma about the grey axis
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    mean = img.mean(dim=(1, 2, 3)).double().numpy()  # before brightness
    A = np.zeros((B, 3, 3))
    c = np.zeros((B, 3))
    for b in range(B):
        S_ = sat[b] * np.eye(3) + (1 - sat[b]) * np.outer(ones, luma)
        R = (np.cos(theta[b]) * np.eye(3) + np.sin(theta[b]) * cross
             + (1 - np.cos(theta[b])) * np.outer(axis, axis))
        G = np.diag(gain[b]) @ R @ S_
        A[b] = G * contrast[b] * bright[b]
        c[b] = G @ ones * (1 - contrast[b]) * bright[b] * mean[b]
    A_t = torch.as_tensor(A, dtype=torch.float32)
    c_t = torch.as_tensor(c, dtype=torch.float32)
    out = torch.baddbmm(c_t[:, :, None], A_t, img.reshape(B, 3, H * W)).reshape(B, 3, H, W)
    return out.clamp_(0, 1).pow_(gamma[:, None, None, None])


def _pixel_noise(rng, gen, img: torch.Tensor, cfg: SyntheticConfig) -> torch.Tensor:
    B = img.shape[0]
    std = torch.as_tensor(_uniform(rng, cfg.noise_std_range, B), dtype=torch.float32)
    mstd = torch.as_tensor(rng.uniform(0, cfg.mult_noise_std, B), dtype=torch.float32)
    n_add = torch.randn(img.shape, generator=gen) * std[:, None, None, None]
    # multiplicative noise shared by the channels (like shot noise on intensity)
    n_mul = 1 + torch.randn((B, 1, *img.shape[2:]), generator=gen) * mstd[:, None, None, None]
    return (img * n_mul + n_add).clamp(0, 1)


def _jpeg(rng, img: torch.Tensor, cfg: SyntheticConfig) -> torch.Tensor:
    """JPEG re-compression of some items; img (B, 3, H, W) in [0, 1]."""
    pick = np.nonzero(rng.random(img.shape[0]) < cfg.jpeg_prob)[0]
    if len(pick) == 0:
        return img
    out = img.clone()
    for b in pick:
        q = int(rng.integers(cfg.jpeg_quality_range[0], cfg.jpeg_quality_range[1] + 1))
        u8 = (img[b].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            out[b] = torch.from_numpy(dec).permute(2, 0, 1).float() / 255
    return out


def _sensor_depth(rng, gen, depth: torch.Tensor, cfg: SyntheticConfig) -> torch.Tensor:
    """Noisy, holed, quantised depth (B, 1, H, W) from clean depth (0 = no return)."""
    B, _, H, W = depth.shape
    valid = depth > 0
    a, b = cfg.depth_noise_m
    scale = torch.as_tensor(rng.uniform(0.5, 1.5, B), dtype=torch.float32)[:, None, None, None]
    d = depth + torch.randn(depth.shape, generator=gen) * (a + b * depth**2) * scale
    drop_p = torch.as_tensor(rng.uniform(0, cfg.depth_dropout_max, B), dtype=torch.float32)
    keep = torch.rand(depth.shape, generator=gen) >= drop_p[:, None, None, None]
    # depth discontinuities: drop some edge pixels
    pad = F.pad(depth, (1, 1, 1, 1), mode="replicate")
    jump = torch.zeros_like(depth, dtype=torch.bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = pad[:, :, dy : dy + H, dx : dx + W]
        jump |= (nb - depth).abs() > 0.03 + 0.02 * depth
    keep &= ~(jump & (torch.rand(depth.shape, generator=gen) < cfg.depth_edge_drop_prob))
    # blob holes: thresholded low-frequency noise
    holes = rng.random(B) < cfg.depth_hole_prob
    if holes.any():
        g = 6
        low = torch.rand((B, 1, g, g), generator=gen)
        field_ = F.interpolate(low, size=(H, W), mode="bicubic", align_corners=False)
        thr = torch.as_tensor(np.where(holes, rng.uniform(0.8, 0.95, B), 2.0), dtype=torch.float32)
        keep &= field_ < thr[:, None, None, None]
    missing = torch.as_tensor(rng.random(B) < cfg.depth_missing_prob)[:, None, None, None]
    keep &= ~missing
    d = torch.round(d * 1000) / 1000  # 1 mm quantisation
    ok = valid & keep & (d > 0) & (d <= cfg.depth_max_m)
    return torch.where(ok, d, torch.zeros_like(d))


def _finish_image(rng, gen, img: torch.Tensor, cfg: SyntheticConfig, blur_scale=1.0):
    """Blur, colour jitter, noise, JPEG: (B, 3, H, W) in [0, 1] -> same."""
    img = _apply_kernels(img, _blur_kernels(rng, img.shape[0], cfg, blur_scale))
    img = _color_jitter(rng, img, cfg)
    img = _pixel_noise(rng, gen, img, cfg)
    img = torch.round(img * 255) / 255
    return _jpeg(rng, img, cfg)


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


# ---------------------------------------------------------------------------------------
# training crops
# ---------------------------------------------------------------------------------------


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

    return {
        "image": image.float().contiguous(),
        "depth_m": depth.float().contiguous(),
        "K_crop": K_crop.float(),
        "box_xyxy": box.float(),
        "K": K_t,
        "T_gt": torch.as_tensor(T_gt, dtype=torch.float32),
        "T_init": torch.as_tensor(T_init, dtype=torch.float32),
        "mesh_idx": torch.as_tensor(mesh_idx, dtype=torch.int64),
        "visib_mask": visib[:, None],
        "mask_gt": tgt_mask[:, None].clone(),
        "depth_gt_m": tgt_depth[:, None].clone(),
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


# ---------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------


class SyntheticDataset(torch.utils.data.IterableDataset):
    """An endless (or ``num_batches`` long) stream of training batches.

    Use with ``DataLoader(dataset, batch_size=None, num_workers=n)``: every item is
    already a batch. Worker ``w`` of process ``rank`` draws from
    ``np.random.default_rng(np.random.SeedSequence([seed, rank, w]))``, so the streams
    of workers and ranks are independent and each is reproducible.

    Args:
        models: target models.
        batch_size, crop_size, cfg: see :func:`make_training_batch`.
        seed: base seed.
        rank: the process's rank in distributed training.
        num_batches: stop after this many batches per worker (None: endless).
        distractor_models: see :func:`make_training_batch`; when None and there are
            fewer than 8 models, 16 procedural ``train`` meshes (seed ``10_000 + seed``)
            serve as distractors, so a single user object never occludes itself.
        renderer_backend: given to ``make_renderer`` inside each worker.
        torch_threads: ``torch.set_num_threads`` in worker processes (None: unchanged).
    """

    def __init__(self, models: Sequence, batch_size: int = 32, crop_size: int = 128,
                 cfg: SyntheticConfig = SyntheticConfig(), seed: int = 0, rank: int = 0,
                 num_batches: int | None = None, distractor_models: Sequence | None = None,
                 renderer_backend: str = "torch", torch_threads: int | None = 1):
        super().__init__()
        self.models = list(models)
        self.batch_size, self.crop_size, self.cfg = batch_size, crop_size, cfg
        self.seed, self.rank, self.num_batches = seed, rank, num_batches
        if distractor_models is None and len(self.models) < 8:
            from pose_refiner_ros.data.procedural import procedural_models

            distractor_models = procedural_models("train", 16, seed=10_000 + seed)
        self.distractor_models = None if distractor_models is None else list(distractor_models)
        self.renderer_backend = renderer_backend
        self.torch_threads = torch_threads

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        from pose_refiner_ros.render.base import make_renderer

        info = torch.utils.data.get_worker_info()
        wid = 0 if info is None else info.id
        if info is not None and self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.rank, wid]))
        renderer = make_renderer(self.renderer_backend)
        k = 0
        while self.num_batches is None or k < self.num_batches:
            yield make_training_batch(self.models, rng, self.batch_size, self.crop_size,
                                      self.cfg, renderer, self.distractor_models)
            k += 1
