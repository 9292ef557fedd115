"""``refiner_lifecycle_node``: the refiner as a managed (lifecycle) node.

The same node as :class:`~pose_refiner_ros.ros.node.RefinerNode` (one
:class:`~pose_refiner_ros.ros.node.RefinerCore`), brought up step by step by a lifecycle
manager or ``ros2 lifecycle set`` through the standard services
(``<node>/change_state``, ``<node>/get_state``, ...):

- constructed (``unconfigured``): parameters declared and validated, nothing loaded,
  nothing published (parameters marked fixed are fixed from here on, as in the plain
  node);
- ``configure``: loads the objects YAML, meshes, model and contour models (a failure is
  logged with the file and the fix, and the node stays ``unconfigured``); creates the
  result publishers (lifecycle publishers: they publish only while active) and
  ``/diagnostics``, which reports in every state from here on;
- ``activate``: subscribes to the inputs and starts the worker;
- ``deactivate``: unsubscribes, waits for the frame in hand, drops what was buffered and
  tracked; nothing is published until the next ``activate``;
- ``cleanup``: destroys the publishers and releases meshes and model;
- ``shutdown`` (or SIGINT): as deactivate and cleanup, from any state.

``/tf`` is published by a lifecycle publisher of its own (never through tf2_ros's
broadcaster, which does not know the node's state).
"""

from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .node import RefinerCore, StartupError
from .sync import FrameSynchronizer, match_window_ns

__all__ = ["ManagedRefinerNode"]

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class ManagedRefinerNode(RefinerCore, LifecycleNode):
    """:class:`~pose_refiner_ros.ros.node.RefinerNode` as a lifecycle node (module
    docstring).

    Args:
        node_name: ROS node name.
        **kwargs: passed to ``rclpy.lifecycle.LifecycleNode``.

    Raises:
        StartupError: a parameter is invalid (loading fails at ``configure`` instead).
    """

    def __init__(self, node_name: str = "pose_refiner", **kwargs):
        super().__init__(node_name, **kwargs)
        try:
            self._declare()
        except BaseException:
            self.destroy_node()
            raise
        self._outputs = []
        self._diag_timer = None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info("unconfigured: configure loads the objects and the model, "
                               "activate subscribes to the inputs")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load()
        except StartupError as e:
            self.get_logger().error(f"cannot configure: {e}")
            return FAILURE
        self._create_outputs(self.create_lifecycle_publisher)
        self._create_diagnostics()
        if getattr(self, "_clock_jump_handle", None) is None:
            self._watch_clock()
        self.get_logger().info(
            f"configured: mode {self.mode} on {self.refiner.device}, "
            f"{len(self.registry.class_ids)} object(s) from {self._objects_file}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._start_worker()
        self._create_inputs()
        self.get_logger().info(f"active: {self._ready_line()}")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("inactive: inputs unsubscribed, nothing published")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        self.get_logger().info("unconfigured: objects and model released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._cleanup()
        return super().on_shutdown(state)

    def _deactivate(self) -> None:
        if not self._loaded:
            return
        self._destroy_inputs()
        self._stop_worker()  # the frame in hand is published (still active) or dropped
        p = self.params
        with self._sync_lock:  # nothing buffered survives into the next activation
            self._sync = FrameSynchronizer(
                match_window_ns(p.sync_mode, p.sync_tolerance_s, p.sync_slop_s),
                p.sync_queue_size, p.use_depth, p.sync_mode)
        self._track = None
        self._track_frames = 0

    def _cleanup(self) -> None:
        for pub in self._outputs:
            self.destroy_lifecycle_publisher(pub)
        self._outputs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self.destroy_publisher(self.pub_diag)
            self._diag_timer = None
        if self._loaded:
            self._release()

    def destroy_node(self) -> None:
        self._stop_worker()
        super().destroy_node()
