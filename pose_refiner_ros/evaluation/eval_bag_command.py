"""``pose-refiner eval-bag``'s command line: the options, and the exit status and the one
line that each failure prints (the work itself is :func:`.eval_bag.eval_bag`)."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from . import bag_io as B
from .all_or_nothing import InterruptedWhenComplete, sigterm_as_interrupt
from .eval_bag import eval_bag
from .node_config import add_node_options
from .report_text import format_summary

__all__ = ["add_subcommand"]


def add_subcommand(subparsers, name: str, help: str) -> None:
    """``pose-refiner eval-bag`` (see the module docstring)."""
    p = subparsers.add_parser(name, help=help, description=help)
    p.add_argument("bag", help="input ROS 2 bag: a directory, or a .mcap / .db3 file")
    p.add_argument("--objects", required=True,
                   help="objects YAML (class ids -> meshes), or bop:MODELS_DIR")
    p.add_argument("--out", required=True, help="output directory (created)")
    add_node_options(p, "refine with depth")
    p.add_argument("--image-topic", help="Image or CompressedImage topic (default: found by "
                   "type and name; a raw image before its /compressed twin)")
    p.add_argument("--camera-info-topic", help="CameraInfo topic (default: found by type, "
                   "beside the image topic)")
    p.add_argument("--detections-topic", help="Detection3DArray topic of the coarse poses "
                   "(default: found by type and name)")
    p.add_argument("--depth-topic", help="depth image topic (implies --use-depth)")
    p.add_argument("--gt-topic", help="ground truth: a Detection3DArray or PoseStamped topic "
                   "(default: a topic whose name contains 'ground_truth', if any)")
    p.add_argument("--gt-file", help="ground truth from a JSON sidecar file instead")
    p.add_argument("--max-frames", type=int, help="stop after this many refined frames")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    sigterm_as_interrupt()
    try:
        summary = eval_bag(
            args.bag, args.objects, args.out, model=args.model, mode=args.mode,
            device=args.device, params_file=args.params, iterations=args.iterations,
            crop_size=args.crop_size, use_depth=args.use_depth, image_topic=args.image_topic,
            camera_info_topic=args.camera_info_topic, detections_topic=args.detections_topic,
            depth_topic=args.depth_topic, gt_topic=args.gt_topic, gt_file=args.gt_file,
            max_frames=args.max_frames, overwrite=args.overwrite,
            progress=not args.no_progress, plots=not args.no_plots)
    except InterruptedWhenComplete as e:
        print(format_summary(e.result, Path(args.out)))
        print(f"eval-bag: interrupted once the output was complete; it is all in {args.out}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("eval-bag: interrupted; nothing was written (partial outputs removed)",
              file=sys.stderr)
        return 130
    except (B.BagError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"eval-bag: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary, Path(args.out)))
    return 0
