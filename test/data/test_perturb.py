"""The standard perturbation of docs/protocol.md, checked by its statistics."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose_refiner_ros.data.perturb import perturb_pose


def _random_poses(rng, n):
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=rng).as_matrix()
    T[:, :3, 3] = rng.uniform(-0.2, 0.2, (n, 3)) + [0, 0, 1.0]
    return T


def test_statistics_match_the_protocol():
    rng = np.random.default_rng(0)
    n = 20000
    T_gt = _random_poses(rng, n)
    T_init = perturb_pose(T_gt, rng)

    # rotation: R_init R_gt^T = exp([w]x), |w| ~ sigma * chi_3, mean sigma * 2 sqrt(2 / pi)
    R_delta = T_init[:, :3, :3] @ np.transpose(T_gt[:, :3, :3], (0, 2, 1))
    w = Rotation.from_matrix(R_delta).as_rotvec()
    angle_deg = np.rad2deg(np.linalg.norm(w, axis=1))
    assert angle_deg.mean() == pytest.approx(15.0 * 2 * np.sqrt(2 / np.pi), rel=0.02)
    assert angle_deg.mean() == pytest.approx(24.0, abs=0.5)
    np.testing.assert_allclose(np.rad2deg(w).std(0), 15.0, rtol=0.03)
    np.testing.assert_allclose(w.mean(0), 0.0, atol=0.01)

    # translation: camera-frame offsets with std (1, 1, 5) cm
    d = T_init[:, :3, 3] - T_gt[:, :3, 3]
    np.testing.assert_allclose(d.std(0), [0.01, 0.01, 0.05], rtol=0.03)
    np.testing.assert_allclose(d.mean(0), 0.0, atol=0.002)

    # still rigid transforms
    np.testing.assert_allclose(np.linalg.det(T_init[:, :3, :3]), 1.0, atol=1e-9)
    np.testing.assert_array_equal(T_init[:, 3], np.tile([0, 0, 0, 1.0], (n, 1)))


def test_rotation_is_a_left_perturbation_about_camera_axes():
    # a pure rotation noise (sigma_t = 0) leaves the translation and composes on the left
    rng = np.random.default_rng(1)
    T_gt = _random_poses(rng, 5)
    T_init = perturb_pose(T_gt, np.random.default_rng(2), sigma_t_m=0.0)
    np.testing.assert_array_equal(T_init[:, :3, 3], T_gt[:, :3, 3])
    w = np.random.default_rng(2).normal(size=(5, 3)) * np.deg2rad(15.0)
    R_expected = Rotation.from_rotvec(w).as_matrix() @ T_gt[:, :3, :3]
    np.testing.assert_allclose(T_init[:, :3, :3], R_expected, atol=1e-12)


def test_single_pose_and_determinism():
    T = _random_poses(np.random.default_rng(3), 1)[0]
    a = perturb_pose(T, np.random.default_rng(7))
    b = perturb_pose(T, np.random.default_rng(7))
    assert a.shape == (4, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, T)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="T_gt"):
        perturb_pose(np.eye(3), np.random.default_rng(0))
