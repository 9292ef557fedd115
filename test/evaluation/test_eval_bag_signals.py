"""``pose-refiner eval-bag`` is all or nothing under SIGINT and SIGTERM, at any moment
(issue 15, items 1 and 2): the real CLI in a subprocess, paused at named points by the
test hook of :mod:`pose_refiner_ros.evaluation.all_or_nothing`, then signalled."""

from __future__ import annotations

from pathlib import Path
import signal

import pytest


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    from pose_refiner_ros.evaluation.make_bag import make_bag

    path = tmp_path_factory.mktemp("signals") / "rec"
    info = make_bag(path, "synthetic", frames=3, seed=1, width=160, height=120, n_procedural=1)
    return path, info["objects_spec"]


def _eval_bag(run_paused, bag, objects, out: Path, pause_at: str, sig, pause_s: float = 30.0):
    code, _, err = run_paused(
        ["eval-bag", bag, "--objects", objects, "--out", out, "--mode", "flow", "--iterations",
         "1", "--crop-size", "64", "--device", "cpu", "--no-progress", "--no-plots"],
        pause_at, sig, pause_s)
    return code, err


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pause_at, sig", [("bag_closed", signal.SIGINT),
                                           ("bag_closed", signal.SIGTERM),
                                           ("report_written", signal.SIGTERM)])
def test_a_signal_before_the_output_is_complete_leaves_nothing(run_paused, small_bag, tmp_path,
                                                                pause_at, sig):
    out = tmp_path / "out"
    code, err = _eval_bag(run_paused, *small_bag, out, pause_at, sig)
    assert code == 130 and "nothing was written" in err, err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.mark.timeout(300)
def test_a_signal_while_moving_into_place_completes_and_stale_partials_go(run_paused, small_bag,
                                                                           tmp_path):
    out = tmp_path / "out"
    (out / ".rec_refined.partial").mkdir(parents=True)  # left by a run killed hard
    (out / ".objects.abc123.jsonl.partial").write_text("{}\n")
    code, err = _eval_bag(run_paused, *small_bag, out, "commit", signal.SIGINT, pause_s=2)
    assert code == 130 and "output was complete" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["rec_refined", "report.json", "report.md"]
    assert (out / "rec_refined" / "metadata.yaml").is_file()
