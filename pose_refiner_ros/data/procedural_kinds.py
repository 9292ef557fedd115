"""The shapes of the procedural mesh family (:mod:`.procedural`, whose docstring tables
the kinds): one builder per kind, each returning the mesh at a nominal size of about 1,
the part id of every vertex, and the shape's symmetry ("axis": continuous about z, "box":
three 180-degree turns, or None). Built from :mod:`.mesh_primitives`; sizes, colours and
splits are :mod:`.procedural`'s."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from . import mesh_primitives as P

# ---------------------------------------------------------------------------------------
# kinds; each returns (mesh at a nominal size ~1, part ids, symmetry spec)
# symmetry spec: "axis" (continuous about z), "box" (three 180-degree turns), or None
# ---------------------------------------------------------------------------------------

_STEP = 0.045  # nominal cell size at unit size


def _distinct_extents(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """Three side lengths whose pairwise ratios differ by at least 15 %."""
    while True:
        e = np.sort(rng.uniform(lo, hi, 3))
        if e[1] / e[0] > 1.15 and e[2] / e[1] > 1.15:
            return rng.permutation(e)


def _make_box(rng):
    return P.grid_box(_distinct_extents(rng, 0.3, 1.0), _STEP * 1.2), None, "box"


def _make_cylinder(rng):
    r = rng.uniform(0.15, 0.5)
    h = rng.uniform(0.3, 1.0)
    return P.cylinder(r, h, _STEP), None, "axis"


def _make_cone(rng):
    r0 = rng.uniform(0.25, 0.5)
    r1 = r0 * rng.choice([0.0, rng.uniform(0.15, 0.6)])
    h = rng.uniform(0.4, 1.0) / 2
    pts = [(0, -h), (r0, -h), (r1, h), (0, h)] if r1 > 0 else [(0, -h), (r0, -h), (0, h)]
    return P.lathe_polyline(pts, _STEP), None, "axis"


def _make_bottle(rng):
    h = 1.0
    r_body = rng.uniform(0.14, 0.28)
    r_neck = r_body * rng.uniform(0.3, 0.55)
    z_sh = rng.uniform(0.45, 0.65) * h  # shoulder start
    z_neck = z_sh + rng.uniform(0.12, 0.22) * h
    foot = r_body * rng.uniform(0.85, 1.0)
    bulge = r_body * rng.uniform(0.95, 1.12)
    lip = r_neck * rng.uniform(1.05, 1.25)
    pts = [(0.0, 0.0), (foot, 0.0), (r_body, 0.04), (bulge, z_sh * 0.5), (r_body, z_sh)]
    # shoulder: a smooth curve from the body radius to the neck radius
    s = np.linspace(0, 1, 7)[1:]
    for si in s:
        r_s = r_neck + (r_body - r_neck) * np.cos(si * np.pi / 2)
        pts.append((r_s, z_sh + si * (z_neck - z_sh)))
    pts += [(r_neck, h - 0.06), (lip, h - 0.05), (lip, h), (0.0, h)]
    mesh = P.lathe_polyline(pts, _STEP * 0.8)
    mesh.vertices[:, 2] -= h / 2
    return mesh, None, "axis"


def _make_bowl(rng):
    r = 0.5
    depth = rng.uniform(0.25, 0.55)
    wall = rng.uniform(0.025, 0.05)
    r_foot = r * rng.uniform(0.35, 0.6)
    power = rng.uniform(1.5, 3.0)  # wall curvature
    s = np.linspace(0, 1, 16)
    outer = [(r_foot + (r - r_foot) * si ** (1 / power), depth * si) for si in s]
    inner = [(max(rr - wall, 1e-3), max(z, wall)) for rr, z in outer[::-1]]
    pts = [(0.0, 0.0)] + outer + [(r - wall / 2, depth + wall * 0.3)] + inner + [(0.0, wall)]
    mesh = P.lathe_polyline(pts, _STEP)
    mesh.vertices[:, 2] -= depth / 2
    return mesh, None, "axis"


def _make_mug(rng):
    r = rng.uniform(0.25, 0.38)
    h = rng.uniform(0.6, 1.0)
    wall = rng.uniform(0.025, 0.05)
    body = P.lathe_polyline(
        [(0, 0), (r, 0), (r, h), (r - wall, h), (r - wall, wall), (0, wall)], _STEP
    )
    # handle: a torus segment in the xz-plane, its ends buried in the wall
    hr = rng.uniform(0.18, 0.32) * h  # handle arc radius
    zc = h * rng.uniform(0.45, 0.55)
    tube_r = rng.uniform(0.025, 0.05)
    ang = np.linspace(-np.pi / 2, np.pi / 2, 24)
    cx = r - wall / 2  # the arc's ends sit in the wall
    path = np.stack([cx + hr * np.cos(ang), np.zeros_like(ang), zc + hr * np.sin(ang)], -1)
    handle = P.tube(path, tube_r)
    mesh, part = P.concat([body, handle])
    mesh.vertices[:, 2] -= h / 2
    return mesh, part, None


def _make_compound(rng):
    parts = []
    for k in range(rng.integers(2, 5)):
        if rng.random() < 0.55:
            p = P.grid_box(rng.uniform(0.15, 0.6, 3), _STEP)
        else:
            p = P.cylinder(rng.uniform(0.06, 0.25), rng.uniform(0.2, 0.7), _STEP)
        R = Rotation.random(random_state=rng).as_matrix() if k else np.eye(3)
        t = rng.uniform(-0.3, 0.3, 3) if k else np.zeros(3)
        parts.append(P.rigid(p, R, t))
    mesh, part = P.concat(parts)
    return mesh, part, None


def _make_plate(rng):
    thick = rng.uniform(0.02, 0.06)
    if rng.random() < 0.5:
        ext = _distinct_extents(rng, 0.45, 1.0)
        ext[np.argmin(ext)] = thick
        return P.grid_box(ext, _STEP), None, "box"
    return P.cylinder(0.5, thick, _STEP), None, "axis"


def _make_rod(rng):
    length = 1.0
    if rng.random() < 0.5:
        return P.cylinder(rng.uniform(0.03, 0.08), length, _STEP), None, "axis"
    a = rng.uniform(0.04, 0.1)
    ext = np.array([a, a * rng.uniform(1.2, 1.8), length])
    return P.grid_box(ext, length / 48), None, "box"


def _make_lshape(rng):
    t = rng.uniform(0.12, 0.3)  # arm thickness (in the plane)
    w = rng.uniform(0.15, 0.5)  # extrusion depth
    la, lb = rng.uniform(0.6, 1.0), rng.uniform(0.3, 0.55)  # unequal arms
    arm_a = P.grid_box(np.array([la, t, w]), _STEP)
    arm_b = P.grid_box(np.array([t, lb, w]), _STEP)
    arm_a.vertices += [la / 2, t / 2, 0]
    arm_b.vertices += [t / 2, lb / 2, 0]
    mesh, part = P.concat([arm_a, arm_b])
    return mesh, part, None


_BUILDERS = {
    "box": _make_box,
    "cylinder": _make_cylinder,
    "cone": _make_cone,
    "bottle": _make_bottle,
    "bowl": _make_bowl,
    "mug": _make_mug,
    "compound": _make_compound,
    "plate": _make_plate,
    "rod": _make_rod,
    "lshape": _make_lshape,
}


