"""The tracking node's background re-registrations (``ros.reregistration``): a child
process that builds the node's refiner from its parameters and answers one job at a
time, and that reports, rather than hides, a refiner it cannot build."""

from dataclasses import replace
from pathlib import Path
import time

import numpy as np

from pose_refiner_ros.data.sequences import MotionConfig, generate_sequence
from pose_refiner_ros.mesh.registry import ObjectRegistry
from pose_refiner_ros.ros.params import NodeParams
from pose_refiner_ros.ros.reregistration import BackgroundRefiner

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = ROOT / "models" / "demo" / "objects.yaml"


def _wait(bg, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or bg.state.startswith("failed"):
            return got
        assert time.monotonic() < deadline, f"background refiner: {bg.state}"
        time.sleep(0.05)


def test_a_job_is_refined_in_the_background_and_answered_once():
    registry = ObjectRegistry.from_yaml(OBJECTS)
    models = [registry[c] for c in registry.class_ids]
    f = next(iter(generate_sequence(models, np.random.default_rng(1),
                                    MotionConfig(n_frames=1, objects=1, occluder=False))))
    cid, T_gt, _ = f.objects[0]
    params = replace(NodeParams.defaults(), mode="region", use_depth=False)
    bg = BackgroundRefiner(OBJECTS, params)
    try:
        assert _wait(bg, bg.ready), bg.state
        assert bg.poll() is None  # nothing in flight
        assert bg.submit(f.image_rgb, f.K, None, [(cid, T_gt)], (params.iterations,
                                                                    params.crop_size))
        assert bg.state == "busy" and not bg.submit(f.image_rgb, f.K, None, [], (4, 128))
        kind, answer = _wait(bg, bg.poll)
        assert kind == "done" and len(answer) == 1
        assert answer[0].T_cam_obj.shape == (4, 4) and np.isfinite(answer[0].T_cam_obj).all()
        # refined from the truth, it stays there
        assert np.linalg.norm(answer[0].T_cam_obj[:3, 3] - T_gt[:3, 3]) < 0.1 * (
            registry[cid].diameter_m)
        assert bg.state == "ready" and bg.poll() is None
    finally:
        bg.close()
    assert not bg._proc.is_alive()


def test_a_refiner_that_cannot_be_built_is_reported(tmp_path):
    bad = tmp_path / "objects.yaml"
    bad.write_text("objects:\n  - class_id: box\n    mesh: no_such_mesh.ply\n")
    bg = BackgroundRefiner(bad, NodeParams.defaults())
    try:
        assert not _wait(bg, bg.ready)
        assert bg.state.startswith("failed") and not bg.submit(
            np.zeros((4, 4, 3), np.uint8), np.eye(3), None, [], (4, 128))
    finally:
        bg.close()


def test_skipped_frames_pause_background_reregistrations_and_back_off():
    from pose_refiner_ros.ros.tracking import reregistration_pause

    state = (0.0, 0.0, True)
    go, state = reregistration_pause(state, False, 10.0)
    assert go  # nothing skipped: at once
    go, state = reregistration_pause(state, True, 11.0)  # that one cost frames
    assert not go and state[0] == 11.5
    go, _ = reregistration_pause(state, False, 11.4)
    assert not go  # still paused
    go, state = reregistration_pause(state, False, 11.6)
    assert go and state[1] == 0.5  # no halving: the last one had skipped frames
    go, state = reregistration_pause(state, True, 12.0)  # again: twice as long
    assert not go and state[:2] == (13.0, 1.0)
    for t in (14.0, 30.0, 50.0, 70.0, 90.0):
        _, state = reregistration_pause(state, True, t)
    assert state[1] == 8.0  # at most 8 s
    go, state = reregistration_pause(state, False, 100.0)
    assert go and state[1] == 8.0
    go, state = reregistration_pause(state, False, 101.0)  # that one went by cleanly
    assert go and state[1] == 4.0
