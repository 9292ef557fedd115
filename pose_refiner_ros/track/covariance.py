"""How uncertain a pose is, from the region modality's own lines: a 6x6 covariance.

A silhouette pins an object's position across the image far better than its distance
along the viewing ray (the outline grows by only ``radius * dz / z`` pixels), and a
grasp planner can act on that only if it is told. At a refined pose the contour lines
are measured once more (``track.measure``); the Gauss-Newton information of their
point-to-line residuals, ``H = sum J^T J`` (unit weight per usable line, no robust
loss), scaled by the lines' mean squared offset from the outline, is the textbook
covariance ``s^2 H^-1`` of the pose update, *if* the lines' errors were independent.
They are not: neighbouring lines share the colour model, the occluders and the
object's rim, so the effective number of independent lines is far below their count.
One factor, ``inflation``, multiplies the standard deviations to account for it; it is
calibrated on real images (``RefinerConfig.covariance_inflation``).

Written here: the information matrix of these particular residuals is the solver's own
(``track.solve.LineResiduals``); no library derives it.

Conventions. The solver's update is a left twist ``xi = (v, w)`` in the camera frame,
``T <- exp(xi) T``: a rotation about the *camera's* origin, which also moves the object.
The covariance returned is ROS's ``geometry_msgs/PoseWithCovariance`` order and
meaning: ``(x, y, z, rx, ry, rz)``, the position of the object's origin (metres) and a
rotation about axes through that origin parallel to the camera's (radians), all in the
camera's optical frame. To first order ``dt = v + w x t = v - [t]x w`` and ``dr = w``.
"""

from __future__ import annotations

import numpy as np

from ..refine.region import RegionConfig
from .measure import Contour, Lines, ViewArrays, measure_lines, project_contour
from .solve import LineResiduals

__all__ = ["COVARIANCE_INFLATION", "twist_to_pose_covariance", "region_covariance",
           "covariance_from_lines"]

#: fewer usable lines than this give no covariance (6 unknowns, and a margin)
MIN_LINES = 24

#: The factor on the standard deviations that accounts for the lines' correlation, the
#: default of ``RefinerConfig`` and ``TrackerConfig``'s ``covariance_inflation``.
#: Calibrated on real images (lmo-dev, docs/benchmarks.md "Pose covariance"): at 7 the
#: distance errors of the trusted refinements fall within two standard deviations 95% of
#: the time, the sideways (x) ones within one 67% of the time.
COVARIANCE_INFLATION = 7.0


def twist_to_pose_covariance(cov_xi: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(6, 6) covariance of a left camera-frame twist ``(v, w)`` at a pose whose
    translation is ``t`` (3,) -> (6, 6) in ROS's order and meaning (module docstring)."""
    tx, ty, tz = np.asarray(t, np.float64)
    J = np.eye(6)
    J[:3, 3:] = -np.array([[0.0, -tz, ty], [tz, 0.0, -tx], [-ty, tx, 0.0]])
    C = J @ np.asarray(cov_xi, np.float64) @ J.T
    return 0.5 * (C + C.T)


def region_covariance(img: np.ndarray, K: np.ndarray, T: np.ndarray, va: ViewArrays,
                      px_scale: float, cfg: RegionConfig, half_len_px: float,
                      inflation: float, occluder_inv_depth: np.ndarray | None = None):
    """Covariance (6, 6) of the pose ``T`` (4, 4) from its contour lines, or None.

    Args:
        img: (H, W, 3) float32 RGB in [0, 1]; K: (3, 3) its intrinsics.
        va: the object's viewpoint model; px_scale: image pixels per scaled pixel (as
            the polish measured); cfg: region settings; half_len_px: the lines' half
            length (scaled pixels), the polish's last.
        inflation: factor on the standard deviations (module docstring).
        occluder_inv_depth: optional (H, W) float32, see ``track.measure``.

    Returns:
        ROS-ordered covariance (module docstring), or None when fewer than
        ``MIN_LINES`` lines are usable or the information is singular.
    """
    K_s = np.array(K, np.float64)
    K_s[:2] /= px_scale
    c = project_contour(va, T, K_s)
    if len(c.uv) < MIN_LINES:
        return None
    lines = measure_lines(img, c, px_scale, cfg, half_len_px,
                          occluder_inv_depth=occluder_inv_depth)
    return covariance_from_lines(c, lines, K_s, T, cfg.min_std_px, inflation)


def covariance_from_lines(contour: Contour, lines: Lines, K_s: np.ndarray, T: np.ndarray,
                          min_std_px: float, inflation: float):
    """The covariance (module docstring) of the pose ``T`` (4, 4) from lines already
    measured along ``contour`` (scaled image ``K_s``), e.g. the tracker's last
    measurement of a frame; None as :func:`region_covariance`.

    Args:
        min_std_px: floor of the lines' scatter, scaled pixels (``RegionConfig``'s).
        inflation: factor on the standard deviations.
    """
    seen = lines.seen.astype(np.float64)
    n = int(seen.sum())
    if n < MIN_LINES:
        return None
    # The lines' scatter about the outline, floored at the posterior's own floor: a
    # perfectly fitting outline still has a measurement noise.
    s2 = max(float((seen * lines.mean_px**2).sum()) / n, min_std_px**2)
    term = LineResiduals(contour.pts_obj, contour.uv + lines.mean_px[:, None] * contour.normal,
                         contour.normal, seen, K_s, huber=1e12, min_depth_m=1e-3)
    T = np.asarray(T, np.float64)
    H = term.normal_equations(T)[0]
    if not np.all(np.isfinite(H)) or np.linalg.cond(H) > 1e12:
        return None
    cov_xi = inflation**2 * s2 * np.linalg.inv(H)
    return twist_to_pose_covariance(cov_xi, T[:3, 3])
