"""The stamp guard (pure Python, no ROS): duplicates, backwards stamps, restarts."""

import pytest

from pose_refiner_ros.ros.stamps import BACKWARDS, DUPLICATE, NEW, RESTART, StampGuard

S = 10**9


def test_in_order_duplicate_backwards_and_restart():
    g = StampGuard(jump_ns=S)
    assert [g.check(s) for s in (10 * S, 11 * S)] == [NEW, NEW]
    assert g.check(11 * S) == DUPLICATE
    assert g.check(11 * S - S // 2) == BACKWARDS  # within the threshold: refused
    assert g.newest_ns == 11 * S  # refused stamps do not move the newest
    assert g.check(11 * S + 1) == NEW
    assert g.check(5 * S) == RESTART  # more than 1 s back: time started over
    assert (g.newest_ns, g.check(5 * S + 1)) == (5 * S, NEW)


def test_a_clock_jump_back_makes_the_next_older_stamp_a_restart():
    g = StampGuard(jump_ns=S)
    g.check(10 * S)
    g.clock_jumped_back()
    assert g.check(10 * S - S // 10) == RESTART  # a short bag looped
    g.clock_jumped_back()
    assert g.check(10 * S) == NEW  # the stamps had restarted already: the hint lapses
    assert g.check(10 * S - S // 10) == BACKWARDS


def test_threshold_must_be_positive():
    with pytest.raises(ValueError, match="jump_ns"):
        StampGuard(jump_ns=0)
