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

The subscription callbacks are in ``ros.input_callbacks``; what the worker does with a
frame is in ``ros.processing``; ``ros.lifecycle`` has the managed (lifecycle) variant of
this node, built from the same :class:`RefinerCore`.
"""

from __future__ import annotations

import threading
import time

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

from .compressed import compressed_topic
from .diagnostics import NodeStats, to_diagnostic_array
from .input_callbacks import InputCallbacks
from .markers import MarkerState
from .params import NodeParams, declare, validate
from .processing import FrameProcessing
from .publish_rules import tf_frame_name
from .stamps import StampGuard, StampsMixin
from .startup import StartupError, load_refiner
from .sync import FrameSynchronizer, WorkQueue, match_window_ns
from .target_class import check_target
from .tracking import TrackingMixin

__all__ = ["RefinerCore", "RefinerNode", "StartupError", "tf_frame_name"]

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


class RefinerCore(InputCallbacks, FrameProcessing, TrackingMixin, StampsMixin):
    """Everything of the node but its life cycle: loading, publishers, subscriptions, the
    worker thread, callbacks. A mixin of :class:`RefinerNode` (all at construction) and
    ``ros.lifecycle.ManagedRefinerNode`` (step by step, per transition); the final class
    is an ``rclpy`` node. ``self.params`` must be declared before :meth:`_load`."""

    _loaded = False  # _load() done, _release() not since

    def _declare(self) -> None:
        try:
            self.params: NodeParams = declare(self)
        except ValueError as e:
            raise StartupError(str(e)) from None

    def _load(self) -> None:
        """Load the objects, refiner and model that ``self.params`` name, and make the
        frame state. Raises StartupError (nothing kept)."""
        loaded = load_refiner(self.params, self.get_logger())
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
        self._worker = None
        self._subscriptions_made = []
        self._stamps = StampGuard()
        self._camera = None  # (key, CameraModel)
        self._track = None  # processing._Track
        self._tracker = None  # track.Tracker, once its contour models are built
        self._tracker_building = False
        self._rereg = None  # the background re-registration in flight (ros.tracking)
        self._background = None  # ros.reregistration.BackgroundRefiner, with the tracker
        # Background re-registrations pause after skipped frames (ros.tracking): (monotonic
        # time before which none starts, the pause in s, no frame skipped since the last).
        self._rereg_pause = (0.0, 0.0, True)
        self._busy_seen = 0  # frames the worker skipped, when a re-registration last went
        self._track_frames = 0
        self._last_tf_stamp_ns = -1
        self._rebuild = False
        self._warned: dict = {}
        self._markers = MarkerState(self.registry.__getitem__)
        self._loaded = True

    def _release(self) -> None:
        """Drop what :meth:`_load` loaded (meshes, model, buffered frames)."""
        self._loaded = False
        self._close_background()
        self.registry = self.refiner = self._tracker = self._track = self._markers = None
        self._sync = self._camera = None

    def _create_outputs(self, create_publisher) -> None:
        """The result publishers, made with ``create_publisher`` (a node's plain or
        lifecycle one). ``/diagnostics`` and its timer are made apart
        (:meth:`_create_diagnostics`): they report in every state."""
        self.pub_pose = create_publisher(PoseStamped, "refined_pose", OUTPUT_QOS)
        self.pub_dets = create_publisher(Detection3DArray, "refined_detections", OUTPUT_QOS)
        self.pub_poses = create_publisher(PoseArray, "refined_poses", OUTPUT_QOS)
        self.pub_lost = create_publisher(Detection3DArray, "tracking_lost", OUTPUT_QOS)
        self.pub_debug = create_publisher(Image, "debug_image", OUTPUT_QOS)
        self.pub_markers = create_publisher(MarkerArray, "markers", OUTPUT_QOS)
        self.pub_tf = create_publisher(TFMessage, "/tf", TF_QOS)
        self._tf_broadcaster = None
        self._outputs = [self.pub_pose, self.pub_dets, self.pub_poses, self.pub_lost,
                         self.pub_debug, self.pub_markers, self.pub_tf]

    def _create_diagnostics(self) -> None:
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._diag_timer = self.create_timer(
            self.params.diagnostics_period_s, self._publish_diagnostics)

    def _create_inputs(self) -> None:
        """Subscribe to the inputs (remembered for :meth:`_destroy_inputs`)."""
        p = self.params
        subs = self._subscriptions_made = []
        if p.image_transport == "compressed":  # image_transport's name for it
            self._image_topic = compressed_topic(self)
            subs.append(self.create_subscription(
                CompressedImage, self._image_topic, self._on_image, qos_profile_sensor_data
            ))
        else:
            subs.append(self.create_subscription(Image, "image", self._on_image,
                                                 qos_profile_sensor_data))
            self._image_topic = self.resolve_topic_name("image")
        subs.append(self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data
        ))
        subs.append(self.create_subscription(
            Detection3DArray, "detections", self._on_detections, INPUT_QOS))
        subs.append(self.create_subscription(
            PoseStamped, "coarse_pose", self._on_coarse_pose, INPUT_QOS))
        if p.use_depth:
            subs.append(self.create_subscription(
                Image, "depth", self._on_depth, qos_profile_sensor_data))

    def _destroy_inputs(self) -> None:
        for sub in self._subscriptions_made:
            self.destroy_subscription(sub)
        self._subscriptions_made = []

    def _start_worker(self) -> None:
        if self._work.closed:
            self._work = WorkQueue()
        self._worker = threading.Thread(
            target=self._work_loop, args=(self._work,), name="refiner_worker", daemon=True)
        self._worker.start()
        if self.params.tracking:
            self._start_tracker()

    def _stop_worker(self) -> None:
        """Close the work queue and wait for the frame in hand to be published."""
        work = getattr(self, "_work", None)
        if work is not None:
            work.close()
        worker = getattr(self, "_worker", None)
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=10.0)
        self._worker = None

    def _ready_line(self) -> str:
        p = self.params
        return (
            f"mode {self.mode} on {self.refiner.device}, "
            f"{len(self.registry.class_ids)} object(s) from {self._objects_file}"
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
        if not self._loaded:  # a managed node not configured: read at configure
            self.get_logger().info(f"parameters changed: {values}")
            return SetParametersResult(successful=True)
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
        bg = getattr(self, "_background", None)  # none before a lifecycle configure
        if bg is not None:  # the background re-registration process (ros.tracking)
            bg.ready()
            self.stats.info["reregistration"] = bg.state
        snap = self.stats.snapshot()
        self.pub_diag.publish(
            to_diagnostic_array(
                snap, self.get_clock().now().to_msg(), self.get_fully_qualified_name()
            )
        )


class RefinerNode(RefinerCore, Node):
    """Refines the coarse poses of ``detections`` (or ``coarse_pose``) on ``image``:
    loads, subscribes and publishes from construction on (``ros.lifecycle`` has the
    managed variant).

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
            self._declare()
            self._load()
        except BaseException:
            self.destroy_node()
            raise
        self._create_outputs(self.create_publisher)
        try:  # a sourced ROS 2 distribution has tf2_ros
            from tf2_ros import TransformBroadcaster

            self.destroy_publisher(self.pub_tf)
            self.pub_tf = None
            self._tf_broadcaster = TransformBroadcaster(self)
        except ImportError:  # the project venv has only tf2_msgs: publish /tf ourselves
            pass
        self._create_diagnostics()
        self._create_inputs()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._watch_clock()
        self._start_worker()
        self.get_logger().info(f"ready: {self._ready_line()}")

    def destroy_node(self) -> None:
        self._stop_worker()
        self._close_background()
        super().destroy_node()
