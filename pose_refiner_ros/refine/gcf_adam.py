"""The GCF paper's own procedure, kept as the reference to compare against.

Grabner et al. (ECCV 2020) use the predicted correspondence field as the backward pass
of rendering: each rendered surface pixel is pushed along its field vector, these
per-pixel gradients are propagated to the pose, and Adam updates the pose; the paper's
best accuracy takes 1000 updates at learning rate 0.05, each with a rendering and a
network pass.

Here the per-pixel gradient is exactly that of ``0.5 * sum_i w_i |pi(T p_i) - uv_i|^2 /
sum_i w_i`` with the targets ``uv_i`` (rendered pixel + field) held fixed, so
``d/d(uv_i) = -w_i * field_i / sum(w)``. The crop is fixed at the initial pose, as in the
paper, so the image features are computed once. The pose is parametrised as a left
twist about the initial pose, ``T = exp(xi) T_init``, with the translation part in object
diameters (our choice: the paper does not state its parametrisation; this makes one
learning rate mean the same for a 5 cm and a 50 cm object).
"""

from __future__ import annotations

import torch

from ..geometry.camera import project
from ..geometry.crop import compute_crops, crop_images
from ..geometry.lie import se3_exp, transform_points
from .field import correspondences


def refine_gcf_adam(refiner, img, K, T_init, meshes, mesh_idx, corners, diam, timer):
    """Run ``refiner.cfg.adam_steps`` Adam updates at ``refiner.cfg.adam_lr``.

    Arguments are those of the refiner's loop: img (1, 3, H, W), K (B, 3, 3),
    T_init (B, 4, 4), meshes / mesh_idx (B,), corners (B, 8, 3), diam (B,).
    Returns (T (B, 4, 4), iterates (B, n + 1, 4, 4), score (B,), updates run).
    """
    cfg, S = refiner.cfg, refiner.cfg.crop_size
    B = T_init.shape[0]
    net = refiner.net
    with timer.section("crop"):
        crop = compute_crops(K, T_init, corners, S, cfg.crop_margin)
        img_crop = crop_images(img.expand(B, -1, -1, -1), crop)
    with timer.section("network"), torch.no_grad():
        feats = net.encode_image(img_crop)
    xi = torch.zeros(B, 6, device=T_init.device, requires_grad=True)
    opt = torch.optim.Adam([xi], lr=cfg.adam_lr)
    scale = torch.cat([diam[:, None].expand(B, 3), torch.ones(B, 3, device=diam.device)], dim=1)
    iterates = [T_init.clone()]
    record_every = max(1, cfg.adam_steps // 20)
    score = torch.zeros(B, device=T_init.device)
    for step in range(cfg.adam_steps):
        T = se3_exp(xi * scale) @ T_init
        with timer.section("render"), torch.no_grad():
            frags, ren = refiner.render_crops(meshes, mesh_idx, crop.K_crop, T.detach(), S, diam)
        with timer.section("network"), torch.no_grad():
            out = net(img_crop, ren, image_features=feats, gru_iters=cfg.gru_iters)
            flow, weight = out.flows_px[-1], torch.sigmoid(out.weight_logits[-1])
        with timer.section("solve"):
            corr = correspondences(frags.xyz_obj, frags.mask, flow, weight)
            uv = project(transform_points(T, corr.pts_obj), crop.K_crop)
            w = corr.weight
            loss = (0.5 * w * ((uv - corr.uv_tgt) ** 2).sum(-1)).sum(-1) / w.sum(-1).clamp_min(1e-6)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            agree = ((corr.uv_tgt - corr.uv_src).norm(dim=-1) < 2.0).float()
            score = (w * agree).sum(-1) / corr.valid.sum(-1).clamp_min(1)
        if (step + 1) % record_every == 0:
            iterates.append((se3_exp(xi * scale) @ T_init).detach())
    T = (se3_exp(xi * scale) @ T_init).detach()
    if len(iterates) == 1 or not torch.equal(iterates[-1], T):
        iterates.append(T)
    return T, torch.stack(iterates, 1), score.detach(), cfg.adam_steps
