"""One object's Levenberg-Marquardt steps over contour lines and depth planes, in NumPy.

The tracker's solve: the same residuals, Jacobians, Huber weighting, step acceptance and
retraction as ``solver.terms.LineTerm`` / ``PlaneTerm`` with
``solver.gauss_newton.gauss_newton_steps``, for one object (6x6 normal equations), in
NumPy because torch's per-operation overhead dominates at this size (see
``track.measure``). ``test/track/test_measure.py`` checks the two against each other.

Conventions (as ``solver.terms``): poses ``T_cam_obj`` (4, 4); updates are left twists
``xi = (v, w)`` in the camera frame, ``T <- exp(xi) T``; residuals are in pixels of the
scaled image ``K_s`` describes (metres times ``f / Z`` for the plane residuals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .solve_kernel import line_normal_equations, lm_candidate, point_normal_equations

__all__ = ["DepthResiduals", "LineResiduals", "PlaneResiduals", "PointResiduals", "lm_steps"]


def _hat(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) skew-symmetric matrices, ``hat(a) @ b = a x b``."""
    z = np.zeros(v.shape[:-1])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([np.stack([z, -w, y], -1), np.stack([w, z, -x], -1),
                     np.stack([-y, x, z], -1)], -2)


def _camera_points(pts_obj: np.ndarray, T: np.ndarray, min_depth_m: float):
    """``(p_cam (N, 3), front (N,))``: the points in the camera frame, and whether they lie
    beyond ``min_depth_m``; points behind are clamped only to keep the algebra finite
    (the solve gives them no weight), as ``solver.terms``."""
    pc = pts_obj @ T[:3, :3].T + T[:3, 3]
    front = pc[:, 2] > min_depth_m
    if not front.all():
        pc = np.where(front[:, None], pc, np.maximum(pc, 1.0))
    return pc, front


def _contiguous(term, names) -> None:
    """Store the (frozen) ``term``'s arrays ``names`` as contiguous float64: the compiled
    loops read them so, converted once per term rather than at each of their two calls
    per LM step."""
    for name in names:
        object.__setattr__(term, name, np.ascontiguousarray(getattr(term, name), np.float64))


def _f_over_z(K_s: np.ndarray, pc: np.ndarray) -> np.ndarray:
    """(N,) pixels per metre at the depth of each camera-frame point ``pc`` (N, 3): the
    scale of the metric residuals' pixel equivalents (``solver.terms``)."""
    return 0.5 * (K_s[0, 0] + K_s[1, 1]) / pc[:, 2]


def _project(pc: np.ndarray, K_s: np.ndarray, jacobian: bool = True):
    """``(uv (N, 2), d(uv)/d(p_cam) (N, 2, 3) or None)`` of camera-frame points ``pc``."""
    fx, fy = K_s[0, 0], K_s[1, 1]
    X, Y, iz = pc[:, 0], pc[:, 1], 1.0 / pc[:, 2]
    uv = np.stack([fx * X * iz + K_s[0, 2], fy * Y * iz + K_s[1, 2]], 1)
    if not jacobian:
        return uv, None
    zero = np.zeros_like(X)
    return uv, np.stack([np.stack([fx * iz, zero, -fx * X * iz * iz], -1),
                         np.stack([zero, fy * iz, -fy * Y * iz * iz], -1)], 1)


@dataclass(frozen=True)
class LineResiduals:
    """Point-to-line residuals ``n . (pi(T p) - target)`` (``solver.terms.LineTerm``).

    Attributes:
        pts_obj: (N, 3) object points, metres; target: (N, 2) a point of each line and
        normal: (N, 2) its unit direction, scaled pixels; weight: (N,) including the
        term's scale; K_s: (3, 3); huber: threshold, pixels; min_depth_m: nearer points
        are behind.
    """

    pts_obj: np.ndarray
    target: np.ndarray
    normal: np.ndarray
    weight: np.ndarray
    K_s: np.ndarray
    huber: float
    min_depth_m: float = 1e-3

    def evaluate(self, T: np.ndarray, jacobian: bool = True):
        """``(r (N, 1), J (N, 1, 6) or None, front (N,) bool)`` at ``T``: the point
        residual of :func:`_project` along the line's normal."""
        pc, front = _camera_points(self.pts_obj, T, self.min_depth_m)
        uv, d_uv = _project(pc, self.K_s, jacobian)
        r = ((uv - self.target) * self.normal).sum(1, keepdims=True)
        if not jacobian:
            return r, None, front
        a = np.einsum("nk,nkj->nj", self.normal, d_uv)  # n^T d(uv)/d(p_cam)
        return r, np.concatenate([a, np.cross(pc, a)], 1)[:, None], front

    def __post_init__(self):
        _contiguous(self, ("pts_obj", "target", "normal", "weight", "K_s"))

    def normal_equations(self, T: np.ndarray):
        """``(H (6, 6), g (6,), cost, weight)``: what ``lm_steps`` sums, in one compiled
        loop (``track.solve_kernel``; the tracker's most frequent term)."""
        return line_normal_equations(*self._args(T), True)

    def cost(self, T: np.ndarray) -> tuple[float, float]:
        """``(robust cost, total weight)`` at ``T``."""
        _, _, c, w = line_normal_equations(*self._args(T), False)
        return c, w

    def _args(self, T):
        return (self.pts_obj, self.target, self.normal, self.weight, self.K_s,
                float(self.huber), float(self.min_depth_m), np.ascontiguousarray(T, np.float64))


@dataclass(frozen=True)
class PlaneResiduals:
    """Point-to-plane residuals ``n . (T p - X) f / Z`` (``solver.terms.PlaneTerm``),
    the normal ``n`` (object frame, rotated by ``T``) held fixed in the Jacobian.

    Attributes:
        pts_obj, normals_obj, X_cam: (N, 3) object points, their normals, the measured
        surface points (camera frame, metres); weight: (N,); K_s: (3, 3) the image the
        pixel equivalents refer to; huber: threshold; min_depth_m: as above.
    """

    pts_obj: np.ndarray
    normals_obj: np.ndarray
    X_cam: np.ndarray
    weight: np.ndarray
    K_s: np.ndarray
    huber: float
    min_depth_m: float = 1e-3

    def evaluate(self, T: np.ndarray, jacobian: bool = True):
        pc, front = _camera_points(self.pts_obj, T, self.min_depth_m)
        f_over_z = _f_over_z(self.K_s, pc)
        n = self.normals_obj @ T[:3, :3].T
        r = (((pc - self.X_cam) * n).sum(-1) * f_over_z)[:, None]
        if not jacobian:
            return r, None, front
        return r, (np.concatenate([n, np.cross(pc, n)], 1) * f_over_z[:, None])[:, None], front


@dataclass(frozen=True)
class PointResiduals:
    """2D-3D correspondences ``pi(T p) - uv`` (``solver.terms.ReprojectionTerm``).

    Attributes:
        pts_obj: (N, 3) object points, metres; uv: (N, 2) where they are seen, pixels of
        the image ``K_s`` describes; weight: (N,); huber: threshold on the residual's
        norm, pixels; min_depth_m: as above.
    """

    pts_obj: np.ndarray
    uv: np.ndarray
    weight: np.ndarray
    K_s: np.ndarray
    huber: float
    min_depth_m: float = 1e-3

    def evaluate(self, T: np.ndarray, jacobian: bool = True):
        """``(r (N, 2), J (N, 2, 6) or None, front (N,) bool)`` at ``T``."""
        pc, front = _camera_points(self.pts_obj, T, self.min_depth_m)
        uv, d_uv = _project(pc, self.K_s, jacobian)
        if not jacobian:
            return uv - self.uv, None, front
        # d(p_cam)/d(xi) = [I | -hat(p_cam)]; row a of d_uv gives [a, p_cam x a].
        return uv - self.uv, np.concatenate([d_uv, np.cross(pc[:, None], d_uv)], 2), front

    def __post_init__(self):
        _contiguous(self, ("pts_obj", "uv", "weight", "K_s"))

    def normal_equations(self, T: np.ndarray):
        """``(H (6, 6), g (6,), cost, weight)`` in one compiled loop
        (``track.solve_kernel``); :meth:`evaluate` is its reference."""
        return point_normal_equations(*self._args(T), True)

    def cost(self, T: np.ndarray) -> tuple[float, float]:
        """``(robust cost, total weight)`` at ``T``."""
        _, _, c, w = point_normal_equations(*self._args(T), False)
        return c, w

    def _args(self, T):
        return (self.pts_obj, self.uv, self.weight, self.K_s, float(self.huber),
                float(self.min_depth_m), np.ascontiguousarray(T, np.float64))


@dataclass(frozen=True)
class DepthResiduals:
    """A point's depth against a measured one, ``(Z(T p) - z) f / Z``
    (``solver.terms.DepthTerm``).

    Attributes:
        pts_obj: (N, 3) object points, metres; depth_m: (N,) measured camera Z, metres;
        weight: (N,); K_s: (3, 3) the image the pixel equivalents refer to; huber:
        threshold; min_depth_m: as above.
    """

    pts_obj: np.ndarray
    depth_m: np.ndarray
    weight: np.ndarray
    K_s: np.ndarray
    huber: float
    min_depth_m: float = 1e-3

    def evaluate(self, T: np.ndarray, jacobian: bool = True):
        pc, front = _camera_points(self.pts_obj, T, self.min_depth_m)
        f_over_z = _f_over_z(self.K_s, pc)
        r = ((pc[:, 2] - self.depth_m) * f_over_z)[:, None]
        if not jacobian:
            return r, None, front
        zero, one = np.zeros(len(pc)), np.ones(len(pc))
        J = np.stack([zero, zero, one, pc[:, 1], -pc[:, 0], zero], 1) * f_over_z[:, None]
        return r, J[:, None], front


def _norm(r: np.ndarray) -> np.ndarray:
    """(N, k) -> (N,) residual norms."""
    return np.abs(r[:, 0]) if r.shape[1] == 1 else np.sqrt((r * r).sum(1))


def _robust(r: np.ndarray, front: np.ndarray, huber: float) -> np.ndarray:
    """Per-point Huber cost; a point behind the camera costs the value of four
    thresholds (bounded, as ``solver.gauss_newton``)."""
    x = _norm(r)
    return np.where(front, np.where(x <= huber, 0.5 * x * x, huber * (x - 0.5 * huber)),
                    3.5 * huber**2)


def _normal_equations(t, T: np.ndarray):
    """``(H (6, 6), g (6,), cost, weight)`` of term ``t`` at ``T``: its Huber-weighted
    (IRLS) normal equations, robust cost and total weight, from ``t.evaluate``."""
    r, J, front = t.evaluate(T)
    ar = _norm(r)
    w = t.weight * front * np.where(ar <= t.huber, 1.0, t.huber / np.maximum(ar, 1e-12))
    Jw = J * w[:, None, None]
    return (np.einsum("nki,nkj->ij", Jw, J), np.einsum("nki,nk->i", Jw, r),
            float(t.weight @ _robust(r, front, t.huber)), float(t.weight.sum()))


def _term_cost(t, T: np.ndarray) -> tuple[float, float]:
    """``(robust cost, total weight)`` of term ``t`` at ``T``."""
    r, _, front = t.evaluate(T, jacobian=False)
    return float(t.weight @ _robust(r, front, t.huber)), float(t.weight.sum())


def _cost(T: np.ndarray, terms) -> float:
    """Weighted robust cost normalised by the total weight."""
    cost = wsum = 0.0
    for t in terms:
        c, w = t.cost(T) if hasattr(t, "cost") else _term_cost(t, T)
        cost += c
        wsum += w
    return cost / max(wsum, 1e-9)


def _retract(xi: np.ndarray, T: np.ndarray, exact: bool = False) -> np.ndarray:
    """The readable reference of the compiled step's retraction
    (``track.solve_kernel.lm_candidate``; ``test/track/test_measure.py`` holds them
    equal): ``T`` moved by the left twist ``xi`` (6,) to first order, as
    ``solver.gauss_newton._retract``: ``R <- Rodrigues(w) R``, ``t <- Rodrigues(w) t + v``;
    with ``exact``, ``exp(xi) T`` as ``geometry.lie.se3_exp``: ``t <- R t + V(w) v``,
    ``V = I + b [w]x + c [w]x^2`` the left Jacobian of SO(3)."""
    w = xi[3:]
    th2 = float(w @ w)
    if th2 < 1e-4:  # Taylor series of the coefficients
        a, b, c = 1.0 - th2 / 6.0, 0.5 - th2 / 24.0, 1.0 / 6.0 - th2 / 120.0
    else:
        th = np.sqrt(th2)
        a, b, c = np.sin(th) / th, (1.0 - np.cos(th)) / th2, (th - np.sin(th)) / (th2 * th)
    W = _hat(w)
    W2 = W @ W
    R = np.eye(3) + a * W + b * W2
    out = np.eye(4)
    out[:3, :3] = R @ T[:3, :3]
    v = (np.eye(3) + b * W + c * W2) @ xi[:3] if exact else xi[:3]
    out[:3, 3] = R @ T[:3, 3] + v
    return out


def lm_steps(T: np.ndarray, terms, iterations: int = 1, damping: float = 1e-3,
             max_step_rad: float = 0.5, exact: bool = False) -> np.ndarray:
    """Levenberg-Marquardt steps from ``T`` (4, 4) over ``terms``: each solves
    ``(H + lambda diag(H)) xi = -g`` (Huber IRLS), clips the rotation to
    ``max_step_rad``, and is taken only if it does not raise the robust cost (else the
    damping grows tenfold); returns the new (4, 4) pose. The step is applied by the
    first-order retraction, or with ``exact`` by the SE(3) exponential (as
    ``solver.gauss_newton.solve_terms``)."""
    lam = damping
    cost = None
    for _ in range(iterations):
        H, g = np.zeros((6, 6)), np.zeros(6)
        c_sum = w_sum = 0.0
        for t in terms:
            Ht, gt, c, wt = (t.normal_equations(T) if hasattr(t, "normal_equations")
                             else _normal_equations(t, T))
            H += Ht
            g += gt
            c_sum += c  # the cost at the start, from the same residuals
            w_sum += wt
        if cost is None:
            cost = c_sum / max(w_sum, 1e-9)
        T_new = lm_candidate(H, g, lam, max_step_rad, np.ascontiguousarray(T, np.float64),
                             exact)
        cost_new = _cost(T_new, terms)
        if cost_new <= cost * (1 + 1e-6) + 1e-12:
            T, cost, lam = T_new, cost_new, max(lam * 0.3, 1e-6)
        else:
            lam = min(lam * 10.0, 1e6)
    return T
