"""Fine-tuning on one's own objects: where the samples come from, what is validated, the
time estimate, and a checkpoint on Ctrl-C."""

from __future__ import annotations

from pathlib import Path
import signal

import numpy as np
import pytest
import torch
import yaml

from pose_refiner_ros.cli import main
from pose_refiner_ros.train import trainer as trainer_module
from pose_refiner_ros.train.config import TrainConfig
from pose_refiner_ros.train.progress import RunEstimate, format_duration
from pose_refiner_ros.train.stream import target_probs

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "batch_size": 2,
    "crop_size": 32,
    "n_train_meshes": 6,
    "n_val_meshes": 2,
    "val_samples": 2,
    "val_every": 2,
    "ckpt_every": 1000,
    "warmup_steps": 1,
    "data_workers": 0,
    "device": "cpu",
    "net": {"feat_dim": 16, "hidden": 16, "ctx": 16, "width": 16, "gru_iters": 1},
}


@pytest.fixture(scope="module")
def objects_yaml(tmp_path_factory):
    """Two user objects: a box and a cylinder, in millimetres."""
    import trimesh

    d = tmp_path_factory.mktemp("objects")
    trimesh.creation.box(extents=(80, 50, 30)).export(d / "part.ply")
    trimesh.creation.cylinder(radius=30, height=90).export(d / "can.ply")
    objects = [{"class_id": "part", "mesh": "part.ply", "scale": 0.001},
               {"class_id": "can", "mesh": "can.ply", "scale": 0.001}]
    (d / "objects.yaml").write_text(yaml.safe_dump({"objects": objects}))
    return d / "objects.yaml"


def _trainer(objects_yaml=None, **extra):
    return trainer_module.Trainer(TrainConfig.from_dict(
        {**TINY, "objects_yaml": None if objects_yaml is None else str(objects_yaml), **extra}))


def test_target_probabilities_put_the_share_on_the_users_meshes():
    p = target_probs(2, 400, 0.8)
    assert p.shape == (402,) and np.isclose(p.sum(), 1.0)
    assert np.isclose(p[:2].sum(), 0.8) and np.isclose(p[0], p[1])
    assert target_probs(0, 400, 0.8) is None  # no user meshes: uniform, as ever
    assert np.allclose(target_probs(3, 0, 0.8), 1 / 3)
    with pytest.raises(ValueError, match="user_object_share"):
        TrainConfig(user_object_share=1.5)


@pytest.mark.parametrize("share", [0.8, 0.3])
def test_fine_tuning_samples_show_the_users_objects_at_the_configured_share(
        objects_yaml, monkeypatch, share):
    """Count the targets of 400 training samples by source, without rendering: the batch
    maker is replaced by one that draws the targets as the real one does."""
    from pose_refiner_ros.data import training_batch

    def targets_only(models, rng, batch_size, crop_size, cfg, renderer, device="cpu",
                     target_probs=None):
        return {"mesh_idx": training_batch.draw_targets(rng, len(models), batch_size,
                                                        target_probs)}

    monkeypatch.setattr(training_batch, "make_training_batch", targets_only)
    tr = _trainer(objects_yaml, batch_size=8, user_object_share=share)
    assert [m.class_id for m in tr.user_models] == ["part", "can"]
    assert tr.models[:2] == tr.user_models and len(tr.models) == 2 + TINY["n_train_meshes"]
    batches = tr.batches()
    idx = np.concatenate([next(batches)["mesh_idx"] for _ in range(50)])
    user = np.isin(idx, [0, 1])
    assert abs(user.mean() - share) < 0.08, user.mean()  # 400 draws: sd 0.02 or less
    assert 0 < (idx == 0).sum() and 0 < (idx == 1).sum()  # both user objects
    assert len(set(idx[~user].tolist())) >= 4  # the procedural meshes still come up

    plain = _trainer(None, batch_size=8).batches()
    idx = np.concatenate([next(plain)["mesh_idx"] for _ in range(10)])
    assert set(idx.tolist()) <= set(range(TINY["n_train_meshes"]))


def test_validation_runs_on_the_users_objects_and_on_procedural_meshes(objects_yaml,
                                                                       monkeypatch):
    seen = []

    def fake(net, renderer, models, n_samples, crop_size, syn_cfg, device,
             distractor_models=None):
        seen.append(([m.class_id for m in models],
                     [m.class_id for m in distractor_models or []], n_samples))
        return {"add01": 0.5}

    monkeypatch.setattr(trainer_module, "validate", fake)
    val = _trainer(objects_yaml, val_samples=3).validate()
    assert val == {"val_add01": 0.5, "val_objects_add01": 0.5}
    (procedural, none, n1), (user, distractors, n2) = seen
    assert all(c.startswith("val_") for c in procedural) and len(procedural) == 2
    assert user == ["part", "can"] and distractors == procedural and n1 == n2 == 3
    seen.clear()
    assert _trainer(None).validate() == {"val_add01": 0.5} and len(seen) == 1


def test_the_estimate_is_measured_after_the_first_step():
    t = iter([100.0, 110.0, 120.0, 130.0, 140.0, 150.0, 160.0])  # step 1 took 100 s
    est = RunEstimate(0, 1000, window=5, clock=lambda: next(t))
    said = [est.step_done(s) for s in range(1, 8)]
    assert said[:5] == [None] * 5 and said[6] is None  # step 1 is not timed
    assert said[5] == ("train: 0.10 steps/s over steps 2-6: about 2 h 45 min for the "
                       "remaining 994 steps")
    assert est.remaining_s(7) == pytest.approx(9930.0)
    assert [format_duration(s) for s in (40, 600, 3900)] == ["40 s", "10 min", "1 h 05 min"]
    short = RunEstimate(0, 4, clock=iter([1.0, 3.0]).__next__)
    assert [short.step_done(s) for s in (1, 2)][1].startswith("train: 0.50 steps/s over step 2")


def test_a_tiny_fine_tuning_run_says_its_plan_and_its_time(objects_yaml, tmp_path, capsys):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--objects", str(objects_yaml),
                 "--out", str(out), "--max-steps", "4"]) == 0
    printed = capsys.readouterr()
    assert "train: steps 0 -> 4" in printed.out
    assert "80% of samples show your 2 object(s)" in printed.out
    assert "steps/s over step 2: about" in printed.out and "remaining 2 steps" in printed.out
    assert "left=" in printed.err  # the progress bar
    meta = torch.load(out / "last.pt", weights_only=True)["meta"]
    assert {"val_add01", "val_objects_add01", "val_objects_rot_med"} <= set(meta["val"])
    assert meta["train_config"]["user_object_share"] == 0.8


def test_ctrl_c_writes_a_checkpoint_of_where_the_run_was(run_paused, objects_yaml, tmp_path):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "val_every": 1000}))
    out = tmp_path / "run"
    code, _, err = run_paused(["train", "--config", cfg, "--objects", objects_yaml,
                               "--out", out, "--max-steps", "50"], "train_step", signal.SIGINT)
    assert code == 130 and "interrupted at step 1" in err, err
    blob = torch.load(out / "last.pt", weights_only=True)
    assert blob["step"] == 1 and blob["meta"]["interrupted"] is True


def test_the_fine_tuning_config_is_the_one_the_docs_give():
    """config/finetune.yaml builds, puts most samples on the user's objects, and is the
    config of the README's and the model card's fine-tuning command."""
    from pose_refiner_ros.data.synthetic import SyntheticConfig

    cfg = TrainConfig.from_yaml(REPO / "config" / "finetune.yaml")
    SyntheticConfig.from_dict(dict(cfg.synthetic))
    assert 0.5 < cfg.user_object_share < 1.0
    for doc in ("README.md", "models/README.md"):
        text = " ".join((REPO / doc).read_text().replace("\\\n", " ").split())
        assert ("pose-refiner train --config config/finetune.yaml --objects my_objects.yaml "
                "--init models/refiner.pt") in text, doc
