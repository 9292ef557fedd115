"""``pose-refiner train``: train or fine-tune the correspondence network from the command line.

    pose-refiner train --config config/train.yaml --set batch_size=8 --max-steps 2000
    pose-refiner train --config config/finetune.yaml --objects my_objects.yaml \\
        --init models/refiner.pt --out runs/finetune      # fine-tune on your own meshes
    torchrun --nproc_per_node 2 -m pose_refiner_ros.cli train --config ...   # DDP
"""

from __future__ import annotations

import argparse
import sys

import yaml


def _parse_set(items):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise argparse.ArgumentTypeError(
                f"--set {item!r}: expected KEY=VALUE, e.g. batch_size=8"
            )
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def run(args) -> int:
    from ..evaluation.all_or_nothing import sigterm_as_interrupt
    from .trainer import TrainConfig, Trainer

    sigterm_as_interrupt()

    overrides = _parse_set(args.set)
    for key, val in (
        ("max_steps", args.max_steps),
        ("out_dir", args.out),
        ("objects_yaml", args.objects),
        ("init_checkpoint", args.init),
        ("device", args.device),
    ):
        if val is not None:
            overrides[key] = val
    cfg = TrainConfig.from_yaml(args.config, overrides)
    trainer = Trainer(cfg)
    if args.resume:
        trainer.resume(args.resume)
    try:
        summary = trainer.run()
    except KeyboardInterrupt:
        if trainer.rank == 0:
            print(
                f"train: interrupted at step {trainer.step}; checkpoint of where it was: "
                f"{cfg.out_dir}/last.pt (continue with --resume)",
                file=sys.stderr,
            )
        return 130
    if trainer.rank == 0:
        print(
            f"trained {summary['steps']} steps in {summary['wall_s']:.0f} s "
            f"on {summary['device']}; "
            f"checkpoint: {cfg.out_dir}/last.pt"
        )
        if summary.get("val"):
            print("validation: " + ", ".join(f"{k}={v:.3f}" for k, v in summary["val"].items()))
    return 0


def add_subcommand(subparsers, name: str, help_text: str) -> None:
    p = subparsers.add_parser(
        name,
        help=help_text,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="training YAML (see config/train.yaml)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key (dotted for nested: net.hidden=48); repeatable",
    )
    p.add_argument("--max-steps", type=int, help="stop after N steps (a smoke run: --max-steps 3)")
    p.add_argument("--out", help="run directory (checkpoints, TensorBoard logs)")
    p.add_argument(
        "--objects",
        help="objects YAML whose meshes join the training data (fine-tuning): "
        "user_object_share of the samples show them, and validation runs on them too",
    )
    p.add_argument("--init", help="start from this checkpoint's weights")
    p.add_argument("--resume", help="continue a run from its checkpoint (weights, optimiser, step)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(handler=run)
