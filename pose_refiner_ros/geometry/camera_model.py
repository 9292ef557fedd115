"""The camera of one published ROS image (:class:`CameraModel`, numpy): the fields of a
``sensor_msgs/CameraInfo`` (``K`` of the full-resolution sensor, binning, region of
interest, lens distortion) turned into the intrinsics of the image as published, and
OpenCV's undistortion of images and points, so that everything downstream sees a pinhole
camera with that ``K``. Pixel and axis conventions: :mod:`.camera`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

__all__ = ["RegionOfInterest", "CameraModel", "DISTORTION_MODELS"]

# Distortion models of sensor_msgs/CameraInfo (see sensor_msgs/distortion_models.hpp)
# and the numbers of coefficients OpenCV accepts for each. An empty D means none.
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (4, 5, 8, 12, 14),  # k1 k2 p1 p2 [k3 [k4 k5 k6 [s1..s4 [tx ty]]]]
    "rational_polynomial": (4, 5, 8, 12, 14),  # ROS publishes 8
    "equidistant": (4,),  # OpenCV fisheye: k1 k2 k3 k4
}


@dataclass(frozen=True)
class RegionOfInterest:
    """``sensor_msgs/RegionOfInterest``: the window of the full-resolution (unbinned)
    sensor that the image shows. All zeros means the full frame."""

    x_offset: int = 0
    y_offset: int = 0
    width: int = 0
    height: int = 0
    do_rectify: bool = False

    @property
    def is_full_frame(self) -> bool:
        return self.x_offset == self.y_offset == self.width == self.height == 0


def _matrix(name: str, value, shape: tuple[int, int]) -> np.ndarray:
    a = np.array(value, dtype=np.float64)
    if a.size != shape[0] * shape[1]:
        raise ValueError(
            f"CameraModel.{name} must have {shape[0] * shape[1]} entries (a {shape[0]}x"
            f"{shape[1]} matrix, row-major as in CameraInfo), got shape {a.shape}"
        )
    a = a.reshape(shape)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class CameraModel:
    """The camera of one published image (numpy, float64).

    Build it with :meth:`from_camera_info` from the fields of a ``CameraInfo``; the
    constructor takes the intrinsics of the published image directly.

    Attributes:
        width, height: size of the published image, pixels.
        K: ``(3, 3)`` intrinsics of the published image (binning and ROI applied),
            pixels. After :meth:`rectify` this is the pinhole camera of the image.
        D: ``(n,)`` distortion coefficients (dimensionless, in normalised image
            coordinates, hence unchanged by binning and ROI); empty means none.
        distortion_model: ``"plumb_bob"``, ``"rational_polynomial"`` or
            ``"equidistant"`` (the ``CameraInfo`` names).
        binning_x, binning_y: the binning the image was published with (>= 1),
            kept for reference; already applied to ``K``.
        roi: the raw ROI of the message, in full-resolution sensor pixels, kept for
            reference; already applied to ``K``. ``do_rectify`` is not interpreted.
        P: ``(3, 4)`` projection matrix of the rectified image with binning and ROI
            applied like ``K``, or None when the message had none.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "plumb_bob"
    binning_x: int = 1
    binning_y: int = 1
    roi: RegionOfInterest = field(default_factory=RegionOfInterest)
    P: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        # Arrays are stored read-only so that the cached rectification maps stay valid.
        object.__setattr__(self, "K", _matrix("K", self.K, (3, 3)))
        D = np.array(self.D, dtype=np.float64).reshape(-1)
        D.setflags(write=False)
        object.__setattr__(self, "D", D)
        if self.P is not None:
            object.__setattr__(self, "P", _matrix("P", self.P, (3, 4)))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_camera_info(
        cls,
        *,
        width: int,
        height: int,
        K: Sequence[float] | np.ndarray,
        D: Sequence[float] | np.ndarray = (),
        distortion_model: str = "plumb_bob",
        binning_x: int = 0,
        binning_y: int = 0,
        roi: RegionOfInterest | Mapping | None = None,
        P: Sequence[float] | np.ndarray | None = None,
        image_is_rectified: bool = False,
        match_image_geometry: bool = False,
    ) -> CameraModel:
        """The camera of the image as published, from ``CameraInfo`` fields (REP-104).

        ``width``, ``height``, ``K`` and ``P`` describe the full-resolution sensor;
        the published image shows the ROI (all zeros: the full frame) binned by
        ``binning_x`` x ``binning_y`` (0 or 1: none), so it is ``roi.width //
        binning_x`` pixels wide, and a full-resolution coordinate ``u_full`` maps to
        ``u = (u_full - x_offset + 0.5) / binning_x - 0.5`` (pixel centres at integers:
        binned pixel ``j`` averages sensor pixels ``b j .. b j + b - 1``). ``K`` and
        ``P`` are transformed by that map.

        Args:
            width, height: ``CameraInfo.width/height``, full-resolution pixels.
            K: ``CameraInfo.k``, 9 entries row-major or ``(3, 3)``.
            D: ``CameraInfo.d``.
            distortion_model: ``CameraInfo.distortion_model``.
            binning_x, binning_y: ``CameraInfo.binning_x/y``.
            roi: ``CameraInfo.roi`` as a :class:`RegionOfInterest` or a mapping with
                its field names; None for the full frame.
            P: ``CameraInfo.p``, 12 entries or ``(3, 4)``; an all-zero P counts as
                none.
            image_is_rectified: True when the image is already rectified (e.g.
                image_proc's ``image_rect``): the intrinsics are then ``P``'s left
                3x3 block and there is no distortion.
            match_image_geometry: if True, use ROS image_geometry's
                ``(cx - x_offset) / binning_x``, which ignores the half-pixel shift of
                binned pixel centres (it differs by ``(b - 1) / (2 b)`` pixels, e.g.
                0.25 px for 2x2 binning); without binning both agree.
        """
        if roi is None:
            roi = RegionOfInterest()
        elif isinstance(roi, Mapping):
            roi = RegionOfInterest(**roi)
        bx, by = max(1, int(binning_x)), max(1, int(binning_y))
        raw_w, raw_h = (width, height) if roi.is_full_frame else (roi.width, roi.height)
        shift = 0.0 if match_image_geometry else 0.5
        # Full-resolution pixels -> published pixels.
        A = np.array(
            [
                [1.0 / bx, 0.0, (shift - roi.x_offset) / bx - shift],
                [0.0, 1.0 / by, (shift - roi.y_offset) / by - shift],
                [0.0, 0.0, 1.0],
            ]
        )
        P_full = None if P is None else _matrix("P", P, (3, 4))
        if P_full is not None and not P_full.any():
            P_full = None
        if image_is_rectified:
            if P_full is None:
                raise ValueError(
                    "CameraModel.from_camera_info: image_is_rectified=True needs the "
                    "projection matrix P of the CameraInfo, got none (or all zeros); pass "
                    "P, or subscribe to the raw image and let CameraModel.rectify it"
                )
            K_full, D = P_full[:, :3], ()
        else:
            K_full = _matrix("K", K, (3, 3))
        return cls(
            width=int(raw_w) // bx,
            height=int(raw_h) // by,
            K=A @ K_full,
            D=D,
            distortion_model=distortion_model,
            binning_x=bx,
            binning_y=by,
            roi=roi,
            P=None if P_full is None else A @ P_full,
        )

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def is_distorted(self) -> bool:
        """True when any distortion coefficient is non-zero."""
        return bool(np.any(self.D != 0.0))

    def K_tensor(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """``K`` as a ``(3, 3)`` tensor."""
        return torch.tensor(self.K, dtype=dtype, device=device)

    def validate(self) -> CameraModel:
        """Check that the camera can be used; return it, or raise ValueError naming
        the field, what was expected and what was received."""
        for name in ("width", "height"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"CameraModel.{name} must be > 0, got {getattr(self, name)} (the "
                    f"published {name} is CameraInfo.{name}, or roi.{name} when an ROI "
                    "is set, divided by the binning); check the CameraInfo"
                )
        if not np.all(np.isfinite(self.K)):
            raise ValueError(f"CameraModel.K contains NaN or inf: {self.K.tolist()}")
        if not self.K.any():
            raise ValueError(
                "CameraModel.K is all zeros: the camera is not calibrated (CameraInfo.k "
                "unset); calibrate it (e.g. ros2 run camera_calibration cameracalibrator) "
                "or have the driver load a calibration file"
            )
        for (i, j), what in (((0, 0), "fx"), ((1, 1), "fy")):
            if not self.K[i, j] > 0:
                raise ValueError(
                    f"CameraModel.K[{i}, {j}] ({what}) must be > 0 pixels, got {self.K[i, j]}"
                )
        if not np.allclose(self.K[2], [0.0, 0.0, 1.0]):
            raise ValueError(
                f"CameraModel.K's last row must be [0, 0, 1], got {self.K[2].tolist()}"
            )
        if not np.all(np.isfinite(self.D)):
            raise ValueError(f"CameraModel.D contains NaN or inf: {self.D.tolist()}")
        if self.is_distorted:
            if self.distortion_model not in DISTORTION_MODELS:
                raise ValueError(
                    f"CameraModel.distortion_model {self.distortion_model!r} is not "
                    f"supported with non-zero D; expected one of {sorted(DISTORTION_MODELS)}"
                )
            counts = DISTORTION_MODELS[self.distortion_model]
            if len(self.D) not in counts:
                raise ValueError(
                    f"CameraModel.D has {len(self.D)} coefficients, but "
                    f"{self.distortion_model!r} expects {' or '.join(map(str, counts))}"
                )
        if self.P is not None and not np.all(np.isfinite(self.P)):
            raise ValueError(f"CameraModel.P contains NaN or inf: {self.P.tolist()}")
        return self

    # -- distortion ----------------------------------------------------------------

    @property
    def _fisheye(self) -> bool:
        return self.distortion_model == "equidistant"

    def _rectify_maps(self) -> tuple[np.ndarray, np.ndarray]:
        maps = self._cache.get("rectify")
        if maps is None:
            self.validate()
            size = (self.width, self.height)
            if self._fisheye:
                maps = cv2.fisheye.initUndistortRectifyMap(
                    self.K, self.D, np.eye(3), self.K, size, cv2.CV_32FC1
                )
            else:
                maps = cv2.initUndistortRectifyMap(
                    self.K, self.D, None, self.K, size, cv2.CV_32FC1
                )
            self._cache["rectify"] = maps
        return maps

    def rectify(self, image: np.ndarray, interpolation: str = "linear") -> np.ndarray:
        """The image undistorted to the pinhole camera ``K`` (same size).

        The OpenCV maps are computed on the first call and cached. Pixels whose source
        falls outside the raw image are 0. An undistorted camera returns ``image``
        itself (not a copy).

        Args:
            image: ``(height, width)`` or ``(height, width, C)`` array, any dtype
                OpenCV remaps (uint8, uint16, float32, ...).
            interpolation: ``"linear"`` for colour, ``"nearest"`` for depth, masks and
                labels (no mixing of values across edges).
        """
        if tuple(image.shape[:2]) != (self.height, self.width):
            raise ValueError(
                f"image must have shape ({self.height}, {self.width}[, C]) to match the "
                f"camera, got {tuple(image.shape)}"
            )
        flags = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
        if interpolation not in flags:
            raise ValueError(
                f"interpolation must be 'linear' or 'nearest', got {interpolation!r}"
            )
        if not self.is_distorted:
            return image
        map_x, map_y = self._rectify_maps()
        return cv2.remap(
            image, map_x, map_y, flags[interpolation], borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    def undistort_points(self, uv_raw: np.ndarray) -> np.ndarray:
        """Map pixels of the raw (distorted) image to the rectified image.

        Args:
            uv_raw: ``(N, 2)`` pixel coordinates in the raw image.
        Returns:
            ``(N, 2)`` pixel coordinates in the image :meth:`rectify` returns.
        """
        uv = np.asarray(uv_raw, dtype=np.float64).reshape(-1, 1, 2)
        if not self.is_distorted:
            return uv.reshape(-1, 2).copy()
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        if self._fisheye:
            out = cv2.fisheye.undistortPoints(uv, self.K, self.D, R=np.eye(3), P=self.K,
                                              criteria=criteria)
        else:
            out = cv2.undistortPoints(uv, self.K, self.D, P=self.K, criteria=criteria)
        return out.reshape(-1, 2)

    def distort_points(self, uv_rect: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`undistort_points`: rectified pixels to raw pixels.

        Args:
            uv_rect: ``(N, 2)`` pixel coordinates in the rectified image.
        Returns:
            ``(N, 2)`` pixel coordinates in the raw image.
        """
        uv = np.asarray(uv_rect, dtype=np.float64).reshape(-1, 2)
        if not self.is_distorted:
            return uv.copy()
        xy1 = np.concatenate([uv, np.ones((len(uv), 1))], axis=1) @ np.linalg.inv(self.K).T
        if self._fisheye:
            out = cv2.fisheye.distortPoints(xy1[:, None, :2], self.K, self.D)
        else:
            out, _ = cv2.projectPoints(xy1, np.zeros(3), np.zeros(3), self.K, self.D)
        return out.reshape(-1, 2)
