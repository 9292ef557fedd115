"""What the refiner's loop takes in, made ready: the device, the camera image as a tensor,
the network's stacked rendering input, and a per-stage timer.

Shapes: images ``(B, 3, H, W)`` float in [0, 1]; renderings ``(B, 8, S, S)`` (see
:func:`render_input`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

__all__ = ["resolve_device", "render_input", "as_image_tensor", "StageTimer"]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device: {device!r} asked for, but this machine has no CUDA device; "
            "use 'auto' or 'cpu'"
        )
    return dev


def render_input(frags, rgb: torch.Tensor, z_centre_m: torch.Tensor, diameter_m: torch.Tensor):
    """Stack the rendering channels the network takes: (B, 8, S, S).

    Args:
        frags: ``render.Fragments`` of a (B, S, S) rendering.
        rgb: (B, S, S, 3) shaded colour in [0, 1].
        z_centre_m: (B,) depth of the object origin at the rendered pose.
        diameter_m: (B,) object diameters.

    Channels: shaded RGB (3), mask (1), camera-frame normals (3), depth relative to the
    object centre in diameters (1); all 0 on the background.
    """
    mask = frags.mask.to(rgb.dtype)
    depth_rel = (frags.depth_m - z_centre_m[:, None, None]) / diameter_m[:, None, None] * mask
    return torch.cat(
        [
            rgb.permute(0, 3, 1, 2),
            mask[:, None],
            frags.normal_cam.permute(0, 3, 1, 2),
            depth_rel[:, None],
        ],
        dim=1,
    )


def as_image_tensor(image, device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB (numpy or torch) or float in [0, 1] -> (1, 3, H, W) float32."""
    t = torch.as_tensor(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if t.dim() != 3 or t.shape[-1] != 3:
        raise ValueError(f"image: expected (H, W, 3) RGB, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError("image: empty")
    t = t.to(device)
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    return t.permute(2, 0, 1)[None].contiguous()


class StageTimer:
    """Milliseconds spent per named stage (``with timer.section("render"): ...``), CUDA
    synchronised at both ends so that asynchronous kernels are counted where they run."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ms: dict = {}

    def section(self, name: str):
        timer = self

        class _Section:
            def __enter__(self):
                if timer.device.type == "cuda":
                    torch.cuda.synchronize(timer.device)
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if timer.device.type == "cuda":
                    torch.cuda.synchronize(timer.device)
                timer.ms[name] = timer.ms.get(name, 0.0) + 1e3 * (time.perf_counter() - self.t0)

        return _Section()
