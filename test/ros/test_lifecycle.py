"""refiner_lifecycle_node, the managed node, over the real middleware.

Started from refiner.launch.py with ``lifecycle:=true`` (evaluated by the launch
stand-in, see test_launch.py), at its cheapest (mode flow, one iteration, every object
published), and driven through its lifecycle services (``<node>/change_state``,
``<node>/get_state``) by the test's own ROS node, which feeds frames at every state:
nothing is published before ``activate`` or after ``deactivate``; ``cleanup`` destroys
the publishers, and a second ``configure`` / ``activate`` works again.
"""

from __future__ import annotations

from pathlib import Path
import subprocess
import time
import uuid

import launched
import node_harness as nh
import pytest
import yaml

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CHEAP = {"mode": "flow", "iterations": 1, "crop_size": 64, "confidence_threshold": 0.0,
         "low_confidence_action": "publish_coarse", "diagnostics_period_s": 0.2}
T0 = 1_960_000_000 * 10**9


def test_lifecycle_argument_selects_the_managed_executable(tmp_path):
    (plain,), _ = launched.launch("refiner.launch.py", {}, tmp_path)
    (managed,), _ = launched.launch("refiner.launch.py", {"lifecycle": "true"}, tmp_path)
    assert (plain.executable, plain.lifecycle) == ("refiner_node", False)
    assert (managed.executable, managed.lifecycle) == ("refiner_lifecycle_node", True)
    # the same node otherwise: name, namespace, params file, overrides, remappings
    assert (managed.fqn, managed.params_files[0], managed.parameters, managed.remappings) == (
        plain.fqn, plain.params_files[0], plain.parameters, plain.remappings)
    assert "refiner_lifecycle_node = pose_refiner_ros.ros.node_main:main_managed" in (
        ROOT / "setup.py").read_text()
    with pytest.raises(RuntimeError, match="not valid"):
        launched.launch("refiner.launch.py", {"lifecycle": "yes"}, tmp_path)


class _Lifecycle:
    """Client of a node's lifecycle services, on the peer's node."""

    def __init__(self, peer, fqn: str):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.change = peer.node.create_client(ChangeState, f"{fqn}/change_state")
        self.get = peer.node.create_client(GetState, f"{fqn}/get_state")

    @staticmethod
    def _call(client, request, timeout=60.0):
        assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name} not available"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), f"{client.srv_name} did not answer"
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, label: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {"configure": Transition.TRANSITION_CONFIGURE,
               "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE,
               "cleanup": Transition.TRANSITION_CLEANUP}
        return self._call(self.change, ChangeState.Request(
            transition=Transition(id=ids[label]))).success


def _wait(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_managed_node_publishes_only_while_active(tmp_path):
    from ros_helpers import require_ros

    require_ros()
    import rclpy

    from pose_refiner_ros.mesh.registry import ObjectRegistry
    from pose_refiner_ros.ros.demo_scene import make_recording
    from pose_refiner_ros.ros.node_process import stop_node

    doc = yaml.safe_load((ROOT / "config" / "refiner.yaml").read_text())
    doc["/**"]["ros__parameters"].update(CHEAP)
    params = tmp_path / "cheap.yaml"
    params.write_text(yaml.safe_dump(doc))
    ns = f"lc_{uuid.uuid4().hex[:8]}"
    (node,), _ = launched.launch("refiner.launch.py", {
        "lifecycle": "true", "namespace": ns, "params_file": str(params)}, tmp_path)
    frame = make_recording(
        ObjectRegistry.from_yaml(ROOT / "models" / "demo" / "objects.yaml"), 1, seed=3)[0]
    coarse = [(cid, T_init, 1.0) for cid, _, T_init in frame.objects[:1]]
    env = nh.env_for_ros()
    saved = nh.use_ros_env(env)
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(launched.command(node), env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    peer = nh.Peer(context, ns)
    lc = _Lifecycle(peer, node.fqn)
    n = [0]

    def send():  # a new frame; its stamp
        n[0] += 1
        stamp = T0 + n[0] * 10**8
        peer.send_frame(stamp, frame.image_rgb, frame.K, coarse)
        return stamp

    def subscribed() -> bool:
        return all(peer.pub[k].get_subscription_count() > 0
                   for k in ("image", "camera_info", "detections"))

    def published_after(stamps, wait_s=2.0) -> list:
        time.sleep(wait_s)
        return [s for s in stamps if peer.get("detections", s)]

    def activate_and_get_a_result():
        assert lc.transition("activate") and lc.state() == "active"
        _wait(subscribed, "the node's subscriptions")
        deadline = time.monotonic() + 60
        while True:  # the first frames may race discovery: send until one is answered
            stamp = send()
            try:
                return peer.wait_for("detections", stamp, timeout=2.0)
            except TimeoutError:
                assert time.monotonic() < deadline, log.read_text()

    try:
        assert lc.state() == "unconfigured", log.read_text()
        dets = f"/{ns}/refined_detections"
        assert peer.node.count_publishers(dets) == 0 and not subscribed()

        assert lc.transition("configure") and lc.state() == "inactive", log.read_text()
        _wait(lambda: peer.node.count_publishers(dets) > 0, "the node's publishers")
        assert not subscribed()
        assert published_after([send(), send()]) == []  # configured, not active

        result = activate_and_get_a_result()
        assert len(result[-1].detections) == 1

        assert lc.transition("deactivate") and lc.state() == "inactive"
        _wait(lambda: not subscribed(), "the subscriptions to go")
        assert published_after([send(), send()]) == []  # deactivated

        assert lc.transition("cleanup") and lc.state() == "unconfigured"
        _wait(lambda: peer.node.count_publishers(dets) == 0, "the publishers to go")

        assert lc.transition("configure") and lc.state() == "inactive", log.read_text()
        activate_and_get_a_result()  # reloaded and running again
        assert proc.poll() is None, log.read_text()
    finally:
        peer.close()
        rclpy.try_shutdown(context=context)
        code = stop_node(proc)
        nh.restore_env(saved)
    assert code == 0, log.read_text()
