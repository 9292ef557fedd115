"""Training the correspondence-field network on synthetic data rendered from meshes.

One step: draw a batch of zoom-in training crops (``data.synthetic.make_training_batch``:
a mesh, a ground-truth pose, an initial pose from the protocol's perturbation, the image
crop around the initial pose), then for ``outer_iters`` render-and-compare iterations:
render at the current pose, run the network, compute the ground-truth field from the
geometry, and apply (a) a sequence L1 loss on the field over the GRU steps, (b) a BCE
loss on the weights (target: visible and within ``inlier_px`` of the truth), (c) a pose
loss through the differentiable solver. The pose is detached between outer iterations
(as DeepIM and RAFT do) so memory does not grow with them.

Distributed: launched under ``torchrun`` (``WORLD_SIZE`` > 1), it wraps the network in
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU); every rank draws different data
(the seed is offset by the rank) and rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import json
import math
import os
from pathlib import Path
import time

import numpy as np
import torch
import yaml

from ..config_dict import dataclass_from_dict
from ..evaluation.all_or_nothing import pause_for_test, signals_held_back
from ..net.model import CorrespondenceNet, NetConfig
from ..refine.field import correspondences
from ..refine.refiner import render_input, resolve_device
from ..render.base import RenderMesh, make_renderer
from ..render.shading import shade
from ..solver.gauss_newton import SolverConfig, solve_pose
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .losses import (
    LossWeights,
    closest_symmetric_gt,
    field_losses,
    gt_field,
    matching_loss,
    pose_loss,
)


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
        init_checkpoint: start from these weights (fine-tuning).
        grey_render_prob: share of renderings shaded flat grey (CAD models without
            texture); the rest use the mesh's colours.
        small_perturbation_prob, small_perturbation_scale: share of batches whose
            initial poses use the protocol's perturbation scaled down by a factor drawn
            in this range, so that one unrolled iteration per step also teaches the
            small corrections of the refiner's later iterations.
        val_every, val_samples: validation cadence and size (held-out val meshes).
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


class TrainStream(torch.utils.data.IterableDataset):
    """Endless training batches, drawn in a DataLoader worker (one torch thread) so that
    data generation and optimisation use the two cores of a small machine in parallel.

    Every batch draws its perturbation scale (see ``TrainConfig.small_perturbation_*``).
    Deterministic per (seed, rank, start step).
    """

    def __init__(self, models, cfg: TrainConfig, syn_cfg, seed: int, device="cpu"):
        self.models, self.cfg, self.syn_cfg, self.seed = models, cfg, syn_cfg, seed
        self.device = torch.device(device)

    def __iter__(self):
        from ..data.synthetic import make_training_batch

        if self.device.type == "cpu":
            torch.set_num_threads(1)
        rng = np.random.default_rng(self.seed)
        renderer = make_renderer("torch", self.device)
        while True:
            syn = self.syn_cfg
            if rng.random() < self.cfg.small_perturbation_prob:
                s = float(rng.uniform(*self.cfg.small_perturbation_scale))
                syn = dataclasses.replace(
                    syn,
                    sigma_r_deg=syn.sigma_r_deg * s,
                    sigma_t_m=tuple(x * s for x in syn.sigma_t_m),
                )
            yield make_training_batch(
                self.models,
                rng,
                self.cfg.batch_size,
                self.cfg.crop_size,
                syn,
                renderer,
                device=self.device,
            )


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


class Trainer:
    """Runs :class:`TrainConfig`; ``run()`` returns the summary dict it also writes."""

    def __init__(self, cfg: TrainConfig):
        from ..data.procedural import procedural_models
        from ..data.synthetic import SyntheticConfig

        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(cfg.device)
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.manual_seed(cfg.seed)
        self.models = procedural_models("train", cfg.n_train_meshes, seed=cfg.seed)
        if cfg.objects_yaml:
            from ..mesh.registry import ObjectRegistry

            self.models = list(ObjectRegistry.from_yaml(cfg.objects_yaml).models) + self.models
        self.val_models = procedural_models("val", cfg.n_val_meshes, seed=cfg.seed)
        self.syn_cfg = SyntheticConfig.from_dict(dict(cfg.synthetic))
        self.renderer = make_renderer("auto", self.device)
        self.meshes = [RenderMesh.from_object(m, self.device) for m in self.models]
        self.grey_meshes = [
            dataclasses.replace(m, vert_colors=torch.full_like(m.vert_colors, 0.7))
            for m in self.meshes
        ]
        self.syms = [
            torch.as_tensor(np.array(m.symmetries), dtype=torch.float32, device=self.device)
            for m in self.models
        ]
        self.diam = torch.tensor([m.diameter_m for m in self.models], device=self.device)
        self.points = torch.stack(
            [torch.tensor(np.array(m.points_m[:256]), dtype=torch.float32) for m in self.models]
        ).to(self.device)

        if cfg.init_checkpoint:
            self.net = load_checkpoint(cfg.init_checkpoint, self.device).train()
        else:
            self.net = CorrespondenceNet(cfg.net).to(self.device).train()
        self.ddp = self.net
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.net)
        self.opt = torch.optim.AdamW(
            self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step = 0
        self._batches = None
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.out = Path(cfg.out_dir)

    # -- checkpoints ---------------------------------------------------------------------
    def save(self, path: Path, meta: dict | None = None) -> None:
        if self.rank == 0:
            save_checkpoint(
                path,
                self.net,
                meta={"train_config": self.cfg.to_dict(), **(meta or {})},
                optimizer=self.opt.state_dict(),
                step=self.step,
            )

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`save` (weights, optimiser, step)."""
        blob = read_checkpoint(path)
        self.net.load_state_dict(blob["state_dict"])
        if "optimizer" in blob:
            self.opt.load_state_dict(blob["optimizer"])
        self.step = int(blob.get("step", 0))

    # -- one step ------------------------------------------------------------------------
    def losses(self, batch: dict) -> dict:
        """Forward pass and losses for one batch (see the module docstring)."""
        cfg, S = self.cfg, self.cfg.crop_size
        dev = self.device
        image = batch["image"].to(dev)
        K = batch["K_crop"].to(dev).float()
        T_gt = batch["T_gt"].to(dev).float()
        T = batch["T_init"].to(dev).float()
        idx = batch["mesh_idx"].to(dev)
        visib = batch["visib_mask"].to(dev).float()
        diam = self.diam[idx]
        T_gt = closest_symmetric_gt(T_gt, T, [self.syms[i] for i in idx.tolist()])
        grey = torch.rand(len(idx), device=dev) < cfg.grey_render_prob
        # The target's clean depth at the (unresolved) ground truth: symmetric
        # equivalents render the same surface, so it serves for T_gt @ S* too.
        depth_gt = batch["depth_gt_m"].to(dev).float()
        totals: dict = {}
        for _ in range(cfg.outer_iters):
            with torch.no_grad():
                frags = self.renderer.render(self.meshes, idx, K, T, S, S)
                rgb = torch.where(
                    grey[:, None, None, None],
                    shade(frags, self.grey_meshes, idx),
                    shade(frags, self.meshes, idx),
                )
                ren = render_input(frags, rgb, T[:, 2, 3], diam)
            with torch.autocast(dev.type, enabled=self.use_amp):
                out = self.ddp(image, ren)
            out = type(out)(
                [f.float() for f in out.flows_px],
                [w.float() for w in out.weight_logits],
                out.corr.float(),
            )
            corr = correspondences(
                frags.xyz_obj, frags.mask, out.flows_px[-1], torch.sigmoid(out.weight_logits[-1])
            )
            flow_gt, visible = gt_field(
                corr.pts_obj, corr.uv_src, corr.valid, T_gt, K, depth_gt, visib, diam
            )
            terms = field_losses(out, corr, flow_gt, visible, cfg.loss)
            terms["match"] = matching_loss(
                out.corr, frags.xyz_obj, frags.mask, T_gt, K, depth_gt, visib, diam
            )
            res = solve_pose(T, corr.pts_obj, corr.uv_tgt, corr.weight, K, cfg.solver)
            terms["pose"] = pose_loss(res.T_cam_obj, T_gt, self.points[idx], diam)
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.outer_iters
            T = res.T_cam_obj.detach()
        lw = cfg.loss
        totals["total"] = (
            lw.flow * totals["flow"]
            + lw.match * totals["match"]
            + lw.weight * totals["weight"]
            + lw.pose * totals["pose"]
        )
        return totals

    def batches(self):
        """Endless training batches (a worker process when ``cfg.data_workers`` > 0)."""
        seed = self.cfg.seed + 1000 * self.rank + self.step
        if self.cfg.data_workers == 0:
            # In-process: on a GPU the batches are rendered there too.
            return iter(TrainStream(self.models, self.cfg, self.syn_cfg, seed, self.device))
        stream = TrainStream(self.models, self.cfg, self.syn_cfg, seed)
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=self.cfg.data_workers,
            prefetch_factor=2,
            persistent_workers=True,
        )
        return iter(loader)

    def train_step(self, batch: dict | None = None) -> dict:
        t0 = time.perf_counter()
        if batch is None:
            if self._batches is None:
                self._batches = self.batches()
            batch = next(self._batches)
        t_data = time.perf_counter() - t0
        for g in self.opt.param_groups:
            g["lr"] = _lr_at(self.step, self.cfg)
        terms = self.losses(batch)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.unscale_(self.opt)
        gnorm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.step += 1
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs.update(
            grad_norm=float(gnorm),
            lr=self.opt.param_groups[0]["lr"],
            data_s=t_data,
            step_s=time.perf_counter() - t0,
        )
        return logs

    # -- validation ----------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Refine held-out val meshes (fixed seed) with the current network: ADD@0.1d, e_R."""
        from ..data.synthetic import make_training_batch
        from ..geometry.lie import rotation_angle_deg

        self.net.eval()
        rng = np.random.default_rng(12345)
        vm = self.val_models
        batch = make_training_batch(
            vm, rng, self.cfg.val_samples, self.cfg.crop_size, self.syn_cfg, self.renderer
        )
        dev, S = self.device, self.cfg.crop_size
        image, K = batch["image"].to(dev), batch["K_crop"].to(dev).float()
        T, T_gt = batch["T_init"].to(dev).float(), batch["T_gt"].to(dev).float()
        idx = batch["mesh_idx"].to(dev)
        meshes = [RenderMesh.from_object(m, dev) for m in vm]
        diam = torch.tensor([m.diameter_m for m in vm], device=dev)[idx]
        pts = torch.stack(
            [torch.tensor(np.array(m.points_m[:256]), dtype=torch.float32) for m in vm]
        ).to(dev)[idx]
        syms = [torch.tensor(np.array(m.symmetries), dtype=torch.float32, device=dev) for m in vm]

        def errors(T_est):
            T_sym = closest_symmetric_gt(T_gt, T_est, [syms[i] for i in idx.tolist()])
            add = pose_loss_per(T_est, T_sym, pts) / diam
            return add, rotation_angle_deg(T_est[:, :3, :3], T_sym[:, :3, :3])

        add0, rot0 = errors(T)
        for _ in range(4):  # the image crop stays fixed here: a cheap proxy of the real loop
            frags = self.renderer.render(meshes, idx, K, T, S, S)
            ren = render_input(frags, shade(frags, meshes, idx), T[:, 2, 3], diam)
            out = self.net(image, ren)
            corr = correspondences(
                frags.xyz_obj, frags.mask, out.flows_px[-1], torch.sigmoid(out.weight_logits[-1])
            )
            T = solve_pose(T, corr.pts_obj, corr.uv_tgt, corr.weight, K, SolverConfig()).T_cam_obj
        add1, rot1 = errors(T)
        self.net.train()
        return {
            "val_add01_init": float((add0 < 0.1).float().mean()),
            "val_add01": float((add1 < 0.1).float().mean()),
            "val_rot_med_init": float(rot0.median()),
            "val_rot_med": float(rot1.median()),
        }

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg = self.cfg
        main = self.rank == 0
        writer = SummaryWriter(str(self.out / "tb")) if main else None
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.yaml").write_text(
                yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            )
        t_start = time.perf_counter()
        val: dict = {}
        bar = tqdm(
            total=cfg.max_steps, initial=self.step, disable=not main, desc="train", unit="step"
        )
        ema: dict = {}
        try:
            while self.step < cfg.max_steps:
                logs = self.train_step()
                for k, v in logs.items():
                    ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
                if main:
                    for k, v in logs.items():
                        writer.add_scalar(f"train/{k}", v, self.step)
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{ema['total']:.3f}",
                        epe=f"{ema['epe']:.2f}px",
                        pose=f"{ema['pose']:.3f}",
                    )
                if main and (self.step % cfg.val_every == 0 or self.step == cfg.max_steps):
                    val = self.validate()
                    for k, v in val.items():
                        writer.add_scalar(f"val/{k}", v, self.step)
                    bar.write(
                        f"step {self.step}: " + ", ".join(f"{k}={v:.3f}" for k, v in val.items())
                    )
                if main and (self.step % cfg.ckpt_every == 0 or self.step == cfg.max_steps):
                    self.save(self.out / "last.pt", {"val": val})
                if self.step == 1:
                    pause_for_test("train_step")
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep where it was, then stop
            bar.close()
            if main:
                with signals_held_back():
                    self.save(self.out / "last.pt", {"val": val, "interrupted": True})
                    writer.close()
            raise
        bar.close()
        summary = {
            "steps": self.step,
            "wall_s": time.perf_counter() - t_start,
            "device": str(self.device),
            "world_size": self.world,
            "final_train": ema,
            "val": val,
        }
        if main:
            self.save(self.out / "last.pt", {"val": val, "summary": summary})
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2))
            writer.close()
        return summary


def pose_loss_per(T_a, T_b, pts):
    """(B,) mean distance of ``pts`` (B, M, 3) under two poses, metres."""
    from ..geometry.lie import transform_points

    return (transform_points(T_a, pts) - transform_points(T_b, pts)).norm(dim=-1).mean(-1)
