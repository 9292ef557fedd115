"""``pose-refiner eval-bag``: refine every frame of a recorded ROS 2 bag, offline, and report.

What the node does live, done on a recording without ROS: the bag is streamed with
``rosbags`` (sqlite3 or mcap), images / camera info / detections (and depth) are matched
by stamp with the node's own :class:`~pose_refiner_ros.ros.sync.FrameSynchronizer`
(``sync_mode`` and its window as the node's),
messages are read with the node's own conversions, the :class:`Refiner` is built from
the node's parameters (``config/refiner.yaml`` or ``--params``; the same defaults), and
the node's rules decide what is published (``confidence_threshold``,
``low_confidence_action``, ``max_objects``, ``target_class_id``, TF names).

Writes into ``--out DIR``:

- ``<bag name>_refined/``: a new bag (same storage format) with every input message,
  unchanged, plus ``/refined_pose`` (``PoseStamped``), ``/refined_detections``
  (``Detection3DArray``) and ``/tf`` (``TFMessage``), stamped with the image's stamp and
  logged when the frame was complete. Written under a hidden temporary name and renamed
  when complete; the input bag is opened read-only.
- ``report.json``, ``report.md`` and ``plots/`` (see :mod:`.report`): per-object
  results, timing, and, when there is ground truth (``--gt-topic``, a topic whose name
  says ``ground_truth``, or ``--gt-file``), every metric of the protocol for the coarse
  and the refined poses.

Memory stays flat: messages are read one at a time, the synchroniser's buffers are
bounded (``sync_queue_size``), and per-object records go straight to disk. All or
nothing (:mod:`.all_or_nothing`): everything is written into ``--out``'s
``.eval-bag.partial/`` and moved into place once complete; Ctrl-C or SIGTERM before that
removes it all, one during the move takes effect once the output is whole, and stale
partial files of earlier runs are removed at the start.

Ground truth from a sidecar file (``--gt-file``): :mod:`.gt_file`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import fields, replace
import os
from pathlib import Path
import sys
import time

import numpy as np

from ..ros.publish_rules import publish_decision, tf_frame_name
from . import bag_io as B
from . import bag_messages as BM
from .all_or_nothing import InterruptedWhenComplete, Staging, pause_for_test
from .bag_topics import resolve_topics
from .bag_writer import BagWriter
from .gt_file import read_ground_truth_file
from .node_config import build_refiner, load_node_params, load_registry
from .report_header import settings

#: Partial files that earlier versions of eval-bag, killed hard, left in ``--out``.
STALE_PARTIALS = (".*_refined.partial", ".objects.*.jsonl.partial", ".report.*.partial")

__all__ = ["eval_bag"]

OUT_POSE = "/refined_pose"
OUT_DETECTIONS = "/refined_detections"
OUT_TF = "/tf"
GT_WAIT_NS = 1_000_000_000  # how long (log time) a complete frame waits for its ground truth


# -- the run ------------------------------------------------------------------------------------


class _Run:
    """State of one eval-bag run (the loop is in :func:`eval_bag`)."""

    def __init__(self, bag, topics, params, registry, refiner, writer, evaluation, gt_file,
                 max_frames=None):
        from ..ros import conversions as conv
        from ..ros.sync import FrameSynchronizer, StampBuffer, match_window_ns

        self.conv = conv
        self.bag, self.topics, self.p, self.registry = bag, topics, params, registry
        self.refiner, self.writer, self.ev = refiner, writer, evaluation
        self.sync = FrameSynchronizer(
            match_window_ns(params.sync_mode, params.sync_tolerance_s, params.sync_slop_s),
            params.sync_queue_size, use_depth=topics.depth is not None, mode=params.sync_mode)
        self.gt_file = gt_file
        self.max_frames = max_frames
        self.gt_buffer = StampBuffer(max(50, 4 * params.sync_queue_size))
        self.pending: deque = deque()  # (frame, log time when complete)
        self.camera = None  # (message, CameraModel) of the latest valid camera_info
        self.frame_index = 0
        self.last_tf_stamp = -1
        self.now_ns = 0

    # messages --------------------------------------------------------------------------
    def on_message(self, topic: str, t_ns: int, msg) -> None:
        self.now_ns = t_ns
        T = self.topics
        stamp = None if topic == T.camera_info else B.stamp_to_ns(msg.header.stamp)
        if topic == T.camera_info:
            try:
                self.camera = (msg, self.conv.camera_info_to_model(msg))
            except ValueError:
                self.ev.count("rejected_bad_camera_info")
        if topic == T.ground_truth:
            self.gt_buffer.add(stamp, msg)
        frame = None
        if topic == T.image:
            frame = self.sync.add_image(stamp, (msg, t_ns))
        elif topic == T.detections:
            frame = self.sync.add_detections(stamp, (msg, t_ns))
        elif topic == T.depth:
            frame = self.sync.add_depth(stamp, (msg, t_ns))
        if frame is not None:
            # The camera_info in force when the frame was complete (as the node: the latest).
            self.pending.append((frame, t_ns, self.camera))
        self.flush()

    def flush(self, final: bool = False) -> None:
        """Refine the complete frames whose ground truth is in (or will not come)."""
        while self.pending:
            if self.max_frames is not None and self.ev.frames >= self.max_frames:
                self.pending.clear()
                return
            frame, t_done, camera = self.pending[0]
            gt = self.ground_truth(frame.stamp_ns)
            waiting = (self.topics.ground_truth is not None and gt is None and not final
                       and self.now_ns - t_done < GT_WAIT_NS
                       and len(self.pending) <= self.p.sync_queue_size)
            if waiting:
                return
            self.pending.popleft()
            self.process(frame, camera, gt)

    def ground_truth(self, stamp_ns: int):
        """``[(class_id, T)]`` for the image stamped ``stamp_ns``, or None."""
        if self.gt_file is not None:
            return self.gt_file.get(stamp_ns)
        if self.topics.ground_truth is None:
            return None
        found = self.gt_buffer.find(stamp_ns, int(round(self.p.sync_tolerance_s * 1e9)))
        if found is None:
            return None
        msg = found[1]
        if self.topics.ground_truth_type == B.POSE_STAMPED:
            return [("", self.conv.pose_to_matrix(msg.pose, "ground-truth pose"))]
        objects, _ = self.conv.detections_to_objects(msg)
        return [(o.class_id, o.T_cam_obj) for o in objects]

    # one frame ---------------------------------------------------------------------------
    def inputs(self, frame, camera):
        """Rectified RGB, camera model and depth of a frame, checked as the node checks
        them (``ros.frame_inputs``), or None when it is skipped (counted)."""
        from ..ros.frame_inputs import frame_images

        cam = camera[1] if camera is not None else None
        images, rejections = frame_images(
            frame.image[0], frame.depth[0] if frame.depth is not None else None, cam)
        for r in rejections:
            self.ev.count(f"rejected_{r.reason}")
        return None if images is None else (images.image_rgb, cam, images.depth_m)

    def process(self, frame, camera, gt) -> None:
        from .report import ObjectResult, evaluate_object, match_ground_truth

        t0 = time.perf_counter()
        p, ev = self.p, self.ev
        inputs = self.inputs(frame, camera)
        if inputs is None:
            return
        image, cam, depth = inputs
        header = frame.image[0].header
        objects, rejections = self.conv.detections_to_objects(frame.detections[0], header.frame_id)
        for r in rejections:
            ev.count(f"rejected_{r.reason}")
        known = [o for o in objects if o.class_id in self.registry]
        if len(known) < len(objects):
            ev.count("rejected_unknown_class", len(objects) - len(known))
        if len(known) > p.max_objects:
            ev.count("rejected_too_many_objects", len(known) - p.max_objects)
            known = sorted(sorted(known, key=lambda o: -o.score)[: p.max_objects],
                           key=lambda o: o.index)
        counts: dict = {}
        names = []
        for o in known:
            names.append(tf_frame_name(p.tf_prefix, o.class_id, counts.get(o.class_id, 0)))
            counts[o.class_id] = counts.get(o.class_id, 0) + 1
        pairs = [(o.class_id, o.T_cam_obj) for o in known]
        results = (self.refiner.refine(image, np.array(cam.K), pairs, depth_m=depth)
                   if pairs else [])

        out = []  # (name, class_id, T, score) as the node publishes them
        for name, r in zip(names, results, strict=True):
            if (not r.diverged) and r.score >= p.confidence_threshold:
                out.append((name, r.class_id, r.T_cam_obj, r.score))
            else:
                ev.count("low_confidence")
                if p.low_confidence_action == "publish_coarse":
                    out.append((name, r.class_id, r.T_cam_obj_init, r.score))
        self.publish(frame.stamp_ns, header.frame_id, out)

        if gt is not None and gt and gt[0][0] == "":  # a PoseStamped: one object of one class
            cls = p.target_class_id or (known[0].class_id if len({o.class_id for o in known}) == 1
                                        and known else "")
            gt = [(cls, gt[0][1])] if cls else None
            if gt is None:
                ev.count("ground_truth_class_unknown")
        match = match_ground_truth(pairs, gt) if gt else [None] * len(pairs)
        size = (cam.width, cam.height)
        for r, j in zip(results, match, strict=True):
            rec = ObjectResult(frame=self.frame_index, key={"stamp_ns": int(frame.stamp_ns)},
                               class_id=r.class_id, score=r.score, diverged=r.diverged,
                               reason=r.reason, T_init=r.T_cam_obj_init, T_refined=r.T_cam_obj,
                               timing_ms=r.timing_ms, iterations=r.iterations, mode=r.mode,
                               score_coarse=r.score_coarse, kept_coarse=r.kept_coarse,
                               restarted=r.restarted, covariance=r.covariance,
                               published=publish_decision(r, p.confidence_threshold,
                                                          p.low_confidence_action))
            if j is not None:
                rec.T_gt = gt[j][1]
                (rec.metrics_init, rec.metrics_refined, rec.e_R_iter_deg,
                 rec.t_err_iter_m) = evaluate_object(self.registry[r.class_id], r.T_cam_obj_init,
                                                     r.T_cam_obj, gt[j][1], cam.K, size, r.iterates)
            elif gt is not None:
                ev.count("objects_without_ground_truth")
            ev.add(rec)
        if gt is None and (self.topics.ground_truth is not None or self.gt_file is not None):
            ev.count("frames_without_ground_truth")
        ev.add_frame(1e3 * (time.perf_counter() - t0))
        self.frame_index += 1

    def publish(self, stamp_ns: int, frame_id: str, out) -> None:
        """The node's outputs of one frame, into the output bag."""
        p, w, t = self.p, self.writer, self.now_ns
        dets = []
        for name, cid, T, score in out:
            m = self.registry[cid]
            dets.append(BM.DetectionOut(cid, T, score, m.bbox_min_m, m.bbox_max_m, name))
        w.write(OUT_DETECTIONS, t, BM.detections_msg(dets, stamp_ns, frame_id))
        candidates = [o for o in out if not p.target_class_id or o[1] == p.target_class_id]
        if candidates:
            best = max(candidates, key=lambda o: o[3])
            w.write(OUT_POSE, t, BM.pose_stamped_msg(best[2], stamp_ns, frame_id))
        if p.publish_tf and out and stamp_ns > self.last_tf_stamp:
            self.last_tf_stamp = stamp_ns
            w.write(OUT_TF, t, BM.tf_msg([(frame_id, name, T) for name, _, T, _ in out], stamp_ns))


def eval_bag(bag_path: str | os.PathLike, objects: str | os.PathLike, out_dir: str | os.PathLike,
             *, model: str | None = None, mode: str | None = None, device: str | None = None,
             params_file: str | None = None, iterations: int | None = None,
             crop_size: int | None = None, use_depth: bool | None = None,
             image_topic: str | None = None, camera_info_topic: str | None = None,
             detections_topic: str | None = None, depth_topic: str | None = None,
             gt_topic: str | None = None, gt_file: str | None = None,
             max_frames: int | None = None, overwrite: bool = False, progress: bool = True,
             plots: bool = True, registry=None, refiner=None) -> dict:
    """Refine every frame of a bag; write the output bag and the report (module docstring).

    Args:
        bag_path: the input bag (directory, or a single .mcap / .db3 file).
        objects: objects YAML, or ``bop:MODELS_DIR``.
        out_dir: output directory (created).
        model, mode, device, iterations, crop_size, use_depth: override the node
            parameters ``model_path``, ``mode``, ``device``, ``iterations``,
            ``crop_size``, ``use_depth``.
        params_file: a ROS params file of the node (default: the node's defaults, which
            are ``config/refiner.yaml``'s).
        image_topic, camera_info_topic, detections_topic, depth_topic, gt_topic: name the
            topics instead of finding them by type.
        gt_file: sidecar ground truth (module docstring), instead of a topic.
        max_frames: stop after this many refined frames (the output bag then holds the
            input up to that point).
        overwrite: replace an existing output bag / report in ``out_dir``.
        progress: show a tqdm progress bar on stderr.
        plots: draw the PNG plots.
        registry, refiner: use these instead of building them (tests, benchmarks).

    Returns:
        the report's summary (``report.json``'s ``summary``).

    Raises:
        BagError: the bag is missing, malformed or truncated, or a topic is missing or
            ambiguous. FileNotFoundError / ValueError: other inputs. KeyboardInterrupt:
            after removing everything half-written.
    """
    from .report import Evaluation

    bag_path = Path(bag_path)
    out_dir = Path(out_dir)
    params = load_node_params(params_file, model_path=model, mode=mode, device=device,
                              iterations=iterations, crop_size=crop_size, use_depth=use_depth)
    gt_frames = read_ground_truth_file(gt_file) if gt_file else None
    t_start = time.perf_counter()
    with B.BagReader(bag_path) as bag:
        topics = resolve_topics(bag, image_topic, camera_info_topic, detections_topic,
                                depth_topic, gt_topic, use_depth=params.use_depth,
                                find_ground_truth=gt_file is None)
        if topics.depth is not None and not params.use_depth:
            params = replace(params, use_depth=True)  # --depth-topic given: use it
        if registry is None:
            registry = load_registry(objects)
        model_file = None
        if refiner is None:
            refiner, model_file = build_refiner(params, registry)
        name = bag_path.name[: -len(bag_path.suffix)] if bag_path.is_file() else bag_path.name
        out_bag = out_dir / f"{name}_refined"
        if not overwrite:
            for p in (out_bag, out_dir / "report.json"):
                if p.exists():
                    raise FileExistsError(f"{p} exists already; pass --overwrite or another --out")
        stage = Staging(out_dir, "eval-bag", stale=STALE_PARTIALS)
        ev = Evaluation(stage.path, f"eval-bag: {bag_path.name}",
                        confidence_threshold=params.confidence_threshold)
        meta = {"command": "eval-bag", "mode": refiner.cfg.mode,
                "model": str(model_file) if model_file else None,
                "bag": str(bag_path), "storage": bag.storage,
                "output_bag": str(out_bag), "objects": str(objects),
                "ground_truth": gt_file or topics.ground_truth,
                "topics": {f.name: getattr(topics, f.name) for f in fields(topics)},
                "params": {f.name: getattr(params, f.name) for f in fields(params)},
                "refiner": settings(refiner.cfg),
                "device": str(refiner.device)}
        bar = None
        try:
            with BagWriter(stage.path / out_bag.name, storage=bag.storage) as writer:
                not_copied = sorted({f"{c.topic} ({c.msgtype})" for c in bag.connections
                                     if not writer.add_topic(c.topic, c.msgtype, like=c)})
                if not_copied:
                    meta["topics_not_copied"] = not_copied
                    print("eval-bag: not copied to the output bag (their types are unknown "
                          "and the bag holds no definition of them): " + ", ".join(not_copied),
                          file=sys.stderr)
                for topic, msgtype in ((OUT_POSE, B.POSE_STAMPED), (OUT_DETECTIONS, B.DETECTIONS),
                                       (OUT_TF, B.TF)):
                    if bag.topics.get(topic, msgtype) != msgtype:
                        raise B.BagError(f"{bag_path}: the input already has {topic} of type "
                                         f"{bag.topics[topic]}; the output needs it for {msgtype}")
                    writer.add_topic(topic, msgtype)
                run = _Run(bag, topics, params, registry, refiner, writer, ev, gt_frames,
                           max_frames)
                wanted = {topics.image, topics.camera_info, topics.detections, topics.depth,
                          topics.ground_truth} - {None}
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=bag.count(topics.image), unit="frame", desc="eval-bag",
                               file=sys.stderr, dynamic_ncols=True)
                t_loop = time.perf_counter()
                for conn, t_ns, raw in bag.raw_messages():
                    if writer.has_topic(conn.topic):
                        writer.write_raw(conn.topic, t_ns, raw)
                    if conn.topic not in wanted:
                        continue
                    run.on_message(conn.topic, t_ns, bag.deserialize(raw, conn.msgtype))
                    if bar is not None and conn.topic == topics.image:
                        bar.update(1)
                        fps = ev.frames / max(time.perf_counter() - t_loop, 1e-9)
                        bar.set_postfix(refined=ev.frames, objects=ev.n_objects,
                                        fps=f"{fps:.2f}", refresh=False)
                    if max_frames is not None and ev.frames >= max_frames:
                        break
                run.flush(final=True)
            pause_for_test("bag_closed")
            if bar is not None:
                bar.close()
            elapsed = time.perf_counter() - t_loop  # frames/s: the loop, not the start-up
            meta["wall_s_with_startup"] = round(time.perf_counter() - t_start, 3)
            summary = ev.write(meta, elapsed_s=elapsed, plots=plots)
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
