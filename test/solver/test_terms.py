"""Residual terms: each term's Jacobian against autograd, and the point-to-line term
alone recovering a pose (the region modality's contract with the solver)."""

import pytest
import torch

from pose_refiner_ros.geometry.lie import se3_exp
from pose_refiner_ros.solver.gauss_newton import SolverConfig, solve_terms
from pose_refiner_ros.solver.terms import (
    DepthTerm,
    LineTerm,
    PlaneTerm,
    ReprojectionTerm,
    transform,
)

K = torch.tensor([[[500.0, 0.0, 64.0], [0.0, 480.0, 60.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)


def _pose(xi):
    T = torch.eye(4, dtype=torch.float64)[None]
    T[0, 2, 3] = 0.8
    return se3_exp(xi) @ T


def _points(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(1, n, 3, generator=g, dtype=torch.float64) - 0.5) * 0.1
    nrm = torch.nn.functional.normalize(torch.randn(1, n, 3, generator=g, dtype=torch.float64),
                                        dim=-1)
    n2 = torch.nn.functional.normalize(torch.randn(1, n, 2, generator=g, dtype=torch.float64),
                                       dim=-1)
    return pts, nrm, n2


def _terms():
    pts, nrm, n2 = _points()
    w = torch.ones(1, pts.shape[1], dtype=torch.float64)
    uv = torch.full((1, pts.shape[1], 2), 60.0, dtype=torch.float64)
    return [
        ReprojectionTerm(pts, uv, w, K),
        LineTerm(pts, uv, n2, w, K),
        DepthTerm(pts, torch.full_like(w, 0.75), w, K),
        PlaneTerm(pts, transform(_pose(torch.zeros(1, 6, dtype=torch.float64)), pts) + 0.01,
                  nrm, w, K),
    ]


@pytest.mark.parametrize("k", range(4))
def test_jacobian_matches_autograd_float64(k):
    term = _terms()[k]
    xi0 = torch.tensor([[0.01, -0.02, 0.03, 0.1, -0.05, 0.2]], dtype=torch.float64)
    T = _pose(xi0)
    J = term.evaluate(T).J[0]  # (N, k, 6)

    metric = isinstance(term, (DepthTerm, PlaneTerm))

    def f_over_z(T_):
        z = transform(T_, term.pts_obj)[0, :, 2]
        return (0.5 * (K[0, 0, 0] + K[0, 1, 1]) / z)[:, None]

    def residuals(d):
        T_ = se3_exp(d[None]) @ T
        r = term.evaluate(T_, jacobian=False).r[0]
        # Metric residuals are scaled to pixels by f / Z, a weight the Jacobian holds
        # fixed: differentiate the metric residual and scale it at T.
        return r / f_over_z(T_) * f_over_z(T) if metric else r

    J_auto = torch.autograd.functional.jacobian(residuals, torch.zeros(6, dtype=torch.float64))
    if isinstance(term, PlaneTerm):  # the normal is held fixed: compare the translation part
        assert torch.allclose(J[..., :3], J_auto[..., :3], atol=1e-8)
    else:
        assert torch.allclose(J, J_auto, atol=1e-8)


def test_point_to_line_residuals_alone_reach_the_true_pose():
    """Each point is only told which line it lies on (a contour measurement); with lines
    of many directions that fixes the whole pose."""
    pts, _, n2 = _points(200, seed=1)
    T_gt = _pose(torch.zeros(1, 6, dtype=torch.float64))
    uv_gt = ReprojectionTerm(pts, torch.zeros(1, 200, 2, dtype=torch.float64),
                             torch.ones(1, 200, dtype=torch.float64), K).evaluate(T_gt).r
    # Targets slid along each line: the point-to-line residual ignores that.
    target = uv_gt + 5.0 * torch.stack([-n2[..., 1], n2[..., 0]], -1)
    term = LineTerm(pts, target, n2, torch.ones(1, 200, dtype=torch.float64), K, huber=1e6)
    T0 = _pose(torch.tensor([[0.01, 0.005, 0.02, 0.05, -0.04, 0.08]], dtype=torch.float64))
    T, cost = solve_terms(T0, [term], SolverConfig(iterations=30))
    assert torch.allclose(T, T_gt, atol=1e-6)
    assert cost.item() < 1e-10


def test_no_terms_is_an_error():
    with pytest.raises(ValueError, match="terms"):
        solve_terms(torch.eye(4)[None], [])


@pytest.mark.parametrize("accept", [True, False])
def test_gauss_newton_steps_with_the_cheap_retraction_reach_the_same_pose(accept):
    """The first-order retraction changes the path, not the fixed point."""
    from pose_refiner_ros.solver.gauss_newton import gauss_newton_steps

    pts, _, _ = _points(100, seed=2)
    T_gt = _pose(torch.zeros(1, 6, dtype=torch.float64))
    w = torch.ones(1, 100, dtype=torch.float64)
    uv = ReprojectionTerm(pts, torch.zeros(1, 100, 2, dtype=torch.float64), w, K).evaluate(T_gt).r
    term = ReprojectionTerm(pts, uv, w, K, huber=1e6)
    T0 = _pose(torch.tensor([[0.02, -0.01, 0.03, 0.1, -0.05, 0.15]], dtype=torch.float64))
    T = gauss_newton_steps(T0, [term], 40, accept=accept)
    assert torch.allclose(T, T_gt, atol=1e-6)
    R = T[0, :3, :3]
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-9)


def test_gauss_newton_steps_refuse_a_step_that_raises_the_cost():
    """With acceptance, an object whose step would raise its robust cost stays put."""
    from pose_refiner_ros.solver.gauss_newton import _robust_cost, gauss_newton_steps

    pts, _, _ = _points(50, seed=3)
    w = torch.ones(1, 50, dtype=torch.float64)
    T_gt = _pose(torch.zeros(1, 6, dtype=torch.float64))
    uv = ReprojectionTerm(pts, torch.zeros(1, 50, 2, dtype=torch.float64), w, K).evaluate(T_gt).r
    # A tiny Huber threshold far from the solution: the quadratic model overshoots.
    term = ReprojectionTerm(pts, uv + 40.0, w, K, huber=1e-3)
    T0 = _pose(torch.tensor([[0.05, 0.05, 0.2, 0.6, -0.6, 0.6]], dtype=torch.float64))
    c0 = _robust_cost(T0, [term])
    T = gauss_newton_steps(T0, [term], 3, damping=1e-6, accept=True)
    assert _robust_cost(T, [term]) <= c0 * (1 + 1e-6)


def test_numpy_fast_path_gives_the_torch_solve():
    """Without a gradient on a CPU, ``solve_terms`` solves object by object in NumPy
    (``track.solve``); with one (training) it runs in torch. Every term, a batch of two
    objects with zero-weight padding and a point behind the camera: the same poses and
    costs."""
    pts, nrm, n2 = _points(60, seed=4)
    pts = pts.expand(2, -1, -1).clone()
    pts[1, :3] = torch.tensor([0.0, 0.0, -2.0], dtype=torch.float64)  # behind the camera
    Kb = K.expand(2, 3, 3)
    T_gt = _pose(torch.zeros(1, 6, dtype=torch.float64)).expand(2, 4, 4)
    g = torch.Generator().manual_seed(5)
    w = torch.rand(2, 60, generator=g, dtype=torch.float64)
    w[0, -10:] = 0.0  # padding
    uv = ReprojectionTerm(pts, torch.zeros(2, 60, 2, dtype=torch.float64), w, Kb).evaluate(T_gt).r
    uv = uv + 3.0 * torch.randn(uv.shape, generator=g, dtype=torch.float64)
    X = transform(T_gt, pts) + 0.003 * torch.randn(pts.shape, generator=g, dtype=torch.float64)
    terms = [ReprojectionTerm(pts, uv, w, Kb),
             LineTerm(pts, uv, n2.expand(2, -1, -1), w, Kb, huber=3.0, scale=0.7),
             DepthTerm(pts, X[..., 2], w, Kb, huber=4.0),
             PlaneTerm(pts, X, nrm.expand(2, -1, -1), w, Kb, huber=4.0, scale=0.5)]
    T0 = se3_exp(torch.tensor([[0.01, -0.02, 0.03, 0.2, -0.1, 0.15],
                               [-0.02, 0.01, -0.04, -0.15, 0.2, 0.1]],
                              dtype=torch.float64)) @ T_gt
    T_np, c_np = solve_terms(T0, terms)
    T_t, c_t = solve_terms(T0.clone().requires_grad_(True), terms)  # the torch path
    assert (T_np - T0).abs().max() > 1e-2  # it moved
    torch.testing.assert_close(T_np, T_t.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(c_np, c_t.detach(), atol=1e-10, rtol=1e-10)
