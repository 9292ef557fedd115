"""Every option of every ``pose-refiner`` subcommand says what it does and its default."""

from __future__ import annotations

import argparse
from pathlib import Path
import re

import pytest

from pose_refiner_ros import cli

REPO = Path(__file__).resolve().parents[1]


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser(name)
    return parser._subparsers._group_actions[0].choices[name]


@pytest.mark.parametrize("command", list(cli._SUBCOMMANDS))
def test_every_option_has_help_and_a_true_default(command):
    sub = _subparser(command)
    assert sub.formatter_class is cli.HelpFormatter
    formatter = sub._get_formatter()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help is not argparse.SUPPRESS, f"{command} {name}: no help"
        text = " ".join(formatter._expand_help(action).split())
        assert "(default: None)" not in text and "(default: False)" not in text, (name, text)
        assert len(re.findall(r"\bdefault\b", text)) <= 1, f"{command} {name}: {text}"
        assert str(REPO) not in text, f"{command} {name}: a machine-local path: {text}"
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            assert "default" in text, f"{command} {name}: default {action.default!r} unsaid"


def test_refine_says_its_model_and_mode_defaults():
    help_text = " ".join(_subparser("refine").format_help().split())
    assert "(default: the shipped models/refiner.pt)" in help_text
    assert "(default: learned)" in help_text


def test_a_default_of_zero_is_shown():
    p = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="seed")
    p.add_argument("--flag", action="store_true", help="a flag")
    p.add_argument("--path", help="unset")
    out = p.format_help()
    assert "seed (default: 0)" in out and "a flag\n" in out and "unset\n" in out
