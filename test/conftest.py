"""Fixtures shared by the tests of several folders."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_paused(argv: list, pause_at: str, sig, pause_s: float = 30.0):
    """Run ``pose-refiner ARGV`` (the real CLI, in a subprocess) until it pauses at the
    test hook point ``pause_at`` (:mod:`pose_refiner_ros.evaluation.all_or_nothing`), send
    it ``sig``; returns ``(exit code, stdout, stderr)``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", POSE_REFINER_TEST_PAUSE_AT=pause_at,
               POSE_REFINER_TEST_PAUSE_S=str(pause_s))
    # The child gets Ctrl-C's default disposition whatever this process had: a suite run
    # in the background of a non-interactive shell inherits SIGINT ignored, and a child
    # that ignores it would not be tested at all.
    proc = subprocess.Popen([sys.executable, "-m", "pose_refiner_ros.cli", *map(str, argv)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    seen = ""
    while f"paused at {pause_at}" not in seen:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, seen
        seen += line
        assert time.monotonic() < deadline, seen
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, seen + err


@pytest.fixture
def run_paused():
    """:func:`_run_paused`: a CLI run signalled at a named moment."""
    return _run_paused
