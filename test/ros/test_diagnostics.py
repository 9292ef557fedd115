"""The node's diagnostics level (pure Python, no ROS): what is OK, WARN and ERROR."""

import time

from pose_refiner_ros.ros.diagnostics import NodeStats, status_level


def _level_after(*events):
    stats = NodeStats()
    stats.receive("camera_info")
    stats.snapshot()
    for kind, what, n in events:
        getattr(stats, kind)(what, n) if what else getattr(stats, kind)()
    time.sleep(0.01)
    snap = stats.snapshot()
    return status_level(snap)[0], snap


def test_frames_skipped_while_busy_are_ok_and_reported_as_a_rate():
    level, snap = _level_after(("drop", "busy_detect", 20), ("drop", "busy_track", 3),
                               ("drop", "track_superseded", 1))
    assert level == 0 and snap["skipped_busy_hz"] > 0
    assert level == _level_after(("reject", "low_confidence", 5))[0] == 0  # results withheld


def test_rejected_input_and_unmatched_messages_warn_failures_are_errors():
    assert _level_after(("reject", "stamp_duplicate", 1))[0] == 1
    assert _level_after(("drop", "unmatched_detections", 1))[0] == 1
    assert _level_after(("drop", "busy_detect", 9), ("error", None, 0))[0] == 2
    assert status_level(NodeStats().snapshot())[0] == 1  # no camera_info yet
