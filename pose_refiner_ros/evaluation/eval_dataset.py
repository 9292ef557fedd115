"""``pose-refiner eval``: the protocol's refinement test on a dataset on disk.

Datasets: ``bop:PATH`` (a BOP dataset root: ``models/`` and a split directory such as
``test/``) or ``pix3d:PATH`` (a Pix3D-style root with ``pix3d.json``, ``img/``,
``model/``). Initial poses:

- by default, the standard refinement test of ``docs/protocol.md``: every ground-truth
  pose perturbed by :func:`~pose_refiner_ros.data.perturb.perturb_pose` (``sigma_r`` 15
  deg, ``sigma_t`` (1, 1, 5) cm) with a fixed seed, drawn image after image in dataset
  order, so a run is reproducible;
- or ``--results CSV``: the estimates of a coarse method in the BOP results format
  (``scene_id,im_id,obj_id,score,R,t,time``; ``R`` 9 numbers row-major, ``t`` in mm,
  space-separated). Per image and object, the ``n`` highest-scoring estimates are
  refined, ``n`` being the number of annotated instances of that object in the image
  (BOP's 6D localisation task).

Prints every metric for the initial and the refined poses side by side, writes the
report (``report.json``, ``report.md``, ``plots/``, see :mod:`.report`) into ``--out``,
and the refined poses as BOP results, ``<out>/poserefiner_<dataset>-<split>.csv``
(named as bop_toolkit's evaluation scripts expect: method, underscore, dataset, dash,
split), plus the initial ones as ``poserefinerinit_<dataset>-<split>.csv``. In those
files ``score`` is the input estimate's score (with ``--results``) or the refiner's
confidence, and ``time`` the image's refinement time in seconds plus, with
``--results``, the input's time when it is given (>= 0).

The refiner is built like the node's (``config/refiner.yaml`` defaults; ``--params``,
``--model``, ``--mode``... override them).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
import os
from pathlib import Path
import re
import sys
import time

import numpy as np

from .all_or_nothing import InterruptedWhenComplete, Staging, pause_for_test, sigterm_as_interrupt
from .report_header import settings
from .report_text import format_summary

__all__ = ["BopEstimate", "read_bop_results", "write_bop_results", "evaluate_dataset",
           "add_subcommand"]

BOP_HEADER = "scene_id,im_id,obj_id,score,R,t,time"
# What earlier runs killed hard may have left in --out (all or nothing, :func:`evaluate_dataset`).
STALE_PARTIALS = (".objects.*.jsonl.partial", ".report.*.partial", ".poserefiner*.csv.partial")


@dataclass(frozen=True)
class BopEstimate:
    """One row of a BOP results file.

    Attributes:
        scene_id, im_id, obj_id: BOP ids.
        score: confidence of the estimate.
        T_cam_obj: (4, 4) pose, metres (the file's ``t`` is in mm).
        time_s: the method's time for the whole image, seconds (-1: unknown).
    """

    scene_id: int
    im_id: int
    obj_id: int
    score: float
    T_cam_obj: np.ndarray
    time_s: float = -1.0


def read_bop_results(path: str | os.PathLike) -> list[BopEstimate]:
    """Read a BOP results CSV (bop19 format; the header line is optional).

    Raises:
        ValueError: a malformed line, naming the file, the line number and the problem.
    """
    path = Path(path)
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or (n == 1 and BOP_HEADER in line.replace(" ", "")):
                continue
            parts = line.split(",")
            try:
                if len(parts) != 7:
                    raise ValueError(f"expected 7 comma-separated fields ({BOP_HEADER}), "
                                     f"got {len(parts)}")
                R = np.array([float(x) for x in parts[4].split()], dtype=np.float64)
                t = np.array([float(x) for x in parts[5].split()], dtype=np.float64)
                if R.size != 9 or t.size != 3:
                    raise ValueError(f"R needs 9 numbers and t 3, got {R.size} and {t.size}")
                T = np.eye(4)
                T[:3, :3] = R.reshape(3, 3)
                T[:3, 3] = t / 1000.0
                if not np.all(np.isfinite(T)):
                    raise ValueError("R or t is not finite")
                out.append(BopEstimate(int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3]),
                                       T, float(parts[6])))
            except ValueError as e:
                raise ValueError(f"{path}, line {n}: {e}: {line[:120]!r}") from None
    return out


def write_bop_results(path: str | os.PathLike, estimates: list[BopEstimate]) -> None:
    """Write estimates as a BOP results CSV that bop_toolkit reads (``t`` in mm; ``R``
    row-major; the same ``time`` for every estimate of an image is the caller's duty).
    Written under a temporary name and renamed."""
    path = Path(path)
    lines = [BOP_HEADER]
    for e in estimates:
        T = np.asarray(e.T_cam_obj, dtype=np.float64)
        R = " ".join(repr(float(x)) for x in T[:3, :3].reshape(-1))
        t = " ".join(repr(float(x)) for x in T[:3, 3] * 1000.0)
        lines.append(f"{e.scene_id},{e.im_id},{e.obj_id},{float(e.score)!r},{R},{t},"
                     f"{float(e.time_s)!r}")
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _pix3d_registry(ds, root: Path, model_scale: float):
    """The Pix3D models used by ``ds`` (class id = the model's path in ``pix3d.json``)."""
    import trimesh

    from ..mesh.registry import ObjectModel, ObjectRegistry

    models = []
    for path in sorted({str(ds.entry(i)["model"]) for i in range(len(ds))}):
        mesh = trimesh.load(root / path, force="mesh", process=False)
        models.append(ObjectModel.from_trimesh(path, mesh, scale=model_scale,
                                               mesh_path=root / path))
    return ObjectRegistry(models)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", name) or "dataset"


def evaluate_dataset(dataset: str, out_dir: str | os.PathLike, *, split: str = "test",
                     results: str | None = None, seed: int = 0, max_images: int | None = None,
                     obj_ids: list[int] | None = None, params_file: str | None = None,
                     model: str | None = None, mode: str | None = None,
                     device: str | None = None, iterations: int | None = None,
                     crop_size: int | None = None, use_depth: bool | None = None,
                     pix3d_json: str = "pix3d.json", model_scale: float = 1.0,
                     progress: bool = True, plots: bool = True, registry=None,
                     refiner=None, min_visib: float = 0.0, grey: bool = False) -> dict:
    """Run the refinement test (module docstring); returns the report's summary.

    Args:
        dataset: ``"bop:PATH"`` or ``"pix3d:PATH"``.
        out_dir: where the report and the CSVs go (created).
        split: BOP split directory.
        results: a BOP results CSV of initial poses (BOP only); None: perturbed GT.
        seed: seed of the perturbation.
        max_images: evaluate at most this many images.
        obj_ids: BOP objects to evaluate (None: all).
        params_file, model, mode, device, iterations, crop_size, use_depth: the
            refiner, as for the node (see :func:`.node_config.load_node_params`).
        pix3d_json, model_scale: Pix3D annotation file and model units to metres.
        progress, plots: progress bar, PNG plots.
        registry, refiner: use these instead of building them (tests, benchmarks).
        min_visib: BOP instances whose ``visib_fract`` (``scene_gt_info.json``) is below
            this are left out, as BOP's evaluation does; 0 keeps every instance.
        grey: render every mesh flat grey, ignoring its colours: stands for an untextured
            CAD model.
    """
    from ..data.perturb import perturb_pose
    from .node_config import build_refiner, load_node_params
    from .report import Evaluation, ObjectResult, evaluate_object, match_ground_truth

    out_dir = Path(out_dir)
    params = load_node_params(params_file, model_path=model, mode=mode, device=device,
                              iterations=iterations, crop_size=crop_size, use_depth=use_depth)
    kind, _, root_s = dataset.partition(":")
    root = Path(root_s)
    if kind not in ("bop", "pix3d") or not root_s:
        raise ValueError(f"--dataset: expected bop:PATH or pix3d:PATH, got {dataset!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"--dataset {dataset}: {root} is not a directory")
    if kind == "bop":
        from ..data.bop import BopDataset, registry_from_bop_models

        ds = BopDataset(root, split, obj_ids=obj_ids, load_depth=params.use_depth,
                        min_visib_fract=min_visib)
        if registry is None:
            registry = registry_from_bop_models(root / "models", obj_ids)
        class_of = lambda oid: f"obj_{int(oid):06d}"  # noqa: E731
        split_name = split
    else:
        if results:
            raise ValueError("--results: BOP results files go with bop: datasets only")
        from ..data.pix3d import Pix3dDataset

        ds = Pix3dDataset(root, pix3d_json, model_scale=model_scale)
        if registry is None:
            registry = _pix3d_registry(ds, root, model_scale)
        class_of = str
        split_name = "all"
    if grey:
        from ..mesh.registry import grey_registry

        registry = grey_registry(registry)
    if refiner is None:
        refiner, model_file = build_refiner(params, registry)
    else:
        model_file = None

    estimates: dict[tuple, list[BopEstimate]] | None = None
    if results:
        estimates = defaultdict(list)
        for e in read_bop_results(results):
            estimates[(e.scene_id, e.im_id)].append(e)

    name = f"{_safe(root.resolve().name)}-{_safe(split_name)}"
    meta = {"command": "eval", "mode": refiner.cfg.mode, "dataset": dataset, "split": split_name,
            "initial_poses": results or f"perturbed ground truth (seed {seed})",
            "min_visib": min_visib if kind == "bop" else None, "grey_meshes": grey,
            "model": str(model_file) if model_file else None, "device": str(refiner.device),
            "refiner": settings(refiner.cfg),
            "refined_csv": str(out_dir / f"poserefiner_{name}.csv"),
            "initial_csv": str(out_dir / f"poserefinerinit_{name}.csv")}
    stage = Staging(out_dir, "eval", stale=STALE_PARTIALS)
    ev = Evaluation(stage.path, f"eval: {dataset} ({split_name})")
    rng = np.random.default_rng(seed)
    refined_rows: list[BopEstimate] = []
    init_rows: list[BopEstimate] = []
    n_images = len(ds) if max_images is None else min(max_images, len(ds))
    bar = None
    t_start = time.perf_counter()
    try:
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n_images, unit="image", desc="eval", file=sys.stderr,
                       dynamic_ncols=True)
        for i in range(n_images):
            t0 = time.perf_counter()
            fr = ds[i]
            gt = [(class_of(oid), T) for oid, T in fr.objects]
            if estimates is None:  # the standard test: perturbed ground truth
                T_init = perturb_pose(np.stack([T for _, T in gt]), rng) if gt else []
                objs = [(c, T_init[k]) for k, (c, _) in enumerate(gt)]
                src_scores = [None] * len(objs)
                src_time = -1.0
                ids = [oid for oid, _ in fr.objects]
            else:
                ests = estimates.pop((fr.scene_id, fr.im_id), [])
                n_gt = defaultdict(int)
                for oid, _ in fr.objects:
                    n_gt[int(oid)] += 1
                keep = []
                for oid in sorted({e.obj_id for e in ests}):
                    if obj_ids is not None and oid not in obj_ids:
                        continue
                    cand = sorted((e for e in ests if e.obj_id == oid), key=lambda e: -e.score)
                    keep += cand[: n_gt[oid]]
                    ev.count("estimates_not_refined", max(0, len(cand) - n_gt[oid]))
                unknown = [e for e in keep if class_of(e.obj_id) not in registry]
                if unknown:
                    ev.count("estimates_of_unknown_objects", len(unknown))
                keep = [e for e in keep if class_of(e.obj_id) in registry]
                objs = [(class_of(e.obj_id), e.T_cam_obj) for e in keep]
                src_scores = [e.score for e in keep]
                src_time = max([e.time_s for e in keep], default=-1.0)
                ids = [e.obj_id for e in keep]
            if not objs:
                ev.count("images_without_objects")
                if bar is not None:
                    bar.update(1)
                continue
            res = refiner.refine(fr.image_rgb, fr.K, objs, depth_m=fr.depth_m)
            match = match_ground_truth(objs, gt)
            size = (fr.image_rgb.shape[1], fr.image_rgb.shape[0])
            for r, j in zip(res, match, strict=True):
                rec = ObjectResult(frame=i, key={"scene_id": fr.scene_id, "im_id": fr.im_id},
                                   class_id=r.class_id, score=r.score, diverged=r.diverged,
                                   reason=r.reason, T_init=r.T_cam_obj_init,
                                   T_refined=r.T_cam_obj, timing_ms=r.timing_ms,
                                   iterations=r.iterations, mode=r.mode,
                                   score_coarse=r.score_coarse, kept_coarse=r.kept_coarse,
                                   restarted=r.restarted, covariance=r.covariance)
                if j is not None:
                    rec.T_gt = gt[j][1]
                    (rec.metrics_init, rec.metrics_refined, rec.e_R_iter_deg,
                     rec.t_err_iter_m) = evaluate_object(registry[r.class_id], r.T_cam_obj_init,
                                                         r.T_cam_obj, gt[j][1], fr.K, size,
                                                         r.iterates)
                else:
                    ev.count("objects_without_ground_truth")
                ev.add(rec)
            wall_s = time.perf_counter() - t0
            refine_s = sum(r.timing_ms.get("total", 0.0) for r in res) / 1e3
            if kind == "bop":
                t_img = refine_s + (src_time if src_time >= 0 else 0.0)
                for r, oid, s in zip(res, ids, src_scores, strict=True):
                    score = r.score if s is None else s
                    refined_rows.append(BopEstimate(fr.scene_id, fr.im_id, int(oid), score,
                                                    r.T_cam_obj, t_img))
                    init_rows.append(BopEstimate(fr.scene_id, fr.im_id, int(oid),
                                                 1.0 if s is None else s, r.T_cam_obj_init,
                                                 src_time))
            ev.add_frame(1e3 * wall_s)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(objects=ev.n_objects, refresh=False)
        if estimates:
            ev.count("estimates_for_images_not_evaluated", sum(len(v) for v in estimates.values()))
        if bar is not None:
            bar.close()
            bar = None
        summary = ev.write(meta, elapsed_s=time.perf_counter() - t_start, plots=plots)
        if kind == "bop":
            write_bop_results(stage.path / Path(meta["refined_csv"]).name, refined_rows)
            write_bop_results(stage.path / Path(meta["initial_csv"]).name, init_rows)
        pause_for_test("report_written")
    except BaseException:
        if bar is not None:
            bar.close()
        ev.discard()
        stage.abort()
        raise
    if stage.commit():
        raise InterruptedWhenComplete(summary)
    return summary


def add_subcommand(subparsers, name: str, help: str) -> None:
    from .node_config import add_node_options

    p = subparsers.add_parser(name, help=help, description=help,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, help="bop:PATH or pix3d:PATH")
    p.add_argument("--out", default="eval_results", help="output directory")
    p.add_argument("--split", default="test", help="BOP split directory")
    p.add_argument("--results", help="initial poses from a BOP results CSV "
                   "(default: ground truth perturbed as the protocol says)")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbation")
    p.add_argument("--max-images", type=int, help="evaluate at most this many images")
    p.add_argument("--obj-ids", type=int, nargs="+", help="BOP objects to evaluate")
    p.add_argument("--min-visib", type=float, default=0.5,
                   help="leave out BOP instances less visible than this (visib_fract); 0: all")
    p.add_argument("--grey", action="store_true",
                   help="render every mesh flat grey (stands for untextured CAD models)")
    add_node_options(p, "refine with the dataset's depth images")
    p.add_argument("--pix3d-json", default="pix3d.json", help="Pix3D annotation file")
    p.add_argument("--model-scale", type=float, default=1.0, help="Pix3D model units to metres")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    sigterm_as_interrupt()
    try:
        summary = evaluate_dataset(
            args.dataset, args.out, split=args.split, results=args.results, seed=args.seed,
            max_images=args.max_images, obj_ids=args.obj_ids, params_file=args.params,
            model=args.model, mode=args.mode, device=args.device, iterations=args.iterations,
            crop_size=args.crop_size, use_depth=args.use_depth, pix3d_json=args.pix3d_json,
            model_scale=args.model_scale, progress=not args.no_progress,
            plots=not args.no_plots, min_visib=args.min_visib, grey=args.grey)
    except InterruptedWhenComplete as e:
        print(format_summary(e.result, Path(args.out)))
        print(f"eval: interrupted once the output was complete; it is all in {args.out}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("eval: interrupted; nothing was written (partial outputs removed)",
              file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as e:
        print(f"eval: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary, Path(args.out)))
    return 0
