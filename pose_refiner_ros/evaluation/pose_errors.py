"""The per-pose errors of ``docs/protocol.md`` (numpy, float64): one estimate against
its ground truth. One record of them all per sample (``PoseMetrics``); the summaries over
many samples are in ``evaluation.metrics``, which re-exports this module's names.

Inputs, shared by every function:

- ``T_est``, ``T_gt``: ``(4, 4)`` poses ``T_cam_obj`` (object model frame -> camera
  optical frame, OpenCV axes, metres), estimated and ground truth.
- ``pts_obj``: ``(N, 3)`` model points (vertices or surface samples), object frame,
  metres.
- ``K``: ``(3, 3)`` pinhole intrinsics of the image, pixels.
- ``image_size``: ``(width, height)`` of the image, pixels.
- ``symmetries``: ``(S, 4, 4)`` object-frame transforms ``T_obj_obj'`` that leave the
  object looking the same, the identity included (a continuous axis discretised);
  None means ``[identity]``. An error "allows symmetry" by taking the minimum over the
  equivalent ground truths ``T_gt @ S[k]``.

Definitions (GCF supplementary eqs. 1-4, BOP, Hinterstoisser et al. for ADD/ADD-S):

- ``e_R`` (deg): geodesic angle ``|log(R_gt^T R_est)|``; ``e_t``:
  ``|t_gt - t_est| / |t_gt|``; ``t_err_m``: ``|t_gt - t_est|``. With symmetries both
  use the one symmetry that minimises ``e_R`` (ties: the smaller translation error),
  so that ``5deg5cm`` judges one consistent pose. For symmetries through the model
  origin (the usual case) the translation is unaffected.
- ``e_Rt``: ``ADD / |t_gt| * d_bbox / d_img`` (``d_bbox``: diagonal of the 2D box of
  the model projected at the ground truth; ``d_img``: image diagonal).
- ``e_P``: mean 2D distance of the projected model points, over ``d_bbox``.
- ``ADD``: mean distance of model points under the two poses; ``ADD-S``: mean over
  ground-truth points of the distance to the closest estimated point (BOP's ``adi``).
  ``ADD(-S)``: ADD-S for symmetric objects, ADD otherwise; correct below 10% of the
  diameter.
- ``MSSD`` (m) / ``MSPD`` (px): BOP's maximum symmetry-aware surface / projection
  distance: min over symmetries of the max over points.

Errors of symmetry-aware metrics quantise with the symmetry discretisation: a
continuous axis sampled every ``a`` degrees leaves up to ``a / 2`` degrees of ``e_R``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "PoseMetrics",
    "evaluate_pose",
    "ERROR_KEYS",
    "rotation_error_deg",
    "translation_error_rel",
    "translation_error_m",
    "rt_error",
    "reprojection_error",
    "bbox_diagonal_px",
    "add",
    "adds",
    "mssd",
    "mspd",
]

_MIN_DEPTH_M = 1e-6
_CHUNK = 1 << 20  # points per vectorised block when looping over symmetries


# -- input checks and small helpers ------------------------------------------------------


def _array(name: str, x, shape: tuple[int | None, ...]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != len(shape) or any(
        s is not None and s != d for s, d in zip(shape, a.shape, strict=True)
    ):
        expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {expected}, got {a.shape}")
    return a


def _poses(T_est, T_gt) -> tuple[np.ndarray, np.ndarray]:
    return _array("T_est", T_est, (4, 4)), _array("T_gt", T_gt, (4, 4))


def _symmetries(symmetries) -> np.ndarray:
    if symmetries is None:
        return np.eye(4)[None]
    S = _array("symmetries", symmetries, (None, 4, 4))
    if len(S) == 0:
        raise ValueError("symmetries must hold at least the identity, got an empty array")
    return S


def _points(pts_obj) -> np.ndarray:
    pts = _array("pts_obj", pts_obj, (None, 3))
    if len(pts) == 0:
        raise ValueError("pts_obj must hold at least one point, got none")
    return pts


def _transform(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``(..., 4, 4)`` x ``(N, 3)`` -> ``(..., N, 3)``."""
    return pts @ np.swapaxes(T[..., :3, :3], -1, -2) + T[..., None, :3, 3]


def _project(K: np.ndarray, pts_cam: np.ndarray) -> np.ndarray:
    """Pinhole projection; depths below 1e-6 m are clamped (finite, far away)."""
    z = np.maximum(pts_cam[..., 2:], _MIN_DEPTH_M)
    return (pts_cam[..., :2] / z) @ K[:2, :2].T + K[:2, 2]


def _gt_under_symmetries(T_gt: np.ndarray, symmetries) -> np.ndarray:
    """``(S, 4, 4)`` equivalent ground-truth poses ``T_gt @ S[k]``."""
    return T_gt @ _symmetries(symmetries)


def _per_symmetry(T_gt_sym: np.ndarray, pts: np.ndarray, fn) -> np.ndarray:
    """``fn(pts_gt_sym (s, N, 3)) -> (s, ...)`` evaluated over the symmetries in blocks
    (bounded memory for finely discretised continuous symmetries)."""
    step = max(1, _CHUNK // len(pts))
    return np.concatenate(
        [fn(_transform(T_gt_sym[i : i + step], pts)) for i in range(0, len(T_gt_sym), step)]
    )


def _surface_and_projection_errors(T_est, T_gt, pts, K, symmetries) -> np.ndarray:
    """``(S, 4)``: per symmetry, the mean and max 3D distance (m) and the mean and max
    2D distance (px) between the model points under ``T_est`` and ``T_gt @ S[k]``."""
    pts_est = _transform(T_est, pts)
    uv_est = _project(K, pts_est)

    def block(p: np.ndarray) -> np.ndarray:
        d3 = np.linalg.norm(p - pts_est, axis=-1)
        d2 = np.linalg.norm(_project(K, p) - uv_est, axis=-1)
        return np.stack([d3.mean(-1), d3.max(-1), d2.mean(-1), d2.max(-1)], axis=-1)

    return _per_symmetry(_gt_under_symmetries(T_gt, symmetries), pts, block)


def _angles_deg(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Geodesic angles between ``(..., 3, 3)`` rotations, as atan2(sin, cos) of the
    relative rotation: accurate near 0 and 180 degrees, unlike arccos of the trace."""
    R = np.swapaxes(R_a, -1, -2) @ R_b
    skew = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                     R[..., 1, 0] - R[..., 0, 1]], axis=-1)
    sin = 0.5 * np.linalg.norm(skew, axis=-1)
    cos = 0.5 * (np.trace(R, axis1=-2, axis2=-1) - 1.0)
    return np.degrees(np.arctan2(sin, cos))


def _best_symmetry(T_est: np.ndarray, T_gt: np.ndarray, symmetries) -> np.ndarray:
    """The equivalent ground truth ``T_gt @ S[k]`` with the smallest rotation error
    (ties within 1e-9 deg broken by the translation error)."""
    T_sym = _gt_under_symmetries(T_gt, symmetries)
    e_R = _angles_deg(T_sym[:, :3, :3], T_est[:3, :3])
    e_t = np.linalg.norm(T_sym[:, :3, 3] - T_est[:3, 3], axis=-1)
    candidates = np.flatnonzero(e_R <= e_R.min() + 1e-9)
    if candidates.size == 0:  # NaN estimate: every error is NaN anyway
        return T_sym[0]
    return T_sym[candidates[np.argmin(e_t[candidates])]]


# -- per-sample metrics ---------------------------------------------------------------


def rotation_error_deg(T_est, T_gt, symmetries=None) -> float:
    """``e_R``: geodesic rotation angle, degrees in [0, 180], min over symmetries."""
    T_est, T_gt = _poses(T_est, T_gt)
    return float(_angles_deg(_best_symmetry(T_est, T_gt, symmetries)[:3, :3], T_est[:3, :3]))


def translation_error_m(T_est, T_gt, symmetries=None) -> float:
    """``|t_gt - t_est|`` in metres, at the symmetry that minimises ``e_R``."""
    T_est, T_gt = _poses(T_est, T_gt)
    return float(np.linalg.norm(_best_symmetry(T_est, T_gt, symmetries)[:3, 3] - T_est[:3, 3]))


def translation_error_rel(T_est, T_gt, symmetries=None) -> float:
    """``e_t = |t_gt - t_est| / |t_gt|`` (dimensionless), at the symmetry that
    minimises ``e_R``."""
    T_est, T_gt = _poses(T_est, T_gt)
    return translation_error_m(T_est, T_gt, symmetries) / float(np.linalg.norm(T_gt[:3, 3]))


def add(T_est, T_gt, pts_obj, symmetries=None) -> float:
    """ADD (m): mean ``|T_gt S M_i - T_est M_i|`` over model points, min over symmetries
    (with ``symmetries=None`` the plain ADD)."""
    T_est, T_gt = _poses(T_est, T_gt)
    pts = _points(pts_obj)
    pts_est = _transform(T_est, pts)
    dists = _per_symmetry(
        _gt_under_symmetries(T_gt, symmetries), pts,
        lambda p: np.linalg.norm(p - pts_est, axis=-1).mean(-1),
    )
    return float(dists.min())


def adds(T_est, T_gt, pts_obj) -> float:
    """ADD-S (m): mean over the ground-truth-posed points of the distance to the closest
    estimated-posed point (nearest neighbour with a k-d tree, as BOP's ``adi``)."""
    T_est, T_gt = _poses(T_est, T_gt)
    pts = _points(pts_obj)
    if not (np.isfinite(T_est).all() and np.isfinite(T_gt).all()):
        return float("nan")
    nn_dist, _ = cKDTree(_transform(T_est, pts)).query(_transform(T_gt, pts), k=1)
    return float(nn_dist.mean())


def mssd(T_est, T_gt, pts_obj, symmetries=None) -> float:
    """MSSD (m): ``min_k max_i |T_est M_i - T_gt S_k M_i|`` (BOP)."""
    T_est, T_gt = _poses(T_est, T_gt)
    pts = _points(pts_obj)
    pts_est = _transform(T_est, pts)
    dists = _per_symmetry(
        _gt_under_symmetries(T_gt, symmetries), pts,
        lambda p: np.linalg.norm(p - pts_est, axis=-1).max(-1),
    )
    return float(dists.min())


def mspd(T_est, T_gt, pts_obj, K, symmetries=None) -> float:
    """MSPD (px): ``min_k max_i |pi(T_est M_i) - pi(T_gt S_k M_i)|`` (BOP)."""
    T_est, T_gt = _poses(T_est, T_gt)
    pts, K = _points(pts_obj), _array("K", K, (3, 3))
    uv_est = _project(K, _transform(T_est, pts))
    dists = _per_symmetry(
        _gt_under_symmetries(T_gt, symmetries), pts,
        lambda p: np.linalg.norm(_project(K, p) - uv_est, axis=-1).max(-1),
    )
    return float(dists.min())


def bbox_diagonal_px(T_gt, pts_obj, K) -> float:
    """``d_bbox``: diagonal (px) of the 2D box of the model projected at ``T_gt``."""
    T_gt, pts, K = _array("T_gt", T_gt, (4, 4)), _points(pts_obj), _array("K", K, (3, 3))
    uv = _project(K, _transform(T_gt, pts))
    return float(np.linalg.norm(uv.max(0) - uv.min(0)))


def rt_error(T_est, T_gt, pts_obj, K, image_size, symmetries=None) -> float:
    """``e_Rt`` (dimensionless): ``ADD / |t_gt| * d_bbox / d_img`` (GCF supp. eq. 3),
    ADD taken as the min over symmetries."""
    width, height = image_size
    d_img = float(np.hypot(width, height))
    T_gt = _array("T_gt", T_gt, (4, 4))
    return (
        add(T_est, T_gt, pts_obj, symmetries)
        / float(np.linalg.norm(T_gt[:3, 3]))
        * bbox_diagonal_px(T_gt, pts_obj, K)
        / d_img
    )


def reprojection_error(T_est, T_gt, pts_obj, K, symmetries=None) -> float:
    """``e_P`` (dimensionless): mean 2D distance between the model points projected at
    the two poses, over ``d_bbox`` (GCF supp. eq. 4); min over symmetries."""
    T_est, T_gt = _poses(T_est, T_gt)
    pts, K = _points(pts_obj), _array("K", K, (3, 3))
    uv_est = _project(K, _transform(T_est, pts))
    dists = _per_symmetry(
        _gt_under_symmetries(T_gt, symmetries), pts,
        lambda p: np.linalg.norm(_project(K, p) - uv_est, axis=-1).mean(-1),
    )
    return float(dists.min()) / bbox_diagonal_px(T_gt, pts, K)


# -- one record per sample -------------------------------------------------


@dataclass(frozen=True)
class PoseMetrics:
    """Every per-sample error of one pose estimate (see the module docstring).

    Attributes:
        e_R_deg: rotation error, degrees.
        e_t: relative translation error.
        t_err_m: translation error, metres.
        e_Rt: GCF's combined error.
        e_P: GCF's reprojection error.
        add_m: ADD (symmetry-aware min), metres.
        adds_m: ADD-S, metres.
        mssd_m: MSSD, metres.
        mspd_px: MSPD, pixels.
        diameter_m: the object's diameter, metres.
        symmetric: whether ADD(-S) uses ADD-S for this object.
        image_width: image width, pixels (BOP scales MSPD thresholds by width / 640).
    """

    e_R_deg: float
    e_t: float
    t_err_m: float
    e_Rt: float
    e_P: float
    add_m: float
    adds_m: float
    mssd_m: float
    mspd_px: float
    diameter_m: float
    symmetric: bool
    image_width: int

    @property
    def add_or_adds_m(self) -> float:
        """ADD(-S): ADD-S for symmetric objects, ADD otherwise, metres."""
        return self.adds_m if self.symmetric else self.add_m

    @property
    def add_or_adds_correct(self) -> bool:
        """``ADD(-S) < 0.1 * diameter``."""
        return bool(self.add_or_adds_m < 0.1 * self.diameter_m)


_FIELDS = tuple(f.name for f in fields(PoseMetrics))

# The per-sample errors that summaries take medians of and compare counts over.
ERROR_KEYS = ("e_R_deg", "e_t", "t_err_m", "e_Rt", "e_P", "add_m", "adds_m",
              "add_or_adds_m", "mssd_m", "mspd_px")


def evaluate_pose(
    T_est,
    T_gt,
    pts_obj,
    K,
    image_size: tuple[int, int],
    diameter_m: float,
    symmetries=None,
    symmetric: bool | None = None,
) -> PoseMetrics:
    """All per-sample metrics of one estimate.

    Args:
        T_est, T_gt: ``(4, 4)`` ``T_cam_obj``, estimated and ground truth.
        pts_obj: ``(N, 3)`` model points, object frame, metres.
        K: ``(3, 3)`` intrinsics, pixels.
        image_size: ``(width, height)``, pixels.
        diameter_m: object diameter, metres (the 0.1 d threshold, MSSD recall).
        symmetries: ``(S, 4, 4)`` object-frame symmetries incl. identity, or None.
        symmetric: whether ADD(-S) uses ADD-S; default: more than one symmetry.
    """
    T_est, T_gt = _poses(T_est, T_gt)
    pts = _points(pts_obj)
    S = _symmetries(symmetries)
    if symmetric is None:
        symmetric = len(S) > 1
    K = _array("K", K, (3, 3))
    best = _best_symmetry(T_est, T_gt, S)
    t_err_m = float(np.linalg.norm(best[:3, 3] - T_est[:3, 3]))
    # One pass over the symmetries for ADD, MSSD, e_P and MSPD.
    add_m, mssd_m, e_P_px, mspd_px = _surface_and_projection_errors(T_est, T_gt, pts, K, S).min(0)
    d_bbox = bbox_diagonal_px(T_gt, pts, K)
    t_gt_norm = float(np.linalg.norm(T_gt[:3, 3]))
    return PoseMetrics(
        e_R_deg=float(_angles_deg(best[:3, :3], T_est[:3, :3])),
        e_t=t_err_m / t_gt_norm,
        t_err_m=t_err_m,
        e_Rt=float(add_m) / t_gt_norm * d_bbox / float(np.hypot(*image_size)),
        e_P=float(e_P_px) / d_bbox,
        add_m=float(add_m),
        adds_m=adds(T_est, T_gt, pts),
        mssd_m=float(mssd_m),
        mspd_px=float(mspd_px),
        diameter_m=float(diameter_m),
        symmetric=bool(symmetric),
        image_width=int(image_size[0]),
    )
