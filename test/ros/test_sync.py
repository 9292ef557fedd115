"""Stamp matching and the newest-wins work queue (pure Python, no ROS)."""

import threading
import time

import pytest

from pose_refiner_ros.ros.sync import FrameSynchronizer, StampBuffer, WorkQueue, stamp_to_ns

MS = 1_000_000


def test_stamp_to_ns():
    assert stamp_to_ns(3, 5) == 3_000_000_005


def test_stamp_buffer_is_bounded_and_returns_what_it_evicts():
    b = StampBuffer(3)
    evicted = [b.add(s, f"item{s}") for s in range(5)]
    assert len(b) == 3 and evicted == [[], [], [], [(0, "item0")], [(1, "item1")]]
    assert b.find(0, 0) is None and b.find(4, 0) == (4, "item4")
    assert b.remove_through(3) == [(2, "item2"), (3, "item3")] and len(b) == 1
    assert b.find(6, 2) == (4, "item4") and b.find(7, 2) is None
    with pytest.raises(ValueError, match="maxlen"):
        StampBuffer(0)


def test_match_in_either_order():
    sync = FrameSynchronizer(tolerance_ns=0, queue_size=5)
    assert sync.add_image(10, "img10") is None
    f = sync.add_detections(10, "det10")
    assert (f.stamp_ns, f.image, f.detections, f.depth) == (10, "img10", "det10", None)
    assert sync.add_detections(20, "det20") is None
    f = sync.add_image(20, "img20")
    assert (f.image, f.detections) == ("img20", "det20")
    assert sync.pending() == {"image": 0, "detections": 0, "depth": 0}


def test_tolerance():
    sync = FrameSynchronizer(tolerance_ns=2 * MS, queue_size=5)
    sync.add_image(100 * MS, "a")
    assert sync.add_detections(103 * MS, "far") is None
    f = sync.add_detections(101 * MS, "near")
    assert f.detections == "near" and f.stamp_ns == 100 * MS


def test_older_unmatched_messages_are_discarded_and_counted():
    sync = FrameSynchronizer(tolerance_ns=0, queue_size=10)
    for s in (1, 2, 3):
        sync.add_image(s, s)
    sync.add_detections(0, "orphan")  # older than every image: never matched
    f = sync.add_detections(3, "d3")
    assert f.image == 3
    assert sync.unmatched == {"image": 2, "detections": 1, "depth": 0}
    assert sync.pending() == {"image": 0, "detections": 0, "depth": 0}


def test_buffers_never_grow_without_bound():
    sync = FrameSynchronizer(tolerance_ns=0, queue_size=4)
    for s in range(100):
        sync.add_image(2 * s, s)  # images whose detections never come
        sync.add_detections(2 * s + 1, s)  # detections of images that never come
    assert max(sync.pending().values()) <= 4
    assert sync.unmatched["image"] == 96 and sync.unmatched["detections"] == 96


def test_depth_required_when_used():
    sync = FrameSynchronizer(tolerance_ns=0, queue_size=5, use_depth=True)
    sync.add_image(7, "img")
    assert sync.add_detections(7, "det") is None
    f = sync.add_depth(7, "depth")
    assert (f.image, f.detections, f.depth) == ("img", "det", "depth")
    sync.add_depth(8, "d8")
    sync.add_detections(8, "det8")
    f = sync.add_image(8, "img8")
    assert f.depth == "d8"


def test_images_used_by_tracking_are_not_counted_as_unmatched():
    sync = FrameSynchronizer(tolerance_ns=0, queue_size=2)
    for s in range(5):
        sync.add_image(s, s)
        sync.mark_used(s)
    assert sync.unmatched["image"] == 0 and sync.pending()["image"] == 2
    sync.add_image(5, 5)  # not used: evicted later, counted
    sync.add_image(6, 6)
    sync.add_image(7, 7)
    assert sync.unmatched["image"] == 1
    f = sync.add_detections(7, "late")  # late detections still match a buffered image
    assert f.image == 7


def test_image_with_depth_for_tracking():
    sync = FrameSynchronizer(tolerance_ns=0, queue_size=5, use_depth=True)
    sync.add_image(5, "img")
    assert sync.image_with_depth(5) == ("img", None)
    sync.add_depth(5, "dep")
    assert sync.image_with_depth(5) == ("img", "dep")
    assert sync.image_with_depth(6) is None


def test_work_queue_newest_wins_and_counts_drops():
    q = WorkQueue()
    assert not q.put("detect", 1)
    assert q.put("detect", 2)
    q.put("track", "t1")
    assert q.put("track", "t2")
    assert q.dropped == {"reset": 0, "detect": 1, "track": 1}
    assert q.take(0) == ("detect", 2)  # detections before tracking
    assert q.take(0) == ("track", "t2")
    assert q.take(0) == (None, None)
    with pytest.raises(ValueError, match="lane"):
        q.put("other", 1)


def test_work_queue_wakes_a_waiting_worker_and_closes():
    q = WorkQueue()
    got = []

    def worker():
        while True:
            lane, item = q.take(timeout=5)
            if q.closed:
                return
            got.append(item)

    t = threading.Thread(target=worker)
    t.start()
    q.put("detect", "x")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    q.close()
    t.join(5)
    assert got == ["x"] and not t.is_alive()


def test_discard_after_forgets_the_previous_pass_without_counting_it():
    sync = FrameSynchronizer(tolerance_ns=2 * MS, queue_size=5)
    sync.add_image(90 * MS, "old_img")
    sync.add_detections(95 * MS, "old_det")
    sync.add_detections(11 * MS, "new_det")  # arrived before the image that restarts time
    assert sync.discard_after(10 * MS) == 2
    assert sync.pending() == {"image": 0, "detections": 1, "depth": 0}
    assert sync.add_image(10 * MS, "new_img").detections == "new_det"
    assert sync.unmatched == {"image": 0, "detections": 0, "depth": 0}


def test_reset_lane_comes_first():
    q = WorkQueue()
    q.put("track", 1)
    q.put("detect", 2)
    q.put("reset", 3)
    assert [q.take(0) for _ in range(3)] == [("reset", 3), ("detect", 2), ("track", 1)]


# -- approximate matching ------------------------------------------------------------------
def test_match_window_follows_the_mode():
    from pose_refiner_ros.ros.sync import match_window_ns

    assert match_window_ns("exact", 0.005, 0.1) == 5 * MS
    assert match_window_ns("approximate", 0.005, 0.1) == 100 * MS
    with pytest.raises(ValueError, match="expected one of"):
        match_window_ns("nearest", 0.005, 0.1)


def test_a_restamped_detection_is_matched_in_approximate_mode_only():
    """Detections stamped 20 ms after their image (a detector that re-stamps its output)."""
    exact = FrameSynchronizer(tolerance_ns=5 * MS, queue_size=5)
    approx = FrameSynchronizer(tolerance_ns=50 * MS, queue_size=5, mode="approximate")
    for sync in (exact, approx):
        assert sync.add_image(100 * MS, "img100") is None
        assert sync.add_detections(120 * MS, "det") is None  # approximate: waits
    assert exact.add_image(200 * MS, "img200") is None
    assert exact.pending()["detections"] == 1 and exact.unmatched["image"] == 0
    f = approx.add_image(200 * MS, "img200")  # now no image nearer than img100 can come
    assert (f.stamp_ns, f.image, f.detections) == (100 * MS, "img100", "det")
    assert approx.pending() == {"image": 1, "detections": 0, "depth": 0}


def test_approximate_waits_for_a_nearer_image_rather_than_taking_an_older_one():
    """The detections (stamped 98 ms) arrive before their image (100 ms): the older image
    (67 ms), within the window but farther, is not taken."""
    sync = FrameSynchronizer(tolerance_ns=50 * MS, queue_size=5, mode="approximate")
    sync.add_image(67 * MS, "img67")
    assert sync.add_detections(98 * MS, "det") is None
    f = sync.add_image(100 * MS, "img100")
    assert (f.image, f.detections) == ("img100", "det")
    assert sync.unmatched == {"image": 1, "detections": 0, "depth": 0}  # img67


def test_approximate_matches_at_once_when_the_nearest_image_is_known():
    sync = FrameSynchronizer(tolerance_ns=50 * MS, queue_size=5, mode="approximate")
    for s in (0, 33, 67, 100):
        sync.add_image(s * MS, f"img{s}")
    f = sync.add_detections(58 * MS, "det")  # stamped 58 ms: img67 is nearest
    assert (f.image, f.detections) == ("img67", "det")
    assert sync.add_detections(400 * MS, "late") is None  # nothing within 50 ms
    sync.add_image(500 * MS, "img500")
    assert sync.pending()["detections"] == 1  # decided, but nothing near it


def test_approximate_with_depth_and_a_mode_change():
    sync = FrameSynchronizer(tolerance_ns=5 * MS, queue_size=5, use_depth=True)
    sync.add_image(100 * MS, "img")
    sync.add_detections(100 * MS, "det")
    assert sync.add_depth(112 * MS, "depth") is None  # 12 ms: too far in exact mode
    sync.set_tolerance(20 * MS, "approximate")  # as the node does on a parameter change
    f = sync.add_image(133 * MS, "img133")  # the next image: matched with what waited
    assert (f.image, f.detections, f.depth) == ("img", "det", "depth")
    with pytest.raises(ValueError, match="mode"):
        sync.set_tolerance(0, "sloppy")
