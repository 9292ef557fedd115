"""Shared helpers of the node tests.

Tests that need rclpy and the message packages call :func:`require_ros`: without them
the test is skipped, unless ``POSE_REFINER_REQUIRE_ROS=1`` (set by ``make test``), in
which case it fails.
"""

from __future__ import annotations

import importlib
import os

import pytest

ROS_MODULES = (
    "rclpy",
    "sensor_msgs.msg",
    "geometry_msgs.msg",
    "diagnostic_msgs.msg",
    "tf2_msgs.msg",
    "vision_msgs.msg",
    "visualization_msgs.msg",
)


def require_ros() -> None:
    """Skip (or fail under ``make test``) when rclpy or a message package is missing."""
    try:
        for name in ROS_MODULES:
            importlib.import_module(name)
    except ImportError as exc:
        if os.environ.get("POSE_REFINER_REQUIRE_ROS") == "1":
            raise
        pytest.skip(f"ROS 2 Python packages missing ({exc}); run `make test`")


def domain_id(first: int, count: int) -> int:
    """A DDS domain id for this test process among ``first .. first + count - 1``.

    The tests share out 1..100, the ids whose DDS ports lie below Linux's ephemeral port
    range (ROS 2's "About Domain ID"): node tests 1..70, the demo 71..90, the
    middleware test 91..100.

    Under pytest-xdist (``make test`` runs two workers) the range is split between the
    workers, so that two tests running at once never share a domain and see each
    other's nodes; within a worker's share the process id picks one, so that two test
    sessions on one machine are unlikely to meet either."""
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0) % workers
    share = max(count // workers, 1)
    return first + worker * share + os.getpid() % share


def isolate_ros_env(env: dict) -> dict:
    """A domain id of this test session's own, localhost-only discovery, and the Fast
    DDS profile that lets best-effort camera images through (see
    ``config/fastdds_large_data.xml``)."""
    from pose_refiner_ros.ros.node_process import ros_env

    return ros_env(base={**env, "ROS_DOMAIN_ID": str(domain_id(1, 70))})
