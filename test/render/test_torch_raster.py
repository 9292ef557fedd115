"""The torch rasterizer against an independent reference: trimesh ray casting.

A ray is cast from the camera centre through every pixel centre (OpenCV convention: the
centre of pixel (u, v) is at (u, v)); its nearest hit gives the reference mask, depth,
object-frame point and face.
"""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
import torch
import trimesh

from pose_refiner_ros.render.base import RenderMesh, make_renderer
from pose_refiner_ros.render.torch_raster import TorchRasterizer

H, W = 80, 96


def _meshes():
    annulus = trimesh.creation.annulus(r_min=0.03, r_max=0.06, height=0.04, sections=48)
    return {
        "box": trimesh.creation.box(extents=(0.10, 0.15, 0.08)),
        "icosphere": trimesh.creation.icosphere(subdivisions=3, radius=0.08),
        "cylinder": trimesh.creation.cylinder(radius=0.05, height=0.15, sections=40),
        "torus": trimesh.creation.torus(major_radius=0.06, minor_radius=0.022,
                                        major_sections=48, minor_sections=24),
        "annulus": annulus,
    }


MESHES = _meshes()


def _K():
    return np.array([[170.0, 0.0, 47.3], [0.0, 175.0, 40.8], [0.0, 0.0, 1.0]])


def _pose(seed: int) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    rng = np.random.default_rng(seed)
    T[:3, 3] = [rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(0.45, 0.6)]
    return T


def raycast(mesh: trimesh.Trimesh, K: np.ndarray, T_cam_obj: np.ndarray, height: int,
            width: int):
    """Reference: nearest hit of the ray through every pixel centre (float64)."""
    v, u = np.mgrid[0:height, 0:width]
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1).astype(np.float64)
    dirs_cam = pix @ np.linalg.inv(K).T
    R, t = T_cam_obj[:3, :3], T_cam_obj[:3, 3]
    origins = np.tile(-R.T @ t, (len(dirs_cam), 1))
    dirs_obj = dirs_cam @ R  # R^T d, row-wise
    tri, ray, loc = trimesh.ray.ray_triangle.RayMeshIntersector(mesh).intersects_id(
        origins, dirs_obj, return_locations=True, multiple_hits=True
    )
    depth_all = (loc @ R.T + t)[:, 2]
    order = np.lexsort((depth_all, ray))  # by ray, then depth
    ray, depth_all, loc, tri = ray[order], depth_all[order], loc[order], tri[order]
    first = np.ones(len(ray), bool)
    first[1:] = ray[1:] != ray[:-1]
    n = height * width
    mask = np.zeros(n, bool)
    depth = np.zeros(n)
    xyz = np.zeros((n, 3))
    face = np.full(n, -1)
    mask[ray[first]] = True
    depth[ray[first]] = depth_all[first]
    xyz[ray[first]] = loc[first]
    face[ray[first]] = tri[first]
    return (mask.reshape(height, width), depth.reshape(height, width),
            xyz.reshape(height, width, 3), face.reshape(height, width))


def _render(meshes, mesh_idx, Ks, Ts, height=H, width=W):
    rmeshes = [RenderMesh.from_trimesh(m) for m in meshes]
    return TorchRasterizer().render(
        rmeshes,
        torch.as_tensor(mesh_idx, dtype=torch.int64),
        torch.as_tensor(np.asarray(Ks), dtype=torch.float32),
        torch.as_tensor(np.asarray(Ts), dtype=torch.float32),
        height,
        width,
    )


@pytest.mark.parametrize("name", sorted(MESHES))
@pytest.mark.parametrize("seed", [0, 2])
def test_matches_ray_casting(name, seed):
    mesh = MESHES[name]
    K, T = _K(), _pose(seed)
    frag = _render([mesh], [0], [K], [T])
    mask_ref, depth_ref, xyz_ref, face_ref = raycast(mesh, K, T, H, W)
    mask = frag.mask[0].numpy()
    assert mask_ref.sum() > 0.1 * H * W  # the object fills a good part of the image
    assert (mask == mask_ref).mean() >= 0.99

    both = mask & mask_ref
    depth = frag.depth_m[0].numpy()
    rel = np.abs(depth[both] - depth_ref[both]) / depth_ref[both]
    assert rel.max() <= 1e-4
    diameter = np.linalg.norm(mesh.extents)
    err_xyz = np.linalg.norm(frag.xyz_obj[0].numpy()[both] - xyz_ref[both], axis=1)
    assert err_xyz.max() <= 1e-4 * diameter
    # a pixel centre on an edge may go to either face
    assert (frag.face_id[0].numpy()[both] == face_ref[both]).mean() >= 0.99


def test_face_and_bary_reconstruct_the_point():
    mesh = MESHES["torus"]
    K, T = _K(), _pose(3)
    frag = _render([mesh], [0], [K], [T])
    m = frag.mask[0]
    face = frag.face_id[0][m].numpy()
    bary = frag.bary[0][m].numpy()
    assert face.min() >= 0 and face.max() < len(mesh.faces)
    assert np.all(bary >= -1e-5) and np.allclose(bary.sum(1), 1.0, atol=1e-5)
    tri = mesh.vertices[mesh.faces[face]]  # (N, 3, 3)
    xyz = np.einsum("nk,nkc->nc", bary, tri)
    np.testing.assert_allclose(xyz, frag.xyz_obj[0][m].numpy(), atol=1e-6)
    # the point is on the camera ray through the pixel centre, at the rendered depth
    v, u = np.nonzero(m.numpy())
    p_cam = xyz @ T[:3, :3].T + T[:3, 3]
    depth = frag.depth_m[0][m].numpy()
    np.testing.assert_allclose(p_cam[:, 2], depth, rtol=1e-5)
    uv = p_cam[:, :2] / p_cam[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    np.testing.assert_allclose(uv, np.stack([u, v], 1), atol=1e-3)


def test_normals_are_unit_and_rotated():
    mesh = MESHES["icosphere"]  # vertex normals of a sphere are radial
    K, T = _K(), _pose(4)
    frag = _render([mesh], [0], [K], [T])
    m = frag.mask[0]
    n = frag.normal_cam[0][m].numpy()
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    radial = frag.xyz_obj[0][m].numpy() @ T[:3, :3].T
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    assert np.min(np.sum(n * radial, axis=1)) > 0.99
    assert np.all(n[:, 2] < 0.2)  # visible side faces the camera (-z)


def test_background_values():
    frag = _render([MESHES["box"]], [0], [_K()], [_pose(0)])
    bg = ~frag.mask
    assert bg.any()
    assert torch.all(frag.depth_m[bg] == 0)
    assert torch.all(frag.xyz_obj[bg] == 0)
    assert torch.all(frag.normal_cam[bg] == 0)
    assert torch.all(frag.bary[bg] == 0)
    assert torch.all(frag.face_id[bg] == -1)
    assert frag.mask.dtype == torch.bool and frag.face_id.dtype == torch.int64
    assert frag.depth_m.shape == (1, H, W) and frag.xyz_obj.shape == (1, H, W, 3)


def test_batch_of_different_meshes_equals_separate_calls():
    names = ["box", "torus", "cylinder", "torus", "icosphere"]
    meshes = [MESHES[k] for k in ("box", "torus", "cylinder", "icosphere")]
    mesh_idx = [0, 1, 2, 1, 3]
    Ks = [_K() * [[1 + 0.1 * i], [1 + 0.1 * i], [1]] for i in range(len(names))]
    Ts = [_pose(10 + i) for i in range(len(names))]
    batch = _render(meshes, mesh_idx, Ks, Ts)
    for b, m in enumerate(mesh_idx):
        single = _render([meshes[m]], [0], [Ks[b]], [Ts[b]])
        # identical up to float rounding (batched matmuls may round differently): a pixel
        # centre on an edge could change sides, none did here
        same = (batch.face_id[b] == single.face_id[0]).float().mean()
        assert same >= 0.999 and (batch.mask[b] == single.mask[0]).float().mean() >= 0.999
        both = batch.mask[b] & single.mask[0] & (batch.face_id[b] == single.face_id[0])
        # float32 pixel coordinates round at ~1e-5 px: barycentrics agree to ~1e-5
        for field, atol in (("depth_m", 1e-6), ("xyz_obj", 1e-6), ("normal_cam", 1e-4),
                            ("bary", 1e-4)):
            torch.testing.assert_close(getattr(batch, field)[b][both],
                                       getattr(single, field)[0][both], atol=atol, rtol=0)


def test_nearest_surface_wins_and_near_plane_drops_faces():
    # two parallel squares facing the camera, the smaller one in front
    def square(half, z):
        v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
        return trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3]], process=False)

    scene = trimesh.util.concatenate([square(0.1, 0.0), square(0.05, -0.1)])
    K = np.array([[100.0, 0, 31.5], [0, 100.0, 31.5], [0, 0, 1]])
    T = np.eye(4)
    T[2, 3] = 0.5
    frag = _render([scene], [0], [K], [T], 64, 64)
    assert frag.depth_m[0, 32, 32] == pytest.approx(0.4, rel=1e-6)
    assert frag.face_id[0, 32, 32] >= 2  # a face of the second (front) square
    assert frag.depth_m[0, 32, 14] == pytest.approx(0.5, rel=1e-6)
    # move the camera so that the front square is behind the near plane: it vanishes
    T[2, 3] = 0.1 + 5e-4
    frag = _render([scene], [0], [K], [T], 64, 64)
    assert frag.depth_m[0, 32, 32] == pytest.approx(0.1 + 5e-4, rel=1e-5)


def test_pixel_centres_are_at_integer_coordinates():
    # a square whose projection spans u, v in [9.99, 20.01]: exactly pixels 10..20
    K = np.array([[100.0, 0, 0.0], [0, 100.0, 0.0], [0, 0, 1]])
    lo, hi = 9.99 / 100 * 0.5, 20.01 / 100 * 0.5
    v = np.array([[lo, lo, 0], [hi, lo, 0], [hi, hi, 0], [lo, hi, 0]])
    sq = trimesh.Trimesh(v, [[0, 1, 2], [0, 2, 3]], process=False)
    T = np.eye(4)
    T[2, 3] = 0.5
    frag = _render([sq], [0], [K], [T], 32, 32)
    rows, cols = np.nonzero(frag.mask[0].numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 20, 10, 20)
    assert frag.mask[0].sum() == 11 * 11


def test_empty_and_out_of_view():
    T = _pose(0)
    T[0, 3] = 10.0  # far to the right
    frag = _render([MESHES["box"]], [0], [_K()], [T])
    assert not frag.mask.any() and torch.all(frag.face_id == -1)
    T[0, 3] = 0.0
    T[2, 3] = -1.0  # behind the camera
    assert not _render([MESHES["box"]], [0], [_K()], [T]).mask.any()


def test_chunking_gives_the_same_result():
    mesh = RenderMesh.from_trimesh(MESHES["torus"])
    args = ([mesh], torch.zeros(2, dtype=torch.int64),
            torch.as_tensor(np.stack([_K()] * 2), dtype=torch.float32),
            torch.as_tensor(np.stack([_pose(5), _pose(6)]), dtype=torch.float32), H, W)
    full = TorchRasterizer().render(*args)
    chunked = TorchRasterizer(max_candidates=500).render(*args)
    for field in ("mask", "depth_m", "face_id", "bary"):
        assert torch.equal(getattr(full, field), getattr(chunked, field)), field


def test_input_checks():
    r = TorchRasterizer()
    mesh = RenderMesh.from_trimesh(MESHES["box"])
    K = torch.as_tensor(_K(), dtype=torch.float32)[None]
    T = torch.as_tensor(_pose(0), dtype=torch.float32)[None]
    with pytest.raises(ValueError, match="K"):
        r.render([mesh], torch.zeros(1, dtype=torch.int64), K[0], T, H, W)
    with pytest.raises(ValueError, match="T_cam_obj"):
        r.render([mesh], torch.zeros(1, dtype=torch.int64), K, T[:, :3], H, W)
    with pytest.raises(ValueError, match="mesh_idx"):
        r.render([mesh], torch.ones(1, dtype=torch.int64), K, T, H, W)


def test_make_renderer():
    assert isinstance(make_renderer("torch"), TorchRasterizer)
    assert isinstance(make_renderer("auto", device="cpu"), TorchRasterizer)
    with pytest.raises(ValueError, match="backend"):
        make_renderer("opengl")
