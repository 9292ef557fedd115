"""Tests of geometry.lie: cross-checks against scipy / transforms3d, round trips near 0
and 180 degrees, and float64 gradchecks."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.transform import Rotation
import torch
import transforms3d

from pose_refiner_ros.geometry.lie import (
    hat,
    make_T,
    matrix_to_quat_xyzw,
    quat_xyzw_to_matrix,
    rotation_angle_deg,
    se3_exp,
    se3_inverse,
    se3_log,
    so3_exp,
    so3_log,
    split_T,
    transform_points,
    vee,
)

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-6, torch.float64: 1e-12}

# Angles that probe the identity, both sides of the Taylor switches (1e-2 in float64,
# 0.5 in float32), generic values and the neighbourhood of pi.
ANGLES = [0.0, 1e-12, 1e-9, 1e-6, 1e-4, 9.9e-3, 1.01e-2, 0.1, 0.49, 0.51, 1.0, 2.0, 3.0,
          math.pi - 1e-3, math.pi - 1e-6]


def _axis(seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=3)
    return a / np.linalg.norm(a)


def _rotvecs(dtype: torch.dtype) -> torch.Tensor:
    w = np.stack([_axis(i) * a for i, a in enumerate(ANGLES)])
    return torch.tensor(w, dtype=dtype)


def _twist_matrix(xi: np.ndarray) -> np.ndarray:
    X = np.zeros((4, 4))
    X[:3, :3] = [[0, -xi[5], xi[4]], [xi[5], 0, -xi[3]], [-xi[4], xi[3], 0]]
    X[:3, 3] = xi[:3]
    return X


def test_hat_is_cross_product_and_vee_inverts_it():
    w = torch.randn(5, 3, dtype=torch.float64)
    p = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close((hat(w) @ p[..., None])[..., 0], torch.cross(w, p, dim=-1))
    torch.testing.assert_close(vee(hat(w)), w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_so3_exp_and_log_match_scipy(dtype):
    w = _rotvecs(dtype)
    R = so3_exp(w)
    R_ref = Rotation.from_rotvec(w.double().numpy()).as_matrix()
    np.testing.assert_allclose(R.double().numpy(), R_ref, atol=TOL[dtype] * 2)
    w_back = so3_log(R)
    np.testing.assert_allclose(w_back.double().numpy(), w.double().numpy(), atol=TOL[dtype] * 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_so3_log_at_exactly_pi_gives_an_angle_of_pi(dtype):
    axis = torch.tensor(_axis(3), dtype=dtype)
    R = so3_exp(axis * math.pi)
    w = so3_log(R)
    assert abs(w.norm().item() - math.pi) < 10 * TOL[dtype]
    # Either sign of the axis is a valid log at pi.
    assert min((w - axis * math.pi).norm(), (w + axis * math.pi).norm()) < 10 * TOL[dtype]
    torch.testing.assert_close(so3_exp(w), R, atol=10 * TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_se3_exp_matches_matrix_exponential(dtype):
    rng = np.random.default_rng(0)
    w = _rotvecs(torch.float64).numpy()
    xi = np.concatenate([rng.normal(size=(len(w), 3)), w], axis=1)
    T = se3_exp(torch.tensor(xi, dtype=dtype))
    T_ref = np.stack([scipy.linalg.expm(_twist_matrix(x)) for x in xi])
    np.testing.assert_allclose(T.double().numpy(), T_ref, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_se3_round_trips_near_zero_and_pi(dtype):
    rng = np.random.default_rng(1)
    w = _rotvecs(torch.float64)
    xi = torch.cat([torch.tensor(rng.normal(size=(len(w), 3))), w], dim=1).to(dtype)
    # log(exp(xi)) == xi for |w| < pi.
    torch.testing.assert_close(se3_log(se3_exp(xi)), xi, atol=TOL[dtype] * 20, rtol=0)
    # exp(log(T)) == T, including at exactly pi where the log is not unique.
    w_pi = torch.tensor(_axis(7) * math.pi, dtype=dtype)
    T_pi = make_T(so3_exp(w_pi), torch.tensor([0.1, -2.0, 3.0]).to(dtype))
    T = torch.cat([se3_exp(xi), T_pi[None]])
    torch.testing.assert_close(se3_exp(se3_log(T)), T, atol=TOL[dtype] * 20, rtol=0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3).filter(
        lambda a: np.linalg.norm(a) > 1e-3
    ),
    st.floats(0.0, math.pi - 1e-4),
    st.lists(st.floats(-5.0, 5.0), min_size=3, max_size=3),
)
def test_se3_log_inverts_exp_property(axis, angle, v):
    axis = np.asarray(axis) / np.linalg.norm(axis)
    xi = torch.tensor(np.concatenate([v, axis * angle]), dtype=torch.float64)
    torch.testing.assert_close(se3_log(se3_exp(xi)), xi, atol=1e-9, rtol=0)


@pytest.mark.parametrize("angle", [0.0, 1e-5, 9e-3, 1.1e-2, 0.49, 0.51, 3.0])
def test_gradcheck_se3_exp_and_logs(angle):
    rng = np.random.default_rng(2)
    xi = torch.tensor(np.concatenate([rng.normal(size=3), _axis(4) * angle]), dtype=torch.float64)
    xi = xi[None].requires_grad_(True)
    assert torch.autograd.gradcheck(se3_exp, (xi,))
    T = se3_exp(xi.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(se3_log, (T,))
    R = T.detach()[..., :3, :3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(so3_log, (R,))


@pytest.mark.parametrize("angle", [0.0, 1e-7, 1e-4, 1e-3, 0.05, 0.49, 0.51, 1.0, 3.0])
def test_float32_gradients_agree_with_float64(angle):
    """Guards the Taylor switch: float32 Jacobians stay close to the float64 ones."""
    rng = np.random.default_rng(3)
    xi = np.concatenate([rng.normal(size=3), _axis(5) * angle])
    jac = {}
    for dtype in DTYPES:
        x = torch.tensor(xi, dtype=dtype)
        jac[dtype] = torch.autograd.functional.jacobian(se3_exp, x).double()
        jac_log = torch.autograd.functional.jacobian(se3_log, se3_exp(x).detach())
        assert torch.isfinite(jac_log).all()
    torch.testing.assert_close(jac[torch.float32], jac[torch.float64], atol=1e-6, rtol=0)


def test_left_perturbation_convention():
    """d/de transform_points(se3_exp(e xi) @ T, p) at 0 is v + w x (T p)."""
    rng = np.random.default_rng(4)
    T = se3_exp(torch.tensor(rng.normal(size=6)))
    p = torch.tensor(rng.normal(size=(1, 3)))
    xi = torch.tensor(rng.normal(size=6))
    eps = 1e-7
    moved = transform_points(se3_exp(eps * xi) @ T, p)
    deriv = (moved - transform_points(T, p)) / eps
    p_cam = transform_points(T, p)
    torch.testing.assert_close(deriv, xi[:3] + torch.cross(xi[3:].expand(1, 3), p_cam, dim=-1),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inverse_make_split_and_transform_points(dtype):
    rng = np.random.default_rng(5)
    T = se3_exp(torch.tensor(rng.normal(size=(2, 3, 6)), dtype=dtype))  # batch shape (2, 3)
    eye = torch.eye(4, dtype=dtype).expand(2, 3, 4, 4)
    torch.testing.assert_close(T @ se3_inverse(T), eye, atol=TOL[dtype] * 10, rtol=0)
    R, t = split_T(T)
    torch.testing.assert_close(make_T(R, t), T)
    pts = torch.tensor(rng.normal(size=(2, 3, 7, 3)), dtype=dtype)
    ref = torch.einsum("...ij,...nj->...ni", R, pts) + t[..., None, :]
    torch.testing.assert_close(transform_points(T, pts), ref)
    # One pose broadcast over a batch of point sets.
    out = transform_points(T[0, 0], pts)
    assert out.shape == pts.shape
    torch.testing.assert_close(out[1, 2], transform_points(T[0, 0], pts[1, 2]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_quaternions_match_transforms3d_and_scipy(dtype):
    q_xyzw = Rotation.random(20, random_state=6).as_quat()  # scipy order is (x, y, z, w)
    R = quat_xyzw_to_matrix(torch.tensor(q_xyzw, dtype=dtype))
    for q, R_i in zip(q_xyzw, R, strict=True):
        ref = transforms3d.quaternions.quat2mat([q[3], q[0], q[1], q[2]])  # (w, x, y, z)
        np.testing.assert_allclose(R_i.double().numpy(), ref, atol=TOL[dtype] * 4)
    q_back = matrix_to_quat_xyzw(R)
    assert (q_back[:, 3] >= 0).all()
    q_pos = np.where(q_xyzw[:, 3:] < 0, -q_xyzw, q_xyzw)
    np.testing.assert_allclose(q_back.double().numpy(), q_pos, atol=TOL[dtype] * 4)
    # Non-unit quaternions are normalised.
    torch.testing.assert_close(quat_xyzw_to_matrix(3.0 * torch.tensor(q_xyzw, dtype=dtype)), R)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotation_angle_deg_is_accurate_near_0_and_180(dtype):
    angles = np.array(ANGLES + [math.pi])
    w = torch.tensor(np.stack([_axis(i) * a for i, a in enumerate(angles)]), dtype=dtype)
    R_a = torch.tensor(Rotation.random(len(angles), random_state=8).as_matrix(), dtype=dtype)
    got = rotation_angle_deg(R_a, R_a @ so3_exp(w)).double().numpy()
    atol_deg = {torch.float32: 5e-4, torch.float64: 1e-9}[dtype]
    np.testing.assert_allclose(got, np.degrees(angles), atol=atol_deg)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"xi must have shape \(\.\.\., 6\), got \(3,\)"):
        se3_exp(torch.zeros(3))
    with pytest.raises(ValueError, match="R must have shape"):
        so3_log(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="float32 or float64"):
        so3_exp(torch.zeros(3, dtype=torch.int64))
