"""``refiner_node``: the ROS 2 node that refines coarse 6D object poses.

A thin layer over :class:`~pose_refiner_ros.refine.refiner.Refiner`: it converts
messages (``ros.conversions``; the colour image raw or compressed, checked by
``ros.frame_inputs``), matches inputs by stamp (``ros.sync``), refines on a worker
thread, publishes (RViz markers: ``ros.markers``), and counts everything
(``ros.diagnostics``). The interface (topics, QoS, parameters, TF names) is tabulated
in the README, "ROS interface".

Threads: the subscription callbacks (the executor's thread) only convert stamps and
buffer messages, so input keeps flowing while a frame is refined. Complete frames go to a
:class:`~pose_refiner_ros.ros.sync.WorkQueue` whose lanes hold one frame each: when
frames come faster than they are refined, the newest wins and the replaced one is
counted in ``/diagnostics`` (``dropped.busy_detect`` / ``dropped.busy_track``). One
worker thread takes frames (new detections before tracking) and publishes the results.

TF: each published object is a child of the image's frame named
``<tf_prefix><class_id>_<k>``: ``class_id`` with every character other than letters,
digits and ``_`` replaced by ``_``, and ``k = 0, 1, ...`` numbering the instances of that
class in the order of the detections message (tracking keeps the names of the frame
the track started from). E.g. ``refined_mug_0``, ``refined_mug_1``.

Time (``ros.stamps``): an image stamped like the newest so far, or up to a second
before it, is skipped and counted; one stamped more than a second before it (or before
it at all after the ROS clock jumped back) starts time over: a bag looped, and TF and
tracking resume.

Bad input (unknown class, NaN or zero-norm quaternion, all-zero ``K``, image size that
disagrees with the ``CameraInfo``, unsupported encoding, empty image, detections in
another frame, depth of the wrong size, ...) is warned about (throttled per reason),
skipped, and counted under ``rejected.<reason>``; the node carries on. A missing or
broken objects YAML, mesh or model stops the node at start-up with a message naming
the file and the fix. The executable's ``main`` is in ``ros.node_main``: it checks what
it can before rclpy (ROS packages, params files, parameter types), then runs this node.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import re
import threading
import time
import traceback

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from . import conversions as conv
from .compressed import compressed_topic
from .debug_image import debug_object
from .diagnostics import NodeStats, to_diagnostic_array
from .frame_inputs import frame_images
from .markers import MarkerState
from .params import NodeParams, declare, validate
from .stamps import StampGuard, StampsMixin
from .startup import StartupError, load_refiner
from .sync import FrameSynchronizer, MatchedFrame, WorkQueue, match_window_ns, stamp_to_ns
from .target_class import check_target
from .tracking import Tracked as _Tracked
from .tracking import TrackingMixin

#: Outputs: reliable (matches reliable and best-effort subscribers), keep last 10.
OUTPUT_QOS = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST
)
#: /tf as tf2_ros.TransformBroadcaster publishes it.
TF_QOS = QoSProfile(
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
    history=HistoryPolicy.KEEP_LAST,
)
#: Small non-image inputs: best effort (matches reliable and best-effort publishers).
INPUT_QOS = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST
)

WARN_PERIOD_S = 5.0


def tf_frame_name(prefix: str, class_id: str, k: int) -> str:
    """The TF child frame of instance ``k`` of ``class_id`` (see the module docstring)."""
    return f"{prefix}{re.sub(r'[^A-Za-z0-9_]', '_', class_id)}_{k}"


@dataclass(frozen=True)
class _Track:
    stamp_ns: int  # image stamp of the last refinement
    detection_stamp_ns: int  # image stamp of the last detections
    frame_id: str
    objects: tuple


class RefinerNode(TrackingMixin, StampsMixin, Node):
    """Refines the coarse poses of ``detections`` (or ``coarse_pose``) on ``image``.

    Args:
        node_name: ROS node name.
        **kwargs: passed to ``rclpy.node.Node`` (``parameter_overrides``, ``context``...).

    Raises:
        StartupError: the objects YAML, a mesh or the model cannot be loaded, or a
            parameter is invalid.
    """

    def __init__(self, node_name: str = "pose_refiner", **kwargs):
        super().__init__(node_name, **kwargs)
        try:
            try:
                self.params: NodeParams = declare(self)
            except ValueError as e:
                raise StartupError(str(e)) from None
            loaded = load_refiner(self.params, self.get_logger())
        except BaseException:
            self.destroy_node()
            raise
        self.registry, self.refiner, self.mode = loaded.registry, loaded.refiner, loaded.mode
        self._model_file, self._objects_file = loaded.model_file, loaded.objects_file
        p = self.params
        self.stats = NodeStats()
        self.stats.info.update(
            device=str(self.refiner.device),
            mode=self.mode,
            model=self._model_file or "(none: mode flow)",
            objects_yaml=self._objects_file,
        )
        check_target(self, p.target_class_id)
        self._sync_lock = threading.Lock()
        self._sync = FrameSynchronizer(
            match_window_ns(p.sync_mode, p.sync_tolerance_s, p.sync_slop_s),
            p.sync_queue_size, p.use_depth, p.sync_mode,
        )
        self._work = WorkQueue()
        self._stamps = StampGuard()
        self._camera = None  # (key, CameraModel)
        self._track: _Track | None = None
        self._tracker = None  # track.Tracker, once its contour models are built
        self._tracker_building = False
        self._track_frames = 0
        self._last_tf_stamp_ns = -1
        self._rebuild = False
        self._warned: dict = {}

        # publishers
        self.pub_pose = self.create_publisher(PoseStamped, "refined_pose", OUTPUT_QOS)
        self.pub_dets = self.create_publisher(Detection3DArray, "refined_detections", OUTPUT_QOS)
        self.pub_poses = self.create_publisher(PoseArray, "refined_poses", OUTPUT_QOS)
        self.pub_lost = self.create_publisher(Detection3DArray, "tracking_lost", OUTPUT_QOS)
        self.pub_debug = self.create_publisher(Image, "debug_image", OUTPUT_QOS)
        self.pub_markers = self.create_publisher(MarkerArray, "markers", OUTPUT_QOS)
        self._markers = MarkerState(self.registry.__getitem__)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._tf_broadcaster = None
        self.pub_tf = None
        try:  # a sourced ROS 2 distribution has tf2_ros
            from tf2_ros import TransformBroadcaster

            self._tf_broadcaster = TransformBroadcaster(self)
        except ImportError:  # the project venv has only tf2_msgs: publish /tf ourselves
            self.pub_tf = self.create_publisher(TFMessage, "/tf", TF_QOS)

        # subscriptions
        if p.image_transport == "compressed":  # image_transport's name for it
            self._image_topic = compressed_topic(self)
            self.create_subscription(
                CompressedImage, self._image_topic, self._on_image, qos_profile_sensor_data
            )
        else:
            self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data)
            self._image_topic = self.resolve_topic_name("image")
        self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data
        )
        self.create_subscription(Detection3DArray, "detections", self._on_detections, INPUT_QOS)
        self.create_subscription(PoseStamped, "coarse_pose", self._on_coarse_pose, INPUT_QOS)
        if p.use_depth:
            self.create_subscription(Image, "depth", self._on_depth, qos_profile_sensor_data)

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._watch_clock()
        self._diag_timer = self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work_loop, name="refiner_worker", daemon=True)
        self._worker.start()
        if p.tracking:
            self._start_tracker()
        self.get_logger().info(
            f"ready: mode {self.mode} on {self.refiner.device}, "
            f"{len(self.registry.class_ids)} object(s) "
            f"from {self._objects_file}"
            + (f", model {self._model_file}" if self._model_file else "")
            + f"; image {self._image_topic} ({p.image_transport})"
            + f"; tracking {'on' if p.tracking else 'off'}, depth {'on' if p.use_depth else 'off'}"
        )

    # -- helpers ---------------------------------------------------------------------------
    def _warn(self, reason: str, message: str) -> None:
        """Log a warning at most once per WARN_PERIOD_S per reason (counting the rest)."""
        now = time.monotonic()
        last, suppressed = self._warned.get(reason, (-1e9, 0))
        if now - last >= WARN_PERIOD_S:
            extra = (
                f" ({suppressed} more like this in the last {WARN_PERIOD_S:.0f} s)"
                if suppressed
                else ""
            )
            self.get_logger().warning(f"{message}{extra}")
            self._warned[reason] = (now, 0)
        else:
            self._warned[reason] = (last, suppressed + 1)

    def _reject(self, reason: str, message: str, n: int = 1) -> None:
        self.stats.reject(reason, n)
        self._warn(reason, f"skipped ({reason}): {message}")

    # -- callbacks (executor thread: keep them short) -------------------------------------
    def _on_camera_info(self, msg) -> None:
        self.stats.receive("camera_info")
        key = (
            msg.width,
            msg.height,
            tuple(msg.k),
            tuple(msg.d),
            msg.distortion_model,
            msg.binning_x,
            msg.binning_y,
            msg.roi.x_offset,
            msg.roi.y_offset,
            msg.roi.width,
            msg.roi.height,
            tuple(msg.p),
        )
        cam = self._camera
        if cam is not None and cam[0] == key:
            return
        try:
            self._camera = (key, conv.camera_info_to_model(msg))
        except Exception as e:  # ValueError, or anything odd: never let a callback raise
            self._reject("bad_camera_info", f"{e} (keeping the previous valid camera_info)")

    def _on_image(self, msg) -> None:
        self.stats.receive("image")
        stamp = stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)
        if not self._image_in_time(stamp):
            return
        with self._sync_lock:
            frame = self._sync.add_image(stamp, (msg, time.monotonic()))
        if frame is not None:
            self._submit(frame)
        elif self.params.tracking:
            # the worker decides when it takes the image whether a track exists (one may
            # be starting on the frame it is refining now)
            if self._work.put("track", stamp) and self._track is not None:
                self.stats.drop("busy_track")

    def _on_detections(self, msg) -> None:
        self.stats.receive("detections")
        self._add_detections(msg.header.stamp, ("detections", msg))

    def _on_coarse_pose(self, msg) -> None:
        self.stats.receive("coarse_pose")
        if not self.params.coarse_pose_class_id:
            self._reject(
                "coarse_pose_without_class",
                "a coarse_pose arrived but the parameter coarse_pose_class_id is empty; set it "
                "to the class id of the object the pose is of",
            )
            return
        self._add_detections(msg.header.stamp, ("coarse_pose", msg))

    def _add_detections(self, stamp, item) -> None:
        with self._sync_lock:
            frame = self._sync.add_detections(
                stamp_to_ns(stamp.sec, stamp.nanosec), (item, time.monotonic())
            )
        if frame is not None:
            self._submit(frame)

    def _on_depth(self, msg) -> None:
        self.stats.receive("depth")
        with self._sync_lock:
            frame = self._sync.add_depth(
                stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec), (msg, time.monotonic())
            )
        if frame is not None:
            self._submit(frame)

    def _submit(self, frame: MatchedFrame) -> None:
        if self._work.put("detect", frame):
            self.stats.drop("busy_detect")

    def _on_set_parameters(self, parameters):
        from rcl_interfaces.msg import SetParametersResult

        values = {}
        for prm in parameters:
            why = validate(prm.name, prm.value, running=True)
            if why:
                return SetParametersResult(successful=False, reason=why)
            if prm.name in NodeParams.__dataclass_fields__:
                v = prm.value
                values[prm.name] = (
                    float(v) if isinstance(getattr(self.params, prm.name), float) else v
                )
        if not values:
            return SetParametersResult(successful=True)
        old, new = self.params, self.params.with_values(values)
        self.params = new
        window = match_window_ns(new.sync_mode, new.sync_tolerance_s, new.sync_slop_s)
        with self._sync_lock:
            self._sync.set_tolerance(window, new.sync_mode)
        if (new.iterations, new.crop_size) != (old.iterations, old.crop_size):
            self._rebuild = True
        if "target_class_id" in values:
            check_target(self, new.target_class_id)
        if not new.tracking:
            self._track = None
        elif not old.tracking:
            self._start_tracker()
        self.get_logger().info(f"parameters changed: {values}")
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        with self._sync_lock:
            unmatched = dict(self._sync.unmatched)
        for name, n in unmatched.items():
            if n:
                self.stats.set_dropped(f"unmatched_{name}", n)
        snap = self.stats.snapshot()
        self.pub_diag.publish(
            to_diagnostic_array(
                snap, self.get_clock().now().to_msg(), self.get_fully_qualified_name()
            )
        )

    # -- the worker ------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while True:
            lane, item = self._work.take(timeout=0.5)
            if self._work.closed:
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
        shown = []  # the debug image's objects
        for name, r in zip(names, results, strict=True):
            confident = (not r.diverged) and r.score >= p.confidence_threshold
            shown.append(debug_object(r, confident, p.low_confidence_action))
            if confident:
                out.append((name, r.class_id, r.T_cam_obj, r.score))
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
            if action == "publish_coarse":
                out.append((name, r.class_id, r.T_cam_obj_init, r.score))
                published.append(_Tracked(name, r.class_id, r.T_cam_obj_init, r.score))
        update_track(published)
        self.stats.count("objects.refined", len(results))
        self._finish_frame(header, out, results, t_recv, image, K, shown)

    def _finish_frame(self, header, out, results, t_recv, image, K, shown) -> None:
        """Publish ``out`` (name, class_id, T, score), count it, time the frame, and draw
        the debug image of ``shown`` (``render.overlay.OverlayObject``) while someone
        subscribes."""
        self._publish(header, out)
        self.stats.count("objects.published", len(out))
        ms = results[0].timing_ms.get("total") if results else None
        self.stats.frame_done(1e3 * (time.monotonic() - t_recv), ms)
        if self.pub_debug.get_subscription_count() > 0:
            self._publish_debug(header, image, K, shown)

    def _publish(self, header, out) -> None:
        p = self.params
        dets = []
        for name, cid, T, score in out:
            m = self.registry[cid]
            dets.append(
                conv.make_detection(header, cid, T, score, m.bbox_min_m, m.bbox_max_m, name)
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

    # -- shutdown --------------------------------------------------------------------------
    def destroy_node(self) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            work.close()
            worker = getattr(self, "_worker", None)
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout=10.0)
        super().destroy_node()
