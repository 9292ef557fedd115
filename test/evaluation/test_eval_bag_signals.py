"""``pose-refiner eval-bag`` is all or nothing under SIGINT and SIGTERM, at any moment
(issue 15, items 1 and 2): the real CLI in a subprocess, paused at named points by the
test hook of :mod:`pose_refiner_ros.evaluation.all_or_nothing`, then signalled."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    from pose_refiner_ros.evaluation.make_bag import make_bag

    path = tmp_path_factory.mktemp("signals") / "rec"
    info = make_bag(path, "synthetic", frames=3, seed=1, width=160, height=120, n_procedural=1)
    return path, info["objects_spec"]


def _eval_bag(bag, objects, out: Path, pause_at: str, sig, pause_s: float = 30.0):
    env = dict(os.environ, OMP_NUM_THREADS="1", POSE_REFINER_TEST_PAUSE_AT=pause_at,
               POSE_REFINER_TEST_PAUSE_S=str(pause_s))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pose_refiner_ros.cli", "eval-bag", str(bag), "--objects",
         str(objects), "--out", str(out), "--mode", "flow", "--iterations", "1",
         "--crop-size", "64", "--device", "cpu", "--no-progress", "--no-plots"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    seen = ""
    while f"paused at {pause_at}" not in seen:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, seen
        seen += line
        assert time.monotonic() < deadline, seen
    proc.send_signal(sig)
    out_text, err = proc.communicate(timeout=60)
    return proc.returncode, seen + err


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pause_at, sig", [("bag_closed", signal.SIGINT),
                                           ("bag_closed", signal.SIGTERM),
                                           ("report_written", signal.SIGTERM)])
def test_a_signal_before_the_output_is_complete_leaves_nothing(small_bag, tmp_path, pause_at,
                                                                sig):
    out = tmp_path / "out"
    code, err = _eval_bag(*small_bag, out, pause_at, sig)
    assert code == 130 and "nothing was written" in err, err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.mark.timeout(300)
def test_a_signal_while_moving_into_place_completes_and_stale_partials_go(small_bag,
                                                                           tmp_path):
    out = tmp_path / "out"
    (out / ".rec_refined.partial").mkdir(parents=True)  # left by a run killed hard
    (out / ".objects.abc123.jsonl.partial").write_text("{}\n")
    code, err = _eval_bag(*small_bag, out, "commit", signal.SIGINT, pause_s=2)
    assert code == 130 and "output was complete" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["rec_refined", "report.json", "report.md"]
    assert (out / "rec_refined" / "metadata.yaml").is_file()
