"""Synthetic motion sequences with ground truth, for evaluating tracking.

A sequence is a fixed scene (camera intrinsics, background photo or pattern, lights,
objects with their colours) in which every object moves smoothly relative to the camera:
each translation axis and each rotation-vector component is a sum of two sinusoids,
scaled so that the speed stays below ``max_speed_m_s`` and the angular speed below
``max_rot_deg_s``. Optionally an occluder (another mesh) crosses in front of the first
object during the middle third of the sequence. Frames are rendered like the synthetic
training scenes (``data.synthetic``: Phong shading, sensor noise, depth with sensor
artefacts), with the appearance held fixed from frame to frame: the camera's blur,
colour response and JPEG quality are drawn once per sequence (a camera does not redraw
them every frame; redrawn, they made consecutive frames differ in brightness and
sharpness), while the sensor noise is new in every frame.

Frames: :class:`SequenceFrame` with the image, depth, intrinsics and each object's
ground-truth pose ``T_cam_obj`` (metres, OpenCV camera axes) and visible fraction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation
import torch

from . import synthetic as syn
from .backgrounds import _background, _background_depth
from .draws import _torch_gen
from .image_effects import _finish_image, _sensor_depth
from .item_shading import _phong, _sample_lights

__all__ = ["MotionConfig", "SequenceFrame", "generate_sequence"]


@dataclass(frozen=True)
class MotionConfig:
    """Settings of :func:`generate_sequence`.

    Attributes:
        n_frames: frames per sequence; rate_hz: frames per second.
        max_speed_m_s: largest speed of an object relative to the camera.
        max_rot_deg_s: largest angular speed of an object.
        objects: objects per sequence.
        occluder: an occluder crosses in front of the first object mid-sequence.
        width, height: image size, pixels.
    """

    n_frames: int = 300
    rate_hz: float = 30.0
    max_speed_m_s: float = 0.3
    max_rot_deg_s: float = 90.0
    objects: int = 1
    occluder: bool = True
    width: int = 640
    height: int = 480

    def __post_init__(self):
        if self.n_frames < 1 or self.rate_hz <= 0 or self.objects < 1:
            raise ValueError("motion: n_frames, rate_hz and objects must be positive")


@dataclass(frozen=True)
class SequenceFrame:
    """One frame: ``image_rgb`` (H, W, 3) uint8, ``depth_m`` (H, W) float32 (0 = none),
    ``K`` (3, 3), ``objects``: ``(class_id, T_cam_obj_gt (4, 4), visib_fract)``."""

    image_rgb: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray
    objects: list


def _smooth(rng, n_dims: int, max_rate: float, times: np.ndarray) -> np.ndarray:
    """(T, n_dims) zero-start smooth curves whose rate of change stays below
    ``max_rate`` (norm over the dimensions)."""
    w = rng.uniform(0.6, 2.5, (2, n_dims))  # rad/s
    ph = rng.uniform(0, 2 * np.pi, (2, n_dims))
    a = rng.uniform(0.5, 1.0, (2, n_dims))
    # rate <= sum_k a_k w_k per dim; the norm over dims <= sqrt(n) * that
    peak = np.sqrt(n_dims) * (a * w).sum(0).max()
    a = a * max_rate / peak
    x = (a[:, None] * (np.sin(w[:, None] * times[None, :, None] + ph[:, None])
                       - np.sin(ph[:, None]))).sum(0)
    return x


def generate_sequence(models: Sequence, rng: np.random.Generator,
                      cfg: MotionConfig = MotionConfig(),
                      synth: syn.SyntheticConfig | None = None,
                      renderer=None) -> Iterator[SequenceFrame]:
    """Yield the frames of one motion sequence (module docstring).

    Args:
        models: ``ObjectModel`` s; the tracked objects are drawn from them and the
            occluder is another one when there is one.
        rng: numpy generator (the sequence is a deterministic function of its state).
        cfg: motion settings; synth: appearance settings (image size taken from ``cfg``).
        renderer: a ``render.Renderer`` (default: the torch rasterizer).
    """
    if renderer is None:
        from ..render.base import make_renderer

        renderer = make_renderer("torch")
    base = synth or syn.SyntheticConfig()
    s = cfg.width / 640.0
    sc = replace(base, image_width=cfg.width, image_height=cfg.height,
                 focal_range_px=(base.focal_range_px[0] * s, base.focal_range_px[1] * s),
                 apparent_size_px=(base.apparent_size_px[0] * s, base.apparent_size_px[1] * s),
                 centre_margin=max(base.centre_margin, 0.3))
    H, W = cfg.height, cfg.width
    gen = _torch_gen(rng)
    K = syn._sample_intrinsics(rng, sc, 1)[0]
    # A child stream: drawing from ``rng`` itself would change every later draw.
    camera_seed = int(rng.spawn(1)[0].integers(2**62))
    n = cfg.objects
    idx = rng.choice(len(models), n, replace=n > len(models))
    diam = np.array([models[i].diameter_m for i in idx])
    T0 = syn._place_without_overlap(rng, sc, K, diam)
    times = np.arange(cfg.n_frames) / cfg.rate_hz
    trans = [_smooth(rng, 3, cfg.max_speed_m_s, times) for _ in range(n)]
    rots = [_smooth(rng, 3, np.radians(cfg.max_rot_deg_s), times) for _ in range(n)]
    all_models = [models[i] for i in idx]
    occ = None
    if cfg.occluder:
        rest = [m for k, m in enumerate(models) if k not in set(idx.tolist())] or list(models)
        om = rest[int(rng.integers(len(rest)))]
        all_models.append(om)
        occ = om
    uniq = list({id(m): m for m in all_models}.values())
    meshes = syn._render_meshes(uniq)
    mesh_idx = torch.as_tensor([[id(u) for u in uniq].index(id(m)) for m in all_models],
                               dtype=torch.int64)
    lights = _sample_lights(rng, len(all_models), sc)
    bg = torch.from_numpy(_background(rng, H, W, sc)).float() / 255
    p_far = T0[:, :3, 3].mean(0) * (1 + 2 * diam.max() / T0[:, 2, 3].min())
    bg_depth = torch.from_numpy(_background_depth(rng, K, H, W, p_far, sc))
    R_occ = Rotation.random(random_state=rng).as_matrix()
    sweep = rng.choice([-1.0, 1.0])
    Kt = torch.as_tensor(np.tile(K, (len(all_models), 1, 1)), dtype=torch.float32)
    for f in range(len(times)):
        T = np.tile(np.eye(4), (len(all_models), 1, 1))
        for k in range(n):
            T[k, :3, :3] = Rotation.from_rotvec(rots[k][f]).as_matrix() @ T0[k, :3, :3]
            T[k, :3, 3] = T0[k, :3, 3] + trans[k][f]
        if occ is not None:  # crosses in front of object 0 during the middle third
            phase = (f / max(cfg.n_frames - 1, 1) - 1 / 3) * 3  # 0..1 in the middle third
            z = T[0, 2, 3] - diam[0] / 2 - occ.diameter_m / 2 - 0.02
            off = sweep * (2.0 * phase - 1.0) * 1.5 * (diam[0] + occ.diameter_m) / 2
            if 0 <= phase <= 1 and z > 0.1:
                T[-1, :3, :3] = R_occ
                T[-1, :3, 3] = T[0, :3, 3] * z / T[0, 2, 3] + [off, 0.2 * off, 0]
            else:
                T[-1, :3, 3] = [0, 0, -10.0]  # behind the camera: not rendered
        frags = renderer.render(meshes, mesh_idx, Kt, torch.as_tensor(T, dtype=torch.float32),
                                H, W)
        albedo = syn._albedo(frags, meshes, mesh_idx)
        rgb = _phong(frags, albedo, Kt, lights)
        inf = torch.tensor(float("inf"))
        zbuf = torch.where(frags.mask, frags.depth_m, inf)
        zmin, who = zbuf.min(0)
        bg_z = torch.where(bg_depth > 0, bg_depth, inf)
        front = torch.isfinite(zmin) & (zmin <= bg_z)
        img = torch.where(front[..., None], rgb[who, torch.arange(H)[:, None], torch.arange(W)],
                          bg)
        depth = torch.where(front, zmin, bg_depth)
        # The same camera in every frame: its draws repeat, the noise (``gen``) does not.
        img = _finish_image(np.random.default_rng(camera_seed), gen,
                            img.permute(2, 0, 1)[None], sc)[0]
        depth_s = _sensor_depth(rng, gen, depth[None, None], sc)[0, 0]
        who = torch.where(front, who, torch.full_like(who, -1))
        objs = []
        for k in range(n):
            full = frags.mask[k].sum().item()
            vis = (who == k).sum().item() / full if full else 0.0
            objs.append((all_models[k].class_id, T[k].copy(), float(vis)))
        # C order, as a camera driver delivers it: NumPy keeps the permuted (planar)
        # layout through arithmetic, and consumers paid for it (tracking 8.5 against
        # 5.8 ms per frame).
        rgb8 = np.ascontiguousarray((img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
        yield SequenceFrame(image_rgb=rgb8,
                            depth_m=depth_s.numpy().astype(np.float32), K=K, objects=objs)
