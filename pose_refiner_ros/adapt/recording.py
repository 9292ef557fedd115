"""Reading an unlabeled recording for adaptation: a ROS 2 bag, or a BOP folder with a
results CSV of coarse poses.

Ground truth is never read. A bag's ground-truth topic (``make-bag`` writes one) is not
even looked up: only the image, camera info, detections (and depth) topics are read, found
as ``eval-bag`` finds them. Of a BOP folder only the images and ``scene_camera.json`` are
read; the coarse poses come from the results CSV (what a detector wrote), never from
``scene_gt.json``.

A bag's frames are assembled as the node assembles them (``ros.sync``: an image and the
detections with its stamp; the camera info in force) and checked as the node checks them
(``ros.frame_inputs``); frames that fail are skipped and counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
import json
import os
from pathlib import Path

import cv2
import numpy as np

from .pseudo_labels import AdaptFrame

__all__ = ["read_recording", "read_bag_frames", "read_bop_frames"]


def read_recording(spec: str | os.PathLike, class_ids, results: str | None = None,
                   use_depth: bool = False, max_frames: int | None = None):
    """``(frames, counts)`` of a recording: a bag path, or ``bop:PATH`` with ``results``.

    Args:
        spec: a ROS 2 bag (directory or ``.mcap`` / ``.db3``), or ``bop:PATH`` (a BOP
            dataset root or one of its split folders).
        class_ids: the registered classes; detections of other classes are dropped
            (counted as ``detections_unknown_class``).
        results: a BOP results CSV of coarse poses (required with ``bop:``).
        use_depth: read depth too.
        max_frames: stop after this many frames.
    """
    s = str(spec)
    if s.startswith("bop:"):
        if not results:
            raise ValueError(f"{s}: a BOP recording needs --results, a BOP results CSV of "
                             "coarse poses (its ground truth is never read)")
        return read_bop_frames(s[4:], results, class_ids, use_depth, max_frames)
    return read_bag_frames(s, class_ids, use_depth, max_frames)


def read_bag_frames(path: str | os.PathLike, class_ids, use_depth: bool = False,
                    max_frames: int | None = None):
    """``(frames, counts)`` of a bag (module docstring)."""
    from ..evaluation import bag_io as B
    from ..evaluation.bag_topics import resolve_topics
    from ..evaluation.node_config import load_node_params
    from ..ros import conversions as conv
    from ..ros.frame_inputs import frame_images
    from ..ros.sync import FrameSynchronizer, match_window_ns

    known = set(class_ids)
    counts: Counter = Counter()
    frames: list[AdaptFrame] = []
    with B.BagReader(path) as bag:
        topics = resolve_topics(bag, use_depth=use_depth, find_ground_truth=False)
        p = load_node_params()  # matched as the node matches them, with its defaults
        sync = FrameSynchronizer(match_window_ns(p.sync_mode, p.sync_tolerance_s, p.sync_slop_s),
                                 p.sync_queue_size, use_depth=topics.depth is not None,
                                 mode=p.sync_mode)
        camera = None
        wanted = [t for t in (topics.image, topics.camera_info, topics.detections, topics.depth)
                  if t]
        for topic, _, msg in bag.messages(wanted):
            if topic == topics.camera_info:
                try:
                    camera = conv.camera_info_to_model(msg)
                except ValueError:
                    counts["rejected_bad_camera_info"] += 1
                continue
            stamp = B.stamp_to_ns(msg.header.stamp)
            frame = (sync.add_image(stamp, msg) if topic == topics.image else
                     sync.add_detections(stamp, msg) if topic == topics.detections else
                     sync.add_depth(stamp, msg))
            if frame is None or frame.detections is None:
                continue
            if camera is None:
                counts["skipped_no_camera_info"] += 1
                continue
            images, rejections = frame_images(frame.image, frame.depth, camera)
            for r in rejections:
                counts[f"rejected_{r.reason}"] += 1
            if images is None:
                continue
            objects, bad = conv.detections_to_objects(frame.detections)
            counts["detections_rejected"] += len(bad)
            dets = [(o.class_id, o.T_cam_obj) for o in objects if o.class_id in known]
            counts["detections_unknown_class"] += len(objects) - len(dets)
            frames.append(AdaptFrame(f"stamp {frame.stamp_ns}", images.image_rgb,
                                     np.array(camera.K), dets, images.depth_m))
            if max_frames is not None and len(frames) >= max_frames:
                break
    counts["frames"] = len(frames)
    return frames, dict(counts)


def read_bop_frames(root: str | os.PathLike, results: str | os.PathLike, class_ids,
                    use_depth: bool = False, max_frames: int | None = None):
    """``(frames, counts)`` of a BOP folder with a results CSV (module docstring).

    ``root`` is a dataset root with one split folder (``test`` preferred) or a split folder
    itself (holding scene folders ``000002/`` with ``rgb/`` and ``scene_camera.json``).
    Detections of ``obj_id`` N are class ``obj_00000N`` (as ``eval``'s registries name BOP
    objects); per image, every row of the CSV is a detection.
    """
    from ..evaluation.eval_dataset import read_bop_results

    split = _split_dir(Path(root))
    known = set(class_ids)
    counts: Counter = Counter()
    by_image: dict = defaultdict(list)
    for e in read_bop_results(results):
        by_image[(e.scene_id, e.im_id)].append(e)
    frames: list[AdaptFrame] = []
    for scene in sorted(p for p in split.iterdir() if p.is_dir() and p.name.isdigit()):
        cams = json.loads((scene / "scene_camera.json").read_text())
        for im_key in sorted(cams, key=int):
            ests = by_image.get((int(scene.name), int(im_key)), [])
            if not ests:
                counts["images_without_detections"] += 1
                continue
            img = _read_image(scene, "rgb", int(im_key), cv2.IMREAD_COLOR)
            cam = cams[im_key]
            depth = None
            if use_depth:
                d = _read_image(scene, "depth", int(im_key), cv2.IMREAD_UNCHANGED)
                depth = d.astype(np.float32) * float(cam.get("depth_scale", 1.0)) / 1000.0
            dets = [(f"obj_{e.obj_id:06d}", e.T_cam_obj) for e in ests]
            kept = [d for d in dets if d[0] in known]
            counts["detections_unknown_class"] += len(dets) - len(kept)
            frames.append(AdaptFrame(f"scene {int(scene.name)} image {int(im_key)}",
                                     cv2.cvtColor(img, cv2.COLOR_BGR2RGB),
                                     np.array(cam["cam_K"], np.float64).reshape(3, 3), kept,
                                     depth))
            if max_frames is not None and len(frames) >= max_frames:
                counts["frames"] = len(frames)
                return frames, dict(counts)
    counts["frames"] = len(frames)
    return frames, dict(counts)


def _split_dir(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"bop:{root}: not a directory")
    if any((p / "scene_camera.json").is_file() for p in root.iterdir() if p.is_dir()):
        return root
    splits = sorted(p for p in root.iterdir() if p.is_dir() and any(
        (q / "scene_camera.json").is_file() for q in p.iterdir() if q.is_dir()))
    if not splits:
        raise FileNotFoundError(f"bop:{root}: no split folder with scenes (scene_camera.json)")
    return next((p for p in splits if p.name == "test"), splits[0])


def _read_image(scene: Path, kind: str, im_id: int, flag) -> np.ndarray:
    for ext in (".png", ".jpg", ".tif"):
        p = scene / kind / f"{im_id:06d}{ext}"
        if p.is_file():
            img = cv2.imread(str(p), flag)
            if img is None:
                raise ValueError(f"{p}: not a readable image")
            return img
    raise FileNotFoundError(f"{scene / kind}: no image {im_id:06d}.png/.jpg/.tif")
