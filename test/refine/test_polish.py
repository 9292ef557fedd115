"""The RGB-D depth polish: point-to-plane ICP on a network pass's points."""

import numpy as np
import pytest
import torch

from pose_refiner_ros.data.perturb import perturb_pose
from pose_refiner_ros.data.procedural import procedural_models
from pose_refiner_ros.data.synthetic import SyntheticConfig, generate_scene
from pose_refiner_ros.geometry.camera import project
from pose_refiner_ros.geometry.crop import compute_crops
from pose_refiner_ros.geometry.lie import rotation_angle_deg, transform_points
from pose_refiner_ros.mesh.registry import ObjectRegistry
from pose_refiner_ros.refine.field import correspondences
from pose_refiner_ros.refine.polish import PassPoints, PolishConfig, polish_pose
from pose_refiner_ros.refine.refiner import Refiner, RefinerConfig, grid_normals_obj
from pose_refiner_ros.render.base import RenderMesh, make_renderer
from pose_refiner_ros.solver.gauss_newton import SolverConfig

W, H = 320, 240
K = torch.tensor([[500.0, 0, 160], [0, 500.0, 120], [0, 0, 1]], dtype=torch.float64)[None]


@pytest.fixture(scope="module")
def mug():
    models = procedural_models("val", 3, seed=0)
    return next(m for m in models if "mug" in m.class_id)  # the handle fixes every rotation


def _rot_err(T, T_gt):
    return float(rotation_angle_deg(T[:, :3, :3], T_gt[:, :3, :3])[0])


def _setup(mug, field_at_truth: bool):
    """A true pose, a pose 2-3 deg and a few mm off, a pass rendered at the latter and a
    clean full-image depth rendering of the truth."""
    T_gt = np.eye(4)
    T_gt[:3, :3] = perturb_pose(np.eye(4), np.random.default_rng(5), sigma_r_deg=40.0)[:3, :3]
    T_gt[:3, 3] = [0.01, -0.02, 4 * mug.diameter_m]
    T_gt = torch.as_tensor(T_gt)[None]
    T = torch.as_tensor(perturb_pose(T_gt[0].numpy(), np.random.default_rng(6), sigma_r_deg=3.0,
                                     sigma_t_m=(0.003, 0.003, 0.006)))[None]
    mesh, renderer = RenderMesh.from_object(mug), make_renderer("torch")
    idx = torch.zeros(1, dtype=torch.long)
    depth = renderer.render([mesh], idx, K.float(), T_gt.float(), H, W).depth_m[0].double()
    corners = torch.tensor(np.array(mug.bbox_corners_m), dtype=torch.float32)[None]
    crop = compute_crops(K.float(), T.float(), corners, 128)
    frags = renderer.render([mesh], idx, crop.K_crop, T.float(), 128, 128)
    corr = correspondences(frags.xyz_obj, frags.mask, torch.zeros(1, 2, 128, 128),
                           frags.mask[:, None].float())
    pts = corr.pts_obj.double()
    K_crop = crop.K_crop.double()
    uv_tgt = project(transform_points(T_gt, pts), K_crop) if field_at_truth else corr.uv_tgt
    last = PassPoints(pts_obj=pts, normals_obj=grid_normals_obj(frags, corr, T.float()).double(),
                    uv_tgt=uv_tgt.double(), weight=corr.weight.double(), valid=corr.valid,
                    K_crop=K_crop)
    return T_gt, T, depth, last


def test_depth_alone_polishes_the_rotation_to_the_truth(mug):
    """No weight on the field: projective point-to-plane matching against a clean depth
    image must do it alone. Fails if the normals' frame, the pixel-centre convention of
    the association or the back-projection is wrong."""
    T_gt, T, depth, last = _setup(mug, field_at_truth=False)
    err0 = _rot_err(T, T_gt)
    assert err0 > 1.0
    cfg = PolishConfig(iterations=8, field_weight=0.0)
    out = polish_pose(T, last, depth, K, torch.tensor([mug.diameter_m]).double(), cfg,
                      SolverConfig())
    assert _rot_err(out.T_cam_obj, T_gt) < 0.15 * err0
    assert (out.T_cam_obj[0, :3, 3] - T_gt[0, :3, 3]).norm() < 0.01 * mug.diameter_m
    assert out.residual_px.shape == last.weight.shape


def test_depth_beyond_the_gate_is_ignored(mug):
    """A depth image of a wall 20 cm behind the object: no sample is within the gate, so
    the polish follows the field alone (here: to the truth) and is not dragged back."""
    T_gt, T, _, last = _setup(mug, field_at_truth=True)
    wall = torch.full((H, W), float(T_gt[0, 2, 3]) + 0.2, dtype=torch.float64)
    out = polish_pose(T, last, wall, K, torch.tensor([mug.diameter_m]).double(),
                      PolishConfig(iterations=3), SolverConfig())
    assert _rot_err(out.T_cam_obj, T_gt) < 0.05
    assert (out.T_cam_obj[0, :3, 3] - T_gt[0, :3, 3]).norm() < 1e-3 * mug.diameter_m


@pytest.mark.parametrize("field", ["iterations", "plane_weight", "field_weight", "gate_m"])
def test_negative_settings_are_refused_by_name(field):
    with pytest.raises(ValueError, match=f"polish.{field}"):
        PolishConfig(**{field: -1})


def test_refiner_polishes_only_with_depth_and_reads_its_settings():
    models = procedural_models("val", 3, seed=0)
    cfg = SyntheticConfig(image_width=W, image_height=H, objects_per_scene=(1, 1),
                          distractors_per_scene=(0, 0), occluders_per_scene=(0, 0),
                          depth_missing_prob=0.0)
    sc = generate_scene(models, np.random.default_rng(3), cfg, make_renderer("torch"))
    objs = [(o.class_id, o.T_cam_obj_init) for o in sc.objects]
    base = dict(mode="flow", iterations=1)
    reg = ObjectRegistry(models)
    on = Refiner(reg, RefinerConfig.from_dict({**base, "polish": {"iterations": 3}}))
    off = Refiner(reg, RefinerConfig.from_dict({**base, "polish": {"iterations": 0}}))
    r_on = on.refine(sc.image_rgb, sc.K, objs, depth_m=sc.depth_m)[0]
    r_off = off.refine(sc.image_rgb, sc.K, objs, depth_m=sc.depth_m)[0]
    # The same network pass and solve, then the polish moves the pose on; without depth
    # there is nothing to polish against.
    assert r_on.score == pytest.approx(r_off.score, abs=1e-6)
    assert not np.allclose(r_on.T_cam_obj, r_off.T_cam_obj, atol=1e-6)
    assert r_on.iterates.shape == r_off.iterates.shape == (2, 4, 4)
    rgb_on, rgb_off = (r.refine(sc.image_rgb, sc.K, objs)[0] for r in (on, off))
    np.testing.assert_allclose(rgb_on.T_cam_obj, rgb_off.T_cam_obj, atol=1e-6)
    with pytest.raises(ValueError, match="polish"):
        RefinerConfig.from_dict({"polish": {"iters": 3}})
