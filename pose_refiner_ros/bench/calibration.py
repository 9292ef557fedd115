"""Is the refiner's confidence informative? Score against error, in bins.

The samples are sorted by ``RefineResult.score`` and split into ``n_bins`` bins of
(nearly) equal count (quartiles by default). Per bin: the score range, the
``ADD(-S)@0.1d`` accuracy, the median rotation error and the median ADD(-S) in object
diameters. A useful score has accuracy rising and errors falling from the lowest bin to
the highest, and a negative Spearman rank correlation between score and ADD(-S) /
diameter. The same figures are given for the results the refiner accepted and those it
flagged ``diverged``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["calibration", "spearman"]


def _group(score, add_rel, e_R) -> dict:
    if len(score) == 0:
        return {"n": 0}
    return {"n": int(len(score)), "score_min": float(score.min()), "score_max": float(score.max()),
            "acc_add_or_adds_0.1d": float(np.mean(add_rel < 0.1)),
            "median_e_R_deg": float(np.median(e_R)),
            "median_add_or_adds_rel": float(np.median(add_rel))}


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..N-1, ties given their mean rank (as ``scipy.stats.rankdata``, minus 1)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inv = np.unique(x, return_inverse=True)
    return (np.bincount(inv, ranks) / np.bincount(inv))[inv]


def spearman(a, b) -> float | None:
    """Spearman's rank correlation (Pearson's of the average ranks); None when either
    input is constant or has fewer than 3 values. Infinite values rank last."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3:
        return None
    ra, rb = _average_ranks(a), _average_ranks(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def calibration(scores, metrics, diverged, n_bins: int = 4) -> dict:
    """Score-vs-error bins (module docstring).

    Args:
        scores: (N,) confidences in [0, 1].
        metrics: N ``PoseMetrics`` of the refined poses.
        diverged: (N,) the refiner's ``diverged`` flags.
        n_bins: bins of equal count (fewer when N is smaller).

    Returns:
        ``{"bins": [...], "spearman_score_vs_add_rel", "accuracy_rises_with_score",
        "accepted": {...}, "flagged_diverged": {...}}``; bins run from low to high score.
    """
    score = np.asarray(scores, dtype=np.float64)
    add_rel = np.array([m.add_or_adds_m / m.diameter_m for m in metrics], dtype=np.float64)
    add_rel = np.where(np.isnan(add_rel), np.inf, add_rel)
    e_R = np.array([m.e_R_deg for m in metrics], dtype=np.float64)
    div = np.asarray(diverged, dtype=bool)
    order = np.argsort(score, kind="stable")
    bins = [_group(score[b], add_rel[b], e_R[b])
            for b in np.array_split(order, max(1, min(n_bins, len(score)))) if len(b)]
    rho = spearman(score, add_rel)
    acc = [b["acc_add_or_adds_0.1d"] for b in bins]
    return {
        "binning": f"{len(bins)} bins of equal count by score, low to high",
        "bins": bins,
        "spearman_score_vs_add_rel": rho,
        "accuracy_rises_with_score": bool(np.all(np.diff(acc) >= 0)),
        "accepted": _group(score[~div], add_rel[~div], e_R[~div]),
        "flagged_diverged": _group(score[div], add_rel[div], e_R[div]),
    }
