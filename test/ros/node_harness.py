"""Drive a running ``refiner_node`` process over the real middleware (for the node tests).

:func:`start_node` starts the node executable exactly as ``launch/refiner.launch.py``
does (``--params-file config/refiner.yaml``, a node name, a namespace, parameter
overrides and input remappings); :class:`Peer` is the test's own ROS node, in the test
process: it publishes inputs and records every output by stamp.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
import subprocess
import threading
import time

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = ROOT / "config" / "refiner.yaml"
FRAME_ID = "test_camera_optical_frame"
CLASSES = ("mug", "compound", "lshape", "box")


def node_command(namespace: str, overrides: dict, remap: dict | None = None) -> list:
    """``refiner_node --ros-args ...`` as the launch file builds it (the demo's builder)."""
    from pose_refiner_ros.ros.node_process import node_launch_command

    return node_launch_command(PARAMS_FILE, namespace, overrides, remap)


def start_node(namespace: str, overrides: dict, env: dict, log_path: Path, remap=None):
    log = open(log_path, "w")
    return subprocess.Popen(
        node_command(namespace, overrides, remap),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )


def stop_node(proc, timeout: float = 15.0) -> int:
    from pose_refiner_ros.ros.node_process import stop_node as stop

    return stop(proc, timeout)


def run_node(args: list, timeout: float = 60.0, until: str | None = None,
             params_file: Path | None = PARAMS_FILE, env: dict | None = None):
    """Start the node like the launch file (``--params-file`` unless ``params_file`` is
    None), with ``args`` after it; return (exit code, or None while it still ran; exit
    code after stopping it; its output). With ``until``, stop it (SIGINT) once its
    output contains that text, else after ``timeout`` s."""
    from pose_refiner_ros.ros.node_process import node_command as executable

    files = ["--params-file", str(params_file)] if params_file is not None else []
    return run_command(executable() + ["--ros-args", "-r", "__node:=pose_refiner", *files, *args],
                       timeout, until, env)


def run_command(cmd: list, timeout: float = 60.0, until: str | None = None,
                env: dict | None = None):
    """Run the node command ``cmd`` as :func:`run_node` does; same return value."""
    import tempfile

    from ros_helpers import require_ros

    require_ros()
    env = env_for_ros() if env is None else env
    fd, name = tempfile.mkstemp(prefix="refiner_node_", suffix=".log")
    os.close(fd)
    log = Path(name)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if until and until in log.read_text():
                break
            time.sleep(0.2)
        code = proc.poll()
        code_after = stop_node(proc) if code is None else code
    text = log.read_text()
    log.unlink()
    return code, code_after, text


def header(stamp_ns: int, frame_id: str = FRAME_ID):
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return h


class Peer:
    """The test's ROS node: publishers of the node's inputs, recorders of its outputs."""

    def __init__(self, context, namespace: str):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseArray, PoseStamped
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from tf2_msgs.msg import TFMessage
        from vision_msgs.msg import Detection3DArray

        self.ns = f"/{namespace}"
        self.node = rclpy.create_node(f"test_peer_{namespace}", context=context)
        q = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        n = self.node
        from rclpy.qos import qos_profile_sensor_data as sensor

        self.pub = {
            "image": n.create_publisher(Image, f"{self.ns}/image", sensor),
            "image_compressed": n.create_publisher(
                CompressedImage, f"{self.ns}/image/compressed", sensor
            ),
            "camera_info": n.create_publisher(CameraInfo, f"{self.ns}/camera_info", sensor),
            "detections": n.create_publisher(Detection3DArray, f"{self.ns}/detections", q),
            "depth": n.create_publisher(Image, f"{self.ns}/depth", sensor),
            "coarse_pose": n.create_publisher(PoseStamped, f"{self.ns}/coarse_pose", q),
        }
        self.lock = threading.Lock()
        self.outputs: dict = {}  # kind -> {stamp_ns: [msgs]}
        self.diagnostics = None
        self.diagnostics_history: list = []  # (monotonic arrival, level, message, values)
        for kind, typ, topic in (
            ("pose", PoseStamped, "refined_pose"),
            ("detections", Detection3DArray, "refined_detections"),
            ("poses", PoseArray, "refined_poses"),
            ("lost", Detection3DArray, "tracking_lost"),
        ):
            n.create_subscription(typ, f"{self.ns}/{topic}", self._recorder(kind), q)
        n.create_subscription(TFMessage, "/tf", self._on_tf, QoSProfile(depth=100))
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, q)
        self._debug_sub = None
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(n)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    def _recorder(self, kind):
        def cb(msg):
            s = msg.header.stamp
            with self.lock:
                self.outputs.setdefault(kind, {}).setdefault(s.sec * 10**9 + s.nanosec, []).append(
                    msg
                )

        return cb

    def _on_tf(self, msg):
        with self.lock:
            for t in msg.transforms:
                s = t.header.stamp
                self.outputs.setdefault("tf", {}).setdefault(s.sec * 10**9 + s.nanosec, []).append(
                    t
                )

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name == f"pose_refiner: {self.ns}/pose_refiner":
                values = {kv.key: kv.value for kv in st.values}
                with self.lock:
                    self.diagnostics = values
                    self.diagnostics_history.append(
                        (time.monotonic(), st.level[0], st.message, values))

    def subscribe_debug(self):
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import Image

        self._debug_sub = self.node.create_subscription(
            Image, f"{self.ns}/debug_image", self._recorder("debug"), QoSProfile(depth=5)
        )

    def unsubscribe_debug(self):
        if self._debug_sub is not None:
            self.node.destroy_subscription(self._debug_sub)
            self._debug_sub = None

    def subscribe_markers(self):
        """Record ``markers`` (``MarkerArray``, which has no header) by the stamp of its
        first marker."""
        from rclpy.qos import QoSProfile
        from visualization_msgs.msg import MarkerArray

        def cb(msg):
            if msg.markers:
                s = msg.markers[0].header.stamp
                with self.lock:
                    self.outputs.setdefault("markers", {}).setdefault(
                        s.sec * 10**9 + s.nanosec, []).append(msg)

        self._markers_sub = self.node.create_subscription(
            MarkerArray, f"{self.ns}/markers", cb, QoSProfile(depth=10))

    def unsubscribe_markers(self):
        if getattr(self, "_markers_sub", None) is not None:
            self.node.destroy_subscription(self._markers_sub)
            self._markers_sub = None

    def wait_connected(self, proc, timeout: float = 90.0, depth: bool = False,
                       image: str = "image") -> None:
        """Until the node subscribes to our inputs (``image``: the key in ``pub`` of the
        image input it takes) and publishes its outputs."""
        needed = [image, "camera_info", "detections", "coarse_pose"] + (
            ["depth"] if depth else []
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the node exited with code {proc.returncode}")
            if (
                all(self.pub[k].get_subscription_count() > 0 for k in needed)
                and self.node.count_publishers(f"{self.ns}/refined_detections") > 0
                and self.diagnostics is not None
            ):
                return
            time.sleep(0.1)
        raise TimeoutError("the node did not come up")

    # -- inputs ----------------------------------------------------------------------------
    def send_camera_info(self, K, width, height, stamp_ns=0, frame_id=FRAME_ID):
        from pose_refiner_ros.ros import conversions as conv

        self.pub["camera_info"].publish(
            conv.make_camera_info(K, width, height, header(stamp_ns, frame_id))
        )

    def send_frame(self, stamp_ns, image_rgb, K, objects, depth_m=None, frame_id=FRAME_ID,
                   compression=None, detections_stamp_ns=None):
        """camera_info, image (rgb8, or on ``image/compressed`` as ``compression``: jpeg or
        png), detections of ``(class_id, T_cam_obj, score)`` (stamped
        ``detections_stamp_ns``, default the image's), depth."""
        from pose_refiner_ros.ros import conversions as conv
        from pose_refiner_ros.ros.compressed import compressed_image_msg

        h = header(stamp_ns, frame_id)
        H, W = image_rgb.shape[:2]
        self.pub["camera_info"].publish(conv.make_camera_info(K, W, H, h))
        if depth_m is not None:
            self.pub["depth"].publish(conv.depth_m_to_image(depth_m, h))
        if compression is None:
            self.pub["image"].publish(conv.rgb_to_image(image_rgb, h))
        else:
            self.pub["image_compressed"].publish(compressed_image_msg(image_rgb, h, compression))
        if objects is not None:
            hd = h if detections_stamp_ns is None else header(detections_stamp_ns, frame_id)
            self.pub["detections"].publish(conv.make_coarse_detections(hd, objects))

    # -- outputs ---------------------------------------------------------------------------
    def wait_for(self, kind: str, stamp_ns: int, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = self.outputs.get(kind, {}).get(stamp_ns)
            if got:
                return got
            time.sleep(0.01)
        raise TimeoutError(f"no {kind} output stamped {stamp_ns} within {timeout} s")

    def get(self, kind: str, stamp_ns: int) -> list:
        with self.lock:
            return list(self.outputs.get(kind, {}).get(stamp_ns, []))

    def diag(self, key: str, default=0.0) -> float:
        with self.lock:
            d = self.diagnostics or {}
        return float(d.get(key, default))

    def wait_diag(self, key: str, above: float, timeout: float = 20.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.diag(key)
            if v > above:
                return v
            time.sleep(0.05)
        raise TimeoutError(
            f"diagnostics {key} did not exceed {above} within {timeout} s "
            f"(last: {self.diagnostics})"
        )

    def set_parameters(self, **values) -> None:
        """Set parameters of the node through its set_parameters service."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        client = self.node.create_client(SetParameters, f"{self.ns}/pose_refiner/set_parameters")
        try:
            assert client.wait_for_service(timeout_sec=20.0), "set_parameters service not available"
            req = SetParameters.Request()
            for name, v in values.items():
                pv = ParameterValue()
                if isinstance(v, bool):
                    pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, v
                elif isinstance(v, int):
                    pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, v
                elif isinstance(v, float):
                    pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, v
                else:
                    pv.type, pv.string_value = ParameterType.PARAMETER_STRING, str(v)
                req.parameters.append(Parameter(name=name, value=pv))
            future = client.call_async(req)
            deadline = time.monotonic() + 20.0
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert future.done(), "set_parameters timed out"
            self.last_set_results = [(r.successful, r.reason) for r in future.result().results]
        finally:
            self.node.destroy_client(client)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


def env_for_ros() -> dict:
    from ros_helpers import isolate_ros_env

    env = isolate_ros_env(dict(os.environ))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def use_ros_env(env: dict) -> dict:
    """Point this process's ROS variables (``ros.node_process.ENV_KEYS``) at ``env``
    (:func:`env_for_ros`), for the test's own peer nodes; returns what to hand
    :func:`restore_env` afterwards."""
    from pose_refiner_ros.ros.node_process import ENV_KEYS

    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    os.environ.update({k: env[k] for k in ENV_KEYS if k in env})
    return saved


def restore_env(saved: dict) -> None:
    """Undo :func:`use_ros_env`."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def errors(model, T_est, T_gt) -> tuple[float, float, float]:
    """(rotation deg, translation mm, ADD / diameter) of one estimate."""
    from pose_refiner_ros.ros.demo_scene import object_errors

    e = object_errors(model, T_est, T_gt)
    return e["rot_deg"], e["trans_mm"], e["add_d"]


def pose_of(msg) -> np.ndarray:
    from pose_refiner_ros.ros import conversions as conv

    return conv.pose_to_matrix(msg)


@contextlib.contextmanager
def running_node(prefix: str, overrides: dict, log: Path, image: str = "image"):
    """A ``refiner_node`` in a fresh namespace (``prefix`` + random) with ``overrides``,
    and a connected :class:`Peer` (``image``: as :meth:`Peer.wait_connected`); yields
    ``(proc, peer)``. On leaving, stops both and asserts a clean exit (code 0)."""
    import uuid

    from ros_helpers import require_ros

    require_ros()
    import pytest
    import rclpy

    env = env_for_ros()
    saved = use_ros_env(env)
    namespace = f"{prefix}_{uuid.uuid4().hex[:8]}"
    proc = start_node(namespace, overrides, env, log)
    context = rclpy.Context()
    rclpy.init(context=context)
    peer = Peer(context, namespace)
    try:
        try:
            peer.wait_connected(proc, image=image)
        except (RuntimeError, TimeoutError) as e:
            pytest.fail(f"{e}; the node's log:\n{log.read_text()}")
        yield proc, peer
        assert proc.poll() is None, log.read_text()
    finally:
        peer.close()
        rclpy.try_shutdown(context=context)
        code = stop_node(proc)
        restore_env(saved)
    assert code == 0, log.read_text()
