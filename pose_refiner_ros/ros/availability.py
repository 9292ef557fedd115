"""Whether ROS 2's Python packages are importable, said in one line when they are not.

The ROS-free core installs into any virtual environment (README, "Into a plain virtual
environment"); the node and the demo also need rclpy and the message packages, which
come from ``make setup`` or from a sourced ROS 2 distribution. Pure Python.
"""

from __future__ import annotations

import importlib

#: What the node and the demo import (tf2_msgs and vision_msgs: built by ``make setup``).
ROS_MODULES = (
    "rclpy",
    "rcl_interfaces.msg",
    "std_msgs.msg",
    "sensor_msgs.msg",
    "geometry_msgs.msg",
    "diagnostic_msgs.msg",
    "tf2_msgs.msg",
    "vision_msgs.msg",
    "visualization_msgs.msg",
)


def missing_ros_modules(modules: tuple = ROS_MODULES) -> list:
    """The packages of ``modules`` that cannot be imported, each with the reason when it
    is not simply absent (e.g. a shared library that is not found)."""
    missing = []
    for name in modules:
        package = name.split(".")[0]
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] == package:
                missing.append(package)
            else:
                missing.append(f"{package} ({e})")
        except ImportError as e:
            missing.append(f"{package} ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    return list(dict.fromkeys(missing))


def ros_missing_message() -> str | None:
    """One line saying which ROS 2 packages are missing and the two ways to get them, or
    None when all are importable."""
    missing = missing_ros_modules()
    if not missing:
        return None
    return (
        f"ROS 2's Python packages are missing ({', '.join(missing)} cannot be imported); "
        "get them either with `make setup` in the repository (then use .venv/bin/), or by "
        "sourcing a ROS 2 distribution (e.g. `source /opt/ros/jazzy/setup.bash`) and "
        "`rosdep install --from-paths . --ignore-src -y` (README, Install)"
    )
