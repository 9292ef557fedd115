"""The node's background re-registrations, in a process of their own.

While tracking, an object whose tracking quality drops is refined again by the full
refiner from its tracked pose (``ros.tracking``). That refinement takes about 200 ms on
a small CPU, six camera frames at 30 Hz; the tracker must go on meanwhile. In a thread
of the node's process the two shared Python's interpreter lock: the refiner's many short
operations held it while the tracker's waited (measured on this project's 2-core CPU,
three tracked objects at 30 Hz: 6 -> 20-28 ms per object and frame, 15-25 % of the
frames published instead of 86 %). So the re-registrations run in a child process (the
standard library's ``multiprocessing``, started with ``spawn``: a fresh interpreter, no
ROS in it), which loads the same objects YAML and builds the same refiner from the
node's parameters (``ros.startup.refiner_from_params``), and takes one job at a time. It
runs at a lower scheduling priority (``nice`` 10): the tracker, which must keep up with
the camera, gets the CPU first.

The child ends when the node closes it, or on its own when the node's end of the pipe
goes away (the node died).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import multiprocessing as mp
from pathlib import Path
import threading

import numpy as np

__all__ = ["Reregistered", "BackgroundRefiner"]


@dataclass(frozen=True)
class Reregistered:
    """One object's re-registration: ``T_cam_obj`` (4, 4), its ``score``, ``diverged``."""

    T_cam_obj: np.ndarray
    score: float
    diverged: bool


def _serve(conn, objects_file: str, params) -> None:
    """The child: build the refiner, then answer jobs until the pipe closes."""
    import os

    import torch

    from ..mesh.registry import ObjectRegistry
    from .startup import refiner_from_params

    # The tracker is the node's real-time work; this process takes what CPU it leaves.
    try:
        os.nice(10)
    except OSError:
        pass

    torch.set_num_threads(max(1, params.cpu_threads))
    try:
        registry = ObjectRegistry.from_yaml(Path(objects_file))
        refiner, _, _ = refiner_from_params(params, registry)
        if refiner.estimator is not None:  # its tracing, before the first job
            refiner.estimator.warm_up(refiner.cfg.crop_size)
        conn.send(("ready", None))
    except Exception as e:  # reported by the node, which then re-registers in its worker
        conn.send(("failed", repr(e)))
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return  # the node is gone
        if job is None:
            return
        image, K, depth, objects, settings = job
        try:
            if (refiner.cfg.iterations, refiner.cfg.crop_size) != settings:
                from ..refine.refiner import Refiner

                cfg = replace(refiner.cfg, iterations=settings[0], crop_size=settings[1])
                refiner = Refiner(registry, cfg, refiner.net)
            res = refiner.refine(image, K, objects, depth_m=depth, restarts=False)
            answer = ("done", [Reregistered(np.asarray(r.T_cam_obj), float(r.score),
                                            bool(r.diverged)) for r in res])
        except Exception as e:
            answer = ("error", repr(e))
        try:
            conn.send(answer)
        except (OSError, ValueError):
            return  # the node is gone


class BackgroundRefiner:
    """A child process that refines one job at a time (module docstring).

    Args:
        objects_file: the objects YAML the node loaded.
        params: the node's ``NodeParams`` (the refiner is built from them as the node's).

    ``submit`` hands a job over without waiting; ``poll`` returns its answer once there
    is one: ``("done", [Reregistered, ...])``, ``("error", message)``; ``state`` is
    ``"starting"``, ``"ready"``, ``"busy"`` or ``"failed: ..."``.
    """

    def __init__(self, objects_file, params):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, str(objects_file), params),
                                 name="pose_refiner_reregistration", daemon=True)
        self._proc.start()
        child.close()
        self._lock = threading.Lock()
        self.state = "starting"

    def _read(self):
        """The child's next message if one is waiting, else None; a dead child fails."""
        try:
            if not self._conn.poll():
                if not self._proc.is_alive():
                    self.state = "failed: the re-registration process ended"
                return None
            return self._conn.recv()
        except (EOFError, OSError) as e:
            self.state = f"failed: {e!r}"
            return None

    def ready(self) -> bool:
        """True when a job can be submitted now."""
        with self._lock:
            if self.state == "starting":
                msg = self._read()
                if msg is not None:
                    self.state = "ready" if msg[0] == "ready" else f"failed: {msg[1]}"
            return self.state == "ready"

    def submit(self, image, K, depth, objects, settings) -> bool:
        """Send a job (``objects``: ``(class_id, T_cam_obj)``; ``settings``: the node's
        ``(iterations, crop_size)``); False when the child is not ready."""
        if not self.ready():
            return False
        with self._lock:
            try:
                self._conn.send((np.ascontiguousarray(image), np.asarray(K),
                                 None if depth is None else np.asarray(depth),
                                 [(c, np.asarray(T)) for c, T in objects], settings))
            except (OSError, ValueError) as e:
                self.state = f"failed: {e!r}"
                return False
            self.state = "busy"
            return True

    def poll(self):
        """The answer to the job in flight, or None while there is none yet."""
        with self._lock:
            if self.state != "busy":
                return None
            msg = self._read()
            if msg is None:
                return None
            self.state = "ready"
            return msg

    def close(self) -> None:
        """Ask the child to end and wait a moment for it (then end it)."""
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        self._proc.join(timeout=2.0)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=2.0)
        self._conn.close()
