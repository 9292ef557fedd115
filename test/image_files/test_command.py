"""``pose-refiner refine`` on image files: JSON out, overlay out, clear input errors, the
shipped sample run as the README writes it."""

import json
from pathlib import Path
import re
import shlex
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from pose_refiner_ros.cli import main
from pose_refiner_ros.data.synthetic import SyntheticConfig, generate_scene
from pose_refiner_ros.image_files.command import result_lines
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
        assert o["covariance"] is None  # flow: no contour lines, no estimate
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



REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "refine"


def _broken(tmp_path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


I4 = np.eye(4).tolist()

BROKEN = [
    # (option, content, what the message must say)
    ("--intrinsics", {"k": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, r"no field 'K'.*fields found: k"),
    ("--intrinsics", {"K": [[500, 0, 160], [0, 500, 120]]}, r"K: expected .*shape \(3, 3\)"),
    ("--intrinsics", {"K": [[0, 0, 160], [0, 500, 120], [0, 0, 1]]}, r"K\[0, 0\] \(fx\)"),
    ("--intrinsics", {"K": [1, 0, 0, 0, 1, 0, 0, 0, 1], "D": "none"}, r"D: expected a list"),
    ("--intrinsics", "{not json", r"not valid JSON.*line 1"),
    ("--intrinsics", [1, 2], r"expected an object"),
    ("--poses", [{"T_cam_obj": I4}], r"\[0\]: no field 'class_id'; fields found: T_cam_obj"),
    ("--poses", [{"class_id": "teapot", "T_cam_obj": I4}], r"\[0\]\.class_id: 'teapot' is not "
     r"in --objects; registered: .*mug"),
    ("--poses", [{"class_id": 3, "T_cam_obj": I4}], r"\[0\]\.class_id: expected a string"),
    ("--poses", [{"class_id": "mug"}], r"\[0\]: no pose"),
    ("--poses", [{"class_id": "mug", "T_cam_obj": [[1, 0, 0]]}], r"\[0\]\.T_cam_obj: expected"),
    ("--poses", [{"class_id": "mug", "T_cam_obj": np.diag([2, 1, 1, 1]).tolist()}],
     r"\[0\]\.T_cam_obj: the upper-left 3x3 block must be a rotation"),
    ("--poses", [{"class_id": "mug", "T_cam_obj": (2 * np.eye(4)).tolist()}], r"last row"),
    ("--poses", [{"class_id": "mug", "position": [0, 0, 1]}], r"no 'orientation_xyzw'"),
    ("--poses", [{"class_id": "mug", "position": [0, 0, 1], "orientation_xyzw": [0, 0, 0, 0]}],
     r"\[0\]\.orientation_xyzw: expected a non-zero quaternion"),
    ("--poses", [{"class_id": "mug", "position": [0, 1], "orientation_xyzw": [0, 0, 0, 1]}],
     r"\[0\]\.position: expected"),
    ("--poses", {"class_id": "mug"}, r"expected a list"),
    ("--image", "not an image", r"not an image OpenCV can read"),
]


@pytest.mark.parametrize("option, content, message", BROKEN)
def test_malformed_inputs_name_the_file_and_the_field(tmp_path, capsys, option, content,
                                                      message):
    args = ["refine", "--image", str(SAMPLE / "rgb.jpg"), "--intrinsics",
            str(SAMPLE / "camera.json"), "--objects", str(OBJECTS), "--poses",
            str(SAMPLE / "initial.json"), "--out", str(tmp_path / "out.json"), "--mode", "flow"]
    bad = _broken(tmp_path, "bad.png" if option == "--image" else "bad.json", content)
    args[args.index(option) + 1] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"refine: error: {option} {bad}: "), err
    assert re.search(message, err), err
    assert "Traceback" not in err and not (tmp_path / "out.json").exists()


def test_missing_files_are_named(tmp_path, capsys):
    for option in ("--image", "--intrinsics", "--poses", "--objects"):
        args = ["refine", "--image", str(SAMPLE / "rgb.jpg"), "--intrinsics",
                str(SAMPLE / "camera.json"), "--objects", str(OBJECTS), "--poses",
                str(SAMPLE / "initial.json"), "--out", str(tmp_path / "o.json")]
        args[args.index(option) + 1] = str(tmp_path / "missing.x")
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "missing.x" in err and "Traceback" not in err, (option, err)


def test_the_time_printed_is_the_batch_time_once():
    results = [SimpleNamespace(class_id=c, score=s, diverged=d, reason=r, kept_coarse=d)
               for c, s, d, r in (("mug", 0.91, False, ""), ("box", 0.11, True, "jumped"))]
    lines = result_lines(results, 812.4)
    assert lines == ["[0] mug: score 0.91", "[1] box: score 0.11  NOT TRUSTED: jumped "
                     "(the coarse pose is kept)", "2 objects refined together in 812 ms"]


def _readme_refine_command() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(pose-refiner refine .*?)```", readme, re.S).group(1)
    return shlex.split(block.replace("\\\n", " "))


def test_the_readme_command_runs_as_written_on_the_shipped_sample(tmp_path, monkeypatch,
                                                                 capsys):
    """From the repository root, as the README says; the outputs go into a copy's root."""
    argv = _readme_refine_command()
    assert argv[0] == "pose-refiner"
    for name in ("examples", "models"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out.splitlines()
    refined = json.loads(Path(argv[argv.index("--out") + 1]).read_text())
    truth = json.loads((SAMPLE / "ground_truth.json").read_text())
    initial = json.loads((SAMPLE / "initial.json").read_text())
    assert [o["class_id"] for o in refined] == [o["class_id"] for o in truth]
    assert sum("refined together in" in line for line in out) == 1
    registry = ObjectRegistry.from_yaml(SAMPLE / "objects.yaml")
    from pose_refiner_ros.evaluation.metrics import rotation_error_deg

    for r, t, i in zip(refined, truth, initial, strict=True):
        sym = registry[t["class_id"]].symmetries
        e_ref = rotation_error_deg(np.array(r["T_cam_obj"]), np.array(t["T_cam_obj"]), sym)
        e_init = rotation_error_deg(np.array(i["T_cam_obj"]), np.array(t["T_cam_obj"]), sym)
        if r["kept_coarse"]:  # not trusted: the coarse pose comes back, flagged, with
            # no covariance of ours (the coarse pose's uncertainty is its detector's)
            assert r["diverged"] and np.allclose(r["T_cam_obj"], i["T_cam_obj"], atol=1e-6)
            assert r["covariance"] is None
        else:
            assert e_ref < min(5.0, e_init), (r["class_id"], e_init, e_ref)
            # RGB: a covariance from the outline, the distance its least certain coordinate
            sd = np.sqrt(np.diag(np.array(r["covariance"])))
            assert sd[2] > max(sd[0], sd[1]) > 0
    assert cv2.imread(argv[argv.index("--overlay") + 1]).shape == (240, 320, 3)


def test_the_sample_is_small_and_registers_the_demo_meshes():
    assert sum(p.stat().st_size for p in SAMPLE.iterdir()) < 40_000
    registry = ObjectRegistry.from_yaml(SAMPLE / "objects.yaml")
    demo = ObjectRegistry.from_yaml(OBJECTS)
    for cid in registry.class_ids:
        np.testing.assert_array_equal(registry[cid].points_m, demo[cid].points_m)
