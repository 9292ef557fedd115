"""Sparse viewpoint models and the render-free region modality: the model's contour is
where the rasterizer puts the silhouette, the cache is keyed by the mesh, and the
coarse-to-fine solve pulls a perturbed pose onto an object in a synthetic photo."""

import numpy as np
import pytest
import torch

from pose_refiner_ros.data.perturb import perturb_pose
from pose_refiner_ros.data.procedural import procedural_models
from pose_refiner_ros.geometry.lie import rotation_angle_deg
from pose_refiner_ros.refine.region import RegionConfig
from pose_refiner_ros.refine.sparse_region import sparse_contour, sparse_region_solve
from pose_refiner_ros.refine.viewpoint_model import build_viewpoint_model, load_or_build
from pose_refiner_ros.render.base import RenderMesh, make_renderer

H, W = 120, 160
K = np.array([[220.0, 0, 79.5], [0, 220.0, 59.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def model():
    return procedural_models("val", 8, seed=2)[3]  # a compound shape, no symmetry


@pytest.fixture(scope="module")
def vmodel(model):
    mesh = RenderMesh.from_object(model)
    return build_viewpoint_model(make_renderer("torch"), mesh, model.diameter_m, points=120,
                                 subdivisions=2, size_px=128)


def _pose(model, seed=1):
    T = np.eye(4)
    T[:3, :3] = perturb_pose(np.eye(4), np.random.default_rng(seed), sigma_r_deg=40.0)[:3, :3]
    T[2, 3] = 3.0 * model.diameter_m
    return T


def _render(model, T):
    mesh = RenderMesh.from_object(model)
    return make_renderer("torch").render([mesh], torch.zeros(1, dtype=torch.long),
                                         torch.as_tensor(K, dtype=torch.float32)[None],
                                         torch.as_tensor(T, dtype=torch.float32)[None], H, W)


def _view_pose(vm, k, dist):
    """A pose that sees the object exactly from view ``k``."""
    d = vm.dirs[k].double().numpy()
    z = -d
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ (vm.centre.double().numpy() + dist * d)
    return T


def test_model_contour_is_where_the_rasterizer_puts_the_silhouette(model, vmodel):
    assert vmodel.dirs.shape == (162, 3) and vmodel.pts.shape == (162, 120, 3)
    T = _view_pose(vmodel, 7, 3.0 * model.diameter_m)
    Tt = torch.as_tensor(T, dtype=torch.float32)[None]
    assert vmodel.nearest_view(Tt).item() == 7
    c = sparse_contour([vmodel], torch.zeros(1, dtype=torch.long), Tt,
                       torch.as_tensor(K, dtype=torch.float32)[None])
    mask = _render(model, T).mask[0]
    v = c.valid[0]
    assert v.sum() > 80
    uv, n = c.uv[0][v], c.normal[0][v]

    def on_mask(p):
        p = p.round().long()
        p[:, 0].clamp_(0, W - 1)
        p[:, 1].clamp_(0, H - 1)
        return mask[p[:, 1], p[:, 0]]

    # Within a pixel of the edge: inside just before it, outside just after it.
    assert on_mask(uv - 1.5 * n).float().mean() > 0.9
    assert (~on_mask(uv + 1.5 * n)).float().mean() > 0.9
    assert (c.fg_px[0][v] > 0).all() and (c.bg_px[0][v] > 0).all()


def test_cache_is_reused_for_the_same_mesh_and_rebuilt_for_another(model, tmp_path):
    mesh = RenderMesh.from_object(model)
    r = make_renderer("torch")
    kw = dict(points=16, subdivisions=0, size_px=48)
    a = load_or_build(r, mesh, model.diameter_m, tmp_path, **kw)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    b = load_or_build(r, mesh, model.diameter_m, tmp_path, **kw)
    assert torch.equal(a.pts, b.pts)
    moved = RenderMesh(mesh.verts_m * 1.1, mesh.faces, mesh.vert_colors, mesh.vert_normals)
    load_or_build(r, moved, model.diameter_m * 1.1, tmp_path, **kw)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    files[0].write_bytes(b"not a model")  # a broken cache file is rebuilt, not fatal
    c = load_or_build(r, mesh, model.diameter_m, tmp_path, **kw)
    assert torch.equal(a.pts, c.pts)


def _photo(model, T, seed=0):
    frags = _render(model, T)
    rng = np.random.default_rng(seed)
    bg = rng.uniform(0.0, 1.0, (H // 8, W // 8, 3)).repeat(8, 0).repeat(8, 1) * [0.3, 0.9, 0.4]
    img = bg.copy()
    img[frags.mask[0].numpy()] = [0.9, 0.3, 0.6]
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return torch.as_tensor(img, dtype=torch.float32).permute(2, 0, 1)[None]


def test_sparse_solve_pulls_a_perturbed_pose_onto_the_object(model):
    vm = build_viewpoint_model(make_renderer("torch"), RenderMesh.from_object(model),
                               model.diameter_m, points=150, subdivisions=3, size_px=160)
    T_gt = _pose(model, 3)
    img = _photo(model, T_gt)
    T0 = perturb_pose(T_gt, np.random.default_rng(4), sigma_r_deg=8.0,
                      sigma_t_m=(0.05 * model.diameter_m,) * 2 + (0.1 * model.diameter_m,))
    Kt = torch.as_tensor(K, dtype=torch.float32)[None]
    T, score = sparse_region_solve(img, Kt, torch.as_tensor(T0, dtype=torch.float32)[None],
                                   [vm], torch.zeros(1, dtype=torch.long),
                                   torch.tensor([1.0]), RegionConfig(),
                                   [16.0] * 4 + [8.0] * 4 + [4.0] * 4)
    G = torch.as_tensor(T_gt, dtype=torch.float32)[None]
    e0 = rotation_angle_deg(torch.as_tensor(T0, dtype=torch.float32)[None, :3, :3], G[:, :3, :3])
    e1 = rotation_angle_deg(T[:, :3, :3], G[:, :3, :3])
    t0 = np.linalg.norm(T0[:3, 3] - T_gt[:3, 3])
    t1 = (T[0, :3, 3] - G[0, :3, 3]).norm().item()
    assert e1.item() < 0.5 * e0.item() and t1 < 0.6 * t0
    assert score.item() > 0.5
