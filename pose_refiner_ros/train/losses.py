"""Training targets and losses for the correspondence field, its weights and the pose.

Ground truth for the field comes from geometry, not labels: a surface point rendered at
the current pose lies, in the image, where the ground-truth pose projects it; it is a
valid target only where that point is visible in the image (not self-occluded, not
hidden by an occluder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry.camera import project
from ..geometry.lie import rotation_angle_deg, transform_points
from ..refine.field import sample_map


@dataclass(frozen=True)
class LossWeights:
    """Relative weights of the loss terms (see :func:`field_losses`)."""

    flow: float = 0.1
    match: float = 1.0
    weight: float = 0.5
    pose: float = 5.0
    gamma: float = 0.8
    max_flow_px: float = 64.0
    inlier_px: float = 3.0


def closest_symmetric_gt(T_gt: torch.Tensor, T_ref: torch.Tensor, syms: list) -> torch.Tensor:
    """The symmetry-equivalent ground truth closest in rotation to ``T_ref``.

    Args:
        T_gt, T_ref: (B, 4, 4) poses.
        syms: per sample, an (S_i, 4, 4) tensor of object-frame symmetries (incl. identity).

    Returns:
        (B, 4, 4) ``T_gt @ S*`` with ``S*`` minimising the angle to ``T_ref``'s rotation.
    """
    out = []
    for b, S in enumerate(syms):
        cand = T_gt[b][None] @ S
        ang = rotation_angle_deg(cand[:, :3, :3], T_ref[b][None, :3, :3].expand_as(cand[:, :3, :3]))
        out.append(cand[ang.argmin()])
    return torch.stack(out)


def gt_field(pts_obj, uv_src, valid, T_gt, K, depth_gt_m, visib_mask, diameter_m):
    """Ground-truth field at the grid and where it is valid.

    Args:
        pts_obj: (B, N, 3) rendered surface points at the current pose (object frame).
        uv_src: (B, N, 2) crop pixels where they are rendered.
        valid: (B, N) bool, rendered surface present.
        T_gt: (B, 4, 4) ground truth (symmetry-resolved).
        K: (B, 3, 3) crop intrinsics.
        depth_gt_m: (B, 1, S, S) depth of the object alone rendered at ``T_gt`` (0 = none).
        visib_mask: (B, 1, S, S) 1 where the object is visible in the image (occluders removed).
        diameter_m: (B,) object diameters.

    Returns:
        flow_gt (B, N, 2) crop pixels, and visible (B, N) bool.
    """
    S = depth_gt_m.shape[-1]
    pts_cam = transform_points(T_gt, pts_obj)
    uv_gt = project(pts_cam, K)
    d_at = sample_map(depth_gt_m, uv_gt, S, mode="nearest")[..., 0]
    vis_at = sample_map(visib_mask, uv_gt, S, mode="nearest")[..., 0]
    inside = (uv_gt >= 0).all(-1) & (uv_gt <= S - 1).all(-1)
    tol = 0.03 * diameter_m[:, None] + 2e-3
    unoccluded = (d_at > 0) & ((pts_cam[..., 2] - d_at).abs() < tol) & (vis_at > 0.5)
    return uv_gt - uv_src, valid & inside & unoccluded


def field_losses(out, corr, flow_gt, visible, lw: LossWeights):
    """Sequence L1 loss on the field and BCE on the weights.

    Args:
        out: ``net.model.FieldOutput`` of one pass.
        corr: ``refine.field.Correspondences`` at the grid (gives ``uv_src``, ``valid``).
        flow_gt: (B, N, 2) target field, crop pixels; visible: (B, N) where it is valid.

    Returns:
        dict of scalar losses ``flow``, ``weight`` and the final field error ``epe``.
    """
    S = None
    n = len(out.flows_px)
    ok = visible & (flow_gt.norm(dim=-1) < lw.max_flow_px)
    denom = ok.sum().clamp_min(1)
    loss_flow = flow_gt.new_zeros(())
    for k, f in enumerate(out.flows_px):
        S = f.shape[-1] * 8
        pred = sample_map(f, corr.uv_src, S)
        l1 = (pred - flow_gt).abs().sum(-1)
        loss_flow = loss_flow + lw.gamma ** (n - 1 - k) * (l1 * ok).sum() / denom
    pred = sample_map(out.flows_px[-1], corr.uv_src, S)
    err = (pred - flow_gt).norm(dim=-1)
    logit = sample_map(out.weight_logits[-1], corr.uv_src, S)[..., 0]
    target = (visible & (err.detach() < lw.inlier_px)).float()
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    loss_w = (bce * corr.valid).sum() / corr.valid.sum().clamp_min(1)
    epe = (err * ok).sum() / denom
    return {"flow": loss_flow, "weight": loss_w, "epe": epe.detach()}


def pose_loss(T_pred, T_gt, pts_obj, diameter_m):
    """Mean point distance under the two poses over ``pts_obj`` (B, M, 3), in diameters."""
    d = (transform_points(T_pred, pts_obj) - transform_points(T_gt, pts_obj)).norm(dim=-1)
    return (d.mean(-1) / diameter_m).clamp(max=1.0).mean()


def matching_loss(
    corr, xyz_obj, mask, T_gt, K, depth_gt_m, visib_mask, diameter_m, stride: int = 8
):
    """Cross-entropy of each rendered cell's correlation row against its true image cell.

    A direct signal for the matching features (RNNPose's descriptor loss and Zhang et al.'s
    softmax matching play this role): without it the correlation volume only learns
    through the GRU, which on CPU budgets is too slow a start.

    Args:
        corr: (B, h*w, h*w) correlation logits, rendering cell x image cell.
        xyz_obj: (B, S, S, 3) rendered location field; mask: (B, S, S) bool.
        T_gt, K, depth_gt_m, visib_mask, diameter_m: as in :func:`gt_field`.
    """
    from ..refine.field import grid_pixels

    B, S = mask.shape[:2]
    h = S // stride
    uv = grid_pixels(S, mask.device, xyz_obj.dtype, stride)  # cell-centre pixels
    ui, vi = uv[:, 0].long(), uv[:, 1].long()
    pts, valid = xyz_obj[:, vi, ui], mask[:, vi, ui]
    flow_gt, ok = gt_field(
        pts, uv[None].expand(B, -1, -1), valid, T_gt, K, depth_gt_m, visib_mask, diameter_m
    )
    uv_gt = uv[None] + flow_gt
    cell = ((uv_gt + 0.5) / stride).floor().long().clamp(0, h - 1)
    target = cell[..., 1] * h + cell[..., 0]
    ce = F.cross_entropy(corr.reshape(-1, h * h), target.reshape(-1), reduction="none").reshape(
        B, -1
    )
    return (ce * ok).sum() / ok.sum().clamp_min(1)
