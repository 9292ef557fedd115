"""refiner_node and time, over the real middleware: duplicated and backwards stamps, a
bag that loops (by its stamps, and by a ``use_sim_time`` clock that jumps back), and
``/diagnostics`` while a fast feed saturates the refiner (README, "Behaviour", Time).

One node process, ``use_sim_time:=true``; this test process publishes ``/clock`` (wall
time from an arbitrary origin, until a test sends it back) and the frames.
"""

from __future__ import annotations

import os
from pathlib import Path
import threading
import time
import uuid

import node_harness as nh
import numpy as np
import pytest
from ros_helpers import require_ros

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(180)]

MODEL = Path(os.environ.get("POSE_REFINER_TEST_MODEL", nh.ROOT / "models" / "refiner.pt"))
MODE = "learned" if MODEL.is_file() else "flow"
S = 10**9
T0 = 1_800_000_000 * S


class SimClock:
    """Publishes ``/clock`` at 100 Hz: ``origin + wall time elapsed``; :meth:`back`
    sends it back, as ``ros2 bag play --loop --clock`` does at the end of the bag."""

    def __init__(self, node, origin_ns: int):
        from rosgraph_msgs.msg import Clock

        self._msg = Clock
        self._pub = node.create_publisher(Clock, "/clock", 10)
        self._origin, self._t0 = origin_ns, time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_ns(self) -> int:
        return self._origin + int((time.monotonic() - self._t0) * S)

    def back(self, by_ns: int) -> None:
        self._origin -= by_ns

    def _run(self):
        while not self._stop.is_set():
            msg = self._msg()
            msg.clock.sec, msg.clock.nanosec = divmod(self.now_ns(), S)
            self._pub.publish(msg)
            time.sleep(0.01)

    def stop(self):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    require_ros()
    import rclpy

    from pose_refiner_ros.mesh.registry import ObjectRegistry
    from pose_refiner_ros.ros.demo_scene import make_recording

    env = nh.env_for_ros()
    saved = nh.use_ros_env(env)
    log = tmp_path_factory.mktemp("node_logs") / "time.log"
    ns = f"time_{uuid.uuid4().hex[:8]}"
    proc = nh.start_node(ns, {
        "mode": MODE, "model_path": str(MODEL), "use_sim_time": "true",
        "diagnostics_period_s": 0.25, "low_confidence_action": "publish_coarse",
    }, env, log)
    registry = ObjectRegistry.from_yaml(nh.ROOT / "models" / "demo" / "objects.yaml")
    frame = make_recording(registry, 1, seed=7)[0]
    cid, _, T_init = frame.objects[0]
    # a quarter-size image of one object: cheap to send at 30 Hz
    K = np.diag([0.25, 0.25, 1.0]) @ frame.K
    image = np.ascontiguousarray(frame.image_rgb[::4, ::4])
    context = rclpy.Context()
    rclpy.init(context=context)
    peer = nh.Peer(context, ns)
    clock = SimClock(peer.node, 1_000 * S)
    try:
        try:
            peer.wait_connected(proc)
        except (RuntimeError, TimeoutError) as e:
            pytest.fail(f"{e}; its log:\n{log.read_text()}")

        def send(stamp_ns):
            peer.send_frame(stamp_ns, image, K, [(cid, T_init, 1.0)])

        yield {"peer": peer, "proc": proc, "log": log, "send": send, "clock": clock}
    finally:
        clock.stop()
        peer.close()
        rclpy.try_shutdown(context=context)
        code = nh.stop_node(proc)
        nh.restore_env(saved)
    assert code == 0, f"exit code {code}; log:\n{log.read_text()}"


def _log_has(node, text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in node["log"].read_text():
            return True
        time.sleep(0.05)
    return False


def test_duplicated_and_backwards_stamps_are_counted_warned_and_not_published(node):
    """A frame sent twice gives one refined_detections; a frame stamped before the
    newest gives none; both are counted and warned about, and the node goes on."""
    peer, send = node["peer"], node["send"]
    s1 = T0 + 1 * S
    send(s1)
    peer.wait_for("detections", s1)
    send(s1)  # image and detections again, same stamp
    peer.wait_diag("rejected.stamp_duplicate", 0, timeout=5)
    send(s1 - S // 20)  # 50 ms before the newest
    peer.wait_diag("rejected.stamp_backwards", 0, timeout=5)
    s2 = s1 + S // 10
    send(s2)
    peer.wait_for("detections", s2)  # the worker is past any frame of those
    assert len(peer.get("detections", s1)) == 1
    assert peer.get("detections", s1 - S // 20) == []
    assert _log_has(node, "skipped (stamp_duplicate)")
    assert _log_has(node, "skipped (stamp_backwards)")


def _pass(node, stamps):
    """Send frames one by one; the number of refined_detections and TF frames per stamp."""
    peer, send = node["peer"], node["send"]
    for s in stamps:
        n_det, n_tf = len(peer.get("detections", s)), len(peer.get("tf", s))
        send(s)
        deadline = time.monotonic() + 60
        while len(peer.get("detections", s)) == n_det or len(peer.get("tf", s)) == n_tf:
            assert time.monotonic() < deadline, (
                f"stamp {s}: refined_detections {len(peer.get('detections', s))} "
                f"(before {n_det}), TF {len(peer.get('tf', s))} (before {n_tf})")
            time.sleep(0.01)


def test_tf_resumes_when_the_stamps_start_over(node):
    """A bag played with --loop: the second pass's stamps repeat the first's, seconds
    back; TF resumes at once (it stayed silent before), with one line in the log."""
    peer = node["peer"]
    stamps = [T0 + 100 * S + k * S for k in range(3)]
    _pass(node, stamps)
    restarts = peer.diag("time.restarts")
    _pass(node, stamps)  # waits for TF on every frame of the second pass
    assert peer.wait_diag("time.restarts", restarts) == restarts + 1
    assert node["log"].read_text().count("time jumped back") == restarts + 1
    assert peer.diag("rejected.stamp_backwards") <= 1  # only the earlier test's


def test_tf_resumes_when_the_sim_clock_jumps_back(node):
    """use_sim_time and a short bag (0.2 s, less than the restart threshold): the jump
    of /clock back tells the node that the next older stamp starts a new pass."""
    peer, clock = node["peer"], node["clock"]
    stamps = [T0 + 200 * S + k * S // 10 for k in range(3)]
    _pass(node, stamps)
    restarts = peer.diag("time.restarts")
    clock.back(2 * S)
    time.sleep(0.3)  # /clock delivered: the node's clock has jumped back
    _pass(node, stamps)
    assert peer.wait_diag("time.restarts", restarts) == restarts + 1
    assert peer.diag("rejected.stamp_backwards") <= 1


def test_busy_refiner_at_30_hz_is_ok_in_diagnostics(node):
    """Frames skipped because the refiner is busy are normal: OK level, as a rate."""
    peer, send = node["peer"], node["send"]
    deadline = time.monotonic() + 10
    while not peer.diagnostics_history or peer.diagnostics_history[-1][1] != 0:
        assert time.monotonic() < deadline, f"never OK: {peer.diagnostics_history[-1]}"
        time.sleep(0.05)
    busy0, refined0 = peer.diag("dropped.busy_detect"), peer.diag("frames.refined")
    t_start = time.monotonic()
    for k in range(90):  # 3 s at 30 Hz
        send(T0 + 300 * S + k * S // 30)
        time.sleep(max(0.0, t_start + (k + 1) / 30 - time.monotonic()))
    t_end = time.monotonic()
    time.sleep(0.3)
    with peer.lock:  # the samples of periods wholly inside the feed
        samples = [h for h in peer.diagnostics_history if t_start + 0.6 < h[0] <= t_end]
    assert len(samples) >= 4, samples
    assert [(lvl, msg) for _, lvl, msg, _ in samples if lvl != 0] == []
    assert max(float(v["rate.skipped_busy_hz"]) for *_, v in samples) > 5
    assert peer.diag("dropped.busy_detect") - busy0 > 20
    assert peer.diag("frames.refined") - refined0 >= 3
    assert node["proc"].poll() is None
