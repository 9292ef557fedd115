"""``pose-refiner make-bag``: write a ROS 2 bag with known answers.

From the synthetic generator (``--from synthetic``, meshes of an objects YAML or the
project's procedural meshes) or from a BOP-format dataset (``--from bop:PATH``), each
frame becomes, as a camera driver and a coarse detector would publish them:

=============================  =====================================  ====================
topic                          type                                   log time
=============================  =====================================  ====================
``/camera/color/camera_info``  ``sensor_msgs/CameraInfo``             t
``/camera/color/image_raw``    ``sensor_msgs/Image`` (rgb8 or bgr8)   t
``/camera/depth/image_raw``    ``sensor_msgs/Image`` (16UC1 / 32FC1)  t (``--depth``)
``/ground_truth/detections``   ``vision_msgs/Detection3DArray``       t
``/detections``                ``vision_msgs/Detection3DArray``       t + detector latency
=============================  =====================================  ====================

All stamped with the image's stamp ``t`` (frames ``1 / --rate`` s apart) in the frame
``camera_color_optical_frame``. ``/detections`` holds the ground truth perturbed by the
protocol's standard perturbation (fixed ``--seed``); ``/ground_truth/detections`` the
ground truth itself (``pose-refiner eval-bag`` finds it by its name). ``--gt-file`` also
writes the ground truth as an eval-bag sidecar file.

``--camera unlike-training`` (synthetic) films the whole recording with one camera whose
colour response lies outside the training data's jitter (``UNLIKE_TRAINING``): a
recording to try ``pose-refiner adapt`` on, with its ground truth for the check after.

With ``--from synthetic`` and no ``--objects``, the meshes are the project's procedural
ones; they are written beside the bag (``<OUT>_objects/objects.yaml``), ready for
``eval-bag --objects``. With ``--from bop:PATH``, use ``eval-bag --objects bop:PATH``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import os
from pathlib import Path
import sys

import numpy as np

from . import bag_io as B
from . import bag_messages as BM
from .all_or_nothing import InterruptedWhenComplete, Staging, pause_for_test, sigterm_as_interrupt
from .bag_writer import BagWriter

__all__ = ["make_bag", "add_subcommand", "TOPICS"]

FRAME_ID = "camera_color_optical_frame"
TOPICS = {
    "image": "/camera/color/image_raw",
    "camera_info": "/camera/color/camera_info",
    "depth": "/camera/depth/image_raw",
    "detections": "/detections",
    "ground_truth": "/ground_truth/detections",
}
START_NS = 1_700_000_000 * 1_000_000_000
CAMERAS = ("varied", "unlike-training")
#: ``--camera unlike-training``: a warm cast and dim mid-tones (a cheap camera under
#: tungsten light), ``I' = gain * I ** gamma`` per channel, then blur and sensor noise.
#: Training's colour jitter stays within gains of +-8% and gamma 0.8 to 1.25
#: (``data.synthetic.SyntheticConfig``); the focal length is drawn once.
UNLIKE_TRAINING = {"gain": (1.3, 1.0, 0.6), "gamma": 1.7, "blur_sigma_px": 0.8,
                   "noise_std": 0.02}
DETECTOR_LATENCY_NS = 30_000_000


def _synthetic_frames(models, n: int, seed: int, width: int, height: int,
                      camera: str = "varied"):
    """Yield ``(image_rgb, depth_m, K, [(class_id, T_gt, T_init)])`` of synthetic scenes
    (``camera``: see :data:`CAMERAS`)."""
    from ..data.synthetic import SyntheticConfig, generate_scene
    from ..render.base import make_renderer

    s = width / 640.0
    base = SyntheticConfig()
    cfg = replace(base, image_width=width, image_height=height,
                  focal_range_px=(base.focal_range_px[0] * s, base.focal_range_px[1] * s),
                  apparent_size_px=(base.apparent_size_px[0] * s, base.apparent_size_px[1] * s),
                  objects_per_scene=(1, min(3, len(models))))
    renderer = make_renderer("torch")
    rng = np.random.default_rng(seed)
    if camera == "unlike-training":
        # Drawn apart from the scenes' stream: the scenes stay those of ``varied``.
        f = float(np.random.default_rng([seed, 2]).uniform(*cfg.focal_range_px))
        cfg = replace(cfg, focal_range_px=(f, f), principal_jitter_px=0.0)
        noise_rng = np.random.default_rng([seed, 1])
    for _ in range(n):
        sc = generate_scene(models, rng, cfg, renderer)
        img = sc.image_rgb
        if camera == "unlike-training":
            img = _unlike_training(img, noise_rng)
        yield img, sc.depth_m, sc.K, [(o.class_id, o.T_cam_obj_gt, o.T_cam_obj_init)
                                      for o in sc.objects]


def _unlike_training(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 -> the same frame through the ``UNLIKE_TRAINING`` camera."""
    import cv2

    c = UNLIKE_TRAINING
    x = (img.astype(np.float32) / 255.0) ** c["gamma"] * np.float32(c["gain"])
    x = cv2.GaussianBlur(x, (0, 0), c["blur_sigma_px"])
    x = x + rng.normal(0.0, c["noise_std"], x.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _bop_frames(root: Path, split: str, n: int, seed: int, want_depth: bool):
    """Yield the first ``n`` images of a BOP split with perturbed initial poses (the same
    ones as ``pose-refiner eval --dataset bop:... --seed`` draws)."""
    from ..data.bop import BopDataset
    from ..data.perturb import perturb_pose

    ds = BopDataset(root, split, load_depth=want_depth)
    rng = np.random.default_rng(seed)
    for i in range(min(n, len(ds))):
        fr = ds[i]
        if not fr.objects:
            yield fr.image_rgb, fr.depth_m, fr.K, []
            continue
        # Drawn per image in one batch, as `pose-refiner eval` does: the same seed gives
        # the same initial poses in both.
        T_init = perturb_pose(np.stack([T for _, T in fr.objects]), rng)
        yield fr.image_rgb, fr.depth_m, fr.K, [(f"obj_{int(oid):06d}", T, T_init[k])
                                               for k, (oid, T) in enumerate(fr.objects)]


def write_procedural_objects(models, out_dir: Path) -> Path:
    """Write procedural models as meshes plus an objects YAML; returns the YAML path."""
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for m in models:
        mesh = m.full_mesh.copy()
        path = out_dir / f"{m.class_id}.ply"
        mesh.export(path)
        entry = {"class_id": m.class_id, "mesh": path.name, "scale": 1.0}
        syms = np.asarray(m.symmetries, dtype=np.float64)
        extra = [T for T in syms if not np.allclose(T, np.eye(4), atol=1e-9)]
        if extra:
            entry["symmetries"] = {"discrete": [np.round(T, 12).tolist() for T in extra]}
        entries.append(entry)
    path = out_dir / "objects.yaml"
    path.write_text(yaml.safe_dump({"objects": entries}, sort_keys=False))
    return path


def make_bag(out: str | os.PathLike, source: str = "synthetic", *, storage: str = "sqlite3",
             frames: int = 10, seed: int = 0, objects: str | None = None, width: int = 640,
             height: int = 480, rate_hz: float = 10.0, depth: str | None = None,
             encoding: str = "rgb8", split: str = "test", gt_file: str | None = None,
             n_procedural: int = 3, overwrite: bool = False, progress: bool = False,
             camera: str = "varied") -> dict:
    """Write the bag (module docstring).

    Args:
        out: the bag directory to create.
        source: ``"synthetic"`` or ``"bop:PATH"`` (a BOP dataset root).
        storage: ``"sqlite3"`` or ``"mcap"``.
        frames: number of frames (BOP: at most the split's images).
        seed: seed of the scenes and of the perturbation.
        objects: synthetic only: an objects YAML whose meshes are rendered (default: the
            project's procedural meshes, written beside the bag).
        width, height: synthetic image size, pixels.
        rate_hz: frame rate of the stamps.
        depth: None (no depth topic), ``"16UC1"`` (mm) or ``"32FC1"`` (m).
        encoding: colour encoding, ``"rgb8"`` or ``"bgr8"``.
        split: BOP split directory.
        gt_file: also write the ground truth as an eval-bag sidecar JSON here.
        n_procedural: number of procedural meshes (synthetic without ``objects``).
        overwrite: replace an existing bag.
        progress: show a progress bar.
        camera: synthetic only: ``"varied"`` (a new random camera every frame, as in
            training) or ``"unlike-training"`` (one camera, colours outside training's:
            ``UNLIKE_TRAINING``).

    Returns:
        ``{"bag", "frames", "objects", "objects_yaml" or "objects_spec", "topics"}``.
    """
    out = Path(out)
    if depth not in (None, "16UC1", "32FC1"):
        raise ValueError(f"depth: expected None, '16UC1' or '32FC1', got {depth!r}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding: expected 'rgb8' or 'bgr8', got {encoding!r}")
    if frames < 1:
        raise ValueError(f"frames: expected >= 1, got {frames}")
    if camera not in CAMERAS:
        raise ValueError(f"camera: expected one of {', '.join(CAMERAS)}, got {camera!r}")
    if camera != "varied" and source != "synthetic":
        raise ValueError("--camera: applies to --from synthetic only (a BOP dataset has its "
                         "own camera)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists already; pass --overwrite or choose another name")
    info: dict = {"bag": str(out), "topics": dict(TOPICS)}
    if source.startswith("bop:"):
        root = Path(source[4:])
        if not root.is_dir():
            raise FileNotFoundError(f"--from {source}: {root} is not a directory; expected a BOP "
                                    "dataset root (models/, test/...)")
    elif source != "synthetic":
        raise ValueError(f"--from: expected 'synthetic' or 'bop:PATH', got {source!r}")
    # All or nothing: the bag, its objects and the --gt-file are staged and moved in
    # together once complete (stale partials of earlier runs removed).
    stage = Staging(out.parent, f"make-bag.{out.name}", stale=(f".{out.name}.partial",))
    if gt_file:
        Path(f"{gt_file}.partial").unlink(missing_ok=True)  # write_ground_truth_file's
    try:
        n_frames, n_objects = _write(stage, out, source, info, storage=storage, frames=frames,
                                     seed=seed, objects=objects, width=width, height=height,
                                     rate_hz=rate_hz, depth=depth, encoding=encoding,
                                     split=split, gt_file=gt_file, n_procedural=n_procedural,
                                     progress=progress, camera=camera)
        pause_for_test("bag_closed")
    except BaseException:
        stage.abort()
        raise
    info.update(frames=n_frames, objects=n_objects)
    if stage.commit():
        raise InterruptedWhenComplete(info)
    return info


def _write(stage: Staging, out: Path, source: str, info: dict, *, storage, frames, seed,
           objects, width, height, rate_hz, depth, encoding, split, gt_file, n_procedural,
           progress, camera="varied") -> tuple[int, int]:
    """Write everything of :func:`make_bag` into ``stage``; ``(frames, objects)``."""
    from .gt_file import write_ground_truth_file

    if source == "synthetic":
        if objects:
            from .node_config import load_registry

            models = list(load_registry(objects).models)
            info["objects_spec"] = str(objects)
        else:
            from ..data.procedural import procedural_models

            models = procedural_models("val", n_procedural, seed=0)
            obj_dir = out.parent / f"{out.name}_objects"
            write_procedural_objects(models, stage.path / obj_dir.name)
            info["objects_spec"] = str(obj_dir / "objects.yaml")
        gen = _synthetic_frames(models, frames, seed, width, height, camera)
    else:
        root = Path(source[4:])
        gen = _bop_frames(root, split, frames, seed, depth is not None)
        info["objects_spec"] = f"bop:{root}"

    gt_frames = []
    n_frames = n_objects = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=frames, unit="frame", desc="make-bag", file=sys.stderr)
    try:
        with BagWriter(stage.path / out.name, storage=storage) as w:
            w.add_topic(TOPICS["camera_info"], B.CAMERA_INFO)
            w.add_topic(TOPICS["image"], B.IMAGE)
            if depth:
                w.add_topic(TOPICS["depth"], B.IMAGE)
            w.add_topic(TOPICS["ground_truth"], B.DETECTIONS)
            w.add_topic(TOPICS["detections"], B.DETECTIONS)
            for i, (rgb, depth_m, K, objs) in enumerate(gen):
                t = START_NS + int(round(i * 1e9 / rate_hz))
                h, wd = rgb.shape[:2]
                w.write(TOPICS["camera_info"], t, BM.camera_info_msg(K, wd, h, t, FRAME_ID))
                w.write(TOPICS["image"], t, BM.image_msg(rgb, encoding, t, FRAME_ID))
                if depth:
                    d = depth_m if depth_m is not None else np.zeros((h, wd), np.float32)
                    w.write(TOPICS["depth"], t, BM.image_msg(d, depth, t, FRAME_ID))
                w.write(TOPICS["ground_truth"], t, BM.detections_msg(
                    [BM.DetectionOut(c, T_gt, 1.0) for c, T_gt, _ in objs], t, FRAME_ID))
                w.write(TOPICS["detections"], t + DETECTOR_LATENCY_NS, BM.detections_msg(
                    [BM.DetectionOut(c, T_init, 0.9) for c, _, T_init in objs], t, FRAME_ID))
                gt_frames.append((t, [(c, T_gt) for c, T_gt, _ in objs]))
                n_frames += 1
                n_objects += len(objs)
                if bar is not None:
                    bar.update(1)
        if gt_file:
            write_ground_truth_file(stage.outside(gt_file), gt_frames)
    finally:
        if bar is not None:
            bar.close()
    return n_frames, n_objects


def add_subcommand(subparsers, name: str, help: str) -> None:
    p = subparsers.add_parser(name, help=help, description=help)
    p.add_argument("out", help="the bag directory to create")
    p.add_argument("--from", dest="source", default="synthetic",
                   help="synthetic, or bop:PATH (a BOP dataset root)")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3",
                   help="bag storage plugin: sqlite3 (.db3) or mcap")
    p.add_argument("--frames", type=int, default=10,
                   help="frames to write (BOP: at most the split's images)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the synthetic scenes and of the detections' perturbation")
    p.add_argument("--objects", help="synthetic: objects YAML whose meshes are rendered "
                   "(default: procedural meshes, written to <OUT>_objects/)")
    p.add_argument("--width", type=int, default=640, help="synthetic image width")
    p.add_argument("--height", type=int, default=480, help="synthetic image height")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of the stamps")
    p.add_argument("--depth", choices=("16UC1", "32FC1"), help="also write a depth topic")
    p.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8",
                   help="colour order of the image messages")
    p.add_argument("--camera", choices=CAMERAS, default="varied",
                   help="synthetic: 'varied' draws a new camera for every frame, as in "
                   "training; 'unlike-training' films the whole recording with one camera "
                   "whose colours lie outside training's (warm cast, dim mid-tones), to try "
                   "`adapt` on")
    p.add_argument("--split", default="test", help="BOP split directory")
    p.add_argument("--gt-file", help="also write the ground truth as an eval-bag sidecar JSON")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing bag at OUT (else refused)")
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    sigterm_as_interrupt()
    try:
        info = make_bag(args.out, args.source, storage=args.storage, frames=args.frames,
                        seed=args.seed, objects=args.objects, width=args.width,
                        height=args.height, rate_hz=args.rate, depth=args.depth,
                        encoding=args.encoding, split=args.split, gt_file=args.gt_file,
                        overwrite=args.overwrite, progress=True, camera=args.camera)
    except InterruptedWhenComplete as e:
        print(f"make-bag: interrupted once the output was complete; {e.result['bag']} is "
              "whole", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("make-bag: interrupted; nothing was written (partial outputs removed)",
              file=sys.stderr)
        return 130
    except (B.BagError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"make-bag: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {info['bag']}: {info['frames']} frames, {info['objects']} objects")
    print(f"objects for eval-bag: --objects {info['objects_spec']}")
    return 0
