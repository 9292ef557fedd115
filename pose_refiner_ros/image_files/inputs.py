"""Reading the input files of ``pose-refiner refine``, checked field by field.

``camera.json``: ``{"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "D": [...],
"distortion_model": "plumb_bob"}`` (``K`` may also be 9 numbers row-major; ``D`` and
``distortion_model`` optional).

``initial.json``: a list of objects, each ``{"class_id": ..., "T_cam_obj": 4x4}`` or
``{"class_id": ..., "position": [x, y, z], "orientation_xyzw": [x, y, z, w]}``: metres,
``T_cam_obj`` maps object points into the camera's optical frame (x right, y down, z
forward); quaternions in ROS order (x, y, z, w).

Every problem raises :class:`InputError` naming the file, the field (``[1].class_id``)
and what was expected and received, never a bare ``KeyError``.
"""

from __future__ import annotations

from collections.abc import Container
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["InputError", "read_json", "read_camera", "read_poses", "read_image", "read_depth"]


class InputError(ValueError):
    """An input file that cannot be used; the message names the file and the field."""


def read_json(path: str | os.PathLike, option: str):
    """The JSON document in ``path`` (``option`` names the command-line option)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(f"{option} {path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise InputError(f"{option} {path}: not a JSON text file ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{option} {path}: not valid JSON: {e.msg} at line {e.lineno}, "
                         f"column {e.colno}") from None


def _numbers(value, shape: tuple, where: str) -> np.ndarray:
    """``value`` as a finite float array of ``shape``, or an InputError naming ``where``."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        a = None
    if a is None or a.shape != shape or not np.all(np.isfinite(a)):
        got = f"shape {a.shape}" if a is not None and a.shape != shape else repr(value)
        raise InputError(f"{where}: expected finite numbers of shape {shape}, got {got}"[:300])
    return a


def read_camera(path: str | os.PathLike, width: int, height: int):
    """The :class:`~pose_refiner_ros.geometry.camera.CameraModel` of a ``camera.json``
    for an image of ``width`` x ``height`` pixels."""
    from ..geometry.camera import CameraModel

    doc = read_json(path, "--intrinsics")
    where = f"--intrinsics {path}"
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected an object {{\"K\": 3x3, ...}}, got "
                         f"{type(doc).__name__}")
    if "K" not in doc:
        raise InputError(f"{where}: no field 'K' (the 3x3 intrinsics [[fx, 0, cx], [0, fy, cy], "
                         f"[0, 0, 1]], pixels); fields found: {', '.join(doc) or 'none'}")
    K = np.asarray(doc["K"], dtype=object)
    K = _numbers(doc["K"], (9,) if K.ndim == 1 else (3, 3), f"{where}: K").reshape(3, 3)
    D = doc.get("D", [])
    if not isinstance(D, list):
        raise InputError(f"{where}: D: expected a list of numbers, got {D!r}"[:300])
    D = _numbers(D, (len(D),), f"{where}: D")
    model = doc.get("distortion_model", "plumb_bob")
    if not isinstance(model, str):
        raise InputError(f"{where}: distortion_model: expected a string, got {model!r}")
    try:
        return CameraModel.from_camera_info(width=width, height=height, K=K, D=D,
                                            distortion_model=model).validate()
    except ValueError as e:
        raise InputError(f"{where}: {str(e).replace('CameraModel.', '')}") from None


def _pose(entry: dict, where: str) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    if "T_cam_obj" in entry:
        T = _numbers(entry["T_cam_obj"], (4, 4), f"{where}.T_cam_obj")
        if not np.allclose(T[3], [0, 0, 0, 1]):
            raise InputError(f"{where}.T_cam_obj: the last row must be [0, 0, 0, 1], "
                             f"got {T[3].tolist()}")
        R = T[:3, :3]
        if not (np.allclose(R.T @ R, np.eye(3), atol=1e-4) and np.linalg.det(R) > 0):
            raise InputError(f"{where}.T_cam_obj: the upper-left 3x3 block must be a rotation "
                             "(orthonormal, determinant +1)")
        return T
    if "position" in entry or "orientation_xyzw" in entry:
        missing = [k for k in ("position", "orientation_xyzw") if k not in entry]
        if missing:
            other = "orientation_xyzw" if missing[0] == "position" else "position"
            raise InputError(f"{where}: has '{other}' but no '{missing[0]}'")
        p = _numbers(entry["position"], (3,), f"{where}.position")
        q = _numbers(entry["orientation_xyzw"], (4,), f"{where}.orientation_xyzw")
        if np.linalg.norm(q) < 1e-9:
            raise InputError(f"{where}.orientation_xyzw: expected a non-zero quaternion "
                             "(x, y, z, w)")
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat(q).as_matrix()  # scipy's order is (x, y, z, w) too
        T[:3, 3] = p
        return T
    raise InputError(f"{where}: no pose: expected 'T_cam_obj' (4x4) or 'position' (x, y, z) "
                     f"+ 'orientation_xyzw' (x, y, z, w); fields found: "
                     f"{', '.join(entry) or 'none'}")


def read_poses(path: str | os.PathLike, class_ids: Container[str]) -> list[tuple[str, np.ndarray]]:
    """``[(class_id, T_cam_obj (4, 4))]`` of an ``initial.json``; every class must be in
    ``class_ids`` (the registered objects)."""
    doc = read_json(path, "--poses")
    where = f"--poses {path}"
    if not isinstance(doc, list):
        raise InputError(f"{where}: expected a list of objects [{{\"class_id\": ..., "
                         f"\"T_cam_obj\": 4x4}}, ...], got {type(doc).__name__}")
    out = []
    for i, entry in enumerate(doc):
        at = f"{where}: [{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{at}: expected an object with class_id and a pose, got "
                             f"{entry!r}"[:300])
        if "class_id" not in entry:
            raise InputError(f"{at}: no field 'class_id'; fields found: "
                             f"{', '.join(entry) or 'none'}")
        cid = entry["class_id"]
        if not isinstance(cid, str):
            raise InputError(f"{at}.class_id: expected a string, got {cid!r}")
        if cid not in class_ids:
            raise InputError(f"{at}.class_id: {cid!r} is not in --objects; registered: "
                             f"{', '.join(sorted(class_ids))}")
        out.append((cid, _pose(entry, at)))
    return out


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file OpenCV reads (PNG, JPEG, ...)."""
    import cv2

    if not Path(path).is_file():
        raise InputError(f"--image {path}: no such file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"--image {path}: not an image OpenCV can read (PNG, JPEG, ...)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_depth(path: str | os.PathLike, scale_m: float, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 depth in metres (0: no data) of a single-channel image whose units
    are ``scale_m`` metres, registered to the colour image of ``shape`` (H, W)."""
    import cv2

    if not Path(path).is_file():
        raise InputError(f"--depth {path}: no such file")
    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if d is None or d.ndim != 2:
        raise InputError(f"--depth {path}: expected a single-channel depth image "
                         "(16-bit PNG)" + ("" if d is None else f", got shape {d.shape}"))
    if d.shape != tuple(shape):
        raise InputError(f"--depth {path}: {d.shape[1]}x{d.shape[0]} pixels, but --image is "
                         f"{shape[1]}x{shape[0]}; the depth must be registered to the image")
    return d.astype(np.float32) * float(scale_m)
