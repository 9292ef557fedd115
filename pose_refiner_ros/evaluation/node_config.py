"""The node's configuration, offline: what ``eval``, ``eval-bag``, ``make-bag`` and
``adapt`` build instead of a node, from the node's own parameter specs and rules
(``ros.params``), so that the same parameters give the same refiner.

- :func:`load_node_params`: defaults, a ROS params file, overrides, each value checked;
- :func:`load_registry`: an objects YAML or a BOP ``models/`` directory;
- :func:`build_refiner`: the node's :class:`~pose_refiner_ros.refine.refiner.Refiner`;
- :func:`add_node_options`: the command-line options that set node parameters.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["load_node_params", "load_registry", "build_refiner", "add_node_options"]


def load_node_params(params_file: str | os.PathLike | None = None, **overrides):
    """The node's parameters: defaults, then a ROS params file (``/**:`` or any node name
    with ``ros__parameters``), then ``overrides`` (None values ignored); each value is
    checked by the node's own validation.

    Raises:
        ValueError: an invalid value, naming the parameter and the file.
    """
    import yaml

    from ..ros.params import SPECS, NodeParams, validate

    values: dict = {}
    if params_file is not None:
        try:
            doc = yaml.safe_load(Path(params_file).read_text()) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"--params {params_file}: no such file") from None
        sections = [v["ros__parameters"] for v in doc.values()
                    if isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict)]
        if not sections:
            raise ValueError(f"--params {params_file}: no '<node>: ros__parameters:' section "
                             "(see config/refiner.yaml)")
        for sec in sections:
            values.update({k: v for k, v in sec.items() if k in SPECS})
    values.update({k: v for k, v in overrides.items() if v is not None})
    for k, v in values.items():
        if isinstance(SPECS[k].default, float) and isinstance(v, int) and not isinstance(v, bool):
            values[k] = float(v)
        why = validate(k, values[k])
        if why:
            raise ValueError(why + (f" (in {params_file})" if params_file else ""))
    return NodeParams.defaults().with_values(values)


def load_registry(spec: str | os.PathLike):
    """The registered objects: an objects YAML, or ``bop:MODELS_DIR`` (a BOP ``models/``
    directory, or a dataset root containing one; class ids ``obj_000001``...)."""
    spec = str(spec)
    if spec.startswith("bop:"):
        from ..data.bop import registry_from_bop_models

        p = Path(spec[4:])
        return registry_from_bop_models(p / "models" if (p / "models").is_dir() else p)
    from ..mesh.registry import ObjectRegistry
    from ..ros.startup import resolve_path

    try:
        path = resolve_path(spec, "objects")
    except FileNotFoundError as e:
        raise FileNotFoundError(str(e).replace("parameter 'objects'", "--objects")) from None
    return ObjectRegistry.from_yaml(path)


def build_refiner(params, registry):
    """The :class:`Refiner` the node builds from ``params`` (``ros.startup.refiner_from_params``).

    Returns (refiner, model file or None). Raises FileNotFoundError when the mode needs a
    model file that is missing.
    """
    from ..ros.startup import refiner_from_params

    try:
        refiner, model, _ = refiner_from_params(params, registry)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; pass --model PATH, or --mode flow to refine without a "
                                "trained model") from None
    return refiner, model


def add_node_options(p, depth_help: str) -> None:
    """The options of ``eval`` and ``eval-bag`` that set node parameters; each names the
    node default it falls back to (read from the parameter specs)."""
    from ..ros.params import SPECS

    node = {k: spec.default for k, spec in SPECS.items()}
    p.add_argument("--model", help="refiner checkpoint (node parameter model_path; default: "
                   f"--params' value, else {node['model_path']})")
    p.add_argument("--mode", choices=("auto", "learned", "region", "flow", "gcf-adam"),
                   help="refinement mode (node parameter mode; default: --params' value, "
                   f"else {node['mode']}: learned when the model file exists, else region)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (node parameter device; "
                   f"default: --params' value, else {node['device']})")
    p.add_argument("--params", help="the node's ROS params file (default: the node's "
                   "defaults, as in config/refiner.yaml)")
    p.add_argument("--iterations", type=int, help="render-and-compare iterations (node "
                   f"parameter iterations; default: --params' value, else {node['iterations']})")
    p.add_argument("--crop-size", type=int, help="crop side, pixels (node parameter "
                   f"crop_size; default: --params' value, else {node['crop_size']})")
    p.add_argument("--use-depth", action=argparse.BooleanOptionalAction, default=None,
                   help=f"{depth_help} (node parameter use_depth; default: --params' value, "
                   "else off)")
