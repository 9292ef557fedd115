"""Backgrounds of the synthetic images (NumPy / OpenCV, one image at a time): procedural
patterns, real photographs bundled inside scikit-image's wheel (no download), random
polygons for flat occluders, and a plausible depth behind the objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from .draws import _random_color

if TYPE_CHECKING:  # for annotations only: synthetic imports this module
    from .synthetic import SyntheticConfig


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
