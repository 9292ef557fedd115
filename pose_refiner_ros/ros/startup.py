"""What the node loads once, at start-up: the objects YAML, the refiner with its model,
and the contour models of the RGB refinement; and where a path parameter's file is
(:func:`resolve_path`) and which refiner the parameters build (:func:`refiner_from_params`,
shared with ``pose-refiner eval`` and ``eval-bag``).

:func:`load_refiner` turns every failure into a :class:`StartupError` whose message
names the file or parameter and the fix; ``ros.node_main`` prints it as one line and
exits with code 1 (README, "Behaviour", Start-up). rclpy is not imported: the logger is
the node's.
"""

from __future__ import annotations

from dataclasses import dataclass
import time

__all__ = ["Loaded", "StartupError", "load_refiner", "package_roots", "resolve_path",
           "refiner_from_params"]


class StartupError(RuntimeError):
    """The node cannot start; the message names the file or parameter and the fix."""


@dataclass(frozen=True)
class Loaded:
    """What :func:`load_refiner` loaded.

    Attributes:
        registry: the :class:`~pose_refiner_ros.mesh.registry.ObjectRegistry`.
        refiner: the :class:`~pose_refiner_ros.refine.refiner.Refiner`.
        mode: the mode that runs (``auto`` resolved).
        model_file: the checkpoint read, or None (training-free modes).
        objects_file: the objects YAML read.
    """

    registry: object
    refiner: object
    mode: str
    model_file: str | None
    objects_file: str


def load_refiner(p, logger) -> Loaded:
    """Load what the node's parameters ``p`` name, logging to ``logger`` (a node's).

    Raises:
        StartupError: the objects YAML, a mesh, the model or the contour models cannot
            be loaded, or the refiner settings are invalid.
    """
    from ..mesh.registry import ObjectRegistry

    try:
        objects = resolve_path(p.objects_yaml, "objects_yaml")
    except FileNotFoundError as e:
        raise StartupError(
            f"{e}; set the parameter objects_yaml to your objects YAML "
            "(see README, 'Registering a mesh')"
        ) from None
    try:
        registry = ObjectRegistry.from_yaml(objects)
    except Exception as e:  # RegistryError names the file and the fix; others get context
        raise StartupError(
            f"objects YAML {objects} (parameter objects_yaml) could not be loaded: {e}"
        ) from None
    if len(registry.class_ids) == 0:
        raise StartupError(f"objects YAML {objects} registers no objects; add at least one entry")

    try:
        refiner, model, mode = refiner_from_params(p, registry)
    except FileNotFoundError as e:
        raise StartupError(
            f"{e}; train a model (`pose-refiner train`, see README), point the "
            "parameter model_path at a checkpoint, or set mode:=region (or auto) to refine "
            "without a trained model"
        ) from None
    except ValueError as e:
        raise StartupError(f"invalid refiner settings: {e}") from None
    except Exception as e:
        raise StartupError(
            f"model {p.model_path} (parameter model_path) could not be loaded: {e}"
        ) from None
    if not p.use_depth and mode in ("learned", "region") and (
            refiner.cfg.region_polish or refiner.cfg.consensus_starts):
        # The RGB refinement's render-free region steps need every object's contour
        # model: built (or loaded from the cache) now, not on the first frame.
        t0 = time.monotonic()
        try:
            for c in registry.class_ids:
                refiner.viewpoint_model(c)
        except Exception as e:
            raise StartupError(f"contour models of the objects in {objects} could not "
                               f"be built: {e}") from None
        logger.info(
            f"contour models of {len(registry.class_ids)} object(s) ready in "
            f"{time.monotonic() - t0:.1f} s (built once per mesh, then cached)")
    from ..track.measure import compile_kernels

    # The tracker's and the render-free region steps' compiled loops (Numba): compiled
    # on the first start on a machine, loaded from its cache after; now, not on a frame.
    logger.info(f"measurement kernels ready in {compile_kernels():.1f} s")
    if refiner.estimator is not None:
        t0 = time.monotonic()
        refiner.estimator.warm_up(refiner.cfg.crop_size)
        logger.info(f"field estimator ({refiner.estimator.name}) ready in "
                    f"{time.monotonic() - t0:.1f} s")
    if p.mode == "auto" and model is None:
        logger.warning(
            f"mode auto: no trained model at {p.model_path}; refining with the "
            "training-free region (silhouette) mode (less accurate). Train one "
            "(`pose-refiner train`) or set model_path."
        )
    return Loaded(registry, refiner, mode, str(model) if model is not None else None,
                  str(objects))


def package_roots() -> list:
    """Where bundled files (``config/``, ``models/``) are looked up, in order: the
    package's share directory (a colcon or pip install) and the source tree."""
    from pathlib import Path

    roots = []
    try:
        from ament_index_python.packages import get_package_share_directory

        roots.append(Path(get_package_share_directory("pose_refiner_ros")))
    except Exception:  # not installed in an ament prefix, or ament_index_python missing
        pass
    source = Path(__file__).resolve().parents[2]
    if (source / "package.xml").is_file():
        roots.append(source)
    return roots


def resolve_path(value: str, name: str):
    """The file a path parameter names, as an absolute ``Path``.

    An absolute path is taken as is; a relative one is looked up in the working
    directory, then in each of :func:`package_roots`.

    Raises:
        FileNotFoundError: naming the parameter and every place looked in, or the
            directory found where a file was expected.
    """
    from pathlib import Path

    if not value:
        raise FileNotFoundError(f"parameter {name!r} is empty")
    path = Path(value).expanduser()
    candidates = (
        [path] if path.is_absolute() else [Path.cwd() / path] + [r / path for r in package_roots()]
    )
    candidates = list(dict.fromkeys(c.resolve() for c in candidates))
    for c in candidates:
        if c.is_file():
            return c.resolve()
    folders = [c for c in candidates if c.is_dir()]
    if folders:
        raise FileNotFoundError(
            f"parameter {name!r}: {folders[0]} is a directory, not a file"
        )
    raise FileNotFoundError(
        f"parameter {name!r}: file {value!r} not found (looked in: "
        f"{', '.join(str(c) for c in candidates)})"
    )


def refiner_from_params(params, registry):
    """Build the :class:`~pose_refiner_ros.refine.refiner.Refiner` that ``params`` describe.

    One implementation for the node and for ``pose-refiner eval-bag``, so that offline
    evaluation runs exactly what the node runs. Mode ``auto`` is ``learned`` when
    ``model_path`` resolves to a file, else ``region``.

    Returns:
        (refiner, model file or None, the mode that runs).

    Raises:
        FileNotFoundError: mode ``learned`` / ``gcf-adam`` and no model file.
        ValueError: invalid settings (the message names them).
    """
    from ..refine.refiner import Refiner, RefinerConfig

    mode = params.mode
    model = None
    if mode not in ("flow", "region"):
        try:
            model = resolve_path(params.model_path, "model_path")
        except FileNotFoundError:
            if mode != "auto":
                raise
        if mode == "auto":
            mode = "learned" if model is not None else "region"
    cfg = RefinerConfig(mode=mode, iterations=params.iterations, crop_size=params.crop_size,
                        use_depth=params.use_depth, device=params.device,
                        cpu_threads=params.cpu_threads)
    if mode in ("flow", "region"):
        return Refiner(registry, cfg), None, mode
    return Refiner.from_checkpoint(model, registry, cfg), model, mode
