"""The tracker's line measurements as one compiled loop (Numba).

``track.measure.measure_lines`` reads, per object and measurement, about 200 lines of 25
samples and 200 bands of 20: colours, a colour model, the edge posterior and the snap.
Written with NumPy arrays that is some forty array operations on a few thousand
elements each, and at that size each operation's fixed cost is most of the time: 1.9 ms
per measurement on this project's 2-core CPU (2026-12-02, AMD EPYC, one thread), three
per tracked frame, more than half of the tracker. The same arithmetic as one loop over
the lines, compiled by Numba (``cache=True``: compiled once per machine, then loaded),
does the work without the per-operation cost. No installable library measures a region
modality's lines; the reference implementation is the torch modality
(``refine.sparse_region``), against which ``test/track/test_measure.py`` checks this one.

Conventions as ``track.measure``: image positions in pixels, the centre of the top-left
pixel at (0, 0); offsets along lines in scaled pixels; bilinear reads replicate the
border pixel (OpenCV's ``BORDER_REPLICATE``, ``grid_sample``'s border padding).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .solve_kernel import transform

__all__ = ["line_measurements"]


@numba.njit(cache=True, inline="always")
def _floor(x):
    """``floor(x)`` as an integer, by truncation and a correction, not by libm's
    ``floorf``. Compiled for an AVX-512 CPU (an Intel Xeon of this project), the loops
    around a ``floorf`` call are vectorised with AVX registers, while the library's
    ``floorf`` is SSE code: every call paid the switch between the two, and the colour
    bands' sampling loop ran 8 times slower (2.4 against 0.3 ms per measurement of 200
    lines; the same results to the bit)."""
    i = int(x)
    return i - 1 if i > x else i


@numba.njit(cache=True, inline="always")
def _bilinear(img, x, y, out):
    """RGB at (x, y) into ``out`` (3,); returns True when within half a pixel of the
    image."""
    H, W = img.shape[0], img.shape[1]
    x0, y0 = _floor(x), _floor(y)
    fx, fy = x - x0, y - y0
    xa, xb = min(max(x0, 0), W - 1), min(max(x0 + 1, 0), W - 1)
    ya, yb = min(max(y0, 0), H - 1), min(max(y0 + 1, 0), H - 1)
    for ch in range(3):
        top = img[ya, xa, ch] * (1.0 - fx) + img[ya, xb, ch] * fx
        bot = img[yb, xa, ch] * (1.0 - fx) + img[yb, xb, ch] * fx
        out[ch] = top * (1.0 - fy) + bot * fy
    return x >= -0.5 and x <= W - 0.5 and y >= -0.5 and y <= H - 0.5


@numba.njit(cache=True, inline="always")
def _bin(rgb, bins):
    idx = 0
    for ch in range(3):
        v = min(max(rgb[ch], 0.0), 1.0)
        q = min(int(v * bins), bins - 1)
        idx = idx * bins + q
    return idx


@numba.njit(cache=True, inline="always")
def _free(occ, x, y, depth):
    """In front of the nearest other object (``occ``: its inverse depth, nearest
    pixel; an empty map: no occluder)."""
    if occ.shape[0] == 0:
        return True
    H, W = occ.shape
    xi = min(max(_floor(x + 0.5), 0), W - 1)
    yi = min(max(_floor(y + 0.5), 0), H - 1)
    return occ[yi, xi] * depth < 1.0


@numba.njit(cache=True, error_model="numpy")
def line_measurements(img, uv, nrm, s, band, fg_px, bg_px, depth_m, occ, hist_in,
                      hist_rate, sample_colours, bins, eps, min_std_px, agree_px,
                      snap_px, snap_min_change):
    """Colour model and edge measurement along every line (``track.measure.measure_lines``).

    Args:
        img: (H, W, 3) float32 RGB in [0, 1].
        uv, nrm: (N, 2) float32 the contour points and their normals in image pixels
            (a normal's length is image pixels per scaled pixel); the sample positions
            are computed in float32, as the maps of OpenCV's ``remap`` were before.
        s: (M,) offsets of the line samples, scaled pixels (odd M, centred on 0).
        band: (P,) offsets of the colour bands' samples (negative: inside).
        fg_px, bg_px, depth_m: (N,) usable lengths inside / outside, the points' depths.
        occ: (H, W) float32 inverse depth of the nearest other object, or (0, 0).
        hist_in: (2, bins^3) earlier colour histograms (object, surroundings), or (0, 0).
        hist_rate: weight of this image's colours against ``hist_in``; 0 with
            ``sample_colours`` False uses ``hist_in`` as it is.
        bins, eps, min_std_px, agree_px, snap_px, snap_min_change: ``RegionConfig``'s.

    Returns:
        ``(mean (N,), var (N,), agree (N,), seen (N,) bool, h_f, h_b)``.
    """
    N, M, P = uv.shape[0], s.shape[0], band.shape[0]
    s32 = s.astype(np.float32)
    band32 = band.astype(np.float32)
    nb = bins**3
    rgb = np.empty(3)
    h_f = np.zeros(nb)
    h_b = np.zeros(nb)
    if sample_colours:
        w_f = 0.0
        w_b = 0.0
        for i in range(N):
            for k in range(P):
                b = band[k]
                inner = b < 0 and -b <= fg_px[i]
                outer = b > 0 and b <= bg_px[i]
                if not (inner or outer):
                    continue
                x = uv[i, 0] + band32[k] * nrm[i, 0]  # float32, as OpenCV's maps
                y = uv[i, 1] + band32[k] * nrm[i, 1]
                if not _bilinear(img, x, y, rgb):
                    continue
                if not _free(occ, x, y, depth_m[i]):
                    continue
                j = _bin(rgb, bins)
                if inner:
                    h_f[j] += 1.0
                    w_f += 1.0
                else:
                    h_b[j] += 1.0
                    w_b += 1.0
        prior = 1.0 / nb
        for j in range(nb):
            h_f[j] = (h_f[j] + prior) / (w_f + 1.0)
            h_b[j] = (h_b[j] + prior) / (w_b + 1.0)
        if hist_in.shape[0] == 2:
            for j in range(nb):
                h_f[j] = (1.0 - hist_rate) * hist_in[0, j] + hist_rate * h_f[j]
                h_b[j] = (1.0 - hist_rate) * hist_in[1, j] + hist_rate * h_b[j]
    else:
        h_f[:] = hist_in[0]
        h_b[:] = hist_in[1]

    mean = np.zeros(N)
    var = np.full(N, 1e6)
    agree = np.zeros(N)
    seen = np.zeros(N, np.bool_)
    ctr = M // 2
    step = s[1] - s[0]
    cols = np.empty((M, 3))
    pf = np.empty(M)
    good = np.empty(M, np.bool_)
    ok = np.empty(M, np.bool_)
    cf = np.empty(M)
    cb = np.empty(M)
    work = np.empty(M - 1)  # the posterior's weights, then the snap's scores
    for i in range(N):
        for k in range(M):
            x = uv[i, 0] + s32[k] * nrm[i, 0]
            y = uv[i, 1] + s32[k] * nrm[i, 1]
            inside = _bilinear(img, x, y, rgb)
            cols[k, 0], cols[k, 1], cols[k, 2] = rgb[0], rgb[1], rgb[2]
            j = _bin(rgb, bins)
            pf[k] = h_f[j] / (h_f[j] + h_b[j])
            usable = inside and _free(occ, x, y, depth_m[i])
            within = (-s[k] <= fg_px[i]) if s[k] < 0 else (s[k] <= bg_px[i])
            good[k] = usable and (within or k == ctr)
        # Usable from the edge outwards, up to the first failure.
        ok[ctr] = good[ctr]
        for k in range(ctr - 1, -1, -1):
            ok[k] = ok[k + 1] and good[k] if k + 1 < ctr else good[k]
        for k in range(ctr + 1, M):
            ok[k] = ok[k - 1] and good[k] if k - 1 > ctr else good[k]
        if not ok[ctr]:
            continue
        seen[i] = True
        # Edge posterior (``refine.region.edge_posterior``), as products of the
        # probabilities rather than sums of their logarithms: the same normalised
        # weights without a logarithm and an exponential per sample (at most
        # ``1 / eps ** M`` apart, far inside float64's range for any line here).
        acc = 1.0
        for k in range(M):
            p = min(max(pf[k], eps), 1.0 - eps) if ok[k] else 0.5
            pf[k] = p
            acc *= p
            cf[k] = acc
        acc = 1.0
        for k in range(M - 1, -1, -1):
            acc *= 1.0 - pf[k]
            cb[k] = acc
        tot = 0.0
        for k in range(M - 1):
            w = cf[k] * cb[k + 1] if (ok[k] and ok[k + 1]) else 0.0
            work[k] = w
            tot += w
        if tot <= 0.0:  # no usable pair of samples: a flat posterior
            for k in range(M - 1):
                work[k] = 1.0
            tot = M - 1.0
        mu = 0.0
        for k in range(M - 1):
            mu += work[k] * 0.5 * (s[k] + s[k + 1])
        mu /= tot
        v = 0.0
        ag = 0.0
        for k in range(M - 1):
            d = 0.5 * (s[k] + s[k + 1])
            w = work[k] / tot
            v += w * (d - mu) ** 2
            if abs(d) <= agree_px:
                ag += w
        var[i] = max(v + step * step / 12.0, min_std_px**2)
        agree[i] = ag
        # Snap to the strongest colour change near the posterior's mean
        # (``refine.edge_snap``). The Gaussian window by a recurrence over the evenly
        # spaced samples: exp(-z^2/2) from one sample to the next is a factor that
        # shrinks by exp(-h^2) each step (three exponentials per line, not one per sample).
        if snap_px > 0 and M >= 5:
            h = step / snap_px
            z = (s[1] - mu) / snap_px
            win = math.exp(-0.5 * z * z)
            ratio = math.exp(-z * h - 0.5 * h * h)
            shrink = math.exp(-h * h)
            best, jb = -1.0, 0
            for k in range(M - 2):
                if ok[k] and ok[k + 2]:
                    dr = cols[k + 2, 0] - cols[k, 0]
                    dg = cols[k + 2, 1] - cols[k, 1]
                    db = cols[k + 2, 2] - cols[k, 2]
                    g = math.sqrt(dr * dr + dg * dg + db * db) * win
                else:
                    g = 0.0
                work[k] = g  # reused as the scores
                if g > best:
                    best, jb = g, k
                win *= ratio
                ratio *= shrink
            jb = min(max(jb, 1), M - 4)
            g0, g1, g2 = work[jb - 1], work[jb], work[jb + 1]
            if g1 > snap_min_change:
                curv = g0 - 2.0 * g1 + g2
                frac = 0.5 * (g0 - g2) / curv if curv < -1e-9 else 0.0
                mu = s[jb + 1] + min(max(frac, -0.5), 0.5) * step
        mean[i] = mu
    return mean, var, agree, seen, h_f, h_b


@numba.njit(cache=True)
def contour_projection(pts, nrm, valid, fg_m, bg_m, T, K_s, min_depth_m):
    """One view's usable contour points projected at ``T`` (``track.measure.project_contour``,
    whose NumPy version this replaces: 0.19 ms of a dozen small-array operations per
    call, some 80 calls per refined object, against a few microseconds here).

    Args:
        pts, nrm: (N, 3) the view's contour points and outward normals, object frame;
        valid: (N,) bool; fg_m, bg_m: (N,) usable line lengths inside / outside, metres;
        T: (4, 4) pose; K_s: (3, 3) intrinsics of the scaled image; min_depth_m: points
        nearer than this are left out.

    Returns:
        ``(index (n,), uv (n, 2), normal (n, 2), fg_px (n,), bg_px (n,), depth (n,))``:
        the kept points' indices into ``pts``, their projections and unit image normals
        (the derivative of the projection along the normal), lengths in scaled pixels
        and camera depths.
    """
    N = pts.shape[0]
    fx, fy, cx, cy = K_s[0, 0], K_s[1, 1], K_s[0, 2], K_s[1, 2]
    f_mean = 0.5 * (fx + fy)
    index = np.empty(N, np.int64)
    uv = np.empty((N, 2))
    normal = np.empty((N, 2))
    fg = np.empty(N)
    bg = np.empty(N)
    depth = np.empty(N)
    n = 0
    for i in range(N):
        if not valid[i]:
            continue
        X, Y, Z = transform(T, pts, i)
        if not Z > min_depth_m:
            continue
        nx = T[0, 0] * nrm[i, 0] + T[0, 1] * nrm[i, 1] + T[0, 2] * nrm[i, 2]
        ny = T[1, 0] * nrm[i, 0] + T[1, 1] * nrm[i, 1] + T[1, 2] * nrm[i, 2]
        nz = T[2, 0] * nrm[i, 0] + T[2, 1] * nrm[i, 1] + T[2, 2] * nrm[i, 2]
        iz = 1.0 / Z
        u = fx * (nx - X * nz * iz) * iz
        v = fy * (ny - Y * nz * iz) * iz
        length = max(math.sqrt(u * u + v * v), 1e-9)
        index[n] = i
        uv[n, 0] = X * iz * fx + cx
        uv[n, 1] = Y * iz * fy + cy
        normal[n, 0] = u / length
        normal[n, 1] = v / length
        fg[n] = fg_m[i] * f_mean * iz
        bg[n] = bg_m[i] * f_mean * iz
        depth[n] = Z
        n += 1
    return index[:n], uv[:n], normal[:n], fg[:n], bg[:n], depth[:n]


@numba.njit(cache=True, inline="always")
def _pixel(T, pts, i, K):
    """(u, v, Z) of point ``i`` of ``pts`` (N, 3) at pose ``T`` through ``K``."""
    X, Y, Z = transform(T, pts, i)
    if Z <= 1e-6:
        return 0.0, 0.0, Z
    return X / Z * K[0, 0] + K[0, 2], Y / Z * K[1, 1] + K[1, 2], Z


@numba.njit(cache=True)
def moved_px(pts, A, B, K):
    """Largest image motion (pixels of ``K``) of the object points ``pts`` (N, 3) from
    pose ``A`` to pose ``B`` (4, 4); inf when a point is at or behind the camera in
    either, or there is none (``track.measure._moved_px``, compiled for the same reason
    as above)."""
    if pts.shape[0] == 0:
        return np.inf
    best = 0.0
    for i in range(pts.shape[0]):
        ua, va, za = _pixel(A, pts, i, K)
        ub, vb, zb = _pixel(B, pts, i, K)
        if za <= 1e-6 or zb <= 1e-6:
            return np.inf
        best = max(best, (ua - ub) ** 2 + (va - vb) ** 2)
    return math.sqrt(best)
