"""What the node's worker thread does with a frame: refine its objects (or follow them
in tracking mode), apply the confidence rule, and publish the results, TF, markers and
debug image.

A mixin of the node classes (``ros.node.RefinerNode``, ``ros.lifecycle.ManagedRefinerNode``,
through ``ros.node.RefinerCore``): it uses their parameters, refiner, publishers and
counters. The TF frame names are described in the ``ros.node`` docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import time
import traceback

from tf2_msgs.msg import TFMessage

from . import conversions as conv
from .debug_image import debug_object
from .frame_inputs import frame_images
from .publish_rules import publish_decision, tf_frame_name
from .sync import MatchedFrame, stamp_to_ns
from .tracking import Tracked as _Tracked

__all__ = ["FrameProcessing"]


@dataclass(frozen=True)
class _Track:
    stamp_ns: int  # image stamp of the last refinement
    detection_stamp_ns: int  # image stamp of the last detections
    frame_id: str
    objects: tuple


class FrameProcessing:
    """The worker's side of the node (module docstring)."""

    def _work_loop(self, work) -> None:
        """The worker thread: takes frames from ``work`` (a WorkQueue) until it is closed."""
        while True:
            lane, item = work.take(timeout=0.5)
            if work.closed:
                return
            if lane is None:
                continue
            try:
                if self._rebuild:
                    self._rebuild_refiner()
                if lane == "reset":
                    self._start_over()
                elif lane == "detect":
                    self._process_detections(item)
                else:
                    self._process_tracking(item)
            except Exception as e:  # a bug must not kill the node: log it, count it, go on
                if not self.context.ok():
                    return  # shutting down: publishers are gone
                self.stats.error()
                self._warn("worker_error", f"refinement failed: {e!r}\n{traceback.format_exc()}")

    def _rebuild_refiner(self) -> None:
        from ..refine.refiner import Refiner

        self._rebuild = False
        p = self.params
        cfg = replace(self.refiner.cfg, iterations=p.iterations, crop_size=p.crop_size)
        self.refiner = Refiner(self.registry, cfg, self.refiner.net)

    def _frame_inputs(self, image_item, depth_item):
        """Image (rectified RGB), K and depth of a frame (``ros.frame_inputs``), or None
        when it must be skipped; every problem is rejected and counted."""
        cam = self._camera[1] if self._camera is not None else None
        images, rejections = frame_images(
            image_item[0], depth_item[0] if depth_item is not None else None, cam
        )
        for r in rejections:
            self._reject(r.reason, r.message)
        return None if images is None else (images.image_rgb, images.K_px, images.depth_m)

    def _coarse_objects(self, item, frame_id: str):
        """Coarse objects of a detections item (Detection3DArray or PoseStamped)."""
        kind, msg = item
        if kind == "coarse_pose":
            if msg.header.frame_id and msg.header.frame_id != frame_id:
                self._reject(
                    "wrong_frame",
                    f"coarse_pose in frame {msg.header.frame_id!r}, the image in {frame_id!r}",
                )
                return []
            try:
                T = conv.pose_to_matrix(msg.pose, "coarse_pose")
            except ValueError as e:
                self._reject("bad_pose", str(e))
                return []
            return [conv.CoarseObject(self.params.coarse_pose_class_id, T, 1.0, 0)]
        objects, rejections = conv.detections_to_objects(msg, frame_id)
        for r in rejections:
            self._reject(r.reason, r.message)
        return objects

    def _process_detections(self, frame: MatchedFrame) -> None:
        p = self.params
        image_msg = frame.image[0]
        t_recv = max(x[1] for x in (frame.image, frame.detections, frame.depth) if x is not None)
        inputs = self._frame_inputs(frame.image, frame.depth)
        if inputs is None:
            return
        header = image_msg.header
        objects = self._coarse_objects(frame.detections[0], header.frame_id)
        known = []
        for o in objects:
            if o.class_id in self.registry:
                known.append(o)
            else:
                self._reject(
                    "unknown_class",
                    f"class_id {o.class_id!r} is not in the objects YAML "
                    f"({self._objects_file}); known: {list(self.registry.class_ids)}",
                )
        if len(known) > p.max_objects:
            keep = sorted(known, key=lambda o: -o.score)[: p.max_objects]
            self._reject(
                "too_many_objects",
                f"{len(known)} objects, max_objects is {p.max_objects}; "
                "kept the highest detection scores",
                len(known) - p.max_objects,
            )
            known = sorted(keep, key=lambda o: o.index)
        counts: dict = {}
        names = []
        for o in known:
            k = counts.get(o.class_id, 0)
            counts[o.class_id] = k + 1
            names.append(tf_frame_name(p.tf_prefix, o.class_id, k))
        stamp = stamp_to_ns(header.stamp.sec, header.stamp.nanosec)

        def start_track(published):
            if p.tracking:
                self._track = (
                    _Track(stamp, stamp, header.frame_id, tuple(published)) if published else None
                )
                self._track_frames = 0
                if self._tracker is not None:
                    self._tracker.reset([(o.class_id, o.T_cam_obj) for o in published])

        self._refine_and_publish(
            header,
            inputs,
            names,
            [o.class_id for o in known],
            [o.T_cam_obj for o in known],
            t_recv,
            start_track,
        )
        self.stats.count("frames.refined")

    def _process_tracking(self, stamp: int) -> None:
        p, track = self.params, self._track
        if not p.tracking or track is None:
            return
        if stamp <= track.stamp_ns:
            self.stats.drop("track_superseded")
            return
        if (
            p.tracking_max_age_s > 0
            and stamp - track.detection_stamp_ns > p.tracking_max_age_s * 1e9
        ):
            self._track = None
            self._warn(
                "track_expired",
                f"tracking stopped: no detections for more than "
                f"{p.tracking_max_age_s} s (parameter tracking_max_age_s)",
            )
            self.stats.count("tracks.expired")
            return
        with self._sync_lock:
            found = self._sync.image_with_depth(stamp)
            if found is not None:
                self._sync.mark_used(stamp)
        if found is None:
            self.stats.drop("track_image_gone")
            return
        image_item, depth_item = found
        header = image_item[0].header
        if header.frame_id != track.frame_id:
            self._reject(
                "wrong_frame",
                f"image in frame {header.frame_id!r}, the tracked objects in "
                f"{track.frame_id!r}; tracking stopped",
            )
            self._track = None
            return
        inputs = self._frame_inputs(image_item, depth_item)
        if inputs is None:
            return
        objs = track.objects
        tracker = self._tracker
        if tracker is not None and tracker.class_ids == [o.class_id for o in objs]:
            self._track_and_publish(header, inputs, track, stamp, image_item[1])
            self.stats.count("frames.tracked")
            return

        def continue_track(published):
            if self._track is track:  # not replaced by detections meanwhile
                self._track = (
                    replace(track, stamp_ns=stamp, objects=tuple(published)) if published else None
                )

        self._refine_and_publish(
            header,
            inputs,
            [o.name for o in objs],
            [o.class_id for o in objs],
            [o.T_cam_obj for o in objs],
            image_item[1],
            continue_track,
        )
        self.stats.count("frames.tracked")

    def _refine_and_publish(self, header, inputs, names, class_ids, Ts, t_recv, update_track):
        """Refine, apply the confidence rule, hand the published objects (what tracking
        follows: refined poses, and coarse ones under ``publish_coarse``) to
        ``update_track``, then publish (so that the next image already sees the track)."""
        p = self.params
        image, K, depth = inputs
        objects = list(zip(class_ids, Ts, strict=True))
        results = self.refiner.refine(image, K, objects, depth_m=depth) if objects else []
        published, out = [], []  # out: (name, class_id, T, score) as published
        covariances = {}  # name -> (6, 6) covariance of a refined pose published
        shown = []  # the debug image's objects
        for name, r in zip(names, results, strict=True):
            decision = publish_decision(r, p.confidence_threshold, p.low_confidence_action)
            confident = decision == "refined"
            shown.append(debug_object(r, confident, p.low_confidence_action))
            if confident:
                out.append((name, r.class_id, r.T_cam_obj, r.score))
                covariances[name] = r.covariance
                published.append(_Tracked(name, r.class_id, r.T_cam_obj, r.score))
                continue
            why = (
                r.reason
                or f"score {r.score:.2f} < confidence_threshold {p.confidence_threshold:.2f}"
            )
            action = p.low_confidence_action
            self.stats.reject("low_confidence")
            self._warn(
                "low_confidence",
                f"{name}: low confidence ({why}); "
                + ("not published" if action == "drop" else "publishing the coarse pose")
                + " (parameters confidence_threshold, low_confidence_action)",
            )
            if decision == "coarse":
                out.append((name, r.class_id, r.T_cam_obj_init, r.score))
                published.append(_Tracked(name, r.class_id, r.T_cam_obj_init, r.score))
        update_track(published)
        self.stats.count("objects.refined", len(results))
        self._finish_frame(header, out, results, t_recv, image, K, shown, covariances)

    def _finish_frame(self, header, out, results, t_recv, image, K, shown,
                      covariances=None) -> None:
        """Publish ``out`` (name, class_id, T, score) with ``covariances`` (name -> (6, 6)
        or None), count it, time the frame, and draw the debug image of ``shown``
        (``render.overlay.OverlayObject``) while someone subscribes."""
        self._publish(header, out, covariances)
        self.stats.count("objects.published", len(out))
        ms = results[0].timing_ms.get("total") if results else None
        self.stats.frame_done(1e3 * (time.monotonic() - t_recv), ms)
        if self.pub_debug.get_subscription_count() > 0:
            self._publish_debug(header, image, K, shown)

    def _publish(self, header, out, covariances=None) -> None:
        p = self.params
        dets = []
        for name, cid, T, score in out:
            m = self.registry[cid]
            cov = None if covariances is None else covariances.get(name)
            dets.append(
                conv.make_detection(header, cid, T, score, m.bbox_min_m, m.bbox_max_m, name,
                                    cov)
            )
        self.pub_dets.publish(conv.make_detection_array(header, dets))
        self.pub_poses.publish(conv.make_pose_array(header, [o[2] for o in out]))
        if self.pub_markers.get_subscription_count() > 0:  # for RViz (ros.markers)
            markers = self._markers.update(header, out)
            if markers is not None:
                self.pub_markers.publish(markers)
        else:
            self._markers.reset()
        candidates = [o for o in out if not p.target_class_id or o[1] == p.target_class_id]
        if candidates:
            best = max(candidates, key=lambda o: o[3])
            self.pub_pose.publish(conv.make_pose_stamped(header, best[2]))
        if p.publish_tf and out:
            stamp = stamp_to_ns(header.stamp.sec, header.stamp.nanosec)
            if stamp <= self._last_tf_stamp_ns:
                return  # TF must not go back or repeat a stamp (tf2 warns TF_REPEATED_DATA)
            self._last_tf_stamp_ns = stamp
            tfs = [conv.make_transform_stamped(header, name, T) for name, _, T, _ in out]
            if self._tf_broadcaster is not None:
                self._tf_broadcaster.sendTransform(tfs)
            else:
                self.pub_tf.publish(TFMessage(transforms=tfs))

    def _publish_debug(self, header, image, K, shown) -> None:
        from ..render.overlay import draw_overlay

        out = draw_overlay(image, self.refiner.renderer, self.refiner.render_mesh, K, shown)
        self.pub_debug.publish(conv.rgb_to_image(out, header))
