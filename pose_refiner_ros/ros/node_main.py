"""``refiner_node`` and ``refiner_lifecycle_node``: the executables' start-up, up to a
running :class:`RefinerNode` (or ``ManagedRefinerNode``).

Everything that can be checked before rclpy is, so that each mistake ends in one line
naming the input and exit code 1, never a traceback:

1. ROS 2's Python packages are importable (:mod:`.availability`);
2. the params files are readable, and no value given for one of our parameters (in a
   params file or with ``-p``) has the wrong type (:mod:`.ros_args`);
3. ``rclpy.init`` accepts the arguments (anything rcl still refuses, in one line);
4. the node loads its objects and model (:class:`~.startup.StartupError`).

This module imports no ROS at import time: ``node`` imports rclpy and the messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

from .availability import ros_missing_message
from .ros_args import check, node_fqn, number_overrides

PROGRAM = "refiner_node"


def _fail(why: str) -> int:
    print(f"{PROGRAM}: cannot start: {why}", file=sys.stderr, flush=True)
    return 1


def _rcl_reason(error: Exception) -> str:
    """The part of an RCLError that names the argument and the problem."""
    text = str(error).replace("failed to initialize rcl: ", "")
    return re.sub(r", at /\S+:\d+", "", text).strip().rstrip(".") or type(error).__name__


@contextlib.contextmanager
def _stderr_kept_back():
    """Hold back what is written to file descriptor 2 (rcl logs its own line before
    raising, and ours says the same in one line); yields a file to read it from after."""
    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile(mode="w+")
    os.dup2(held.fileno(), 2)
    try:
        yield held
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)


def main(args: list | None = None, managed: bool = False) -> int:
    """Entry point of ``refiner_node`` (``ros2 run pose_refiner_ros refiner_node``).

    Args:
        args: the command line, program name first (default ``sys.argv``).
        managed: run the lifecycle node (``ros.lifecycle``) instead of the plain one.

    Returns:
        0 after a clean shutdown (SIGINT), 1 when the node cannot start.
    """
    argv = list(sys.argv if args is None else args)
    why = ros_missing_message()
    if why:
        return _fail(why)
    fqn = node_fqn(argv)
    why = check(argv, fqn)
    if why:
        return _fail(why)

    import rclpy
    from rclpy.executors import ExternalShutdownException
    import rclpy.logging
    from rclpy.parameter import Parameter

    from .node import RefinerNode, StartupError

    if managed:
        from .lifecycle import ManagedRefinerNode as RefinerNode

    try:
        with _stderr_kept_back() as kept:
            rclpy.init(args=argv)
    except Exception as e:  # rcl refused an argument check() does not know about
        return _fail(f"the ROS arguments were refused: {_rcl_reason(e)}")
    sys.stderr.write(kept.read())  # nothing refused: what rcl said (warnings) goes out
    overrides = [Parameter(n, value=v) for n, v in number_overrides(argv, fqn).items()]
    node = None
    status = 0
    try:
        node = RefinerNode(parameter_overrides=overrides)
        rclpy.spin(node)
    except StartupError as e:
        rclpy.logging.get_logger("pose_refiner").fatal(f"cannot start: {e}")
        status = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A timer's callback (diagnostics) can run after a signal has shut the context
        # down, and its publish then fails: that is a normal stop, not a failure.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status


def main_managed(args: list | None = None) -> int:
    """Entry point of ``refiner_lifecycle_node``: :func:`main` with the managed node."""
    return main(args, managed=True)


if __name__ == "__main__":
    sys.exit(main())
