"""Training crops from the user's own frames at pseudo-poses.

The same batch as ``data.training_batch.make_training_batch`` (so ``train.Trainer`` trains on
it unchanged), with the synthetic parts replaced by the recording's:

- the image crop is the real frame, resampled around an initial pose drawn by the
  training's own perturbation of the pseudo-pose (``data.synthetic``'s ``_init_poses``
  and crop jitter: the network sees the same kind of starts as in training);
- the "ground truth" is the pseudo-pose (``adapt.pseudo_labels``);
- the target's clean silhouette and depth are rendered at the pseudo-pose in the crop;
  where another object of the frame (at the pose the refiner gave it) is in front, the
  target is not visible (``visib_mask``), as the training's occluders are.

Tensors as ``make_training_batch`` documents them (crop pixels, metres, ``T_cam_obj``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data import synthetic as syn
from ..data.training_batch import _jitter_crops, batch_dict
from ..geometry.crop import Crop, compute_crops, crop_images
from .pseudo_labels import AdaptFrame, PseudoLabels

__all__ = ["real_training_batch"]


def real_training_batch(frames: Sequence[AdaptFrame], pseudo: PseudoLabels,
                        class_index: dict, models: Sequence, meshes: Sequence, renderer,
                        rng: np.random.Generator, batch_size: int, crop_size: int,
                        syn_cfg=None) -> dict:
    """A batch of ``batch_size`` crops of accepted pseudo-poses, drawn with replacement.

    Args:
        frames: the recording; pseudo: its pseudo-poses (at least one accepted).
        class_index: ``class_id -> index`` into ``models`` / ``meshes`` (the trainer's
            order: ``mesh_idx`` of the batch).
        models: ``ObjectModel`` s (bounding boxes); meshes: their ``RenderMesh`` es.
        renderer: renders silhouettes and depth.
        rng: draws the samples, initial poses and crop jitter.
        syn_cfg: ``data.synthetic.SyntheticConfig`` (perturbation and crop settings).
    """
    if not pseudo.labels:
        raise ValueError("pseudo: no accepted pseudo-pose to train on")
    cfg = syn_cfg or syn.SyntheticConfig()
    B, S = int(batch_size), int(crop_size)
    picks = [pseudo.labels[int(j)] for j in rng.integers(0, len(pseudo.labels), B)]
    T_gt = np.stack([p.T_cam_obj for p in picks])
    T_init = syn._init_poses(rng, cfg, T_gt)
    K = torch.as_tensor(np.stack([frames[p.frame].K for p in picks]), dtype=torch.float32)
    mesh_idx = np.array([class_index[p.class_id] for p in picks])
    corners = torch.as_tensor(np.stack([np.asarray(models[i].bbox_corners_m)
                                        for i in mesh_idx]), dtype=torch.float32)
    crop = compute_crops(K, torch.as_tensor(T_init, dtype=torch.float32), corners, S,
                         margin=cfg.crop_margin)
    K_crop, box = _jitter_crops(rng, K, crop.K_crop.float(), crop.box_xyxy.float(), S, cfg)
    image = torch.cat([
        crop_images(_as_float(frames[p.frame].image_rgb),
                    Crop(box_xyxy=box[b:b + 1], K_crop=K_crop[b:b + 1], size=S))
        for b, p in enumerate(picks)])

    # The target at its pseudo-pose, and every other object of its frame, in the crop.
    owner, idx, Ks, Ts = [], [], [], []
    for b, p in enumerate(picks):
        owner.append(b)
        idx.append(mesh_idx[b])
        Ks.append(K_crop[b])
        Ts.append(p.T_cam_obj)
        others = [(c, T) for c, T in pseudo.frame_poses[p.frame]
                  if not (c == p.class_id and np.allclose(T, p.T_cam_obj))]
        for c, T in others:
            if c in class_index:
                owner.append(-1 - b)
                idx.append(class_index[c])
                Ks.append(K_crop[b])
                Ts.append(T)
    frags = renderer.render(list(meshes), torch.as_tensor(np.array(idx), dtype=torch.int64),
                            torch.stack(Ks), torch.as_tensor(np.stack(Ts), dtype=torch.float32),
                            S, S)
    inf = torch.tensor(float("inf"))
    z = torch.where(frags.mask, frags.depth_m, inf).cpu()
    own = np.array(owner)
    tgt = np.nonzero(own >= 0)[0]
    mask_gt = frags.mask[tgt].cpu()
    depth_gt = torch.where(mask_gt, frags.depth_m[tgt].cpu(), torch.zeros(()))
    front = torch.full((B, S, S), inf)
    for j in np.nonzero(own < 0)[0]:
        b = -1 - own[j]
        front[b] = torch.minimum(front[b], z[j])
    visib = mask_gt & (z[tgt] <= front)
    visib_fract = visib.flatten(1).sum(1).float() / mask_gt.flatten(1).sum(1).float().clamp_min(1)
    return batch_dict(image, torch.zeros(B, 1, S, S), K_crop, box, K, T_gt, T_init, mesh_idx,
                      visib, mask_gt, depth_gt, visib_fract)


def _as_float(image_rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1)[None].float() / 255
