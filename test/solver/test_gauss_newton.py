"""The pose solver: convergence from exact and contaminated correspondences, Jacobians."""

import math

import pytest
import torch

from pose_refiner_ros.geometry.lie import make_T, rotation_angle_deg, se3_exp, so3_exp
from pose_refiner_ros.solver.gauss_newton import (
    SolverConfig,
    depth_jacobian,
    plane_jacobian,
    reprojection_jacobian,
    solve_pose,
)

K1 = torch.tensor([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]], dtype=torch.float64)


def _scene(B=4, N=200, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(B, N, 3, generator=g, dtype=dtype) - 0.5) * 0.15
    w = torch.randn(B, 3, generator=g, dtype=dtype)
    R = so3_exp(w / w.norm(dim=-1, keepdim=True) * 0.3)
    t = torch.tensor([0.02, -0.03, 0.6], dtype=dtype).expand(B, 3)
    T_gt = make_T(R, t)
    K = K1.to(dtype).expand(B, 3, 3)
    return pts, T_gt, K


def _project(T, pts, K):
    p = pts @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    uv = p[..., :2] / p[..., 2:]
    return uv * torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None] + K[:, None, :2, 2]


def _perturb(T_gt, deg=15.0, cm=5.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    B = T_gt.shape[0]
    axis = torch.randn(B, 3, generator=g, dtype=T_gt.dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    d = torch.randn(B, 3, generator=g, dtype=T_gt.dtype)
    d = d / d.norm(dim=-1, keepdim=True) * cm / 100
    R = so3_exp(axis * math.radians(deg)) @ T_gt[:, :3, :3]
    return make_T(R, T_gt[:, :3, 3] + d)


def test_exact_correspondences_reach_the_true_pose():
    pts, T_gt, K = _scene()
    T0 = _perturb(T_gt)
    uv = _project(T_gt, pts, K)
    res = solve_pose(
        T0, pts, uv, torch.ones(pts.shape[:2], dtype=pts.dtype), K, SolverConfig(iterations=15)
    )
    err_deg = rotation_angle_deg(res.T_cam_obj[:, :3, :3], T_gt[:, :3, :3])
    err_mm = 1e3 * (res.T_cam_obj[:, :3, 3] - T_gt[:, :3, 3]).norm(dim=-1)
    assert err_deg.max() < 0.01
    assert err_mm.max() < 0.1
    assert res.residual_px.max() < 1e-3


def test_low_weight_outliers_do_not_stop_convergence():
    pts, T_gt, K = _scene(seed=3)
    B, N = pts.shape[:2]
    T0 = _perturb(T_gt, seed=4)
    uv = _project(T_gt, pts, K)
    g = torch.Generator().manual_seed(5)
    out = torch.rand(B, N, generator=g) < 0.3
    uv = torch.where(
        out[..., None], uv + (torch.rand(B, N, 2, generator=g, dtype=pts.dtype) - 0.5) * 200, uv
    )
    w = torch.where(
        out, torch.full((B, N), 0.05, dtype=pts.dtype), torch.ones(B, N, dtype=pts.dtype)
    )
    res = solve_pose(T0, pts, uv, w, K, SolverConfig(iterations=20))
    err_deg = rotation_angle_deg(res.T_cam_obj[:, :3, :3], T_gt[:, :3, :3])
    err_mm = 1e3 * (res.T_cam_obj[:, :3, 3] - T_gt[:, :3, 3]).norm(dim=-1)
    assert err_deg.max() < 0.05, err_deg
    assert err_mm.max() < 0.5, err_mm
    # Without the weights (all ones) the same outliers pull the pose off.
    bad = solve_pose(T0, pts, uv, torch.ones_like(w), K, SolverConfig(iterations=20, huber_px=1e6))
    assert rotation_angle_deg(bad.T_cam_obj[:, :3, :3], T_gt[:, :3, :3]).max() > err_deg.max()


def test_depth_residuals_fix_depth():
    pts, T_gt, K = _scene(seed=7)
    T0 = _perturb(T_gt, deg=5.0, cm=5.0, seed=8)
    uv = _project(T_gt, pts, K)
    z = (pts @ T_gt[:, :3, :3].transpose(1, 2) + T_gt[:, None, :3, 3])[..., 2]
    ones = torch.ones(pts.shape[:2], dtype=pts.dtype)
    # Correspondences with 1 px noise: depth measurements pin the distance down better.
    g = torch.Generator().manual_seed(9)
    uv_noisy = uv + torch.randn(uv.shape, generator=g, dtype=uv.dtype)
    rgb = solve_pose(T0, pts, uv_noisy, ones, K, SolverConfig(iterations=15))
    rgbd = solve_pose(
        T0,
        pts,
        uv_noisy,
        ones,
        K,
        SolverConfig(iterations=15),
        depth_target_m=z,
        depth_weights=ones,
    )
    dz_rgb = (rgb.T_cam_obj[:, 2, 3] - T_gt[:, 2, 3]).abs().mean()
    dz_rgbd = (rgbd.T_cam_obj[:, 2, 3] - T_gt[:, 2, 3]).abs().mean()
    assert dz_rgbd < dz_rgb


def _box_surface(B=2, n_side=12, size=0.1, dtype=torch.float64):
    """Points on three faces of a cube (object frame) and their outward normals."""
    a = torch.linspace(-0.5, 0.5, n_side, dtype=dtype) * size
    u, v = torch.meshgrid(a, a, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    h = torch.full_like(u, size / 2)
    pts = torch.cat([torch.stack(c, -1) for c in ((h, u, v), (u, h, v), (u, v, h))])
    nrm = torch.cat([torch.tensor(n, dtype=dtype).expand(len(u), 3)
                     for n in ((1, 0, 0), (0, 1, 0), (0, 0, 1))])
    return pts.expand(B, -1, -1).clone(), nrm.expand(B, -1, -1).clone()


def test_point_to_plane_residuals_alone_reach_the_true_pose():
    # Three non-parallel planes constrain all six degrees of freedom, so the measured
    # surface alone (no usable 2D correspondence) pins the pose.
    pts, nrm = _box_surface()
    _, T_gt, K = _scene(B=2, seed=11)
    T0 = _perturb(T_gt, deg=4.0, cm=1.0, seed=12)
    X = pts @ T_gt[:, :3, :3].transpose(1, 2) + T_gt[:, None, :3, 3]
    zeros = torch.zeros(pts.shape[:2], dtype=pts.dtype)
    res = solve_pose(
        T0, pts, torch.zeros(*pts.shape[:2], 2, dtype=pts.dtype), zeros, K,
        SolverConfig(iterations=20), plane_target_cam_m=X, plane_normals_obj=nrm,
        plane_weights=torch.ones_like(zeros),
    )
    assert rotation_angle_deg(res.T_cam_obj[:, :3, :3], T_gt[:, :3, :3]).max() < 0.01
    assert 1e3 * (res.T_cam_obj[:, :3, 3] - T_gt[:, :3, 3]).norm(dim=-1).max() < 0.05
    # Weight 0 switches the term off: the pose stays where it started.
    off = solve_pose(
        T0, pts, torch.zeros(*pts.shape[:2], 2, dtype=pts.dtype), zeros, K,
        SolverConfig(iterations=20, plane_weight=0.0), plane_target_cam_m=X,
        plane_normals_obj=nrm, plane_weights=torch.ones_like(zeros),
    )
    assert torch.allclose(off.T_cam_obj, T0)


def test_point_to_plane_needs_normals_and_weights():
    pts, nrm = _box_surface(B=1, n_side=3)
    _, T_gt, K = _scene(B=1)
    uv = torch.zeros(*pts.shape[:2], 2, dtype=pts.dtype)
    w = torch.ones(pts.shape[:2], dtype=pts.dtype)
    with pytest.raises(ValueError, match="plane_normals_obj"):
        solve_pose(T_gt, pts, uv, w, K, plane_target_cam_m=pts)
    with pytest.raises(ValueError, match="plane_normals_obj"):
        solve_pose(T_gt, pts, uv, w, K, plane_target_cam_m=pts, plane_normals_obj=nrm[:, :2],
                   plane_weights=w)


def test_no_valid_correspondence_keeps_the_pose():
    pts, T_gt, K = _scene(B=2)
    res = solve_pose(
        T_gt,
        pts,
        torch.zeros(2, pts.shape[1], 2, dtype=pts.dtype),
        torch.zeros(pts.shape[:2], dtype=pts.dtype),
        K,
    )
    assert torch.isfinite(res.T_cam_obj).all()
    assert torch.allclose(res.T_cam_obj, T_gt)


def test_jacobians_match_autograd_float64():
    pts, T_gt, K = _scene(B=2, N=5)

    def uv_of(xi):
        T = se3_exp(xi) @ T_gt
        return _project(T, pts, K)

    xi0 = torch.zeros(2, 6, dtype=torch.float64)
    J_auto = torch.autograd.functional.jacobian(uv_of, xi0)  # (B, N, 2, B, 6)
    J_auto = torch.stack([J_auto[b, :, :, b] for b in range(2)])
    pts_cam = pts @ T_gt[:, :3, :3].transpose(1, 2) + T_gt[:, None, :3, 3]
    _, J = reprojection_jacobian(pts_cam, K)
    assert torch.allclose(J, J_auto, atol=1e-9)

    def z_of(xi):
        T = se3_exp(xi) @ T_gt
        return (pts @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3])[..., 2]

    Jz_auto = torch.autograd.functional.jacobian(z_of, xi0)
    Jz_auto = torch.stack([Jz_auto[b, :, b] for b in range(2)])
    assert torch.allclose(depth_jacobian(pts_cam), Jz_auto, atol=1e-9)

    # Point-to-plane, normal held fixed: d(n . p_cam)/d(xi).
    n = torch.nn.functional.normalize(torch.randn(2, 5, 3, dtype=torch.float64), dim=-1)

    def plane_of(xi):
        T = se3_exp(xi) @ T_gt
        return ((pts @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]) * n).sum(-1)

    Jp_auto = torch.autograd.functional.jacobian(plane_of, xi0)
    Jp_auto = torch.stack([Jp_auto[b, :, b] for b in range(2)])
    assert torch.allclose(plane_jacobian(pts_cam, n), Jp_auto, atol=1e-9)


def test_solve_is_differentiable_gradcheck():
    pts, T_gt, K = _scene(B=1, N=12)
    T0 = _perturb(T_gt, deg=3.0, cm=1.0)
    uv = _project(T_gt, pts, K).requires_grad_(True)
    w = torch.rand(1, 12, dtype=torch.float64).add(0.5).requires_grad_(True)

    def f(uv, w):
        return solve_pose(T0, pts, uv, w, K, SolverConfig(iterations=3, huber_px=1e6)).T_cam_obj

    assert torch.autograd.gradcheck(f, (uv, w), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name,shape", [("uv_target", (2, 7, 3)), ("weights", (2, 8))])
def test_shape_errors_name_the_argument(name, shape):
    pts, T_gt, K = _scene(B=2, N=7)
    args = dict(
        uv_target=torch.zeros(2, 7, 2, dtype=pts.dtype), weights=torch.ones(2, 7, dtype=pts.dtype)
    )
    args[name] = torch.zeros(shape, dtype=pts.dtype)
    with pytest.raises(ValueError, match=name):
        solve_pose(T_gt, pts, args["uv_target"], args["weights"], K)
