"""The adaptation loop: rounds of pseudo-labelling and fine-tuning on an unlabeled
recording (``pose-refiner adapt``).

Each round:

1. the current model, inside the node's refiner (node defaults, RGB unless depth is
   used), refines every detection of the recording; the trusted, confident results are
   the round's pseudo-poses (``adapt.pseudo_labels``);
2. ``steps_per_round`` training steps of ``train.Trainer``: a share ``real_share`` of the
   batches are crops of the recording's frames at the pseudo-poses
   (``adapt.real_batch``), the rest synthetic batches of the user's meshes and the
   procedural ones (against forgetting), exactly as fine-tuning draws them;
3. the model is saved (``model.pt``, loadable with ``--model`` everywhere).

The next round labels again with the adapted model. Ground truth plays no part
(``adapt.recording`` never reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
import time

import numpy as np

from .pseudo_labels import AdaptFrame, pseudo_label
from .real_batch import real_training_batch

__all__ = ["AdaptConfig", "adapt"]


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of :func:`adapt`.

    Attributes:
        rounds: pseudo-labelling + fine-tuning rounds.
        steps_per_round: training steps per round.
        real_share: share of the batches cut from the recording (the rest synthetic).
        min_score: least confidence of an accepted pseudo-pose.
        batch_size, crop_size: of every training batch.
        lr: learning rate (constant after a short warm-up).
        n_train_meshes: procedural meshes of the synthetic batches.
        seed: seed of the draws.
    """

    rounds: int = 2
    steps_per_round: int = 500
    real_share: float = 0.5
    min_score: float = 0.6
    batch_size: int = 8
    crop_size: int = 128
    lr: float = 1e-4
    n_train_meshes: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.rounds < 1 or self.steps_per_round < 0:
            raise ValueError("adapt: expected rounds >= 1 and steps_per_round >= 0, got "
                             f"{self.rounds}, {self.steps_per_round}")
        if not 0 <= self.real_share <= 1 or not 0 <= self.min_score <= 1:
            raise ValueError("adapt: real_share and min_score must lie in [0, 1], got "
                             f"{self.real_share}, {self.min_score}")


def _refiner(params, registry, model_path):
    from ..evaluation.node_config import build_refiner

    refiner, _ = build_refiner(replace(params, model_path=str(model_path)), registry)
    return refiner


def adapt(frames: Sequence[AdaptFrame], objects_yaml: str, init_model: str, out_dir: str,
          cfg: AdaptConfig = AdaptConfig(), params=None, progress: bool = True,
          log=print) -> dict:
    """Adapt ``init_model`` to ``frames`` (module docstring); returns the report dict.

    Args:
        frames: the recording (``adapt.recording``).
        objects_yaml: the objects YAML of the recording's classes.
        init_model: the checkpoint to start from.
        out_dir: receives ``model.pt`` (after every round) and nothing else; the caller
            writes the report.
        params: the node's parameters for the refiner that labels (default: node defaults).
        log: where progress lines go.
    """
    from ..evaluation.all_or_nothing import pause_for_test
    from ..evaluation.node_config import load_node_params
    from ..mesh.registry import ObjectRegistry
    from ..train.config import TrainConfig
    from ..train.trainer import Trainer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    registry = ObjectRegistry.from_yaml(objects_yaml)
    params = params or load_node_params()
    total = cfg.rounds * cfg.steps_per_round
    tcfg = TrainConfig(out_dir=str(out), max_steps=max(total, 1), batch_size=cfg.batch_size,
                       crop_size=cfg.crop_size, lr=cfg.lr, warmup_steps=20,
                       n_train_meshes=cfg.n_train_meshes, objects_yaml=str(objects_yaml),
                       init_checkpoint=str(init_model), seed=cfg.seed, data_workers=0,
                       torch_threads=0, amp=False)
    trainer = Trainer(tcfg)
    index = {m.class_id: i for i, m in enumerate(trainer.user_models)}
    rng = np.random.default_rng(cfg.seed)
    model_path = out / "model.pt"
    current = Path(init_model)
    report: dict = {"config": asdict(cfg), "frames": len(frames), "rounds": [],
                    "init_model": str(init_model), "model": str(model_path)}
    t_start = time.perf_counter()
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=cfg.rounds * (len(frames) + cfg.steps_per_round), unit="it",
                   desc="adapt", file=sys.stderr, dynamic_ncols=True)
    try:
        for rnd in range(cfg.rounds):
            t0 = time.perf_counter()
            refiner = _refiner(params, registry, current)
            pl = pseudo_label(refiner, frames, cfg.min_score,
                              progress=bar.update if bar is not None else None)
            rec = {"round": rnd, "pseudo": dict(pl.counts),
                   "pseudo_score_median": float(np.median(pl.scores)) if pl.scores else None,
                   "label_s": time.perf_counter() - t0, "losses": {"real": [], "synthetic": []}}
            log(f"adapt: round {rnd + 1}/{cfg.rounds}: {pl.counts['accepted']} of "
                f"{pl.counts['detections']} detections accepted as pseudo-poses")
            report["rounds"].append(rec)
            t1 = time.perf_counter()
            for _ in range(cfg.steps_per_round):
                pause_for_test("adapt-training")
                real = bool(pl.labels) and rng.random() < cfg.real_share
                batch = (real_training_batch(frames, pl, index, trainer.models, trainer.meshes,
                                             trainer.renderer, rng, cfg.batch_size,
                                             cfg.crop_size, trainer.syn_cfg)
                         if real else None)
                logs = trainer.train_step(batch)
                rec["losses"]["real" if real else "synthetic"].append(round(logs["total"], 5))
                if bar is not None:
                    bar.update(1)
            rec["train_s"] = time.perf_counter() - t1
            trainer.save(model_path, meta={"adapted_from": str(init_model), "round": rnd})
            current = model_path
    except KeyboardInterrupt:
        report["interrupted"] = True
        trainer.save(model_path, meta={"adapted_from": str(init_model), "interrupted": True})
        log(f"adapt: interrupted; saved {model_path} at step {trainer.step}")
    finally:
        if bar is not None:
            bar.close()
    report["steps"] = trainer.step
    report["elapsed_s"] = time.perf_counter() - t_start
    return report
