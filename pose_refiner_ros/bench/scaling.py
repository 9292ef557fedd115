"""How the cost of ``ours`` grows: objects per frame, mesh faces and crop size.

Every case refines one frame ``repeats`` times after one warm-up call and reports the
median (and p95) wall time of the ``refine`` call, per frame and per object, with the
per-object stage split of ``RefineResult.timing_ms``. Early stopping is switched off
(``early_stop_deg = early_stop_mm = 0``) so that every case runs exactly
``iterations`` iterations and the cases compare like with like: these figures are the
cost of a full refinement, an upper bound of the benchmark's times.

- **objects per frame**: the scene of the first sample, its annotated objects repeated
  until there are N (refined together, in one batch);
- **mesh faces**: a torus (6 cm major, 2.5 cm minor radius: 17 cm across) with about
  1k / 10k / 100k faces at the first sample's initial pose, in that sample's image.
  Each mesh is registered twice: with ``max_render_faces`` above its face count (the
  raw mesh is rendered) and with the registry's default cap (larger meshes are decimated
  for rendering); both face counts are reported, and both latencies where they differ;
- **crop size**: the first sample with ``crop_size`` S.
"""

from __future__ import annotations

from dataclasses import replace
import sys
import time

import numpy as np

from .methods import STAGES

__all__ = ["TORUS_SECTIONS", "scaling_runs"]

#: torus (major, minor) sections for a face count: faces = 2 * major * minor.
TORUS_SECTIONS = {"1k": (32, 16), "10k": (100, 50), "100k": (316, 158)}


def _time_frame(refiner, image, K, objects, depth, repeats: int) -> dict:
    refiner.refine(image, K, objects, depth_m=depth)  # warm-up
    frame_ms, stages, iters = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = refiner.refine(image, K, objects, depth_m=depth)
        frame_ms.append(1e3 * (time.perf_counter() - t0))
        stages.append(res[0].timing_ms)
        iters.append(res[0].iterations)
    n = len(objects)
    f = np.asarray(frame_ms)
    out = {"frame_ms": {"median": float(np.median(f)), "p95": float(np.percentile(f, 95))},
           "per_object_ms": {"median": float(np.median(f) / n),
                             "p95": float(np.percentile(f, 95) / n)},
           "stages_ms_per_object": {s: float(np.median([t.get(s, 0.0) for t in stages]))
                                    for s in STAGES},
           "iterations": int(max(iters)), "repeats": repeats}
    return out


def _bar(total: int, progress: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{desc:>18}", unit="case", file=sys.stderr,
                disable=not progress, dynamic_ncols=True)


def objects_per_frame(refiner, bench, counts, repeats: int, progress: bool = True) -> list:
    """Latency against the number of objects refined together in one frame."""
    s0 = bench.samples[0]
    sc = bench.scenes[s0.scene]
    out = []
    with _bar(len(counts), progress, "scaling: objects") as bar:
        for n in counts:
            objs = [sc.objects[k % len(sc.objects)] for k in range(n)]
            out.append({"objects": int(n), **_time_frame(refiner, sc.image_rgb, sc.K, objs, None,
                                                         repeats)})
            bar.update(1)
    return out


def _torus(label: str):
    import trimesh

    major, minor = TORUS_SECTIONS[label]
    return trimesh.creation.torus(major_radius=0.06, minor_radius=0.025,
                                  major_sections=major, minor_sections=minor)


def mesh_faces(net, cfg, bench, labels, repeats: int, progress: bool = True) -> list:
    """Latency against the mesh's face count (raw and as registered by default)."""
    from ..mesh.registry import DEFAULT_MAX_RENDER_FACES, ObjectModel, ObjectRegistry
    from ..refine.refiner import Refiner

    s0 = bench.samples[0]
    sc = bench.scenes[s0.scene]
    out = []
    with _bar(len(labels), progress, "scaling: faces") as bar:
        for label in labels:
            mesh = _torus(label)
            raw = len(mesh.faces)
            full = ObjectModel.from_trimesh("torus", mesh, max_render_faces=raw)
            dflt = ObjectModel.from_trimesh("torus", mesh)
            row = {"label": label, "raw_faces": raw, "registered_faces_raw": len(full.faces),
                   "registered_faces_default_cap": len(dflt.faces),
                   "default_max_render_faces": DEFAULT_MAX_RENDER_FACES,
                   "decimated_by_default": len(dflt.faces) < raw}
            objs = [("torus", s0.T_cam_obj_init)]
            row["raw"] = _time_frame(Refiner(ObjectRegistry([full]), cfg, net), sc.image_rgb,
                                     sc.K, objs, None, repeats)
            if row["decimated_by_default"]:
                row["default_cap"] = _time_frame(Refiner(ObjectRegistry([dflt]), cfg, net),
                                                 sc.image_rgb, sc.K, objs, None, repeats)
            out.append(row)
            bar.update(1)
    return out


def crop_sizes(net, cfg, bench, sizes, repeats: int, progress: bool = True) -> list:
    """Latency against the crop side."""
    from ..mesh.registry import ObjectRegistry
    from ..refine.refiner import Refiner

    s0 = bench.samples[0]
    sc = bench.scenes[s0.scene]
    registry = ObjectRegistry(bench.models)
    out = []
    with _bar(len(sizes), progress, "scaling: crop") as bar:
        for size in sizes:
            ref = Refiner(registry, replace(cfg, crop_size=int(size)), net)
            out.append({"crop_size": int(size),
                        **_time_frame(ref, sc.image_rgb, sc.K,
                                      [(s0.class_id, s0.T_cam_obj_init)], None, repeats)})
            bar.update(1)
    return out


def scaling_runs(net, cfg, bench, counts, face_labels, sizes, repeats: int,
                 progress: bool = True) -> dict:
    """All three sweeps (module docstring) with the refiner settings ``cfg`` (early
    stopping is switched off here)."""
    from ..mesh.registry import ObjectRegistry
    from ..refine.refiner import Refiner

    cfg = replace(cfg, early_stop_deg=0.0, early_stop_mm=0.0)
    ref = Refiner(ObjectRegistry(bench.models), cfg, net)
    return {
        "note": "early stopping off: every case runs exactly `iterations` iterations; "
                f"median of {repeats} calls after one warm-up; first sample's frame",
        "iterations": cfg.iterations,
        "objects_per_frame": objects_per_frame(ref, bench, counts, repeats, progress),
        "mesh_faces": mesh_faces(net, cfg, bench, face_labels, repeats, progress),
        "crop_size": crop_sizes(net, cfg, bench, sizes, repeats, progress),
    }
