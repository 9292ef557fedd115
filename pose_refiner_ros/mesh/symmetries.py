"""An object's symmetries, from the ``symmetries:`` entry of the objects YAML
(:mod:`.registry` shows the form): discrete transforms and a rotation axis, checked and
combined into ``(S, 4, 4)`` object-frame transforms, identity first, that the metrics and
training allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import trimesh

from .errors import RegistryError

__all__ = ["parse_symmetries"]

_SYMMETRY_KEYS = {"discrete", "continuous_axis"}
_AXIS_KEYS = {"axis", "offset", "steps"}


def parse_symmetries(spec: Mapping[str, Any] | Sequence | None, diameter: float,
                      where: str) -> np.ndarray:
    """``(S, 4, 4)`` symmetry transforms, identity first, from the YAML form."""
    discrete: list[np.ndarray] = []
    continuous: list[np.ndarray] = [np.eye(4)]
    if spec is None:
        spec = {}
    elif not isinstance(spec, Mapping):
        spec = {"discrete": list(spec)}
    unknown = sorted(set(spec) - _SYMMETRY_KEYS)
    if unknown:
        raise RegistryError(f"{where}: unknown symmetry key(s) {', '.join(unknown)}; "
                            f"allowed: {', '.join(sorted(_SYMMETRY_KEYS))}.")
    for i, m in enumerate(spec.get("discrete") or []):
        discrete.append(_rigid_transform(m, diameter, f"{where}: symmetries.discrete[{i}]"))
    if spec.get("continuous_axis") is not None:
        continuous = _axis_rotations(spec["continuous_axis"], where)
    combined = np.stack([C @ D for C in continuous for D in [np.eye(4)] + discrete])
    keep: list[int] = []  # drop near-duplicates, keep the first (the identity)
    for i, T in enumerate(combined):
        if not keep or np.abs(combined[keep] - T).max(axis=(1, 2)).min() > 1e-6:
            keep.append(i)
    return combined[keep]


def _rigid_transform(m: Any, diameter: float, where: str) -> np.ndarray:
    try:
        T = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        T = np.zeros(0)
    if T.size != 16:
        raise RegistryError(f"{where}: expected 16 numbers (a row-major 4x4 matrix), got "
                            f"{m!r}.")
    T = T.reshape(4, 4)
    R = T[:3, :3]
    not_rigid = (
        not np.all(np.isfinite(T))
        or not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6)
        or not np.allclose(R.T @ R, np.eye(3), atol=1e-3)
        or np.linalg.det(R) <= 0
    )
    if not_rigid:
        raise RegistryError(f"{where}: not a rigid transform (the rotation part must be "
                            "orthonormal with determinant +1 and the last row 0 0 0 1), "
                            f"got {T.tolist()}.")
    if np.linalg.norm(T[:3, 3]) > 2.0 * diameter:
        raise RegistryError(f"{where}: translation {T[:3, 3].tolist()} is larger than the "
                            f"object ({diameter:.4g} m across). Symmetry translations are "
                            "in metres (after scaling), e.g. multiply BOP's millimetres "
                            "by 0.001.")
    U, _, Vt = np.linalg.svd(R)  # snap to the nearest rotation
    T[:3, :3] = U @ Vt
    return T


def _axis_rotations(spec: Any, where: str) -> list[np.ndarray]:
    where = f"{where}: symmetries.continuous_axis"
    if not isinstance(spec, Mapping) or "axis" not in spec:
        raise RegistryError(f"{where}: expected a mapping with `axis` (and optional "
                            f"`offset`, `steps`), got {spec!r}.")
    unknown = sorted(set(spec) - _AXIS_KEYS)
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                            f"{', '.join(sorted(_AXIS_KEYS))}.")
    try:
        axis = np.asarray(spec["axis"], dtype=np.float64).reshape(3)
        offset = np.asarray(spec.get("offset", (0, 0, 0)), dtype=np.float64).reshape(3)
        steps = int(spec.get("steps", 36))
    except (TypeError, ValueError):
        raise RegistryError(f"{where}: axis and offset must be 3 numbers and steps an "
                            f"integer, got {dict(spec)!r}.") from None
    norm = np.linalg.norm(axis)
    if not np.isfinite(norm) or norm < 1e-9 or steps < 1:
        raise RegistryError(f"{where}: axis must be a non-zero vector and steps >= 1, got "
                            f"{dict(spec)!r}.")
    axis = axis / norm
    out = []
    for k in range(steps):
        R = trimesh.transformations.rotation_matrix(2 * np.pi * k / steps, axis)[:3, :3]
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = offset - R @ offset  # rotate about the line through `offset`
        out.append(T)
    return out
