"""Training from the command line: smoke run, checkpoint contents, resume, DDP on gloo."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys

import torch
import yaml

from pose_refiner_ros.cli import main
from pose_refiner_ros.train.checkpoint import FORMAT, load_checkpoint

TINY = {
    "batch_size": 2,
    "crop_size": 64,
    "n_train_meshes": 3,
    "n_val_meshes": 2,
    "val_samples": 2,
    "val_every": 2,
    "ckpt_every": 1,
    "warmup_steps": 1,
    "data_workers": 0,
    "net": {"feat_dim": 16, "hidden": 16, "ctx": 16, "width": 16, "gru_iters": 2},
}


def _config(tmp_path: Path, **extra) -> Path:
    p = tmp_path / "train.yaml"
    p.write_text(yaml.safe_dump({**TINY, **extra}))
    return p


def test_smoke_run_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    cfg = _config(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--max-steps", "2"]) == 0
    ckpt = out / "last.pt"
    blob = torch.load(ckpt, weights_only=True)
    assert blob["format"] == FORMAT and blob["step"] == 2
    assert blob["net_config"]["hidden"] == 16
    assert "val_add01" in blob["meta"]["val"]
    net = load_checkpoint(ckpt)
    assert net.cfg.hidden == 16
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2
    assert any((out / "tb").iterdir())  # TensorBoard events
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # Resume continues from step 2 to 3 and changes the weights.
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--out",
                str(out),
                "--max-steps",
                "3",
                "--resume",
                str(ckpt),
                "--set",
                "data_workers=1",
            ]
        )
        == 0
    )
    blob = torch.load(ckpt, weights_only=True)
    assert blob["step"] == 3
    after = load_checkpoint(ckpt).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_signalled_run_stops_with_a_checkpoint_of_where_it_was(run_paused, tmp_path):
    """SIGTERM stops training like Ctrl-C, and the stopped run leaves last.pt at the step
    it reached (issue 15, item 2), although no checkpoint was due before step 1000."""
    cfg = _config(tmp_path, ckpt_every=1000, val_every=1000)
    out = tmp_path / "run"
    code, _, err = run_paused(
        ["train", "--config", cfg, "--out", out, "--max-steps", "50", "--device", "cpu"],
        "train_step",
        signal.SIGTERM,
    )
    assert code == 130 and "interrupted at step 1" in err, err
    blob = torch.load(out / "last.pt", weights_only=True)
    assert blob["step"] == 1 and blob["meta"]["interrupted"] is True
    assert load_checkpoint(out / "last.pt").cfg.hidden == 16
    assert sorted(p.name for p in out.glob("*.tmp")) == []


def test_fine_tuning_on_user_objects(tmp_path):
    import trimesh

    trimesh.creation.box(extents=(80, 50, 30)).export(tmp_path / "part.ply")
    (tmp_path / "objects.yaml").write_text(
        yaml.safe_dump({"objects": [{"class_id": "part", "mesh": "part.ply", "scale": 0.001}]})
    )
    out = tmp_path / "ft"
    assert (
        main(
            [
                "train",
                "--config",
                str(_config(tmp_path, n_train_meshes=1)),
                "--out",
                str(out),
                "--max-steps",
                "1",
                "--objects",
                str(tmp_path / "objects.yaml"),
            ]
        )
        == 0
    )
    init = out / "last.pt"
    out2 = tmp_path / "ft2"
    assert (
        main(
            [
                "train",
                "--config",
                str(_config(tmp_path, n_train_meshes=1)),
                "--out",
                str(out2),
                "--max-steps",
                "1",
                "--init",
                str(init),
            ]
        )
        == 0
    )
    assert (out2 / "last.pt").is_file()


def test_ddp_two_processes_on_gloo(tmp_path):
    cfg = _config(tmp_path)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "pose_refiner_ros.cli",
            "train",
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--max-steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2


def test_bundled_training_configs_are_valid():
    """Every config/train*.yaml builds a TrainConfig, and its data overrides a SyntheticConfig."""
    from pose_refiner_ros.data.synthetic import SyntheticConfig
    from pose_refiner_ros.train.trainer import TrainConfig

    paths = sorted((Path(__file__).resolve().parents[2] / "config").glob("train*.yaml"))
    assert len(paths) >= 2
    for p in paths:
        cfg = TrainConfig.from_dict(yaml.safe_load(p.read_text()))
        SyntheticConfig.from_dict(dict(cfg.synthetic))


def test_data_workers_draw_different_batches():
    """Several DataLoader workers each draw their own stream (not the same batches twice)."""
    from pose_refiner_ros.data.procedural import procedural_models
    from pose_refiner_ros.data.synthetic import SyntheticConfig
    from pose_refiner_ros.train.stream import TrainStream
    from pose_refiner_ros.train.trainer import TrainConfig

    cfg = TrainConfig.from_dict({**TINY, "data_workers": 2})
    stream = TrainStream(procedural_models("train", 3, seed=0), cfg, SyntheticConfig(), seed=5)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    it = iter(loader)
    first, second = next(it), next(it)  # one batch from each worker
    del it
    assert not torch.equal(first["T_gt"], second["T_gt"])
    # worker 0 keeps the stream a single in-process worker draws
    alone = next(iter(TrainStream(procedural_models("train", 3, seed=0), cfg,
                                  SyntheticConfig(), seed=5)))
    assert torch.equal(alone["T_gt"], first["T_gt"])
