"""Stamp matching of the node's inputs and the newest-wins hand-over to the worker.

Pure Python (no ROS imports), so that it is tested with plain pytest.

- :class:`StampBuffer`: a bounded buffer of ``(stamp_ns, item)``; the oldest entry falls
  out when it is full (counted).
- :class:`FrameSynchronizer`: matches an image with the detections (and, when asked
  for, the depth image) carrying its stamp, in one of two modes (:data:`SYNC_MODES`):
  ``exact``, the same stamp up to a small tolerance (rounding), for detectors that copy
  the image's stamp as ROS detectors should; ``approximate``, the image nearest in stamp
  within a larger window (message_filters' "slop"), for detectors that re-stamp their
  output. Nothing queues without bound: each input has its own bounded buffer, and an
  entry older than a matched frame can never be matched any more and is discarded
  (counted).
- :class:`WorkQueue`: what the subscription callbacks hand to the refinement worker.
  Lanes in priority order: ``reset`` (time started over, see ``ros.stamps``), ``detect``
  (frames with new detections), ``track`` (images for tracking mode); each lane holds
  one item and the newest wins: a put into a full lane replaces its item, and the
  replaced one is counted as dropped.

Stamps are integers in nanoseconds (``sec * 10**9 + nanosec``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import threading
from typing import Any

#: How detections (and depth images) are matched to images (the node's ``sync_mode``).
SYNC_MODES = ("exact", "approximate")


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """A ROS ``builtin_interfaces/Time`` as integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)


def match_window_ns(mode: str, tolerance_s: float, slop_s: float) -> int:
    """The largest stamp difference of a match in ``mode``, ns: ``tolerance_s`` when
    ``exact``, ``slop_s`` when ``approximate`` (the node's ``sync_tolerance_s`` and
    ``sync_slop_s``)."""
    if mode not in SYNC_MODES:
        raise ValueError(f"mode: expected one of {list(SYNC_MODES)}, got {mode!r}")
    return int(round((tolerance_s if mode == "exact" else slop_s) * 1e9))


class StampBuffer:
    """Bounded buffer of ``(stamp_ns, item)`` kept in arrival order.

    Args:
        maxlen: capacity (>= 1); adding to a full buffer evicts the oldest entry.
    """

    def __init__(self, maxlen: int):
        if maxlen < 1:
            raise ValueError(f"maxlen: expected >= 1, got {maxlen}")
        self._entries: deque = deque()
        self.maxlen = int(maxlen)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, stamp_ns: int, item: Any) -> list:
        """Append; returns the entries evicted to stay within ``maxlen`` (oldest first)."""
        self._entries.append((int(stamp_ns), item))
        evicted = []
        while len(self._entries) > self.maxlen:
            evicted.append(self._entries.popleft())
        return evicted

    def find(self, stamp_ns: int, tolerance_ns: int, not_after_ns: int | None = None):
        """The entry closest to ``stamp_ns`` within ``tolerance_ns`` (ties: the newest),
        as ``(stamp_ns, item)``, or None. With ``not_after_ns``, only entries stamped at
        or before it are considered."""
        best = None
        for s, item in self._entries:
            if not_after_ns is not None and s > not_after_ns:
                continue
            d = abs(s - stamp_ns)
            if d <= tolerance_ns and (best is None or d <= abs(best[0] - stamp_ns)):
                best = (s, item)
        return best

    def newest_ns(self) -> int | None:
        """The largest stamp buffered, or None when empty."""
        return max((s for s, _ in self._entries), default=None)

    def remove_through(self, stamp_ns: int) -> list:
        """Remove and return every entry stamped ``<= stamp_ns``."""
        removed = [e for e in self._entries if e[0] <= stamp_ns]
        self._entries = deque(e for e in self._entries if e[0] > stamp_ns)
        return removed

    def clear(self) -> None:
        self._entries.clear()


@dataclass(frozen=True)
class MatchedFrame:
    """Inputs that belong to one image.

    Attributes:
        stamp_ns: the image's stamp.
        image: the image item as given to ``add_image``.
        detections: the detections item, or None (a tracking frame).
        depth: the depth item, or None.
    """

    stamp_ns: int
    image: Any
    detections: Any = None
    depth: Any = None


class FrameSynchronizer:
    """Match images, detections and (optionally) depth images by stamp.

    Args:
        tolerance_ns: largest stamp difference of a match (see :func:`match_window_ns`).
        queue_size: capacity of each input's buffer.
        use_depth: a frame also needs a depth image with a matching stamp.
        mode: ``"exact"``: a detections message is matched as soon as an image within
            ``tolerance_ns`` is buffered (with a small tolerance there is one such image
            at most). ``"approximate"``: to the image nearest in stamp within
            ``tolerance_ns``, decided as message_filters' ApproximateTime decides: once
            an image stamped at or after the detections has arrived, so that no nearer
            one can still come (images arrive in stamp order; the node skips any other).
            Until then the detections wait, so the last ones before the camera stops
            wait for its next image. Depth images go to the nearest buffered one in both.

    ``add_*`` return the :class:`MatchedFrame` that the new message completed, or None.
    ``unmatched`` maps an input name to how many of its messages were discarded without
    ever being matched (evicted from a full buffer, or older than a matched frame);
    images used by tracking (:meth:`mark_used`) do not count. Not thread-safe: share it
    under a lock.
    """

    INPUTS = ("image", "detections", "depth")

    def __init__(self, tolerance_ns: int, queue_size: int, use_depth: bool = False,
                 mode: str = "exact"):
        self.tolerance_ns, self.mode = 0, "exact"
        self.set_tolerance(tolerance_ns, mode)
        self.use_depth = bool(use_depth)
        self._buffers = {name: StampBuffer(queue_size) for name in self.INPUTS}
        self.unmatched = {name: 0 for name in self.INPUTS}
        self._used: set = set()  # stamps of buffered images that tracking refined

    def pending(self) -> dict:
        """How many messages of each input wait for a match."""
        return {n: len(b) for n, b in self._buffers.items()}

    def add_image(self, stamp_ns: int, image: Any):
        self._discard("image", self._buffers["image"].add(stamp_ns, image))
        if self.mode == "exact":
            return self._try_match(stamp_ns)
        # approximate: detections stamped up to this image are decided now, the newest
        # first (an older one left would be older than the frame matched: discarded)
        decided = [s for s, _ in self._buffers["detections"]._entries if s <= stamp_ns]
        for det_stamp in sorted(decided, reverse=True):
            image = self._buffers["image"].find(det_stamp, self.tolerance_ns)
            frame = self._try_match(image[0]) if image else None
            if frame is not None:
                return frame
        return None

    def add_detections(self, stamp_ns: int, detections: Any):
        self._discard("detections", self._buffers["detections"].add(stamp_ns, detections))
        if self.mode == "approximate" and not self._decided(stamp_ns):
            return None  # a nearer image may still come
        image = self._buffers["image"].find(stamp_ns, self.tolerance_ns)
        return self._try_match(image[0]) if image else None

    def _decided(self, det_stamp_ns: int) -> bool:
        """Approximate mode: an image stamped at or after ``det_stamp_ns`` has arrived."""
        newest = self._buffers["image"].newest_ns()
        return newest is not None and newest >= det_stamp_ns

    def add_depth(self, stamp_ns: int, depth: Any):
        self._discard("depth", self._buffers["depth"].add(stamp_ns, depth))
        image = self._buffers["image"].find(stamp_ns, self.tolerance_ns)
        return self._try_match(image[0]) if image else None

    def image_with_depth(self, stamp_ns: int):
        """``(image, depth)`` of the buffered image stamped ``stamp_ns`` (depth None when
        not matched or not used), or None when that image is no longer buffered."""
        image = self._buffers["image"].find(stamp_ns, 0)
        if image is None:
            return None
        depth = None
        if self.use_depth:
            d = self._buffers["depth"].find(stamp_ns, self.tolerance_ns)
            depth = d[1] if d else None
        return image[1], depth

    def mark_used(self, stamp_ns: int) -> None:
        """The buffered image stamped ``stamp_ns`` was refined (tracking): it stays
        buffered for late detections, but is no longer counted when discarded."""
        self._used.add(int(stamp_ns))

    def set_tolerance(self, tolerance_ns: int, mode: str | None = None) -> None:
        """Change the largest stamp difference of a match and, when given, the mode."""
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns: expected >= 0, got {tolerance_ns}")
        if mode is not None and mode not in SYNC_MODES:
            raise ValueError(f"mode: expected one of {list(SYNC_MODES)}, got {mode!r}")
        self.tolerance_ns = int(tolerance_ns)
        self.mode = mode or self.mode

    def discard_after(self, stamp_ns: int) -> int:
        """Time started over at ``stamp_ns``: remove every entry stamped later than it
        (beyond the tolerance), left from the previous pass, without counting them as
        unmatched; returns how many were removed."""
        n = 0
        for buf in self._buffers.values():
            kept = [e for e in buf._entries if e[0] <= stamp_ns + self.tolerance_ns]
            n += len(buf) - len(kept)
            buf._entries = deque(kept)
        self._used = {s for s in self._used if s <= stamp_ns + self.tolerance_ns}
        return n

    def _discard(self, name: str, entries: list) -> None:
        for stamp, _ in entries:
            if name == "image" and stamp in self._used:
                self._used.discard(stamp)
            else:
                self.unmatched[name] += 1

    def _try_match(self, image_stamp_ns: int):
        image = self._buffers["image"].find(image_stamp_ns, 0)
        if image is None:
            return None
        decided = self._buffers["image"].newest_ns() if self.mode == "approximate" else None
        det = self._buffers["detections"].find(image_stamp_ns, self.tolerance_ns, decided)
        if det is None:
            return None
        depth = None
        if self.use_depth:
            depth = self._buffers["depth"].find(image_stamp_ns, self.tolerance_ns)
            if depth is None:
                return None
        # The match is final: it and everything older can never be matched again.
        for name, through, match in (
            ("image", image_stamp_ns, image),
            ("detections", det[0], det),
            ("depth", depth[0] if depth else image_stamp_ns, depth),
        ):
            removed = self._buffers[name].remove_through(through)
            self._discard(name, [e for e in removed if match is None or e[0] != match[0]])
        self._used.discard(image_stamp_ns)
        return MatchedFrame(image_stamp_ns, image[1], det[1], depth[1] if depth else None)


class WorkQueue:
    """Newest-wins hand-over from callbacks to one worker, with priority lanes.

    ``put(lane, item)`` stores ``item`` in ``lane`` (``"reset"``, ``"detect"`` or
    ``"track"``), replacing (and counting in ``dropped[lane]``) an item not yet taken.
    ``take`` returns ``(lane, item)``, in that order of lanes, waiting up to ``timeout``
    seconds; ``(None, None)`` on time-out or after :meth:`close`. Thread-safe.
    """

    LANES = ("reset", "detect", "track")

    def __init__(self):
        self._cv = threading.Condition()
        self._items: dict = {lane: None for lane in self.LANES}
        self.dropped = {lane: 0 for lane in self.LANES}
        self.closed = False

    def put(self, lane: str, item: Any) -> bool:
        """Store ``item``; returns True when it replaced an item that was not taken."""
        if lane not in self._items:
            raise ValueError(f"lane: expected one of {self.LANES}, got {lane!r}")
        with self._cv:
            replaced = self._items[lane] is not None
            if replaced:
                self.dropped[lane] += 1
            self._items[lane] = item
            self._cv.notify_all()
            return replaced

    def discard(self, lane: str) -> bool:
        """Remove the item of ``lane`` without counting a drop; True if there was one."""
        with self._cv:
            had = self._items[lane] is not None
            self._items[lane] = None
            return had

    def take(self, timeout: float | None = None):
        with self._cv:
            self._cv.wait_for(
                lambda: self.closed or any(v is not None for v in self._items.values()),
                timeout=timeout,
            )
            if self.closed:
                return None, None
            for lane in self.LANES:
                if self._items[lane] is not None:
                    item, self._items[lane] = self._items[lane], None
                    return lane, item
            return None, None

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()
