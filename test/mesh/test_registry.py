"""The object registry: loading, units, decimation, symmetries and the error messages."""

import hashlib
import itertools

import numpy as np
import pytest
import trimesh
import yaml

from pose_refiner_ros.mesh.registry import ObjectModel, ObjectRegistry, RegistryError


def _write_yaml(path, objects):
    path.write_text(yaml.safe_dump({"objects": objects}))
    return path


def _box_mm():
    """A 60 x 80 x 100 mm box, in millimetres, with red vertex colours."""
    box = trimesh.creation.box(extents=(60.0, 80.0, 100.0))
    box.visual.vertex_colors = np.tile([255, 0, 0, 255], (len(box.vertices), 1))
    return box


@pytest.mark.parametrize("ext", ["obj", "ply", "stl", "glb"])
def test_load_formats_in_millimetres(tmp_path, ext):
    (tmp_path / "meshes").mkdir()
    _box_mm().export(tmp_path / "meshes" / f"box.{ext}")
    cfg = _write_yaml(tmp_path / "objects.yaml",
                      [{"class_id": "box", "mesh": f"meshes/box.{ext}", "scale": 0.001}])
    reg = ObjectRegistry.from_yaml(cfg)
    assert reg.class_ids == ("box",) and "box" in reg and len(reg) == 1
    model = reg["box"]
    assert model.mesh_path == tmp_path / "meshes" / f"box.{ext}"
    assert model.diameter_m == pytest.approx(np.linalg.norm([0.06, 0.08, 0.1]), rel=1e-9)
    np.testing.assert_allclose(model.bbox_min_m, [-0.03, -0.04, -0.05], atol=1e-7)
    np.testing.assert_allclose(model.bbox_max_m, [0.03, 0.04, 0.05], atol=1e-7)
    expected = [[x, y, z] for x, y, z in itertools.product((-0.03, 0.03), (-0.04, 0.04),
                                                           (-0.05, 0.05))]
    np.testing.assert_allclose(model.bbox_corners_m, expected, atol=1e-7)
    assert model.verts_m.dtype == np.float32 and model.faces.dtype == np.int64
    assert model.faces.shape == (12, 3) and model.verts_m.shape[1] == 3
    assert model.points_m.shape == (1000, 3)
    assert np.all(np.abs(model.points_m) <= [0.0300001, 0.0400001, 0.0500001])
    np.testing.assert_allclose(np.linalg.norm(model.vert_normals, axis=1), 1.0, atol=1e-5)
    assert model.vert_colors.shape == model.verts_m.shape
    if ext == "stl":  # STL has no colours: grey
        np.testing.assert_allclose(model.vert_colors, 0.7)
    else:
        np.testing.assert_allclose(model.vert_colors, np.tile([1.0, 0, 0], (len(model.verts_m), 1)))
    assert not model.symmetric and model.symmetries.shape == (1, 4, 4)
    np.testing.assert_array_equal(model.symmetries[0], np.eye(4))
    with pytest.raises(ValueError):
        model.verts_m[0, 0] = 1.0  # read-only


def test_user_file_unchanged_and_points_deterministic(tmp_path):
    path = tmp_path / "box.ply"
    _box_mm().export(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "b", "mesh": "box.ply", "scale": 0.001}])
    a = ObjectRegistry.from_yaml(cfg)["b"]
    b = ObjectRegistry.from_yaml(cfg)["b"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    np.testing.assert_array_equal(a.points_m, b.points_m)


def test_flat_color_and_scene_concatenation(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(extents=(0.05, 0.05, 0.05)))
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.02)
    scene.add_geometry(ball, transform=trimesh.transformations.translation_matrix([0.1, 0, 0]))
    scene.export(tmp_path / "two.glb")
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "two", "mesh": "two.glb",
                                             "color": [0.1, 0.2, 0.3]}])
    model = ObjectRegistry.from_yaml(cfg)["two"]
    assert len(model.faces) == 12 + len(ball.faces)
    np.testing.assert_allclose(model.bbox_max_m, [0.12, 0.025, 0.025], atol=1e-6)
    np.testing.assert_allclose(model.vert_colors, np.tile([0.1, 0.2, 0.3], (len(model.verts_m), 1)),
                               atol=1e-7)


def test_decimation_keeps_full_mesh():
    sphere = trimesh.creation.icosphere(subdivisions=6, radius=0.1)  # 81920 faces
    model = ObjectModel.from_trimesh("ball", sphere, max_render_faces=5000)
    assert len(model.faces) <= 5000 and len(model.faces) > 4000
    assert len(model.full_mesh.faces) == len(sphere.faces)
    assert model.faces.max() < len(model.verts_m)
    assert model.diameter_m == pytest.approx(0.2, rel=1e-6)
    # the render mesh still describes the same sphere
    np.testing.assert_allclose(np.linalg.norm(model.verts_m, axis=1), 0.1, rtol=1e-2)
    np.testing.assert_allclose(np.linalg.norm(model.points_m, axis=1), 0.1, rtol=1e-3)
    small = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    assert len(ObjectModel.from_trimesh("b", small, max_render_faces=1280).faces) == 1280


def test_from_trimesh_does_not_modify_the_mesh():
    box = _box_mm()
    verts = box.vertices.copy()
    model = ObjectModel.from_trimesh("b", box, scale=0.001)
    np.testing.assert_array_equal(box.vertices, verts)
    assert model.mesh_path is None and model.scale == 0.001


def test_symmetries_discrete_and_continuous():
    cyl = trimesh.creation.cylinder(radius=0.04, height=0.1)
    flip = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1]  # 180 deg about x
    model = ObjectModel.from_trimesh(
        "can", cyl, symmetries={"discrete": [flip],
                                "continuous_axis": {"axis": [0, 0, 2], "steps": 8}})
    S = model.symmetries
    assert S.shape == (16, 4, 4) and model.symmetric
    np.testing.assert_allclose(S[0], np.eye(4), atol=1e-7)
    R = S[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-6)
    # every symmetry maps the cylinder's vertices onto its surface
    for T in S:
        p = model.verts_m @ T[:3, :3].T + T[:3, 3]
        r = np.linalg.norm(p[:, :2], axis=1)
        assert np.all((np.abs(r - 0.04) < 1e-5) | (np.abs(np.abs(p[:, 2]) - 0.05) < 1e-5))
    # a continuous axis through an offset point: the offset point is fixed
    model = ObjectModel.from_trimesh(
        "c2", cyl, symmetries={"continuous_axis": {"axis": [0, 0, 1], "offset": [0.01, 0, 0],
                                                   "steps": 4}})
    assert model.symmetries.shape == (4, 4, 4)
    for T in model.symmetries:
        np.testing.assert_allclose(T[:3, :3] @ [0.01, 0, 0] + T[:3, 3], [0.01, 0, 0], atol=1e-7)
    # a list of 4x4 matrices is a set of discrete symmetries; the identity is not repeated
    model = ObjectModel.from_trimesh("c3", cyl, symmetries=[np.eye(4), np.reshape(flip, (4, 4))])
    assert model.symmetries.shape == (2, 4, 4)


# --- errors ------------------------------------------------------------------------------


def _assert_error(match_parts, fn):
    with pytest.raises(RegistryError) as info:
        fn()
    msg = str(info.value)
    for part in match_parts:
        assert part in msg, msg
    return msg


def test_missing_yaml(tmp_path):
    _assert_error([str(tmp_path / "nope.yaml"), "does not exist"],
                  lambda: ObjectRegistry.from_yaml(tmp_path / "nope.yaml"))


def test_bad_yaml_structure(tmp_path):
    p = tmp_path / "o.yaml"
    p.write_text("objects: {a: 1}\n")
    _assert_error([str(p), "objects"], lambda: ObjectRegistry.from_yaml(p))
    p.write_text("objects: [\n")
    _assert_error([str(p), "YAML"], lambda: ObjectRegistry.from_yaml(p))


def test_missing_mesh_file(tmp_path):
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "mug", "mesh": "meshes/mug.ply"}])
    _assert_error([str(tmp_path / "meshes" / "mug.ply"), "does not exist", "mug"],
                  lambda: ObjectRegistry.from_yaml(cfg))


def test_unreadable_mesh(tmp_path):
    (tmp_path / "mug.ply").write_text("this is not a ply file\n")
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "mug", "mesh": "mug.ply"}])
    _assert_error([str(tmp_path / "mug.ply"), "could not be read"],
                  lambda: ObjectRegistry.from_yaml(cfg))


def test_empty_mesh(tmp_path):
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(tmp_path / "pc.ply")
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "pc", "mesh": "pc.ply"}])
    _assert_error([str(tmp_path / "pc.ply"), "empty"], lambda: ObjectRegistry.from_yaml(cfg))
    (tmp_path / "e.obj").write_text("# no faces\nv 0 0 0\n")
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "e", "mesh": "e.obj"}])
    _assert_error([str(tmp_path / "e.obj"), "empty"], lambda: ObjectRegistry.from_yaml(cfg))


def test_wrong_units(tmp_path):
    _box_mm().export(tmp_path / "box.ply")  # 141 mm across, but given in mm
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "box", "mesh": "box.ply"}])
    msg = _assert_error([str(tmp_path / "box.ply"), "scale", "0.001", "millimetres"],
                        lambda: ObjectRegistry.from_yaml(cfg))
    assert "141" in msg  # the size it found
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "box", "mesh": "box.ply",
                                             "scale": 1e-5}])  # 1.4 mm: too small
    _assert_error([str(tmp_path / "box.ply"), "scale"], lambda: ObjectRegistry.from_yaml(cfg))
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "box", "mesh": "box.ply",
                                             "scale": -1}])
    _assert_error([str(tmp_path / "box.ply"), "scale", "positive"],
                  lambda: ObjectRegistry.from_yaml(cfg))


def test_duplicate_class_ids(tmp_path):
    _box_mm().export(tmp_path / "box.ply")
    entry = {"class_id": "box", "mesh": "box.ply", "scale": 0.001}
    cfg = _write_yaml(tmp_path / "o.yaml", [entry, entry])
    _assert_error([str(cfg), "duplicate class_id 'box'"], lambda: ObjectRegistry.from_yaml(cfg))
    model = ObjectModel.from_trimesh("box", _box_mm(), scale=0.001)
    _assert_error(["duplicate class_id 'box'"], lambda: ObjectRegistry([model, model]))


def test_missing_and_unknown_keys(tmp_path):
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "box"}])
    _assert_error([str(cfg), "objects[0]", "mesh"], lambda: ObjectRegistry.from_yaml(cfg))
    cfg = _write_yaml(tmp_path / "o.yaml", [{"mesh": "box.ply"}])
    _assert_error([str(cfg), "class_id"], lambda: ObjectRegistry.from_yaml(cfg))
    _box_mm().export(tmp_path / "box.ply")
    cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "b", "mesh": "box.ply",
                                             "symetries": {}}])
    _assert_error([str(cfg), "symetries"], lambda: ObjectRegistry.from_yaml(cfg))


def test_bad_symmetries(tmp_path):
    _box_mm().export(tmp_path / "box.ply")

    def load(sym):
        cfg = _write_yaml(tmp_path / "o.yaml", [{"class_id": "b", "mesh": "box.ply",
                                                 "scale": 0.001, "symmetries": sym}])
        return lambda: ObjectRegistry.from_yaml(cfg)

    where = str(tmp_path / "box.ply")
    scaled = np.diag([2.0, 1, 1, 1]).tolist()
    _assert_error([where, "discrete[0]", "rigid"], load({"discrete": [scaled]}))
    mirror = np.diag([-1.0, 1, 1, 1]).tolist()
    _assert_error([where, "rigid"], load({"discrete": [mirror]}))
    _assert_error([where, "16 numbers"], load({"discrete": [[1, 0, 0]]}))
    far = np.eye(4)
    far[0, 3] = 50.0  # millimetres by mistake
    _assert_error([where, "metres"], load({"discrete": [far.tolist()]}))
    _assert_error([where, "axis"], load({"continuous_axis": {"axis": [0, 0, 0]}}))
    _assert_error([where, "axes"], load({"axes": []}))


def test_unknown_class_id_lists_known():
    reg = ObjectRegistry([ObjectModel.from_trimesh("box", _box_mm(), scale=0.001)])
    with pytest.raises(KeyError, match="box"):
        reg["mug"]
    assert [m.class_id for m in reg] == ["box"] and reg.models[0] is reg["box"]
