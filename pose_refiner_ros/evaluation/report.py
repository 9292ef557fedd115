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

Every file is written under a temporary name and renamed when complete.
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
from .published import as_published, published_lines
from .report_header import header_lines, source_text

__all__ = ["ObjectResult", "Evaluation", "evaluate_object", "match_ground_truth",
           "format_summary"]


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
        self._cov_records: list[ObjectResult] = []  # refined, with covariance and truth

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
            if r.covariance is not None and r.T_gt is not None and not r.kept_coarse:
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
            md = self._markdown(meta, summary, plot_files)
            tmp = self.out_dir / ".report.md.partial"
            tmp.write_text(md)
            os.replace(tmp, self.out_dir / "report.md")
        finally:
            self._jsonl_path.unlink(missing_ok=True)
        return summary

    def _plots(self) -> dict[str, str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogFormatter

        def log_axis(axis):  # plain numbers (20, 30) rather than 2 x 10^1
            axis.set_major_formatter(LogFormatter())
            axis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.4)))

        pdir = self.out_dir / "plots"
        pdir.mkdir(exist_ok=True)
        files: dict[str, str] = {}

        def save(fig, name):
            tmp = pdir / f".{name}.partial.png"
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
            plt.close(fig)
            os.replace(tmp, pdir / name)
            files[name] = f"plots/{name}"

        if self._ref:
            cols = [("e_R_deg", "rotation error e_R (deg)", 1.0),
                    ("t_err_m", "translation error (cm)", 100.0),
                    ("add_or_adds_m", "ADD(-S) / diameter", None)]
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
            for ax, (key, label, scale) in zip(axes, cols, strict=True):
                for recs, name, style in ((self._init, "coarse", "--"),
                                          (self._ref, "refined", "-")):
                    v = np.array([getattr(r, key) for r in recs], dtype=np.float64)
                    if scale is None:
                        v = v / np.array([r.diameter_m for r in recs])
                    else:
                        v = v * scale
                    v = np.sort(np.where(np.isfinite(v), v, np.inf))
                    ax.step(v, np.arange(1, len(v) + 1) / len(v), style, where="post", label=name)
                if key == "add_or_adds_m":
                    ax.axvline(0.1, color="grey", lw=0.8, ls=":")
                ax.set_xscale("log")
                log_axis(ax.xaxis)
                ax.set_xlabel(label)
                ax.set_ylabel("share of objects below")
                ax.grid(alpha=0.3)
                ax.legend()
            fig.suptitle("Error distributions before and after refinement (cumulative)")
            save(fig, "errors.png")

        if self._iters_R:
            n = max(len(x) for x in self._iters_R)

            def padded(rows):
                return np.array([r + [r[-1]] * (n - len(r)) for r in rows], dtype=np.float64)

            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
            for ax, rows, label, scale in (
                    (axes[0], self._iters_R, "e_R (deg)", 1.0),
                    (axes[1], self._iters_t, "translation error (cm)", 100.0)):
                a = padded(rows) * scale
                x = np.arange(n)
                ax.plot(x, np.nanmedian(a, 0), "o-", label="median")
                ax.fill_between(x, np.nanpercentile(a, 25, 0), np.nanpercentile(a, 75, 0),
                                alpha=0.25, label="25-75 %")
                ax.set_xlabel("iteration (0 = coarse pose)")
                ax.set_ylabel(label)
                ax.set_yscale("log")
                log_axis(ax.yaxis)
                ax.grid(alpha=0.3, which="both")
                ax.legend()
            fig.suptitle("Error per iteration")
            save(fig, "iterations.png")

        if self._score_err:
            a = np.array([x[:3] for x in self._score_err], dtype=np.float64)
            div = np.array([x[3] for x in self._score_err])
            # Constrained layout: the right panel's axis label overlapped the left panel.
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
            for ax, col, label in ((axes[0], 1, "refined e_R (deg)"),
                                   (axes[1], 2, "refined ADD(-S) / diameter")):
                y = np.clip(a[:, col], 1e-4, None)
                t = self.confidence_threshold
                ok = ~div & (a[:, 0] >= (t if t is not None else -np.inf))
                ax.scatter(a[ok, 0], y[ok], s=10,
                           label="published" if t is not None else "not flagged")
                low = ~div & ~ok
                if low.any():
                    ax.scatter(a[low, 0], y[low], s=10, marker="^",
                               label="below threshold: withheld")
                if div.any():
                    ax.scatter(a[div, 0], y[div], s=10, marker="x", label="diverged")
                if t is not None:
                    ax.axvline(t, color="crimson", lw=1, ls="--",
                               label=f"confidence_threshold {t:g}")
                ax.set_xlabel("confidence (score)")
                ax.set_ylabel(label)
                ax.set_yscale("log")
                log_axis(ax.yaxis)
                ax.grid(alpha=0.3)
                ax.legend()
            fig.suptitle("Confidence against error")
            save(fig, "confidence.png")
        return files

    def _markdown(self, meta: dict, summary: dict, plots: dict[str, str]) -> str:
        lines = header_lines(self.title, meta, self._first_stamp_ns)
        lines += ["", "## Summary", "",
                  f"- frames refined: {summary['frames']}",
                  f"- objects refined: {summary['objects']} (with ground truth: "
                  f"{summary['objects_with_ground_truth']}, flagged diverged: "
                  f"{summary['diverged']})"]
        for k, v in summary["counters"].items():
            lines.append(f"- {k.replace('_', ' ')}: {v}")
        t = summary["timing"]
        if t.get("frames_per_s") is not None:
            lines.append(f"- throughput: {t['frames_per_s']:.2f} frames/s "
                         f"({t['elapsed_s']:.1f} s in all)")
        m = summary.get("metrics")
        if m:
            lines += ["", "## Metrics (coarse vs refined)", "",
                      "Definitions: `docs/protocol.md`, "
                      "`pose_refiner_ros/evaluation/metrics.py`.",
                      "", "| metric | coarse | refined |", "|---|---:|---:|"]
            for k in m["refined"]:
                if k == "n":
                    continue
                a, b = m["initial"][k], m["refined"][k]
                lines.append(f"| {k} | {_fmt(a)} | {_fmt(b)} |")
            lines += ["", f"Samples: {m['n']}. Worse after refinement than before "
                      "(counts of samples whose error grew):", "",
                      "| error | worse | better |", "|---|---:|---:|"]
            for k in m["n_worse"]:
                lines.append(f"| {k} | {m['n_worse'][k]} | {m['n_better'][k]} |")
            lines += ["", "### Per class", "", *_per_class_lines(summary.get("per_class") or {})]
        ap = summary.get("as_published")
        if ap:
            lines += ["", "## As published", "", "The metrics above are of every refined "
                      "object; the node publishes only confident ones (not diverged, score at "
                      "or above confidence_threshold).", ""]
            lines += [f"- {ln.strip()}" for ln in published_lines(ap, self.confidence_threshold)]
            if ap["metrics"]:
                lines += ["", "| metric | coarse | as published |", "|---|---:|---:|"]
                for k in ap["metrics"]["refined"]:
                    if k != "n":
                        lines.append(f"| {k} | {_fmt(ap['metrics']['initial'][k])} | "
                                     f"{_fmt(ap['metrics']['refined'][k])} |")
        if summary.get("calibration"):
            lines += ["", "### Confidence calibration (refined poses by score quartile)", "",
                      "| quartile | score range | n | median e_R (deg) | ADD(-S)@0.1d |",
                      "|---:|---|---:|---:|---:|"]
            for c in summary["calibration"]:
                lines.append(f"| {c['quartile']} | {c['score_min']:.2f} to {c['score_max']:.2f} "
                             f"| {c['n']} | {c['median_e_R_deg']:.1f} | "
                             f"{100 * c['add01']:.1f}% |")
        cc = summary.get("covariance_calibration")
        if cc:
            lines += ["", f"### Pose covariance against the truth ({cc['n']} refined poses)", "",
                      "Position error along the camera axis in units of the refiner's claimed "
                      "standard deviation (calibrated: 68% within 1 sigma, 95% within 2).", "",
                      "| axis | within 1 sigma | within 2 sigma | median error (mm) | "
                      "median sigma (mm) | rank correlation |", "|---|---:|---:|---:|---:|---:|"]
            for name, a in cc["axes"].items():
                rho = "-" if a["spearman"] is None else f"{a['spearman']:.2f}"
                lines.append(f"| {name} | {100 * a['within_1sigma']:.0f}% | "
                             f"{100 * a['within_2sigma']:.0f}% | "
                             f"{1e3 * a['median_abs_error_m']:.1f} | "
                             f"{1e3 * a['median_sigma_m']:.1f} | {rho} |")
        lines += ["", "## Timing", "", "| stage | median | p95 |", "|---|---:|---:|"]
        for k, v in t.items():
            if isinstance(v, dict):
                lines.append(f"| {k} | {_fmt(v['median'])} | {_fmt(v['p95'])} |")
        titles = {"errors.png": "Error distributions", "iterations.png": "Error per iteration",
                  "confidence.png": "Confidence against error"}
        if plots:
            lines += ["", "## Plots", ""]
            for name, rel in plots.items():
                lines += [f"### {titles.get(name, name)}", "", f"![{name}]({rel})", ""]
        lines += ["", "## Per-object results", ""]
        lines += ["| frame | source | class | score | diverged | e_R coarse | e_R refined | "
                  "ADD(-S) coarse (mm) | ADD(-S) refined (mm) | ms |",
                  "|---:|---|---|---:|---|---:|---:|---:|---:|---:|"]
        limit = 200
        with open(self._jsonl_path) as f:
            for i, line in enumerate(f):
                if i == limit:
                    lines.append(f"\n(first {limit} of {self.n_objects}; every object is in "
                                 "report.json)")
                    break
                r = json.loads(line)
                src = source_text(r, self._first_stamp_ns)
                mi, mr = r["metrics_init"], r["metrics_refined"]
                lines.append(
                    f"| {r['frame']} | {src} | {r['class_id']} | {r['score']:.2f} | "
                    f"{'yes: ' + r['reason'] if r['diverged'] else 'no'} | "
                    f"{_fmt(mi and mi['e_R_deg'])} | {_fmt(mr and mr['e_R_deg'])} | "
                    f"{_fmt(mi and mi['add_or_adds_m'] and 1e3 * mi['add_or_adds_m'])} | "
                    f"{_fmt(mr and mr['add_or_adds_m'] and 1e3 * mr['add_or_adds_m'])} | "
                    f"{_fmt(r['timing_ms'].get('total'))} |")
        return "\n".join(lines) + "\n"


def _per_class_lines(per_class: dict) -> list[str]:
    """A Markdown table of :meth:`Evaluation._per_class`."""
    lines = ["| class | n | ADD(-S)@0.1d coarse | refined | median e_R coarse | refined "
             "| made worse |", "|---|---:|---:|---:|---:|---:|---:|"]
    for cid, c in per_class.items():
        lines.append(f"| {cid} | {c['n']} | {100 * c['add01_initial']:.1f}% | "
                     f"{100 * c['add01_refined']:.1f}% | {c['median_e_R_initial']:.1f} | "
                     f"{c['median_e_R_refined']:.1f} | {100 * c['worse_share']:.0f}% |")
    return lines


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf"
        return f"{v:.4g}"
    return str(v)


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


def format_summary(summary: dict, out_dir: Path) -> str:
    """A few lines for the terminal: counts, throughput, the main metrics side by side."""
    t = summary["timing"]
    lines = [f"refined {summary['objects']} objects in {summary['frames']} frames"
             + (f" at {t['frames_per_s']:.2f} frames/s" if t.get("frames_per_s") else "")]
    m = summary.get("metrics")
    if m:
        a, b = m["initial"], m["refined"]
        lines.append(f"{'metric (' + str(m['n']) + ' samples)':26s}{'coarse':>11s}{'refined':>11s}")
        for k in b:
            if k != "n":
                lines.append(f"{k:26s}{_fmt(a[k]):>11s}{_fmt(b[k]):>11s}")
        w = m["n_worse"]
        lines.append(f"made worse by refinement: ADD(-S) {w['add_or_adds_m']} of {m['n']} "
                     f"({100 * w['add_or_adds_m'] / max(m['n'], 1):.1f}%), "
                     f"e_R {w['e_R_deg']} of {m['n']} "
                     f"({100 * w['e_R_deg'] / max(m['n'], 1):.1f}%)")
        if summary.get("per_class"):
            lines += _per_class_lines(summary["per_class"])
        lines += published_lines(summary.get("as_published"), summary.get("threshold"))
    lines.append(f"report: {out_dir / 'report.md'}")
    return "\n".join(lines)
