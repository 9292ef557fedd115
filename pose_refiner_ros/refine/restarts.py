"""Restarts: more hypotheses for the refinements the gate rejects (RGB, region modality).

From a coarse pose 20 deg or more off, the refinement often ends in a wrong basin and the
gate (``refine.trust``) returns the coarse pose. Before giving up on such an object the
refiner tries a few other starts, all render-free: the coarse pose itself and the coarse
pose rotated by ``restart_deg`` about the camera's x, y and z axes (both signs). Each is
solved region-only with the polish's schedule (``track.measure.region_solve``); with
``restart_keep`` below the number of starts, only the best by the render-free region
score after the long-line steps run the rest. Each is then scored by the rendered region
score and checked for consensus like the main refinement. The start kept is the
best-scoring one that passes the gate with a consensus spread below
``restart_max_spread`` (stricter than the main gate's: a start is one guess among
several, and the more guesses, the more chances for a wrong one to pass); when none
passes, the coarse pose stays.

Both kinds of restart take a result only near the detection: its position within
``restart_max_shift`` object diameters of the coarse pose, or, for a loop restart's result
that another start's result confirms (:func:`confirmed`: two starts found the same pose),
within ``restart_agreed_max_shift``. A restart searches around the detection; one that
ends far from it has mostly locked onto a neighbour, an occluder or a wrong scale. On
lmo-dev the loop restarts' passing results that moved half a diameter or more were right
for 10% and made the pose worse for 67%; with the bound the loop restarts' score floor
went down from 0.55 to 0.45 (ADD(-S)@0.1d 45.1 -> 48.0%, median rotation error 8.4 -> 7.8
deg, made worse 13.4 -> 13.5%; docs/benchmarks.md, "This release").

Why these starts: a rotation of the coarse pose about a camera axis moves the silhouette
as a whole, so the contour lines meet different image edges and the solve falls into
another basin. On real images (lmo-dev, frames 0-39) the best of seven such starts
reaches ADD(-S)@0.1d for 39% of the rejected objects where the coarse pose does for 22%;
the rule above rescues 82 of 388 rejected refinements over all 133 frames (ADD(-S)@0.1d
33.9 -> 37.5%; docs/benchmarks.md, "Restarts").
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry.lie import rotation_angle_deg, so3_exp
from .trust import consensus_spread, trusted

__all__ = ["restart_rejected", "loop_restarts", "start_poses", "near_coarse", "confirmed"]

#: rotation axes of the starts (camera frame), in the order they are used
_AXES = ((1.0, 0, 0), (-1.0, 0, 0), (0, 1.0, 0), (0, -1.0, 0), (0, 0, 1.0), (0, 0, -1.0))


def start_poses(T0: torch.Tensor, n: int, angle_deg: float) -> torch.Tensor:
    """(n + 1, B, 4, 4) the poses ``T0`` (B, 4, 4) and ``n`` (at most 6) rotations of
    them by ``angle_deg`` about the camera axes ``_AXES``, about each object's origin
    (the position stays)."""
    axes = torch.tensor(_AXES[:n], dtype=T0.dtype, device=T0.device)
    dR = so3_exp(axes * np.radians(angle_deg))  # (n, 3, 3)
    starts = T0[None].repeat(n + 1, 1, 1, 1)
    starts[1:, :, :3, :3] = dR[:, None] @ T0[None, :, :3, :3]
    return starts


def near_coarse(T_end: torch.Tensor, T0: torch.Tensor, diam: torch.Tensor,
                max_shift: float | torch.Tensor) -> torch.Tensor:
    """(N,) bool: the position of ``T_end`` (N, 4, 4) lies within ``max_shift`` (a number
    or (N,)) object diameters ``diam`` (N,) of the coarse pose ``T0`` (N, 4, 4) (camera
    frame, metres).

    A restart searches around the detection: one that ends far from it has mostly locked
    onto something else (module docstring)."""
    return (T_end[:, :3, 3] - T0[:, :3, 3]).norm(dim=-1) < max_shift * diam


#: two restarts' results agree when their rotations differ by less than this (degrees)
#: and their positions by less than ``AGREE_DIAMETERS`` object diameters: a tenth of a
#: diameter is the scale of the ADD(-S)@0.1d criterion, 5 deg the rotation error of a
#: good polish on real images (docs/benchmarks.md)
AGREE_DEG = 5.0
AGREE_DIAMETERS = 0.1


def confirmed(ends: torch.Tensor, diam: torch.Tensor) -> torch.Tensor:
    """(n, m) bool: result k of object j (``ends`` (n, m, 4, 4): n starts of m objects,
    camera frame) agrees with the result of at least one other start of the same object
    (``AGREE_DEG``, ``AGREE_DIAMETERS``; ``diam`` (m,) metres). Two starts that end at
    the same pose found the same basin independently: evidence for it."""
    R, t = ends[..., :3, :3], ends[..., :3, 3]
    # (n, n, m): rotation angle and distance between the results of starts k and k'
    ang = rotation_angle_deg(R[:, None], R[None])
    dist = (t[:, None] - t[None]).norm(dim=-1)
    agree = (ang < AGREE_DEG) & (dist < AGREE_DIAMETERS * diam[None, None])
    agree &= ~torch.eye(len(ends), dtype=torch.bool, device=ends.device)[..., None]
    return agree.any(1)


def restart_rejected(refiner, img, K, T0, T, class_ids, mesh_idx, corners, meshes, diam,
                     region_scores, occ=None):
    """Re-solve the objects the gate rejects from other starts (module docstring).

    Args:
        refiner: the ``Refiner`` (settings, renderer, viewpoint models).
        img: (1, 3, H, W); K: (B, 3, 3); T0: (B, 4, 4) coarse poses; T: (B, 4, 4) refined
            poses; class_ids, mesh_idx, corners, meshes, diam: the objects, as in the
            refiner's loop.
        region_scores: ``(coarse (B,), refined (B,), spread (B,))`` of the refinement.
        occ: the occluder map at ``T`` (``Refiner._occluders``), or None.

    Returns:
        ``(T, region_scores, taken)``: the poses with every rejected object that a start
        rescued replaced, their scores and spreads likewise, and (B,) bool of those
        replaced.
    """
    cfg = refiner.cfg
    bad = ~trusted(cfg, region_scores)
    taken = torch.zeros_like(bad)
    if not bad.any() or cfg.restarts == 0:
        return T, region_scores, taken
    idx = bad.nonzero()[:, 0]
    m, n = len(idx), cfg.restarts + 1
    starts = start_poses(T0[idx], cfg.restarts, cfg.restart_deg).reshape(n * m, 4, 4)

    def rep(x, k):  # (k * m, ...): the rejected objects' entries, k times over
        return x[idx].repeat(k, *([1] * (x.dim() - 1)))

    cids = [class_ids[int(i)] for i in idx] * n
    # Every start runs the polish's long-line steps; only the ``restart_keep`` best of
    # each object by the render-free score go on to the fine steps, the rendered score
    # and the consensus check.
    sched = cfg.region_polish
    # When every start is kept there is nothing to select: one uninterrupted polish (the
    # line scale is taken from the pose at the start of each call).
    n_long = (len(sched) if cfg.restart_keep >= n else
              next((i for i, h in enumerate(sched) if h <= sched[-1]), len(sched)))
    ends, sparse_score = refiner._sparse(img, rep(K, n), starts, cids, rep(mesh_idx, n),
                                         rep(corners, n), sched[:max(n_long, 1)],
                                         cfg.region_polish_lm,
                                         None if occ is None else rep(occ, n), with_score=True)
    keep = min(cfg.restart_keep, n)
    top = sparse_score.reshape(n, m).topk(keep, dim=0).indices  # (keep, m) start index
    sel = (top * m + torch.arange(m, device=top.device)[None]).reshape(-1)  # into n * m
    ends, n = ends[sel], keep
    K_r, idx_r, corners_r, diam_r = rep(K, n), rep(mesh_idx, n), rep(corners, n), rep(diam, n)
    cids = [class_ids[int(i)] for i in idx] * n
    if len(sched) > n_long:
        ends = refiner._sparse(img, K_r, ends, cids, idx_r, corners_r, sched[n_long:],
                               cfg.region_polish_lm, None if occ is None else rep(occ, n))
    # The starts of one object must not occlude each other: without other objects in the
    # image (``occ`` None) the score and the consensus get an empty occluder map.
    occ_r = (rep(occ, n) if occ is not None else
             torch.zeros(n * m, 1, *img.shape[-2:], dtype=img.dtype, device=img.device))
    score = refiner._region_score_at(img, K_r, ends, meshes, idx_r, corners_r, diam_r, occ_r)
    r_init = rep(region_scores[0], n)
    passes = ((score > r_init + cfg.keep_coarse_margin) & (score >= cfg.keep_coarse_below)
              & near_coarse(ends, rep(T0, n), diam_r, cfg.restart_max_shift))
    spread = torch.full_like(score, float("inf"))
    if passes.any():  # the consensus check only where the score allows a pass
        p = passes.nonzero()[:, 0]
        spread[p] = consensus_spread(
            refiner, img, K_r[p], ends[p], [cids[int(i)] for i in p], idx_r[p], corners_r[p],
            meshes, diam_r[p], occ_r[p])
    ok = passes & (spread < cfg.restart_max_spread)
    # The best-scoring start that passes, per rejected object; among equal scores (a
    # share of contour points: ties are common) the one with the smallest spread.
    s = torch.where(ok, score - 1e-3 * spread.clamp_max(1.0), torch.full_like(score, -1.0))
    s = s.reshape(n, m)
    best = s.argmax(0)
    rescued = s.max(0).values >= 0
    r_final, spread_all = region_scores[1].clone(), region_scores[2].clone()
    T = T.clone()
    ends, score, spread = (x.reshape(n, m, *x.shape[1:]) for x in (ends, score, spread))
    for j in rescued.nonzero()[:, 0].tolist():
        b, k = int(idx[j]), int(best[j])
        T[b] = ends[k, j]
        r_final[b] = score[k, j]
        spread_all[b] = spread[k, j]
        taken[b] = True
    return T, (region_scores[0], r_final, spread_all), taken


def loop_restarts(refiner, img, K, T0, T, class_ids, mesh_idx, corners, meshes, diam,
                  region_scores, occ=None):
    """The whole refinement again, from ``cfg.restart_loops`` rotated starts, for the
    objects still rejected (``RefinerConfig.restart_loops``).

    The render-free restarts above solve with the silhouette alone; the network, which
    carries the main refinement from far starts, is not in them. Here every start runs
    the refiner's loop (network and region), the polish, the rendered score and the
    consensus check, as the main refinement does, with the occluder map of the
    refinement (the starts of one object must not hide each other), and the main gate
    decides, with a score floor of its own (``restart_loop_min_score``) and the bound
    near the detection (module docstring). Arguments and return value as
    :func:`restart_rejected`.
    """
    from .inputs import StageTimer

    cfg = refiner.cfg
    bad = ~trusted(cfg, region_scores)
    taken = torch.zeros_like(bad)
    n = min(cfg.restart_loops, cfg.restarts)
    if not bad.any() or n == 0:
        return T, region_scores, taken
    idx = bad.nonzero()[:, 0]
    m = len(idx)
    starts = start_poses(T0[idx], n, cfg.restart_deg)[1:].reshape(n * m, 4, 4)

    def rep(x):  # (n * m, ...): the rejected objects' entries, n times over
        return x[idx].repeat(n, *([1] * (x.dim() - 1)))

    K_r, idx_r, corners_r, diam_r = rep(K), rep(mesh_idx), rep(corners), rep(diam)
    cids = [class_ids[int(i)] for i in idx] * n
    occ_r = (rep(occ) if occ is not None else
             torch.zeros(n * m, 1, *img.shape[-2:], dtype=img.dtype, device=img.device))
    ends = refiner._loop(img, None, K_r, starts, meshes, idx_r, corners_r, diam_r,
                         StageTimer(refiner.device), final_score=cfg.loop_best_iterate,
                         occ_fixed=occ_r)[0]
    ends = refiner._sparse(img, K_r, ends, cids, idx_r, corners_r, cfg.region_polish,
                           cfg.region_polish_lm, occ_r)
    score = refiner._region_score_at(img, K_r, ends, meshes, idx_r, corners_r, diam_r, occ_r)
    r_init = region_scores[0][idx].repeat(n)
    # the wider bound for a result that another start's result confirms
    max_shift = torch.where(confirmed(ends.reshape(n, m, 4, 4), diam[idx]).reshape(-1),
                            cfg.restart_agreed_max_shift, cfg.restart_max_shift)
    near = near_coarse(ends, rep(T0), diam_r, max_shift)
    passes = ((score > r_init + cfg.keep_coarse_margin)
              & (score >= cfg.restart_loop_min_score) & near)
    spread = torch.full_like(score, float("inf"))
    if passes.any():
        p = passes.nonzero()[:, 0]
        spread[p] = consensus_spread(
            refiner, img, K_r[p], ends[p], [cids[int(i)] for i in p], idx_r[p], corners_r[p],
            meshes, diam_r[p], occ_r[p])
    ok = passes & (spread < cfg.consensus_max_spread)
    s = torch.where(ok, score, torch.full_like(score, -1.0)).reshape(n, m)
    best = s.argmax(0)
    r_final, spread_all = region_scores[1].clone(), region_scores[2].clone()
    T = T.clone()
    ends, score, spread = (x.reshape(n, m, *x.shape[1:]) for x in (ends, score, spread))
    for j in (s.max(0).values >= 0).nonzero()[:, 0].tolist():
        b, k = int(idx[j]), int(best[j])
        T[b], r_final[b], spread_all[b], taken[b] = ends[k, j], score[k, j], spread[k, j], True
    return T, (region_scores[0], r_final, spread_all), taken
