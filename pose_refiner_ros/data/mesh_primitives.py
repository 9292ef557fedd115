"""Closed, outward-oriented mesh primitives that the procedural meshes
(:mod:`.procedural`) are built from: surfaces of revolution, subdivided boxes, swept
tubes, cylinders; concatenation with part ids and rigid placement. Sizes are nominal
(the procedural kinds scale them).
"""

from __future__ import annotations

import numpy as np
import trimesh

__all__ = ["lathe", "resample_polyline", "lathe_polyline", "grid_box", "tube", "cylinder",
           "concat", "rigid", "N_SEG"]

N_SEG = 48  # azimuthal segments of surfaces of revolution


def lathe(profile_rz: np.ndarray, n_seg: int = N_SEG) -> trimesh.Trimesh:
    """Revolve a profile about the z axis.

    Args:
        profile_rz: (P, 2) points (r, z), r >= 0. The first and last points lie on the
            axis (r = 0) and become poles; the profile runs counter-clockwise in the
            (r, z) half-plane (bottom pole -> outside -> top pole) for outward normals.
        n_seg: azimuthal segments.
    """
    prof = np.asarray(profile_rz, dtype=np.float64)
    if prof[0, 0] != 0.0 or prof[-1, 0] != 0.0:
        raise ValueError("profile_rz must start and end on the axis (r = 0)")
    ring = prof[1:-1]
    n_ring = ring.shape[0]
    theta = np.arange(n_seg) * (2.0 * np.pi / n_seg)
    ct, st = np.cos(theta), np.sin(theta)
    ring_v = np.stack(
        [ring[:, :1] * ct[None], ring[:, :1] * st[None], np.repeat(ring[:, 1:2], n_seg, 1)], -1
    ).reshape(-1, 3)
    bottom = len(ring_v)
    top = bottom + 1
    verts = np.concatenate([ring_v, [[0.0, 0.0, prof[0, 1]]], [[0.0, 0.0, prof[-1, 1]]]])

    j = np.arange(n_seg)
    jn = (j + 1) % n_seg
    faces = []
    # bottom fan: pole, ring0[j+1], ring0[j] (outward when the profile leaves the pole).
    faces.append(np.stack([np.full(n_seg, bottom), jn, j], -1))
    if n_ring > 1:
        i = np.arange(n_ring - 1)[:, None]
        a = i * n_seg + j[None]  # (i, j)
        b = (i + 1) * n_seg + j[None]  # (i+1, j)
        c = (i + 1) * n_seg + jn[None]  # (i+1, j+1)
        d = i * n_seg + jn[None]  # (i, j+1)
        faces.append(np.stack([a, d, c], -1).reshape(-1, 3))
        faces.append(np.stack([a, c, b], -1).reshape(-1, 3))
    last = (n_ring - 1) * n_seg
    faces.append(np.stack([np.full(n_seg, top), last + j, last + jn], -1))
    return trimesh.Trimesh(verts, np.concatenate(faces), process=False)


def resample_polyline(pts: np.ndarray, step: float) -> np.ndarray:
    """Insert points along a polyline so no segment is longer than ``step``."""
    out = [pts[:1]]
    for p, q in zip(pts[:-1], pts[1:], strict=True):
        n = max(1, int(np.ceil(np.linalg.norm(q - p) / step)))
        s = np.linspace(0.0, 1.0, n + 1)[1:, None]
        out.append(p + s * (q - p))
    return np.concatenate(out)


def lathe_polyline(pts_rz: list[tuple[float, float]], step: float, n_seg: int = N_SEG):
    return lathe(resample_polyline(np.asarray(pts_rz, dtype=np.float64), step), n_seg)


def grid_box(extents: np.ndarray, step: float) -> trimesh.Trimesh:
    """A box centred at the origin whose faces are grids of cell size about ``step``."""
    ext = np.asarray(extents, dtype=np.float64)
    n = np.maximum(1, np.ceil(ext / step).astype(int))
    verts, faces = [], []
    offset = 0
    for axis in range(3):
        u_ax, v_ax = (axis + 1) % 3, (axis + 2) % 3
        us = np.linspace(-ext[u_ax] / 2, ext[u_ax] / 2, n[u_ax] + 1)
        vs = np.linspace(-ext[v_ax] / 2, ext[v_ax] / 2, n[v_ax] + 1)
        uu, vv = np.meshgrid(us, vs, indexing="ij")
        nu, nv = uu.shape
        ii, jj = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing="ij")
        a = (ii * nv + jj).ravel()
        b = ((ii + 1) * nv + jj).ravel()
        c = ((ii + 1) * nv + jj + 1).ravel()
        d = (ii * nv + jj + 1).ravel()
        for sign in (1.0, -1.0):
            p = np.zeros((nu * nv, 3))
            p[:, axis] = sign * ext[axis] / 2
            p[:, u_ax] = uu.ravel()
            p[:, v_ax] = vv.ravel()
            # (u, v, axis) is right-handed, so (a, b, c) faces +axis.
            f = np.stack([a, b, c, a, c, d], -1).reshape(-1, 3)
            if sign < 0:
                f = f[:, ::-1]
            verts.append(p)
            faces.append(f + offset)
            offset += len(p)
    mesh = trimesh.Trimesh(np.concatenate(verts), np.concatenate(faces), process=False)
    mesh.merge_vertices()
    return mesh


def tube(path: np.ndarray, radius: float, n_sides: int = 12) -> trimesh.Trimesh:
    """A closed tube of circular section swept along a planar path in the xz-plane."""
    path = np.asarray(path, dtype=np.float64)
    n = len(path)
    tang = np.gradient(path, axis=0)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    b = np.array([0.0, 1.0, 0.0])  # the path's plane normal
    nrm = np.cross(b, tang)
    ang = np.arange(n_sides) * (2 * np.pi / n_sides)
    ring = (
        path[:, None]
        + radius * np.cos(ang)[None, :, None] * nrm[:, None]
        + radius * np.sin(ang)[None, :, None] * b[None, None]
    ).reshape(-1, 3)
    verts = np.concatenate([ring, path[:1], path[-1:]])
    c0, c1 = len(ring), len(ring) + 1
    j = np.arange(n_sides)
    jn = (j + 1) % n_sides
    i = np.arange(n - 1)[:, None]
    a, bb = i * n_sides + j[None], (i + 1) * n_sides + j[None]
    c, d = (i + 1) * n_sides + jn[None], i * n_sides + jn[None]
    faces = [
        np.stack([a, bb, c], -1).reshape(-1, 3),
        np.stack([a, c, d], -1).reshape(-1, 3),
        np.stack([np.full(n_sides, c0), jn, j], -1),
        np.stack([np.full(n_sides, c1), (n - 1) * n_sides + j, (n - 1) * n_sides + jn], -1),
    ]
    mesh = trimesh.Trimesh(verts, np.concatenate(faces), process=False)
    if mesh.volume < 0:  # orientation depends on the path's turning sense
        mesh.invert()
    return mesh


def cylinder(radius: float, height: float, step: float) -> trimesh.Trimesh:
    h = height / 2
    return lathe_polyline([(0, -h), (radius, -h), (radius, h), (0, h)], step)


def concat(parts: list[trimesh.Trimesh]) -> tuple[trimesh.Trimesh, np.ndarray]:
    """Concatenate meshes; also return the component index of every vertex."""
    verts = np.concatenate([p.vertices for p in parts])
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)])
    part_id = np.concatenate([np.full(len(p.vertices), k) for k, p in enumerate(parts)])
    return trimesh.Trimesh(verts, faces, process=False), part_id


def rigid(mesh: trimesh.Trimesh, R: np.ndarray, t: np.ndarray) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices @ R.T + t, mesh.faces, process=False)
