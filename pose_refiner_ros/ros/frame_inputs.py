"""A frame's images as the refiner takes them, with the node's checks on them.

One implementation for the node and ``pose-refiner eval-bag``: the colour image, raw
(``sensor_msgs/Image``) or compressed (``sensor_msgs/CompressedImage``, see
``ros.compressed``), is checked against the camera model and converted to rectified RGB;
the depth image, when there is one, must be registered to it. The checks and their
order are the same for both transports: camera info first, then an empty image, an
unsupported encoding or format, a size that disagrees with the ``CameraInfo`` (read from
the JPEG or PNG header before decoding), data that cannot be read or decoded.

Every problem is a :class:`~.conversions.Rejection` whose ``reason`` the node counts in
``/diagnostics`` as ``rejected.<reason>`` (eval-bag as ``rejected_<reason>``). No ROS
imports: messages are only read, so rosbags messages work as rclpy ones do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import compressed as cmp
from . import conversions as conv
from .conversions import Rejection

__all__ = ["FrameImages", "ImageRejected", "frame_images", "image_to_rgb_checked"]


class ImageRejected(ValueError):
    """A colour image that cannot be used: ``reason`` as counted, ``message`` why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class FrameImages:
    """The images of one frame, ready for the refiner.

    Attributes:
        image_rgb: ``(H, W, 3)`` uint8 RGB, rectified.
        K_px: ``(3, 3)`` float64 intrinsics of the rectified image, pixels (a writable
            copy: torch warns on read-only arrays).
        depth_m: ``(H, W)`` float32 depth in metres registered to ``image_rgb``,
            rectified; 0 where there is no measurement. None without a (usable) depth image.
    """

    image_rgb: np.ndarray
    K_px: np.ndarray
    depth_m: np.ndarray | None = None


def _size_mismatch(width: int, height: int, cam) -> ImageRejected:
    return ImageRejected(
        "size_mismatch",
        f"image is {width}x{height} but camera_info describes {cam.width}x{cam.height} "
        "(after binning and ROI)")


def image_to_rgb_checked(msg, cam) -> np.ndarray:
    """A raw or compressed colour image -> ``(H, W, 3)`` uint8 RGB (not rectified),
    checked against ``cam`` (a :class:`~pose_refiner_ros.geometry.camera.CameraModel`).

    Raises:
        ImageRejected: reason ``empty_image``, ``bad_encoding``, ``size_mismatch`` or
            ``bad_image`` (data too short, damaged, or not decodable).
    """
    if cmp.is_compressed(msg):
        if len(msg.data) == 0:
            raise ImageRejected("empty_image",
                                f"compressed image without data (format {msg.format!r})")
        try:
            cmp.check_format(msg.format)
        except ValueError as e:
            raise ImageRejected("bad_encoding", str(e)) from None
        try:
            width, height = cmp.compressed_size(msg.data)
        except ValueError as e:
            raise ImageRejected("bad_image", str(e)) from None
        if (height, width) != (cam.height, cam.width):
            raise _size_mismatch(width, height, cam)
        try:
            image = cmp.decode_rgb(msg)
        except ValueError as e:
            raise ImageRejected("bad_image", str(e)) from None
        if image.shape[:2] != (height, width):
            raise ImageRejected("bad_image", f"compressed image: its header says {width}x"
                                f"{height}, it decodes to {image.shape[1]}x{image.shape[0]}")
        return image
    if msg.height == 0 or msg.width == 0 or len(msg.data) == 0:
        raise ImageRejected("empty_image",
                            f"image {msg.width}x{msg.height} with {len(msg.data)} bytes")
    if msg.encoding not in conv.COLOR_ENCODINGS:
        raise ImageRejected("bad_encoding", f"image encoding {msg.encoding!r} is not supported; "
                            f"expected one of {sorted(conv.COLOR_ENCODINGS)}")
    if (msg.height, msg.width) != (cam.height, cam.width):
        raise _size_mismatch(msg.width, msg.height, cam)
    try:
        return conv.image_to_rgb(msg)
    except ValueError as e:
        raise ImageRejected("bad_image", str(e)) from None


def frame_images(image_msg, depth_msg, cam) -> tuple[FrameImages | None, list[Rejection]]:
    """The checked, rectified images of a frame.

    Args:
        image_msg: ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage``.
        depth_msg: ``sensor_msgs/Image`` depth (``16UC1`` or ``32FC1``) or None.
        cam: the camera model of the latest valid ``CameraInfo``, or None.

    Returns:
        ``(images, rejections)``: ``images`` is None when the frame must be skipped
        (reasons ``no_camera_info`` or those of :func:`image_to_rgb_checked`); a bad
        depth image (reason ``bad_depth``) is reported, and the frame goes on without
        depth.
    """
    if cam is None:
        return None, [Rejection("no_camera_info", "no valid camera_info received yet; publish "
                                "the camera's CameraInfo on 'camera_info'")]
    try:
        image = cam.rectify(image_to_rgb_checked(image_msg, cam))
    except ImageRejected as e:
        return None, [Rejection(e.reason, e.message)]
    rejections = []
    depth = None
    if depth_msg is not None:
        try:
            depth = conv.depth_to_m(depth_msg)
            if depth.shape != image.shape[:2]:
                raise ValueError(
                    f"depth is {depth.shape[1]}x{depth.shape[0]}, the image "
                    f"{image.shape[1]}x{image.shape[0]}; depth must be registered to the "
                    "colour image")
            depth = cam.rectify(depth, interpolation="nearest")
        except ValueError as e:
            rejections.append(Rejection("bad_depth", f"{e}; refining this frame without depth"))
            depth = None
    return FrameImages(image, np.array(cam.K), depth), rejections
