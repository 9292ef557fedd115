"""Every number parameter has a range, enforced at start-up and while the node runs, and
a ``target_class_id`` that names no registered object is said out loud (issue 15,
item 7), over the real ``refiner_node`` and middleware."""

from __future__ import annotations

import re
import time

import node_harness as nh
import pytest

from pose_refiner_ros.ros.param_checks import range_text, values_text
from pose_refiner_ros.ros.params import PARAMS, SPECS, validate


def test_every_number_parameter_has_a_range_shown_in_the_readme():
    text = (nh.ROOT / "README.md").read_text()
    for spec in PARAMS:
        if isinstance(spec.default, bool) or not isinstance(spec.default, (int, float)):
            continue
        assert spec.bounds is not None, f"{spec.name} has no range"
        row = re.search(rf"^\| `{spec.name}` \|.*$", text, re.MULTILINE)
        assert row and range_text(spec.bounds) in row.group(0), (spec.name, row)
        lo, hi = spec.bounds
        assert validate(spec.name, lo) is None and validate(spec.name, hi) is None
        step = 1 if isinstance(spec.default, int) else 0.5
        for bad in (lo - step, hi + step):
            assert range_text(spec.bounds) in validate(spec.name, bad), (spec.name, bad)
    assert SPECS["iterations"].bounds[1] <= 50


def test_every_choice_parameter_lists_its_values_in_the_readme():
    text = (nh.ROOT / "README.md").read_text()
    listed = 0
    for spec in PARAMS:
        values = values_text(spec.check)
        if values is None:
            continue
        row = re.search(rf"^\| `{spec.name}` \|.*$", text, re.MULTILINE)
        assert row and row.group(0).split("|")[3].strip() == values, (spec.name, row)
        for choice in spec.check.choices:
            assert validate(spec.name, choice) is None
        assert "expected one of" in validate(spec.name, "no-such-value")
        listed += 1
    assert listed >= 3  # mode, low_confidence_action, image_transport, ...


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_out_of_range_values_stop_the_start_in_one_line(tmp_path):
    extra = tmp_path / "overrides.yaml"
    extra.write_text("/**:\n  ros__parameters:\n    max_objects: 0\n")
    for args, name, says in (
        (["-p", "iterations:=1000"], "iterations", "expected an integer in [1, 20], got 1000"),
        (["--params-file", str(extra)], "max_objects",
         "expected an integer in [1, 100], got 0"),
        (["-p", "sync_tolerance_s:=.nan"], "sync_tolerance_s", "in [0.0, 1.0], got nan"),
    ):
        code, _, text = nh.run_node(args, timeout=60)
        lines = [line for line in text.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and "Traceback" not in text, text
        assert f"parameter {name!r}" in lines[0] and says in lines[0], lines[0]


def _wait_diag(peer, check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with peer.lock:
            last = peer.diagnostics_history[-1] if peer.diagnostics_history else None
        if last is not None and check(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"diagnostics never matched; last: {last}")


@pytest.mark.ros
@pytest.mark.timeout(180)
def test_run_time_ranges_and_an_unknown_target_class(tmp_path):
    log = tmp_path / "node.log"
    overrides = {"mode": "flow", "target_class_id": "ghost", "diagnostics_period_s": 0.2}
    with nh.running_node("ranges", overrides, log) as (proc, peer):
        assert "target_class_id 'ghost' is not a registered object" in log.read_text()
        unknown = "problem.target_class_id"
        _, level, message, values = _wait_diag(peer, lambda d: unknown in d[3])
        assert level == 1 and "'ghost'" in message and "refined_pose" in values[unknown]
        refusals = {
            "iterations": (1000, "expected an integer in [1, 20], got 1000"),
            "crop_size": (4096, "expected an integer in [32, 512], got 4096"),
            "confidence_threshold": (1.5, "expected a value in [0.0, 1.0], got 1.5"),
            "tracking_max_age_s": (-1.0, "in [0.0, 3600.0], got -1.0"),
        }
        for name, (value, says) in refusals.items():
            peer.set_parameters(**{name: value})
            ((ok, reason),) = peer.last_set_results
            assert not ok and f"parameter {name!r}" in reason and says in reason, reason
        peer.set_parameters(iterations=20, target_class_id="mug")
        assert peer.last_set_results == [(True, "")] * 2, peer.last_set_results
        _wait_diag(peer, lambda d: unknown not in d[3])
        peer.set_parameters(target_class_id="phantom")
        _wait_diag(peer, lambda d: "'phantom'" in d[3].get(unknown, ""))
        deadline = time.monotonic() + 10
        while "'phantom' is not a registered object" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
