"""The object registry: which meshes the refiner knows, in metres, ready to render.

Objects are listed in a YAML file::

    objects:
      - class_id: mug              # the string detections carry (required, unique)
        mesh: meshes/mug.ply       # OBJ, PLY, STL or GLB, read by trimesh (required);
                                   # a relative path is relative to this YAML file
        scale: 0.001               # mesh units -> metres (default 1.0); BOP meshes are
                                   # in millimetres: 0.001
        color: [0.8, 0.2, 0.2]     # optional flat RGB in [0, 1]; default: the mesh's
                                   # own vertex (or texture) colours, else grey
        symmetries:                # optional
          discrete:                # object-frame transforms T that map the object onto
            - [-1, 0, 0, 0,        # itself, each 16 numbers (a row-major 4x4) or a
                0, -1, 0, 0,       # nested 4x4 list; rotation part orthonormal with
                0, 0, 1, 0,        # det +1, last row 0 0 0 1, translation in METRES
                0, 0, 0, 1]        # (after scaling; BOP's models_info.json gives mm:
                                   # multiply its translations by `scale`)
          continuous_axis:         # rotation symmetry about an axis
            axis: [0, 0, 1]        # direction, object frame (normalised here)
            offset: [0, 0, 0]      # a point on the axis, object frame, metres
            steps: 36              # discretisation of the full turn (default 36)

At load (:mod:`.object_model`) every mesh is read (scenes, e.g. GLB files with several
parts, are concatenated), scaled to metres (the user's file is never written), and measured: its
diameter, bounding box and surface samples. A mesh with more than ``max_render_faces``
faces is decimated for rendering (quadric decimation, ``fast-simplification``); the
original is kept as ``full_mesh`` for metrics. A mesh whose size in metres is
implausible (diameter above 5 m or below 5 mm) is refused: its ``scale`` is almost
certainly wrong.

Every problem raises :class:`RegistryError` with the file, what was wrong and what to
do about it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import RegistryError
from .object_model import (
    _GREY,
    DEFAULT_MAX_RENDER_FACES,
    DEFAULT_N_POINTS,
    DEFAULT_SIZE_LIMITS_M,
    ObjectModel,
    _readonly,
)

__all__ = ["ObjectModel", "ObjectRegistry", "RegistryError", "DEFAULT_MAX_RENDER_FACES",
           "grey_registry"]

_OBJECT_KEYS = {"class_id", "mesh", "scale", "color", "symmetries"}




class ObjectRegistry:
    """The registered objects, by class id.

    ``registry["mug"]`` gives the :class:`ObjectModel`; ``"mug" in registry``,
    ``len(registry)``, iteration over the models, ``.class_ids`` and ``.models`` (in
    registration order) work as expected.
    """

    def __init__(self, models: Sequence[ObjectModel]):
        by_id: dict[str, ObjectModel] = {}
        for model in models:
            if model.class_id in by_id:
                other = by_id[model.class_id]
                raise RegistryError(
                    f"duplicate class_id '{model.class_id}' (meshes '{other.mesh_path}' "
                    f"and '{model.mesh_path}'). Give every object a distinct class_id.")
            by_id[model.class_id] = model
        self._by_id = by_id

    @classmethod
    def from_yaml(
        cls,
        path: str | Path,
        max_render_faces: int = DEFAULT_MAX_RENDER_FACES,
        n_points: int = DEFAULT_N_POINTS,
        size_limits_m: tuple[float, float] = DEFAULT_SIZE_LIMITS_M,
    ) -> ObjectRegistry:
        """Load every object listed in an objects YAML file (format: module docstring)."""
        path = Path(path)
        if not path.is_file():
            raise RegistryError(f"objects file '{path}' does not exist. Give the path of "
                                "the objects YAML file (see pose_refiner_ros.mesh.registry "
                                "for its format).")
        try:
            doc = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RegistryError(f"objects file '{path}' is not valid YAML: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("objects"), list):
            got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise RegistryError(f"objects file '{path}': expected a top-level key "
                                f"`objects:` holding a list of objects, got {got}.")
        entries: list[Mapping[str, Any]] = doc["objects"]
        models = []
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            where = f"objects file '{path}', objects[{i}]"
            if not isinstance(entry, dict):
                raise RegistryError(f"{where}: expected a mapping with class_id and mesh, "
                                    f"got {entry!r}.")
            missing = [k for k in ("class_id", "mesh") if k not in entry]
            if missing:
                raise RegistryError(f"{where}: missing key(s) {', '.join(missing)}. Every "
                                    "object needs `class_id` and `mesh`.")
            unknown = sorted(set(entry) - _OBJECT_KEYS)
            if unknown:
                raise RegistryError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                                    f"allowed: {', '.join(sorted(_OBJECT_KEYS))}.")
            class_id = str(entry["class_id"])
            if class_id in seen:
                raise RegistryError(f"objects file '{path}': duplicate class_id "
                                    f"'{class_id}' (objects[{seen[class_id]}] and "
                                    f"objects[{i}]). Give every object a distinct class_id.")
            seen[class_id] = i
            mesh_path = Path(str(entry["mesh"])).expanduser()
            if not mesh_path.is_absolute():
                mesh_path = path.parent / mesh_path
            try:
                models.append(ObjectModel.from_file(
                    class_id, mesh_path, scale=entry.get("scale", 1.0),
                    symmetries=entry.get("symmetries"), color=entry.get("color"),
                    max_render_faces=max_render_faces, n_points=n_points,
                    size_limits_m=size_limits_m))
            except RegistryError as exc:
                raise RegistryError(f"objects file '{path}': {exc}") from None
        return cls(models)

    def __getitem__(self, class_id: str) -> ObjectModel:
        try:
            return self._by_id[class_id]
        except KeyError:
            raise KeyError(f"unknown class_id {class_id!r}; registered: "
                           f"{', '.join(self._by_id) or 'none'}") from None

    def __contains__(self, class_id: object) -> bool:
        return class_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[ObjectModel]:
        return iter(self._by_id.values())

    def __repr__(self) -> str:
        return f"ObjectRegistry({list(self._by_id)})"

    @property
    def class_ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    @property
    def models(self) -> tuple[ObjectModel, ...]:
        return tuple(self._by_id.values())


def grey_registry(registry: ObjectRegistry) -> ObjectRegistry:
    """The same objects with every render mesh coloured flat grey (its colours dropped):
    how an untextured CAD model renders. The given registry is not changed."""
    from dataclasses import replace

    grey = []
    for m in registry:
        colors = np.empty_like(m.vert_colors)
        colors[:] = _GREY
        grey.append(replace(m, vert_colors=_readonly(colors)))
    return ObjectRegistry(grey)
