"""``pose-refiner adapt`` end to end on tiny recordings: a bag's frames are read without
its ground-truth topic, a BOP folder without its ground-truth files, and a short
adaptation writes a loadable model and its report."""

import json
from pathlib import Path

import numpy as np
import pytest

from pose_refiner_ros.adapt.command import report_markdown
from pose_refiner_ros.adapt.recording import read_bag_frames, read_recording
from pose_refiner_ros.adapt.run import AdaptConfig, adapt
from pose_refiner_ros.cli import main
from pose_refiner_ros.data.bop import write_bop
from pose_refiner_ros.data.perturb import perturb_pose
from pose_refiner_ros.data.procedural import procedural_models
from pose_refiner_ros.data.synthetic import SyntheticConfig, generate_scene
from pose_refiner_ros.evaluation.eval_dataset import BopEstimate, write_bop_results
from pose_refiner_ros.resources import default_model_path
from pose_refiner_ros.train.checkpoint import load_checkpoint

SYN = SyntheticConfig(image_width=240, image_height=180, focal_range_px=(150.0, 250.0),
                      apparent_size_px=(50.0, 90.0), objects_per_scene=(1, 2))


def _make_recording(root: Path, keep_ground_truth: bool):
    """A BOP folder (ground truth deleted unless kept), a results CSV of perturbed poses,
    and an objects YAML of its meshes."""
    models = procedural_models("val", 2, seed=0)
    rng = np.random.default_rng(5)
    scenes = [generate_scene(models, rng, SYN) for _ in range(3)]
    write_bop(scenes, root, models, split_dir="test", scene_id=1)
    rows = []
    for i, sc in enumerate(scenes):
        for o in sc.objects:
            oid = 1 + [m.class_id for m in models].index(o.class_id)
            T = perturb_pose(o.T_cam_obj_gt[None], rng, sigma_r_deg=5.0,
                             sigma_t_m=(0.005, 0.005, 0.01))[0]
            rows.append(BopEstimate(1, i, oid, 1.0, T, -1.0))
    csv = root.parent / "coarse.csv"
    write_bop_results(csv, rows)
    for gt in [] if keep_ground_truth else root.rglob("scene_gt*.json"):
        gt.unlink()  # adaptation must not need it (and cannot read it)
    yaml = root.parent / "objects.yaml"
    yaml.write_text("objects:\n" + "".join(
        f"- class_id: obj_{k + 1:06d}\n  mesh: {root / 'models' / f'obj_{k + 1:06d}.ply'}\n"
        "  scale: 0.001\n" for k in range(len(models))))
    return root, csv, yaml, len(rows)


@pytest.fixture(scope="module")
def bop_recording(tmp_path_factory):
    return _make_recording(tmp_path_factory.mktemp("rec") / "bop", keep_ground_truth=False)


def test_a_bop_recording_is_read_without_its_ground_truth(bop_recording):
    root, csv, _, n_rows = bop_recording
    frames, counts = read_recording(f"bop:{root}", ["obj_000001", "obj_000002"], str(csv))
    assert counts["frames"] == len(frames) == 3
    assert sum(len(f.detections) for f in frames) == n_rows
    assert frames[0].image_rgb.shape == (180, 240, 3) and frames[0].K.shape == (3, 3)
    with pytest.raises(ValueError, match="needs --results"):
        read_recording(f"bop:{root}", ["obj_000001"])


def test_a_bag_is_read_without_its_ground_truth_topic(tmp_path):
    from pose_refiner_ros.evaluation import bag_io as B
    from pose_refiner_ros.evaluation.make_bag import make_bag

    bag = tmp_path / "rec"
    make_bag(bag, frames=3, width=160, height=120, seed=2)
    with B.BagReader(bag) as r:
        assert any("ground_truth" in t for t in r.topics)  # there is one, and it is ignored
    objects = Path(f"{bag}_objects") / "objects.yaml"
    from pose_refiner_ros.mesh.registry import ObjectRegistry

    ids = ObjectRegistry.from_yaml(objects).class_ids
    frames, counts = read_bag_frames(bag, ids)
    assert len(frames) == 3 and all(f.detections for f in frames)
    assert frames[0].image_rgb.shape == (120, 160, 3)


def test_adaptation_writes_a_loadable_model_and_its_report(bop_recording, tmp_path):
    root, csv, yaml, _ = bop_recording
    frames, _ = read_recording(f"bop:{root}", ["obj_000001", "obj_000002"], str(csv))
    cfg = AdaptConfig(rounds=1, steps_per_round=2, real_share=1.0, min_score=0.0,
                      batch_size=2, crop_size=64, n_train_meshes=4)
    rep = adapt(frames, str(yaml), str(default_model_path()), str(tmp_path), cfg,
                progress=False, log=lambda *_: None)
    assert rep["steps"] == 2 and len(rep["rounds"]) == 1
    r = rep["rounds"][0]
    assert r["pseudo"]["detections"] == sum(len(f.detections) for f in frames)
    assert len(r["losses"]["real"]) == 2 if r["pseudo"]["accepted"] else True
    assert all(np.isfinite(r["losses"]["real"] + r["losses"]["synthetic"]))
    net = load_checkpoint(tmp_path / "model.pt")
    assert sum(p.numel() for p in net.parameters()) > 0
    md = report_markdown({**rep, "recording": "bop"})
    assert "| 1 | " in md and "accepted" in md
    json.dumps(rep)  # the report is JSON


def test_the_command_refuses_a_bop_recording_without_coarse_poses(bop_recording, tmp_path,
                                                                   capsys):
    root, _, yaml, _ = bop_recording
    rc = main(["adapt", f"bop:{root}", "--objects", str(yaml), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "needs --results" in capsys.readouterr().err


def test_a_stopped_adaptation_saves_what_it_has(bop_recording, tmp_path, run_paused):
    import signal

    root, csv, yaml, _ = bop_recording
    out = tmp_path / "out"
    rc, _, err = run_paused(["adapt", f"bop:{root}", "--results", csv, "--objects", yaml,
                             "--out", out, "--rounds", "1", "--steps", "3", "--batch-size", "2",
                             "--crop-size", "64", "--procedural-meshes", "2", "--min-score",
                             "0", "--no-progress"], "adapt-training", signal.SIGTERM)
    assert rc == 130, err
    assert load_checkpoint(out / "model.pt") is not None
    rep = json.loads((out / "report.json").read_text())
    assert rep["interrupted"] and rep["steps"] == 0


def test_ground_truth_is_reported_only_when_asked_and_after_adaptation(tmp_path):
    root, csv, yaml, n_rows = _make_recording(tmp_path / "bop", keep_ground_truth=True)
    out = tmp_path / "out"
    rc = main(["adapt", f"bop:{root}", "--results", str(csv), "--objects", str(yaml),
               "--out", str(out), "--rounds", "1", "--steps", "1", "--batch-size", "2",
               "--crop-size", "64", "--procedural-meshes", "2", "--min-score", "0",
               "--report-ground-truth", "--no-progress"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    gt = rep["ground_truth"]
    assert gt["before"]["objects"] == gt["after"]["objects"] == n_rows
    assert 0 <= gt["after"]["add_0.1d"] <= 1
    assert "Ground truth of the recording" in (out / "report.md").read_text()


def test_a_synthetic_recording_unlike_training_is_adapted_and_scored_after(tmp_path):
    """The small version of the synthetic check: a bag filmed by a camera unlike
    training's (``make-bag --camera unlike-training``), adapted from its detections, then
    scored against its ground-truth topic before and after, only because asked."""
    from pose_refiner_ros.evaluation.make_bag import make_bag

    bag = tmp_path / "rec"
    info = make_bag(bag, frames=3, width=160, height=120, seed=2, camera="unlike-training")
    out = tmp_path / "out"
    rc = main(["adapt", str(bag), "--objects", info["objects_spec"], "--out", str(out),
               "--rounds", "1", "--steps", "1", "--batch-size", "2", "--crop-size", "64",
               "--procedural-meshes", "2", "--min-score", "0", "--report-ground-truth",
               "--no-progress"])
    assert rc == 0
    gt = json.loads((out / "report.json").read_text())["ground_truth"]
    assert gt["before"]["objects"] == gt["after"]["objects"] == info["objects"]
    assert 0 <= gt["after"]["add_0.1d"] <= 1
