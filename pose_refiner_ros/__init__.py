"""pose_refiner_ros: learned correspondence-field 6D pose refinement for ROS 2.

Architecture (each sub-package is one concept; only ``ros`` imports ROS):

- ``geometry``   SO(3)/SE(3) maths, pinhole camera, zoom-in crops.
- ``mesh``       the object registry (YAML -> meshes in metres, symmetries).
- ``render``     batched triangle rasterizer (torch default, pytorch3d optional).
- ``net``        the correspondence-field network.
- ``solver``     weighted Gauss-Newton / Levenberg-Marquardt pose solve on SE(3).
- ``refine``     the render-and-compare loop and its modes (the public ``Refiner``).
- ``data``       synthetic sample generation, procedural meshes, BOP loaders.
- ``train``      training loop and checkpoints.
- ``evaluation`` metrics, dataset and rosbag evaluation.
- ``bench``      the benchmark.
- ``ros``        the thin ROS 2 node layer (messages <-> core types).

Conventions (the only ones used anywhere in the package):

- Camera axes are OpenCV's: x right, y down, z forward (the ROS optical frame).
- Column vectors; a pose ``T_a_b`` is a 4x4 homogeneous matrix mapping points
  expressed in frame ``b`` into frame ``a``: ``p_a = T_a_b @ p_b``.
  ``T_cam_obj`` maps object-model points into the camera optical frame.
- Metres everywhere; meshes in other units are scaled once, at registration.
- Pixels: ``(u, v)`` = (column, row); the centre of the top-left pixel is (0, 0).
- Quaternions are ``(x, y, z, w)`` (the ROS and roma order) wherever they appear.
- Twists ``xi`` in se(3) are ``(v, w)``: translation part first, rotation second.
"""

__version__ = "0.1.0"
