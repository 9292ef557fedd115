"""The procedural mesh family: determinism, split disjointness, sizes, kinds."""

import numpy as np
import pytest

from pose_refiner_ros.data import procedural
from pose_refiner_ros.data.procedural import (
    DIAMETER_RANGE_M,
    KINDS,
    make_mesh,
    procedural_mesh,
    symmetry_transforms,
)

N = len(KINDS) * 2


@pytest.fixture(scope="module")
def train_meshes():
    return [procedural_mesh("train", i) for i in range(N)]


def test_deterministic_per_split_index_seed():
    for i in (0, 7):
        a, ia = procedural_mesh("val", i, seed=3)
        b, ib = procedural_mesh("val", i, seed=3)
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.faces, b.faces)
        np.testing.assert_array_equal(ia["vert_colors"], ib["vert_colors"])
    c, _ = procedural_mesh("val", 0, seed=4)
    a, _ = procedural_mesh("val", 0, seed=3)
    assert a.vertices.shape != c.vertices.shape or not np.allclose(a.vertices, c.vertices)


def _key(mesh):
    return (mesh.vertices.shape, np.round(mesh.vertices[:5], 9).tobytes())


def test_splits_are_disjoint(train_meshes):
    train = {_key(m) for m, _ in train_meshes}
    for split in ("val", "bench"):
        for i in range(N):
            m, _ = procedural_mesh(split, i)
            assert _key(m) not in train, f"{split} mesh {i} equals a train mesh"
    # other seeds of train never reproduce bench either
    bench = {_key(procedural_mesh("bench", i)[0]) for i in range(N)}
    for seed in range(1, 3):
        for i in range(N):
            assert _key(procedural_mesh("train", i, seed)[0]) not in bench


def test_every_kind_sizes_faces_and_closed_components(train_meshes):
    kinds = set()
    for mesh, info in train_meshes:
        kinds.add(info["kind"])
        assert 500 <= len(mesh.faces) <= 8000, (info["kind"], len(mesh.faces))
        d = procedural._diameter(np.asarray(mesh.vertices))
        assert d == pytest.approx(info["diameter_m"], rel=1e-6)
        assert DIAMETER_RANGE_M[0] - 1e-9 <= d <= DIAMETER_RANGE_M[1] + 1e-9
        centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
        np.testing.assert_allclose(centre, 0.0, atol=1e-9)
        for part in mesh.split(only_watertight=False):
            assert part.is_watertight, info["kind"]
            assert part.volume > 0, info["kind"]  # outward normals
        cols = info["vert_colors"]
        assert cols.shape == (len(mesh.vertices), 3)
        assert cols.min() >= 0 and cols.max() <= 1
        assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    assert kinds == set(KINDS)


def test_declared_symmetries_hold(train_meshes):
    seen = 0
    for mesh, info in train_meshes:
        if info["symmetry"] is None:
            assert not info["symmetric"]
            continue
        seen += 1
        assert info["symmetric"]
        assert info["kind"] not in ("mug", "compound", "lshape")
        verts = np.asarray(mesh.vertices)
        tree_pts = verts
        for T in symmetry_transforms(info["symmetry"], n_axis=8):
            moved = verts @ T[:3, :3].T + T[:3, 3]
            # every moved vertex lies close to the surface (here: near some vertex)
            d = np.min(np.linalg.norm(moved[::37, None] - tree_pts[None], axis=-1), axis=1)
            assert d.max() < 0.05 * info["diameter_m"], info["kind"]
    assert seen > 0


def test_make_mesh_kind_argument():
    rng = np.random.default_rng(0)
    for kind in KINDS:
        mesh, info = make_mesh(rng, kind)
        assert info["kind"] == kind and len(mesh.faces) > 0
    with pytest.raises(ValueError, match="kind"):
        make_mesh(rng, "teapot")
    with pytest.raises(ValueError, match="split"):
        procedural_mesh("test", 0)
