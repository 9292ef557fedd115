"""The render-free tracker: follows a moving object through a synthetic sequence,
reports a quality, and flags the object lost when it is gone."""

import numpy as np
import pytest

from pose_refiner_ros.data.procedural import procedural_models
from pose_refiner_ros.data.sequences import MotionConfig, generate_sequence
from pose_refiner_ros.evaluation import metrics as M
from pose_refiner_ros.refine.viewpoint_model import build_viewpoint_model
from pose_refiner_ros.render.base import RenderMesh, make_renderer
from pose_refiner_ros.track.tracker import Tracker, TrackerConfig


@pytest.fixture(scope="module")
def models():
    return procedural_models("bench", 4, seed=0)


@pytest.fixture(scope="module")
def frames(models):
    cfg = MotionConfig(n_frames=12, objects=1, occluder=False, width=320, height=240)
    return list(generate_sequence(models, np.random.default_rng(3), cfg))


_VIEWPOINT_MODELS: dict = {}  # class_id -> model: built once for the module's tests (a few s each)


def _provider(models):
    cache = _VIEWPOINT_MODELS
    by_id = {m.class_id: m for m in models}

    def get(class_id):
        if class_id not in cache:
            m = by_id[class_id]
            cache[class_id] = build_viewpoint_model(make_renderer("torch"),
                                                    RenderMesh.from_object(m), m.diameter_m,
                                                    points=150, subdivisions=3, size_px=160)
        return cache[class_id]

    return get


def test_sequence_moves_smoothly_within_the_stated_speeds(frames):
    Ts = np.stack([f.objects[0][1] for f in frames])
    step_m = np.linalg.norm(np.diff(Ts[:, :3, 3], axis=0), axis=1)
    assert step_m.max() <= 0.3 / 30 + 1e-9 and step_m.max() > 0
    cos = [(np.trace(a[:3, :3].T @ b[:3, :3]) - 1) / 2
           for a, b in zip(Ts[:-1], Ts[1:], strict=True)]
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() <= 90 / 30 + 1e-6
    assert frames[0].image_rgb.shape == (240, 320, 3) and frames[0].depth_m.shape == (240, 320)


def test_sequence_keeps_one_camera_from_frame_to_frame(models):
    """Blur, colour response and compression are the camera's, drawn once per sequence;
    only the sensor noise changes: a background patch looks the same in every frame."""
    cfg = MotionConfig(n_frames=4, objects=1, occluder=False, width=320, height=240)
    for seed in range(3):
        frames = list(generate_sequence(models, np.random.default_rng(seed), cfg))
        patches = np.stack([f.image_rgb[:40, :40].astype(float) / 255 for f in frames])
        means = patches.mean(axis=(1, 2))  # (frames, 3)
        assert np.abs(means - means[0]).max() < 0.01


@pytest.mark.parametrize("with_depth", [False, True])
def test_tracker_follows_the_object(models, frames, with_depth):
    cid, T0, _ = frames[0].objects[0]
    m = next(x for x in models if x.class_id == cid)
    tr = Tracker(_provider(models), TrackerConfig())
    tr.reset([(cid, T0)])
    ok = []
    for f in frames[1:]:
        (r,) = tr.step(f.image_rgb, f.K, f.depth_m if with_depth else None)
        e = M.evaluate_pose(r.T_cam_obj, f.objects[0][1], pts_obj=m.points_m, K=f.K,
                            image_size=(320, 240), diameter_m=m.diameter_m)
        ok.append(e.add_m < 0.1 * m.diameter_m)
        assert not r.lost and r.quality > 0.3 and r.timing_ms["total"] > 0
        if with_depth:  # the depth residuals are not in the lines' covariance
            assert r.covariance is None
        else:  # RGB: the distance along the ray is the least certain coordinate
            sd = np.sqrt(np.diag(r.covariance))
            assert np.all(np.linalg.eigvalsh(r.covariance) > 0) and sd[2] > max(sd[:2])
    assert np.mean(ok) >= (0.9 if with_depth else 0.7)


def test_an_object_that_left_the_image_is_lost(models, frames):
    cid, T0, _ = frames[0].objects[0]
    tr = Tracker(_provider(models), TrackerConfig())
    tr.reset([(cid, T0)])
    tr.step(frames[1].image_rgb, frames[1].K)
    blank = np.full_like(frames[1].image_rgb, 128)
    (r,) = tr.step(blank, frames[1].K)
    assert r.lost and r.quality < TrackerConfig().lost_below
    assert r.covariance is None  # a lost pose claims no precision


def test_a_drifting_object_asks_for_re_registration(models, frames):
    """Below ``reregister_below`` (but not ``lost_below``) an object is flagged for a
    re-registration without being lost; a blank image makes it lost (and flagged)."""
    cid, T0, _ = frames[0].objects[0]
    tr = Tracker(_provider(models), TrackerConfig(reregister_below=1.0))
    tr.reset([(cid, T0)])
    (r,) = tr.step(frames[1].image_rgb, frames[1].K)
    assert r.reregister and not r.lost and r.quality > 0.3
    (r,) = tr.step(np.full_like(frames[1].image_rgb, 128), frames[1].K)
    assert r.lost and r.reregister


def test_an_uncertain_distance_asks_for_re_registration(models, frames):
    """With ``reregister_sigma``, an RGB pose whose covariance claims a distance deviation
    above that share of the object's size asks for a re-registration, whatever its
    quality; with depth it never does (the lines' covariance leaves the depth out)."""
    cid, T0, _ = frames[0].objects[0]
    for sigma, depth, asks in ((0.0, False, False), (1e-6, False, True), (1e-6, True, False),
                               (10.0, False, False)):
        tr = Tracker(_provider(models), TrackerConfig(reregister_below=0.3,
                                                      reregister_sigma=sigma))
        tr.reset([(cid, T0)])
        (r,) = tr.step(frames[1].image_rgb, frames[1].K, frames[1].depth_m if depth else None)
        assert not r.lost and r.reregister == asks, (sigma, depth, r.quality)


def test_a_late_re_registration_keeps_the_motion_tracked_since(models):
    """``correct``: a refinement of an earlier frame lands; the pose becomes the refined
    pose moved as the track moved since (``T_now inv(T_then) T_registered``)."""
    from scipy.spatial.transform import Rotation

    def pose(rotvec, t):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
        T[:3, 3] = t
        return T

    cid = models[0].class_id
    T_then = pose([0.1, -0.2, 0.05], [0.02, -0.01, 0.6])
    motion = pose([0.0, 0.3, 0.1], [0.05, 0.0, -0.02])  # camera frame, since then
    T_true_then = pose([0.12, -0.25, 0.0], [0.021, -0.012, 0.63])
    tr = Tracker(_provider(models), TrackerConfig())
    tr.reset([(cid, motion @ T_then)])
    tr.correct(0, T_then, T_true_then)
    np.testing.assert_allclose(tr.T[0], motion @ T_true_then, atol=1e-12)
    n = tr.resets
    tr.reset([(cid, T_then)])
    assert tr.resets == n + 1


def test_tracker_settings_are_validated():
    with pytest.raises(ValueError, match="schedule"):
        TrackerConfig(schedule=())
    with pytest.raises(ValueError, match="hist_rate"):
        TrackerConfig(hist_rate=0.0)
    with pytest.raises(ValueError, match="unknown"):
        TrackerConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="reregister_below"):
        TrackerConfig(lost_below=0.5, reregister_below=0.4)
