"""The settings of a training run, read from YAML (``config/train*.yaml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config_dict import dataclass_from_dict
from ..net.model import NetConfig
from ..solver.gauss_newton import SolverConfig
from .losses import LossWeights


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (``config/train.yaml`` holds the defaults).

    Attributes:
        out_dir: run directory: checkpoints, TensorBoard logs, ``train_summary.json``.
        max_steps: optimisation steps.
        batch_size: crops per step (per process).
        crop_size: training crop side (pixels, multiple of 8).
        outer_iters: render-and-compare iterations unrolled per step.
        lr, weight_decay, warmup_steps: AdamW with linear warm-up then cosine decay.
        grad_clip: gradient-norm clip.
        n_train_meshes, n_val_meshes: procedural meshes in the train / val splits.
        objects_yaml: optional user objects registry; its meshes join the training set
            (fine-tuning on one's own objects).
        user_object_share: with ``objects_yaml``, the share of samples whose target is
            one of its objects (drawn uniformly among them); the rest are procedural
            meshes, kept so that the network does not forget other shapes. Default 0.8.
            Validation then runs on the user's objects too.
        init_checkpoint: start from these weights (fine-tuning).
        grey_render_prob: share of renderings shaded flat grey (CAD models without
            texture); the rest use the mesh's colours.
        small_perturbation_prob, small_perturbation_scale: share of batches whose
            initial poses use the protocol's perturbation scaled down by a factor drawn
            in this range, so that one unrolled iteration per step also teaches the
            small corrections of the refiner's later iterations.
        val_every, val_samples: validation cadence and size: ``val_samples`` crops of
            the held-out procedural val meshes (``val_*``) and, with ``objects_yaml``,
            as many of the user's objects at new poses (``val_objects_*``).
        ckpt_every: checkpoint cadence.
        seed: data and initialisation seed.
        data_workers: DataLoader worker processes generating batches on the CPU (0:
            in-process, rendering on the training device: the choice for a GPU).
        torch_threads: threads of the optimising process (0: torch's default). On a
            small shared CPU one thread each for data and optimisation beats two that
            contend (measured: 2 threads fell 5x behind under load).
        device: ``auto``, ``cpu``, ``cuda[:N]``.
        amp: mixed precision (CUDA only).
        synthetic: overrides of ``data.synthetic.SyntheticConfig`` (augmentation,
            texture and clutter probabilities, image and pose ranges).
        net: network architecture.
        loss: loss weights.
        solver: the differentiable solve used by the pose loss.
    """

    out_dir: str = "runs/train"
    max_steps: int = 5000
    batch_size: int = 8
    crop_size: int = 128
    outer_iters: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    grad_clip: float = 1.0
    n_train_meshes: int = 400
    n_val_meshes: int = 16
    objects_yaml: str | None = None
    user_object_share: float = 0.8
    init_checkpoint: str | None = None
    grey_render_prob: float = 0.4
    small_perturbation_prob: float = 0.5
    small_perturbation_scale: tuple = (0.1, 0.6)
    val_every: int = 500
    val_samples: int = 64
    ckpt_every: int = 250
    seed: int = 0
    data_workers: int = 1
    torch_threads: int = 1
    device: str = "auto"
    amp: bool = True
    synthetic: dict = field(default_factory=dict)
    net: NetConfig = field(default_factory=NetConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(iterations=3))

    def __post_init__(self):
        if not 0.0 <= self.user_object_share <= 1.0:
            raise ValueError(f"train config: user_object_share: expected a share in [0, 1] "
                             f"(0.8: 80% of samples show your objects), got "
                             f"{self.user_object_share}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return dataclass_from_dict(
            cls, d, "train config",
            nested=(("net", NetConfig), ("loss", LossWeights), ("solver", SolverConfig)),
        )

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> TrainConfig:
        """Read a YAML config and apply ``overrides`` (dotted keys allowed: ``net.hidden``)."""
        raw = yaml.safe_load(Path(path).read_text()) or {}
        for key, value in (overrides or {}).items():
            node = raw
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return cls.from_dict(raw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
