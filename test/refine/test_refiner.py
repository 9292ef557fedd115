"""The refiner: the geometry chain, the API's contract, its modes and its errors."""

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
from pose_refiner_ros.net.model import CorrespondenceNet
from pose_refiner_ros.refine.field import correspondences, grid_pixels
from pose_refiner_ros.refine.refiner import Refiner, RefinerConfig, plane_terms
from pose_refiner_ros.render.base import RenderMesh, make_renderer
from pose_refiner_ros.solver.gauss_newton import SolverConfig, solve_pose


@pytest.fixture(scope="module")
def models():
    return procedural_models("val", 3, seed=0)


@pytest.fixture(scope="module")
def scene(models):
    cfg = SyntheticConfig(
        image_width=320,
        image_height=240,
        objects_per_scene=(2, 2),
        distractors_per_scene=(0, 0),
        occluders_per_scene=(0, 0),
    )
    return generate_scene(models, np.random.default_rng(3), cfg, make_renderer("torch"))


def _rot_err(T, T_gt):
    return float(rotation_angle_deg(torch.as_tensor(T[:3, :3]), torch.as_tensor(T_gt[:3, :3])))


def test_oracle_field_through_crop_render_and_solver_recovers_the_pose(models):
    """Render at a perturbed pose in its zoom-in crop, read the exact field from the ground
    truth at the grid, solve: the chain's conventions must agree to reach the truth."""
    m = models[0]
    K = torch.tensor([[500.0, 0, 160], [0, 500.0, 120], [0, 0, 1]])[None]
    T_gt = np.eye(4)
    T_gt[:3, 3] = [0.01, -0.02, 5 * m.diameter_m]
    T_init = perturb_pose(T_gt, np.random.default_rng(0), sigma_r_deg=8.0)
    T_gt_t = torch.as_tensor(T_gt, dtype=torch.float32)[None]
    T0 = torch.as_tensor(T_init, dtype=torch.float32)[None]
    corners = torch.tensor(np.array(m.bbox_corners_m), dtype=torch.float32)[None]
    crop = compute_crops(K, T0, corners, 128)
    mesh = RenderMesh.from_object(m)
    frags = make_renderer("torch").render(
        [mesh], torch.zeros(1, dtype=torch.long), crop.K_crop, T0, 128, 128
    )
    # Dense exact field at every crop pixel: where the rendered point projects at T_gt.
    uv_pix = grid_pixels(128, stride=1)[None]
    xyz = frags.xyz_obj.reshape(1, -1, 3)
    flow = project(transform_points(T_gt_t, xyz), crop.K_crop) - uv_pix
    flow_map = flow.reshape(1, 128, 128, 2).permute(0, 3, 1, 2)
    weight = frags.mask[:, None].float()
    corr = correspondences(frags.xyz_obj, frags.mask, flow_map, weight)
    assert corr.valid.sum() > 50
    res = solve_pose(
        T0.double(),
        corr.pts_obj.double(),
        corr.uv_tgt.double(),
        corr.weight.double(),
        crop.K_crop.double(),
        SolverConfig(iterations=15),
    )
    T = res.T_cam_obj[0].numpy()
    assert _rot_err(T, T_gt) < 0.05
    assert np.linalg.norm(T[:3, 3] - T_gt[:3, 3]) < 1e-3 * m.diameter_m + 1e-4


def test_measured_depth_alone_pulls_the_rendered_surface_onto_it(models):
    """Point-to-plane matches against a clean depth image of the true pose, with no 2D
    correspondence at all: re-rendering and re-matching a few times must reach the truth.
    This checks the matches' conventions: back-projection, pixel centres, normals' frame."""
    m = next(m for m in models if "mug" in m.class_id)  # the handle fixes every rotation
    K = torch.tensor([[500.0, 0, 160], [0, 500.0, 120], [0, 0, 1]], dtype=torch.float64)[None]
    T_gt = np.eye(4)
    T_gt[:3, :3] = perturb_pose(np.eye(4), np.random.default_rng(5), sigma_r_deg=40.0)[:3, :3]
    T_gt[:3, 3] = [0.01, -0.02, 4 * m.diameter_m]
    T_gt_t = torch.as_tensor(T_gt)[None]
    T = torch.as_tensor(perturb_pose(T_gt, np.random.default_rng(6), sigma_r_deg=2.0,
                                     sigma_t_m=(0.003, 0.003, 0.01)))[None]
    corners = torch.tensor(np.array(m.bbox_corners_m), dtype=torch.float64)[None]
    crop = compute_crops(K, T, corners, 128)  # fixed crop: the depth is rendered in it
    mesh = RenderMesh.from_object(m)
    renderer, idx = make_renderer("torch"), torch.zeros(1, dtype=torch.long)
    depth = renderer.render([mesh], idx, crop.K_crop.float(), T_gt_t.float(), 128, 128).depth_m
    err0 = _rot_err(T[0].numpy(), T_gt)
    for _ in range(4):
        frags = renderer.render([mesh], idx, crop.K_crop.float(), T.float(), 128, 128)
        corr = correspondences(frags.xyz_obj, frags.mask, torch.zeros(1, 2, 128, 128),
                               frags.mask[:, None].float())
        kw = plane_terms(depth[:, None], frags, corr, T.float(), crop.K_crop.float(),
                         torch.tensor([[0.5 * m.diameter_m]]))
        assert kw["plane_weights"].sum() > 50
        T = solve_pose(T, corr.pts_obj.double(), corr.uv_tgt.double(),
                       torch.zeros_like(corr.weight, dtype=torch.float64), crop.K_crop,
                       SolverConfig(iterations=10),
                       **{k: v.double() for k, v in kw.items()}).T_cam_obj
    assert _rot_err(T[0].numpy(), T_gt) < 0.2 * err0
    assert np.linalg.norm(T[0, :3, 3].numpy() - T_gt[:3, 3]) < 0.02 * m.diameter_m


def test_refine_result_contract(models, scene):
    refiner = Refiner(ObjectRegistry(models), RefinerConfig(mode="flow", iterations=2))
    objs = [(o.class_id, o.T_cam_obj_init) for o in scene.objects]
    results = refiner.refine(scene.image_rgb, scene.K, objs)
    assert [r.class_id for r in results] == [c for c, _ in objs]
    for r, (_, T0) in zip(results, objs, strict=True):
        assert r.T_cam_obj.shape == (4, 4) and np.isfinite(r.T_cam_obj).all()
        np.testing.assert_allclose(
            r.T_cam_obj[:3, :3] @ r.T_cam_obj[:3, :3].T, np.eye(3), atol=1e-4
        )
        np.testing.assert_allclose(r.iterates[0], T0, atol=1e-6)
        assert r.iterates.shape == (r.iterations + 1, 4, 4)
        np.testing.assert_allclose(r.iterates[-1], r.T_cam_obj, atol=1e-5)
        assert 0.0 <= r.score <= 1.0
        assert r.mode == "rgb"
        assert set(r.timing_ms) >= {"crop", "render", "network", "solve", "total"}
        assert r.diverged == bool(r.reason)
    # With depth, the RGB-D mode runs and says so.
    rd = refiner.refine(scene.image_rgb, scene.K, objs, depth_m=scene.depth_m)
    assert all(r.mode == "rgbd" for r in rd)
    assert refiner.refine(scene.image_rgb, scene.K, []) == []


def test_learned_and_gcf_adam_modes_run_with_a_network(models, scene):
    reg = ObjectRegistry(models)
    net = CorrespondenceNet()
    objs = [(o.class_id, o.T_cam_obj_init) for o in scene.objects]
    for cfg in (RefinerConfig(iterations=2), RefinerConfig(mode="gcf-adam", adam_steps=3)):
        results = Refiner(reg, cfg, net).refine(scene.image_rgb, scene.K, objs)
        assert len(results) == len(objs)
        assert all(np.isfinite(r.T_cam_obj).all() for r in results)


def test_bad_inputs_raise_clear_errors(models, scene):
    refiner = Refiner(ObjectRegistry(models), RefinerConfig(mode="flow", iterations=1))
    T0 = scene.objects[0].T_cam_obj_init
    cid = scene.objects[0].class_id
    with pytest.raises(KeyError, match="not registered"):
        refiner.refine(scene.image_rgb, scene.K, [("no_such_object", T0)])
    with pytest.raises(ValueError, match="K"):
        refiner.refine(scene.image_rgb, np.zeros((3, 3)), [(cid, T0)])
    with pytest.raises(ValueError, match="depth_m"):
        refiner.refine(scene.image_rgb, scene.K, [(cid, T0)], depth_m=np.zeros((5, 5)))
    with pytest.raises(ValueError, match="image"):
        refiner.refine(np.zeros((0, 0, 3), np.uint8), scene.K, [(cid, T0)])
    bad = T0.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="pose"):
        refiner.refine(scene.image_rgb, scene.K, [(cid, bad)])
    with pytest.raises(ValueError, match="trained model"):
        Refiner(ObjectRegistry(models), RefinerConfig(mode="learned"))
    with pytest.raises(ValueError, match="crop_size"):
        RefinerConfig(crop_size=100)


def test_a_pose_sent_off_the_image_is_flagged_diverged(models, scene):
    from pose_refiner_ros.refine.trust import verdicts

    o = scene.objects[0]
    results = verdicts(
        RefinerConfig(mode="flow", iterations=1),
        [o.class_id],
        o.T_cam_obj_init[None],
        torch.as_tensor(np.diag([1.0, 1, 1, 1]))[None],
        torch.zeros(1, 2, 4, 4),
        torch.ones(1),
        1,
        scene.K,
        scene.image_rgb.shape[:2],
        torch.tensor([models[0].diameter_m]),
        "rgb",
        {},
    )
    assert results[0].diverged and "behind the camera" in results[0].reason


def test_a_restart_result_is_judged_by_the_restarts_gate_not_the_main_one(models, scene):
    """A restart's result (``restarted``) passed the restarts' own gate, whose score
    floor (``restart_loop_min_score``) lies below the main gate's: the verdict returns
    it, where the same scores without a restart keep the coarse pose."""
    from pose_refiner_ros.refine.trust import verdicts

    o = scene.objects[0]
    cfg = RefinerConfig()
    assert cfg.restart_loop_min_score < 0.47 < cfg.keep_coarse_below
    T = torch.as_tensor(o.T_cam_obj_gt)[None]
    scores = (torch.tensor([0.3]), torch.tensor([0.47]), torch.tensor([0.01]))

    def verdict(restarted):
        return verdicts(cfg, [o.class_id], o.T_cam_obj_init[None], T, T[:, None].repeat(1, 2, 1, 1),
                        torch.ones(1), 1, scene.K, scene.image_rgb.shape[:2],
                        torch.tensor([models[0].diameter_m]), "rgb", {}, scores,
                        torch.tensor([restarted]))[0]

    kept, taken = verdict(False), verdict(True)
    assert kept.kept_coarse and np.array_equal(kept.T_cam_obj, o.T_cam_obj_init)
    assert not taken.kept_coarse and taken.restarted
    assert np.allclose(taken.T_cam_obj, o.T_cam_obj_gt)


def test_learned_field_on_a_cpu_runs_channels_last_on_its_own_copy():
    """The estimator's channels-last copy gives the network's own field, and the
    caller's network keeps its layout (training may hold it)."""
    from pose_refiner_ros.net.model import NetConfig
    from pose_refiner_ros.refine.estimators import make_estimator

    torch.manual_seed(0)
    net = CorrespondenceNet(NetConfig(width=32, feat_dim=16, hidden=16, ctx=16)).eval()
    img, ren = torch.rand(2, 3, 64, 64), torch.rand(2, 8, 64, 64)
    with torch.no_grad():
        ref = net(img, ren)
    flow, weight = make_estimator("learned", net)(img, ren)
    assert flow.is_contiguous() and weight.is_contiguous()
    torch.testing.assert_close(flow, ref.flows_px[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(weight, torch.sigmoid(ref.weight_logits[-1]), atol=1e-5, rtol=1e-5)
    w = next(p for p in net.parameters() if p.dim() == 4)
    assert w.is_contiguous()  # the caller's network is untouched


def test_learned_field_traced_on_a_cpu_gives_the_module_s_field_for_any_batch_and_crop():
    """The TorchScript graph traced at the first call (one object, 64 px) gives the
    module's own field for later batches and crop sizes, and follows ``gru_iters``."""
    from pose_refiner_ros.net.model import NetConfig
    from pose_refiner_ros.refine.estimators import LearnedField

    torch.manual_seed(0)
    net = CorrespondenceNet(NetConfig(width=32, feat_dim=16, hidden=16, ctx=16)).eval()
    for iters in (None, 2):
        traced = LearnedField(net, gru_iters=iters)
        eager = LearnedField(net, gru_iters=iters, jit=False)
        for B, S in ((1, 64), (3, 64), (2, 96)):
            img, ren = torch.rand(B, 3, S, S), torch.rand(B, 8, S, S)
            flow, weight = traced(img, ren)
            flow0, weight0 = eager(img, ren)
            assert flow.shape == (B, 2, S // 8, S // 8)
            torch.testing.assert_close(flow, flow0, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(weight, weight0, atol=1e-6, rtol=1e-6)
        assert traced._traced is not None and eager._traced is None
    with torch.no_grad():  # a different gru_iters is a different field: the loop is traced
        short = net(img, ren, gru_iters=1).flows_px[-1]
    assert (LearnedField(net, gru_iters=2)(img, ren)[0] - short).abs().max() > 1e-4


def test_learned_field_runs_the_module_when_tracing_fails(monkeypatch, caplog):
    """Tracing is an optimisation: when it fails the estimator says so once and runs the
    module, with the same field."""
    from pose_refiner_ros.net.model import NetConfig
    from pose_refiner_ros.refine.estimators import LearnedField

    torch.manual_seed(0)
    net = CorrespondenceNet(NetConfig(width=32, feat_dim=16, hidden=16, ctx=16)).eval()
    img, ren = torch.rand(2, 3, 64, 64), torch.rand(2, 8, 64, 64)

    def broken(*a, **k):
        raise RuntimeError("no tracing here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    field = LearnedField(net)
    with caplog.at_level("WARNING"):
        flow, _ = field(img, ren)
        field(img, ren)
    assert sum("could not be traced" in r.getMessage() for r in caplog.records) == 1
    torch.testing.assert_close(flow, LearnedField(net, jit=False)(img, ren)[0])
