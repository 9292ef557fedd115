"""Summaries of pose errors over many samples: medians, accuracies, BOP average
recalls, and initial-against-refined comparisons (numpy, float64).

The per-sample errors and their definitions (``docs/protocol.md``) are in
``evaluation.pose_errors``; this module re-exports its names, so that
``metrics.add`` and ``metrics.summarize`` come from one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np

from .pose_errors import (
    _FIELDS,
    ERROR_KEYS,
    PoseMetrics,
    add,
    adds,
    bbox_diagonal_px,
    evaluate_pose,
    mspd,
    mssd,
    reprojection_error,
    rotation_error_deg,
    rt_error,
    translation_error_m,
    translation_error_rel,
)

__all__ = [
    "PoseMetrics",
    "rotation_error_deg",
    "translation_error_rel",
    "translation_error_m",
    "rt_error",
    "reprojection_error",
    "bbox_diagonal_px",
    "add",
    "adds",
    "mssd",
    "mspd",
    "evaluate_pose",
    "summarize",
    "compare",
    "as_dict",
    "ERROR_KEYS",
]

# BOP 2019+ thresholds: MSSD in units of the object diameter, MSPD in units of
# image_width / 640 pixels.
MSSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)
MSPD_THRESHOLDS = np.arange(5.0, 51.0, 5.0)


def _column(records: Sequence[PoseMetrics], key: str) -> np.ndarray:
    """Values of one error over the records; NaN (a failed estimate) counts as inf."""
    values = np.array([getattr(r, key) for r in records], dtype=np.float64)
    return np.where(np.isnan(values), np.inf, values)


def _records(records) -> list[PoseMetrics]:
    out = [r if isinstance(r, PoseMetrics) else PoseMetrics(**{k: r[k] for k in _FIELDS})
           for r in records]
    if not out:
        raise ValueError("records is empty: nothing to summarize")
    return out


def summarize(records: Sequence[PoseMetrics | Mapping]) -> dict[str, float]:
    """Medians and accuracies over samples.

    Args:
        records: :class:`PoseMetrics` (or mappings of its fields, e.g. read back from
            JSON), one per sample. NaN errors (failed estimates) count as infinite:
            they raise medians and fail every threshold.
    Returns:
        ``n``; ``median_<key>`` for every key of :data:`ERROR_KEYS`; the shares (0..1)
        ``acc_pi_6`` (e_R < 30 deg), ``acc_pi_18`` (e_R < 10 deg), ``acc_5deg5cm``,
        ``acc_add_or_adds_0.1d`` (ADD(-S) < 0.1 diameter); and BOP's average recalls
        ``ar_mssd`` (thresholds 0.05..0.5 diameter) and ``ar_mspd`` (5..50 px times
        width / 640).
    """
    recs = _records(records)
    out: dict[str, float] = {"n": len(recs)}
    cols = {key: _column(recs, key) for key in ERROR_KEYS}
    for key in ERROR_KEYS:
        out[f"median_{key}"] = float(np.median(cols[key]))
    diameter = np.array([r.diameter_m for r in recs])
    width = np.array([r.image_width for r in recs], dtype=np.float64)
    e_R = cols["e_R_deg"]
    out["acc_pi_6"] = float(np.mean(e_R < 30.0))
    out["acc_pi_18"] = float(np.mean(e_R < 10.0))
    out["acc_5deg5cm"] = float(np.mean((e_R < 5.0) & (cols["t_err_m"] < 0.05)))
    out["acc_add_or_adds_0.1d"] = float(np.mean(cols["add_or_adds_m"] < 0.1 * diameter))
    out["ar_mssd"] = float(np.mean(cols["mssd_m"][:, None] < MSSD_THRESHOLDS * diameter[:, None]))
    out["ar_mspd"] = float(
        np.mean(cols["mspd_px"][:, None] < MSPD_THRESHOLDS * (width[:, None] / 640.0))
    )
    return out


def compare(
    initial: Sequence[PoseMetrics | Mapping], refined: Sequence[PoseMetrics | Mapping]
) -> dict:
    """Initial against refined errors of the same samples, in the same order.

    Returns:
        ``{"n", "initial": summarize(initial), "refined": summarize(refined),
        "n_worse": {key: count}, "n_better": {key: count}}`` where, for every key of
        :data:`ERROR_KEYS`, ``n_worse`` counts the samples whose refined error is
        strictly larger than the initial one (NaN counts as inf) and ``n_better`` those
        strictly smaller.
    """
    init, ref = _records(initial), _records(refined)
    if len(init) != len(ref):
        raise ValueError(
            f"initial and refined must hold the same samples, got {len(init)} and {len(ref)}"
        )
    n_worse, n_better = {}, {}
    for key in ERROR_KEYS:
        a, b = _column(init, key), _column(ref, key)
        n_worse[key] = int(np.sum(b > a))
        n_better[key] = int(np.sum(b < a))
    return {"n": len(init), "initial": summarize(init), "refined": summarize(ref),
            "n_worse": n_worse, "n_better": n_better}


def as_dict(record: PoseMetrics) -> dict:
    """The record's fields plus the derived ADD(-S) values (e.g. for JSON)."""
    out = asdict(record)
    out["add_or_adds_m"] = record.add_or_adds_m
    out["add_or_adds_correct"] = record.add_or_adds_correct
    return out

