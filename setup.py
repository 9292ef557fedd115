"""Build definition of pose_refiner_ros (ament_python: colcon and pip both use it)."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = "pose_refiner_ros"
SHARE = os.path.join("share", PACKAGE)


def tree(top: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing every file below ``top`` under share/<package>/top."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        files = sorted(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
        if files:
            entries.append((os.path.join(SHARE, dirpath), files))
    return entries


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Learned correspondence-field 6D object pose refinement for ROS 2",
    license="Apache-2.0",
    maintainer="pose_refiner_ros maintainers",
    maintainer_email="pose-refiner-ros@example.org",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (SHARE, ["package.xml"]),
        (os.path.join(SHARE, "launch"), sorted(glob("launch/*.py"))),
        (os.path.join(SHARE, "config"), sorted(glob("config/*.yaml") + glob("config/*.xml"))),
        (os.path.join(SHARE, "rviz"), sorted(glob("rviz/*.rviz"))),
        *tree("models"),
    ],
    # rclpy and the message packages are not listed: they come from a ROS 2
    # distribution or, in the project venv, from scripts/setup_env.sh.
    install_requires=[
        "numpy",
        "torch",
        "trimesh",
        "rtree",
        "fast-simplification",
        "opencv-python-headless",
        "pyyaml",
        "roma",
        "transforms3d",
        "scipy",
        "rosbags",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "scikit-image",  # real photographs for training backgrounds (shipped in its wheel)
        "numba",  # the tracker's line measurements and solve (track/line_kernel.py)
    ],
    extras_require={"test": ["pytest", "pytest-timeout", "pytest-xdist", "hypothesis"]},
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "refiner_node = pose_refiner_ros.ros.node_main:main",
            "refiner_lifecycle_node = pose_refiner_ros.ros.node_main:main_managed",
            "pose-refiner = pose_refiner_ros.cli:main",
        ],
    },
)
