"""Tests of ``pose-refiner eval`` (evaluation.eval_dataset) on tiny datasets written in
tmp_path: BOP layout (synthetic scenes written with data.bop.write_bop) and Pix3D style.

Checks: BOP results CSV round trip and bop_toolkit's reading of it; the standard test
is reproducible (fixed seed); the report's metrics match a direct computation from the
dataset's own annotation files; initial poses from a results CSV (top-n per object);
the command line prints every metric.
"""

from __future__ import annotations

import json
from pathlib import Path
import signal

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose_refiner_ros.evaluation.eval_dataset import (
    BOP_HEADER,
    BopEstimate,
    evaluate_dataset,
    read_bop_results,
    write_bop_results,
)

W, H = 160, 120


def _estimate(rng, scene=1, im=2, obj=3, score=0.5, time_s=0.25):
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=rng.integers(1 << 30)).as_matrix()
    T[:3, 3] = rng.normal(size=3) * 0.1 + (0, 0, 0.8)
    return BopEstimate(scene, im, obj, score, T, time_s)


def _bop_toolkit_load(path: Path) -> list[dict]:
    """bop_toolkit_lib.inout.load_bop_results (bop19), restated: the reference reader."""
    out = []
    with open(path) as f:
        for line_id, line in enumerate(f, 1):
            if line_id == 1 and BOP_HEADER in line:
                continue
            elems = line.split(",")
            assert len(elems) == 7, line
            out.append({"scene_id": int(elems[0]), "im_id": int(elems[1]), "obj_id": int(elems[2]),
                        "score": float(elems[3]),
                        "R": np.array(list(map(float, elems[4].split()))).reshape(3, 3),
                        "t": np.array(list(map(float, elems[5].split()))).reshape(3, 1),
                        "time": float(elems[6])})
    return out


def test_bop_results_round_trip_and_bop_toolkit_reads_them(tmp_path):
    rng = np.random.default_rng(0)
    ests = [_estimate(rng, im=i // 2, obj=1 + i % 2, score=float(rng.random())) for i in range(6)]
    path = tmp_path / "method_lmo-test.csv"
    write_bop_results(path, ests)
    assert path.read_text().splitlines()[0] == BOP_HEADER
    back = read_bop_results(path)
    assert len(back) == len(ests)
    for a, b in zip(ests, back, strict=True):
        assert (a.scene_id, a.im_id, a.obj_id, a.score, a.time_s) == (b.scene_id, b.im_id, b.obj_id,
                                                                      b.score, b.time_s)
        np.testing.assert_array_equal(a.T_cam_obj[:3, :3], b.T_cam_obj[:3, :3])  # repr: exact
        np.testing.assert_allclose(a.T_cam_obj[:3, 3], b.T_cam_obj[:3, 3], rtol=1e-15)
    ref = _bop_toolkit_load(path)
    for a, r in zip(ests, ref, strict=True):
        np.testing.assert_allclose(r["R"], a.T_cam_obj[:3, :3], rtol=0, atol=0)
        np.testing.assert_allclose(r["t"][:, 0], a.T_cam_obj[:3, 3] * 1000.0, rtol=1e-15)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_bop_results_without_header_and_errors_name_the_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("1,2,3,0.5,1 0 0 0 1 0 0 0 1,0 0 800,-1\n")
    (e,) = read_bop_results(path)
    assert e.T_cam_obj[2, 3] == pytest.approx(0.8) and e.time_s == -1
    path.write_text(BOP_HEADER + "\n1,2,3,0.5,1 0 0 0 1 0 0 0 1,0 0 800,-1\n"
                    "1,2,3,0.5,1 0 0,0 0 800,-1\n")
    with pytest.raises(ValueError, match=r"r\.csv, line 3: R needs 9 numbers"):
        read_bop_results(path)


# -- a tiny BOP dataset ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bop_root(tmp_path_factory):
    from dataclasses import replace

    from pose_refiner_ros.data.bop import write_bop
    from pose_refiner_ros.data.procedural import procedural_models
    from pose_refiner_ros.data.synthetic import SyntheticConfig, generate_scene

    models = procedural_models("val", 2, seed=0)
    base = SyntheticConfig()
    cfg = replace(base, image_width=W, image_height=H, focal_range_px=(120.0, 250.0),
                  apparent_size_px=(30.0, 80.0), objects_per_scene=(1, 2))
    rng = np.random.default_rng(5)
    scenes = [generate_scene(models, rng, cfg) for _ in range(3)]
    root = tmp_path_factory.mktemp("bop") / "tiny"
    write_bop(scenes, root, models, split_dir="test", scene_id=1)
    return root


@pytest.fixture(scope="module")
def bop_registry(bop_root):
    from pose_refiner_ros.data.bop import registry_from_bop_models

    return registry_from_bop_models(bop_root / "models")


@pytest.fixture(scope="module")
def flow_refiner(bop_registry):
    from pose_refiner_ros.refine.refiner import Refiner, RefinerConfig

    cfg = RefinerConfig(mode="flow", iterations=2, crop_size=64, device="cpu")
    return Refiner(bop_registry, cfg)


def _direct_metrics(bop_root: Path, registry, report: dict):
    """Metrics recomputed from the dataset's JSON files and the report's poses."""
    from pose_refiner_ros.evaluation import metrics as M
    from pose_refiner_ros.evaluation.report import match_ground_truth

    sdir = bop_root / "test" / "000001"
    scene_gt = json.loads((sdir / "scene_gt.json").read_text())
    scene_cam = json.loads((sdir / "scene_camera.json").read_text())
    init, ref = [], []
    frames: dict = {}
    for o in report["objects"]:
        frames.setdefault(o["im_id"], []).append(o)
    for im_id, objs in sorted(frames.items()):
        gts = []
        for g in scene_gt[str(im_id)]:
            T = np.eye(4)
            T[:3, :3] = np.reshape(g["cam_R_m2c"], (3, 3))
            T[:3, 3] = np.asarray(g["cam_t_m2c"]) / 1000.0
            gts.append((f"obj_{g['obj_id']:06d}", T))
        K = np.reshape(scene_cam[str(im_id)]["cam_K"], (3, 3))
        match = match_ground_truth([(o["class_id"], np.asarray(o["T_init"])) for o in objs], gts)
        for o, j in zip(objs, match, strict=True):
            m = registry[o["class_id"]]
            kw = dict(pts_obj=m.points_m, K=K, image_size=(W, H), diameter_m=m.diameter_m,
                      symmetries=m.symmetries)
            init.append(M.evaluate_pose(np.asarray(o["T_init"]), gts[j][1], **kw))
            ref.append(M.evaluate_pose(np.asarray(o["T_refined"]), gts[j][1], **kw))
    return M.compare(init, ref)


def test_standard_test_metrics_csv_and_reproducibility(bop_root, bop_registry, flow_refiner,
                                                       tmp_path):
    out = tmp_path / "out"
    summary = evaluate_dataset(f"bop:{bop_root}", out, seed=7, registry=bop_registry,
                               refiner=flow_refiner, progress=False)
    n_gt = sum(len(v) for v in json.loads(
        (bop_root / "test" / "000001" / "scene_gt.json").read_text()).values())
    assert summary["frames"] == 3 and summary["objects"] == n_gt
    report = json.loads((out / "report.json").read_text())
    direct = _direct_metrics(bop_root, bop_registry, report)
    for side in ("initial", "refined"):
        for k, v in direct[side].items():
            assert summary["metrics"][side][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (side, k)
    assert summary["metrics"]["n_worse"] == direct["n_worse"]

    refined = read_bop_results(out / "poserefiner_tiny-test.csv")
    init = read_bop_results(out / "poserefinerinit_tiny-test.csv")
    assert len(refined) == len(init) == n_gt
    by_key = {(o["im_id"], o["class_id"], tuple(np.round(o["T_init"], 9).ravel())): o
              for o in report["objects"]}
    for r, i in zip(refined, init, strict=True):
        o = by_key[(i.im_id, f"obj_{i.obj_id:06d}", tuple(np.round(i.T_cam_obj, 9).ravel()))]
        np.testing.assert_allclose(r.T_cam_obj, o["T_refined"], atol=1e-9)
        assert r.score == pytest.approx(o["score"], abs=1e-6) and r.time_s > 0
    times = {}
    for r in refined:  # bop_toolkit's check: one time per image
        assert times.setdefault((r.scene_id, r.im_id), r.time_s) == r.time_s

    # Fixed seed: the same initial poses again; another seed: others.
    again = evaluate_dataset(f"bop:{bop_root}", tmp_path / "again", seed=7, registry=bop_registry,
                             refiner=flow_refiner, progress=False, plots=False)
    assert again["metrics"]["initial"] == summary["metrics"]["initial"]
    other = evaluate_dataset(f"bop:{bop_root}", tmp_path / "other", seed=8, registry=bop_registry,
                             refiner=flow_refiner, progress=False, plots=False, max_images=1)
    assert other["frames"] == 1


def test_initial_poses_from_a_results_csv(bop_root, bop_registry, flow_refiner, tmp_path):
    first = tmp_path / "first"
    evaluate_dataset(f"bop:{bop_root}", first, seed=1, registry=bop_registry, refiner=flow_refiner,
                     progress=False, plots=False)
    init = read_bop_results(first / "poserefinerinit_tiny-test.csv")
    rng = np.random.default_rng(0)
    # Add a worse-scored duplicate of every estimate (must not be refined) and an estimate
    # for an image the dataset does not have.
    noisy = [BopEstimate(e.scene_id, e.im_id, e.obj_id, 0.9, e.T_cam_obj, 0.5) for e in init]
    noisy += [BopEstimate(e.scene_id, e.im_id, e.obj_id, 0.1, _estimate(rng).T_cam_obj, 0.5)
              for e in init]
    noisy.append(BopEstimate(1, 999, 1, 0.9, np.eye(4), 0.5))
    csv = tmp_path / "coarse_tiny-test.csv"
    write_bop_results(csv, noisy)
    again = tmp_path / "again"
    summary = evaluate_dataset(f"bop:{bop_root}", again, results=str(csv), registry=bop_registry,
                               refiner=flow_refiner, progress=False, plots=False)
    assert summary["objects"] == len(init)
    assert summary["counters"]["estimates_not_refined"] == len(init)
    assert summary["counters"]["estimates_for_images_not_evaluated"] == 1
    baseline = json.loads((first / "report.json").read_text())["summary"]["metrics"]["initial"]
    for k, v in baseline.items():
        assert summary["metrics"]["initial"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    refined = read_bop_results(again / "poserefiner_tiny-test.csv")
    assert {r.score for r in refined} == {0.9}  # the input's scores are kept
    assert all(r.time_s > 0.5 for r in refined)  # input time + refinement time


def test_cli_eval_prints_every_metric(bop_root, tmp_path, capsys):
    from pose_refiner_ros.cli import main

    rc = main(["eval", "--dataset", f"bop:{bop_root}", "--out", str(tmp_path / "o"),
               "--mode", "flow", "--device", "cpu", "--iterations", "1", "--crop-size", "64",
               "--max-images", "1", "--no-progress", "--no-plots", "--grey", "--min-visib", "0"])
    out = capsys.readouterr().out
    assert rc == 0, out
    meta = json.loads((tmp_path / "o" / "report.json").read_text())["meta"]
    assert meta["grey_meshes"] is True and meta["min_visib"] == 0.0
    assert "made worse by refinement" in out
    for key in ("median_e_R_deg", "median_e_t", "median_e_Rt", "median_e_P",
                "acc_add_or_adds_0.1d", "acc_pi_6", "acc_pi_18", "acc_5deg5cm", "ar_mssd",
                "ar_mspd"):
        assert key in out
    assert (tmp_path / "o" / "poserefiner_tiny-test.csv").exists()


def _eval_paused(run_paused, bop_root, out: Path, pause_at: str, sig, pause_s: float = 30.0):
    code, _, err = run_paused(
        ["eval", "--dataset", f"bop:{bop_root}", "--out", out, "--mode", "flow", "--device",
         "cpu", "--iterations", "1", "--crop-size", "64", "--max-images", "1", "--no-progress"],
        pause_at, sig, pause_s)
    return code, err


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_eval_signalled_before_complete_writes_nothing(run_paused, bop_root, tmp_path, sig):
    """All or nothing (issue 15, item 2): the report, plots and CSVs were complete but not
    moved in; a signal then leaves nothing, not even --out."""
    out = tmp_path / "o"
    code, err = _eval_paused(run_paused, bop_root, out, "report_written", sig)
    assert code == 130 and "nothing was written" in err, err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.mark.timeout(300)
def test_cli_eval_signalled_while_moving_in_completes_and_stale_partials_go(run_paused, bop_root,
                                                                            tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    for stale in (".eval.partial", ".poserefiner_tiny-test.csv.partial", ".report.json.partial"):
        (out / stale).write_text("left by a run killed hard")
    code, err = _eval_paused(run_paused, bop_root, out, "commit", signal.SIGTERM, pause_s=2)
    assert code == 130 and "output was complete" in err, err
    assert sorted(p.name for p in out.iterdir()) == [
        "plots", "poserefiner_tiny-test.csv", "poserefinerinit_tiny-test.csv", "report.json",
        "report.md"]


def test_cli_eval_rejects_a_bad_dataset(tmp_path, capsys):
    from pose_refiner_ros.cli import main

    assert main(["eval", "--dataset", f"bop:{tmp_path / 'nope'}", "--mode", "flow",
                 "--no-progress"]) == 2
    assert "nope" in capsys.readouterr().err


def test_pix3d_style_dataset(tmp_path):
    import cv2
    import trimesh

    root = tmp_path / "pix3d"
    (root / "img" / "chair").mkdir(parents=True)
    (root / "model" / "chair").mkdir(parents=True)
    mesh = trimesh.creation.box(extents=(0.4, 0.6, 0.5))
    mesh.export(root / "model" / "chair" / "model.obj")
    img = np.full((H, W, 3), 90, np.uint8)
    cv2.rectangle(img, (50, 30), (110, 90), (200, 120, 40), -1)
    cv2.imwrite(str(root / "img" / "chair" / "0001.png"), img)
    entry = {"img": "img/chair/0001.png", "category": "chair", "img_size": [W, H],
             "model": "model/chair/model.obj", "focal_length": 35.0,
             "rot_mat": np.eye(3).tolist(), "trans_mat": [0.0, 0.0, 2.5],
             "truncated": False, "occluded": False, "slightly_occluded": False}
    (root / "pix3d.json").write_text(json.dumps([entry]))
    summary = evaluate_dataset(f"pix3d:{root}", tmp_path / "out", mode="flow", device="cpu",
                               iterations=1, crop_size=64, progress=False, plots=False)
    assert summary["frames"] == 1 and summary["objects_with_ground_truth"] == 1
    assert summary["metrics"]["initial"]["median_e_R_deg"] > 0


def test_a_bag_made_from_the_dataset_gives_the_same_metrics(bop_root, bop_registry, flow_refiner,
                                                            tmp_path):
    """make-bag --from bop + eval-bag (messages, stamp matching, the node's rules) and eval
    on the dataset itself draw the same initial poses for a seed and refine them alike."""
    from pose_refiner_ros.evaluation.eval_bag import eval_bag
    from pose_refiner_ros.evaluation.make_bag import make_bag

    make_bag(tmp_path / "bag", f"bop:{bop_root}", storage="mcap", frames=3, seed=4)
    via_bag = eval_bag(tmp_path / "bag", f"bop:{bop_root}", tmp_path / "eb", registry=bop_registry,
                       refiner=flow_refiner, progress=False, plots=False)
    direct = evaluate_dataset(f"bop:{bop_root}", tmp_path / "ed", seed=4, registry=bop_registry,
                              refiner=flow_refiner, progress=False, plots=False)
    assert via_bag["objects"] == direct["objects"]
    for side in ("initial", "refined"):
        for k, v in direct["metrics"][side].items():
            assert via_bag["metrics"][side][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (side, k)


def test_visibility_filter_grey_meshes_and_per_class_table(bop_root, bop_registry, flow_refiner,
                                                           tmp_path):
    """--min-visib leaves out instances less visible than the threshold (as BOP does),
    --grey renders every mesh grey, and the summary carries a per-class table with the
    share made worse."""
    from pose_refiner_ros.mesh.registry import grey_registry

    info = json.loads((bop_root / "test" / "000001" / "scene_gt_info.json").read_text())
    visib = [o["visib_fract"] for v in info.values() for o in v]
    thr = float(np.median(visib))
    s_all = evaluate_dataset(f"bop:{bop_root}", tmp_path / "a", registry=bop_registry,
                             refiner=flow_refiner, progress=False, plots=False)
    s_vis = evaluate_dataset(f"bop:{bop_root}", tmp_path / "b", registry=bop_registry,
                             refiner=flow_refiner, progress=False, plots=False, min_visib=thr)
    assert s_all["objects"] == len(visib)
    assert s_vis["objects"] == sum(v >= thr for v in visib) < len(visib)
    per_class = s_all["per_class"]
    assert sum(c["n"] for c in per_class.values()) == s_all["objects"]
    for c in per_class.values():
        assert 0.0 <= c["worse_share"] <= 1.0
    md = (tmp_path / "a" / "report.md").read_text()
    assert "### Per class" in md and "made worse" in md

    grey = grey_registry(bop_registry)
    for m, g in zip(bop_registry, grey, strict=True):
        assert np.allclose(g.vert_colors, 0.7) and g.class_id == m.class_id
        assert not np.allclose(m.vert_colors, 0.7)  # the original is untouched
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["meta"]["grey_meshes"] is False and report["meta"]["min_visib"] == 0.0
