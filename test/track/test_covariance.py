"""The pose covariance from the contour lines (``track.covariance``): ROS's convention,
and what a silhouette can and cannot pin down."""

import numpy as np
import pytest
import torch

from pose_refiner_ros.geometry.lie import se3_exp, so3_log
from pose_refiner_ros.refine.region import RegionConfig
from pose_refiner_ros.track.covariance import region_covariance, twist_to_pose_covariance
from pose_refiner_ros.track.measure import ViewArrays


def test_twist_covariance_maps_to_the_object_origin_and_camera_axes():
    """Sampled left twists ``exp(xi) T`` (the solver's update, about the camera's origin)
    move the object's origin and turn it as the mapped covariance says."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6)) * np.array([0.004, 0.004, 0.01, 0.02, 0.02, 0.03])
    cov_xi = A @ A.T
    T = np.eye(4)
    T[:3, :3] = torch.linalg.matrix_exp(torch.tensor(
        [[0, -0.3, 0.2], [0.3, 0, -0.1], [-0.2, 0.1, 0]], dtype=torch.float64)).numpy()
    T[:3, 3] = [0.15, -0.1, 0.9]
    xi = rng.multivariate_normal(np.zeros(6), cov_xi, size=40000)
    Ts = se3_exp(torch.as_tensor(xi)).numpy() @ T
    d = np.concatenate([Ts[:, :3, 3] - T[:3, 3],
                        so3_log(torch.as_tensor(Ts[:, :3, :3] @ T[:3, :3].T)).numpy()], 1)
    sampled = np.cov(d.T)
    mapped = twist_to_pose_covariance(cov_xi, T[:3, 3])
    scale = np.sqrt(np.outer(np.diag(mapped), np.diag(mapped)))
    np.testing.assert_allclose(sampled / scale, mapped / scale, atol=0.03)
    # A rotation about the camera's origin moves the object: position variance grows.
    assert mapped[0, 0] > cov_xi[0, 0] * 1.5


@pytest.fixture(scope="module")
def frame_and_model(scene):
    vm, image_rgb, _, K, T = scene
    img = np.ascontiguousarray(np.asarray(image_rgb, np.float32) / 255.0)
    return ViewArrays.from_model(vm), img, np.asarray(K, np.float64), T


def test_a_silhouette_leaves_the_distance_least_certain(frame_and_model):
    va, img, K, T = frame_and_model
    C = region_covariance(img, K, T, va, 1.0, RegionConfig(), 6.0, inflation=1.0)
    assert C.shape == (6, 6)
    np.testing.assert_allclose(C, C.T, atol=1e-15)
    assert np.all(np.linalg.eigvalsh(C) > 0)
    sd = np.sqrt(np.diag(C))
    # The outline moves by about f * dx / z for a sideways shift but only by
    # radius * dz / z along the ray: depth is several times less certain.
    assert sd[2] > 3 * max(sd[0], sd[1])
    # The inflation scales the standard deviations.
    C2 = region_covariance(img, K, T, va, 1.0, RegionConfig(), 6.0, inflation=3.0)
    np.testing.assert_allclose(C2, 9 * C, rtol=1e-9)


def test_no_covariance_without_usable_lines(frame_and_model):
    va, img, K, T = frame_and_model
    away = T.copy()
    away[:3, 3] = [5.0, 0.0, T[2, 3]]  # the whole outline far outside the image
    assert region_covariance(img, K, away, va, 1.0, RegionConfig(), 6.0, 1.0) is None
