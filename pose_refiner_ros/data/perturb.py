"""The standard pose perturbation of the refinement test (``docs/protocol.md``).

``R_init = exp([w]x) R_gt`` with ``w ~ N(0, sigma_r^2 I_3)`` (a rotation about the object's
own origin, the rotation vector expressed in the camera frame), and ``t_init = t_gt + d``
with ``d ~ N(0, diag(sigma_t)^2)`` in the camera frame. With ``sigma_r = 15`` degrees the
mean rotation angle is ``sigma_r * 2 * sqrt(2 / pi)``, about 23.9 degrees.

Draw order (part of the determinism contract): all ``B`` rotation vectors first
(``rng.normal(size=(B, 3))``), then all ``B`` translation offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation


def perturb_pose(
    T_gt: np.ndarray,
    rng: np.random.Generator,
    sigma_r_deg: float = 15.0,
    sigma_t_m: float | Sequence[float] = (0.01, 0.01, 0.05),
) -> np.ndarray:
    """Draw initial poses around ground-truth poses.

    Args:
        T_gt: (4, 4) or (B, 4, 4) ``T_cam_obj`` ground-truth poses (metres).
        rng: numpy generator the noise is drawn from.
        sigma_r_deg: standard deviation of each rotation-vector component, degrees.
        sigma_t_m: standard deviation of the translation offset along the camera's
            x, y, z axes, metres (a scalar applies to all three).

    Returns:
        ``T_init`` with the shape of ``T_gt``, float64.
    """
    T = np.asarray(T_gt, dtype=np.float64)
    if T.shape[-2:] != (4, 4) or T.ndim not in (2, 3):
        raise ValueError(f"T_gt: expected shape (4, 4) or (B, 4, 4), got {T.shape}")
    single = T.ndim == 2
    Tb = T[None] if single else T
    B = Tb.shape[0]
    sigma_t = np.broadcast_to(np.asarray(sigma_t_m, dtype=np.float64), (3,))

    w = rng.normal(size=(B, 3)) * np.deg2rad(sigma_r_deg)
    d = rng.normal(size=(B, 3)) * sigma_t

    out = Tb.copy()
    out[:, :3, :3] = Rotation.from_rotvec(w).as_matrix() @ Tb[:, :3, :3]
    out[:, :3, 3] = Tb[:, :3, 3] + d
    return out[0] if single else out
