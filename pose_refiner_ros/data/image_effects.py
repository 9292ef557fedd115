"""Sensor simulation and pixel augmentations of the synthetic images (torch, batched).

Those of the GCF supplementary that keep the geometry exact: additive Gaussian and
multiplicative noise, colour jitter (brightness, contrast, saturation, hue, per-channel
gain, gamma), Gaussian and motion blur, JPEG compression; depth gets distance-dependent
noise, dropout, hole blobs, edge holes and 1 mm quantisation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .draws import _log_uniform, _uniform

if TYPE_CHECKING:  # for annotations only: synthetic imports this module
    from .synthetic import SyntheticConfig


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
