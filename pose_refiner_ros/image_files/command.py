"""``pose-refiner refine``: refine the poses of objects in one image file.

    pose-refiner refine --image rgb.jpg --intrinsics camera.json --objects objects.yaml \\
        --poses initial.json --out refined.json --overlay overlay.png

``examples/refine/`` holds such a set of files. ``camera.json`` and ``initial.json`` are
described in :mod:`pose_refiner_ros.image_files.inputs` (and the README). The output
lists, per object, the refined pose in both forms (``T_cam_obj``; ``position`` +
``orientation_xyzw``), ``score``, ``diverged``, ``reason``, ``kept_coarse``, ``mode``,
``iterations``, ``timing_ms`` and ``covariance`` (6x6 nested lists in ROS's order, see
``RefineResult.covariance``; null where there is no estimate). All objects of the image
are refined together, in one batch: the time printed is the batch's, and an object's
``timing_ms`` is the batch's time divided evenly among its objects (there is no time of
one object alone).
"""

from __future__ import annotations

import json
from pathlib import Path
import sys
import time

from .inputs import InputError, read_camera, read_depth, read_image, read_poses

MODES = ("learned", "region", "flow", "gcf-adam")


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
        "kept_coarse": r.kept_coarse,
        "mode": r.mode,
        "iterations": r.iterations,
        "timing_ms": r.timing_ms,
        "covariance": None if r.covariance is None else r.covariance.tolist(),
    }


def overlay_object(r):
    """How a result is drawn: coarse and refined contours, the score; one that is not
    trusted shows the pose it was refused at (``iterates[-1]`` when the coarse is kept)."""
    from ..render.overlay import OverlayObject

    T = r.iterates[-1] if r.kept_coarse and len(r.iterates) else r.T_cam_obj
    return OverlayObject(r.class_id, T_coarse=r.T_cam_obj_init, T_refined=T, score=r.score,
                         trusted=not r.diverged, note="(coarse kept)" if r.kept_coarse else "")


def result_lines(results, batch_ms: float) -> list[str]:
    """What ``refine`` prints: one line per object (score, and why it is not trusted),
    then the batch's time, once."""
    lines = []
    for i, r in enumerate(results):
        flag = f"  NOT TRUSTED: {r.reason or 'diverged'}" if r.diverged else ""
        kept = (" (the coarse pose is kept)"
                if r.kept_coarse and "coarse pose" not in r.reason else "")
        lines.append(f"[{i}] {r.class_id}: score {r.score:.2f}{flag}{kept}")
    n = len(results)
    lines.append(f"{n} object{'s' if n != 1 else ''} refined together in {batch_ms:.0f} ms")
    return lines


def run(args) -> int:
    import cv2

    from ..mesh.registry import ObjectRegistry, RegistryError
    from ..refine.refiner import Refiner, RefinerConfig

    try:
        rgb = read_image(args.image)
        cam = read_camera(args.intrinsics, rgb.shape[1], rgb.shape[0])
        registry = ObjectRegistry.from_yaml(args.objects)
        objects = read_poses(args.poses, set(registry.class_ids))
        depth = (read_depth(args.depth, args.depth_scale, rgb.shape[:2]) if args.depth
                 else None)
    except (InputError, RegistryError) as e:
        print(f"refine: error: {e}", file=sys.stderr)
        return 2
    if cam.is_distorted:
        rgb = cam.rectify(rgb)
        if depth is not None:
            depth = cam.rectify(depth, interpolation="nearest")
    cfg = RefinerConfig(mode=args.mode, device=args.device,
                        **({"iterations": args.iterations} if args.iterations else {}))
    if args.mode in ("flow", "region"):
        refiner = Refiner(registry, cfg)
    else:
        from ..resources import default_model_path

        model = args.model or str(default_model_path())
        if not Path(model).is_file():
            print(f"refine: error: --model {model}: no such file (mode {args.mode} needs a "
                  "trained model; --mode region needs none)", file=sys.stderr)
            return 2
        refiner = Refiner.from_checkpoint(model, registry, cfg)
    t0 = time.perf_counter()
    results = refiner.refine(rgb, cam.K, objects, depth_m=depth)
    batch_ms = 1e3 * (time.perf_counter() - t0)
    Path(args.out).write_text(json.dumps([_result_to_json(r) for r in results], indent=2))
    print("\n".join(result_lines(results, batch_ms)))
    if args.overlay:
        from ..render.overlay import draw_overlay

        img = draw_overlay(rgb, refiner.renderer, refiner.render_mesh, cam.K,
                           [overlay_object(r) for r in results])
        cv2.imwrite(args.overlay, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}" + (f" and {args.overlay}" if args.overlay else ""))
    return 0


def add_subcommand(subparsers, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=__doc__)
    p.add_argument("--image", required=True, help="RGB image file (PNG, JPEG)")
    p.add_argument("--intrinsics", required=True, help="camera JSON with K (and optional D)")
    p.add_argument("--objects", required=True, help="objects YAML (the mesh registry)")
    p.add_argument("--poses", required=True, help="initial poses JSON")
    p.add_argument("--out", required=True, help="refined poses JSON to write")
    p.add_argument("--overlay", help="PNG of the image with the coarse (orange) and refined "
                   "(green; dashed magenta when not trusted) contours, a label and score per "
                   "object and a legend")
    p.add_argument("--depth", help="optional registered depth image (16-bit PNG)")
    p.add_argument("--depth-scale", type=float, default=0.001,
                   help="metres per depth unit (0.001: millimetres)")
    p.add_argument("--model", help="network checkpoint of modes learned and gcf-adam "
                   "(default: the shipped models/refiner.pt)")
    p.add_argument("--mode", default="learned", choices=MODES,
                   help="learned: the network (with the region modality in RGB); region and "
                   "flow: training-free; gcf-adam: the GCF paper's slow procedure (README, "
                   "How it works)")
    p.add_argument("--iterations", type=int, help="outer iterations (default: the refiner's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(handler=run)
