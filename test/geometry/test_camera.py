"""Tests of geometry.camera: projection against OpenCV, round trips, CameraInfo binning
and ROI against a simulated sensor, validation errors, rectification against
cv2.undistortPoints."""

import cv2
import numpy as np
import pytest
import torch

from pose_refiner_ros.geometry.camera import (
    CameraModel,
    RegionOfInterest,
    backproject,
    project,
)

DTYPES = [torch.float32, torch.float64]
K_FULL = np.array([[600.0, 0.0, 321.3], [0.0, 590.0, 243.7], [0.0, 0.0, 1.0]])


def _points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-0.3, 0.3, n), rng.uniform(-0.2, 0.2, n),
                     rng.uniform(0.4, 2.0, n)], axis=1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_matches_opencv_and_backproject_inverts_it(dtype):
    pts = _points(50)
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K_FULL, None)
    K = torch.tensor(K_FULL, dtype=dtype)
    uv = project(torch.tensor(pts, dtype=dtype)[None], K[None])
    assert uv.shape == (1, 50, 2) and uv.dtype == dtype
    tol = {torch.float32: 1e-3, torch.float64: 1e-9}[dtype]
    np.testing.assert_allclose(uv[0].double().numpy(), ref[:, 0], atol=tol)
    back = backproject(uv, torch.tensor(pts[:, 2], dtype=dtype)[None], K[None])
    np.testing.assert_allclose(back[0].double().numpy(), pts, atol=tol * 1e-2)


def test_project_with_skew_and_batch_broadcasting():
    K = torch.tensor(K_FULL)
    K[0, 1] = 3.0
    pts = torch.tensor(_points(10)).expand(4, 10, 3)
    uv = project(pts, K)  # one K for the whole batch
    x, y, z = pts.unbind(-1)
    torch.testing.assert_close(uv[..., 0], K[0, 0] * x / z + K[0, 1] * y / z + K[0, 2])
    torch.testing.assert_close(uv[..., 1], K[1, 1] * y / z + K[1, 2])
    torch.testing.assert_close(backproject(uv, z, K.expand(4, 3, 3)), pts)


def test_project_points_behind_the_camera_stay_finite():
    pts = torch.tensor([[[0.1, 0.2, 0.0], [0.1, -0.2, -1.0], [0.0, 0.0, 0.0]]],
                       requires_grad=True)
    uv = project(pts, torch.tensor(K_FULL, dtype=torch.float32)[None])
    assert torch.isfinite(uv).all()
    assert uv[0, 0, 0] > 1e4 and uv[0, 1, 1] < -1e4  # far out, in the (x, y) direction
    uv.sum().backward()
    assert torch.isfinite(pts.grad).all()


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"pts_cam must have shape \(\.\.\., N, 3\)"):
        project(torch.zeros(5, 2), torch.eye(3))
    with pytest.raises(ValueError, match=r"K must have shape \(\.\.\., 3, 3\)"):
        project(torch.zeros(5, 3), torch.eye(4))
    with pytest.raises(ValueError, match="depth_m must have shape"):
        backproject(torch.zeros(2, 5, 2), torch.zeros(2, 4), torch.eye(3))


# -- CameraInfo semantics ------------------------------------------------------------


def _sensor_ramp(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution images whose pixel values are their own (u, v) centres."""
    return np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))


def _bin(image: np.ndarray, bx: int, by: int) -> np.ndarray:
    h, w = image.shape[0] // by * by, image.shape[1] // bx * bx
    return image[:h, :w].reshape(h // by, by, w // bx, bx).mean(axis=(1, 3))


@pytest.mark.parametrize(
    "binning, roi",
    [((0, 0), None), ((2, 2), None), ((4, 2), None), ((1, 1), (40, 24, 320, 240)),
     ((2, 3), (41, 23, 322, 243))],
)
def test_published_intrinsics_match_a_simulated_sensor(binning, roi):
    """Bin and crop a sensor whose pixels hold their own full-resolution coordinates;
    the published K must map each published pixel back to the coordinate it holds."""
    width, height = 640, 480
    keys = ("x_offset", "y_offset", "width", "height")
    roi_msg = None if roi is None else dict(zip(keys, roi, strict=True))
    cam = CameraModel.from_camera_info(
        width=width, height=height, K=K_FULL.ravel().tolist(), D=[0.0] * 5,
        binning_x=binning[0], binning_y=binning[1], roi=roi_msg,
    ).validate()
    u_full, v_full = _sensor_ramp(width, height)
    if roi is not None:
        x0, y0, w, h = roi
        u_full, v_full = u_full[y0:y0 + h, x0:x0 + w], v_full[y0:y0 + h, x0:x0 + w]
    bx, by = max(binning[0], 1), max(binning[1], 1)
    u_pub, v_pub = _bin(u_full, bx, by), _bin(v_full, bx, by)
    assert (cam.height, cam.width) == u_pub.shape
    # Published pixel (j, i) -> ray through the published K -> full-resolution pixel.
    jj, ii = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    rays = np.stack([jj, ii, np.ones_like(jj)], -1) @ np.linalg.inv(cam.K).T
    uv_full = rays @ K_FULL.T
    np.testing.assert_allclose(uv_full[..., 0], u_pub, atol=1e-9)
    np.testing.assert_allclose(uv_full[..., 1], v_pub, atol=1e-9)


def test_image_geometry_convention_and_P():
    P = np.hstack([K_FULL, np.zeros((3, 1))])
    P[:2, :3] *= 1.01
    kwargs = dict(width=640, height=480, K=K_FULL, P=P.ravel(), binning_x=2, binning_y=2,
                  roi=RegionOfInterest(10, 20, 300, 200))
    ig = CameraModel.from_camera_info(match_image_geometry=True, **kwargs)
    np.testing.assert_allclose(ig.K, [[300.0, 0, (321.3 - 10) / 2], [0, 295.0, (243.7 - 20) / 2],
                                      [0, 0, 1]])
    exact = CameraModel.from_camera_info(**kwargs)
    np.testing.assert_allclose(exact.K[:2, 2] - ig.K[:2, 2], [-0.25, -0.25])
    assert (exact.width, exact.height) == (150, 100)
    np.testing.assert_allclose(exact.P[:, :3][:2, :2], P[:2, :2] / 2)
    assert exact.P[0, 2] == pytest.approx((P[0, 2] - 10 + 0.5) / 2 - 0.5)
    rect = CameraModel.from_camera_info(image_is_rectified=True, D=[0.1, 0, 0, 0, 0], **kwargs)
    np.testing.assert_allclose(rect.K, exact.P[:, :3])
    assert not rect.is_distorted
    with pytest.raises(ValueError, match="image_is_rectified=True needs the projection matrix P"):
        CameraModel.from_camera_info(width=640, height=480, K=K_FULL, P=[0.0] * 12,
                                     image_is_rectified=True)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(K=np.zeros((3, 3))), r"CameraModel\.K is all zeros"),
        (dict(K=K_FULL * [[-1], [1], [1]]), r"CameraModel\.K\[0, 0\] \(fx\) must be > 0"),
        (dict(K=K_FULL * [[1], [0], [1]]), r"CameraModel\.K\[1, 1\] \(fy\) must be > 0"),
        (dict(K=np.where(np.eye(3) > 0, np.nan, K_FULL)), r"CameraModel\.K contains NaN"),
        (dict(width=0), r"CameraModel\.width must be > 0"),
        (dict(height=0), r"CameraModel\.height must be > 0"),
        (dict(D=[0.1, np.nan, 0, 0, 0]), r"CameraModel\.D contains NaN"),
        (dict(D=[0.1, 0.0, 0.0]), r"CameraModel\.D has 3 coefficients"),
        (dict(D=[0.1] * 5, distortion_model="equidistant"), r"CameraModel\.D has 5"),
        (dict(D=[0.1] * 5, distortion_model="unified"), r"distortion_model 'unified'"),
    ],
)
def test_validate_names_the_field(change, match):
    kwargs = dict(width=640, height=480, K=K_FULL, D=[0.0] * 5) | change
    with pytest.raises(ValueError, match=match):
        CameraModel(**kwargs).validate()


def test_roi_smaller_than_binning_gives_zero_size_error():
    cam = CameraModel.from_camera_info(width=640, height=480, K=K_FULL, binning_x=4,
                                       roi=dict(x_offset=1, y_offset=1, width=3, height=3))
    with pytest.raises(ValueError, match="CameraModel.width must be > 0"):
        cam.validate()


def test_constructor_rejects_wrong_matrix_sizes():
    with pytest.raises(ValueError, match=r"CameraModel\.K must have 9 entries"):
        CameraModel(width=640, height=480, K=np.eye(4))


# -- distortion ----------------------------------------------------------------------

DISTORTED = {
    "plumb_bob": [-0.28, 0.09, 1e-3, -2e-3, -0.01],
    "rational_polynomial": [0.4, -0.1, 1e-3, -2e-3, 0.01, 0.7, -0.05, 0.02],
    "equidistant": [0.05, -0.01, 0.004, -0.001],
}


@pytest.mark.parametrize("model", sorted(DISTORTED))
def test_rectify_agrees_with_cv2_undistort_points(model):
    """Rectify images whose pixels hold their own coordinates: each rectified pixel
    then holds the raw pixel it was sampled from, which OpenCV must undistort back to
    the rectified pixel (bilinear interpolation of a linear ramp is exact)."""
    cam = CameraModel(width=320, height=240, K=K_FULL / [[2], [2], [1]], D=DISTORTED[model],
                      distortion_model=model).validate()
    assert cam.is_distorted
    u, v = _sensor_ramp(cam.width, cam.height)
    rect = cam.rectify(np.stack([u, v], -1).astype(np.float32))
    inside = (rect[..., 0] > 2) & (rect[..., 0] < cam.width - 3) & \
             (rect[..., 1] > 2) & (rect[..., 1] < cam.height - 3)
    assert inside.mean() > 0.7
    raw = rect[inside].astype(np.float64)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    if model == "equidistant":
        ref = cv2.fisheye.undistortPoints(raw[:, None], cam.K, cam.D, R=np.eye(3), P=cam.K,
                                          criteria=criteria)[:, 0]
    else:
        ref = cv2.undistortPoints(raw[:, None], cam.K, cam.D, P=cam.K, criteria=criteria)[:, 0]
    target = np.stack([u[inside], v[inside]], -1)
    # remap interpolates with 1/32-pixel weights.
    np.testing.assert_allclose(ref, target, atol=0.05)
    np.testing.assert_allclose(cam.undistort_points(raw), ref, atol=1e-6)
    np.testing.assert_allclose(cam.distort_points(target), raw, atol=0.05)
    # The maps are computed once.
    assert cam._rectify_maps() is cam._rectify_maps()


@pytest.mark.parametrize("model", sorted(DISTORTED))
def test_distort_and_undistort_points_round_trip(model):
    cam = CameraModel(width=640, height=480, K=K_FULL, D=DISTORTED[model], distortion_model=model)
    uv = np.random.default_rng(1).uniform([50, 50], [590, 430], size=(100, 2))
    np.testing.assert_allclose(cam.undistort_points(cam.distort_points(uv)), uv, atol=1e-6)
    if model != "equidistant":
        pts = np.concatenate([uv, np.ones((100, 1))], 1) @ np.linalg.inv(K_FULL).T
        ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K_FULL, cam.D)
        np.testing.assert_allclose(cam.distort_points(uv), ref[:, 0], atol=1e-9)


def test_rectify_nearest_keeps_values_and_undistorted_camera_is_a_no_op():
    cam = CameraModel(width=64, height=48, K=K_FULL / [[10], [10], [1]], D=DISTORTED["plumb_bob"])
    labels = np.random.default_rng(2).integers(1, 5, size=(48, 64)).astype(np.uint16)
    out = cam.rectify(labels, interpolation="nearest")
    assert out.dtype == np.uint16 and set(np.unique(out)) <= {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match=r"image must have shape \(48, 64\[, C\]\)"):
        cam.rectify(labels.T)
    plain = CameraModel(width=64, height=48, K=K_FULL / [[10], [10], [1]])
    assert not plain.is_distorted and plain.rectify(labels) is labels
