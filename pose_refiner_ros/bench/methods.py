"""Run one method of the benchmark over its samples and summarise it.

A method is a :class:`~pose_refiner_ros.refine.refiner.Refiner` (or none: ``initial``)
plus whether it is given the depth image. Every sample is refined in its own ``refine``
call (one object per call), so the time per object is the un-amortised latency of one
object; the scaling runs measure batching. Each method gets one warm-up call on the
first sample first, which is not counted (lazy initialisation, allocator growth).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import sys
import time

import numpy as np

from ..evaluation import metrics as M
from .machine import PeakMemory

__all__ = ["MethodRun", "pose_metrics", "run_method", "initial_run", "method_record",
           "timing_stats", "STAGES"]

#: Stages of ``RefineResult.timing_ms`` reported separately; ``other`` is the rest of
#: ``total`` (input conversion, checks, building results).
STAGES = ("crop", "render", "network", "solve")


@dataclass
class MethodRun:
    """The raw outcome of one method on its samples.

    Attributes:
        name: the method's name in the report.
        indices: indices into the benchmark's samples, in order.
        metrics: one ``PoseMetrics`` per sample (the refined pose).
        T_cam_obj: (N, 4, 4) refined poses.
        scores, diverged, iterations: per sample, from ``RefineResult``.
        covariances, kept_coarse: per sample, ``RefineResult.covariance`` ((6, 6) or
            None) and ``kept_coarse``.
        timing_ms: per sample, ``RefineResult.timing_ms``.
        memory: :class:`~.machine.PeakMemory` result of the whole run.
        wall_s: wall time of the run (warm-up included).
        config: the refiner's settings, or None for ``initial``.
        use_depth: whether the depth image was given.
    """

    name: str
    indices: list
    metrics: list
    T_cam_obj: np.ndarray
    scores: list = field(default_factory=list)
    diverged: list = field(default_factory=list)
    iterations: list = field(default_factory=list)
    covariances: list = field(default_factory=list)
    kept_coarse: list = field(default_factory=list)
    timing_ms: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    wall_s: float = 0.0
    config: dict | None = None
    use_depth: bool = False


def pose_metrics(bench, i: int, T_est: np.ndarray) -> M.PoseMetrics:
    """Every protocol metric of the estimate ``T_est`` (4, 4) of sample ``i``."""
    s = bench.samples[i]
    sc = bench.scenes[s.scene]
    model = next(m for m in bench.models if m.class_id == s.class_id)
    h, w = sc.image_rgb.shape[:2]
    return M.evaluate_pose(T_est, s.T_cam_obj_gt, model.points_m, sc.K, (w, h), model.diameter_m,
                           symmetries=model.symmetries)


def _config_dict(cfg) -> dict:
    d = asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def initial_run(bench) -> MethodRun:
    """The ``initial`` method: the perturbed poses themselves, not refined."""
    idx = list(range(len(bench.samples)))
    T = np.stack([bench.samples[i].T_cam_obj_init for i in idx])
    return MethodRun("initial", idx, [pose_metrics(bench, i, T[k]) for k, i in enumerate(idx)], T)


def run_method(name: str, refiner, bench, indices, use_depth: bool, progress: bool = True,
               warmup_refiner=None, passes_per_object: int | None = None) -> MethodRun:
    """Refine every sample of ``indices`` with ``refiner``, one object per call.

    Args:
        name: the method's name.
        refiner: a ``Refiner``.
        bench: the :class:`~.samples.BenchSet`.
        indices: sample indices to run.
        use_depth: give the scene's depth image.
        progress: a tqdm bar on stderr, in objects.
        warmup_refiner: refiner for the warm-up call (default ``refiner``; a cheap one for
            expensive modes).
        passes_per_object: for a method that makes this many network passes per object
            (``gcf-adam``: one per update), the bar counts the passes instead, so that it
            moves and estimates the time left within an object.
    """
    indices = list(indices)
    out = MethodRun(name, indices, [], np.zeros((len(indices), 4, 4)),
                    config=_config_dict(refiner.cfg), use_depth=use_depth)
    t0 = time.perf_counter()
    with PeakMemory(refiner.device) as mem:
        first = bench.samples[indices[0]]
        _refine(warmup_refiner or refiner, bench, first, use_depth)
        for k, i in enumerate(_progress(name, indices, progress, refiner, passes_per_object)):
            s = bench.samples[i]
            r = _refine(refiner, bench, s, use_depth)
            out.T_cam_obj[k] = r.T_cam_obj
            out.metrics.append(pose_metrics(bench, i, r.T_cam_obj))
            out.scores.append(float(r.score))
            out.diverged.append(bool(r.diverged))
            out.iterations.append(int(r.iterations))
            out.covariances.append(r.covariance)
            out.kept_coarse.append(bool(r.kept_coarse))
            out.timing_ms.append(dict(r.timing_ms))
    out.memory = mem.result()
    out.wall_s = time.perf_counter() - t0
    return out


def _progress(name: str, indices: list, progress: bool, refiner, passes: int | None):
    """Yield ``indices`` under a tqdm bar of objects, or of network passes (counted by a
    forward hook on ``refiner.net``) when ``passes`` is given."""
    from tqdm import tqdm

    bar_args = dict(desc=f"{name:>18}", file=sys.stderr, disable=not progress, leave=True,
                    dynamic_ncols=True)
    if not passes or getattr(refiner, "net", None) is None:
        yield from tqdm(indices, unit="obj", **bar_args)
        return
    with tqdm(total=len(indices) * passes, unit="pass", **bar_args) as bar:
        def count(*_) -> None:  # a hook that returned a value would replace the output
            bar.update(1)

        hook = refiner.net.register_forward_hook(count)
        try:
            for k, i in enumerate(indices):
                bar.set_postfix_str(f"object {k + 1}/{len(indices)}", refresh=False)
                yield i
        finally:
            hook.remove()


def _refine(refiner, bench, s, use_depth: bool):
    sc = bench.scenes[s.scene]
    return refiner.refine(sc.image_rgb, sc.K, [(s.class_id, s.T_cam_obj_init)],
                          depth_m=sc.depth_m if use_depth else None)[0]


def _stat(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
            "mean": float(v.mean())}


def timing_stats(timings: list) -> dict:
    """``{stage: {median, p95, mean}}`` in ms per object for ``STAGES``, ``other`` and
    ``total``, over a list of ``RefineResult.timing_ms``."""
    out = {}
    for st in STAGES:
        out[st] = _stat([t.get(st, 0.0) for t in timings])
    out["other"] = _stat([max(0.0, t["total"] - sum(t.get(s, 0.0) for s in STAGES))
                          for t in timings])
    out["total"] = _stat([t["total"] for t in timings])
    return out


def method_record(run: MethodRun, initial: MethodRun, per_sample: bool = True) -> dict:
    """The JSON record of a method: settings, every metric, worse-than-initial shares,
    timing, memory and (optionally) the per-sample values."""
    init = [initial.metrics[initial.indices.index(i)] for i in run.indices]
    cmp = M.compare(init, run.metrics)
    n = len(run.indices)
    rec: dict = {
        "n": n,
        "sample_indices": run.indices if n != len(initial.indices) else "all",
        "use_depth": run.use_depth,
        "config": run.config,
        "metrics": cmp["refined"],
        "n_worse": cmp["n_worse"],
        "share_worse": {k: v / n for k, v in cmp["n_worse"].items()},
        "n_better": cmp["n_better"],
        "initial_metrics_same_samples": cmp["initial"],
    }
    if run.timing_ms:
        rec["timing_ms_per_object"] = timing_stats(run.timing_ms)
        rec["iterations"] = {"median": float(np.median(run.iterations)),
                             "max": int(np.max(run.iterations))}
        rec["diverged"] = {"n": int(np.sum(run.diverged)),
                           "share": float(np.mean(run.diverged))}
        rec["score"] = _stat(run.scores)
        rec["memory"] = run.memory
        rec["wall_s"] = run.wall_s
    if per_sample:
        rows = []
        for k, (i, m) in enumerate(zip(run.indices, run.metrics, strict=True)):
            row = {"sample": i, "e_R_deg": m.e_R_deg, "t_err_m": m.t_err_m,
                   "add_or_adds_rel": m.add_or_adds_m / m.diameter_m, "e_P": m.e_P}
            if run.timing_ms:
                row.update(score=run.scores[k], diverged=run.diverged[k],
                           iterations=run.iterations[k], total_ms=run.timing_ms[k]["total"])
            rows.append(row)
        rec["per_sample"] = rows
    return rec
