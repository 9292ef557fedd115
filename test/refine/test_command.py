"""``pose-refiner refine`` on image files: JSON out, overlay out, clear input errors."""

import json

import cv2
import numpy as np
import pytest

from pose_refiner_ros.cli import main
from pose_refiner_ros.data.synthetic import SyntheticConfig, generate_scene
from pose_refiner_ros.mesh.registry import ObjectRegistry
from pose_refiner_ros.net.model import CorrespondenceNet, NetConfig
from pose_refiner_ros.render.base import make_renderer
from pose_refiner_ros.resources import share_dir
from pose_refiner_ros.train.checkpoint import save_checkpoint

OBJECTS = share_dir() / "models" / "demo" / "objects.yaml"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refine")
    models = list(ObjectRegistry.from_yaml(OBJECTS).models)
    cfg = SyntheticConfig(
        image_width=320, image_height=240, objects_per_scene=(2, 2), distractors_per_scene=(0, 0)
    )
    scene = generate_scene(models, np.random.default_rng(0), cfg, make_renderer("torch"))
    cv2.imwrite(str(tmp / "rgb.png"), cv2.cvtColor(scene.image_rgb, cv2.COLOR_RGB2BGR))
    (tmp / "camera.json").write_text(json.dumps({"K": scene.K.tolist()}))
    o0, o1 = scene.objects
    q = [0.0, 0.0, 0.0, 1.0]
    T1 = np.eye(4)
    T1[:3, 3] = o1.T_cam_obj_init[:3, 3]
    poses = [
        {"class_id": o0.class_id, "T_cam_obj": o0.T_cam_obj_init.tolist()},
        {"class_id": o1.class_id, "position": T1[:3, 3].tolist(), "orientation_xyzw": q},
    ]
    (tmp / "initial.json").write_text(json.dumps(poses))
    return tmp, scene


def _args(tmp, *extra):
    return [
        "refine",
        "--image",
        str(tmp / "rgb.png"),
        "--intrinsics",
        str(tmp / "camera.json"),
        "--objects",
        str(OBJECTS),
        "--poses",
        str(tmp / "initial.json"),
        "--out",
        str(tmp / "refined.json"),
        *extra,
    ]


def test_refine_writes_poses_and_an_overlay(files):
    tmp, scene = files
    assert (
        main(
            _args(tmp, "--mode", "flow", "--iterations", "1", "--overlay", str(tmp / "overlay.png"))
        )
        == 0
    )
    out = json.loads((tmp / "refined.json").read_text())
    assert [o["class_id"] for o in out] == [o.class_id for o in scene.objects]
    for o in out:
        T = np.array(o["T_cam_obj"])
        assert T.shape == (4, 4)
        np.testing.assert_allclose(T[:3, 3], o["position"])
        assert abs(np.linalg.norm(o["orientation_xyzw"]) - 1) < 1e-6
        assert 0 <= o["score"] <= 1 and o["mode"] == "rgb"
    overlay = cv2.imread(str(tmp / "overlay.png"))
    image = cv2.imread(str(tmp / "rgb.png"))
    assert overlay.shape == image.shape
    assert (overlay != image).any()  # contours were drawn


def test_refine_with_a_checkpoint(files):
    tmp, _ = files
    ckpt = tmp / "net.pt"
    save_checkpoint(ckpt, CorrespondenceNet(NetConfig(width=32, feat_dim=16, hidden=16, ctx=16)))
    assert main(_args(tmp, "--model", str(ckpt), "--iterations", "1")) == 0
    assert len(json.loads((tmp / "refined.json").read_text())) == 2


def test_unreadable_image_is_named(files):
    tmp, _ = files
    args = _args(tmp, "--mode", "flow")
    args[2] = str(tmp / "missing.png")
    with pytest.raises(SystemExit, match="missing.png"):
        main(args)


def test_bad_pose_entry_is_named(files, tmp_path):
    tmp, scene = files
    (tmp_path / "bad.json").write_text(
        json.dumps(
            [
                {
                    "class_id": scene.objects[0].class_id,
                    "orientation_xyzw": [0, 0, 0, 0],
                    "position": [0, 0, 1],
                }
            ]
        )
    )
    args = _args(tmp, "--mode", "flow")
    args[args.index("--poses") + 1] = str(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"poses\[0\]"):
        main(args)
