"""refiner_node's optional ways in and out, end to end over the real middleware.

One node process, started as the launch file starts it, with
``image_transport:=compressed`` (it takes ``image/compressed``, as image_transport names
it) and the training-free mode ``flow`` at its cheapest (one iteration, 64-pixel crops);
every object is published (``confidence_threshold`` 0, a diverged one with its coarse
pose), so that what is checked is the plumbing, not accuracy (that is test_node.py's
business). The test process is a separate ROS node (``node_harness.Peer``) that
publishes frames of the demo's synthetic recording.
"""

from __future__ import annotations

import time

import node_harness as nh
import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(300)]

T0 = 1_900_000_000 * 10**9
OVERRIDES = {
    "mode": "flow",
    "iterations": 1,
    "crop_size": 64,
    "confidence_threshold": 0.0,
    "low_confidence_action": "publish_coarse",
    "diagnostics_period_s": 0.2,
    "image_transport": "compressed",
}


def _stamp(i: int) -> int:
    return T0 + i * 10**8  # 10 Hz


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """The node, the test's peer and one frame with a single object."""
    from pose_refiner_ros.mesh.registry import ObjectRegistry
    from pose_refiner_ros.ros.demo_scene import make_recording

    registry = ObjectRegistry.from_yaml(nh.ROOT / "models" / "demo" / "objects.yaml")
    frame = make_recording(registry, 1, seed=11)[0]
    log = tmp_path_factory.mktemp("node_io") / "node.log"
    with nh.running_node("io", OVERRIDES, log, image="image_compressed") as (proc, peer):
        yield {"proc": proc, "peer": peer, "frame": frame, "log": log, "registry": registry}


def _alive(node):
    assert node["proc"].poll() is None, f"the node died:\n{node['log'].read_text()}"


def _coarse(frame, n=1):
    return [(cid, T_init, 1.0) for cid, _, T_init in frame.objects[:n]]


def _name(frame, k=0):
    from pose_refiner_ros.ros.publish_rules import tf_frame_name

    return tf_frame_name("refined_", frame.objects[k][0], 0)


# -- compressed images -----------------------------------------------------------------------
def test_compressed_jpeg_and_png_are_refined_and_decoded_in_the_right_colours(node):
    peer, frame = node["peer"], node["frame"]
    assert peer.pub["image"].get_subscription_count() == 0  # the raw topic is not taken
    received = peer.diag("received.image")
    peer.subscribe_debug()
    try:
        time.sleep(0.5)  # discovery of the debug subscription
        for k, (compression, tol) in enumerate((("png", 0), ("jpeg", 3))):
            stamp = _stamp(k)
            peer.send_frame(stamp, frame.image_rgb, frame.K, _coarse(frame),
                            compression=compression)
            det = peer.wait_for("detections", stamp)[-1]
            assert [d.id for d in det.detections] == [_name(frame)]
            assert np.isfinite(nh.pose_of(det.detections[0].results[0].pose.pose)).all()
            # the debug image is the decoded image with contours drawn on it: away from
            # the contours it is the image sent, so the colours were not swapped
            debug = peer.wait_for("debug", stamp, timeout=30)[-1]
            img = np.frombuffer(debug.data, np.uint8).reshape(debug.height, debug.width, 3)
            diff = np.abs(img.astype(int) - frame.image_rgb).max(axis=2)
            assert np.median(diff) <= tol, (compression, np.median(diff))
            swapped = np.abs(img.astype(int) - frame.image_rgb[..., ::-1]).max(axis=2)
            assert np.median(swapped) > np.median(diff) + 5
    finally:
        peer.unsubscribe_debug()
    assert peer.wait_diag("received.image", received + 1) >= received + 2


def test_a_compressed_image_that_does_not_decode_is_rejected_and_counted(node):
    from sensor_msgs.msg import CompressedImage

    from pose_refiner_ros.ros import conversions as conv
    from pose_refiner_ros.ros.compressed import encode_rgb

    peer, frame = node["peer"], node["frame"]
    H, W = frame.image_rgb.shape[:2]
    fmt, jpeg = encode_rgb(frame.image_rgb, "jpeg")
    for k, data in enumerate((jpeg[: len(jpeg) // 2], bytes(range(256)) * 8)):
        before = peer.diag("rejected.bad_image")
        stamp = _stamp(100 + k)
        h = nh.header(stamp)
        peer.pub["camera_info"].publish(conv.make_camera_info(frame.K, W, H, h))
        peer.pub["image_compressed"].publish(CompressedImage(header=h, format=fmt, data=data))
        peer.pub["detections"].publish(conv.make_coarse_detections(h, _coarse(frame)))
        peer.wait_diag("rejected.bad_image", before)
        assert peer.get("detections", stamp) == []
        _alive(node)
    assert "do not decode" in node["log"].read_text() or "neither JPEG nor PNG" in (
        node["log"].read_text())
    # and the node goes on refining
    stamp = _stamp(110)
    peer.send_frame(stamp, frame.image_rgb, frame.K, _coarse(frame), compression="jpeg")
    assert len(peer.wait_for("detections", stamp)[-1].detections) == 1
    _alive(node)


# -- approximate stamp matching --------------------------------------------------------------
def test_restamped_detections_are_matched_in_approximate_mode_only(node):
    """Detections stamped 20 ms after their image (a detector that re-stamps its output):
    refused by the default exact matching (5 ms), matched to the nearest image by
    ``sync_mode:=approximate``, once the next image shows that no nearer one comes."""
    peer, frame = node["peer"], node["frame"]
    coarse = _coarse(frame)
    offset = 20 * 10**6
    stamp = _stamp(200)
    peer.send_frame(stamp, frame.image_rgb, frame.K, coarse, compression="jpeg",
                    detections_stamp_ns=stamp + offset)
    time.sleep(1.5)
    assert peer.get("detections", stamp) == [] and peer.get("detections", stamp + offset) == []
    # the next frame, stamped alike, is matched and the orphan discarded and counted
    unmatched = peer.diag("dropped.unmatched_detections")
    peer.send_frame(_stamp(201), frame.image_rgb, frame.K, coarse, compression="jpeg")
    peer.wait_for("detections", _stamp(201))
    peer.wait_diag("dropped.unmatched_detections", unmatched)

    peer.set_parameters(sync_mode="approximate")
    assert peer.last_set_results == [(True, "")]
    try:
        stamp = _stamp(210)
        peer.send_frame(stamp, frame.image_rgb, frame.K, coarse, compression="jpeg",
                        detections_stamp_ns=stamp + offset)
        time.sleep(0.3)  # received, but the nearest image is not known yet
        assert peer.get("detections", stamp) == []
        peer.send_frame(_stamp(211), frame.image_rgb, frame.K, None, compression="jpeg")
        det = peer.wait_for("detections", stamp)[-1]  # stamped as the image it was matched to
        assert [d.id for d in det.detections] == [_name(frame)]
        assert peer.get("detections", _stamp(211)) == []  # no detections near that image
    finally:
        peer.set_parameters(sync_mode="exact")
    peer.set_parameters(sync_mode="nearest")
    ((ok, reason),) = peer.last_set_results
    assert not ok and "'exact', 'approximate'" in reason, reason


# -- RViz markers ----------------------------------------------------------------------------
def _wait_subscribers(pub_count, want: bool, timeout=10.0):
    deadline = time.monotonic() + timeout
    while (pub_count() > 0) != want:
        assert time.monotonic() < deadline, "discovery did not settle"
        time.sleep(0.05)


def test_markers_show_the_published_objects_while_someone_subscribes(node):
    from visualization_msgs.msg import Marker

    peer, frame, registry = node["peer"], node["frame"], node["registry"]
    cid, name = frame.objects[0][0], _name(frame)
    count = lambda: peer.node.count_subscribers(f"{peer.ns}/markers")  # noqa: E731
    peer.subscribe_markers()
    try:
        _wait_subscribers(count, True)
        time.sleep(0.3)  # the node's side of the discovery
        stamp = _stamp(300)
        peer.send_frame(stamp, frame.image_rgb, frame.K, _coarse(frame), compression="jpeg")
        det = peer.wait_for("detections", stamp)[-1].detections[0]
        msg = peer.wait_for("markers", stamp)[-1]
        deleteall, mesh, label = msg.markers
        assert deleteall.action == Marker.DELETEALL  # the first message clears RViz
        assert mesh.type == Marker.MESH_RESOURCE and (mesh.ns, mesh.id) == (name, 0)
        assert mesh.mesh_resource == registry[cid].mesh_path.resolve().as_uri()
        assert mesh.header.frame_id == nh.FRAME_ID
        np.testing.assert_allclose(nh.pose_of(mesh.pose),
                                   nh.pose_of(det.results[0].pose.pose), atol=1e-9)
        score = det.results[0].hypothesis.score
        assert label.type == Marker.TEXT_VIEW_FACING and label.text == f"{cid} {score:.2f}"

        # the object is gone from the next frame: its markers are deleted
        stamp = _stamp(301)
        peer.send_frame(stamp, frame.image_rgb, frame.K, [], compression="jpeg")
        msg = peer.wait_for("markers", stamp)[-1]
        assert [(m.ns, m.id, m.action) for m in msg.markers] == [
            (name, 0, Marker.DELETE), (name, 1, Marker.DELETE)]
    finally:
        peer.unsubscribe_markers()
    # nobody listens: nothing is published; listening again starts with DELETEALL
    _wait_subscribers(count, False)
    time.sleep(0.3)
    stamp = _stamp(302)
    peer.send_frame(stamp, frame.image_rgb, frame.K, _coarse(frame), compression="jpeg")
    peer.wait_for("detections", stamp)
    peer.subscribe_markers()
    try:
        _wait_subscribers(count, True)
        time.sleep(0.3)
        stamp = _stamp(303)
        peer.send_frame(stamp, frame.image_rgb, frame.K, _coarse(frame), compression="jpeg")
        msg = peer.wait_for("markers", stamp)[-1]
        assert [m.action for m in msg.markers] == [Marker.DELETEALL, Marker.ADD, Marker.ADD]
    finally:
        peer.unsubscribe_markers()
