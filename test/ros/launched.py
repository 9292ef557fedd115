"""The project's launch files evaluated by the stand-in launch service
(``launch_standin``), and the node processes they describe made runnable here.

``ros2 launch`` would start ``<prefix>/lib/pose_refiner_ros/<executable>``, the console
script ``setup.py`` declares (``setup.cfg`` installs scripts there); in the venv the
same script is in ``bin/``, and without it ``python -m <its module>`` runs the same
``main``.
"""

from __future__ import annotations

from pathlib import Path
import re
import sys

import launch_standin

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_DIR = ROOT / "launch"


def console_scripts() -> dict:
    """name -> ``module:function`` of setup.py's console scripts."""
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"([\w-]+) = ([\w.]+:\w+)"', text))


def launch(file: str, arguments: dict | None = None, tmp_dir=None):
    """``ros2 launch pose_refiner_ros <file> name:=value ...``: (nodes, context)."""
    return launch_standin.launch(LAUNCH_DIR / file, arguments, tmp_dir)


def command(node) -> list:
    """The command line that starts ``node`` (a ``LaunchedNode``) here."""
    assert node.package == "pose_refiner_ros", node.package
    scripts = console_scripts()
    assert node.executable in scripts, (
        f"{node.executable!r} is not a console script of setup.py ({sorted(scripts)})")
    script = Path(sys.executable).with_name(node.executable)
    if script.is_file():
        exe = [str(script)]
    else:  # not installed yet (setup.py changed since the venv was built)
        module, func = scripts[node.executable].split(":")
        exe = [sys.executable, "-c", f"import sys; from {module} import {func}; "
               f"sys.argv[0] = {node.executable!r}; sys.exit({func}())"]
    return exe + node.ros_args
