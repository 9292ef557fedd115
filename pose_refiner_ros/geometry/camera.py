"""Pinhole camera: projection, back-projection, and the camera of a published image.

Conventions (those of the package): OpenCV camera axes (x right, y down, z forward),
pixels ``(u, v)`` = (column, row) with the centre of the top-left pixel at ``(0, 0)``,
so pixel ``i`` covers ``[i - 0.5, i + 0.5]``; depth is the ``z`` coordinate in metres,
not the length of the ray.

``project`` / ``backproject`` are batched torch functions for the ideal pinhole ``K``.
``CameraModel`` (numpy, :mod:`.camera_model`, re-exported here) describes one published
ROS image and undistorts it, so that everything downstream sees a pinhole camera.
"""

from __future__ import annotations

import torch

from .camera_model import DISTORTION_MODELS, CameraModel, RegionOfInterest

__all__ = [
    "project",
    "backproject",
    "RegionOfInterest",
    "CameraModel",
    "DISTORTION_MODELS",
]


def _check_K(K: torch.Tensor) -> None:
    if not isinstance(K, torch.Tensor) or K.ndim < 2 or tuple(K.shape[-2:]) != (3, 3):
        shape = tuple(K.shape) if isinstance(K, torch.Tensor) else type(K).__name__
        raise ValueError(f"K must have shape (..., 3, 3), got {shape}")


def project(pts_cam: torch.Tensor, K: torch.Tensor, min_depth_m: float = 1e-6) -> torch.Tensor:
    """Pinhole projection of camera-frame points to pixels.

    Points at or behind the camera (``z <= min_depth_m``) are projected as if their
    depth were ``min_depth_m``: they land far outside the image in the direction of
    their ``(x, y)`` but stay finite (no inf or NaN), and the gradient with respect to
    their ``z`` is zero. Callers that care mask them with ``pts_cam[..., 2] > min_depth_m``.

    Args:
        pts_cam: ``(B, N, 3)`` points in the camera optical frame, metres (any leading
            shape ``(..., N, 3)``).
        K: ``(B, 3, 3)`` intrinsics in pixels (leading shape broadcast with
            ``pts_cam``'s); the skew ``K[0, 1]`` is honoured.
        min_depth_m: the depth that smaller ones are clamped to.
    Returns:
        ``(B, N, 2)`` pixel coordinates ``(u, v)``.
    """
    if pts_cam.ndim < 2 or pts_cam.shape[-1] != 3:
        raise ValueError(f"pts_cam must have shape (..., N, 3), got {tuple(pts_cam.shape)}")
    _check_K(K)
    z = pts_cam[..., 2:].clamp_min(min_depth_m)
    xy1 = torch.cat([pts_cam[..., :2] / z, torch.ones_like(z)], dim=-1)
    # Broadcast products rather than a batched matmul (see ``lie.transform_points``).
    return (K[..., None, :2, :] * xy1[..., :, None, :]).sum(-1)


def backproject(uv: torch.Tensor, depth_m: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`project` for points of known depth.

    Args:
        uv: ``(B, N, 2)`` pixel coordinates (any leading shape ``(..., N, 2)``).
        depth_m: ``(B, N)`` depth (the ``z`` coordinate, not the ray length), metres;
            a depth of 0 (the usual invalid value of depth images) gives the point
            ``(0, 0, 0)``.
        K: ``(B, 3, 3)`` intrinsics, leading shape broadcast with ``uv``'s.
    Returns:
        ``(B, N, 3)`` points in the camera optical frame, metres.
    """
    if uv.ndim < 2 or uv.shape[-1] != 2:
        raise ValueError(f"uv must have shape (..., N, 2), got {tuple(uv.shape)}")
    if tuple(depth_m.shape) != tuple(uv.shape[:-1]):
        raise ValueError(
            f"depth_m must have shape {tuple(uv.shape[:-1])} (uv's without the last "
            f"axis), got {tuple(depth_m.shape)}"
        )
    _check_K(K)
    fx, s, cx = K[..., 0:1, 0], K[..., 0:1, 1], K[..., 0:1, 2]
    fy, cy = K[..., 1:2, 1], K[..., 1:2, 2]
    y_n = (uv[..., 1] - cy) / fy
    x_n = (uv[..., 0] - cx - s * y_n) / fx
    return torch.stack([x_n * depth_m, y_n * depth_m, depth_m], dim=-1)
