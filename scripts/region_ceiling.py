#!/usr/bin/env python3
"""What the silhouette alone can reach on a BOP dataset: the region polish started near
the ground truth.

For every instance (visibility >= ``--min-visib``) of every ``--stride``-th image:

- the ground-truth pose is perturbed by ``--rot-deg`` (each rotation-vector component
  drawn from N(0, rot_deg^2), camera frame) and ``--depth-rel`` (distance scaled by
  1 + N(0, depth_rel^2)); 0 / 0 starts at the truth;
- the refiner's render-free region polish (``RefinerConfig.region_polish``, the same
  steps the refiner runs after its loop) refines it, with the image's other instances
  occluding at their true poses;
- printed: the share within ADD(-S)@0.1d at the start and after the polish, the share
  whose distance error is below 0.1 diameter, the median rotation error and the median
  signed relative distance error, per class and in all.

With ``--lines``, also the line measurements *at* the truth (the polish's last line
length): how far each line's edge estimate lies from the model's edge (crop pixels),
and per class the depth tolerance of ADD(-S)@0.1d as a mean radial shift of the outline
in image pixels (contour radius x 0.1 diameter / distance): the precision the outline
must reach for the distance alone to pass.

    .venv/bin/python scripts/region_ceiling.py --dataset PATH/lmo-dev --stride 6 \
        --rot-deg 3 --depth-rel 0.01

Needs the project environment (``make setup``) and a BOP-layout dataset; no GPU. Uses
the refiner's internal steps (``Refiner._sparse``, ``_occluders``, ``_px_scales``): a
development tool, not an interface.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
import sys

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pose_refiner_ros.data.bop import BopDataset, registry_from_bop_models  # noqa: E402
from pose_refiner_ros.evaluation.node_config import build_refiner, load_node_params  # noqa: E402
from pose_refiner_ros.refine.inputs import as_image_tensor  # noqa: E402
from pose_refiner_ros.track.measure import measure_lines, project_contour  # noqa: E402


def add_or_adds(T, G, pts, symmetric):
    """ADD (ADD-S when ``symmetric``) of pose ``T`` against ``G``, metres."""
    a = pts @ T[:3, :3].T + T[:3, 3]
    b = pts @ G[:3, :3].T + G[:3, 3]
    if symmetric:
        return float(cKDTree(b).query(a)[0].mean())
    return float(np.linalg.norm(a - b, axis=1).mean())


def rot_err_deg(A, B):
    c = (np.trace(A[:3, :3].T @ B[:3, :3]) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="BOP dataset folder")
    ap.add_argument("--split", default="test")
    ap.add_argument("--stride", type=int, default=6, help="every n-th image")
    ap.add_argument("--min-visib", type=float, default=0.5)
    ap.add_argument("--rot-deg", type=float, default=3.0)
    ap.add_argument("--depth-rel", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lines", action="store_true", help="also the lines at the truth")
    args = ap.parse_args()

    torch.set_num_threads(1)
    root = Path(args.dataset)
    ds = BopDataset(root, args.split, load_depth=False, min_visib_fract=args.min_visib)
    reg = registry_from_bop_models(root / "models")
    params = load_node_params(None, model_path=None, mode=None, device=None,
                              iterations=None, crop_size=None, use_depth=False)
    ref, _ = build_refiner(params, reg)
    cfg = ref.cfg
    rng = np.random.default_rng(args.seed)
    pts = {}
    rows = defaultdict(list)
    offsets, tolerance = [], defaultdict(list)
    for i in range(0, len(ds), args.stride):
        fr = ds[i]
        cids = [f"obj_{int(o):06d}" for o, _ in fr.objects]
        if not cids:
            continue
        Tg = np.stack([np.asarray(T, np.float64) for _, T in fr.objects])
        T0 = Tg.copy()
        for b in range(len(cids)):
            w = rng.normal(0.0, np.radians(args.rot_deg), 3)
            T0[b, :3, :3] = Rotation.from_rotvec(w).as_matrix() @ Tg[b, :3, :3]
            T0[b, :3, 3] *= 1.0 + rng.normal(0.0, args.depth_rel)
        img = as_image_tensor(fr.image_rgb, ref.device)
        meshes, mesh_idx, corners, _ = ref._object_tensors(cids)
        K = torch.as_tensor(fr.K, dtype=torch.float32)[None].expand(len(cids), 3, 3)
        Tg_t = torch.as_tensor(Tg, dtype=torch.float32)
        occ = ref._occluders(img, K, Tg_t, meshes, mesh_idx)
        T = ref._sparse(img, K, torch.as_tensor(T0, dtype=torch.float32), cids, mesh_idx,
                        corners, cfg.region_polish, cfg.region_polish_lm, occ)
        T = T.double().numpy()
        if args.lines:
            rgb = np.ascontiguousarray(img[0].permute(1, 2, 0).numpy(), np.float32)
            px = ref._px_scales(K, Tg_t, corners)  # as the polish measures
        for b, c in enumerate(cids):
            m = reg[c]
            if c not in pts:
                p = np.asarray(m.points_m)
                pts[c] = p[:: max(1, len(p) // 500)]
            d = m.diameter_m
            rows[c].append((
                add_or_adds(T0[b], Tg[b], pts[c], m.symmetric) < 0.1 * d,
                add_or_adds(T[b], Tg[b], pts[c], m.symmetric) < 0.1 * d,
                abs(T[b, 2, 3] - Tg[b, 2, 3]) < 0.1 * d,
                rot_err_deg(T[b], Tg[b]),
                T[b, 2, 3] / Tg[b, 2, 3] - 1.0,
            ))
            if args.lines:
                va = ref.view_arrays(c)
                K_s = np.array(fr.K, np.float64)
                K_s[:2] /= px[b]
                con = project_contour(va, Tg[b], K_s)
                lines = measure_lines(rgb, con, px[b], cfg.region, cfg.region_polish[-1],
                                      occluder_inv_depth=np.ascontiguousarray(
                                          occ[b, 0].numpy()))
                offsets.append(lines.mean_px[lines.seen])
                con_img = project_contour(va, Tg[b], np.array(fr.K, np.float64))
                r = np.linalg.norm(con_img.uv - con_img.uv.mean(0), axis=1).mean()
                tolerance[c].append(r * 0.1 * d / Tg[b, 2, 3])

    def line(name, r):
        a = np.array(r, np.float64)
        return (f"{name:12s} n {len(a):4d}  ADD(-S)@0.1d start {a[:, 0].mean():6.1%} -> "
                f"polished {a[:, 1].mean():6.1%}  |dz| < 0.1d {a[:, 2].mean():6.1%}  "
                f"median e_R {np.median(a[:, 3]):5.2f} deg  median dz/z "
                f"{np.median(a[:, 4]):+.2%}")

    for c in sorted(rows):
        print(line(c, rows[c]))
    print(line("all", [x for r in rows.values() for x in r]))
    if args.lines:
        o = np.concatenate(offsets)
        print(f"lines at the truth: {len(o)}; |edge estimate - model edge| median "
              f"{np.median(np.abs(o)):.2f} crop px, within 0.5 px {np.mean(np.abs(o) < 0.5):.0%},"
              f" within 1 px {np.mean(np.abs(o) < 1):.0%}, beyond 3 px "
              f"{np.mean(np.abs(o) > 3):.0%}")
        for c in sorted(tolerance):
            print(f"{c:12s} depth tolerance of ADD(-S)@0.1d as a mean radial outline shift: "
                  f"{np.median(tolerance[c]):.2f} image px (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
