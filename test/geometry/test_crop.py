"""Tests of geometry.crop: K_crop agrees with mapping full-image projections into the
crop, crop_images samples where K_crop says, degenerate poses give finite windows."""

import math

import numpy as np
import pytest
import torch

from pose_refiner_ros.geometry.camera import project
from pose_refiner_ros.geometry.crop import (
    Crop,
    compute_crops,
    crop_images,
    crop_points,
    uncrop_points,
)
from pose_refiner_ros.geometry.lie import make_T, so3_exp, transform_points

DTYPES = [torch.float32, torch.float64]
K_FULL = [[600.0, 0.0, 321.3], [0.0, 590.0, 243.7], [0.0, 0.0, 1.0]]


def _scene(B: int, dtype: torch.dtype, seed: int = 0):
    """B poses of a 10 cm box in front of the camera, and its corners and surface points."""
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor(K_FULL, dtype=dtype).expand(B, 3, 3).clone()
    R = so3_exp(torch.randn(B, 3, generator=g, dtype=dtype))
    t = torch.cat([0.1 * torch.randn(B, 2, generator=g, dtype=dtype),
                   0.5 + torch.rand(B, 1, generator=g, dtype=dtype)], dim=1)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)],
                           dtype=dtype) * 0.05
    pts = (torch.rand(B, 200, 3, generator=g, dtype=dtype) - 0.5) * 0.1
    return K, make_T(R, t), corners.expand(B, 8, 3), pts


@pytest.mark.parametrize("dtype", DTYPES)
def test_projecting_with_K_crop_equals_mapping_full_projections_into_the_crop(dtype):
    K, T, corners, pts = _scene(6, dtype)
    crop = compute_crops(K, T, corners, size=128)
    assert crop.box_xyxy.shape == (6, 4) and crop.K_crop.shape == (6, 3, 3)
    assert crop.box_xyxy.dtype == dtype and crop.size == 128
    pts_cam = transform_points(T, pts)
    uv_full = project(pts_cam, K)
    uv_crop = project(pts_cam, crop.K_crop)
    tol = {torch.float32: 2e-3, torch.float64: 1e-9}[dtype]
    torch.testing.assert_close(crop_points(uv_full, crop), uv_crop, atol=tol, rtol=0)
    torch.testing.assert_close(uncrop_points(uv_crop, crop), uv_full, atol=tol, rtol=0)


def test_window_is_square_centred_on_the_projected_box_and_holds_the_object():
    K, T, corners, pts = _scene(8, torch.float64)
    crop = compute_crops(K, T, corners, size=64, margin=1.4)
    uv = project(transform_points(T, corners), K)
    lo, hi = uv.amin(1), uv.amax(1)
    box = crop.box_xyxy
    side = box[:, 2] - box[:, 0]
    torch.testing.assert_close(box[:, 3] - box[:, 1], side)
    torch.testing.assert_close(side, 1.4 * (hi - lo).amax(-1))
    torch.testing.assert_close(0.5 * (box[:, :2] + box[:, 2:]), 0.5 * (lo + hi))
    uv_crop = project(transform_points(T, corners), crop.K_crop)
    assert (uv_crop > -0.5).all() and (uv_crop < 63.5).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_crop_images_samples_exactly_where_K_crop_projects(dtype):
    """Full images whose pixels hold their own (u, v): bilinear sampling of a linear
    ramp is exact, so each crop pixel must hold the full-image coordinate of its centre
    (uncrop_points), and a 3D point projected with K_crop onto a crop pixel centre must
    be the point that K projects onto the value stored there."""
    H, W = 480, 640
    v, u = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype),
                          indexing="ij")
    K, T, corners, _ = _scene(4, dtype, seed=1)
    crop = compute_crops(K, T, corners, size=32)
    out = crop_images(torch.stack([u, v])[None].expand(4, 2, H, W), crop)
    assert out.shape == (4, 2, 32, 32) and out.dtype == dtype
    jj, ii = torch.meshgrid(torch.arange(32, dtype=dtype), torch.arange(32, dtype=dtype),
                            indexing="xy")
    uv_crop = torch.stack([jj, ii], -1).reshape(1, -1, 2).expand(4, -1, -1)
    expected = uncrop_points(uv_crop, crop)  # (4, 1024, 2)
    got = out.permute(0, 2, 3, 1).reshape(4, -1, 2)
    tol = {torch.float32: 5e-3, torch.float64: 1e-9}[dtype]
    torch.testing.assert_close(got, expected, atol=tol, rtol=0)
    # Rays through crop pixel centres (K_crop) hit the full image where the ramp says.
    rays = torch.cat([uv_crop, torch.ones_like(uv_crop[..., :1])], -1) @ torch.linalg.inv(
        crop.K_crop).transpose(-1, -2)
    torch.testing.assert_close(project(rays, K), got, atol=tol, rtol=0)


def test_known_pattern_lands_on_the_right_crop_pixels():
    """Dots at known pixels, a window aligned to pixel edges at scale 1 and at scale 2."""
    H, W = 60, 80
    image = torch.zeros(1, 1, H, W)
    image[0, 0, 20, 30] = 1.0  # (u, v) = (30, 20)
    image[0, 0, 25, 41] = 2.0  # (u, v) = (41, 25)
    K = torch.tensor(K_FULL)[None]
    # Scale 1: window of 16 px whose top-left pixel is full pixel (28, 18).
    crop = Crop(box_xyxy=torch.tensor([[27.5, 17.5, 43.5, 33.5]]), K_crop=K, size=16)
    out = crop_images(image, crop, mode="nearest")[0, 0]
    assert out[2, 2] == 1.0 and out[7, 13] == 2.0 and out.sum() == 3.0
    torch.testing.assert_close(crop_images(image, crop)[0, 0], out)  # exact grid: no blur
    # Scale 2: each full pixel becomes a 2x2 block.
    crop2 = Crop(box_xyxy=torch.tensor([[27.5, 17.5, 35.5, 25.5]]), K_crop=K, size=16)
    out2 = crop_images(image, crop2, mode="nearest")[0, 0]
    assert (out2[4:6, 4:6] == 1.0).all() and out2.sum() == 4.0
    # A point that K projects on (30, 20) projects on the centre of that block with the
    # K_crop that compute_crops would build for this window.
    from pose_refiner_ros.geometry.crop import _crop_from_box

    K_crop = _crop_from_box(K, crop2.box_xyxy, 16).K_crop
    ray = torch.linalg.solve(K[0], torch.tensor([30.0, 20.0, 1.0]))
    torch.testing.assert_close(project(ray[None, None], K_crop)[0, 0], torch.tensor([4.5, 4.5]))


def test_outside_the_image_is_zero():
    image = torch.ones(1, 3, 40, 40)
    crop = Crop(box_xyxy=torch.tensor([[-20.5, -20.5, 19.5, 19.5]]), K_crop=torch.eye(3)[None],
                size=40)
    out = crop_images(image, crop)
    # float32 normalised coordinates leave ~1e-7 weights on the neighbour row.
    assert out[..., :20, :].abs().max() < 1e-6 and out[..., :, :20].abs().max() < 1e-6
    torch.testing.assert_close(out[..., 20:, 20:], torch.ones(1, 3, 20, 20))


def test_degenerate_poses_give_finite_windows():
    K = torch.tensor(K_FULL).expand(4, 3, 3)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)],
                           dtype=torch.float32).expand(4, 8, 3) * 0.05
    eye = torch.eye(3)
    T = torch.stack([
        make_T(eye, torch.tensor([0.0, 0.0, -1.0])),  # behind the camera
        make_T(eye, torch.tensor([0.0, 0.0, 0.02])),  # straddling the camera plane
        make_T(eye, torch.tensor([0.0, 0.0, 1e4])),  # 10 km away: a point
        make_T(so3_exp(torch.tensor([0.0, math.pi / 2, 0.0])), torch.tensor([0.0, 0.0, 0.5])),
    ])
    crop = compute_crops(K, T, corners, size=64, min_side_px=8.0)
    assert torch.isfinite(crop.box_xyxy).all() and torch.isfinite(crop.K_crop).all()
    side = crop.box_xyxy[:, 2] - crop.box_xyxy[:, 0]
    # Behind: centred on the principal point, about the whole image.
    torch.testing.assert_close(0.5 * (crop.box_xyxy[0, :2] + crop.box_xyxy[0, 2:]),
                               torch.tensor([321.3, 243.7]))
    assert side[0] == pytest.approx(2 * 321.3 + 1)
    assert side[1] > 640  # in front of the camera only just: huge but finite
    assert side[2] == 8.0  # clamped to the minimum
    assert 50 < side[3] < 200


def test_crop_ignores_gradients_and_checks_shapes():
    K, T, corners, _ = _scene(2, torch.float64)
    T = T.clone().requires_grad_(True)
    crop = compute_crops(K, T, corners, size=16)
    assert not crop.K_crop.requires_grad
    with pytest.raises(ValueError, match=r"T_cam_obj must have shape \(2, 4, 4\)"):
        compute_crops(K, T[:1], corners, size=16)
    with pytest.raises(ValueError, match=r"pts_obj must have shape \(2, M, 3\)"):
        compute_crops(K, T, corners[..., :2], size=16)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        compute_crops(K, T, corners, size=0)
    with pytest.raises(ValueError, match="crop has 2 windows but images has batch size 3"):
        crop_images(torch.zeros(3, 1, 8, 8), crop)
    with pytest.raises(ValueError, match="floating-point"):
        crop_images(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), crop)
    assert np.isfinite(crop.scale.numpy()).all()
