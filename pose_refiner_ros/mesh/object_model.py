"""One object's model: its mesh read, scaled to metres and measured (diameter, bounding
box, surface samples), with a render mesh decimated to a face budget
(:class:`ObjectModel`). The YAML that lists them is read by :mod:`.registry`.

Every problem raises :class:`~pose_refiner_ros.mesh.errors.RegistryError` with the file,
what was wrong and what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
import itertools
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import ConvexHull, QhullError, cKDTree
import trimesh

from .errors import RegistryError
from .symmetries import parse_symmetries

__all__ = ["ObjectModel", "DEFAULT_MAX_RENDER_FACES", "DEFAULT_N_POINTS",
           "DEFAULT_SIZE_LIMITS_M"]

logger = logging.getLogger(__name__)

#: default face budget of the render mesh; larger meshes are decimated for rendering.
DEFAULT_MAX_RENDER_FACES = 20000
#: default number of surface points sampled per object (``ObjectModel.points_m``).
DEFAULT_N_POINTS = 1000
#: plausible object diameters in metres; outside, the mesh's ``scale`` is refused.
DEFAULT_SIZE_LIMITS_M = (0.005, 5.0)
_GREY = (0.7, 0.7, 0.7)

def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False, repr=False)
class ObjectModel:
    """One registered object, in metres, in its object frame.

    Attributes:
        class_id: the class string that detections carry.
        mesh_path: the mesh file, or None for a mesh built in code.
        scale: mesh units -> metres, as applied.
        verts_m: ``(V, 3)`` float32 vertices of the render mesh (decimated when the mesh
            has more than ``max_render_faces`` faces), metres.
        faces: ``(F, 3)`` int64 vertex indices of the render mesh.
        vert_colors: ``(V, 3)`` float32 RGB in ``[0, 1]`` of the render mesh's vertices.
        vert_normals: ``(V, 3)`` float32 unit vertex normals of the render mesh.
        full_mesh: the mesh at full resolution, metres (for metrics); treat as read-only.
        points_m: ``(N, 3)`` float32 points sampled uniformly on the full mesh's surface
            (fixed seed, so the same file gives the same points).
        diameter_m: largest distance between two vertices of the full mesh, metres.
        bbox_min_m, bbox_max_m: ``(3,)`` float32 axis-aligned bounding box, metres.
        bbox_corners_m: ``(8, 3)`` float32 box corners; corner ``i`` takes x, y, z from
            max when bit 2, 1, 0 of ``i`` is set, else from min.
        symmetries: ``(S, 4, 4)`` float32 object-frame transforms ``T_obj_obj'`` that map
            the object onto itself, identity first (a continuous axis is discretised).
        symmetric: ``S > 1``.
    """

    class_id: str
    mesh_path: Path | None
    scale: float
    verts_m: np.ndarray
    faces: np.ndarray
    vert_colors: np.ndarray
    vert_normals: np.ndarray
    full_mesh: trimesh.Trimesh
    points_m: np.ndarray
    diameter_m: float
    bbox_min_m: np.ndarray
    bbox_max_m: np.ndarray
    bbox_corners_m: np.ndarray
    symmetries: np.ndarray
    symmetric: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "symmetric", bool(self.symmetries.shape[0] > 1))

    def __repr__(self) -> str:
        return (f"ObjectModel(class_id={self.class_id!r}, mesh_path={self.mesh_path!r}, "
                f"faces={len(self.faces)}/{len(self.full_mesh.faces)}, "
                f"diameter_m={self.diameter_m:.4f}, symmetries={len(self.symmetries)})")

    @classmethod
    def from_trimesh(
        cls,
        class_id: str,
        mesh: trimesh.Trimesh | trimesh.Scene,
        scale: float = 1.0,
        symmetries: Mapping[str, Any] | Sequence | None = None,
        color: Sequence[float] | None = None,
        max_render_faces: int = DEFAULT_MAX_RENDER_FACES,
        n_points: int = DEFAULT_N_POINTS,
        mesh_path: str | Path | None = None,
        size_limits_m: tuple[float, float] = DEFAULT_SIZE_LIMITS_M,
    ) -> ObjectModel:
        """Register a mesh built or loaded in code.

        Args:
            class_id: the class string.
            mesh: a ``trimesh.Trimesh`` (or a ``Scene``, whose parts are concatenated) in
                mesh units; it is copied, never modified.
            scale: mesh units -> metres.
            symmetries: as under ``symmetries:`` in the YAML file (a mapping with
                ``discrete`` and/or ``continuous_axis``), or a sequence of 4x4 transforms
                (discrete symmetries; translations in metres).
            color: flat RGB in ``[0, 1]``; default: the mesh's colours, else grey.
            max_render_faces: larger meshes are decimated to this many faces for
                rendering (the full mesh is kept for metrics).
            n_points: number of surface samples in ``points_m``.
            mesh_path: the file the mesh came from, for messages and the record.
            size_limits_m: plausible range of the diameter in metres.
        """
        where = f"mesh file '{mesh_path}'" if mesh_path else "in-memory mesh"
        where = f"{where} (class '{class_id}')"
        if isinstance(mesh, trimesh.Scene):
            mesh = _concatenate_scene(mesh)
        if not isinstance(mesh, trimesh.Trimesh):
            raise RegistryError(f"{where}: expected a triangle mesh, got "
                                f"{type(mesh).__name__}. Export the object as a mesh "
                                "with faces (OBJ, PLY, STL or GLB).")
        if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
            raise RegistryError(f"{where}: the mesh is empty (no faces; a point cloud?). "
                                "Give a triangle mesh of the object.")
        if not np.all(np.isfinite(mesh.vertices)):
            raise RegistryError(f"{where}: the mesh has non-finite vertex coordinates. "
                                "Repair it (e.g. in MeshLab) and export it again.")
        scale = _positive_float(scale, f"{where}: scale")
        if max_render_faces < 4:
            raise ValueError(f"max_render_faces: expected at least 4, got {max_render_faces}")

        full = mesh.copy()
        full.apply_scale(scale)
        diameter = _diameter(full.vertices)
        lo, hi = size_limits_m
        if not lo <= diameter <= hi:
            raise RegistryError(
                f"{where}: the mesh is {diameter:.4g} m across after scale {scale:g}, "
                f"outside the plausible {lo:g} to {hi:g} m: its units are probably not "
                f"what `scale` says. Set `scale` to convert mesh units to metres, e.g. "
                f"scale: 0.001 for a mesh in millimetres, 0.01 for centimetres, 1.0 for "
                f"metres.")

        colors = _vertex_colors(full, color, where)
        render = full
        if len(full.faces) > max_render_faces:
            render = full.simplify_quadric_decimation(face_count=max_render_faces)
            _, nearest = cKDTree(full.vertices).query(render.vertices)
            colors = colors[nearest]
            logger.info("%s: decimated %d -> %d faces for rendering", where,
                        len(full.faces), len(render.faces))

        bbox_min, bbox_max = full.bounds
        corners = np.array([[(bbox_min, bbox_max)[i][0], (bbox_min, bbox_max)[j][1],
                             (bbox_min, bbox_max)[k][2]]
                            for i, j, k in itertools.product((0, 1), repeat=3)])
        points, _ = trimesh.sample.sample_surface(full, n_points, seed=0)
        sym = parse_symmetries(symmetries, diameter, where)

        f32 = np.float32
        return cls(
            class_id=str(class_id),
            mesh_path=Path(mesh_path) if mesh_path else None,
            scale=scale,
            verts_m=_readonly(np.ascontiguousarray(render.vertices, dtype=f32)),
            faces=_readonly(np.ascontiguousarray(render.faces, dtype=np.int64)),
            vert_colors=_readonly(np.ascontiguousarray(colors, dtype=f32)),
            vert_normals=_readonly(np.ascontiguousarray(render.vertex_normals, dtype=f32)),
            full_mesh=full,
            points_m=_readonly(np.asarray(points, dtype=f32)),
            diameter_m=float(diameter),
            bbox_min_m=_readonly(bbox_min.astype(f32)),
            bbox_max_m=_readonly(bbox_max.astype(f32)),
            bbox_corners_m=_readonly(corners.astype(f32)),
            symmetries=_readonly(sym.astype(f32)),
        )

    @classmethod
    def from_file(
        cls,
        class_id: str,
        mesh_path: str | Path,
        scale: float = 1.0,
        **kwargs,
    ) -> ObjectModel:
        """Read a mesh file (OBJ, PLY, STL, GLB, ...) and register it; ``kwargs`` as in
        :meth:`from_trimesh`."""
        mesh_path = Path(mesh_path)
        where = f"mesh file '{mesh_path}' (class '{class_id}')"
        if not mesh_path.is_file():
            raise RegistryError(f"{where} does not exist. Check the `mesh:` path; a "
                                "relative path is relative to the objects YAML file.")
        try:
            mesh = trimesh.load(mesh_path, force="mesh")
        except Exception as exc:  # trimesh raises many types for a bad file
            raise RegistryError(f"{where} could not be read: {exc}. Give a valid OBJ, "
                                "PLY, STL or GLB file (check it opens in a mesh "
                                "viewer).") from exc
        return cls.from_trimesh(class_id, mesh, scale=scale, mesh_path=mesh_path, **kwargs)


# --- helpers -------------------------------------------------------------------------


def _positive_float(x: Any, what: str) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise RegistryError(f"{what}: expected a positive number, got {x!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise RegistryError(f"{what}: expected a positive number, got {x!r}.")
    return value


def _concatenate_scene(scene: trimesh.Scene) -> trimesh.Trimesh:
    """All triangle meshes of a scene, in scene coordinates, as one mesh."""
    parts = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if not parts:
        return trimesh.Trimesh()
    return trimesh.util.concatenate(parts)


def _vertex_colors(mesh: trimesh.Trimesh, color: Sequence[float] | None,
                   where: str) -> np.ndarray:
    """``(V, 3)`` RGB in [0, 1]: the flat ``color``, else the mesh's, else grey."""
    n = len(mesh.vertices)
    if color is not None:
        c = np.asarray(color, dtype=np.float64).ravel()
        if c.shape != (3,) or not np.all((c >= 0) & (c <= 1)):
            raise RegistryError(f"{where}: color must be 3 numbers in [0, 1] (RGB), got "
                                f"{color!r}.")
        return np.tile(c, (n, 1))
    visual = mesh.visual
    try:
        if visual.kind == "texture":
            visual = visual.to_color()  # samples the texture at the vertices' UVs
        if visual.kind in ("vertex", "face"):
            rgb = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
            if rgb.shape == (n, 3):
                return rgb
    except Exception as exc:  # a broken or missing texture must not stop registration
        logger.warning("%s: could not read its colours (%s); using grey", where, exc)
    return np.tile(_GREY, (n, 1))


def _diameter(verts: np.ndarray, exact_limit: int = 3000) -> float:
    """Largest distance between two vertices (they lie on the convex hull).

    Exact when the hull has at most ``exact_limit`` vertices. Larger hulls (dense scans
    of round objects) are reduced to a fixed subsample whose best pair is then improved
    by alternating farthest-point searches over all hull vertices: a lower bound that is
    in practice within 1e-4 of the diameter.
    """
    pts = np.unique(np.asarray(verts, dtype=np.float64), axis=0)
    if len(pts) < 2:
        return 0.0
    try:
        pts = pts[ConvexHull(pts, qhull_options="QJ").vertices]
    except (QhullError, ValueError):  # fewer than 4 points, or degenerate
        pass
    sub = pts
    if len(pts) > exact_limit:
        rng = np.random.default_rng(0)
        sub = pts[rng.choice(len(pts), exact_limit, replace=False)]
    sq = (sub ** 2).sum(1)
    best, i_best = -1.0, 0
    for start in range(0, len(sub), 1024):
        block = sub[start:start + 1024]
        d2 = sq[start:start + 1024, None] + sq[None, :] - 2.0 * (block @ sub.T)
        i, j = divmod(int(np.argmax(d2)), d2.shape[1])
        exact = float(((block[i] - sub[j]) ** 2).sum())
        if exact > best:
            best, i_best = exact, start + i
    if sub is not pts:
        p = sub[i_best]
        for _ in range(10):  # farthest-point iterations over all hull vertices
            d2 = ((pts - p) ** 2).sum(-1)
            k = int(np.argmax(d2))
            if d2[k] <= best:
                break
            best, p = float(d2[k]), pts[k]
    return math.sqrt(best)
