"""Training the correspondence-field network on synthetic data rendered from meshes.

One step: draw a batch of zoom-in training crops (``data.training_batch.make_training_batch``:
a mesh, a ground-truth pose, an initial pose from the protocol's perturbation, the image
crop around the initial pose), then for ``outer_iters`` render-and-compare iterations:
render at the current pose, run the network, compute the ground-truth field from the
geometry, and apply (a) a sequence L1 loss on the field over the GRU steps, (b) a BCE
loss on the weights (target: visible and within ``inlier_px`` of the truth), (c) a pose
loss through the differentiable solver. The pose is detached between outer iterations
(as DeepIM and RAFT do) so memory does not grow with them.

Fine-tuning (``objects_yaml``): ``user_object_share`` of the samples show the user's
objects, the rest the procedural meshes (:mod:`.stream`); validation runs on both
(:mod:`.validation`). A run says what it will do at its start, and how long it will take
once the first steps are timed (:mod:`.progress`); the bar shows the time left.

Distributed: launched under ``torchrun`` (``WORLD_SIZE`` > 1), it wraps the network in
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU); every rank draws different data
(the seed is offset by the rank) and rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
import time

import numpy as np
import torch
import yaml

from ..evaluation.all_or_nothing import pause_for_test, signals_held_back
from ..net.model import CorrespondenceNet
from ..refine.field import correspondences
from ..refine.inputs import render_input, resolve_device
from ..render.base import RenderMesh, make_renderer
from ..render.shading import shade
from ..solver.gauss_newton import solve_pose
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .losses import (
    closest_symmetric_gt,
    field_losses,
    gt_field,
    matching_loss,
    pose_loss,
)
from .progress import RunEstimate, format_duration
from .stream import TrainStream, target_probs
from .validation import validate

__all__ = ["TrainConfig", "Trainer", "TrainStream", "target_probs"]


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
        procedural = procedural_models("train", cfg.n_train_meshes, seed=cfg.seed)
        self.user_models: list = []
        if cfg.objects_yaml:
            from ..mesh.registry import ObjectRegistry

            self.user_models = list(ObjectRegistry.from_yaml(cfg.objects_yaml).models)
        self.models = self.user_models + procedural
        self.target_probs = target_probs(
            len(self.user_models), len(procedural), cfg.user_object_share
        )
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
            return iter(TrainStream(self.models, self.cfg, self.syn_cfg, seed, self.device,
                                    self.target_probs))
        stream = TrainStream(self.models, self.cfg, self.syn_cfg, seed,
                             target_probs=self.target_probs)
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

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> dict:
        """The held-out procedural val meshes (``val_*``) and, when fine-tuning, the
        user's objects at new poses (``val_objects_*``): see :mod:`.validation`."""
        cfg = self.cfg
        run = dict(n_samples=cfg.val_samples, crop_size=cfg.crop_size, syn_cfg=self.syn_cfg,
                   device=self.device)
        out = {f"val_{k}": v
               for k, v in validate(self.net, self.renderer, self.val_models, **run).items()}
        if self.user_models:
            out.update({f"val_objects_{k}": v for k, v in validate(
                self.net, self.renderer, self.user_models,
                distractor_models=self.val_models, **run).items()})
        return out

    def plan(self) -> str:
        """What the run will do, said at its start."""
        cfg = self.cfg
        n_proc = len(self.models) - len(self.user_models)
        if self.user_models:
            share = cfg.user_object_share if n_proc else 1.0
            data = (f"{share:.0%} of samples show your {len(self.user_models)} object(s) "
                    f"({cfg.objects_yaml}), {1 - share:.0%} the {n_proc} procedural meshes; "
                    f"validation on your objects and on {len(self.val_models)} procedural "
                    f"val meshes")
        else:
            data = (f"samples from {n_proc} procedural meshes; validation on "
                    f"{len(self.val_models)} procedural val meshes")
        return (f"train: steps {self.step} -> {cfg.max_steps}, batch {cfg.batch_size}, "
                f"{cfg.crop_size} px crops, on {self.device}; {data} (every {cfg.val_every} "
                f"steps); the time it takes is estimated after the first steps")

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
        estimate = RunEstimate(self.step, cfg.max_steps)
        if main:
            bar.write(self.plan())
        try:
            while self.step < cfg.max_steps:
                logs = self.train_step()
                for k, v in logs.items():
                    ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
                if main:
                    for k, v in logs.items():
                        writer.add_scalar(f"train/{k}", v, self.step)
                    bar.update(1)
                    shown = dict(
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
                said = estimate.step_done(self.step)
                if main and said:
                    bar.write(said)
                left = estimate.remaining_s(self.step)
                if main:
                    if left is not None:
                        shown["left"] = format_duration(left)
                    bar.set_postfix(shown)
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

