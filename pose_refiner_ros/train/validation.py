"""Validation during training: refine a fixed set of crops with the current network.

A cheap proxy of the refiner, not the benchmark: ``n_samples`` crops drawn with a fixed
seed from the given meshes (the same crops at every validation of a run), four
render-and-compare iterations with the image crop held at the initial pose, and
ADD(-S)@0.1d and the median rotation error before and after. The trainer runs it on the
held-out procedural ``val`` meshes and, when fine-tuning, on the user's own objects (new
poses of the meshes it trains on: what fine-tuning is for).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..refine.field import correspondences
from ..refine.inputs import render_input
from ..render.base import RenderMesh
from ..render.shading import shade
from ..solver.gauss_newton import SolverConfig, solve_pose
from .losses import closest_symmetric_gt

#: Seed of the validation crops (training draws from other seeds).
VAL_SEED = 12345


def mean_point_distance_m(T_a: torch.Tensor, T_b: torch.Tensor, pts: torch.Tensor):
    """(B,) mean distance, metres, of the points ``pts`` (B, M, 3) (object frame, metres)
    mapped by the poses ``T_a`` and ``T_b`` (B, 4, 4) ``T_cam_obj``."""
    from ..geometry.lie import transform_points

    return (transform_points(T_a, pts) - transform_points(T_b, pts)).norm(dim=-1).mean(-1)


@torch.no_grad()
def validate(net, renderer, models: Sequence, n_samples: int, crop_size: int, syn_cfg,
             device: torch.device, distractor_models: Sequence | None = None) -> dict:
    """Refine ``n_samples`` fixed crops of ``models`` with ``net`` (left in eval mode
    only during the call).

    Args:
        net: a ``CorrespondenceNet``.
        renderer: the training renderer.
        models: ``ObjectModel`` s the crops' targets are drawn from (uniformly).
        n_samples: crops.
        crop_size: their side, pixels.
        syn_cfg: ``SyntheticConfig`` of the crops.
        device: where the network runs.
        distractor_models: sprites' meshes (default: ``models``).

    Returns:
        ``add01_init``, ``add01``: share of crops within ADD(-S) 0.1 d before / after;
        ``rot_med_init``, ``rot_med``: median rotation error, degrees, before / after.
    """
    from ..data.training_batch import make_training_batch
    from ..geometry.lie import rotation_angle_deg

    was_training = net.training
    net.eval()
    rng = np.random.default_rng(VAL_SEED)
    batch = make_training_batch(models, rng, n_samples, crop_size, syn_cfg, renderer,
                                distractor_models=distractor_models)
    dev, S = device, crop_size
    image, K = batch["image"].to(dev), batch["K_crop"].to(dev).float()
    T, T_gt = batch["T_init"].to(dev).float(), batch["T_gt"].to(dev).float()
    idx = batch["mesh_idx"].to(dev)
    meshes = [RenderMesh.from_object(m, dev) for m in models]
    diam = torch.tensor([m.diameter_m for m in models], device=dev)[idx]
    pts = torch.stack(
        [torch.tensor(np.array(m.points_m[:256]), dtype=torch.float32) for m in models]
    ).to(dev)[idx]
    syms = [torch.tensor(np.array(m.symmetries), dtype=torch.float32, device=dev)
            for m in models]

    def errors(T_est):
        T_sym = closest_symmetric_gt(T_gt, T_est, [syms[i] for i in idx.tolist()])
        add = mean_point_distance_m(T_est, T_sym, pts) / diam
        return add, rotation_angle_deg(T_est[:, :3, :3], T_sym[:, :3, :3])

    add0, rot0 = errors(T)
    for _ in range(4):  # the image crop stays fixed here: a cheap proxy of the real loop
        frags = renderer.render(meshes, idx, K, T, S, S)
        ren = render_input(frags, shade(frags, meshes, idx), T[:, 2, 3], diam)
        out = net(image, ren)
        corr = correspondences(
            frags.xyz_obj, frags.mask, out.flows_px[-1], torch.sigmoid(out.weight_logits[-1])
        )
        T = solve_pose(T, corr.pts_obj, corr.uv_tgt, corr.weight, K, SolverConfig()).T_cam_obj
    add1, rot1 = errors(T)
    net.train(was_training)
    return {
        "add01_init": float((add0 < 0.1).float().mean()),
        "add01": float((add1 < 0.1).float().mean()),
        "rot_med_init": float(rot0.median()),
        "rot_med": float(rot1.median()),
    }
