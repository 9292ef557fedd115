"""BOP reading and writing, BOP model registries, and the Pix3D reader, on tiny fixtures."""

import json

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose_refiner_ros.data.bop import (
    BopDataset,
    registry_from_bop_models,
    write_bop,
)
from pose_refiner_ros.data.pix3d import Pix3dDataset, pix3d_pose_and_K


@pytest.fixture(scope="module")
def scene_and_models():
    from pose_refiner_ros.data.procedural import procedural_models
    from pose_refiner_ros.data.synthetic import SyntheticConfig, generate_scene

    models = procedural_models("val", 4, seed=5)
    cfg = SyntheticConfig(image_width=160, image_height=120, focal_range_px=(150, 250),
                          apparent_size_px=(30, 80), objects_per_scene=(2, 3))
    rng = np.random.default_rng(0)
    scenes = [generate_scene(models, rng, cfg) for _ in range(2)]
    return scenes, models


def _pose(rng, z=0.8):
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    T[:3, 3] = rng.uniform(-0.1, 0.1, 3) + [0, 0, z]
    return T


def _write_handmade_bop(root, K, poses, depth_mm, depth_scale=0.1):
    """A one-image BOP scene written by hand, independent of write_bop."""
    sdir = root / "test" / "000003"
    (sdir / "rgb").mkdir(parents=True)
    (sdir / "depth").mkdir()
    img = np.zeros((24, 32, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    cv2.imwrite(str(sdir / "rgb" / "000007.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(sdir / "depth" / "000007.png"), np.round(depth_mm / depth_scale)
                .astype(np.uint16))
    gt = {"7": [{"cam_R_m2c": T[:3, :3].ravel().tolist(),
                 "cam_t_m2c": (T[:3, 3] * 1000).tolist(), "obj_id": oid}
                for oid, T in poses]}
    cam = {"7": {"cam_K": K.ravel().tolist(), "depth_scale": depth_scale}}
    info = {"7": [{"visib_fract": 0.9}, {"visib_fract": 0.05}]}
    for name, data in (("scene_gt", gt), ("scene_camera", cam), ("scene_gt_info", info)):
        (sdir / f"{name}.json").write_text(json.dumps(data))


def test_read_handmade_bop(tmp_path):
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 15.5], [0, 500, 11.5], [0, 0, 1]])
    poses = [(1, _pose(rng)), (5, _pose(rng))]
    depth_mm = np.full((24, 32), 812.3)
    _write_handmade_bop(tmp_path, K, poses, depth_mm)

    ds = BopDataset(tmp_path, "test")
    assert len(ds) == 1
    fr = ds[0]
    assert (fr.scene_id, fr.im_id) == (3, 7)
    np.testing.assert_allclose(fr.K, K)
    assert fr.image_rgb.shape == (24, 32, 3) and fr.image_rgb[0, 0, 0] > 150  # RGB order
    assert fr.image_rgb[0, 0, 2] < 50
    np.testing.assert_allclose(fr.depth_m, 0.8123, atol=1e-4)
    assert [o for o, _ in fr.objects] == [1, 5]
    for (_, T), (_, T_ref) in zip(fr.objects, poses, strict=True):
        np.testing.assert_allclose(T, T_ref, atol=1e-12)
    assert fr.visib_fract == [0.9, 0.05]

    # filters
    assert [o for o, _ in BopDataset(tmp_path, "test", obj_ids=[5])[0].objects] == [5]
    assert [o for o, _ in BopDataset(tmp_path, "test", min_visib_fract=0.1)[0].objects] == [1]
    assert BopDataset(tmp_path, "test", load_depth=False)[0].depth_m is None
    with pytest.raises(FileNotFoundError, match="split"):
        BopDataset(tmp_path, "val")


def test_registry_from_bop_models_units_and_symmetries(tmp_path):
    import trimesh

    mdir = tmp_path / "models"
    mdir.mkdir()
    box = trimesh.creation.box(extents=(40.0, 60.0, 100.0))  # millimetres
    box.export(mdir / "obj_000002.ply")
    cyl = trimesh.creation.cylinder(radius=20.0, height=80.0, sections=32)
    cyl.export(mdir / "obj_000004.ply")
    flip_z = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip_z[:3, 3] = [0.0, 0.0, 10.0]  # a 10 mm offset, to check the unit conversion
    info = {
        "2": {"diameter": float(np.linalg.norm([40, 60, 100])),
              "symmetries_discrete": [flip_z.ravel().tolist()]},
        "4": {"diameter": 113.1, "symmetries_continuous": [{"axis": [0, 0, 1],
                                                             "offset": [0, 0, 0]}]},
    }
    (mdir / "models_info.json").write_text(json.dumps(info))

    reg = registry_from_bop_models(mdir)
    assert set(reg.class_ids) == {"obj_000002", "obj_000004"}
    m = reg["obj_000002"]
    np.testing.assert_allclose(m.bbox_max_m - m.bbox_min_m, [0.04, 0.06, 0.1], atol=1e-6)
    assert m.diameter_m == pytest.approx(np.linalg.norm([0.04, 0.06, 0.1]), rel=0.02)
    syms = np.asarray(m.symmetries)
    assert syms.shape == (2, 4, 4)
    np.testing.assert_allclose(syms[0], np.eye(4), atol=1e-9)
    np.testing.assert_allclose(syms[1][:3, 3], [0, 0, 0.01], atol=1e-9)
    assert m.symmetric
    c = reg["obj_000004"]
    assert c.symmetric and np.asarray(c.symmetries).shape[0] > 8
    R = np.asarray(c.symmetries)[:, :3, :3]
    np.testing.assert_allclose(R[:, 2], np.tile([0, 0, 1.0], (len(R), 1)), atol=1e-9)


def test_write_bop_round_trip(tmp_path, scene_and_models):
    scenes, models = scene_and_models
    write_bop(scenes, tmp_path, models, split_dir="train_synth", depth_scale=0.1)
    ds = BopDataset(tmp_path, "train_synth")
    assert len(ds) == len(scenes)
    obj_ids = {m.class_id: i + 1 for i, m in enumerate(models)}
    for sc, fr in zip(scenes, ds, strict=True):
        np.testing.assert_allclose(fr.K, sc.K, rtol=1e-12)
        np.testing.assert_array_equal(fr.image_rgb, sc.image_rgb)  # png: lossless
        np.testing.assert_allclose(fr.depth_m, sc.depth_m, atol=0.5e-4 + 1e-6)
        assert [o for o, _ in fr.objects] == [obj_ids[o.class_id] for o in sc.objects]
        for (_, T), o in zip(fr.objects, sc.objects, strict=True):
            np.testing.assert_allclose(T, o.T_cam_obj_gt, atol=1e-9)
        np.testing.assert_allclose(fr.visib_fract, [o.visib_fract for o in sc.objects])

    # the written models read back as a registry in metres
    reg = registry_from_bop_models(tmp_path / "models")
    for i, m in enumerate(models):
        r = reg[f"obj_{i + 1:06d}"]
        np.testing.assert_allclose(r.bbox_min_m, m.bbox_min_m, atol=1e-6)
        np.testing.assert_allclose(r.bbox_max_m, m.bbox_max_m, atol=1e-6)
        assert r.diameter_m == pytest.approx(m.diameter_m, rel=1e-3)
        assert r.symmetric == m.symmetric


def _pix3d_project(entry, X):
    """The projection written in the Pix3D repository (issue #2), corner pixel convention."""
    w, h = entry["img_size"]
    f = entry["focal_length"] / 32.0 * w
    p = np.asarray(entry["rot_mat"]) @ X + np.asarray(entry["trans_mat"])
    return np.array([-f * p[0] / p[2] + w / 2, -f * p[1] / p[2] + h / 2])


def test_write_bop_writes_the_split_eval_reads_and_a_missing_split_is_named(
        tmp_path, scene_and_models):
    scenes, models = scene_and_models
    write_bop(scenes[:1], tmp_path, models)
    assert len(BopDataset(tmp_path, "test")) == 1  # eval's default split
    with pytest.raises(FileNotFoundError, match=r"this dataset has test \(choose one"):
        BopDataset(tmp_path, "val")


def test_pix3d_reader(tmp_path):
    rng = np.random.default_rng(4)
    (tmp_path / "img" / "chair").mkdir(parents=True)
    w, h = 40, 30
    entries = []
    for k, flags in enumerate(((False, False), (True, False), (False, False))):
        name = f"img/chair/{k:04d}.jpg"
        cv2.imwrite(str(tmp_path / name), np.full((h, w, 3), 90, np.uint8))
        T = _pose(rng, z=2.0)
        entries.append({
            "img": name, "category": "chair" if k < 2 else "sofa",
            "model": f"model/chair/m{k}/model.obj", "img_size": [w, h],
            "rot_mat": T[:3, :3].tolist(), "trans_mat": T[:3, 3].tolist(),
            "focal_length": 35.0 + k, "truncated": flags[0], "occluded": flags[1],
        })
    (tmp_path / "pix3d.json").write_text(json.dumps(entries))

    ds = Pix3dDataset(tmp_path)
    assert len(ds) == 3
    assert len(Pix3dDataset(tmp_path, clean_only=True)) == 2
    assert len(Pix3dDataset(tmp_path, categories=["sofa"])) == 1
    fr = ds[0]
    assert fr.scene_id == "chair" and fr.im_id == 0 and fr.depth_m is None
    assert fr.image_rgb.shape == (h, w, 3)
    (model, T), = fr.objects
    assert model == "model/chair/m0/model.obj"
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)
    # our OpenCV projection equals Pix3D's own, shifted by the half-pixel convention
    for X in rng.uniform(-0.3, 0.3, (5, 3)):
        p = T[:3, :3] @ X + T[:3, 3]
        uv = (fr.K @ p)[:2] / p[2]
        np.testing.assert_allclose(uv, _pix3d_project(entries[0], X) - 0.5, atol=1e-9)
    T2, K2 = pix3d_pose_and_K(entries[0], model_scale=0.5)
    np.testing.assert_allclose(T2[:3, 3], T[:3, 3] * 0.5)
    np.testing.assert_allclose(K2, fr.K)
