"""The ``pose-refiner`` command: one subcommand per job (demo, training, evaluation, ...).

Each subcommand is registered in ``_SUBCOMMANDS`` as ``name -> (help, "module:function")``.
``function(subparsers, name, help)`` adds the subcommand's parser and sets its handler with
``parser.set_defaults(handler=...)``; a handler takes the parsed namespace and returns the
exit status. Modules are imported only when their subcommand is built, so ``--help`` and
the light subcommands never import torch or ROS.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import importlib
import re
import sys

_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("refine poses on the bundled demo data", "pose_refiner_ros.ros.demo:add_subcommand"),
    "eval": ("the refinement test on a BOP or Pix3D dataset: every metric, BOP results CSV",
             "pose_refiner_ros.evaluation.eval_dataset:add_subcommand"),
    "eval-bag": ("refine every frame of a recorded ROS 2 bag offline: output bag and report",
                 "pose_refiner_ros.evaluation.eval_bag_command:add_subcommand"),
    "train": ("train or fine-tune the network on synthetic data from meshes",
              "pose_refiner_ros.train.command:add_subcommand"),
    "refine": ("refine object poses in one image file: JSON and overlay",
               "pose_refiner_ros.image_files.command:add_subcommand"),
    "make-bag": ("write a ROS 2 bag with known answers, from synthetic scenes or a BOP dataset",
                 "pose_refiner_ros.evaluation.make_bag:add_subcommand"),
    "bench": ("benchmark every method on the held-out synthetic set: accuracy, time, scaling",
              "pose_refiner_ros.bench.command:add_subcommand"),
    "adapt": ("adapt the network to your scene from an unlabeled recording (no labels)",
              "pose_refiner_ros.adapt.command:add_subcommand"),
}


def plain_text(text: str) -> str:
    """reST markup of docstrings (````x````, ``:func:`~a.b```) as plain text for a terminal."""
    def role(m):  # :func:`~a.b` shows b, :func:`a.b` shows a.b
        return m.group(2).split(".")[-1] if m.group(1) else m.group(2)

    text = re.sub(r":[a-z]+:`(~?)([^`]+)`", role, text)
    return re.sub(r"``([^`]+)``", r"\1", text)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """Every subcommand's ``--help``: defaults shown where there is one (not for an unset
    option or an off flag), descriptions with their line breaks and without reST markup."""

    def _get_help_string(self, action):
        # `is`, not `in (None, False)`: a default of 0 equals False and is worth showing
        if action.default is None or action.default is False or \
                action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)

    def _format_text(self, text):
        return super()._format_text(plain_text(text))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser. Only ``command``'s module is imported; the other subcommands get
    placeholder parsers that are enough for the top-level ``--help``."""
    parser = argparse.ArgumentParser(
        prog="pose-refiner",
        description="Learned correspondence-field 6D pose refinement (ROS 2).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, target) in _SUBCOMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_text)
            continue
        module_name, func_name = target.split(":")
        getattr(importlib.import_module(module_name), func_name)(subparsers, name, help_text)
        subparsers.choices[name].formatter_class = HelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pose-refiner``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in _SUBCOMMANDS:
        command = None  # --help, or an unknown command: argparse reports it
    args = build_parser(command).parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
