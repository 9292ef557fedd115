"""The node's input callbacks: camera info, images, detections or a coarse pose, depth.

They run on the executor's thread, so they only check, convert stamps and buffer: a
message goes to the stamp matcher (``ros.sync``) and a complete frame to the worker's
queue; bad camera info is skipped and counted, keeping the last valid one. A mixin of
``ros.node.RefinerCore``, whose attributes they use: ``params``, ``stats``, ``_sync``
(under ``_sync_lock``), ``_work``, ``_camera``, ``_track``, ``_reject`` and
``_image_in_time`` (``ros.stamps``).
"""

from __future__ import annotations

import time

from . import conversions as conv
from .sync import MatchedFrame, stamp_to_ns

__all__ = ["InputCallbacks"]


class InputCallbacks:
    """Subscription callbacks of the refiner node (keep them short)."""

    def _on_camera_info(self, msg) -> None:
        self.stats.receive("camera_info")
        key = (
            msg.width,
            msg.height,
            tuple(msg.k),
            tuple(msg.d),
            msg.distortion_model,
            msg.binning_x,
            msg.binning_y,
            msg.roi.x_offset,
            msg.roi.y_offset,
            msg.roi.width,
            msg.roi.height,
            tuple(msg.p),
        )
        cam = self._camera
        if cam is not None and cam[0] == key:
            return
        try:
            self._camera = (key, conv.camera_info_to_model(msg))
        except Exception as e:  # ValueError, or anything odd: never let a callback raise
            self._reject("bad_camera_info", f"{e} (keeping the previous valid camera_info)")

    def _on_image(self, msg) -> None:
        self.stats.receive("image")
        stamp = stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)
        if not self._image_in_time(stamp):
            return
        with self._sync_lock:
            frame = self._sync.add_image(stamp, (msg, time.monotonic()))
        if frame is not None:
            self._submit(frame)
        elif self.params.tracking:
            # the worker decides when it takes the image whether a track exists (one may
            # be starting on the frame it is refining now)
            if self._work.put("track", stamp) and self._track is not None:
                self.stats.drop("busy_track")

    def _on_detections(self, msg) -> None:
        self.stats.receive("detections")
        self._add_detections(msg.header.stamp, ("detections", msg))

    def _on_coarse_pose(self, msg) -> None:
        self.stats.receive("coarse_pose")
        if not self.params.coarse_pose_class_id:
            self._reject(
                "coarse_pose_without_class",
                "a coarse_pose arrived but the parameter coarse_pose_class_id is empty; set it "
                "to the class id of the object the pose is of",
            )
            return
        self._add_detections(msg.header.stamp, ("coarse_pose", msg))

    def _add_detections(self, stamp, item) -> None:
        with self._sync_lock:
            frame = self._sync.add_detections(
                stamp_to_ns(stamp.sec, stamp.nanosec), (item, time.monotonic())
            )
        if frame is not None:
            self._submit(frame)

    def _on_depth(self, msg) -> None:
        self.stats.receive("depth")
        with self._sync_lock:
            frame = self._sync.add_depth(
                stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec), (msg, time.monotonic())
            )
        if frame is not None:
            self._submit(frame)

    def _submit(self, frame: MatchedFrame) -> None:
        if self._work.put("detect", frame):
            self.stats.drop("busy_detect")
