"""Normal equations of contour lines and of 2D-3D correspondences as compiled loops (Numba).

``track.solve.LineResiduals`` is the tracker's most frequent term: about 200 lines, one
residual each, evaluated twice per Levenberg-Marquardt step (normal equations, then the
cost of the candidate pose). In NumPy that is some thirty array operations on arrays of
a few hundred elements, whose fixed cost dominated: 0.66 ms per step on this project's
2-core CPU (2026-12-02, AMD EPYC, one thread). Here the same arithmetic is one loop over
the lines, accumulating the 6x6 system directly. ``LineResiduals.evaluate`` stays the
readable reference; ``test/track/test_measure.py`` checks the two against each other.

Conventions as ``track.solve``: left twists ``xi = (v, w)`` in the camera frame; the
residual is ``n . (pi(T p) - target)`` in scaled pixels.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["line_normal_equations", "lm_candidate", "point_normal_equations",
           "transform"]


@numba.njit(cache=True, inline="always")
def transform(T, pts, i):
    """``(X, Y, Z)``: point ``i`` of ``pts`` (N, 3) moved by the pose ``T`` (4, 4), the
    product written out (the kernels' shared first step)."""
    X = T[0, 0] * pts[i, 0] + T[0, 1] * pts[i, 1] + T[0, 2] * pts[i, 2] + T[0, 3]
    Y = T[1, 0] * pts[i, 0] + T[1, 1] * pts[i, 1] + T[1, 2] * pts[i, 2] + T[1, 3]
    Z = T[2, 0] * pts[i, 0] + T[2, 1] * pts[i, 1] + T[2, 2] * pts[i, 2] + T[2, 3]
    return X, Y, Z


@numba.njit(cache=True, inline="always")
def _huber(ar, weight, huber):
    """``(weighted Huber cost, IRLS weight)`` of a residual of norm ``ar``."""
    if ar <= huber:
        return weight * 0.5 * ar * ar, weight
    return weight * huber * (ar - 0.5 * huber), weight * huber / max(ar, 1e-12)


@numba.njit(cache=True)
def line_normal_equations(pts, target, normal, weight, K_s, huber, min_depth_m, T,
                          with_system):
    """``(H (6, 6), g (6,), cost, weight_sum)`` of point-to-line residuals at ``T``.

    Args:
        pts: (N, 3) object points, metres; target, normal: (N, 2) each line's point and
            unit normal, scaled pixels; weight: (N,); K_s: (3, 3); huber: threshold,
            pixels; min_depth_m: nearer points are behind (no weight, a bounded cost).
        T: (4, 4) pose; with_system: False leaves H and g zero (the cost only).
    """
    H = np.zeros((6, 6))
    g = np.zeros(6)
    J = np.empty(6)
    fx, fy, cx, cy = K_s[0, 0], K_s[1, 1], K_s[0, 2], K_s[1, 2]
    cost = 0.0
    wsum = 0.0
    for i in range(pts.shape[0]):
        X, Y, Z = transform(T, pts, i)
        front = Z > min_depth_m
        if not front:  # clamped only to keep the algebra finite, as solve._camera_points
            X, Y, Z = max(X, 1.0), max(Y, 1.0), max(Z, 1.0)
        iz = 1.0 / Z
        n0, n1 = normal[i, 0], normal[i, 1]
        r = (fx * X * iz + cx - target[i, 0]) * n0 + (fy * Y * iz + cy - target[i, 1]) * n1
        ar = abs(r)
        wsum += weight[i]
        if not front:
            cost += weight[i] * 3.5 * huber * huber
            continue
        c, w = _huber(ar, weight[i], huber)
        cost += c
        if not with_system:
            continue
        a0 = n0 * fx * iz
        a1 = n1 * fy * iz
        a2 = -(n0 * fx * X + n1 * fy * Y) * iz * iz
        J[0], J[1], J[2] = a0, a1, a2
        J[3] = Y * a2 - Z * a1  # p_cam x a
        J[4] = Z * a0 - X * a2
        J[5] = X * a1 - Y * a0
        for p in range(6):
            wp = w * J[p]
            g[p] += wp * r
            for q in range(p, 6):
                H[p, q] += wp * J[q]
    for p in range(6):
        for q in range(p):
            H[p, q] = H[q, p]
    return H, g, cost, wsum


@numba.njit(cache=True)
def point_normal_equations(pts, uv, weight, K_s, huber, min_depth_m, T, with_system):
    """``(H (6, 6), g (6,), cost, weight_sum)`` of 2D-3D correspondences
    ``pi(T p) - uv`` at ``T``, the Huber loss on each residual's norm: the arithmetic of
    ``track.solve.PointResiduals.evaluate`` (its readable reference) as one loop. The
    render-and-compare loop solves about 1,000 of them per object and iteration, where
    NumPy's thirty-odd array operations cost 0.6 ms per evaluation.

    Args:
        pts: (N, 3) object points, metres; uv: (N, 2) where they are seen, pixels of
            ``K_s``'s image; weight: (N,); huber: threshold, pixels; min_depth_m: nearer
            points are behind (no weight, a bounded cost); T: (4, 4) pose;
            with_system: False leaves H and g zero (the cost only).
    """
    H = np.zeros((6, 6))
    g = np.zeros(6)
    Ju = np.empty(6)
    Jv = np.empty(6)
    fx, fy, cx, cy = K_s[0, 0], K_s[1, 1], K_s[0, 2], K_s[1, 2]
    cost = 0.0
    wsum = 0.0
    for i in range(pts.shape[0]):
        wi = weight[i]
        wsum += wi
        if wi == 0.0:
            continue  # padding and background: no cost, no system (as the NumPy terms)
        X, Y, Z = transform(T, pts, i)
        if not Z > min_depth_m:
            cost += wi * 3.5 * huber * huber
            continue
        iz = 1.0 / Z
        ru = fx * X * iz + cx - uv[i, 0]
        rv = fy * Y * iz + cy - uv[i, 1]
        ar = np.sqrt(ru * ru + rv * rv)
        c, w = _huber(ar, wi, huber)
        cost += c
        if not with_system:
            continue
        # Rows a of d(uv)/d(p_cam), then p_cam x a for the rotation part.
        Ju[0], Ju[1], Ju[2] = fx * iz, 0.0, -fx * X * iz * iz
        Jv[0], Jv[1], Jv[2] = 0.0, fy * iz, -fy * Y * iz * iz
        Ju[3], Ju[4], Ju[5] = Y * Ju[2], Z * Ju[0] - X * Ju[2], -Y * Ju[0]
        Jv[3], Jv[4], Jv[5] = Y * Jv[2] - Z * Jv[1], -X * Jv[2], X * Jv[1]
        for p in range(6):
            g[p] += w * (Ju[p] * ru + Jv[p] * rv)
            for q in range(p, 6):
                H[p, q] += w * (Ju[p] * Ju[q] + Jv[p] * Jv[q])
    for p in range(6):
        for q in range(p):
            H[p, q] = H[q, p]
    return H, g, cost, wsum


@numba.njit(cache=True)
def lm_candidate(H, g, lam, max_step_rad, T, exact):
    """The pose one Levenberg-Marquardt step from ``T`` (4, 4) proposes: solves
    ``(H + lam diag(H) + tiny) xi = -g`` (6x6), clips the rotation of ``xi = (v, w)`` to
    ``max_step_rad`` and moves ``T`` by the left twist: ``R <- Rodrigues(w) R``,
    ``t <- Rodrigues(w) t + v`` (first order) or, with ``exact``, ``t <- Rodrigues(w) t
    + V(w) v`` (the SE(3) exponential). ``track.solve.lm_steps`` calls it; its NumPy
    reference is ``track.solve._retract`` after ``np.linalg.solve``.

    Why compiled, with the 6x6 solve written out (Gaussian elimination with partial
    pivoting): called some 200 times per refined object, the NumPy version's dozen
    small-array operations cost 0.12 ms a step, more than the residuals' loops.
    """
    A = np.empty((6, 7))
    tiny = 0.0
    for p in range(6):
        tiny += H[p, p]
    tiny = 1e-9 * (tiny / 6.0 + 1.0)
    for p in range(6):
        for q in range(6):
            A[p, q] = H[p, q]
        A[p, p] += lam * H[p, p] + tiny
        A[p, 6] = -g[p]
    for c in range(6):
        piv = c
        for r in range(c + 1, 6):
            if abs(A[r, c]) > abs(A[piv, c]):
                piv = r
        if piv != c:
            for q in range(7):
                A[c, q], A[piv, q] = A[piv, q], A[c, q]
        for r in range(c + 1, 6):
            f = A[r, c] / A[c, c]
            for q in range(c, 7):
                A[r, q] -= f * A[c, q]
    xi = np.zeros(6)
    for r in range(5, -1, -1):
        s = A[r, 6]
        for q in range(r + 1, 6):
            s -= A[r, q] * xi[q]
        xi[r] = s / A[r, r]
    ang = math.sqrt(xi[3] ** 2 + xi[4] ** 2 + xi[5] ** 2)
    k = min(1.0, max_step_rad / max(ang, 1e-12))
    for p in range(6):
        xi[p] *= k
    wx, wy, wz = xi[3], xi[4], xi[5]
    th2 = wx * wx + wy * wy + wz * wz
    if th2 < 1e-4:  # Taylor series of the coefficients
        a, b, c = 1.0 - th2 / 6.0, 0.5 - th2 / 24.0, 1.0 / 6.0 - th2 / 120.0
    else:
        th = math.sqrt(th2)
        a, b = math.sin(th) / th, (1.0 - math.cos(th)) / th2
        c = (th - math.sin(th)) / (th2 * th)
    W = np.array([[0.0, -wz, wy], [wz, 0.0, -wx], [-wy, wx, 0.0]])
    # 3x3 products written out: Numba's matmul would need SciPy's BLAS.
    W2 = np.zeros((3, 3))
    for p in range(3):
        for q in range(3):
            for k in range(3):
                W2[p, q] += W[p, k] * W[k, q]
    R = a * W + b * W2
    V = b * W + c * W2 if exact else np.zeros((3, 3))  # first order: v as it is
    for p in range(3):
        R[p, p] += 1.0
        V[p, p] += 1.0
    out = np.eye(4)
    for p in range(3):
        for q in range(4):
            s = 0.0
            for k in range(3):
                s += R[p, k] * T[k, q]
            out[p, q] = s
        for k in range(3):
            out[p, 3] += V[p, k] * xi[k]
    return out
