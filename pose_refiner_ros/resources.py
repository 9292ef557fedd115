"""Where the package's data files are: the source tree, or ``share/`` of an installed package.

Both a source checkout (``pip install -e .``, ``make``) and a colcon install (files under
``share/pose_refiner_ros``) are supported; the first that exists wins.
"""

from __future__ import annotations

from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """The directory holding ``config/``, ``launch/`` and ``models/``."""
    if (_SOURCE_ROOT / "package.xml").is_file() and (_SOURCE_ROOT / "models").is_dir():
        return _SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("pose_refiner_ros"))
    except Exception:  # ament index absent or package not installed through it
        return _SOURCE_ROOT


def default_model_path() -> Path:
    """The shipped network checkpoint."""
    return share_dir() / "models" / "refiner.pt"
