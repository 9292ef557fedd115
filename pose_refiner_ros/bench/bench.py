"""``pose-refiner bench``: accuracy and speed of every method, in one run, on the same samples.

Usage::

    pose-refiner bench --quick --json bench.json          # about 3 min on an idle 2-core CPU
    pose-refiner bench --json bench.json --model models/refiner.pt --samples 200

One process draws the held-out synthetic benchmark (:mod:`.samples`: ``bench``
procedural meshes never used in training, fixed seed, the protocol's standard
perturbation, with depth) and refines it with every method (:data:`METHODS`):

- ``initial``: no refinement (the perturbed poses);
- ``ours``: the default :class:`~pose_refiner_ros.refine.refiner.RefinerConfig`
  (learned field, robust LM), RGB only; ``ours-rgbd``: the same given depth;
- ``flow-baseline`` / ``flow-baseline-rgbd``: the training-free mode (OpenCV optical
  flow through the same solver);
- ``gcf-adam``: the GCF paper's procedure with its settings (1000 Adam updates at lr
  0.05, each a rendering and a network pass). It costs about a thousand network passes
  per object, so it runs on the first ``gcf_samples`` samples only (the record says
  which), and ``ours`` is also summarised on exactly those samples;
- ``gcf-adam-matched``: the same procedure with the number of updates set so that its
  time per object matches ``ours``: ``steps = ours' median ms / gcf-adam's ms per
  update`` (measured in this run).

For each method the record holds every metric of ``docs/protocol.md``
(:func:`~pose_refiner_ros.evaluation.metrics.summarize`), the share of samples made
worse than initial per error, time per object (median, p95, split into crop / render /
network / solve / other; one object per ``refine`` call, after one warm-up call), peak
memory (:class:`.machine.PeakMemory`) and per-sample values; besides: the machine,
how latency grows (:mod:`.scaling`), score-vs-error bins (:mod:`.calibration`) and the
acceptance criteria of the benchmark (:mod:`.checks`). The JSON is the record; the
Markdown summary and the PNG plot (:mod:`.report`) are made from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
import hashlib
import os
from pathlib import Path
import sys
import time

import numpy as np

from ..evaluation.report import json_ready
from .outputs import write_outputs

__all__ = ["METHODS", "BenchConfig", "run_benchmark", "write_outputs"]

METHODS = ("initial", "ours", "ours-rgbd", "flow-baseline", "flow-baseline-rgbd", "gcf-adam",
           "gcf-adam-matched")


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs (defaults: the full run; :meth:`quick` the short one).

    Attributes:
        samples: benchmark objects every method except ``gcf-adam`` refines.
        gcf_samples: the first this many samples are refined by ``gcf-adam``.
        gcf_steps, gcf_lr: ``gcf-adam``'s Adam updates and learning rate (paper: 1000,
            0.05).
        n_models: ``bench`` procedural meshes the scenes are drawn from.
        seed: seed of the meshes and scenes.
        min_visib_fract: less visible objects are not samples (BOP: 0.1).
        methods: which of :data:`METHODS` to run (``gcf-adam-matched`` needs ``ours``).
        objects_per_frame, mesh_faces, crop_sizes: the scaling sweeps (empty: skipped);
            ``mesh_faces`` are labels of :data:`.scaling.TORUS_SECTIONS`.
        scaling_repeats: timed calls per scaling case (after one warm-up call).
        calibration_bins: score bins of the calibration (4: quartiles).
        device: ``auto``, ``cpu``, ``cuda``...
        refiner_overrides: ``RefinerConfig`` fields changed for every method (none for
            the benchmark proper: ``ours`` is the default config; tests use a small crop).
        scene_overrides: ``SyntheticConfig`` fields changed for the scenes (none for the
            benchmark proper).
    """

    samples: int = 200
    gcf_samples: int = 24
    gcf_steps: int = 1000
    gcf_lr: float = 0.05
    n_models: int = 20
    seed: int = 0
    min_visib_fract: float = 0.1
    methods: tuple = METHODS
    objects_per_frame: tuple = (1, 4, 16)
    mesh_faces: tuple = ("1k", "10k", "100k")
    crop_sizes: tuple = (64, 96, 128, 192)
    scaling_repeats: int = 5
    calibration_bins: int = 4
    device: str = "auto"
    refiner_overrides: dict = field(default_factory=dict)
    scene_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; known: {list(METHODS)}")
        if self.samples < 1 or self.gcf_samples < 0 or self.gcf_steps < 1:
            raise ValueError(f"samples >= 1, gcf_samples >= 0 and gcf_steps >= 1 expected, got "
                             f"{self.samples}, {self.gcf_samples}, {self.gcf_steps}")
        if "gcf-adam-matched" in self.methods and "ours" not in self.methods:
            raise ValueError("methods: gcf-adam-matched is matched to ours' time: add ours")
        if self.scaling_repeats < 1:
            raise ValueError(f"scaling_repeats: expected >= 1, got {self.scaling_repeats}")

    @classmethod
    def quick(cls, **overrides) -> BenchConfig:
        """The ``--quick`` run: 24 samples, ``gcf-adam`` (1000 updates) on 6 of them, 3
        timed calls per scaling case: about 3 min on an idle 2-core CPU with one thread,
        60% of it ``gcf-adam``, and many times as long when the cores are busy
        (:mod:`.budget` says where the figures come from). ``gcf_samples`` sizes it."""
        return cls(**{"samples": 24, "gcf_samples": 6, "scaling_repeats": 3, **overrides})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _needs_net(cfg: BenchConfig) -> bool:
    learned = {"ours", "ours-rgbd", "gcf-adam", "gcf-adam-matched"}
    scaling = cfg.objects_per_frame or cfg.mesh_faces or cfg.crop_sizes
    return bool(learned & set(cfg.methods)) or bool(scaling)


def _ms_per_step(timings: list, steps: int) -> float:
    return float(np.median([t["total"] for t in timings])) / steps


def run_benchmark(cfg: BenchConfig, model_path: str | os.PathLike | None = None,
                  progress: bool = True, command: str | None = None) -> dict:
    """Run the benchmark (module docstring) and return its record (JSON-ready dict).

    Args:
        cfg: what to run.
        model_path: the network checkpoint (default: the shipped ``models/refiner.pt``).
        progress: tqdm bars and stage messages on stderr.
        command: the command line, for the record.
    """
    from ..data.synthetic import SyntheticConfig
    from ..evaluation.metrics import summarize
    from ..mesh.registry import ObjectRegistry
    from ..refine.inputs import resolve_device
    from ..refine.refiner import Refiner, RefinerConfig
    from ..resources import default_model_path
    from ..train.checkpoint import load_checkpoint, read_checkpoint
    from .budget import expectation
    from .calibration import calibration
    from .checks import acceptance
    from .machine import machine_info
    from .methods import initial_run, method_record, run_method
    from .samples import make_bench_set
    from .scaling import scaling_runs

    def say(msg: str) -> None:
        if progress:
            print(f"bench: {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    say(expectation(cfg))
    device = resolve_device(cfg.device)
    net, model_rec = None, None
    if _needs_net(cfg):
        path = Path(model_path) if model_path else default_model_path()
        net = load_checkpoint(path, device)
        model_rec = {"path": str(path), "sha256": _sha256(path),
                     "meta": read_checkpoint(path).get("meta", {})}

    say(f"drawing {cfg.samples} held-out samples (seed {cfg.seed})")
    bench = make_bench_set(cfg.samples, cfg.seed, cfg.n_models, cfg.min_visib_fract,
                           scene_cfg=SyntheticConfig(**cfg.scene_overrides))
    registry = ObjectRegistry(bench.models)
    base = RefinerConfig(**{"device": cfg.device, **cfg.refiner_overrides})
    all_idx = list(range(len(bench.samples)))
    gcf_idx = all_idx[: min(cfg.gcf_samples, len(all_idx))]

    initial = initial_run(bench)
    runs: dict = {"initial": initial}
    records: dict = {"initial": method_record(initial, initial)}
    learned = Refiner(registry, base, net) if net is not None else None
    flow = Refiner(registry, replace(base, mode="flow"))
    plan = [("ours", learned, False), ("ours-rgbd", learned, True),
            ("flow-baseline", flow, False), ("flow-baseline-rgbd", flow, True)]
    for name, refiner, depth in plan:
        if name in cfg.methods:
            runs[name] = run_method(name, refiner, bench, all_idx, depth, progress)
            records[name] = method_record(runs[name], initial)

    gcf_cfg = replace(base, mode="gcf-adam", adam_steps=cfg.gcf_steps, adam_lr=cfg.gcf_lr)
    cheap = Refiner(registry, replace(gcf_cfg, adam_steps=2), net) if net is not None else None
    if "gcf-adam" in cfg.methods and gcf_idx:
        say(f"gcf-adam with the paper's settings ({cfg.gcf_steps} updates, lr {cfg.gcf_lr}) "
            f"on the first {len(gcf_idx)} samples")
        run = run_method("gcf-adam", Refiner(registry, gcf_cfg, net), bench, gcf_idx, False,
                         progress, warmup_refiner=cheap, passes_per_object=cfg.gcf_steps)
        runs["gcf-adam"] = run
        rec = method_record(run, initial)
        rec["subset"] = {"n": len(gcf_idx), "of": len(all_idx),
                         "note": f"the first {len(gcf_idx)} of the {len(all_idx)} samples "
                                 f"({cfg.gcf_steps} network passes per object)"}
        rec["ms_per_update"] = _ms_per_step(run.timing_ms, cfg.gcf_steps)
        if "ours" in runs:
            rec["ours_same_samples"] = summarize([runs["ours"].metrics[i] for i in gcf_idx])
        records["gcf-adam"] = rec

    if "gcf-adam-matched" in cfg.methods and "ours" in runs:
        ours_ms = records["ours"]["timing_ms_per_object"]["total"]["median"]
        if "gcf-adam" in runs:
            ms_step, src = records["gcf-adam"]["ms_per_update"], "the gcf-adam run"
        else:  # probe: a short run on the first sample
            probe_steps = 20
            probe = Refiner(registry, replace(gcf_cfg, adam_steps=probe_steps), net)
            pr = run_method("gcf-adam probe", probe, bench, all_idx[:1], False, False)
            ms_step, src = _ms_per_step(pr.timing_ms, probe_steps), "a 20-update probe"
        steps = max(1, int(round(ours_ms / ms_step)))
        say(f"gcf-adam-matched: {steps} updates ({ms_step:.1f} ms each) to match ours' "
            f"{ours_ms:.0f} ms per object")
        run = run_method("gcf-adam-matched",
                         Refiner(registry, replace(gcf_cfg, adam_steps=steps), net), bench,
                         all_idx, False, progress, warmup_refiner=cheap)
        runs["gcf-adam-matched"] = run
        rec = method_record(run, initial)
        rec["matched"] = {"steps": steps, "ms_per_update": ms_step, "ms_per_update_from": src,
                          "ours_median_ms": ours_ms}
        records["gcf-adam-matched"] = rec

    calib = {name: calibration(runs[name].scores, runs[name].metrics, runs[name].diverged,
                               cfg.calibration_bins)
             for name in ("ours", "ours-rgbd") if name in runs}
    pose_cov = {name: _covariance_check(runs[name], bench) for name in ("ours",)
                if name in runs}
    scaling = None
    if net is not None and (cfg.objects_per_frame or cfg.mesh_faces or cfg.crop_sizes):
        say("scaling runs (objects per frame, mesh faces, crop size)")
        scaling = scaling_runs(net, base, bench, cfg.objects_per_frame, cfg.mesh_faces,
                               cfg.crop_sizes, cfg.scaling_repeats, progress)

    record = {
        "meta": {
            "command": command,
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in asdict(cfg).items()},
            "model": model_rec,
            "timing_protocol": "one object per refine call; one uncounted warm-up call per "
                               "method; times from RefineResult.timing_ms",
            "elapsed_s": None,
        },
        "machine": machine_info(device),
        "benchmark": bench.describe(),
        "methods": records,
        "calibration": calib,
        "covariance_calibration": pose_cov,
        "scaling": scaling,
        "acceptance": acceptance(records),
    }
    record["meta"]["elapsed_s"] = time.perf_counter() - t_start
    return json_ready(record)


def _covariance_check(run, bench):
    """``evaluation.covariance_check.covariance_calibration`` of a run's covariances
    against the benchmark's ground truth (None when the run has none)."""
    from types import SimpleNamespace

    from ..evaluation.covariance_check import covariance_calibration

    recs = [SimpleNamespace(covariance=c, T_refined=run.T_cam_obj[k],
                            T_gt=bench.samples[i].T_cam_obj_gt, kept_coarse=kc)
            for k, (i, c, kc) in enumerate(zip(run.indices, run.covariances, run.kept_coarse,
                                               strict=True))]
    return covariance_calibration(recs)
