"""refiner_node end to end over the real middleware.

The node runs as its own process, started as the launch file starts it; this test
process is a separate ROS node that publishes frames with known ground truth (the demo's
synthetic recording) and reads every output. The node uses the trained model when
``models/refiner.pt`` exists, else the training-free mode ``flow``; the checks compare
mean errors over several objects so that they hold for both.

Two node processes: ``rgb`` (the default parameters) and ``rgbd`` (``use_depth:=true``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import node_harness as nh
import numpy as np
import pytest
from ros_helpers import require_ros

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(300)]

#: The checkpoint under test (POSE_REFINER_TEST_MODEL overrides the shipped one).
MODEL = Path(os.environ.get("POSE_REFINER_TEST_MODEL", nh.ROOT / "models" / "refiner.pt"))
MODE = "learned" if MODEL.is_file() else "flow"
T0 = 1_800_000_000 * 10**9


def _stamp(i: int) -> int:
    return T0 + i * 10**8  # 10 Hz


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Both node processes, the test's peer nodes and the recording."""
    require_ros()
    import rclpy

    env = nh.env_for_ros()
    saved = nh.use_ros_env(env)
    logs = tmp_path_factory.mktemp("node_logs")
    token = uuid.uuid4().hex[:8]
    # every object is published (low-confidence ones with their coarse pose), so that the
    # checks see all of them; flow's confidence is less telling: a stricter threshold
    common = {
        "mode": MODE,
        "model_path": str(MODEL),
        "diagnostics_period_s": 0.2,
        "low_confidence_action": "publish_coarse",
        "confidence_threshold": 0.3 if MODE == "learned" else 0.6,
    }
    procs = {
        "rgb": nh.start_node(f"rgb_{token}", common, env, logs / "rgb.log"),
        "rgbd": nh.start_node(
            f"rgbd_{token}", {**common, "use_depth": "true"}, env, logs / "rgbd.log"
        ),
    }
    from pose_refiner_ros.mesh.registry import ObjectRegistry
    from pose_refiner_ros.ros.demo_scene import make_recording

    registry = ObjectRegistry.from_yaml(nh.ROOT / "models" / "demo" / "objects.yaml")
    frames = make_recording(registry, 3, seed=7)
    context = rclpy.Context()
    rclpy.init(context=context)
    peers = {"rgb": nh.Peer(context, f"rgb_{token}"), "rgbd": nh.Peer(context, f"rgbd_{token}")}
    try:
        for name, peer in peers.items():
            try:
                peer.wait_connected(procs[name], depth=name == "rgbd")
            except (RuntimeError, TimeoutError) as e:
                pytest.fail(f"{name} node: {e}; its log:\n{(logs / f'{name}.log').read_text()}")
        yield {"procs": procs, "peers": peers, "registry": registry, "frames": frames, "logs": logs}
    finally:
        for p in peers.values():
            p.close()
        rclpy.try_shutdown(context=context)
        codes = {name: nh.stop_node(p) for name, p in procs.items()}
        nh.restore_env(saved)
    # clean shutdown on SIGINT
    assert all(c == 0 for c in codes.values()), f"exit codes {codes}; logs in {logs}"


def _alive(session, name="rgb"):
    proc = session["procs"][name]
    assert proc.poll() is None, (
        f"the {name} node died (code {proc.returncode}):\n"
        + (session["logs"] / f"{name}.log").read_text()
    )


def _few(frame, n: int):
    """The frame with its first ``n`` objects only (keeps the learned mode's CPU time low)."""
    return dataclasses.replace(frame, objects=frame.objects[:n])


def _coarse(frame):
    return [(cid, T_init, 1.0) for cid, _, T_init in frame.objects]


def _expected_names(frame):
    from pose_refiner_ros.ros.publish_rules import tf_frame_name

    counts, names = {}, []
    for cid, _, _ in frame.objects:
        names.append(tf_frame_name("refined_", cid, counts.get(cid, 0)))
        counts[cid] = counts.get(cid, 0) + 1
    return names


def _mean_add(registry, frame, det_msg):
    """Mean ADD/diameter of the coarse and of the published poses, by TF name."""
    got = {d.id: nh.pose_of(d.results[0].pose.pose) for d in det_msg.detections}
    before, after = [], []
    for name, (cid, T_gt, T_init) in zip(_expected_names(frame), frame.objects, strict=True):
        m = registry[cid]
        before.append(nh.errors(m, T_init, T_gt)[2])
        after.append(nh.errors(m, got[name], T_gt)[2])
    return float(np.mean(before)), float(np.mean(after))


def _needs_model():
    if MODE != "learned":
        pytest.skip(
            f"accuracy is checked with the trained model; {MODEL} does not exist (the node "
            "ran in mode flow, whose accuracy is the benchmark's business)"
        )


def test_every_output_carries_every_object_of_a_frame(session):
    registry, peer = session["registry"], session["peers"]["rgb"]
    session["refined"] = []
    for i, frame in enumerate(session["frames"][:2]):
        stamp = _stamp(i)
        peer.send_frame(stamp, frame.image_rgb, frame.K, _coarse(frame))
        det = peer.wait_for("detections", stamp)[-1]
        assert det.header.frame_id == nh.FRAME_ID
        names = _expected_names(frame)
        assert sorted(d.id for d in det.detections) == sorted(names)  # several objects, one frame
        session["refined"].append((frame, det))

        # refined_poses: the same poses, in the same order
        poses = peer.wait_for("poses", stamp)[-1]
        assert len(poses.poses) == len(det.detections)
        for p, d in zip(poses.poses, det.detections, strict=True):
            np.testing.assert_allclose(nh.pose_of(p), nh.pose_of(d.results[0].pose.pose), atol=1e-9)
        # /refined_pose: the most confident object, image stamp and frame
        pose = peer.wait_for("pose", stamp)[-1]
        assert pose.header.frame_id == nh.FRAME_ID
        best = max(det.detections, key=lambda d: d.results[0].hypothesis.score)
        np.testing.assert_allclose(
            nh.pose_of(pose.pose), nh.pose_of(best.results[0].pose.pose), atol=1e-9
        )
        # TF: one child of the camera frame per object, named <prefix><class>_<k>
        tfs = peer.wait_for("tf", stamp)
        assert sorted(t.child_frame_id for t in tfs) == sorted(names)
        by_id = {d.id: nh.pose_of(d.results[0].pose.pose) for d in det.detections}
        for t in tfs:
            assert t.header.frame_id == nh.FRAME_ID
            tr, q = t.transform.translation, t.transform.rotation
            from types import SimpleNamespace as NS

            T = nh.pose_of(NS(position=tr, orientation=q))
            np.testing.assert_allclose(T, by_id[t.child_frame_id], atol=1e-9)
        # the pose covariance (RGB, from the region modality's lines): symmetric, positive
        # definite, the distance along the ray the least certain position coordinate
        if MODE == "learned":
            for d in det.detections:
                C = np.array(d.results[0].pose.covariance).reshape(6, 6)
                np.testing.assert_allclose(C, C.T, atol=1e-12)
                assert np.all(np.linalg.eigvalsh(C) > 0), C
                assert C[2, 2] > max(C[0, 0], C[1, 1]), np.diag(C)
        # the bounding box is the mesh's, at the refined pose
        for d in det.detections:
            m = registry[d.results[0].hypothesis.class_id]
            np.testing.assert_allclose(
                [d.bbox.size.x, d.bbox.size.y, d.bbox.size.z],
                m.bbox_max_m - m.bbox_min_m,
                rtol=1e-6,
            )
    assert peer.wait_diag("objects.refined", 5) >= 6


def test_refined_poses_are_closer_to_ground_truth(session):
    """On refined_detections, and hence (checked above) on refined_poses, refined_pose and TF."""
    _needs_model()
    assert session.get("refined"), "runs after test_every_output_carries_every_object_of_a_frame"
    before, after = zip(
        *(_mean_add(session["registry"], f, d) for f, d in session["refined"]), strict=True
    )
    assert np.mean(after) < 0.8 * np.mean(before), (before, after)


def test_target_class_and_debug_image(session):
    peer, frame = session["peers"]["rgb"], _few(session["frames"][2], 2)
    target = frame.objects[-1][0]
    peer.set_parameters(target_class_id=target)
    assert peer.last_set_results == [(True, "")]
    peer.subscribe_debug()
    try:
        time.sleep(0.5)  # discovery of the debug subscription
        stamp = _stamp(20)
        peer.send_frame(stamp, frame.image_rgb, frame.K, _coarse(frame))
        pose = peer.wait_for("pose", stamp)[-1]
        det = peer.wait_for("detections", stamp)[-1]
        targets = [d for d in det.detections if d.results[0].hypothesis.class_id == target]
        assert any(
            np.allclose(nh.pose_of(pose.pose), nh.pose_of(d.results[0].pose.pose)) for d in targets
        )
        debug = peer.wait_for("debug", stamp, timeout=30)[-1]
        assert (debug.height, debug.width, debug.encoding) == (*frame.image_rgb.shape[:2], "rgb8")
        img = np.frombuffer(debug.data, np.uint8).reshape(debug.height, debug.width, 3)
        assert (img != frame.image_rgb).any(axis=2).sum() > 100  # contours were drawn
        from pose_refiner_ros.render.overlay import COARSE_RGB

        assert (np.abs(img.astype(int) - COARSE_RGB).max(-1) < 30).sum() > 50  # coarse poses
        corner = (slice(-8, -3), slice(-8, -3))  # inside the legend's dark box, bottom right
        assert img[corner].mean() < 0.5 * frame.image_rgb[corner].mean()
    finally:
        peer.unsubscribe_debug()
        peer.set_parameters(target_class_id="")
    # a bad value is refused with a reason, a fixed one too
    peer.set_parameters(low_confidence_action="explode")
    assert (
        not peer.last_set_results[0][0] and "low_confidence_action" in peer.last_set_results[0][1]
    )
    peer.set_parameters(model_path="/elsewhere.pt")
    assert not peer.last_set_results[0][0]


def test_tracking_refines_new_images_without_detections(session):
    registry, peer = session["registry"], session["peers"]["rgb"]
    frame = _few(session["frames"][0], 2)
    peer.set_parameters(tracking=True)
    try:
        tracked0 = peer.diag("frames.tracked")
        s0 = _stamp(40)
        peer.send_frame(s0, frame.image_rgb, frame.K, _coarse(frame))
        det0 = peer.wait_for("detections", s0)[-1]
        # the camera keeps sending images; no new detections
        for j in (1, 2):
            stamp = _stamp(40 + j)
            peer.send_frame(stamp, frame.image_rgb, frame.K, None)
            det = peer.wait_for("detections", stamp)[-1]
            assert sorted(d.id for d in det.detections) == sorted(d.id for d in det0.detections)
            if MODE == "learned":
                b, a = _mean_add(registry, frame, det)
                assert a < 0.8 * b, (b, a)  # still much better than the coarse poses
        assert peer.wait_diag("frames.tracked", above=tracked0) >= tracked0 + 1
    finally:
        peer.set_parameters(tracking=False)
    # tracking off: an image without detections gives nothing
    stamp = _stamp(50)
    peer.send_frame(stamp, frame.image_rgb, frame.K, None)
    time.sleep(1.0)
    assert peer.get("detections", stamp) == []


def _start_tracking(session, n_frames, base, **params):
    """Switch tracking on (with ``params``), wait for the tracker, and hand the node the
    first frame of a synthetic motion sequence with its ground-truth detection (stamp
    ``base``); returns the sequence's frames."""
    from pose_refiner_ros.data.sequences import MotionConfig, generate_sequence

    registry, peer = session["registry"], session["peers"]["rgb"]
    models = [registry[c] for c in registry.class_ids]
    frames = list(generate_sequence(models, np.random.default_rng(5),
                                    MotionConfig(n_frames=n_frames, objects=1, occluder=False)))
    peer.set_parameters(tracking=True, **params)
    deadline = time.monotonic() + 240
    while (peer.diagnostics or {}).get("tracker") != "ready":
        assert time.monotonic() < deadline, f"tracker not ready: {peer.diagnostics}"
        time.sleep(0.5)
    cid, T_gt, _ = frames[0].objects[0]
    s0 = _stamp(base)
    peer.send_frame(s0, frames[0].image_rgb, frames[0].K, [(cid, T_gt, 1.0)])
    peer.wait_for("detections", s0)
    return frames


def test_tracker_follows_a_moving_object_and_reports_it_lost(session):
    """Between detections the render-free tracker follows a moving object frame to
    frame; on images where the object is gone, tracking is lost: the object is no longer
    published, its re-registration (in the background) fails, and it is published on
    tracking_lost and counted."""
    from pose_refiner_ros.evaluation import metrics as M

    registry, peer = session["registry"], session["peers"]["rgb"]
    tracked0 = peer.diag("frames.tracked")
    try:
        frames = _start_tracking(session, 6, 6000)
        m = registry[frames[0].objects[0][0]]
        ok = []
        for j, f in enumerate(frames[1:], 1):
            stamp = _stamp(6000 + j)
            peer.send_frame(stamp, f.image_rgb, f.K, None)
            det = peer.wait_for("detections", stamp)[-1]
            assert len(det.detections) == 1
            T = nh.pose_of(det.detections[0].results[0].pose.pose)
            # tracked in RGB: a covariance from the frame's lines, depth least certain
            C = np.array(det.detections[0].results[0].pose.covariance).reshape(6, 6)
            assert np.all(np.linalg.eigvalsh(C) > 0) and C[2, 2] > max(C[0, 0], C[1, 1])
            e = M.evaluate_pose(T, f.objects[0][1], pts_obj=m.points_m, K=f.K,
                                image_size=(640, 480), diameter_m=m.diameter_m,
                                symmetries=m.symmetries)
            ok.append((e.adds_m if e.symmetric else e.add_m) < 0.1 * m.diameter_m)
        assert np.mean(ok) >= 0.6, ok
        # every frame after the first was tracked (not refined): the counter reaches it
        assert peer.wait_diag("frames.tracked", above=tracked0 + len(frames) - 2) >= (
            tracked0 + len(frames) - 1)
        lost0 = peer.diag("tracks.lost")
        # The re-registration process starts with the tracker and needs a few seconds (more
        # on a busy machine); the grey frames below span only tracking_max_age_s of stamps,
        # after which the track expires unreported. Wait for the process, not the clock.
        deadline = time.monotonic() + 120
        while (peer.diagnostics or {}).get("reregistration") != "ready":
            assert time.monotonic() < deadline, f"no re-registration process: {peer.diagnostics}"
            time.sleep(0.2)
        grey = np.full_like(frames[0].image_rgb, 127)
        deadline, sent, lost = time.monotonic() + 60, [], []
        while not lost:  # grey frames until the re-registration has failed
            assert time.monotonic() < deadline, f"never lost: {peer.diagnostics}"
            sent.append(_stamp(6000 + len(frames) + len(sent)))
            peer.send_frame(sent[-1], grey, frames[0].K, None)
            # the lost object is never published as if it were found
            assert peer.wait_for("detections", sent[-1])[-1].detections == []
            time.sleep(0.2)
            lost = [m for s in sent for m in peer.get("lost", s)]
        assert [d.id for d in lost[-1].detections] == [det.detections[0].id]
        assert peer.wait_diag("tracks.lost", above=lost0) == lost0 + 1
    finally:
        peer.set_parameters(tracking=False)


def test_drifting_objects_are_re_registered_in_the_background(session):
    """With tracking_reregister_below 1 every tracked frame asks for a re-registration.
    It runs in a background process: every frame is still tracked and published at
    once, and a confident re-registration lands on a later frame
    (``tracks.reregistered``)."""
    peer = session["peers"]["rgb"]
    rereg0 = peer.diag("tracks.reregistered")
    try:
        frames = _start_tracking(session, 8, 7000, tracking_reregister_below=1.0)
        # Camera frames go on (back and forth through the sequence) until a
        # re-registration has landed: the process starts, refines, answers.
        deadline, j = time.monotonic() + 90, 0
        while peer.diag("tracks.reregistered") <= rereg0:
            assert time.monotonic() < deadline, f"nothing re-registered: {peer.diagnostics}"
            j += 1
            f = frames[(j % 14) if (j % 14) < 8 else 14 - (j % 14)]
            stamp = _stamp(7000 + j)
            peer.send_frame(stamp, f.image_rgb, f.K, None)
            det = peer.wait_for("detections", stamp)[-1]
            assert len(det.detections) == 1  # tracked and published, not waiting
            time.sleep(0.3)
    finally:
        peer.set_parameters(tracking=False, tracking_reregister_below=0.8)


def test_coarse_pose_input(session):
    registry, peer = session["registry"], session["peers"]["rgb"]
    from pose_refiner_ros.ros import conversions as conv

    frame = session["frames"][1]
    cid, T_gt, T_init = frame.objects[0]
    peer.set_parameters(coarse_pose_class_id=cid)
    try:
        stamp = _stamp(60)
        h = nh.header(stamp)
        peer.send_frame(stamp, frame.image_rgb, frame.K, None)
        peer.pub["coarse_pose"].publish(conv.make_pose_stamped(h, T_init))
        pose = peer.wait_for("pose", stamp)[-1]
        assert pose.header.frame_id == nh.FRAME_ID
        det = peer.wait_for("detections", stamp)[-1]
        assert [d.id for d in det.detections] == [f"refined_{cid}_0"]
        confident = det.detections[0].results[0].hypothesis.score >= 0.3
        if MODE == "learned" and confident:  # else it was published with its coarse pose
            m = registry[cid]
            assert nh.errors(m, nh.pose_of(pose.pose), T_gt)[2] < nh.errors(m, T_init, T_gt)[2]
    finally:
        peer.set_parameters(coarse_pose_class_id="")


# -- bad input -------------------------------------------------------------------------------
def _bad_inputs(frame):
    """(reason counted in diagnostics, function(peer, stamp) sending the bad input)."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    from pose_refiner_ros.ros import conversions as conv

    H, W = frame.image_rgb.shape[:2]
    good = _coarse(frame)[:1]

    def dets_with_quat(q):
        def send(peer, stamp):
            h = nh.header(stamp)
            peer.send_frame(stamp, frame.image_rgb, frame.K, None)
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id = good[0][0]
            hyp.pose.pose = conv.matrix_to_pose(good[0][1])
            hyp.pose.pose.orientation.x, hyp.pose.pose.orientation.y = q[0], q[1]
            hyp.pose.pose.orientation.z, hyp.pose.pose.orientation.w = q[2], q[3]
            peer.pub["detections"].publish(
                Detection3DArray(header=h, detections=[Detection3D(header=h, results=[hyp])])
            )

        return send

    def image(encoding, height, width, n_bytes):
        def send(peer, stamp):
            h = nh.header(stamp)
            peer.send_camera_info(frame.K, W, H, stamp)
            peer.pub["image"].publish(
                Image(
                    header=h,
                    height=height,
                    width=width,
                    encoding=encoding,
                    step=n_bytes // max(height, 1),
                    data=bytes(n_bytes),
                )
            )
            peer.pub["detections"].publish(conv.make_coarse_detections(h, good))

        return send

    def zero_k(peer, stamp):
        peer.send_camera_info(np.zeros((3, 3)), W, H, stamp)

    def wrong_frame(peer, stamp):
        peer.send_camera_info(frame.K, W, H, stamp)
        peer.pub["image"].publish(conv.rgb_to_image(frame.image_rgb, nh.header(stamp)))
        peer.pub["detections"].publish(
            conv.make_coarse_detections(nh.header(stamp, "other_camera"), good)
        )

    def coarse_pose_without_class(peer, stamp):
        peer.pub["coarse_pose"].publish(PoseStamped(header=nh.header(stamp)))

    return [
        (
            "unknown_class",
            lambda peer, stamp: peer.send_frame(
                stamp, frame.image_rgb, frame.K, [("no_such_object", good[0][1], 1.0)]
            ),
        ),
        ("bad_pose", dets_with_quat((np.nan, 0.0, 0.0, 1.0))),
        ("bad_pose", dets_with_quat((0.0, 0.0, 0.0, 0.0))),
        ("bad_camera_info", zero_k),
        ("size_mismatch", image("rgb8", H // 2, W // 2, 3 * (H // 2) * (W // 2))),
        ("bad_encoding", image("yuv422", H, W, 2 * H * W)),
        ("empty_image", image("rgb8", 0, 0, 0)),
        ("wrong_frame", wrong_frame),
        ("coarse_pose_without_class", coarse_pose_without_class),
    ]


def _still_refining(session, name, stamp):
    peer, frame = session["peers"][name], _few(session["frames"][0], 1)
    peer.send_frame(
        stamp,
        frame.image_rgb,
        frame.K,
        _coarse(frame),
        depth_m=None if name == "rgb" else np.full(frame.image_rgb.shape[:2], 0.0, np.float32),
    )
    det = peer.wait_for("detections", stamp)[-1]
    assert len(det.detections) == len(frame.objects)
    _alive(session, name)


def test_every_bad_input_is_skipped_counted_and_survived(session):
    peer, frame = session["peers"]["rgb"], session["frames"][0]
    for k, (reason, send) in enumerate(_bad_inputs(frame)):
        before = peer.diag(f"rejected.{reason}")
        send(peer, _stamp(100 + k))
        peer.wait_diag(f"rejected.{reason}", before)
        _alive(session)
    _still_refining(session, "rgb", _stamp(150))


_ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "32FC1", "yuv422", "", "8UC3"]
_CLASSES = list(nh.CLASSES) + ["unknown", ""]
_FLOATS = st.one_of(st.floats(-2, 2), st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))


@st.composite
def _garbage(draw):
    height, width = draw(st.integers(0, 48)), draw(st.integers(0, 64))
    return {
        "encoding": draw(st.sampled_from(_ENCODINGS)),
        "height": height,
        "width": width,
        "step": draw(st.integers(0, 256)),
        "n_bytes": draw(st.integers(0, 48 * 64 * 4)),
        "K": draw(st.lists(_FLOATS, min_size=9, max_size=9)),
        "info_size": (draw(st.integers(0, 64)), draw(st.integers(0, 48))),
        "objects": draw(
            st.lists(
                st.tuples(
                    st.sampled_from(_CLASSES),
                    st.lists(_FLOATS, min_size=3, max_size=3),
                    st.lists(_FLOATS, min_size=4, max_size=4),
                    st.sampled_from(["", nh.FRAME_ID, "elsewhere"]),
                ),
                max_size=4,
            )
        ),
    }


def _send_garbage(peer, stamp, g):
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    h = nh.header(stamp)
    peer.pub["camera_info"].publish(
        CameraInfo(
            header=h,
            width=g["info_size"][0],
            height=g["info_size"][1],
            k=[float(x) for x in g["K"]],
        )
    )
    rng = np.random.default_rng(stamp % 2**32)
    peer.pub["image"].publish(
        Image(
            header=h,
            height=g["height"],
            width=g["width"],
            encoding=g["encoding"],
            step=g["step"],
            data=rng.integers(0, 256, g["n_bytes"], np.uint8).tobytes(),
        )
    )
    dets = []
    for cid, t, q, frame_id in g["objects"]:
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = cid, 0.5
        p = hyp.pose.pose
        p.position.x, p.position.y, p.position.z = (float(v) for v in t)
        p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in q)
        dets.append(Detection3D(header=nh.header(stamp, frame_id), results=[hyp]))
    peer.pub["detections"].publish(Detection3DArray(header=h, detections=dets))


def test_fuzzed_messages_never_kill_the_node(session):
    peer = session["peers"]["rgb"]
    counter = iter(range(10**6))

    @given(g=_garbage())
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def fuzz(g):
        _send_garbage(peer, _stamp(1000 + next(counter)), g)
        time.sleep(0.02)

    fuzz()
    time.sleep(1.0)
    _alive(session)
    rejected = sum(
        peer.diag(k) for k in list((peer.diagnostics or {}).keys()) if k.startswith("rejected.")
    )
    assert rejected > 0
    _still_refining(session, "rgb", _stamp(2000))


# -- RGB-D -----------------------------------------------------------------------------------
def test_rgbd_refines_and_survives_bad_depth(session):
    from sensor_msgs.msg import Image

    peer, registry, frame = session["peers"]["rgbd"], session["registry"], session["frames"][1]
    frame, depth = _few(frame, 2), frame.depth_m
    stamp = _stamp(3000)
    peer.send_frame(stamp, frame.image_rgb, frame.K, _coarse(frame), depth_m=depth)
    det = peer.wait_for("detections", stamp)[-1]
    assert len(det.detections) == len(frame.objects)
    if MODE == "learned":
        b, a = _mean_add(registry, frame, det)
        assert a < 0.8 * b, (b, a)

    # depth of the wrong size: counted, and the frame is refined without depth
    frame = _few(frame, 1)
    before = peer.diag("rejected.bad_depth")
    stamp = _stamp(3001)
    peer.send_frame(stamp, frame.image_rgb, frame.K, _coarse(frame), depth_m=depth[::2, ::2])
    peer.wait_for("detections", stamp)
    peer.wait_diag("rejected.bad_depth", before)

    # NaN / inf / negative depth and odd encodings
    for j, enc in enumerate(["32FC1", "16UC1", "rgb8", "32FC1"]):
        stamp = _stamp(3010 + j)
        h = nh.header(stamp)
        H, W = depth.shape
        noisy = depth.copy()
        noisy[::7, ::5] = [np.nan, np.inf, -1.0][j % 3]
        from pose_refiner_ros.ros import conversions as conv

        peer.pub["camera_info"].publish(conv.make_camera_info(frame.K, W, H, h))
        if enc == "rgb8":
            peer.pub["depth"].publish(
                Image(
                    header=h, height=H, width=W, encoding="rgb8", step=3 * W, data=bytes(3 * H * W)
                )
            )
        else:
            peer.pub["depth"].publish(conv.depth_m_to_image(noisy, h, enc))
        peer.pub["image"].publish(conv.rgb_to_image(frame.image_rgb, h))
        peer.pub["detections"].publish(conv.make_coarse_detections(h, _coarse(frame)))
        peer.wait_for("detections", stamp)
    _alive(session, "rgbd")


def test_max_objects_keeps_the_highest_detection_scores(session):
    peer, frame = session["peers"]["rgb"], session["frames"][1]
    peer.set_parameters(max_objects=1)
    try:
        before = peer.diag("rejected.too_many_objects")
        stamp = _stamp(4000)
        scores = [0.2, 0.9, 0.5]
        objects = [(cid, T, s) for (cid, _, T), s in zip(frame.objects, scores, strict=True)]
        peer.send_frame(stamp, frame.image_rgb, frame.K, objects)
        det = peer.wait_for("detections", stamp)[-1]
        assert [d.id for d in det.detections] == [_expected_names(frame)[1]]
        assert peer.wait_diag("rejected.too_many_objects", before) == before + 2
    finally:
        peer.set_parameters(max_objects=10)


def test_newest_frame_wins_when_frames_come_too_fast(session):
    peer, frame = session["peers"]["rgb"], _few(session["frames"][0], 1)
    before = peer.diag("dropped.busy_detect")
    stamps = [_stamp(5000 + j) for j in range(6)]
    for s in stamps:  # back to back: the worker is busy with the first
        peer.send_frame(s, frame.image_rgb, frame.K, _coarse(frame))
        time.sleep(0.01)
    peer.wait_for("detections", stamps[-1])  # the newest is always refined
    refined = [s for s in stamps if peer.get("detections", s)]
    assert len(refined) < len(stamps)
    dropped = peer.wait_diag("dropped.busy_detect", before) - before
    assert 1 <= dropped <= len(stamps) - len(refined)  # (a best-effort image may also be lost)
    _alive(session)
