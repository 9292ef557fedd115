"""The node's tracking mode: the render-free tracker between detections.

A mixin of :class:`~pose_refiner_ros.ros.node.RefinerNode` (it uses the node's
parameters, refiner, registry, counters and publishers): building the tracker's contour
models off the worker thread, and tracking a frame, re-registering lost objects and
publishing (README, "Behaviour", Tracking).

Two kinds of re-registration (a full refinement from the tracked pose):

- **drifting** (RGB, quality below ``tracking_reregister_below``): in the background
  (``ros.reregistration``: a child process, one job at a time), while the worker goes on
  tracking every frame. When it lands, a confident result corrects the track: the
  motion tracked since its frame is kept (``Tracker.correct``). On a 2-core CPU a
  refinement takes 200-500 ms, six to fifteen camera frames at 30 Hz, which a
  synchronous one would have skipped. None starts while the worker is skipping camera
  frames (``reregistration_pause``).
- **lost** (quality below ``tracking_lost_below``): in the background too, as soon as
  the process is free, pause or not; meanwhile the object is tracked but not published.
  When the answer is not confident and the object is still lost, it leaves the track
  (published on ``tracking_lost``). Synchronously, on the worker thread, only where
  there is no background process (with depth, or when it failed): a lost object's
  refinement blocked the worker for most of a second on the slow machine, and with
  three objects at 30 Hz 14% of the frames were published.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import threading
import time

import numpy as np

from . import conversions as conv
from .debug_image import tracked_object

__all__ = ["Tracked", "TrackingMixin", "reregistration_pause"]


@dataclass(frozen=True)
class Tracked:
    """An object followed by tracking mode: its TF name, class and last published pose."""

    name: str
    class_id: str
    T_cam_obj: np.ndarray
    score: float


def _thresholds(p) -> dict:
    """The tracker's ``lost_below``, ``reregister_below`` and ``reregister_sigma`` from the
    node's parameters (these can change while the node runs; a re-registration threshold
    below the lost one means only lost objects are re-registered)."""
    return {"lost_below": p.tracking_lost_below,
            "reregister_below": max(p.tracking_lost_below, p.tracking_reregister_below),
            "reregister_sigma": p.tracking_reregister_sigma}


def reregistration_pause(state: tuple, skipped: bool, now: float) -> tuple[bool, tuple]:
    """Whether a background re-registration may start now, and the pause's new state.

    ``state``: ``(until, pause_s, clean)``, initially ``(0.0, 0.0, True)``: none starts
    before ``until`` (monotonic seconds); ``clean``: no frame was skipped since the last
    start. ``skipped``: the worker skipped camera frames since the last look. Skipped
    frames pause the re-registrations for 0.5 s, twice as long each time it happens
    again (at most 8 s); a re-registration that went by without skipped frames halves the
    pause (measured, one object at 30 Hz on a slow 2-core machine: 89 -> 100% of the
    frames published).
    """
    until, pause, clean = state
    if skipped:
        pause = min(max(2.0 * pause, 0.5), 8.0)
        return False, (now + pause, pause, False)
    if now < until:
        return False, state
    if clean:
        pause = 0.5 * pause if pause > 0.5 else 0.0
    return True, (until, pause, True)


class TrackingMixin:
    """Tracking for the node (module docstring)."""

    def _start_tracker(self) -> None:
        """Build (or load from the cache) every object's contour model for the tracker on
        a background thread; until it is ready, tracking refines every frame fully."""
        if self._tracker is not None or self._tracker_building:
            return
        self._tracker_building = True
        self.stats.info["tracker"] = "building contour models"

        def build():
            from ..track.tracker import Tracker, TrackerConfig

            t0 = time.monotonic()
            try:
                for c in self.registry.class_ids:
                    self.refiner.view_arrays(c)
                reg = self.registry
                self._tracker = Tracker(
                    self.refiner.view_arrays,
                    TrackerConfig(**_thresholds(self.params)),
                    corners=lambda c: reg[c].bbox_corners_m, device=self.refiner.device)
                if self._background is None and not self.params.use_depth:
                    from .reregistration import BackgroundRefiner

                    self._background = BackgroundRefiner(self._objects_file, self.params)
                self.stats.info["tracker"] = "ready"
                self.get_logger().info(
                    f"tracker ready: contour models of {len(reg.class_ids)} object(s) in "
                    f"{time.monotonic() - t0:.1f} s (cached for the next start)")
            except Exception as e:  # tracking then keeps refining every frame
                self.stats.info["tracker"] = "unavailable"
                self.stats.error()
                self._warn("tracker_error", f"tracker unavailable, refining every frame: {e!r}")
            finally:
                self._tracker_building = False

        threading.Thread(target=build, name="tracker_builder", daemon=True).start()

    def _close_background(self) -> None:
        """End the background re-registration process, if there is one."""
        bg, self._background, self._rereg = getattr(self, "_background", None), None, None
        if bg is not None:
            bg.close()

    def _background_usable(self) -> bool:
        """True when re-registrations go to the background process: it exists and has
        not failed (lost objects are re-registered on the worker otherwise; while the
        process starts, a few seconds, they wait for it). ``/diagnostics`` shows its
        state as ``reregistration``."""
        bg = self._background
        if bg is None:
            return False
        bg.ready()  # reads the child's start-up answer once it is there
        return not bg.state.startswith("failed")

    def _submit_reregistration(self, image, K, depth, jobs) -> None:
        """Hand ``jobs`` (``(name, class_id, T_tracked, lost)``) of this frame to the
        background process when it is free; :meth:`_land_reregistration` applies the
        answer."""
        bg, p = self._background, self.params
        if bg is None or self._rereg is not None:
            return
        # Only with CPU to spare: while the worker skips camera frames, a refinement
        # beside it would take more from the tracker (measured, three objects at 30 Hz
        # on 2 cores: 56 -> 25 % of the frames published); see reregistration_pause.
        # A lost object goes anyway: it is not published until it is re-registered.
        busy = self.stats.dropped.get("busy_track", 0)
        go, self._rereg_pause = reregistration_pause(self._rereg_pause, busy != self._busy_seen,
                                                     time.monotonic())
        self._busy_seen = busy
        if not go and not any(j[3] for j in jobs):
            return
        if bg.submit(image, K, depth, [(c, T) for _, c, T, _ in jobs],
                     (p.iterations, p.crop_size)):
            self._rereg = {"jobs": jobs, "resets": self._tracker.resets}

    def _land_reregistration(self, track, tracker) -> set:
        """Apply a finished background re-registration to the objects still tracked;
        returns the names of the objects that were lost when submitted and whose
        re-registration was not confident."""
        bg, state = self._background, self._rereg
        if bg is not None and bg.state.startswith("failed"):
            self._warn("reregistration_error",
                       f"background re-registration unavailable ({bg.state}); lost "
                       "objects are still re-registered")
            self._rereg = None
            return set()
        if state is None:
            return set()
        msg = bg.poll()
        if msg is None:
            return set()
        self._rereg = None
        if msg[0] != "done":
            self.stats.error()
            self._warn("reregistration_error", f"background re-registration failed: {msg[1]}")
            return set()
        if state["resets"] != tracker.resets:
            return set()  # the track restarted from new detections meanwhile
        index = {o.name: k for k, o in enumerate(track.objects)}
        p, failed = self.params, set()
        for (name, class_id, T_then, lost), rr in zip(state["jobs"], msg[1], strict=True):
            k = index.get(name)
            if k is None or track.objects[k].class_id != class_id:
                continue  # left the track meanwhile
            if not rr.diverged and rr.score >= p.confidence_threshold:
                tracker.correct(k, T_then, rr.T_cam_obj)
                self.stats.count("tracks.reregistered")
            elif lost:
                failed.add(name)
        return failed

    def _track_and_publish(self, header, inputs, track, stamp, t_recv) -> None:
        """Move the tracked objects into this image with the render-free tracker; a lost
        object (quality below ``tracking_lost_below``) is re-registered by a full
        refinement from its tracked pose, and leaves the track, reported on
        ``tracking_lost`` and counted, when that is not confident either; a drifting one
        (below ``tracking_reregister_below``) is re-registered in the background (module
        docstring). Every ``tracking_refine_every`` frames all objects are refined fully
        anyway."""
        p, tracker = self.params, self._tracker
        image, K, depth = inputs
        tracker.cfg = replace(tracker.cfg, **_thresholds(p))
        failed = self._land_reregistration(track, tracker)
        results = tracker.step(image, K, depth)
        self._track_frames += 1
        every = p.tracking_refine_every
        background = self._background_usable()
        redo = [] if background else [k for k, r in enumerate(results) if r.lost]
        if every > 0 and self._track_frames % every == 0:
            redo = list(range(len(results)))
        refined = {}
        if redo:
            # Without restarts: a re-registration that fails is reported lost at once
            # (the next detection brings the object back); restarts cost a rejected
            # object about 320 ms, several camera frames.
            rr = self.refiner.refine(image, K, [(results[k].class_id, results[k].T_cam_obj)
                                                for k in redo], depth_m=depth, restarts=False)
            refined = dict(zip(redo, rr, strict=True))
        drifting = [k for k, r in enumerate(results) if (r.reregister or r.lost)
                    and k not in refined and track.objects[k].name not in failed]
        if drifting:
            self._submit_reregistration(image, K, depth, [
                (track.objects[k].name, results[k].class_id, results[k].T_cam_obj.copy(),
                 results[k].lost) for k in drifting])
        out, keep, published, lost = [], [], [], []
        covariances = {}  # name -> (6, 6) covariance of the pose published, or None
        shown = []  # the debug image's objects
        for k, (o, r) in enumerate(zip(track.objects, results, strict=True)):
            T, score, cov = r.T_cam_obj, r.quality, r.covariance
            if r.lost and k not in refined:  # re-registered in the background
                shown.append(tracked_object(o.class_id, o.T_cam_obj, T, score, lost=True))
                if o.name in failed:
                    lost.append((o.name, o.class_id, T, score))
                    continue
                # not published until its re-registration lands; still tracked
                self.stats.count("objects.awaiting_reregistration")
                keep.append(k)
                published.append(Tracked(o.name, o.class_id, T, score))
                continue
            if k in refined:
                rr = refined[k]
                if not rr.diverged and rr.score >= p.confidence_threshold:
                    T, score, cov = rr.T_cam_obj, rr.score, rr.covariance
                    tracker.set_pose(k, T)
                    if r.lost:
                        self.stats.count("tracks.reregistered")
                elif r.lost:
                    lost.append((o.name, o.class_id, r.T_cam_obj, r.quality))
                    shown.append(tracked_object(o.class_id, o.T_cam_obj, r.T_cam_obj,
                                                r.quality, lost=True))
                    continue
            shown.append(tracked_object(o.class_id, o.T_cam_obj, T, score, lost=False))
            keep.append(k)
            out.append((o.name, o.class_id, T, score))
            covariances[o.name] = cov
            published.append(Tracked(o.name, o.class_id, T, score))
        if lost:
            self.stats.count("tracks.lost", len(lost))
            self._warn("tracking_lost",
                       f"tracking lost: {', '.join(x[0] for x in lost)} (quality below "
                       f"tracking_lost_below {p.tracking_lost_below:.2f} and the "
                       "re-registration not confident); published on tracking_lost")
            dets = [conv.make_detection(header, cid, T, q, self.registry[cid].bbox_min_m,
                                        self.registry[cid].bbox_max_m, name)
                    for name, cid, T, q in lost]
            self.pub_lost.publish(conv.make_detection_array(header, dets))
        tracker.keep(keep)
        if self._track is track:  # not replaced by detections meanwhile
            self._track = (replace(track, stamp_ns=stamp, objects=tuple(published))
                           if published else None)
        self.stats.count("objects.tracked", len(results))
        self._finish_frame(header, out, results, t_recv, image, K, shown, covariances)
