"""Several cameras: one node per camera, from launch/cameras.launch.py (refiner.launch.py
included per camera) or from one refiner.launch.py line per camera.

Evaluated with the stand-in launch service (``launch_standin``, see test_launch.py);
then the two nodes of a two-camera launch run over the real middleware, each fed by its
own camera's topics, and a frame sent to one camera comes out of that camera's node
only, under its TF prefix.
"""

from __future__ import annotations

from pathlib import Path
import subprocess
import threading
import time

import launched
import pytest
import yaml

from pose_refiner_ros.ros.params import SPECS, validate

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "refiner.yaml"
INPUTS = ("image", "camera_info", "detections", "depth", "coarse_pose")


def _by_fqn(nodes) -> dict:
    return {n.fqn: n for n in nodes}


def test_two_cameras_are_two_nodes_with_their_own_names_topics_and_tf_frames(tmp_path):
    nodes, context = launched.launch("cameras.launch.py", {"cameras": "cam_left,cam_right"},
                                     tmp_path)
    assert not context.warnings, context.warnings
    nodes = _by_fqn(nodes)
    assert set(nodes) == {"/cam_left/pose_refiner", "/cam_right/pose_refiner"}
    for cam in ("cam_left", "cam_right"):
        n = nodes[f"/{cam}/pose_refiner"]
        assert (n.executable, n.namespace) == ("refiner_node", f"/{cam}")
        assert Path(n.params_files[0]).resolve() == CONFIG.resolve()
        assert dict(n.remappings) == {
            "image": f"/{cam}/color/image_raw",
            "camera_info": f"/{cam}/color/camera_info",
            "detections": f"/{cam}/detections",
            "depth": f"/{cam}/aligned_depth_to_color/image_raw",
            "coarse_pose": f"/{cam}/coarse_pose",
        }
        assert n.parameters == {"device": "auto", "use_sim_time": False,
                                "tf_prefix": f"{cam}/refined_"}
        for name, value in n.parameters.items():
            assert name == "use_sim_time" or (
                type(value) is type(SPECS[name].default) and validate(name, value) is None)
        # the overrides file names this node, so it cannot reach the other one
        written = yaml.safe_load(Path(n.params_files[1]).read_text())
        assert list(written) == [f"/{cam}/pose_refiner"]


def test_camera_topic_patterns_and_shared_arguments(tmp_path):
    params = tmp_path / "mine.yaml"
    params.write_text(CONFIG.read_text())
    nodes, _ = launched.launch("cameras.launch.py", {
        "cameras": "front, back", "image_pattern": "/{camera}/camera/color/image_raw",
        "device": "cpu", "use_sim_time": "true", "params_file": str(params)}, tmp_path)
    nodes = _by_fqn(nodes)
    assert set(nodes) == {"/front/pose_refiner", "/back/pose_refiner"}
    for cam in ("front", "back"):
        n = nodes[f"/{cam}/pose_refiner"]
        assert dict(n.remappings)["image"] == f"/{cam}/camera/color/image_raw"
        assert n.params_files[0] == str(params)
        assert n.parameters["device"] == "cpu" and n.parameters["use_sim_time"] is True


@pytest.mark.parametrize("cameras, match", [
    ("", "expected camera names"), ("left,left", "named twice"),
    ("left,2nd", "not a valid namespace"), ("a/b", "not a valid namespace")])
def test_bad_camera_lists_are_refused(tmp_path, cameras, match):
    with pytest.raises(ValueError, match=match):
        launched.launch("cameras.launch.py", {"cameras": cameras}, tmp_path)


def test_the_camera_list_is_required(tmp_path):
    with pytest.raises(RuntimeError, match='"cameras" was not provided'):
        launched.launch("cameras.launch.py", {}, tmp_path)


def test_two_launch_lines_of_refiner_launch_are_two_cameras(tmp_path):
    fqns = set()
    for cam in ("left", "right"):
        (n,), _ = launched.launch("refiner.launch.py", {
            "namespace": cam, "tf_prefix": f"{cam}/refined_",
            "image": f"/{cam}/color/image_raw", "camera_info": f"/{cam}/color/camera_info",
            "detections": f"/{cam}/detections"}, tmp_path)
        fqns.add(n.fqn)
        assert n.parameters["tf_prefix"] == f"{cam}/refined_"
        assert dict(n.remappings)["image"] == f"/{cam}/color/image_raw"
        assert dict(n.remappings)["depth"] == "depth"  # relative: /<cam>/depth
    assert fqns == {"/left/pose_refiner", "/right/pose_refiner"}
    (n,), _ = launched.launch("refiner.launch.py", {}, tmp_path)
    assert "tf_prefix" not in n.parameters  # not given: the params file's stays


# -- over the real middleware ----------------------------------------------------------------
CHEAP = {"mode": "flow", "iterations": 1, "crop_size": 64, "confidence_threshold": 0.0,
         "low_confidence_action": "publish_coarse"}


class _CameraPeer:
    """Publishes each camera's inputs on its own topics and records both nodes' outputs."""

    def __init__(self, context, cameras):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage
        from vision_msgs.msg import Detection3DArray

        self.node = n = rclpy.create_node("test_cameras_peer", context=context)
        q = QoSProfile(depth=10)
        self.pub = {c: {
            "image": n.create_publisher(Image, f"/{c}/color/image_raw", qos_profile_sensor_data),
            "camera_info": n.create_publisher(CameraInfo, f"/{c}/color/camera_info",
                                              qos_profile_sensor_data),
            "detections": n.create_publisher(Detection3DArray, f"/{c}/detections", q),
        } for c in cameras}
        self.lock = threading.Lock()
        self.got = {c: [] for c in cameras}
        self.tf = []
        for c in cameras:
            n.create_subscription(Detection3DArray, f"/{c}/refined_detections",
                                  lambda m, c=c: self._add(self.got[c], m), q)
        n.create_subscription(TFMessage, "/tf", lambda m: self._add(self.tf, m),
                              QoSProfile(depth=100))
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(n)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _add(self, where, msg):
        with self.lock:
            where.append(msg)

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for pubs in self.pub.values()
                   for p in pubs.values())

    def send(self, camera, stamp_ns, frame):
        import node_harness as nh

        from pose_refiner_ros.ros import conversions as conv

        h = nh.header(stamp_ns)
        H, W = frame.image_rgb.shape[:2]
        p = self.pub[camera]
        p["camera_info"].publish(conv.make_camera_info(frame.K, W, H, h))
        p["image"].publish(conv.rgb_to_image(frame.image_rgb, h))
        cid, _, T_init = frame.objects[0]
        p["detections"].publish(conv.make_coarse_detections(h, [(cid, T_init, 1.0)]))


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_camera_launch_runs_two_nodes_each_on_its_own_camera(tmp_path):
    from ros_helpers import require_ros

    require_ros()
    import node_harness as nh
    import rclpy

    from pose_refiner_ros.mesh.registry import ObjectRegistry
    from pose_refiner_ros.ros.demo_scene import make_recording
    from pose_refiner_ros.ros.node_process import stop_node

    doc = yaml.safe_load(CONFIG.read_text())
    doc["/**"]["ros__parameters"].update(CHEAP)
    params = tmp_path / "cheap.yaml"
    params.write_text(yaml.safe_dump(doc))
    cams = ("left", "right")
    nodes, _ = launched.launch("cameras.launch.py",
                               {"cameras": ",".join(cams), "params_file": str(params)}, tmp_path)
    env = nh.env_for_ros()
    saved = nh.use_ros_env(env)
    logs = {n.fqn: tmp_path / f"{n.namespace.strip('/')}.log" for n in nodes}
    procs = []
    for n in nodes:
        with open(logs[n.fqn], "w") as log:
            procs.append(subprocess.Popen(launched.command(n), env=env, stdout=log,
                                             stderr=subprocess.STDOUT, cwd=ROOT,
                                             start_new_session=True))
    context = rclpy.Context()
    rclpy.init(context=context)
    peer = _CameraPeer(context, cams)
    try:
        deadline = time.monotonic() + 120
        while not peer.connected() and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [f.read_text() for f in logs.values()]
            time.sleep(0.2)
        assert peer.connected(), [f.read_text() for f in logs.values()]
        frame = make_recording(
            ObjectRegistry.from_yaml(ROOT / "models" / "demo" / "objects.yaml"), 1, seed=5)[0]
        stamp = 1_950_000_000 * 10**9
        deadline = time.monotonic() + 60
        while not peer.got["left"] and time.monotonic() < deadline:
            peer.send("left", stamp, frame)  # repeated until the first one is through
            time.sleep(1.0)
            stamp += 10**8
        time.sleep(1.0)
        with peer.lock:
            left, right, tf = list(peer.got["left"]), list(peer.got["right"]), list(peer.tf)
        assert left and not right
        assert left[0].detections[0].id.startswith("left/refined_")
        children = {t.child_frame_id for m in tf for t in m.transforms}
        assert children and all(c.startswith("left/refined_") for c in children), children
    finally:
        peer.executor.shutdown()
        peer.node.destroy_node()
        rclpy.try_shutdown(context=context)
        codes = [stop_node(p) for p in procs]
        nh.restore_env(saved)
    assert codes == [0, 0], [f.read_text() for f in logs.values()]
