"""RViz markers of the published objects: a ``visualization_msgs/MarkerArray`` per frame.

Per published object, in the marker namespace named like its TF frame
(``refined_mug_0``), stamped and framed like the image, at the published pose:

- id 0, the mesh: ``MESH_RESOURCE`` with the ``file://`` URI of the registered mesh file
  and the registry's ``scale`` (RViz reads the file itself; nothing but the URI goes over
  the wire); a mesh built in code has no file, so it is sent as a ``TRIANGLE_LIST``
  decimated to at most :data:`MAX_TRIANGLES` triangles (36 KB per object at most).
- id 1, the label: ``TEXT_VIEW_FACING``, ``"<class_id> <score>"``, above the object
  (image up, -y of the camera's optical frame).

:class:`MarkerState` remembers what RViz shows: an object that disappears from one
frame to the next is removed with ``DELETE``, and the first message after
:meth:`MarkerState.reset` (start-up, nobody listening for a while) begins with
``DELETEALL``, which clears what an earlier run left in RViz. The node calls it only
while ``markers`` has a subscriber, as for ``debug_image``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from . import conversions as conv

__all__ = ["MAX_TRIANGLES", "MarkerState", "mesh_uri", "triangle_list_m"]

#: Triangles at most in a ``TRIANGLE_LIST`` marker (a mesh without a file).
MAX_TRIANGLES = 500
#: Mesh colour, RGBA in [0, 1]: the refined pose's green of ``debug_image``.
MESH_RGBA = (0.2, 0.85, 0.2, 0.6)
LABEL_RGBA = (1.0, 1.0, 1.0, 1.0)
MESH_ID, LABEL_ID = 0, 1


def mesh_uri(model) -> str | None:
    """``file://`` URI of ``model``'s mesh file (absolute), or None when it has none
    (a mesh built in code) or the file is gone."""
    path = getattr(model, "mesh_path", None)
    if path is None or not path.is_file():
        return None
    return path.resolve().as_uri()


def triangle_list_m(model, max_triangles: int = MAX_TRIANGLES) -> np.ndarray:
    """``(3 T, 3)`` float64 corners of ``model``'s render mesh, object frame, metres,
    three per triangle, decimated to ``T <= max_triangles`` (quadric decimation)."""
    # writable copies: the registry's arrays are read-only, and the decimation refuses those
    verts, faces = np.array(model.verts_m, np.float64), np.array(model.faces, np.int64)
    if len(faces) > max_triangles:
        import trimesh

        small = trimesh.Trimesh(verts, faces, process=False).simplify_quadric_decimation(
            face_count=max_triangles)
        verts, faces = np.asarray(small.vertices), np.asarray(small.faces)
        if len(faces) > max_triangles:  # the decimation may stop short of its target
            faces = faces[np.linspace(0, len(faces) - 1, max_triangles).astype(int)]
    return verts[faces].reshape(-1, 3)


def _rgba(values):
    from std_msgs.msg import ColorRGBA

    r, g, b, a = values
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


class MarkerState:
    """Builds each frame's ``MarkerArray`` and remembers what RViz shows.

    Args:
        model_of: class id -> registered ``ObjectModel`` (e.g. the node's registry).
        max_triangles: see :func:`triangle_list_m`.
    """

    def __init__(self, model_of: Callable, max_triangles: int = MAX_TRIANGLES):
        self._model_of = model_of
        self._max_triangles = int(max_triangles)
        self._triangles: dict[str, list] = {}  # class id -> [Point], built once
        self._shown: set[str] = set()
        self._fresh = True

    def reset(self) -> None:
        """RViz may show anything: the next message starts with ``DELETEALL``."""
        self._shown = set()
        self._fresh = True

    def update(self, header, objects: Sequence[tuple]):
        """The ``MarkerArray`` of a frame.

        Args:
            header: the image's header (stamp and camera frame).
            objects: ``(name, class_id, T_cam_obj (4, 4), score)`` as published.

        Returns:
            The message, or None when there is nothing to show or to delete.
        """
        from visualization_msgs.msg import Marker, MarkerArray

        markers = []
        if self._fresh:
            markers.append(Marker(header=header, action=Marker.DELETEALL))
        names = {o[0] for o in objects}
        for name in sorted(self._shown - names):
            for mid in (MESH_ID, LABEL_ID):
                markers.append(Marker(header=header, ns=name, id=mid, action=Marker.DELETE))
        for name, class_id, T, score in objects:
            markers += [self._mesh(header, name, class_id, T),
                        self._label(header, name, class_id, T, score)]
        self._shown, self._fresh = names, False
        return MarkerArray(markers=markers) if markers else None

    def _mesh(self, header, name, class_id, T):
        from geometry_msgs.msg import Point, Vector3
        from visualization_msgs.msg import Marker

        model = self._model_of(class_id)
        m = Marker(header=header, ns=name, id=MESH_ID, action=Marker.ADD,
                   pose=conv.matrix_to_pose(T), color=_rgba(MESH_RGBA))
        uri = mesh_uri(model)
        if uri is not None:
            s = float(model.scale)
            m.type, m.mesh_resource = Marker.MESH_RESOURCE, uri
            m.mesh_use_embedded_materials = False
            m.scale = Vector3(x=s, y=s, z=s)
            return m
        if class_id not in self._triangles:
            pts = triangle_list_m(model, self._max_triangles)
            self._triangles[class_id] = [Point(x=float(x), y=float(y), z=float(z))
                                         for x, y, z in pts]
        m.type, m.points = Marker.TRIANGLE_LIST, self._triangles[class_id]
        m.scale = Vector3(x=1.0, y=1.0, z=1.0)
        return m

    def _label(self, header, name, class_id, T, score):
        from geometry_msgs.msg import Point, Pose, Vector3
        from visualization_msgs.msg import Marker

        model = self._model_of(class_id)
        T = np.asarray(T, dtype=np.float64)
        above = T[:3, 3] + np.array([0.0, -(0.5 * model.diameter_m + 0.02), 0.0])
        height = float(np.clip(0.15 * model.diameter_m, 0.01, 0.05))
        return Marker(header=header, ns=name, id=LABEL_ID, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=f"{class_id} {score:.2f}",
                      pose=Pose(position=Point(x=float(above[0]), y=float(above[1]),
                                               z=float(above[2]))),
                      scale=Vector3(x=height, y=height, z=height), color=_rgba(LABEL_RGBA))
