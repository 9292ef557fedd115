"""Zoom-in crops for render-and-compare refinement.

A crop is a square window of the full image, resampled to ``size x size`` pixels, with
the intrinsics ``K_crop`` of the resampled image: rendering with ``K_crop`` gives
exactly the pixels that :func:`crop_images` cuts out of the full image.

Pixel convention (the package's): the centre of the top-left pixel is ``(0, 0)``, so
pixel ``i`` covers ``[i - 0.5, i + 0.5]``. A window ``box_xyxy = (x0, y0, x1, y1)``
gives the *outer edges* of the crop in continuous full-image coordinates; with the
scale ``s = size / (x1 - x0)`` crop pixel ``k`` has its centre at full-image
coordinate ``x0 + (k + 0.5) / s``, i.e.

    u_crop = s (u_full - x0) - 0.5,      K_crop = A @ K,
    A = [[s, 0, -s x0 - 0.5], [0, s, -s y0 - 0.5], [0, 0, 1]].

``crop_images`` samples with ``grid_sample(align_corners=False)``, whose pixel centres
follow the same convention, so the two agree to floating-point precision. The window
may extend beyond the image; samples there are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pose_refiner_ros.geometry.camera import project
from pose_refiner_ros.geometry.lie import transform_points

__all__ = ["Crop", "compute_crops", "crop_images", "crop_points", "uncrop_points"]


@dataclass(frozen=True, eq=False)
class Crop:
    """A batch of square crop windows.

    Attributes:
        box_xyxy: ``(B, 4)`` window ``(x0, y0, x1, y1)``: its outer edges in full-image
            pixel coordinates (the top-left pixel's outer corner is ``(-0.5, -0.5)``);
            ``x1 - x0 == y1 - y0`` is the side, > 0.
        K_crop: ``(B, 3, 3)`` intrinsics of the ``size x size`` crop, pixels.
        size: side of the resampled crop, pixels.
    """

    box_xyxy: torch.Tensor
    K_crop: torch.Tensor
    size: int

    @property
    def scale(self) -> torch.Tensor:
        """``(B,)`` crop pixels per full-image pixel."""
        return self.size / (self.box_xyxy[:, 2] - self.box_xyxy[:, 0])


def _crop_from_box(K: torch.Tensor, box_xyxy: torch.Tensor, size: int) -> Crop:
    s = size / (box_xyxy[:, 2] - box_xyxy[:, 0])
    A = torch.zeros_like(K)
    A[:, 0, 0] = s
    A[:, 1, 1] = s
    A[:, 0, 2] = -s * box_xyxy[:, 0] - 0.5
    A[:, 1, 2] = -s * box_xyxy[:, 1] - 0.5
    A[:, 2, 2] = 1.0
    return Crop(box_xyxy=box_xyxy, K_crop=A @ K, size=size)


def compute_crops(
    K: torch.Tensor,
    T_cam_obj: torch.Tensor,
    pts_obj: torch.Tensor,
    size: int,
    margin: float = 1.4,
    min_side_px: float = 8.0,
    min_depth_m: float = 1e-3,
) -> Crop:
    """Square windows centred on the projected extent of an object at a pose.

    The window is centred on the 2D bounding box of ``pts_obj`` projected at
    ``T_cam_obj``; its side is the box's larger side times ``margin``, at least
    ``min_side_px`` (so that a far or point-like object still gets a window of a few
    pixels rather than a degenerate one).

    Poses with the object (partly) behind the camera: only points deeper than
    ``min_depth_m`` count; points just in front of the camera project far away, so the
    window grows large (it stays finite). When no point is in front, the window is
    centred on the principal point with side ``2 max(cx, cy) + 1`` (about the whole
    image): a failed pose gets a valid, if useless, crop instead of NaNs.

    The window is a function of the pose but is returned detached: it defines a fixed
    image resampling, not a quantity to differentiate.

    Args:
        K: ``(B, 3, 3)`` intrinsics of the full image, pixels.
        T_cam_obj: ``(B, 4, 4)`` object poses in the camera frame.
        pts_obj: ``(B, M, 3)`` object points (e.g. the 8 bounding-box corners or
            surface samples), object frame, metres.
        size: side of the resampled crop, pixels.
        margin: window side over the projected extent, >= 1 to keep the object inside.
        min_side_px: smallest window side, full-image pixels.
        min_depth_m: points at smaller depth are ignored.
    Returns:
        :class:`Crop` with ``box_xyxy (B, 4)`` and ``K_crop (B, 3, 3)`` in ``K``'s dtype.
    """
    B = K.shape[0] if K.ndim == 3 else -1
    if K.ndim != 3 or tuple(K.shape[1:]) != (3, 3):
        raise ValueError(f"K must have shape (B, 3, 3), got {tuple(K.shape)}")
    if tuple(T_cam_obj.shape) != (B, 4, 4):
        raise ValueError(f"T_cam_obj must have shape ({B}, 4, 4), got {tuple(T_cam_obj.shape)}")
    if pts_obj.ndim != 3 or pts_obj.shape[0] != B or pts_obj.shape[2] != 3 or pts_obj.shape[1] < 1:
        raise ValueError(f"pts_obj must have shape ({B}, M, 3), M >= 1, got {tuple(pts_obj.shape)}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if margin <= 0 or min_side_px <= 0:
        raise ValueError(f"margin and min_side_px must be > 0, got {margin}, {min_side_px}")
    K = K.detach()
    pts_cam = transform_points(T_cam_obj.detach().to(K.dtype), pts_obj.detach().to(K.dtype))
    uv = project(pts_cam, K, min_depth_m=min_depth_m)  # (B, M, 2)
    in_front = (pts_cam[..., 2] > min_depth_m)[..., None]  # (B, M, 1)
    lo = torch.where(in_front, uv, torch.full_like(uv, torch.inf)).amin(dim=1)  # (B, 2)
    hi = torch.where(in_front, uv, torch.full_like(uv, -torch.inf)).amax(dim=1)
    visible = in_front.any(dim=1)  # (B, 1)
    principal = K[:, :2, 2]
    centre = torch.where(visible, 0.5 * (lo + hi), principal)
    side = torch.where(
        visible[:, 0],
        (hi - lo).amax(dim=-1) * margin,
        2.0 * principal.amax(dim=-1) + 1.0,
    ).clamp_min(min_side_px)
    half = 0.5 * side[:, None]
    box_xyxy = torch.cat([centre - half, centre + half], dim=-1)
    return _crop_from_box(K, box_xyxy, int(size))


def crop_images(images: torch.Tensor, crop: Crop, mode: str = "bilinear") -> torch.Tensor:
    """Resample the crop windows out of full images, consistently with ``K_crop``.

    Args:
        images: ``(B, C, H, W)`` floating-point images (expand a single image over the
            batch with ``image.expand(B, -1, -1, -1)``, which does not copy).
        crop: windows from :func:`compute_crops`, batch size ``B``.
        mode: ``"bilinear"``, or ``"nearest"`` for masks, depth and labels.
    Returns:
        ``(B, C, size, size)``; samples outside the image are 0 (with bilinear, samples
        within half a pixel of the border blend towards 0).
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got {images.dtype}")
    B, _, H, W = images.shape
    if crop.box_xyxy.shape[0] != B:
        raise ValueError(
            f"crop has {crop.box_xyxy.shape[0]} windows but images has batch size {B}"
        )
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    box = crop.box_xyxy.to(device=images.device, dtype=images.dtype)
    k = torch.arange(crop.size, device=images.device, dtype=images.dtype) + 0.5
    step = (box[:, 2] - box[:, 0])[:, None] / crop.size  # (B, 1)
    x = box[:, 0:1] + k * step  # (B, S) full-image coordinates of the crop pixel centres
    y = box[:, 1:2] + k * step
    # grid_sample(align_corners=False): normalised g = (2 x + 1) / W - 1 is pixel centre x.
    gx = (2.0 * x + 1.0) / W - 1.0
    gy = (2.0 * y + 1.0) / H - 1.0
    S = crop.size
    grid = torch.stack([gx[:, None, :].expand(B, S, S), gy[:, :, None].expand(B, S, S)], dim=-1)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def crop_points(uv_full: torch.Tensor, crop: Crop) -> torch.Tensor:
    """Map full-image pixel coordinates into crop pixel coordinates.

    Args:
        uv_full: ``(B, N, 2)`` full-image pixels.
        crop: ``B`` windows.
    Returns:
        ``(B, N, 2)`` crop pixels, ``s (uv_full - (x0, y0)) - 0.5``.
    """
    s = crop.scale[:, None, None].to(uv_full.dtype)
    return s * (uv_full - crop.box_xyxy[:, None, :2].to(uv_full.dtype)) - 0.5


def uncrop_points(uv_crop: torch.Tensor, crop: Crop) -> torch.Tensor:
    """Map crop pixel coordinates back to full-image pixel coordinates.

    Args:
        uv_crop: ``(B, N, 2)`` crop pixels.
        crop: ``B`` windows.
    Returns:
        ``(B, N, 2)`` full-image pixels, ``(x0, y0) + (uv_crop + 0.5) / s``.
    """
    s = crop.scale[:, None, None].to(uv_crop.dtype)
    return crop.box_xyxy[:, None, :2].to(uv_crop.dtype) + (uv_crop + 0.5) / s
