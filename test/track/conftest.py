"""Shared fixtures of the tracker's tests."""

import numpy as np
import pytest

from pose_refiner_ros.data.perturb import perturb_pose
from pose_refiner_ros.data.procedural import procedural_models
from pose_refiner_ros.data.sequences import MotionConfig, generate_sequence
from pose_refiner_ros.refine.viewpoint_model import build_viewpoint_model
from pose_refiner_ros.render.base import RenderMesh, make_renderer


@pytest.fixture(scope="module")
def scene():
    """One synthetic frame of a held-out procedural mesh: ``(viewpoint model, image_rgb
    (H, W, 3) uint8, depth_m, K, T)`` with ``T`` the truth perturbed by about 6 deg and
    1 cm."""
    models = procedural_models("bench", 4, seed=0)
    cfg = MotionConfig(n_frames=2, objects=1, occluder=False, width=200, height=160)
    frame = next(iter(generate_sequence(models, np.random.default_rng(3), cfg)))
    cid, T_gt, _ = frame.objects[0]
    model = next(m for m in models if m.class_id == cid)
    vm = build_viewpoint_model(make_renderer("torch"), RenderMesh.from_object(model),
                               model.diameter_m, points=120, subdivisions=2, size_px=128)
    T = perturb_pose(T_gt[None], np.random.default_rng(5), sigma_r_deg=6.0,
                     sigma_t_m=(0.005, 0.005, 0.01))[0]
    return vm, frame.image_rgb, frame.depth_m, frame.K, T
