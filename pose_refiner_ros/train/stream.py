"""What the network is trained on: endless batches of synthetic crops, and how often each
mesh is a sample's target (fine-tuning puts most samples on the user's objects)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..render.base import make_renderer
from .config import TrainConfig


class TrainStream(torch.utils.data.IterableDataset):
    """Endless training batches, drawn in a DataLoader worker (one torch thread) so that
    data generation and optimisation use the two cores of a small machine in parallel.

    Every batch draws its perturbation scale (see ``TrainConfig.small_perturbation_*``);
    each sample's target is drawn with ``target_probs`` (see :func:`target_probs`).
    Deterministic per (seed, rank, start step, worker): each DataLoader worker draws its
    own stream, so that several workers do not yield the same batches.
    """

    def __init__(self, models, cfg: TrainConfig, syn_cfg, seed: int, device="cpu",
                 target_probs=None):
        self.models, self.cfg, self.syn_cfg, self.seed = models, cfg, syn_cfg, seed
        self.device = torch.device(device)
        self.target_probs = target_probs

    def __iter__(self):
        from ..data.training_batch import make_training_batch

        if self.device.type == "cpu":
            torch.set_num_threads(1)
        worker = torch.utils.data.get_worker_info()
        wid = worker.id if worker is not None else 0
        rng = np.random.default_rng(self.seed if wid == 0 else [self.seed, wid])
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
                target_probs=self.target_probs,
            )


def target_probs(n_user: int, n_procedural: int, user_share: float):
    """(n_user + n_procedural,) probability of each mesh being a sample's target, the
    user's meshes first: ``user_share`` spread evenly over the user's meshes, the rest
    over the procedural ones; None (uniform) without user meshes."""
    if n_user == 0:
        return None
    if n_procedural == 0:
        return np.full(n_user, 1.0 / n_user)
    return np.concatenate([np.full(n_user, user_share / n_user),
                           np.full(n_procedural, (1.0 - user_share) / n_procedural)])
