"""The tracker's NumPy measurements and solve (``track.measure``, ``track.solve``) are the
refiner's torch modality (``refine.sparse_region``, ``refine.sparse_depth``,
``solver.gauss_newton``) written again for speed: on the same frame and pose they must
give the same contour, line measurements, depth matches and Gauss-Newton step."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from pose_refiner_ros.data.procedural import procedural_models
from pose_refiner_ros.data.sequences import MotionConfig, generate_sequence
from pose_refiner_ros.refine.region import RegionConfig
from pose_refiner_ros.refine.sparse_depth import sparse_depth_term
from pose_refiner_ros.refine.sparse_region import (
    scaled_intrinsics,
    sparse_contour,
    sparse_line_term,
    sparse_lines,
)
from pose_refiner_ros.refine.viewpoint_model import build_viewpoint_model
from pose_refiner_ros.render.base import RenderMesh, make_renderer
from pose_refiner_ros.solver.gauss_newton import gauss_newton_steps
from pose_refiner_ros.track.line_kernel import _bilinear
from pose_refiner_ros.track.measure import (
    ViewArrays,
    match_depth,
    measure_lines,
    project_contour,
)
from pose_refiner_ros.track.solve import LineResiduals, PlaneResiduals, PointResiduals, lm_steps

SCALE = 1.7  # image pixels per scaled pixel
CFG = RegionConfig()


def _torch(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def _torch_setup(vm, K, T):
    vm64 = type(vm)(*(getattr(vm, k).double() if getattr(vm, k).is_floating_point()
                      else getattr(vm, k) for k in vm.__dataclass_fields__))
    K_s = scaled_intrinsics(_torch(K)[None], _torch([SCALE]))
    contour = sparse_contour([vm64], torch.zeros(1, dtype=torch.long), _torch(T)[None], K_s)
    return vm64, K_s, contour


def test_bilinear_samples_match_grid_sample():
    rng = np.random.default_rng(0)
    img = rng.random((30, 40, 3)).astype(np.float32)
    pos = rng.uniform(-3, 43, (7, 9, 2))
    ours, inside = np.zeros((7, 9, 3)), np.zeros((7, 9), bool)
    for i, j in np.ndindex(7, 9):
        inside[i, j] = _bilinear(img, pos[i, j, 0], pos[i, j, 1], ours[i, j])
    grid = (_torch(pos) + 0.5) / _torch([40, 30]) * 2 - 1
    ref = torch.nn.functional.grid_sample(_torch(img).permute(2, 0, 1)[None], grid[None],
                                          padding_mode="border", align_corners=False)
    np.testing.assert_allclose(ours, ref[0].permute(1, 2, 0).numpy(), atol=1e-4)
    np.testing.assert_array_equal(inside, (grid.abs() <= 1).all(-1).numpy())


def test_contour_and_lines_match_the_torch_modality(scene):
    vm, img, _, K, T = scene
    va = ViewArrays.from_model(vm)
    K_s = K.copy()
    K_s[:2] /= SCALE
    ours = project_contour(va, T, K_s)
    _, _, ref = _torch_setup(vm, K, T)
    keep = ref.valid[0].numpy()
    assert ours.view == int(ref.view[0])
    np.testing.assert_allclose(ours.uv, ref.uv[0].numpy()[keep], atol=1e-9)
    np.testing.assert_allclose(ours.normal, ref.normal[0].numpy()[keep], atol=1e-9)
    np.testing.assert_allclose(ours.fg_px, ref.fg_px[0].numpy()[keep], atol=1e-9)

    rgb = img.astype(np.float32) / 255.0
    for half in (12.0, 6.0):
        lines = measure_lines(rgb, ours, SCALE, CFG, half)
        ref_l = sparse_lines(_torch(rgb).permute(2, 0, 1)[None], ref, _torch([SCALE]), CFG,
                             half)
        seen = ref_l.seen[0].numpy()[keep]
        np.testing.assert_array_equal(lines.seen, seen)
        assert seen.sum() > 50
        # Interpolation differs in float rounding only (OpenCV against torch).
        np.testing.assert_allclose(lines.mean_px, ref_l.mean_px[0].numpy()[keep], atol=2e-3)
        np.testing.assert_allclose(lines.var_px2[seen], ref_l.var_px2[0].numpy()[keep][seen],
                                   rtol=1e-3)
        np.testing.assert_allclose(lines.score, float(ref_l.score[0]), atol=1e-4)


def test_gauss_newton_step_matches_the_torch_solver(scene):
    vm, img, depth, K, T = scene
    va = ViewArrays.from_model(vm)
    K_s = K.copy()
    K_s[:2] /= SCALE
    rgb = img.astype(np.float32) / 255.0
    c = project_contour(va, T, K_s)
    lines = measure_lines(rgb, c, SCALE, CFG, 8.0)
    w = lines.seen * (CFG.min_std_px**2 / np.maximum(lines.var_px2, CFG.min_std_px**2))
    target = c.uv + lines.mean_px[:, None] * c.normal
    p, n, X = match_depth(va, c.view, T, depth, K, 0.03)
    assert len(p) > 20
    ours = lm_steps(T, [LineResiduals(c.pts_obj, target, c.normal, w, K_s, CFG.huber_px),
                        PlaneResiduals(p, n, X, np.ones(len(p)), K_s, 4.0)], iterations=3)

    vm64, K_s_t, ref_c = _torch_setup(vm, K, T)
    ref_l = sparse_lines(_torch(rgb).permute(2, 0, 1)[None], ref_c, _torch([SCALE]), CFG, 8.0)
    terms = [sparse_line_term(ref_c, ref_l, K_s_t, CFG, 8.0),
             sparse_depth_term([vm64], torch.zeros(1, dtype=torch.long), ref_c.view,
                               _torch(T)[None], _torch(depth)[None, None], _torch(K)[None],
                               K_s_t, _torch([0.03]))]
    ref = gauss_newton_steps(_torch(T)[None], terms, 3)[0].numpy()
    assert np.abs(ours - T).max() > 1e-4  # the step moved the pose
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_compiled_line_normal_equations_match_the_numpy_terms():
    from pose_refiner_ros.track.solve import _normal_equations, _term_cost

    rng = np.random.default_rng(1)
    n = 300
    pts = rng.normal(size=(n, 3)) * 0.05
    pts[:5] = [0.0, 0.0, -5.0]  # behind the camera: no weight, a bounded cost
    T = np.eye(4)
    T[:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0] @ np.diag([1, 1, -1])
    T[:3, :3] *= np.sign(np.linalg.det(T[:3, :3]))
    T[2, 3] = 0.8
    K = np.array([[300.0, 0, 64], [0, 310, 60], [0, 0, 1]])
    normal = rng.normal(size=(n, 2))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    pc = pts @ T[:3, :3].T + T[:3, 3]
    target = pc[:, :2] / pc[:, 2:] * [300, 310] + [64, 60] + rng.normal(size=(n, 2)) * 3
    term = LineResiduals(pts, target, normal, rng.random(n), K, 2.0, 1e-3)
    ours, ref = term.normal_equations(T), _normal_equations(term, T)
    assert np.abs(ref[0]).max() > 1.0 and ref[2] > 0  # both Huber branches are used
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(term.cost(T), _term_cost(term, T), rtol=1e-12)


def test_compiled_point_normal_equations_match_the_numpy_terms():
    from pose_refiner_ros.track.solve import _normal_equations, _term_cost

    rng = np.random.default_rng(2)
    n = 300
    pts = rng.normal(size=(n, 3)) * 0.05
    pts[:5] = [0.0, 0.0, -5.0]  # behind the camera: no weight, a bounded cost
    T = np.eye(4)
    T[2, 3] = 0.8
    K = np.array([[300.0, 0, 64], [0, 310, 60], [0, 0, 1]])
    pc = pts @ T[:3, :3].T + T[:3, 3]
    uv = pc[:, :2] / pc[:, 2:] * [300, 310] + [64, 60] + rng.normal(size=(n, 2)) * 3
    w = rng.random(n)
    w[-20:] = 0.0  # padding
    term = PointResiduals(pts, uv, w, K, 2.0, 1e-3)
    ours, ref = term.normal_equations(T), _normal_equations(term, T)
    assert np.abs(ref[0]).max() > 1.0 and ref[2] > 0
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(term.cost(T), _term_cost(term, T), rtol=1e-12)


@pytest.mark.parametrize("exact", [False, True])
def test_compiled_lm_candidate_matches_the_numpy_step(exact):
    from pose_refiner_ros.track.solve import _retract
    from pose_refiner_ros.track.solve_kernel import lm_candidate

    rng = np.random.default_rng(3)
    J = rng.normal(size=(50, 6))
    H, g = J.T @ J, rng.normal(size=6) * 5.0
    T = np.eye(4)
    T[:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    T[:3, :3] *= np.sign(np.linalg.det(T[:3, :3]))
    T[:3, 3] = [0.05, -0.02, 0.7]
    for lam, max_step in ((1e-3, 0.5), (10.0, 0.5), (1e-6, 0.05)):  # clipped or not
        diag = np.diag(H)
        xi = -np.linalg.solve(H + lam * np.diag(diag) + 1e-9 * (diag.mean() + 1) * np.eye(6), g)
        xi = xi * min(1.0, max_step / np.linalg.norm(xi[3:]))
        np.testing.assert_allclose(lm_candidate(H, g, lam, max_step, T, exact),
                                   _retract(xi, T, exact), rtol=1e-9, atol=1e-12)


def test_point_residuals_match_the_reprojection_term(scene):
    from pose_refiner_ros.solver.terms import ReprojectionTerm

    vm, _, _, K, T = scene
    rng = np.random.default_rng(1)
    pts = vm.surf_pts[0][vm.surf_valid[0]].double().numpy()[:40]
    uv = rng.uniform(50, 150, (len(pts), 2))
    w = rng.uniform(0.5, 1.0, len(pts))
    r, J, _ = PointResiduals(pts, uv, w, K, 2.0).evaluate(T)
    ref = ReprojectionTerm(_torch(pts)[None], _torch(uv)[None], _torch(w)[None],
                           _torch(K)[None], huber=2.0).evaluate(_torch(T)[None])
    np.testing.assert_allclose(r, ref.r[0].numpy(), atol=1e-9)
    np.testing.assert_allclose(J, ref.J[0].numpy(), rtol=1e-9, atol=1e-9)


def test_texture_follows_surface_points_into_the_next_frame():
    """Corners inside the object, followed by optical flow from one frame to the next and
    lifted onto the surface at the previous pose, land where the next pose projects them."""
    import cv2

    from pose_refiner_ros.track.texture import TextureConfig, follow_surface

    models = procedural_models("bench", 4, seed=0)
    cfg = MotionConfig(n_frames=3, objects=1, occluder=False, width=320, height=240)
    f0, f1, _ = generate_sequence(models, np.random.default_rng(7), cfg)
    cid, T0, _ = f0.objects[0]
    model = next(m for m in models if m.class_id == cid)
    vm = build_viewpoint_model(make_renderer("torch"), RenderMesh.from_object(model),
                               model.diameter_m, points=120, subdivisions=2, size_px=128)
    grey = [cv2.cvtColor(f.image_rgb, cv2.COLOR_RGB2GRAY) for f in (f0, f1)]
    pts, uv = follow_surface(ViewArrays.from_model(vm), T0, f0.K, *grey,
                             TextureConfig(max_fb_px=1.0))
    assert len(pts) >= 10
    T1 = f1.objects[0][1]
    pc = pts @ T1[:3, :3].T + T1[:3, 3]
    proj = pc[:, :2] / pc[:, 2:] * [f1.K[0, 0], f1.K[1, 1]] + f1.K[:2, 2]
    assert np.median(np.linalg.norm(proj - uv, axis=1)) < 1.0


@pytest.mark.parametrize("with_occluder,outlier_px", [(False, 0.0), (True, 0.0), (False, 2.0)])
def test_region_solve_matches_the_torch_solve(scene, with_occluder, outlier_px):
    """The refiner's polish and consensus run ``region_solve``; it must end where the
    batched torch solve ends, with an occluder map too, and with far edges weighted down
    (``RegionConfig.outlier_px``, the refiner's default)."""
    from pose_refiner_ros.geometry.lie import rotation_angle_deg
    from pose_refiner_ros.refine.sparse_region import sparse_region_solve
    from pose_refiner_ros.track.measure import region_solve

    vm, img, _, K, T = scene
    rgb = img.astype(np.float32) / 255.0
    H, W = rgb.shape[:2]
    occ = None
    if with_occluder:  # something 10 cm in front of the object over the left half
        occ = np.zeros((H, W), np.float32)
        occ[:, : int(T[0, 3] / T[2, 3] * K[0, 0] + K[0, 2])] = 1.0 / (T[2, 3] - 0.1)
    sched = (16.0, 8.0, 6.0, 6.0)
    cfg = replace(CFG, outlier_px=outlier_px)
    ours, _ = region_solve(rgb, K, T, ViewArrays.from_model(vm), SCALE, cfg, sched, 2,
                           occluder_inv_depth=occ)
    vm64, _, _ = _torch_setup(vm, K, T)
    ref, _ = sparse_region_solve(_torch(rgb).permute(2, 0, 1)[None], _torch(K)[None],
                                 _torch(T)[None], [vm64], torch.zeros(1, dtype=torch.long),
                                 _torch([SCALE]), cfg, sched, lm_iterations=2,
                                 occluder_inv_depth=None if occ is None else
                                 _torch(occ)[None, None])
    ref = ref[0].numpy()
    assert np.abs(ours - T).max() > 1e-4
    dR = float(rotation_angle_deg(torch.as_tensor(ours[:3, :3]), torch.as_tensor(ref[:3, :3])))
    assert dR < 0.05 and np.abs(ours[:3, 3] - ref[:3, 3]).max() < 2e-4


def test_region_solve_stops_only_within_the_final_run_of_equal_lengths(scene):
    """``stop_px`` ends the schedule's last run of equal line lengths at the first step
    that moved the contour less than it, and never cuts a coarser step short."""
    from pose_refiner_ros.track.measure import region_solve

    vm, img, _, K, T = scene
    rgb = img.astype(np.float32) / 255.0
    va = ViewArrays.from_model(vm)

    def solve(sched, stop_px):
        return region_solve(rgb, K, T, va, SCALE, CFG, sched, 1, stop_px=stop_px)[0]

    full = (16.0, 8.0, 8.0, 6.0, 6.0, 6.0)
    # Any step satisfies a huge threshold: the two 8s (not the final run) and one 6 run.
    np.testing.assert_allclose(solve(full, 1e9), solve((16.0, 8.0, 8.0, 6.0), 0.0))
    # A threshold no step satisfies, and 0 (off), run every step.
    np.testing.assert_allclose(solve(full, 1e-12), solve(full, 0.0))
    assert np.abs(solve(full, 0.0) - solve((16.0, 8.0, 8.0, 6.0), 0.0)).max() > 1e-7
