"""Image time: duplicated stamps, stamps that go backwards, and time that starts over.

:class:`StampGuard` (pure Python) judges the stamp of every image on arrival against the
newest image so far:

- ``NEW``: later than every image so far: the image is used as usual.
- ``DUPLICATE``: the newest image's stamp again: skipped and counted
  (``rejected.stamp_duplicate``); that stamp's results were published already.
- ``BACKWARDS``: older than the newest by at most ``jump_ns``: skipped and counted
  (``rejected.stamp_backwards``); results must not go back in time.
- ``RESTART``: older than the newest by more than ``jump_ns``, or older at all after
  the ROS clock jumped back (:meth:`StampGuard.clock_jumped_back`, as tf2's buffer
  clears on a jump back): time started over (``ros2 bag play --loop``, a bag played
  again, ``use_sim_time``). The image is the first of the new pass.

:class:`StampsMixin` is the node's side (a mixin of
:class:`~pose_refiner_ros.ros.node.RefinerNode`, like ``ros.tracking``): it checks each
image, warns and counts, and on a restart drops what belongs to the old pass (buffered
messages, queued frames) and has the worker start TF publication and tracking over
(README, "Behaviour", Time).
"""

from __future__ import annotations

__all__ = ["BACKWARDS", "DUPLICATE", "NEW", "RESTART", "TIME_JUMP_S", "StampGuard", "StampsMixin"]

NEW, DUPLICATE, BACKWARDS, RESTART = "new", "duplicate", "backwards", "restart"

#: An image stamped more than this before the newest one means time started over, s.
TIME_JUMP_S = 1.0


class StampGuard:
    """Orders image stamps (module docstring). Not thread-safe: call from one thread.

    Args:
        jump_ns: an image older than the newest by more than this is a restart, ns.
    """

    def __init__(self, jump_ns: int = int(TIME_JUMP_S * 1e9)):
        if jump_ns <= 0:
            raise ValueError(f"jump_ns: expected > 0, got {jump_ns}")
        self.jump_ns = int(jump_ns)
        self.newest_ns: int | None = None
        self._clock_jumped = False

    def check(self, stamp_ns: int) -> str:
        """``NEW``, ``DUPLICATE``, ``BACKWARDS`` or ``RESTART`` for an image stamped
        ``stamp_ns``; the newest stamp moves on with ``NEW`` and ``RESTART``."""
        newest, clock_jumped = self.newest_ns, self._clock_jumped
        self._clock_jumped = False  # the hint is for the next image only
        if newest is None or stamp_ns > newest:
            self.newest_ns = int(stamp_ns)
            return NEW
        if clock_jumped or newest - stamp_ns > self.jump_ns:
            self.newest_ns = int(stamp_ns)
            return RESTART
        return DUPLICATE if stamp_ns == newest else BACKWARDS

    def clock_jumped_back(self) -> None:
        """The ROS clock went back: the next image not later than the newest is a
        restart, whatever its age."""
        self._clock_jumped = True


class StampsMixin:
    """The node's use of :class:`StampGuard` (module docstring). Expects ``self._stamps``
    (a StampGuard), ``self._sync``/``self._sync_lock``, ``self._work``, ``self.stats``,
    ``self._reject`` and the worker state reset by :meth:`_start_over`."""

    def _watch_clock(self) -> None:
        """Hint the guard when the node's ROS clock jumps back (``use_sim_time``)."""
        from rclpy.clock import JumpThreshold
        from rclpy.duration import Duration

        self._clock_jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1),
                          on_clock_change=False),
            post_callback=lambda jump: self._stamps.clock_jumped_back(),
        )

    def _image_in_time(self, stamp_ns: int) -> bool:
        """Whether the image stamped ``stamp_ns`` is used (executor thread)."""
        newest = self._stamps.newest_ns
        verdict = self._stamps.check(stamp_ns)
        if verdict == NEW:
            return True
        if verdict == RESTART:
            self._restart(stamp_ns, newest)
            return True
        back_s = (newest - stamp_ns) / 1e9
        if verdict == DUPLICATE:
            self._reject("stamp_duplicate", f"image stamped {_s(stamp_ns)} like the previous "
                         "one; its results were published already")
        else:
            self._reject("stamp_backwards", f"image stamped {_s(stamp_ns)}, {back_s:.3f} s "
                         f"before the newest ({_s(newest)}); results must not go back in time "
                         f"(more than {self._stamps.jump_ns / 1e9:g} s back: time starts over)")
        return False

    def _restart(self, stamp_ns: int, newest_ns: int) -> None:
        """Time started over: forget the old pass; the worker starts over before the
        next frame (it may be publishing one of the old pass now)."""
        with self._sync_lock:
            self._sync.discard_after(stamp_ns)
        self._work.discard("detect")
        self._work.discard("track")
        self._work.put("reset", stamp_ns)
        self.stats.count("time.restarts")
        self.get_logger().info(
            f"time jumped back {(newest_ns - stamp_ns) / 1e9:.3f} s (image stamped "
            f"{_s(stamp_ns)} after {_s(newest_ns)}; a bag looped or restarted): TF, "
            "tracking and stamp matching start over")

    def _start_over(self) -> None:
        """On the worker, between frames: TF may go back to the new pass's stamps, and
        nothing is tracked from the old pass."""
        self._last_tf_stamp_ns = -1
        self._track = None
        self._track_frames = 0


def _s(stamp_ns: int) -> str:
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"
