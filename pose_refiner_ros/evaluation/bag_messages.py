"""ROS 2 messages for bags, built without ROS: images, camera info, detections, poses
and TF, as ``rosbags`` message objects of :func:`.bag_io.typestore`, in the package's
conventions (``T_cam_obj`` 4x4 in metres, quaternions ``(x, y, z, w)``, RGB images
``(H, W, 3) uint8``, depth in metres).

Reading needs nothing of this module: it goes through ``pose_refiner_ros.ros.conversions``
(``image_to_rgb``, ``depth_to_m``, ``camera_info_to_model``, ``detections_to_objects``,
``pose_to_matrix``), whose functions only read fields and so take rosbags messages as
they take rclpy ones: the bag tools interpret every input exactly as the node does.
Building messages needs the rosbags classes, hence the functions here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .bag_io import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    DETECTIONS,
    IMAGE,
    POSE_STAMPED,
    TF,
    ns_to_stamp,
    typestore,
)

__all__ = [
    "image_msg",
    "compressed_image_msg",
    "camera_info_msg",
    "matrix_to_pose",
    "DetectionOut",
    "detections_msg",
    "pose_stamped_msg",
    "tf_msg",
]


def _header(t_ns: int, frame_id: str):
    Header = typestore().types["std_msgs/msg/Header"]
    return Header(stamp=ns_to_stamp(t_ns), frame_id=frame_id)


_IMAGE_LAYOUT = {"rgb8": ("u1", 3), "bgr8": ("u1", 3), "mono8": ("u1", 1),
                 "16UC1": ("<u2", 1), "32FC1": ("<f4", 1)}


def image_msg(array: np.ndarray, encoding: str, t_ns: int, frame_id: str):
    """A ``sensor_msgs/Image`` of ``array``.

    Args:
        array: ``(H, W, 3)`` uint8 RGB for ``rgb8`` / ``bgr8`` (channels are swapped for
            ``bgr8``), ``(H, W)`` uint8 for ``mono8``, ``(H, W)`` depth in metres for
            ``16UC1`` (written in millimetres, 0 = no data) and ``32FC1`` (metres).
        encoding: one of ``rgb8, bgr8, mono8, 16UC1, 32FC1``.
        t_ns: header stamp, nanoseconds.
        frame_id: header frame.
    """
    if encoding not in _IMAGE_LAYOUT:
        raise ValueError(f"encoding: expected one of {sorted(_IMAGE_LAYOUT)}, got {encoding!r}")
    kind, channels = _IMAGE_LAYOUT[encoding]
    a = np.asarray(array)
    want = (a.shape[0], a.shape[1], 3) if channels == 3 else a.shape[:2]
    if a.ndim < 2 or a.shape != want or 0 in a.shape:
        raise ValueError(f"array: expected {'(H, W, 3)' if channels == 3 else '(H, W)'} for "
                         f"{encoding}, got {a.shape}")
    if encoding == "bgr8":
        a = a[..., ::-1]
    if encoding == "16UC1":
        a = np.clip(np.round(np.nan_to_num(a, nan=0.0, posinf=0.0) * 1000.0), 0, 65535)
    data = np.ascontiguousarray(a.astype(kind, copy=False))
    h, w = data.shape[:2]
    return typestore().types[IMAGE](
        header=_header(t_ns, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0,
        step=w * channels * data.itemsize, data=data.reshape(-1).view(np.uint8))


def compressed_image_msg(image_rgb: np.ndarray, compression: str, t_ns: int, frame_id: str):
    """A ``sensor_msgs/CompressedImage`` of ``(H, W, 3)`` uint8 RGB, JPEG or PNG, as
    image_transport's ``compressed`` plugin writes it (``pose_refiner_ros.ros.compressed``)."""
    from ..ros.compressed import encode_rgb

    fmt, data = encode_rgb(image_rgb, compression)
    return typestore().types[COMPRESSED_IMAGE](
        header=_header(t_ns, frame_id), format=fmt, data=np.frombuffer(data, np.uint8).copy())


def camera_info_msg(K: np.ndarray, width: int, height: int, t_ns: int, frame_id: str):
    """A distortion-free ``sensor_msgs/CameraInfo`` of a pinhole camera ``K`` (3, 3)
    (``D`` zero plumb_bob, ``R = I``, ``P = [K | 0]``, no binning, no ROI)."""
    types = typestore().types
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return types[CAMERA_INFO](
        header=_header(t_ns, frame_id), height=int(height), width=int(width),
        distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1).copy(),
        r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False),
    )


def matrix_to_pose(T: np.ndarray):
    """(4, 4) -> ``geometry_msgs/Pose`` (quaternion ``(x, y, z, w)`` with ``w >= 0``)."""
    import torch

    from ..geometry.lie import matrix_to_quat_xyzw

    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"T: expected a finite (4, 4) matrix, got shape {T.shape}")
    types = typestore().types
    x, y, z, w = matrix_to_quat_xyzw(torch.as_tensor(T[:3, :3])).tolist()
    return types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=float(T[0, 3]), y=float(T[1, 3]),
                                                  z=float(T[2, 3])),
        orientation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
    )


@dataclass(frozen=True)
class DetectionOut:
    """One object to write into a ``Detection3DArray``.

    Attributes:
        class_id: the hypothesis' class id.
        T_cam_obj: (4, 4) pose, metres (the hypothesis' ``pose.pose``).
        score: the hypothesis' score.
        bbox_min_m, bbox_max_m: (3,) the object-frame axis-aligned box of the mesh; the
            message's ``bbox`` is that box placed at the pose (as the node writes it).
            None: a zero-size box at the pose.
        id: ``Detection3D.id``.
    """

    class_id: str
    T_cam_obj: np.ndarray
    score: float = 1.0
    bbox_min_m: np.ndarray | None = None
    bbox_max_m: np.ndarray | None = None
    id: str = ""


def detections_msg(detections: Sequence[DetectionOut], t_ns: int, frame_id: str):
    """A ``vision_msgs/Detection3DArray``: one single-hypothesis ``Detection3D`` per entry."""
    types = typestore().types
    out = []
    for d in detections:
        T = np.asarray(d.T_cam_obj, dtype=np.float64)
        lo = np.zeros(3) if d.bbox_min_m is None else np.asarray(d.bbox_min_m, dtype=np.float64)
        hi = np.zeros(3) if d.bbox_max_m is None else np.asarray(d.bbox_max_m, dtype=np.float64)
        T_box = T.copy()
        T_box[:3, 3] = T[:3, :3] @ ((lo + hi) / 2) + T[:3, 3]
        size = hi - lo
        hyp = types["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=types["vision_msgs/msg/ObjectHypothesis"](class_id=d.class_id,
                                                                 score=float(d.score)),
            pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=matrix_to_pose(T),
                                                               covariance=np.zeros(36)),
        )
        bbox = types["vision_msgs/msg/BoundingBox3D"](
            center=matrix_to_pose(T_box),
            size=types["geometry_msgs/msg/Vector3"](x=float(size[0]), y=float(size[1]),
                                                    z=float(size[2])),
        )
        out.append(types["vision_msgs/msg/Detection3D"](header=_header(t_ns, frame_id),
                                                        results=[hyp], bbox=bbox, id=d.id))
    return types[DETECTIONS](header=_header(t_ns, frame_id), detections=out)


def pose_stamped_msg(T: np.ndarray, t_ns: int, frame_id: str):
    """A ``geometry_msgs/PoseStamped`` of ``T`` (4, 4)."""
    return typestore().types[POSE_STAMPED](header=_header(t_ns, frame_id), pose=matrix_to_pose(T))


def tf_msg(transforms: Sequence[tuple[str, str, np.ndarray]], t_ns: int):
    """A ``tf2_msgs/TFMessage`` of ``(parent_frame, child_frame, T_parent_child)`` triples."""
    types = typestore().types
    out = []
    for parent, child, T in transforms:
        pose = matrix_to_pose(T)
        p = pose.position
        out.append(types["geometry_msgs/msg/TransformStamped"](
            header=_header(t_ns, parent), child_frame_id=child,
            transform=types["geometry_msgs/msg/Transform"](
                translation=types["geometry_msgs/msg/Vector3"](x=p.x, y=p.y, z=p.z),
                rotation=pose.orientation),
        ))
    return types[TF](transforms=out)
