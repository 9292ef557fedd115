"""Weighted, robust Levenberg-Marquardt pose solve on SE(3) from 2D-3D correspondences.

Given object points ``pts_obj`` and where they are seen in the image, ``uv_target``,
each with a weight in [0, 1], find the pose ``T_cam_obj`` minimising

    sum_i  w_i * rho(|| pi(K, T_cam_obj p_i) - uv_i ||^2)      (+ depth terms, RGB-D mode)

RGB-D mode adds two kinds of residual, both converted to pixel-equivalents (metres
times ``f / Z``): the depth of each point against the depth measured where the field
says it is, ``Z(T p_i) - d_i``; and a point-to-plane residual against the measured
surface where the point is rendered now, ``n_i . (T p_i - X_i)`` with ``n_i`` the
point's normal rotated by ``T`` (its Jacobian treats the normal as fixed, the usual
Gauss-Newton approximation of projective ICP).

where ``pi`` is the pinhole projection and ``rho`` a Huber loss applied by iteratively
re-weighted least squares. Updates are left perturbations in the camera frame,
``T <- exp(xi) T`` with ``xi = (v, w)`` (see ``geometry.lie``); the residuals and their
analytic Jacobians are the terms of ``solver.terms``. :func:`solve_terms` solves any
list of terms (a new modality is a new term); :func:`solve_pose` builds the usual ones
from arrays.

Everything is batched over objects and differentiable (the 6x6 normal equations are
solved with ``torch.linalg.solve``), so training can back-propagate a pose loss through
the solve into the correspondences and weights.

Why hand-written: the libraries that do robust LM on SE(3) (pypose, theseus) are heavy
dependencies for a 6x6 system, and none takes per-point weights *and* stays
differentiable with respect to them in a batched call as cheaply as this does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.lie import hat, se3_exp
from .terms import (  # noqa: F401  (the Jacobians are re-exported for callers and tests)
    DepthTerm,
    PlaneTerm,
    ReprojectionTerm,
    check_shape,
    depth_jacobian,
    plane_jacobian,
    reprojection_jacobian,
)


@dataclass(frozen=True)
class SolverConfig:
    """Settings of :func:`solve_pose`.

    Attributes:
        iterations: LM iterations.
        huber_px: Huber threshold on the reprojection residual, in pixels of the image
            the correspondences live in (usually the zoom-in crop).
        damping: initial LM damping, relative to the diagonal of the normal matrix.
        depth_weight: weight of a depth residual relative to a pixel residual; depth
            residuals are converted to pixels by ``f / Z`` before weighting.
        huber_depth_px: Huber threshold of the depth and point-to-plane residuals
            (pixel-equivalent).
        plane_weight: weight of a point-to-plane residual relative to a pixel residual.
        min_depth_m: points predicted closer than this are ignored.
        max_step_rad: rotation part of one step is clipped to this angle.
    """

    iterations: int = 5
    huber_px: float = 2.0
    damping: float = 1e-3
    depth_weight: float = 1.0
    huber_depth_px: float = 4.0
    plane_weight: float = 1.0
    min_depth_m: float = 1e-3
    max_step_rad: float = 0.5


def _huber_weight(r_norm: torch.Tensor, delta: float) -> torch.Tensor:
    """IRLS weight of the Huber loss for residual norms ``r_norm``."""
    return torch.where(r_norm <= delta, torch.ones_like(r_norm), delta / r_norm.clamp_min(1e-12))


@dataclass(frozen=True)
class SolveResult:
    """Output of :func:`solve_pose`.

    Attributes:
        T_cam_obj: (B, 4, 4) solved poses.
        residual_px: (B, N) final reprojection residual norms (pixels); inf where the
            point is behind the camera.
        cost: (B,) final weighted robust cost per object, normalised by total weight.
    """

    T_cam_obj: torch.Tensor
    residual_px: torch.Tensor
    cost: torch.Tensor


def solve_pose(
    T_init: torch.Tensor,
    pts_obj: torch.Tensor,
    uv_target: torch.Tensor,
    weights: torch.Tensor,
    K: torch.Tensor,
    cfg: SolverConfig = SolverConfig(),
    depth_target_m: torch.Tensor | None = None,
    depth_weights: torch.Tensor | None = None,
    plane_target_cam_m: torch.Tensor | None = None,
    plane_normals_obj: torch.Tensor | None = None,
    plane_weights: torch.Tensor | None = None,
    extra_terms=(),
) -> SolveResult:
    """Robust weighted LM on SE(3).

    Args:
        T_init: (B, 4, 4) starting poses ``T_cam_obj``.
        pts_obj: (B, N, 3) object-frame points, metres.
        uv_target: (B, N, 2) where each point is observed, pixels of the image ``K``
            describes.
        weights: (B, N) confidence of each correspondence in [0, 1]; 0 marks an invalid
            entry (padding, background).
        K: (B, 3, 3) intrinsics of that image.
        cfg: solver settings.
        depth_target_m: optional (B, N) measured depth (camera Z, metres) of each
            correspondence: adds residuals ``Z(T p_i) - depth_i`` (RGB-D mode).
        depth_weights: (B, N) weights of the depth residuals; 0 where there is no
            measurement. Required with ``depth_target_m``.
        plane_target_cam_m: optional (B, N, 3) measured surface point (camera frame,
            metres) each object point is matched to: adds point-to-plane residuals
            ``n_i . (T p_i - X_i)`` (RGB-D mode).
        plane_normals_obj: (B, N, 3) unit normals of ``pts_obj``, object frame.
        plane_weights: (B, N) weights of the point-to-plane residuals; 0 where there is
            no match. Both required with ``plane_target_cam_m``.
        extra_terms: further ``solver.terms.ResidualTerm`` s (e.g. the region
            modality's contour lines) solved jointly.

    Returns:
        :class:`SolveResult`.
    """
    B, N = pts_obj.shape[:2]
    check_shape("T_init", T_init, (B, 4, 4))
    check_shape("pts_obj", pts_obj, (B, N, 3))
    check_shape("uv_target", uv_target, (B, N, 2))
    check_shape("weights", weights, (B, N))
    check_shape("K", K, (B, 3, 3))
    use_depth = depth_target_m is not None
    if use_depth:
        if depth_weights is None:
            raise ValueError("depth_weights: required when depth_target_m is given")
        check_shape("depth_target_m", depth_target_m, (B, N))
        check_shape("depth_weights", depth_weights, (B, N))
    plane = None
    if plane_target_cam_m is not None:
        if plane_normals_obj is None or plane_weights is None:
            raise ValueError(
                "plane_normals_obj, plane_weights: required when plane_target_cam_m is given"
            )
        check_shape("plane_target_cam_m", plane_target_cam_m, (B, N, 3))
        check_shape("plane_normals_obj", plane_normals_obj, (B, N, 3))
        check_shape("plane_weights", plane_weights, (B, N))
        plane = (plane_target_cam_m, plane_normals_obj, plane_weights)

    min_d = cfg.min_depth_m
    reproj = ReprojectionTerm(pts_obj, uv_target, weights, K, huber=cfg.huber_px,
                              min_depth_m=min_d)
    terms = [reproj]
    if use_depth:
        terms.append(DepthTerm(pts_obj, depth_target_m, depth_weights, K,
                               scale=cfg.depth_weight, huber=cfg.huber_depth_px,
                               min_depth_m=min_d))
    if plane is not None:
        terms.append(PlaneTerm(pts_obj, plane[0], plane[1], plane[2], K,
                               scale=cfg.plane_weight, huber=cfg.huber_depth_px,
                               min_depth_m=min_d))
    terms += list(extra_terms)
    T, cost = solve_terms(T_init, terms, cfg)
    ev = reproj.evaluate(T, jacobian=False)
    res = torch.where(ev.front, ev.r.norm(dim=-1), torch.full_like(ev.r[..., 0], float("inf")))
    return SolveResult(T_cam_obj=T, residual_px=res, cost=cost)


def solve_terms(T_init: torch.Tensor, terms, cfg: SolverConfig = SolverConfig()):
    """Robust LM on SE(3) over any residual terms (``solver.terms``).

    Args:
        T_init: (B, 4, 4) starting poses ``T_cam_obj``.
        terms: ``ResidualTerm`` s, each with its own points, weights and Huber threshold.
        cfg: ``iterations``, ``damping`` and ``max_step_rad`` are used.

    Returns:
        ``(T (B, 4, 4), cost (B,))``: the solved poses and their weighted robust cost,
        normalised by the total weight.
    """
    if not terms:
        raise ValueError("terms: at least one residual term is needed")
    check_shape("T_init", T_init, (None, 4, 4))
    fast = _numpy_solve(T_init, terms, cfg)
    if fast is not None:
        return fast
    B = T_init.shape[0]
    dtype, device = T_init.dtype, T_init.device
    eye6 = torch.eye(6, dtype=dtype, device=device)
    T = T_init
    cost = _robust_cost(T, terms)
    lam = torch.full((B, 1, 1), cfg.damping, dtype=dtype, device=device)
    for _ in range(cfg.iterations):
        H, g = _normal_equations(T, terms)
        diag = torch.diagonal(H, dim1=-2, dim2=-1)
        # Damp each direction relative to its own curvature, plus a tiny absolute term
        # so that an object with no valid correspondence gets a zero step, not a NaN.
        A = H + lam * torch.diag_embed(diag) + 1e-9 * (diag.mean(-1)[:, None, None] + 1.0) * eye6
        xi = -torch.linalg.solve(A, g[..., None])[..., 0]
        ang = xi[:, 3:].norm(dim=-1, keepdim=True)
        xi = xi * (cfg.max_step_rad / ang.clamp_min(1e-12)).clamp(max=1.0)
        T_new = se3_exp(xi) @ T
        cost_new = _robust_cost(T_new, terms)
        # Levenberg-Marquardt acceptance, per object: keep a step that lowers the cost
        # and trust the quadratic model more; otherwise stay and damp harder.
        accept = cost_new.detach() <= cost.detach() * (1 + 1e-6) + 1e-12
        T = torch.where(accept[:, None, None], T_new, T)
        cost = torch.where(accept, cost_new, cost)
        lam = torch.where(accept[:, None, None], lam * 0.3, lam * 10.0).clamp(1e-6, 1e6)
    return T, cost


def _numpy_solve(T_init: torch.Tensor, terms, cfg: SolverConfig):
    """:func:`solve_terms` object by object in NumPy (``track.solve.lm_steps`` with the
    exact exponential), or None where that cannot stand in for it: on a GPU, when a
    gradient is wanted (training back-propagates through the solve), or for a term
    with no NumPy counterpart.

    Why: at one object's size (a thousand correspondences, a 6x6 system) torch's fixed
    cost per operation dominated: 15 ms per solve on this project's 2-core CPU against
    about 2 ms here (docs/benchmarks.md).
    """
    from ..track.solve import _cost, lm_steps

    tensors = [T_init] + [x for t in terms for x in vars(t).values()
                          if isinstance(x, torch.Tensor)]
    if T_init.device.type != "cpu" or (torch.is_grad_enabled()
                                        and any(x.requires_grad for x in tensors)):
        return None
    T_out, costs = [], []
    for b in range(T_init.shape[0]):
        np_terms = [getattr(t, "numpy_residuals", lambda _: None)(b) for t in terms]
        if any(t is None for t in np_terms):
            return None
        T_b = lm_steps(T_init[b].double().numpy(), np_terms, cfg.iterations, cfg.damping,
                       cfg.max_step_rad, exact=True)
        T_out.append(T_b)
        costs.append(_cost(T_b, np_terms))
    T = torch.as_tensor(np.stack(T_out), dtype=T_init.dtype)
    return T, torch.as_tensor(costs, dtype=T_init.dtype)


def gauss_newton_steps(T: torch.Tensor, terms, iterations: int = 1, damping: float = 1e-3,
                       max_step_rad: float = 0.5, accept: bool = True) -> torch.Tensor:
    """Levenberg-Marquardt steps over residual terms with a cheap retraction: (B, 4, 4).

    For measurement loops that measure again after every step or two (the render-free
    region modality, tracking), where the exact SE(3) exponential of
    :func:`solve_terms` cost more than the rest of the step (measured: 1.7 of 8 ms per
    measurement on one object). Each step solves ``(H + lambda diag(H)) xi = -g`` (IRLS
    with each term's Huber threshold) and applies it with a first-order retraction of
    the left twist: ``R <- Rodrigues(w) R``, ``t <- Rodrigues(w) t + v``, which agrees
    with ``exp(xi) T`` to first order (the same fixed points). With ``accept``, as in
    :func:`solve_terms`, a step that raises an object's robust cost is refused and its
    damping raised; without, every step is taken (measured on real images: noisier).

    Args:
        T: (B, 4, 4) poses; terms: ``ResidualTerm`` s; iterations: steps;
        damping: initial relative damping; max_step_rad: rotation clip per step.
    """
    dtype, device = T.dtype, T.device
    eye6 = torch.eye(6, dtype=dtype, device=device)
    lam = torch.full((T.shape[0], 1, 1), damping, dtype=dtype, device=device)
    cost = _robust_cost(T, terms) if accept else None
    for _ in range(iterations):
        H, g = _normal_equations(T, terms)
        diag = torch.diagonal(H, dim1=-2, dim2=-1)
        tiny = 1e-9 * (diag.mean(-1)[:, None, None] + 1.0) * eye6
        xi = -torch.linalg.solve(H + lam * torch.diag_embed(diag) + tiny, g[..., None])[..., 0]
        ang = xi[:, 3:].norm(dim=-1, keepdim=True)
        xi = xi * (max_step_rad / ang.clamp_min(1e-12)).clamp(max=1.0)
        T_new = _retract(xi, T)
        if not accept:
            T = T_new
            continue
        cost_new = _robust_cost(T_new, terms)
        ok = cost_new <= cost * (1 + 1e-6) + 1e-12
        T = torch.where(ok[:, None, None], T_new, T)
        cost = torch.where(ok, cost_new, cost)
        lam = torch.where(ok[:, None, None], lam * 0.3, lam * 10.0).clamp(1e-6, 1e6)
    return T


def _retract(xi: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``T`` (B, 4, 4) moved by the left twist ``xi`` (B, 6) = (v, w), to first order:
    ``R <- Rodrigues(w) R``, ``t <- Rodrigues(w) t + v``."""
    w, th2 = xi[:, 3:], (xi[:, 3:] ** 2).sum(-1)
    th = th2.sqrt().clamp_min(1e-12)
    small = th2 < 1e-4
    a = torch.where(small, 1.0 - th2 / 6.0, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24.0, (1.0 - torch.cos(th)) / th2.clamp_min(1e-12))
    W = hat(w)
    R = torch.eye(3, dtype=T.dtype, device=T.device) + a[:, None, None] * W \
        + b[:, None, None] * (W @ W)
    T_new = torch.zeros_like(T)
    T_new[:, :3, :3] = R @ T[:, :3, :3]
    T_new[:, :3, 3] = (R @ T[:, :3, 3:])[..., 0] + xi[:, :3]
    T_new[:, 3, 3] = 1.0
    return T_new


def _huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.where(x <= delta, 0.5 * x**2, delta * (x - 0.5 * delta))


def _robust_cost(T, terms) -> torch.Tensor:
    """Weighted robust cost per object (B,), normalised by the total weight.

    Points behind the camera cost the Huber value of a residual of four times the
    term's threshold (bounded, so one of them cannot dominate the acceptance test).
    """
    cost = wsum = 0.0
    for term in terms:
        ev = term.evaluate(T, jacobian=False)
        behind = 3.5 * term.huber**2  # _huber(4 * huber, huber), as a Python float
        rob = torch.where(ev.front, _huber(ev.r.norm(dim=-1), term.huber),
                          torch.full_like(ev.weight, behind))
        cost = cost + (ev.weight * rob).sum(-1)
        wsum = wsum + ev.weight.sum(-1)
    return cost / wsum.clamp_min(1e-9)


def _normal_equations(T, terms):
    """IRLS normal equations ``H (B,6,6)`` and gradient ``g (B,6)`` at ``T``."""
    H = g = 0.0
    for term in terms:
        ev = term.evaluate(T, jacobian=True)
        w = ev.weight * ev.front * _huber_weight(ev.r.detach().norm(dim=-1), term.huber)
        H = H + torch.einsum("bn,bnki,bnkj->bij", w, ev.J, ev.J)
        g = g + torch.einsum("bn,bnki,bnk->bi", w, ev.J, ev.r)
    return H, g
