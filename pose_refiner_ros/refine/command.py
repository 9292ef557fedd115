"""``pose-refiner refine``: refine the poses of objects in one image file.

    pose-refiner refine --image rgb.png --intrinsics camera.json --objects objects.yaml \\
        --poses initial.json --out refined.json --overlay overlay.png

``camera.json``: ``{"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "D": [...],
"distortion_model": "plumb_bob"}`` (``D`` optional; a distorted image is rectified first).
``initial.json``: a list of ``{"class_id": ..., "T_cam_obj": 4x4}`` or ``{"class_id": ...,
"position": [x, y, z], "orientation_xyzw": [x, y, z, w]}`` (metres, camera optical frame).
The output lists, per object, the refined pose in both forms, ``score``, ``diverged``,
``reason``, ``mode`` and ``timing_ms``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _pose_from_json(entry: dict, i: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    if "T_cam_obj" in entry:
        T = np.asarray(entry["T_cam_obj"], dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"poses[{i}].T_cam_obj: expected a 4x4 matrix, got shape {T.shape}")
        return T
    if "position" in entry and "orientation_xyzw" in entry:
        q = np.asarray(entry["orientation_xyzw"], dtype=np.float64)
        if q.shape != (4,) or not np.isfinite(q).all() or np.linalg.norm(q) < 1e-9:
            raise ValueError(
                f"poses[{i}].orientation_xyzw: expected a non-zero quaternion (x, y, z, w)"
            )
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat(q).as_matrix()  # scipy's order is (x, y, z, w) too
        T[:3, 3] = entry["position"]
        return T
    raise ValueError(f"poses[{i}]: expected 'T_cam_obj' or 'position' + 'orientation_xyzw'")


def _result_to_json(r) -> dict:
    from scipy.spatial.transform import Rotation

    return {
        "class_id": r.class_id,
        "T_cam_obj": r.T_cam_obj.tolist(),
        "position": r.T_cam_obj[:3, 3].tolist(),
        "orientation_xyzw": Rotation.from_matrix(r.T_cam_obj[:3, :3]).as_quat().tolist(),
        "score": r.score,
        "diverged": r.diverged,
        "reason": r.reason,
        "mode": r.mode,
        "iterations": r.iterations,
        "timing_ms": r.timing_ms,
    }


def run(args) -> int:
    import cv2

    from ..geometry.camera import CameraModel
    from ..mesh.registry import ObjectRegistry
    from ..render.overlay import COARSE_RGB, REFINED_RGB, draw_contours
    from .refiner import Refiner, RefinerConfig

    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"--image {args.image}: not found or not an image OpenCV can read")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    cam_json = json.loads(Path(args.intrinsics).read_text())
    cam = CameraModel.from_camera_info(
        width=rgb.shape[1],
        height=rgb.shape[0],
        K=cam_json["K"],
        D=cam_json.get("D", []),
        distortion_model=cam_json.get("distortion_model", "plumb_bob"),
    ).validate()
    if cam.is_distorted:
        rgb = cam.rectify(rgb)
    depth = None
    if args.depth:
        d = cv2.imread(args.depth, cv2.IMREAD_UNCHANGED)
        if d is None:
            raise SystemExit(f"--depth {args.depth}: not found or unreadable")
        depth = d.astype(np.float32) * args.depth_scale
    entries = json.loads(Path(args.poses).read_text())
    objects = [(e["class_id"], _pose_from_json(e, i)) for i, e in enumerate(entries)]
    registry = ObjectRegistry.from_yaml(args.objects)
    cfg = RefinerConfig(
        mode=args.mode,
        device=args.device,
        **({"iterations": args.iterations} if args.iterations else {}),
    )
    if args.mode in ("flow", "region"):
        refiner = Refiner(registry, cfg)
    else:
        refiner = Refiner.from_checkpoint(args.model, registry, cfg)
    results = refiner.refine(rgb, cam.K, objects, depth_m=depth)
    out = [_result_to_json(r) for r in results]
    Path(args.out).write_text(json.dumps(out, indent=2))
    for r in results:
        flag = f"  DIVERGED ({r.reason})" if r.diverged else ""
        print(f"{r.class_id}: score {r.score:.2f}, {r.timing_ms['total']:.0f} ms{flag}")
    if args.overlay:
        ids = [c for c, _ in objects]
        uniq = list(dict.fromkeys(ids))
        meshes = [refiner.render_mesh(c) for c in uniq]
        idx = [uniq.index(c) for c in ids]
        img = draw_contours(
            rgb, refiner.renderer, meshes, idx, cam.K, [T for _, T in objects], COARSE_RGB
        )
        img = draw_contours(
            img, refiner.renderer, meshes, idx, cam.K, [r.T_cam_obj for r in results], REFINED_RGB
        )
        cv2.imwrite(args.overlay, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}" + (f" and {args.overlay}" if args.overlay else ""))
    return 0


def add_subcommand(subparsers, name: str, help_text: str) -> None:
    from ..resources import default_model_path

    p = subparsers.add_parser(
        name,
        help=help_text,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", required=True, help="RGB image file (PNG, JPEG)")
    p.add_argument("--intrinsics", required=True, help="camera JSON with K (and optional D)")
    p.add_argument("--objects", required=True, help="objects YAML (the mesh registry)")
    p.add_argument("--poses", required=True, help="initial poses JSON")
    p.add_argument("--out", required=True, help="refined poses JSON to write")
    p.add_argument("--overlay", help="PNG with coarse (orange) and refined (green) contours")
    p.add_argument("--depth", help="optional registered depth image (16-bit PNG)")
    p.add_argument(
        "--depth-scale", type=float, default=0.001,
        help="metres per depth unit (0.001: millimetres)"
    )
    p.add_argument("--model", default=str(default_model_path()), help="network checkpoint")
    p.add_argument("--mode", default="learned", choices=["learned", "region", "flow", "gcf-adam"],
                   help="refiner mode (README, How it works)")
    p.add_argument("--iterations", type=int, help="outer iterations (default: the refiner's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(handler=run)
