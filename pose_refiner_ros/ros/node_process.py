"""refiner_node as a child process, started as the launch file starts it, in a ROS
environment of its own: the command line, start and clean stop, and the environment
(its own domain, localhost-only discovery, the installed Fast DDS large-data profile).
Used by ``pose-refiner demo``, ``scripts/node_rate.py`` and the node tests.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys

from pose_refiner_ros.resources import share_dir

__all__ = ["node_command", "node_launch_command", "start_node", "stop_node",
           "large_data_profile", "ros_env", "ENV_KEYS", "LARGE_DATA_PROFILE_NAME"]


def node_command() -> list:
    """How to start refiner_node: the console script next to this interpreter, else
    ``python -m pose_refiner_ros.ros.node_main``."""
    script = Path(sys.executable).with_name("refiner_node")
    if script.is_file():
        return [str(script)]
    found = shutil.which("refiner_node")
    return [found] if found else [sys.executable, "-m", "pose_refiner_ros.ros.node_main"]


def node_launch_command(params_file: Path, namespace: str, overrides: dict,
                        remap: dict | None = None) -> list:
    """``refiner_node --ros-args ...`` as ``launch/refiner.launch.py`` builds it: node
    name, namespace, params file, parameter overrides and topic remappings."""
    cmd = node_command() + [
        "--ros-args",
        "-r",
        "__node:=pose_refiner",
        "-r",
        f"__ns:=/{namespace}",
        "--params-file",
        str(params_file),
    ]
    for k, v in overrides.items():
        cmd += ["-p", f"{k}:={v}"]
    for k, v in (remap or {}).items():
        cmd += ["-r", f"{k}:={v}"]
    return cmd


def start_node(params_file: Path, namespace: str, overrides: dict, env: dict, log_path: Path):
    """Start the node as the launch file would; its output goes to ``log_path``."""
    cmd = node_launch_command(params_file, namespace, overrides)
    log = open(log_path, "w")
    return subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    ), cmd


def stop_node(proc, timeout: float = 10.0) -> int:
    """SIGINT (clean shutdown), then SIGKILL if it does not exit in ``timeout`` s; returns
    the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


#: The Fast DDS profile installed with the package (``config/fastdds_large_data.xml``):
#: shared-memory segments that hold a whole camera image. With the default 512 KB
#: segment, Fast DDS cannot deliver a sample larger than that (a 640x480 rgb8 image is
#: 900 KB) through shared memory, and over UDP a best-effort reader (the sensor-data QoS
#: of camera topics) loses every sample that the socket buffer cannot hold at once:
#: best-effort images above ~512 KB never arrive. Reliable readers are not affected
#: (fragments are resent).
LARGE_DATA_PROFILE_NAME = "fastdds_large_data.xml"


def large_data_profile() -> Path:
    """Path of the installed Fast DDS large-data profile."""
    path = share_dir() / "config" / LARGE_DATA_PROFILE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall pose_refiner_ros (colcon build or pip install .)"
        )
    return path


def ros_env(base: dict | None = None) -> dict:
    """The environment of the demo's (and the node tests') ROS processes: ``base``
    (default ``os.environ``) with a domain of its own (from the pid) unless
    ``ROS_DOMAIN_ID`` is set, localhost-only discovery, and, unless a Fast DDS profile of
    the user's is set, the installed large-data profile (:func:`large_data_profile`)."""
    env = dict(os.environ if base is None else base)
    # 1..101: the domain ids whose DDS ports stay below Linux's ephemeral port range
    # (32768 and up), where a socket the system handed out could hold a discovery port.
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if env.get("ROS_DISTRO") == "humble":
        env["ROS_LOCALHOST_ONLY"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not (env.get("FASTDDS_DEFAULT_PROFILES_FILE") or env.get("FASTRTPS_DEFAULT_PROFILES_FILE")):
        # Fast DDS 2 (Humble, Iron, Jazzy) reads FASTRTPS_..., Fast DDS 3 (Kilted and the
        # wheels) FASTDDS_... and warns that FASTRTPS_... is deprecated.
        fast_dds_2 = env.get("ROS_DISTRO") in ("humble", "iron", "jazzy")
        key = "FASTRTPS_DEFAULT_PROFILES_FILE" if fast_dds_2 else "FASTDDS_DEFAULT_PROFILES_FILE"
        env[key] = str(large_data_profile())
    return env


ENV_KEYS = (
    "ROS_DOMAIN_ID",
    "ROS_AUTOMATIC_DISCOVERY_RANGE",
    "ROS_LOCALHOST_ONLY",
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
)
