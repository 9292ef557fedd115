"""``pose-refiner bench --tracking``: the tracker on synthetic motion sequences.

Sequences (``data.sequences``) of the benchmark's held-out ``bench`` meshes: one object
moving at up to ``max_speed_m_s`` and ``max_rot_deg_s`` relative to the camera, an
occluder crossing it in the middle third. Per sequence and per modality (RGB, RGB-D):

- the track starts at the ground-truth pose of frame 0 (what a confident refinement of
  the first detection hands over);
- every later frame is one :meth:`Tracker.step`. An object whose quality falls below
  ``reregister_below`` is re-registered by the full refiner from the tracked pose **in
  the background**, as the node does: the refinement is computed at once, but its
  result lands (``Tracker.correct``, when confident) only as many frames later as it
  took at ``rate_hz`` on this machine, one at a time, and the frames between publish
  the tracked pose. When the tracker reports the object ``lost`` (quality below
  ``lost_below``) it is re-registered at once instead; when that is not confident
  either, the frame counts as **lost** and the object is re-detected on the next frame:
  the refiner refines a coarse detection (the protocol's perturbation of the ground
  truth) and the track restarts from it. Both kinds count as **re-registrations**;
- every frame's published pose is scored with ADD(-S) against the ground truth; the
  share below 0.1 diameter is the accuracy, counting re-registered and lost frames.

Time: the tracker's own milliseconds per object and frame (median and p95, one thread
as set by the caller), without the re-registrations, which are counted and timed apart.
"""

from __future__ import annotations

from dataclasses import replace
import sys
import time

import numpy as np

__all__ = ["run_tracking_bench", "tracking_markdown"]


def _add_ok(model, T, T_gt, K, image_size) -> tuple[bool, float]:
    from ..evaluation import metrics as M

    e = M.evaluate_pose(T, T_gt, pts_obj=model.points_m, K=K, image_size=image_size,
                        diameter_m=model.diameter_m, symmetries=model.symmetries)
    add = e.adds_m if e.symmetric else e.add_m
    return bool(add < 0.1 * model.diameter_m), float(add / model.diameter_m)


def run_tracking_bench(refiner, n_sequences: int = 4, n_frames: int = 300, seed: int = 0,
                       n_models: int = 20, motion=None, tracker_cfg=None,
                       modalities=("rgb", "rgbd"), progress: bool = True,
                       latency_frames: int | None = None) -> dict:
    """Run the tracking benchmark (module docstring) and return its ``tracking`` section.

    Args:
        refiner: the full refiner (re-registrations), built for
            ``procedural_models("bench", n_models, seed)``.
        n_sequences, n_frames: sequences and frames per sequence.
        seed: seed of the meshes and of the sequences.
        motion: ``data.sequences.MotionConfig`` (``n_frames`` is replaced).
        tracker_cfg: ``track.tracker.TrackerConfig``.
        modalities: ``"rgb"`` and / or ``"rgbd"``.
        latency_frames: background re-registrations land this many frames later
            instead of as many as they took on this machine: comparisons between
            variants that do not depend on how busy the machine was.
    """
    from types import SimpleNamespace

    from ..data.perturb import perturb_pose
    from ..data.procedural import procedural_models
    from ..data.sequences import MotionConfig, generate_sequence
    from ..evaluation.covariance_check import covariance_calibration
    from ..track.tracker import Tracker, TrackerConfig

    motion = replace(motion or MotionConfig(), n_frames=n_frames)
    tcfg = tracker_cfg or TrackerConfig()
    models = procedural_models("bench", n_models, seed=seed)
    by_id = {m.class_id: m for m in models}
    per = {m: {"ok": [], "add_d": [], "ms": [], "rereg": 0, "rereg_ms": [], "lost": 0,
               "per_sequence": [], "cov": []} for m in modalities}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_sequences * n_frames * len(modalities), unit="frame",
                   desc="tracking", file=sys.stderr, dynamic_ncols=True)
    t_start = time.perf_counter()
    for s in range(n_sequences):
        frames = list(generate_sequence(models, np.random.default_rng(10_000 * seed + s),
                                        motion))
        for mod in modalities:
            rec = per[mod]
            rng = np.random.default_rng(s)
            cid, T_gt0, _ = frames[0].objects[0]
            m = by_id[cid]
            tracker = Tracker(refiner.view_arrays, tcfg,
                              corners=lambda c: by_id[c].bbox_corners_m, device=refiner.device)
            tracker.reset([(cid, T_gt0)])
            ok_seq = []

            def reregister(f, T, depth, cid=cid, rec=rec):
                """The full refiner from the tracked pose, as the node re-registers
                (without restarts); counted and timed. Returns ``(result, ms)``."""
                t0 = time.perf_counter()
                (rr,) = refiner.refine(f.image_rgb, f.K, [(cid, T)], depth_m=depth,
                                       restarts=False)
                ms = 1e3 * (time.perf_counter() - t0)
                rec["rereg_ms"].append(ms)
                rec["rereg"] += 1
                return rr, ms

            pending = None  # a re-registration in flight: (frame it lands, T_then, T_reg or None)
            for i, f in enumerate(frames[1:], 1):
                depth = f.depth_m if mod == "rgbd" else None
                T_gt = f.objects[0][1]
                if pending is not None and i >= pending[0]:
                    if pending[2] is not None:  # confident: it corrects the track
                        tracker.correct(0, pending[1], pending[2])
                    pending = None
                (r,) = tracker.step(f.image_rgb, f.K, depth)
                rec["ms"].append(r.timing_ms["total"])
                T = r.T_cam_obj
                if r.lost:  # re-registered at once: the tracked pose is not usable
                    pending = None
                    rr, _ = reregister(f, T, depth)
                    if not rr.diverged:
                        T = rr.T_cam_obj
                        tracker.set_pose(0, T)
                    else:  # lost: a new detection next frame, refined, restarts the track
                        rec["lost"] += 1
                        T_det = perturb_pose(T_gt[None], rng)[0]
                        (rd,) = refiner.refine(f.image_rgb, f.K, [(cid, T_det)], depth_m=depth)
                        tracker.reset([(cid, rd.T_cam_obj)])
                elif r.reregister and pending is None:
                    # In the background, as the node does: the track goes on and the
                    # result lands as many frames later as the refinement took.
                    rr, ms = reregister(f, T, depth)
                    late = (latency_frames if latency_frames is not None
                            else max(1, int(np.ceil(ms * motion.rate_hz / 1e3))))
                    pending = (i + late, T.copy(),
                               None if rr.diverged else rr.T_cam_obj)
                if not r.lost and r.covariance is not None:  # the tracked pose's own
                    rec["cov"].append(SimpleNamespace(covariance=r.covariance,
                                                      T_refined=r.T_cam_obj, T_gt=T_gt,
                                                      kept_coarse=False))
                ok, add_d = _add_ok(m, T, T_gt, f.K, f.image_rgb.shape[1::-1])
                rec["ok"].append(ok)
                rec["add_d"].append(add_d)
                ok_seq.append(ok)
                if bar is not None:
                    bar.update(1)
            rec["per_sequence"].append({"class_id": cid, "add_0.1d": float(np.mean(ok_seq)),
                                        "frames": len(ok_seq)})
            if bar is not None:
                bar.update(1)  # frame 0
    if bar is not None:
        bar.close()
    out = {
        "protocol": {
            "sequences": n_sequences, "frames_per_sequence": n_frames,
            "motion": {k: getattr(motion, k) for k in ("rate_hz", "max_speed_m_s",
                                                        "max_rot_deg_s", "occluder")},
            "meshes": f"procedural_models('bench', {n_models}, seed={seed}) (never trained on)",
            "start": "ground truth of frame 0; re-registration by the full refiner in the "
                     "background below reregister_below (landing as many frames later as "
                     "it took), at once when lost; after a failed re-registration of a "
                     "lost object, a perturbed detection is refined on the next frame",
            "tracker": {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in tcfg.__dict__.items() if k not in ("region", "solver")},
        },
        "elapsed_s": time.perf_counter() - t_start,
    }
    for mod, rec in per.items():
        ms = np.asarray(rec["ms"])
        n = len(rec["ok"])
        out[mod] = {
            "frames": n,
            "add_0.1d": float(np.mean(rec["ok"])) if n else None,
            "median_add_over_d": float(np.median(rec["add_d"])) if n else None,
            "ms_per_object_median": float(np.median(ms)) if n else None,
            "ms_per_object_p95": float(np.percentile(ms, 95)) if n else None,
            "reregistrations": rec["rereg"],
            "reregistration_ms_median": (float(np.median(rec["rereg_ms"]))
                                         if rec["rereg_ms"] else None),
            "frames_lost": rec["lost"],
            # the tracked poses' covariances against the truth (RGB; None with depth)
            "covariance_calibration": covariance_calibration(rec["cov"]),
            "per_sequence": rec["per_sequence"],
            "add_0.1d_per_frame": [bool(x) for x in rec["ok"]],
        }
    out["ms_per_object_median"] = out[modalities[0]]["ms_per_object_median"]
    out["ms_per_object_p95"] = out[modalities[0]]["ms_per_object_p95"]
    return out


def tracking_markdown(section: dict) -> str:
    """A Markdown summary of a ``tracking`` section."""
    p = section["protocol"]
    mo = p["motion"]
    lines = ["# Tracking benchmark", "",
             f"{p['sequences']} synthetic sequences of {p['frames_per_sequence']} frames at "
             f"{mo['rate_hz']:g} Hz, motion up to {mo['max_speed_m_s']:g} m/s and "
             f"{mo['max_rot_deg_s']:g} deg/s, occluder crossing: {mo['occluder']}; meshes "
             f"{p['meshes']}. Start: {p['start']}.", "",
             "| modality | frames | ADD(-S)@0.1d | median ADD/d | ms/object median | p95 | "
             "re-registrations | lost |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mod in ("rgb", "rgbd"):
        r = section.get(mod)
        if not r:
            continue
        lines.append(f"| {mod} | {r['frames']} | {100 * r['add_0.1d']:.1f}% | "
                     f"{r['median_add_over_d']:.3f} | {r['ms_per_object_median']:.1f} | "
                     f"{r['ms_per_object_p95']:.1f} | {r['reregistrations']} | "
                     f"{r['frames_lost']} |")
    for mod in ("rgb", "rgbd"):
        cc = (section.get(mod) or {}).get("covariance_calibration")
        if not cc:
            continue
        lines += ["", f"Pose covariance of the tracked poses ({mod}, {cc['n']} frames): "
                  "position errors within 1 / 2 claimed standard deviations: " + ", ".join(
                      f"{ax} {100 * a['within_1sigma']:.0f} / {100 * a['within_2sigma']:.0f}%"
                      for ax, a in cc["axes"].items()) + "."]
    return "\n".join(lines) + "\n"
