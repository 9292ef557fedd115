"""``pose-refiner make-bag`` is all or nothing under SIGINT and SIGTERM (issue 15, item 2):
the bag, its ``<OUT>_objects/`` and its ``--gt-file`` appear together or not at all. The
real CLI in a subprocess, paused at named points by the test hook of
:mod:`pose_refiner_ros.evaluation.all_or_nothing`, then signalled."""

from __future__ import annotations

from pathlib import Path
import signal

import pytest


def _make_bag(run_paused, out: Path, pause_at: str, sig, pause_s: float = 30.0):
    code, _, err = run_paused(["make-bag", out, "--frames", "2", "--width", "64", "--height",
                               "48", "--gt-file", out.parent / "gt.json"], pause_at, sig, pause_s)
    return code, err


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_make_bag_signalled_before_complete_leaves_nothing(run_paused, tmp_path, sig):
    code, err = _make_bag(run_paused, tmp_path / "rec", "bag_closed", sig)
    assert code == 130 and "nothing was written" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.timeout(300)
def test_make_bag_signalled_while_moving_in_completes_and_stale_partials_go(run_paused,
                                                                            tmp_path):
    (tmp_path / ".rec.partial").mkdir()  # left by earlier runs killed hard
    (tmp_path / ".make-bag.rec.partial").mkdir()
    (tmp_path / "gt.json.partial").write_text("{}")
    code, err = _make_bag(run_paused, tmp_path / "rec", "commit", signal.SIGTERM, pause_s=2)
    assert code == 130 and "output was complete" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.json", "rec", "rec_objects"]
    assert (tmp_path / "rec" / "metadata.yaml").is_file()
    assert (tmp_path / "rec_objects" / "objects.yaml").is_file()
