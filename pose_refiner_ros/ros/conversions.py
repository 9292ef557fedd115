"""Messages <-> the core's types: the only place that knows both.

Images become numpy arrays (RGB uint8 ``(H, W, 3)``, depth float32 metres ``(H, W)``),
``CameraInfo`` becomes a :class:`~pose_refiner_ros.geometry.camera.CameraModel`, poses
become ``(4, 4)`` float64 ``T_cam_obj`` matrices (ROS quaternions are ``(x, y, z, w)``,
the package's order), and refinement results become ``vision_msgs``, ``geometry_msgs``
and TF messages. Every reader raises ``ValueError`` saying which field is wrong, what
was expected and what was received; the node turns that into a throttled warning and a
diagnostics count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.camera import CameraModel, RegionOfInterest
from ..geometry.lie import matrix_to_quat_xyzw, quat_xyzw_to_matrix

#: Colour encodings read by :func:`image_to_rgb`: channels and the RGB channel order.
COLOR_ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
#: Depth encodings read by :func:`depth_to_m`: numpy dtype and the factor to metres.
DEPTH_ENCODINGS: dict[str, tuple[str, float]] = {"16UC1": ("u2", 1e-3), "32FC1": ("f4", 1.0)}


def _pixels(msg, what: str, channels: int, itemsize: int) -> np.ndarray:
    """The ``(H, W, channels)`` bytes of an image message, honouring ``step`` padding."""
    H, W, step = int(msg.height), int(msg.width), int(msg.step)
    if H == 0 or W == 0:
        raise ValueError(f"{what}: empty image ({W}x{H}, encoding {msg.encoding!r})")
    row = W * channels * itemsize
    if step < row:
        raise ValueError(
            f"{what}: step {step} is shorter than a row of {W} {msg.encoding} pixels ({row} bytes)"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * H:
        raise ValueError(
            f"{what}: data has {data.size} bytes, expected step * height = "
            f"{step} * {H} = {step * H}"
        )
    return data[: step * H].reshape(H, step)[:, :row]


def image_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) -> ``(H, W, 3)`` uint8 RGB.

    Alpha is ignored; mono8 is replicated to three channels. Always a new array.
    """
    enc = COLOR_ENCODINGS.get(msg.encoding)
    if enc is None:
        raise ValueError(
            f"image: unsupported encoding {msg.encoding!r}; expected one of "
            f"{sorted(COLOR_ENCODINGS)}"
        )
    channels, order = enc
    rows = _pixels(msg, "image", channels, 1)
    px = rows.reshape(msg.height, msg.width, channels)
    return np.ascontiguousarray(px[..., list(order)])


def depth_to_m(msg) -> np.ndarray:
    """``sensor_msgs/Image`` depth (16UC1 millimetres or 32FC1 metres) -> ``(H, W)``
    float32 metres; NaN, inf, negative values and 0 all become 0 (no measurement)."""
    enc = DEPTH_ENCODINGS.get(msg.encoding)
    if enc is None:
        raise ValueError(
            f"depth: unsupported encoding {msg.encoding!r}; expected one of "
            f"{sorted(DEPTH_ENCODINGS)} (millimetres / metres)"
        )
    kind, to_m = enc
    rows = _pixels(msg, "depth", 1, np.dtype(kind).itemsize)
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    depth = np.ascontiguousarray(rows).view(dtype).reshape(msg.height, msg.width)
    depth_m = depth.astype(np.float32) * np.float32(to_m)
    depth_m[~np.isfinite(depth_m) | (depth_m < 0)] = 0.0
    return depth_m


def rgb_to_image(image_rgb: np.ndarray, header, encoding: str = "rgb8"):
    """``(H, W, 3)`` uint8 RGB -> ``sensor_msgs/Image`` (``rgb8`` or ``bgr8``)."""
    from sensor_msgs.msg import Image

    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image_rgb: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    if encoding == "bgr8":
        img = img[..., ::-1]
    elif encoding != "rgb8":
        raise ValueError(f"encoding: expected 'rgb8' or 'bgr8', got {encoding!r}")
    msg = Image(
        header=header,
        height=img.shape[0],
        width=img.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=3 * img.shape[1],
    )
    msg.data = np.ascontiguousarray(img).tobytes()
    return msg


def depth_m_to_image(depth_m: np.ndarray, header, encoding: str = "32FC1"):
    """``(H, W)`` metres -> ``sensor_msgs/Image`` (``32FC1`` metres or ``16UC1`` mm)."""
    from sensor_msgs.msg import Image

    d = np.asarray(depth_m, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth_m: expected (H, W), got {d.shape}")
    if encoding == "16UC1":
        mm = np.round(np.where(np.isfinite(d), d, 0.0) * 1000)
        data = np.clip(mm, 0, 65535).astype("<u2")
    elif encoding == "32FC1":
        data = d.astype("<f4")
    else:
        raise ValueError(f"encoding: expected '32FC1' or '16UC1', got {encoding!r}")
    msg = Image(
        header=header,
        height=d.shape[0],
        width=d.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=data.itemsize * d.shape[1],
    )
    msg.data = np.ascontiguousarray(data).tobytes()
    return msg


def camera_info_to_model(msg) -> CameraModel:
    """``sensor_msgs/CameraInfo`` -> a validated :class:`CameraModel` of the published
    image (binning and ROI applied, distortion kept for ``rectify``)."""
    roi = RegionOfInterest(
        int(msg.roi.x_offset),
        int(msg.roi.y_offset),
        int(msg.roi.width),
        int(msg.roi.height),
        bool(msg.roi.do_rectify),
    )
    try:
        cam = CameraModel.from_camera_info(
            width=int(msg.width),
            height=int(msg.height),
            K=np.asarray(msg.k, dtype=np.float64),
            D=np.asarray(msg.d, dtype=np.float64),
            distortion_model=msg.distortion_model or "plumb_bob",
            binning_x=int(msg.binning_x),
            binning_y=int(msg.binning_y),
            roi=roi,
            P=np.asarray(msg.p, dtype=np.float64),
        )
        return cam.validate()
    except ValueError as e:
        raise ValueError(f"camera_info: {e}") from None


def make_camera_info(K: np.ndarray, width: int, height: int, header):
    """A distortion-free ``sensor_msgs/CameraInfo`` for a pinhole ``K`` (3, 3)."""
    from sensor_msgs.msg import CameraInfo

    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(
        header=header,
        width=int(width),
        height=int(height),
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=K.reshape(-1).tolist(),
        r=np.eye(3).reshape(-1).tolist(),
        p=P.reshape(-1).tolist(),
    )


# -- poses ---------------------------------------------------------------------------------
def pose_to_matrix(pose, what: str = "pose") -> np.ndarray:
    """``geometry_msgs/Pose`` -> ``(4, 4)`` float64. The quaternion ``(x, y, z, w)`` is
    normalised; a non-finite position or quaternion, or a zero-norm quaternion, raises."""
    p, q = pose.position, pose.orientation
    t = np.array([p.x, p.y, p.z], dtype=np.float64)
    quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{what}: position is not finite: {t.tolist()}")
    if not np.all(np.isfinite(quat)):
        raise ValueError(f"{what}: quaternion (x, y, z, w) is not finite: {quat.tolist()}")
    norm = float(np.linalg.norm(quat))
    if norm < 1e-6:
        raise ValueError(
            f"{what}: quaternion (x, y, z, w) has zero norm: {quat.tolist()}; "
            "expected a unit quaternion (identity is (0, 0, 0, 1))"
        )
    T = np.eye(4)
    T[:3, :3] = quat_xyzw_to_matrix(torch.from_numpy(quat / norm)).numpy()
    T[:3, 3] = t
    return T


def _quat_xyzw(T: np.ndarray) -> np.ndarray:
    return matrix_to_quat_xyzw(torch.as_tensor(np.asarray(T, dtype=np.float64)[:3, :3])).numpy()


def matrix_to_pose(T: np.ndarray):
    """``(4, 4)`` -> ``geometry_msgs/Pose``."""
    from geometry_msgs.msg import Point, Pose, Quaternion

    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"T: expected a finite (4, 4) matrix, got shape {T.shape}")
    q = _quat_xyzw(T)
    return Pose(
        position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def make_pose_stamped(header, T: np.ndarray):
    from geometry_msgs.msg import PoseStamped

    return PoseStamped(header=header, pose=matrix_to_pose(T))


def make_pose_array(header, Ts):
    from geometry_msgs.msg import PoseArray

    return PoseArray(header=header, poses=[matrix_to_pose(T) for T in Ts])


def make_transform_stamped(header, child_frame_id: str, T: np.ndarray):
    """``T_parent_child`` (4, 4) -> ``geometry_msgs/TransformStamped`` (parent =
    ``header.frame_id``)."""
    from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3

    T = np.asarray(T, dtype=np.float64)
    q = _quat_xyzw(T)
    return TransformStamped(
        header=header,
        child_frame_id=child_frame_id,
        transform=Transform(
            translation=Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
        ),
    )


# -- detections ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoarseObject:
    """One coarse object read from the detections.

    Attributes:
        class_id: the hypothesis' class id (names a registered mesh).
        T_cam_obj: (4, 4) float64 coarse pose in the image's camera frame, metres.
        score: the detector's score (0 when it gave none).
        index: position of the detection in its message (names its TF frame).
    """

    class_id: str
    T_cam_obj: np.ndarray
    score: float
    index: int


@dataclass(frozen=True)
class Rejection:
    """An object or message that was skipped: ``reason`` is a short key counted in the
    diagnostics (``bad_pose``, ``wrong_frame``, ...), ``message`` says what was wrong."""

    reason: str
    message: str


def detections_to_objects(msg, frame_id: str | None = None):
    """``vision_msgs/Detection3DArray`` -> ``(objects, rejections)``.

    Per detection, the hypothesis with the highest score is taken: its ``class_id`` and
    its ``pose.pose`` (the coarse ``T_cam_obj``). A detection is rejected (and reported
    in ``rejections``, the others kept) when it has no hypothesis (``no_hypothesis``),
    an empty class id (``no_class_id``), a non-finite position or a NaN / zero-norm
    quaternion (``bad_pose``), an object at or behind the camera (``behind_camera``),
    or a header in another frame than ``frame_id`` (``wrong_frame``; empty frame ids
    are taken to be the image's).
    """
    objects, rejections = [], []
    array_frame = msg.header.frame_id
    for i, det in enumerate(msg.detections):
        det_frame = det.header.frame_id or array_frame
        if frame_id is not None and det_frame and det_frame != frame_id:
            rejections.append(
                Rejection(
                    "wrong_frame",
                    f"detection {i}: frame {det_frame!r}, but the "
                    f"image is in {frame_id!r}; detections must be in the image's "
                    "camera frame",
                )
            )
            continue
        if len(det.results) == 0:
            rejections.append(Rejection("no_hypothesis", f"detection {i}: no results (hypotheses)"))
            continue
        best = max(
            det.results,
            key=lambda r: r.hypothesis.score if np.isfinite(r.hypothesis.score) else -np.inf,
        )
        cid = best.hypothesis.class_id
        if not cid:
            rejections.append(Rejection("no_class_id", f"detection {i}: empty class_id"))
            continue
        try:
            T = pose_to_matrix(best.pose.pose, f"detection {i} ({cid!r}) pose")
        except ValueError as e:
            rejections.append(Rejection("bad_pose", str(e)))
            continue
        if T[2, 3] <= 1e-3:
            rejections.append(
                Rejection(
                    "behind_camera",
                    f"detection {i} ({cid!r}): z = {T[2, 3]:.3f} m; "
                    "the object must be in front of the camera (z > 0, optical frame)",
                )
            )
            continue
        score = float(best.hypothesis.score) if np.isfinite(best.hypothesis.score) else 0.0
        objects.append(CoarseObject(cid, T, score, i))
    return objects, rejections


def make_detection(
    header,
    class_id: str,
    T_cam_obj: np.ndarray,
    score: float,
    bbox_min_m: np.ndarray,
    bbox_max_m: np.ndarray,
    det_id: str = "",
    covariance: np.ndarray | None = None,
):
    """One ``vision_msgs/Detection3D``: the refined pose as the hypothesis' pose and the
    mesh's axis-aligned (object-frame) bounding box, placed at that pose, as ``bbox``.
    ``covariance``: the pose's (6, 6) covariance in ROS's order (``RefineResult``), written
    row-major into the hypothesis' ``PoseWithCovariance``; None leaves it all zeros (no
    estimate)."""
    from geometry_msgs.msg import PoseWithCovariance, Vector3
    from vision_msgs.msg import (
        BoundingBox3D,
        Detection3D,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
    )

    T = np.asarray(T_cam_obj, dtype=np.float64)
    lo, hi = np.asarray(bbox_min_m, dtype=np.float64), np.asarray(bbox_max_m, dtype=np.float64)
    T_box = T.copy()
    T_box[:3, 3] = T[:3, :3] @ ((lo + hi) / 2) + T[:3, 3]
    size = hi - lo
    hyp = ObjectHypothesisWithPose(
        hypothesis=ObjectHypothesis(class_id=class_id, score=float(score)),
        pose=PoseWithCovariance(pose=matrix_to_pose(T)),
    )
    if covariance is not None:
        hyp.pose.covariance = [float(x) for x in np.asarray(covariance, np.float64).reshape(36)]
    return Detection3D(
        header=header,
        results=[hyp],
        id=det_id,
        bbox=BoundingBox3D(
            center=matrix_to_pose(T_box),
            size=Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2])),
        ),
    )


def make_detection_array(header, detections):
    from vision_msgs.msg import Detection3DArray

    return Detection3DArray(header=header, detections=list(detections))


def make_coarse_detections(header, objects):
    """``vision_msgs/Detection3DArray`` of coarse ``(class_id, T_cam_obj, score)``
    triples (what a coarse detector publishes; used by the demo and the tests)."""
    from geometry_msgs.msg import PoseWithCovariance
    from vision_msgs.msg import (
        Detection3D,
        Detection3DArray,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
    )

    dets = []
    for cid, T, score in objects:
        hyp = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=cid, score=float(score)),
            pose=PoseWithCovariance(pose=matrix_to_pose(T)),
        )
        dets.append(Detection3D(header=header, results=[hyp]))
    return Detection3DArray(header=header, detections=dets)
