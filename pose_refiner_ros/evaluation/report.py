"""Evaluation reports shared by ``eval-bag`` and ``eval``: per-object records, the
protocol's metrics for the coarse and the refined poses side by side, timing, plots.

:class:`Evaluation` collects one :class:`ObjectResult` per refined object. The full
records are streamed to a JSON-lines file as they come (memory stays flat on long runs);
only the numbers the summary needs stay in memory (a few dozen floats per object).
:meth:`Evaluation.write` then produces, in the output directory:

- ``report.json``: ``meta`` (inputs, settings), ``summary`` (counts, timing, and
  ``metrics``: :func:`~pose_refiner_ros.evaluation.metrics.compare` of the coarse and the
  refined poses of every object that has ground truth) and ``objects`` (every record);
- ``report.md``: the same, readable, with the plots;
- ``plots/errors.png`` (error distributions before and after), ``plots/iterations.png``
  (error per iteration), ``plots/confidence.png`` (confidence against error).

Every file is written under a temporary name and renamed when complete. The plots are
drawn by ``evaluation.report_plots``, the Markdown and the terminal lines written by
``evaluation.report_text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import json
import math
import os
from pathlib import Path
import tempfile

import numpy as np

from . import metrics as M
from .covariance_check import covariance_calibration
from .published import as_published
from .report_plots import write_plots
from .report_text import report_markdown

__all__ = ["ObjectResult", "Evaluation", "evaluate_object", "match_ground_truth"]


@dataclass
class ObjectResult:
    """One refined object.

    Attributes:
        frame: index of the frame (image) in the run.
        key: what identifies the frame in its source: ``{"stamp_ns": ...}`` for a bag,
            ``{"scene_id": ..., "im_id": ...}`` for a dataset.
        class_id: the registered class.
        score: the refiner's confidence in [0, 1].
        diverged: the refiner flagged the result; ``reason`` says why.
        T_init, T_refined: (4, 4) coarse and refined ``T_cam_obj``, metres.
        T_gt: (4, 4) ground truth, or None.
        timing_ms: the refiner's per-stage times for this object.
        iterations: outer iterations run.
        mode: ``"rgb"`` or ``"rgbd"``: whether depth residuals were used.
        metrics_init, metrics_refined: every per-sample metric (None without ground truth).
        score_coarse: the refiner's region score of the coarse pose (None without the
            region modality).
        kept_coarse: the refiner did not trust its refinement and returned the coarse pose.
        restarted: the refinement was rejected and one of the refiner's restarts replaced
            it (``RefineResult.restarted``).
        published: what the node would publish (``eval-bag``): ``"refined"`` (confident),
            ``"coarse"`` (low confidence, ``publish_coarse``) or ``""`` (withheld); None
            where no node rule applies (``eval``).
        e_R_iter_deg, t_err_iter_m: rotation / translation error of the initial pose and
            of every iterate (empty without ground truth).
        covariance: (6, 6) the refiner's covariance of ``T_refined``
            (``RefineResult.covariance``), or None.
    """

    frame: int
    key: dict
    class_id: str
    score: float
    diverged: bool
    reason: str
    T_init: np.ndarray
    T_refined: np.ndarray
    T_gt: np.ndarray | None = None
    timing_ms: dict = field(default_factory=dict)
    iterations: int = 0
    mode: str = ""
    metrics_init: M.PoseMetrics | None = None
    metrics_refined: M.PoseMetrics | None = None
    e_R_iter_deg: list = field(default_factory=list)
    t_err_iter_m: list = field(default_factory=list)
    score_coarse: float | None = None
    kept_coarse: bool = False
    restarted: bool = False
    published: str | None = None
    covariance: np.ndarray | None = None

    def to_json(self) -> dict:
        def mat(T):
            return None if T is None else np.asarray(T, dtype=np.float64).round(9).tolist()

        return {
            "frame": self.frame, **self.key, "class_id": self.class_id,
            "score": round(float(self.score), 6), "diverged": bool(self.diverged),
            "score_coarse": (None if self.score_coarse is None
                             else round(float(self.score_coarse), 6)),
            "kept_coarse": bool(self.kept_coarse),
            "restarted": bool(self.restarted), "published": self.published,
            "reason": self.reason, "iterations": int(self.iterations), "mode": self.mode,
            "timing_ms": {k: round(float(v), 3) for k, v in self.timing_ms.items()},
            "T_init": mat(self.T_init), "T_refined": mat(self.T_refined), "T_gt": mat(self.T_gt),
            "metrics_init": (None if self.metrics_init is None
                             else _clean(M.as_dict(self.metrics_init))),
            "metrics_refined": (None if self.metrics_refined is None
                                else _clean(M.as_dict(self.metrics_refined))),
            "e_R_iter_deg": [round(float(x), 6) for x in self.e_R_iter_deg],
            "t_err_iter_m": [round(float(x), 9) for x in self.t_err_iter_m],
            "covariance": (None if self.covariance is None
                           else np.asarray(self.covariance, np.float64).round(12).tolist()),
        }


def _clean(d: dict) -> dict:
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _clean(v)
        elif isinstance(v, (bool, np.bool_)):
            out[k] = bool(v)
        elif isinstance(v, (int, np.integer)):
            out[k] = int(v)
        elif isinstance(v, (float, np.floating)):
            out[k] = float(v) if math.isfinite(v) else None
        else:
            out[k] = v
    return out


def evaluate_object(model, T_init: np.ndarray, T_refined: np.ndarray, T_gt: np.ndarray,
                    K: np.ndarray, image_size: tuple[int, int],
                    iterates: np.ndarray | None = None):
    """Metrics of the coarse and the refined pose of one object against its ground truth.

    Args:
        model: the object's ``ObjectModel`` (``points_m``, ``diameter_m``, ``symmetries``).
        T_init, T_refined, T_gt: (4, 4) ``T_cam_obj``, metres.
        K: (3, 3) intrinsics of the image the poses refer to, pixels.
        image_size: ``(width, height)``, pixels.
        iterates: (n + 1, 4, 4) the initial pose and every iterate, or None.

    Returns:
        ``(metrics_init, metrics_refined, e_R_iter_deg, t_err_iter_m)``.
    """
    kw = dict(pts_obj=model.points_m, K=K, image_size=image_size, diameter_m=model.diameter_m,
              symmetries=model.symmetries)
    m_init = M.evaluate_pose(T_init, T_gt, **kw)
    m_ref = M.evaluate_pose(T_refined, T_gt, **kw)
    e_R, t_err = [], []
    for T in (iterates if iterates is not None else []):
        if not np.all(np.isfinite(T)):
            e_R.append(float("nan"))
            t_err.append(float("nan"))
            continue
        e_R.append(M.rotation_error_deg(T, T_gt, model.symmetries))
        t_err.append(M.translation_error_m(T, T_gt, model.symmetries))
    return m_init, m_ref, e_R, t_err


def match_ground_truth(objects: Sequence[tuple[str, np.ndarray]],
                       gt: Sequence[tuple[str, np.ndarray]]) -> list[int | None]:
    """For each ``(class_id, T_init)``, the index into ``gt`` of its ground truth.

    Pairs are formed greedily by increasing distance between the initial and the
    ground-truth positions, within the same class; each ground truth is used once.
    Objects without one get None.
    """
    pairs = []
    for i, (cid, T) in enumerate(objects):
        for j, (gcid, G) in enumerate(gt):
            if gcid == cid:
                d = float(np.linalg.norm(np.asarray(T)[:3, 3] - np.asarray(G)[:3, 3]))
                pairs.append((d, i, j))
    out: list[int | None] = [None] * len(objects)
    used = set()
    for _, i, j in sorted(pairs):
        if out[i] is None and j not in used:
            out[i] = j
            used.add(j)
    return out


def _pct(values, q) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    return float(np.percentile(v, q)) if v.size else None


class Evaluation:
    """Collects results and writes the report (see the module docstring).

    Args:
        out_dir: the directory the report goes into (created).
        title: the report's title.
        confidence_threshold: the node's threshold (``eval-bag``): drawn in the confidence
            plot, and the summary also gives the metrics of the objects as published.
    """

    def __init__(self, out_dir: str | os.PathLike, title: str,
                 confidence_threshold: float | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.confidence_threshold = confidence_threshold
        self._published: list[str | None] = []  # per entry of _init / _ref
        fd, name = tempfile.mkstemp(prefix=".objects.", suffix=".jsonl.partial",
                                    dir=self.out_dir)
        self._jsonl_path = Path(name)
        self._jsonl = os.fdopen(fd, "w")
        self.n_objects = 0
        self.frames = 0
        self.frame_ms: list[float] = []
        self.counters: dict[str, int] = {}
        self._init: list[M.PoseMetrics] = []
        self._ref: list[M.PoseMetrics] = []
        self._timing: dict[str, list[float]] = {}
        self._scores: list[float] = []
        self._score_err: list[tuple[float, float, float, bool]] = []  # score, e_R, add/d, div
        self._classes: list[str] = []  # class of each entry of _init / _ref
        self._first_stamp_ns: int | None = None  # of the first object from a bag
        self._iters_R: list[list[float]] = []
        self._iters_t: list[list[float]] = []
        self.n_diverged = 0
        self._cov_records: list[ObjectResult] = []  # with truth and a covariance

    # -- collecting ----------------------------------------------------------------------
    def count(self, what: str, n: int = 1) -> None:
        """Count an event (skipped frames, rejected objects, ...) for the summary."""
        self.counters[what] = self.counters.get(what, 0) + n

    def add_frame(self, wall_ms: float) -> None:
        """One frame was refined, in ``wall_ms`` (decoding, refinement, writing)."""
        self.frames += 1
        self.frame_ms.append(float(wall_ms))

    def add(self, r: ObjectResult) -> None:
        """One object's result; written to disk at once."""
        self._jsonl.write(json.dumps(r.to_json(), allow_nan=False) + "\n")
        if self._first_stamp_ns is None and "stamp_ns" in r.key:
            self._first_stamp_ns = int(r.key["stamp_ns"])
        self.n_objects += 1
        self.n_diverged += bool(r.diverged)
        self._scores.append(float(r.score))
        for k, v in r.timing_ms.items():
            self._timing.setdefault(k, []).append(float(v))
        if r.metrics_init is not None and r.metrics_refined is not None:
            self._init.append(r.metrics_init)
            self._ref.append(r.metrics_refined)
            self._classes.append(r.class_id)
            self._published.append(r.published)
            m = r.metrics_refined
            self._score_err.append((float(r.score), m.e_R_deg, m.add_or_adds_m / m.diameter_m,
                                    bool(r.diverged)))
            if r.covariance is not None:  # checked by covariance_calibration
                self._cov_records.append(r)
            if r.e_R_iter_deg:
                self._iters_R.append(list(r.e_R_iter_deg))
                self._iters_t.append(list(r.t_err_iter_m))

    # -- summary -------------------------------------------------------------------------
    def summary(self, elapsed_s: float | None = None) -> dict:
        """Counts, timing and (with ground truth) every metric, coarse vs refined."""
        out: dict = {"frames": self.frames, "objects": self.n_objects,
                     "objects_with_ground_truth": len(self._ref),
                     "diverged": self.n_diverged, "counters": dict(sorted(self.counters.items()))}
        timing = {}
        for k, v in sorted(self._timing.items()):
            timing[f"{k}_ms_per_object"] = {"median": _pct(v, 50), "p95": _pct(v, 95)}
        timing["frame_ms"] = {"median": _pct(self.frame_ms, 50), "p95": _pct(self.frame_ms, 95)}
        if elapsed_s:
            timing["elapsed_s"] = round(float(elapsed_s), 3)
            timing["frames_per_s"] = round(self.frames / elapsed_s, 3) if elapsed_s > 0 else None
        out["timing"] = timing
        out["metrics"] = M.compare(self._init, self._ref) if self._ref else None
        out["as_published"] = as_published(self._init, self._ref, self._published)
        out["threshold"] = self.confidence_threshold
        out["per_class"] = self._per_class() if self._ref else None
        out["calibration"] = self._calibration() if len(self._score_err) >= 4 else None
        out["covariance_calibration"] = covariance_calibration(self._cov_records)
        if self._scores:
            out["score"] = {"median": _pct(self._scores, 50), "min": float(min(self._scores))}
        return json_ready(out)

    def _calibration(self) -> list[dict]:
        """Error per quartile of the refiner's confidence (lowest first): does the score
        tell a right pose from a wrong one?"""
        sc = np.array([x[0] for x in self._score_err])
        e_R = np.array([x[1] for x in self._score_err])
        add_d = np.array([x[2] for x in self._score_err])
        order = np.argsort(sc, kind="stable")
        out = []
        for q, part in enumerate(np.array_split(order, 4), 1):
            out.append({"quartile": q, "n": int(part.size),
                        "score_min": float(sc[part].min()), "score_max": float(sc[part].max()),
                        "median_e_R_deg": float(np.median(e_R[part])),
                        "add01": float(np.mean(add_d[part] < 0.1))})
        return out

    def _per_class(self) -> dict:
        """Per class: samples, ADD(-S)@0.1d and median e_R coarse / refined, the share made
        worse (ADD(-S) grew)."""
        out = {}
        for cid in sorted(set(self._classes)):
            idx = [i for i, c in enumerate(self._classes) if c == cid]
            cmp = M.compare([self._init[i] for i in idx], [self._ref[i] for i in idx])
            a, b = cmp["initial"], cmp["refined"]
            out[cid] = {"n": len(idx),
                        "add01_initial": a["acc_add_or_adds_0.1d"],
                        "add01_refined": b["acc_add_or_adds_0.1d"],
                        "median_e_R_initial": a["median_e_R_deg"],
                        "median_e_R_refined": b["median_e_R_deg"],
                        "worse_share": cmp["n_worse"]["add_or_adds_m"] / len(idx)}
        return out

    # -- writing -------------------------------------------------------------------------
    def discard(self) -> None:
        """Drop everything written so far (an interrupted run)."""
        if not self._jsonl.closed:
            self._jsonl.close()
        self._jsonl_path.unlink(missing_ok=True)

    def _plots(self) -> dict[str, str]:
        """The PNGs of :func:`~.report_plots.write_plots` for what was collected."""
        return write_plots(self.out_dir, self._init, self._ref, self._iters_R, self._iters_t,
                           self._score_err, self.confidence_threshold)

    def write(self, meta: dict, elapsed_s: float | None = None, plots: bool = True) -> dict:
        """Write ``report.json``, ``report.md`` and the plots; returns the summary."""
        self._jsonl.close()
        summary = self.summary(elapsed_s)
        try:
            plot_files = self._plots() if plots else {}
            tmp = self.out_dir / ".report.json.partial"
            with open(tmp, "w") as f:  # streamed: the objects are not held in memory
                head = json.dumps({"meta": json_ready(meta), "summary": summary}, indent=1,
                                  allow_nan=False)
                f.write(head[: head.rindex("}")].rstrip() + ',\n "objects": [\n')
                with open(self._jsonl_path) as src:
                    for i, line in enumerate(src):
                        f.write(("  " if i == 0 else ",\n  ") + line.rstrip("\n"))
                f.write("\n ]\n}\n")
            os.replace(tmp, self.out_dir / "report.json")
            md = report_markdown(self.title, meta, summary, plot_files, self._first_stamp_ns,
                                 self.confidence_threshold, self._jsonl_path, self.n_objects)
            tmp = self.out_dir / ".report.md.partial"
            tmp.write_text(md)
            os.replace(tmp, self.out_dir / "report.md")
        finally:
            self._jsonl_path.unlink(missing_ok=True)
        return summary


def json_ready(x):
    """Plain JSON types, recursively: numpy scalars and arrays become Python ones,
    non-finite floats become None, anything else (paths, ...) its string."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return json_ready(x.tolist())
    if x is None or isinstance(x, str):
        return x
    return str(x)
