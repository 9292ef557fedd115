"""Is the refiner's pose covariance honest? Its calibration against ground truth.

``RefineResult.covariance`` (``track.covariance``) claims, per refined object, how far its
position may be off along each camera axis. Here that claim meets the truth: for every
refined object with a covariance and a ground truth, the position error along the
camera's x and y (across the image) and z (the viewing ray, roughly) axes in units of the claimed
standard deviation. A calibrated covariance puts 68% of the errors within one standard
deviation and 95% within two (Gaussian errors); a useful one also ranks them: larger
claimed deviations where the errors are larger (Spearman's rank correlation).

Position only: a rotation error of a symmetric object has no single axis, and the
position of the object's origin is what a grasp planner offsets first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..bench.calibration import spearman

__all__ = ["covariance_calibration"]


def covariance_calibration(records: Sequence) -> dict | None:
    """The calibration of the covariances of ``records`` (objects with ``covariance``
    (6, 6) or None, ``T_refined``, ``T_gt`` (4, 4) or None, ``kept_coarse``).

    Returns:
        None without any usable record, else ``{"n": int, "axes": {"x": {...}, "y": {...},
        "z": {...}}}``
        with, per axis, ``within_1sigma`` and ``within_2sigma`` (shares),
        ``median_abs_error_m``, ``median_sigma_m`` and ``spearman`` (claimed deviation
        against absolute error).
    """
    err, sig = [], []
    for r in records:
        cov = getattr(r, "covariance", None)
        if cov is None or r.T_gt is None or r.kept_coarse:
            continue
        d = np.asarray(r.T_refined, np.float64)[:3, 3] - np.asarray(r.T_gt, np.float64)[:3, 3]
        s = np.sqrt(np.clip(np.diag(np.asarray(cov, np.float64))[:3], 0.0, None))
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            continue
        err.append(np.abs(d))
        sig.append(s)
    if not err:
        return None
    err, sig = np.array(err), np.array(sig)
    axes = {}
    for name, k in (("x", 0), ("y", 1), ("z", 2)):
        z = err[:, k] / sig[:, k]
        axes[name] = {
            "within_1sigma": float(np.mean(z <= 1.0)),
            "within_2sigma": float(np.mean(z <= 2.0)),
            "median_abs_error_m": float(np.median(err[:, k])),
            "median_sigma_m": float(np.median(sig[:, k])),
            "spearman": spearman(sig[:, k], err[:, k]),
        }
    return {"n": int(len(err)), "axes": axes}
