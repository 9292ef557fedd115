"""Two ROS 2 processes exchange the package's message types over the real middleware.

The test process subscribes; a publisher runs in a separate process (this file, run as a
script with ``publish``), so the messages cross a process boundary through the RMW
(Fast DDS unless ``RMW_IMPLEMENTATION`` says otherwise). Each run uses its own domain
id, localhost-only discovery and topic names carrying a run-unique token, so concurrent
runs on one machine do not see each other.

Without rclpy or the message packages these tests are skipped, unless
``POSE_REFINER_REQUIRE_ROS=1`` (set by ``make test``), in which case they fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys
import time
import uuid

import pytest

_ROS_MODULES = ("rclpy", "geometry_msgs.msg", "tf2_msgs.msg", "vision_msgs.msg")
_REQUIRE_ROS = os.environ.get("POSE_REFINER_REQUIRE_ROS") == "1"

# RIHS01 type hashes of the upstream definitions (ros2/geometry2 tf2_msgs, identical on
# Jazzy and Rolling; ros-perception/vision_msgs 4.1.1, the Humble and Jazzy release).
# They are what real ROS 2 peers advertise; a field changed in
# scripts/ros_interfaces/ changes them. To regenerate, build the upstream packages
# with rosidl_generate_interfaces and read share/<pkg>/msg/<Type>.json.
# fmt: off
UPSTREAM_TYPE_HASHES = {
    "tf2_msgs/msg/TF2Error":
        "RIHS01_db2485e7d6a0ec75bf087e058ee45df682acc3a621ca7780503d10aac141809a",
    "tf2_msgs/msg/TFMessage":
        "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
    "vision_msgs/msg/BoundingBox2D":
        "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "vision_msgs/msg/BoundingBox2DArray":
        "RIHS01_2464e82838009386d371b523211c21c91d74d313fcdd6788223c531d621cf691",
    "vision_msgs/msg/BoundingBox3D":
        "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "vision_msgs/msg/BoundingBox3DArray":
        "RIHS01_a81938db9576b10c2eecd7c5a5da3eac496efd00221b25ed051dfbc81fb56da6",
    "vision_msgs/msg/Classification":
        "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
    "vision_msgs/msg/Detection2D":
        "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "vision_msgs/msg/Detection2DArray":
        "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "vision_msgs/msg/Detection3D":
        "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "vision_msgs/msg/Detection3DArray":
        "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "vision_msgs/msg/LabelInfo":
        "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "vision_msgs/msg/ObjectHypothesis":
        "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "vision_msgs/msg/Point2D":
        "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "vision_msgs/msg/Pose2D":
        "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "vision_msgs/msg/VisionClass":
        "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "vision_msgs/msg/VisionInfo":
        "RIHS01_95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
}
# fmt: on

STAMP = (1_700_000_000, 123_456_789)  # (sec, nanosec)
CAMERA_FRAME = "camera_color_optical_frame"
# (class_id, score, position xyz [m], orientation xyzw, bbox size [m])
OBJECTS = [
    ("obj_000005", 0.875, (0.125, -0.0625, 0.75), (0.0, 0.0, 0.6, 0.8), (0.1, 0.05, 0.2)),
    ("obj_000012", 0.5, (-0.25, 0.03125, 1.5), (0.5, 0.5, 0.5, 0.5), (0.2, 0.2, 0.3)),
]
# (parent frame, child frame, translation xyz [m], rotation xyzw)
TRANSFORMS = [
    ("world", "camera_link", (1.0, 2.0, 0.5), (0.0, 0.0, 0.0, 1.0)),
    ("camera_link", CAMERA_FRAME, (0.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5)),
]


def _ros_modules_or_skip():
    """Import what the tests need; skip (or fail under make test) when it is missing."""
    import importlib

    try:
        return [importlib.import_module(name) for name in _ROS_MODULES]
    except ImportError as exc:
        if _REQUIRE_ROS:
            raise
        pytest.skip(f"ROS 2 Python packages missing ({exc}); run `make test`")


def _names(token: str) -> tuple[str, str]:
    """Topic names (detections, tf) for the run identified by ``token``."""
    return f"/pose_refiner_test_{token}/detections", f"/pose_refiner_test_{token}/tf"


def build_detections(token: str):
    """The Detection3DArray the publisher sends; ``token`` goes into each detection id."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    msg = Detection3DArray()
    msg.header.stamp.sec, msg.header.stamp.nanosec = STAMP
    msg.header.frame_id = CAMERA_FRAME
    for i, (class_id, score, xyz, xyzw, size) in enumerate(OBJECTS):
        det = Detection3D()
        det.header = msg.header
        det.id = f"{token}/{i}"
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = class_id
        hyp.hypothesis.score = score
        p = hyp.pose.pose
        p.position.x, p.position.y, p.position.z = xyz
        p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = xyzw
        hyp.pose.covariance = [float(k) if k % 7 == 0 else 0.0 for k in range(36)]
        det.results.append(hyp)
        det.bbox.center = p
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = size
        msg.detections.append(det)
    return msg


def build_tf(token: str):
    """The TFMessage the publisher sends; ``token`` is appended to every child frame."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    msg = TFMessage()
    for parent, child, xyz, xyzw in TRANSFORMS:
        tf = TransformStamped()
        tf.header.stamp.sec, tf.header.stamp.nanosec = STAMP
        tf.header.frame_id = parent
        tf.child_frame_id = f"{child}_{token}"
        t, q = tf.transform.translation, tf.transform.rotation
        t.x, t.y, t.z = xyz
        q.x, q.y, q.z, q.w = xyzw
        msg.transforms.append(tf)
    return msg


def publish(token: str, duration_s: float) -> int:
    """Publisher process: sends both messages at 10 Hz for ``duration_s`` seconds."""
    import rclpy
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    det_topic, tf_topic = _names(token)
    rclpy.init()
    node = rclpy.create_node(f"peer_publisher_{token}")
    det_pub = node.create_publisher(Detection3DArray, det_topic, 10)
    tf_pub = node.create_publisher(TFMessage, tf_topic, 10)
    detections, transforms = build_detections(token), build_tf(token)
    deadline = time.monotonic() + duration_s
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            det_pub.publish(detections)
            tf_pub.publish(transforms)
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _ros_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Isolate this run: a domain id of its own and localhost-only discovery."""
    domain_id = 91 + os.getpid() % 10  # its share of 1..100 (test/ros/ros_helpers.domain_id)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # Iron and later
    if os.environ.get("ROS_DISTRO") == "humble":
        monkeypatch.setenv("ROS_LOCALHOST_ONLY", "1")
    return dict(os.environ)


def _assert_vector(actual, expected, fields="xyz"):
    assert tuple(getattr(actual, f) for f in fields) == tuple(expected)


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_detections_and_tf_cross_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    _ros_modules_or_skip()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.utilities import get_rmw_implementation_identifier
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    env = _ros_env(monkeypatch)
    token = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    det_topic, tf_topic = _names(token)
    publisher = subprocess.Popen(
        [sys.executable, __file__, "publish", token, "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    received: dict[str, object] = {}
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        assert get_rmw_implementation_identifier() == os.environ.get(
            "RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"
        )
        node = rclpy.create_node(f"peer_subscriber_{token}", context=context)
        node.create_subscription(
            Detection3DArray, det_topic, lambda m: received.setdefault("det", m), 10
        )
        node.create_subscription(TFMessage, tf_topic, lambda m: received.setdefault("tf", m), 10)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 45.0
        while len(received) < 2 and time.monotonic() < deadline:
            if publisher.poll() is not None:
                break
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        publisher.terminate()
        try:
            output, _ = publisher.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            publisher.kill()
            output, _ = publisher.communicate()

    assert set(received) == {"det", "tf"}, (
        f"received only {sorted(received)} within 45 s; publisher exit code "
        f"{publisher.returncode}, its output:\n{output}"
    )

    det = received["det"]
    assert det.header.frame_id == CAMERA_FRAME
    assert (det.header.stamp.sec, det.header.stamp.nanosec) == STAMP
    assert len(det.detections) == len(OBJECTS)
    for i, (d, obj) in enumerate(zip(det.detections, OBJECTS, strict=True)):
        class_id, score, xyz, xyzw, size = obj
        assert d.id == f"{token}/{i}"
        assert len(d.results) == 1
        hyp = d.results[0]
        assert hyp.hypothesis.class_id == class_id
        assert hyp.hypothesis.score == score
        _assert_vector(hyp.pose.pose.position, xyz)
        _assert_vector(hyp.pose.pose.orientation, xyzw, "xyzw")
        assert list(hyp.pose.covariance) == [float(k) if k % 7 == 0 else 0.0 for k in range(36)]
        _assert_vector(d.bbox.center.position, xyz)
        _assert_vector(d.bbox.size, size)

    tf = received["tf"]
    assert len(tf.transforms) == len(TRANSFORMS)
    for t, (parent, child, xyz, xyzw) in zip(tf.transforms, TRANSFORMS, strict=True):
        assert t.header.frame_id == parent
        assert t.child_frame_id == f"{child}_{token}"
        assert (t.header.stamp.sec, t.header.stamp.nanosec) == STAMP
        _assert_vector(t.transform.translation, xyz)
        _assert_vector(t.transform.rotation, xyzw, "xyzw")


@pytest.mark.ros
def test_interface_definitions_match_upstream() -> None:
    """tf2_msgs and vision_msgs hash like the upstream packages (where hashes exist)."""
    _ros_modules_or_skip()
    from ament_index_python.packages import get_package_share_directory

    for type_name, expected in UPSTREAM_TYPE_HASHES.items():
        package, _, name = type_name.split("/")
        path = Path(get_package_share_directory(package)) / "msg" / f"{name}.json"
        if not path.exists():  # Humble predates type hashes
            pytest.skip(f"{path} missing: this ROS 2 has no type hashes")
        type_hashes = json.loads(path.read_text())["type_hashes"]
        hashes = {h["type_name"]: h["hash_string"] for h in type_hashes}
        assert hashes[type_name] == expected, f"{type_name} differs from upstream ({path})"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "publish":
        sys.exit(publish(sys.argv[2], float(sys.argv[3])))
    sys.exit(f"usage: {sys.argv[0]} publish TOKEN DURATION_S")
