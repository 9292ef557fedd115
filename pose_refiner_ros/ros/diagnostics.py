"""The node's counters and their ``diagnostic_msgs/DiagnosticArray``.

:class:`NodeStats` is pure Python and thread-safe (the subscription callbacks and the
refinement worker both count into it). :func:`to_diagnostic_array` turns a snapshot into
one ``DiagnosticStatus`` named ``pose_refiner: <fully qualified node name>`` whose key/values are:

- ``rate.<input>_hz``: messages received per second over the last period, and
  ``received.<input>``: since start-up, per input (``image``, ``camera_info``,
  ``detections``, ``depth``, ``coarse_pose``);
- ``frames.refined``, ``frames.tracked``, ``objects.refined``, ``objects.published``,
  and with tracking ``objects.tracked``, ``objects.awaiting_reregistration`` (lost,
  held back until re-registered), ``tracks.reregistered``, ``tracks.lost``: totals
  since start-up;
- ``dropped.<why>``: frames dropped since start-up (``busy_detect`` / ``busy_track``:
  replaced by a newer frame while the worker was busy; ``track_superseded``: a tracking
  image older than a frame refined meanwhile; ``unmatched_<input>``: never matched by
  stamp; ...), and ``rate.skipped_busy_hz``: frames per second skipped over the last
  period because the refiner was busy (the first three reasons: newest wins);
- ``rejected.<reason>``: inputs or objects skipped since start-up, by reason
  (``unknown_class``, ``bad_pose``, ``wrong_frame``, ``bad_camera_info``,
  ``size_mismatch``, ``bad_encoding``, ``bad_depth``, ``low_confidence``, ...);
- ``latency_ms.mean`` / ``.p95`` / ``.last``: from the arrival of the message that
  completed a frame (its image, detections or depth) to the publication of its results,
  over the last 100 frames; ``refine_ms_per_object.mean``: the refiner's own time;
- ``problem.<setting>``: a setting that stops output, while it does (``target_class_id``
  naming no registered object);
- ``device``, ``mode``, ``model``.

The level is ERROR when the worker failed during the last period; WARN while a
``problem.*`` stands, when input was rejected (``rejected.*`` other than
``low_confidence``) or messages dropped unmatched during the last period, or no camera
info has been received yet; OK otherwise.
Frames skipped because the refiner was busy are normal operation (newest wins) and
objects withheld for low confidence are the confidence rule at work: both are counted
and reported at OK level, so that a WARN always means something.
"""

from __future__ import annotations

from collections import Counter, deque
import threading
import time

INPUTS = ("image", "camera_info", "detections", "depth", "coarse_pose")
#: ``dropped.<why>`` that are normal operation: the refiner was busy, the newest won.
BUSY = ("busy_detect", "busy_track", "track_superseded")
#: ``rejected.<reason>`` that are results withheld, not input refused.
NOT_INPUT = ("low_confidence",)


class NodeStats:
    """Counters of one node (thread-safe)."""

    def __init__(self, latency_window: int = 100):
        self._lock = threading.Lock()
        self.received: Counter = Counter()
        self.rejected: Counter = Counter()
        self.dropped: Counter = Counter()
        self.totals: Counter = Counter()
        self.errors = 0
        self._latency_ms: deque = deque(maxlen=latency_window)
        self._refine_ms: deque = deque(maxlen=latency_window)
        self._last = {
            "received": Counter(),
            "rejected": Counter(),
            "dropped": Counter(),
            "errors": 0,
            "t": time.monotonic(),
        }
        self.info: dict = {}
        self.problems: dict = {}

    def set_problem(self, key: str, why: str | None) -> None:
        """Keep ``problem.<key>`` (a setting that stops output, e.g. an unknown
        ``target_class_id``) in the diagnostics, at WARN level, until ``why`` is None."""
        with self._lock:
            if why:
                self.problems[key] = why
            else:
                self.problems.pop(key, None)

    def receive(self, name: str) -> None:
        with self._lock:
            self.received[name] += 1

    def reject(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.rejected[reason] += n

    def drop(self, why: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self.dropped[why] += n

    def set_dropped(self, why: str, total: int) -> None:
        """Set a drop counter kept elsewhere (e.g. by the synchronizer) to its total."""
        with self._lock:
            self.dropped[why] = total

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.totals[name] += n

    def error(self) -> None:
        with self._lock:
            self.errors += 1

    def frame_done(self, latency_ms: float, refine_ms_per_object: float | None) -> None:
        with self._lock:
            self._latency_ms.append(latency_ms)
            if refine_ms_per_object is not None:
                self._refine_ms.append(refine_ms_per_object)

    def snapshot(self) -> dict:
        """Totals, plus rates and changes since the previous snapshot."""
        with self._lock:
            now = time.monotonic()
            dt = max(now - self._last["t"], 1e-6)
            rates = {n: (self.received[n] - self._last["received"][n]) / dt for n in INPUTS}
            rejected = self.rejected - self._last["rejected"]
            new_rejected = sum(n for r, n in rejected.items() if r not in NOT_INPUT)
            dropped = self.dropped - self._last["dropped"]
            new_busy = sum(n for why, n in dropped.items() if why in BUSY)
            new_dropped = sum(dropped.values()) - new_busy
            new_errors = self.errors - self._last["errors"]
            lat = sorted(self._latency_ms)
            snap = {
                "rates": rates,
                "received": dict(self.received),
                "rejected": dict(self.rejected),
                "dropped": dict(self.dropped),
                "totals": dict(self.totals),
                "errors": self.errors,
                "new_rejected": new_rejected,
                "new_dropped": new_dropped,
                "skipped_busy_hz": new_busy / dt,
                "new_errors": new_errors,
                "latency_ms": {
                    "mean": sum(lat) / len(lat) if lat else float("nan"),
                    "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan"),
                    "last": self._latency_ms[-1] if lat else float("nan"),
                },
                "refine_ms_per_object": (
                    sum(self._refine_ms) / len(self._refine_ms) if self._refine_ms else float("nan")
                ),
                "info": dict(self.info),
                "problems": dict(self.problems),
            }
            self._last = {
                "received": Counter(self.received),
                "rejected": Counter(self.rejected),
                "dropped": Counter(self.dropped),
                "errors": self.errors,
                "t": now,
            }
            return snap


def status_level(snap: dict) -> tuple[int, str]:
    """``(level, message)``: 0 OK, 1 WARN, 2 ERROR (``DiagnosticStatus`` levels)."""
    if snap["new_errors"]:
        return 2, f"refinement failed {snap['new_errors']} time(s) in the last period; see the log"
    problems = list(snap.get("problems", {}).values())
    if not snap["received"].get("camera_info"):
        return 1, "; ".join([*problems, "no camera_info received yet"])
    recent = []
    if snap["new_rejected"]:
        recent.append(f"{snap['new_rejected']} input(s) rejected")
    if snap["new_dropped"]:
        recent.append(f"{snap['new_dropped']} frame(s) dropped")
    if recent:
        problems.append(", ".join(recent) + " in the last period")
    if problems:
        return 1, "; ".join(problems)
    if snap.get("skipped_busy_hz"):
        return 0, (f"ok; refiner busy: {snap['skipped_busy_hz']:.1f} frame(s)/s skipped "
                   "(the newest frame wins)")
    return 0, "ok"


def to_diagnostic_array(snap: dict, stamp, node_name: str):
    """A ``diagnostic_msgs/DiagnosticArray`` of a :meth:`NodeStats.snapshot`."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    level, message = status_level(snap)
    kv = []
    for name, hz in snap["rates"].items():
        kv.append((f"rate.{name}_hz", f"{hz:.2f}"))
    kv.append(("rate.skipped_busy_hz", f"{snap.get('skipped_busy_hz', 0.0):.2f}"))
    for name in INPUTS:
        kv.append((f"received.{name}", str(snap["received"].get(name, 0))))
    for name, n in sorted(snap["totals"].items()):
        kv.append((name, str(n)))
    for why, n in sorted(snap["dropped"].items()):
        kv.append((f"dropped.{why}", str(n)))
    for reason, n in sorted(snap["rejected"].items()):
        kv.append((f"rejected.{reason}", str(n)))
    for k, v in snap["latency_ms"].items():
        kv.append((f"latency_ms.{k}", f"{v:.1f}"))
    kv.append(("refine_ms_per_object.mean", f"{snap['refine_ms_per_object']:.1f}"))
    kv.append(("errors", str(snap["errors"])))
    for k, v in sorted(snap.get("problems", {}).items()):
        kv.append((f"problem.{k}", v))
    for k, v in sorted(snap["info"].items()):
        kv.append((k, str(v)))
    status = DiagnosticStatus(
        level=bytes([level]),
        name=f"pose_refiner: {node_name}",
        message=message,
        hardware_id=str(snap["info"].get("device", "")),
        values=[KeyValue(key=k, value=v) for k, v in kv],
    )
    from std_msgs.msg import Header

    return DiagnosticArray(header=Header(stamp=stamp), status=[status])
