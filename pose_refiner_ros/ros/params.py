"""The node's parameters, declared in ONE place.

``PARAMS`` lists every parameter with its default, type, description, whether it can
be changed while the node runs, and its validation; ``config/refiner.yaml`` sets the
same names (a test keeps the two in step). :func:`declare` declares them on a node and
returns a :class:`NodeParams`; :func:`validate` is what the node's set-parameters
callback calls, so a bad value is refused with a reason both at start-up and later.
Types are checked here too, not by rclpy (the parameters are declared with dynamic
typing), so that a refusal names the parameter and the types in words.

Parameters marked ``read_only`` (files, device, mode) are fixed once the model is
loaded: change them by restarting the node.

The specification is pure Python; rclpy is imported only by :func:`declare`, so tests
of the launch and config files need no ROS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from . import param_checks as checks
from .param_checks import describe_value, range_error, type_error  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter.

    Attributes:
        name: the parameter name (as in ``config/refiner.yaml``).
        default: default value; its Python type is the parameter's type.
        description: one line for ``ros2 param describe`` and the README.
        read_only: True when it cannot change after start-up.
        bounds: ``(lo, hi)``, the inclusive range of a number parameter (the README
            table shows it); None for the others.
        check: returns None when a value (of the right type, in range) is valid, else
            the reason it is not.
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    bounds: tuple | None = None
    check: Callable[[Any], str | None] | None = None


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "objects_yaml",
        "models/demo/objects.yaml",
        "objects YAML (class ids -> meshes); a relative path is looked up in the "
        "working directory, then the package share directory, then the source tree",
        read_only=True,
    ),
    ParamSpec(
        "model_path",
        "models/refiner.pt",
        "refiner checkpoint (mode 'learned' / 'gcf-adam'); resolved like objects_yaml",
        read_only=True,
    ),
    ParamSpec(
        "mode",
        "auto",
        "'auto' ('learned' when model_path exists, else 'region' with a warning), 'learned' "
        "(the network, with the region modality in RGB), 'region' (training-free "
        "silhouette alignment, no model needed), 'flow' (training-free optical flow) or "
        "'gcf-adam' (the paper's slow procedure)",
        read_only=True,
        check=checks.one_of("auto", "learned", "region", "flow", "gcf-adam"),
    ),
    ParamSpec(
        "device",
        "auto",
        "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'",
        read_only=True,
        check=checks.device,
    ),
    ParamSpec(
        "cpu_threads",
        1,
        "torch CPU threads for refinement (0: torch's default, one per core); 1 is fastest "
        "on a small CPU shared with other nodes",
        read_only=True,
        bounds=(0, 256),
    ),
    ParamSpec(
        "iterations",
        4,
        "render-and-compare iterations per frame, at most (each costs ~60 ms per object "
        "on a small CPU)",
        bounds=(1, 20),
    ),
    ParamSpec(
        "crop_size",
        128,
        "side of the zoom-in crop, pixels (multiple of 8)",
        bounds=(32, 512),
        check=checks.multiple_of_8,
    ),
    ParamSpec(
        "confidence_threshold",
        0.3,
        "objects whose refinement scores below this (or diverged) are low confidence",
        bounds=(0.0, 1.0),
    ),
    ParamSpec(
        "low_confidence_action",
        "drop",
        "what happens to a low-confidence object: 'drop' (not published) or "
        "'publish_coarse' (published with its coarse pose and its low score)",
        check=checks.one_of("drop", "publish_coarse"),
    ),
    ParamSpec(
        "target_class_id",
        "",
        "class published on refined_pose; empty: the highest-confidence object",
    ),
    ParamSpec(
        "use_depth",
        False,
        "subscribe to 'depth' and refine with depth and point-to-plane residuals (RGB-D); "
        "frames then wait for a depth image with the image's stamp",
        read_only=True,
    ),
    ParamSpec(
        "image_transport",
        "raw",
        "how the colour image arrives: 'raw' (sensor_msgs/Image on 'image') or "
        "'compressed' (sensor_msgs/CompressedImage, JPEG or PNG, on '<image>/compressed', "
        "image_transport's name: the 'image' topic after remapping, plus '/compressed')",
        read_only=True,
        check=checks.one_of("raw", "compressed"),
    ),
    ParamSpec("publish_tf", True, "broadcast one TF frame per refined object"),
    ParamSpec(
        "tf_prefix",
        "refined_",
        "TF child frames are '<tf_prefix><class_id>_<k>' (see README)",
        check=checks.tf_prefix,
    ),
    ParamSpec(
        "sync_mode",
        "exact",
        "how detections (and depth) are matched to images: 'exact' (the image's stamp, "
        "within sync_tolerance_s) or 'approximate' (the image nearest in stamp within "
        "sync_slop_s, as message_filters' ApproximateTime: for detectors that re-stamp "
        "their output)",
        check=checks.one_of("exact", "approximate"),
    ),
    ParamSpec(
        "sync_tolerance_s",
        0.005,
        "sync_mode exact: largest stamp difference between an image and its detections / "
        "depth, s (room for rounding)",
        bounds=(0.0, 1.0),
    ),
    ParamSpec(
        "sync_slop_s",
        0.1,
        "sync_mode approximate: largest stamp difference between an image and the "
        "detections / depth matched to it, s",
        bounds=(0.0, 1.0),
    ),
    ParamSpec(
        "sync_queue_size",
        10,
        "messages of each input kept while waiting for a stamp match",
        read_only=True,
        bounds=(1, 1000),
    ),
    ParamSpec(
        "max_objects",
        10,
        "objects refined per frame at most (the highest detection scores are kept)",
        bounds=(1, 100),
    ),
    ParamSpec(
        "tracking",
        False,
        "follow the last published objects on new images while no new detections arrive, "
        "with the render-free tracker (a full refinement re-registers a lost object)",
    ),
    ParamSpec(
        "tracking_lost_below",
        0.3,
        "a tracked object whose tracking quality (region score) falls below this is not "
        "published; it is re-registered by a full refinement, and reported lost if that "
        "fails",
        bounds=(0.0, 1.0),
    ),
    ParamSpec(
        "tracking_reregister_below",
        0.8,
        "RGB only (without use_depth): a tracked object whose tracking quality falls "
        "below this (and not below tracking_lost_below) is re-registered by a full "
        "refinement in the background: the track goes on meanwhile, and a confident "
        "result corrects it when it lands",
        bounds=(0.0, 1.0),
    ),
    ParamSpec(
        "tracking_reregister_sigma",
        0.15,
        "RGB only: a tracked object whose pose covariance claims a distance standard "
        "deviation above this many object sizes (its bounding box's diagonal) is "
        "re-registered in the background too, whatever its tracking quality; 0: off",
        bounds=(0.0, 10.0),
    ),
    ParamSpec(
        "tracking_refine_every",
        0,
        "a full refinement of the tracked objects runs every this many tracked frames "
        "anyway; 0 (default): only when an object is lost (a full refinement blocks the "
        "worker for ~300 ms per object on a small CPU, and frames are skipped meanwhile)",
        bounds=(0, 100000),
    ),
    ParamSpec(
        "tracking_max_age_s",
        2.0,
        "tracking stops this long (image time) after the last detections; 0: never",
        bounds=(0.0, 3600.0),
    ),
    ParamSpec(
        "coarse_pose_class_id",
        "",
        "class id of the single object whose coarse pose comes on 'coarse_pose'",
    ),
    ParamSpec(
        "diagnostics_period_s",
        1.0,
        "period of /diagnostics messages, s",
        read_only=True,
        bounds=(0.05, 60.0),
    ),
)

SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


@dataclass(frozen=True)
class NodeParams:
    """The values of :data:`PARAMS` (see each one's description there)."""

    objects_yaml: str
    model_path: str
    mode: str
    device: str
    cpu_threads: int
    iterations: int
    crop_size: int
    confidence_threshold: float
    low_confidence_action: str
    target_class_id: str
    use_depth: bool
    image_transport: str
    publish_tf: bool
    tf_prefix: str
    sync_mode: str
    sync_tolerance_s: float
    sync_slop_s: float
    sync_queue_size: int
    max_objects: int
    tracking: bool
    tracking_lost_below: float
    tracking_reregister_below: float
    tracking_reregister_sigma: float
    tracking_refine_every: int
    tracking_max_age_s: float
    coarse_pose_class_id: str
    diagnostics_period_s: float

    @classmethod
    def defaults(cls) -> NodeParams:
        return cls(**{p.name: p.default for p in PARAMS})

    def with_values(self, values: dict) -> NodeParams:
        return replace(self, **values)


assert [f.name for f in fields(NodeParams)] == [p.name for p in PARAMS], "keep them in step"


def value_error(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``spec`` (its type, its range, its own rule),
    in words without the parameter's name, or None."""
    why = type_error(spec.default, value)
    if why:
        return why
    if isinstance(spec.default, float):
        value = float(value)
    return range_error(spec.default, spec.bounds, value) or (
        spec.check(value) if spec.check is not None else None)


def validate(name: str, value: Any, running: bool = False) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is.

    Args:
        running: True for a change after start-up (``read_only`` ones are refused).
    """
    spec = SPECS.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time)
    if type_error(spec.default, value) is None and running and spec.read_only:
        return f"parameter {name!r} is fixed at start-up; restart the node to change it"
    why = value_error(spec, value)
    return f"parameter {name!r}: {why}" if why else None


def declare(node) -> NodeParams:
    """Declare every parameter on ``node`` and return their values.

    Raises:
        ValueError: a value given at start-up (params file, command line) is invalid;
            the message names the parameter and what was expected.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    values = {}
    for spec in PARAMS:
        # Typed by validate(), not by rclpy: its refusals read "expected '2' got '4'".
        descriptor = ParameterDescriptor(
            description=spec.description, read_only=spec.read_only, dynamic_typing=True
        )
        try:
            value = node.declare_parameter(spec.name, spec.default, descriptor).value
        except Exception as e:  # rclpy refused the value given at start-up
            raise ValueError(f"parameter {spec.name!r}: {e}") from None
        why = validate(spec.name, value)
        if why:
            raise ValueError(f"{why} (set it in the params file or with -p {spec.name}:=...)")
        values[spec.name] = float(value) if isinstance(spec.default, float) else value
    return NodeParams(**values)
