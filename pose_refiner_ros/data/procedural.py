"""A family of procedurally generated meshes for training and benchmarking.

No downloaded assets: every mesh is built here from a few primitives (subdivided boxes,
surfaces of revolution, swept tubes), in metres, centred on its bounding-box centre, with
a diameter (largest distance between two vertices) between about 4 cm and 40 cm, and
about 1k-7k faces so that vertex-colour patterns show.

Kinds (``KINDS``):

==============  ===================================================  ==================
kind            shape                                                symmetry (geometry)
==============  ===================================================  ==================
``box``         subdivided box, three distinct side lengths          discrete (3 x 180)
``cylinder``    closed cylinder                                      continuous axis z
``cone``        cone or frustum                                      continuous axis z
``bottle``      lathed random profile: body, shoulder, neck, lip     continuous axis z
``bowl``        lathed shell with a random wall profile              continuous axis z
``mug``         cylindrical shell with a bottom + torus-segment      none
                handle
``compound``    2-4 boxes / cylinders at random offsets and          none
                rotations (concatenated, not boolean-unioned)
``plate``       thin box or thin disc                                box: discrete,
                                                                     disc: continuous
``rod``         long thin cylinder or square bar                     continuous / discrete
``lshape``      two boxes forming an L with unequal arms             none
==============  ===================================================  ==================

Every component is a closed (watertight, outward-oriented) surface; kinds made of several
components (``mug``, ``compound``, ``lshape``) are concatenations whose components may
interpenetrate, so the whole is watertight edge-wise but not a boolean union.

Appearance: per-vertex colours with one of the patterns ``flat``, ``gradient``, ``bands``
(stripes along the symmetry axis), ``stripes`` (along a random direction), ``checker``
(3D checker of the vertex positions), ``noise`` (smooth random field) or ``parts`` (one
colour per component). A mesh is declared symmetric only when its geometry *and* its
colour pattern are: an axially symmetric shape keeps its continuous symmetry with
``flat``, ``gradient`` or ``bands``, a box keeps its three 180-degree rotations only with
``flat``; any other pattern makes the object asymmetric (``info["symmetric"] = False``).

Splits and determinism: mesh ``i`` of split ``s`` with seed ``seed`` is drawn from
``np.random.default_rng(np.random.SeedSequence([SPLIT_KEYS[s], seed, i]))``. The split
key is part of the entropy, so the ``train``, ``val`` and ``bench`` streams are
independent and a ``bench`` mesh is never produced by ``procedural_models("train", ...)``
or ``("val", ...)`` for any ``n`` or ``seed``. ``bench`` is the held-out benchmark: never
pass it to training code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist
from scipy.spatial.transform import Rotation
import trimesh

from .procedural_kinds import _BUILDERS

KINDS: tuple[str, ...] = (
    "box",
    "cylinder",
    "cone",
    "bottle",
    "bowl",
    "mug",
    "compound",
    "plate",
    "rod",
    "lshape",
)

SPLITS: tuple[str, ...] = ("train", "val", "bench")

#: Entropy words that separate the seed streams of the splits (arbitrary, fixed forever:
#: changing one changes every mesh of that split).
SPLIT_KEYS: dict[str, int] = {"train": 0x7A1B_0001, "val": 0x7A1B_0002, "bench": 0x7A1B_BE7C}

DIAMETER_RANGE_M: tuple[float, float] = (0.04, 0.40)

# ---------------------------------------------------------------------------------------
# colours
# ---------------------------------------------------------------------------------------

PATTERNS: tuple[str, ...] = ("flat", "gradient", "bands", "stripes", "checker", "noise", "parts")
_AXIAL_PATTERNS = ("flat", "gradient", "bands")


def _random_colors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random RGB colours in [0, 1], spread in hue, with varied saturation/value."""
    import colorsys

    h0 = rng.random()
    out = []
    for k in range(n):
        h = (h0 + k / n + rng.normal(0, 0.05)) % 1.0
        s = rng.uniform(0.0, 1.0) ** 0.7
        v = rng.uniform(0.15, 1.0)
        out.append(colorsys.hsv_to_rgb(h, s, v))
    return np.asarray(out)


def _colorize(
    rng: np.random.Generator,
    verts: np.ndarray,
    part_id: np.ndarray | None,
    pattern: str,
    scale: float,
) -> np.ndarray:
    """Per-vertex colours (V, 3) in [0, 1] for ``pattern``; ``scale`` is the mesh size."""
    cols = _random_colors(rng, 3)
    p = verts / scale
    if pattern == "flat":
        w = np.zeros(len(p))
    elif pattern == "gradient":
        w = (p[:, 2] - p[:, 2].min()) / max(np.ptp(p[:, 2]), 1e-9)
    elif pattern == "bands":
        f = rng.uniform(2.0, 8.0)
        w = (np.sin(2 * np.pi * f * p[:, 2] + rng.uniform(0, 2 * np.pi)) > 0).astype(float)
    elif pattern == "stripes":
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        f = rng.uniform(2.0, 8.0)
        w = (np.sin(2 * np.pi * f * p @ d + rng.uniform(0, 2 * np.pi)) > 0).astype(float)
    elif pattern == "checker":
        cell = rng.uniform(0.12, 0.3)
        q = np.floor(p / cell + rng.uniform(0, 1, 3)).astype(int)
        w = (q.sum(1) % 2).astype(float)
    elif pattern == "noise":
        # smooth random field: a sum of random plane waves
        w = np.zeros(len(p))
        for _ in range(6):
            d = rng.normal(size=3) * rng.uniform(1.0, 6.0)
            w += np.sin(2 * np.pi * p @ d + rng.uniform(0, 2 * np.pi))
        w = (w - w.min()) / max(np.ptp(w), 1e-9)
        out = cols[0] * (1 - w)[:, None] + cols[1] * w[:, None]
        return np.clip(out + rng.normal(0, 0.03, out.shape), 0, 1)
    elif pattern == "parts":
        pid = part_id if part_id is not None else np.zeros(len(p), int)
        pc = _random_colors(rng, int(pid.max()) + 1)
        return pc[pid]
    else:
        raise ValueError(f"unknown colour pattern {pattern!r}; expected one of {PATTERNS}")
    return cols[0] * (1 - w)[:, None] + cols[1] * w[:, None]


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------


def _diameter(verts: np.ndarray) -> float:
    hull = verts[ConvexHull(verts).vertices]
    return float(pdist(hull).max())


def make_mesh(
    rng: np.random.Generator, kind: str | None = None
) -> tuple[trimesh.Trimesh, dict[str, Any]]:
    """Draw one procedural mesh.

    Args:
        rng: the generator every random choice is drawn from (deterministic given it).
        kind: one of ``KINDS``; drawn uniformly when None.

    Returns:
        ``(mesh, info)``: ``mesh`` in metres, centred on its bounding-box centre, with
        per-vertex colours (``mesh.visual.vertex_colors``, RGBA uint8). ``info`` holds
        ``kind``, ``pattern``, ``diameter_m``, ``symmetric`` (bool), ``symmetry``
        (``"axis_z"`` continuous about the object z axis, ``"box"`` the three
        180-degree turns about x, y, z, or ``None``) and ``vert_colors`` ((V, 3) float in
        [0, 1]).
    """
    if kind is None:
        kind = str(rng.choice(KINDS))
    if kind not in _BUILDERS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    mesh, part_id, sym = _BUILDERS[kind](rng)

    # scale to a log-uniform diameter and centre on the bounding box
    diameter = float(np.exp(rng.uniform(*np.log(DIAMETER_RANGE_M))))
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    verts = verts - (verts.min(0) + verts.max(0)) / 2
    verts *= diameter / _diameter(verts)

    if sym == "axis":
        pattern = str(rng.choice(PATTERNS[:-1]))
    elif part_id is not None:
        pattern = str(rng.choice(PATTERNS))
    else:
        pattern = str(rng.choice([p for p in PATTERNS if p not in ("bands", "parts")]))
    colors = _colorize(rng, verts, part_id, pattern, diameter)
    symmetric = (sym == "axis" and pattern in _AXIAL_PATTERNS) or (
        sym == "box" and pattern == "flat"
    )
    symmetry = None
    if symmetric:
        symmetry = "axis_z" if sym == "axis" else "box"

    rgba = np.concatenate([np.round(colors * 255), np.full((len(colors), 1), 255)], 1)
    out = trimesh.Trimesh(
        verts, mesh.faces, vertex_colors=rgba.astype(np.uint8), process=False
    )
    info = {
        "kind": kind,
        "pattern": pattern,
        "diameter_m": diameter,
        "symmetric": bool(symmetric),
        "symmetry": symmetry,
        "vert_colors": colors.astype(np.float32),
    }
    return out, info


def split_rng(split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of mesh ``index`` of ``split`` (see the module docstring)."""
    if split not in SPLIT_KEYS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return np.random.default_rng(np.random.SeedSequence([SPLIT_KEYS[split], seed, index]))


def procedural_mesh(split: str, index: int, seed: int = 0):
    """Mesh ``index`` of ``split``: kinds cycle through ``KINDS`` so any ``n >= len(KINDS)``
    consecutive indices cover every kind. Returns ``(mesh, info)`` like ``make_mesh``."""
    rng = split_rng(split, index, seed)
    kind = KINDS[(index + SPLITS.index(split) * 3) % len(KINDS)]
    return make_mesh(rng, kind)


def symmetry_transforms(symmetry: str | None, n_axis: int = 36) -> np.ndarray:
    """Object-frame symmetry transforms (S, 4, 4), identity first, for ``info["symmetry"]``.

    ``"axis_z"`` is discretised into ``n_axis`` rotations about z; ``"box"`` gives the
    identity and the 180-degree turns about x, y and z.
    """
    if symmetry is None:
        Rs = [np.eye(3)]
    elif symmetry == "axis_z":
        Rs = Rotation.from_rotvec(
            np.outer(np.arange(n_axis) * 2 * np.pi / n_axis, [0, 0, 1])
        ).as_matrix()
    elif symmetry == "box":
        Rs = [np.eye(3), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])]
    else:
        raise ValueError(f"unknown symmetry {symmetry!r}; expected None, 'axis_z' or 'box'")
    T = np.tile(np.eye(4), (len(Rs), 1, 1))
    T[:, :3, :3] = Rs
    return T


def procedural_models(split: str, n: int, seed: int = 0) -> list:
    """``n`` procedural ``ObjectModel`` s of ``split``, class ids ``f"{split}_{i:03d}_{kind}"``.

    Deterministic per ``(split, i, seed)``; model ``i`` does not depend on ``n``.
    """
    from pose_refiner_ros.mesh.registry import ObjectModel

    models = []
    for i in range(n):
        mesh, info = procedural_mesh(split, i, seed)
        models.append(_to_object_model(ObjectModel, mesh, info, f"{split}_{i:03d}_{info['kind']}"))
    return models


def _to_object_model(cls, mesh: trimesh.Trimesh, info: dict, class_id: str):
    return cls.from_trimesh(class_id, mesh, symmetries=list(symmetry_transforms(info["symmetry"])))
