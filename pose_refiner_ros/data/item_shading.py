"""Shading of the synthetic items (torch, batched): a light per item, the Phong model of
``render.shading.shade`` written out per item, and random retexturing.

``render.shading.shade`` takes one light for the whole batch; here every sample and
sprite gets its own light direction, weights and tint, so the same model (ambient +
Lambert + Blinn-Phong, two-sided normals) is written out per item (``_phong``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .draws import _random_color, _uniform

if TYPE_CHECKING:  # for annotations only: synthetic imports this module
    from .synthetic import SyntheticConfig


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
