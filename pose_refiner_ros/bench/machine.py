"""What a benchmark ran on, and how much memory a stretch of it needed.

- :func:`machine_info`: platform, CPU model (``/proc/cpuinfo``), cores, load average,
  torch version and threads, the device (GPU name when CUDA), the date and git commit.
- :class:`PeakMemory`: the peak resident memory of this process during a ``with`` block
  (Linux ``VmHWM``, reset on entry through ``/proc/self/clear_refs``; where that is not
  possible, the growth of ``getrusage``'s ``ru_maxrss``, a lower bound), and on CUDA
  ``torch.cuda.max_memory_allocated``. ``tracemalloc`` would see neither torch's
  allocations nor be fast enough.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
import platform
import re
import resource
import subprocess
import sys

import torch

__all__ = ["machine_info", "PeakMemory"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("+dirty" if dirty else "")


def machine_info(device: torch.device) -> dict:
    """The machine, for the record (JSON-ready)."""
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg")
        else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "git_commit": _git_commit(),
    }
    return info


def _status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (VmHWM) to the current one
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as mem: ...`` then ``mem.result()``.

    Result keys: ``rss_start_mb`` (resident memory on entry), ``peak_rss_mb`` (the
    process's peak during the block), ``peak_rss_increase_mb`` (peak minus start: what
    the block needed beyond what was already resident; memory freed earlier and reused
    is not counted), ``method`` (how the peak was read) and, on CUDA,
    ``cuda_max_allocated_mb``.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._out: dict = {}

    def __enter__(self) -> PeakMemory:
        self._exact = _reset_hwm() and _status_kib("VmHWM") is not None
        self._rss0 = _status_kib("VmRSS")
        self._maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        out: dict = {}
        if self._exact:
            peak = _status_kib("VmHWM")
            out.update(rss_start_mb=self._rss0 / 1024, peak_rss_mb=peak / 1024,
                       peak_rss_increase_mb=max(0, peak - self._rss0) / 1024,
                       method="VmHWM reset through /proc/self/clear_refs")
        else:
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            out.update(rss_start_mb=None if self._rss0 is None else self._rss0 / 1024,
                       peak_rss_mb=maxrss / 1024,
                       peak_rss_increase_mb=max(0, maxrss - self._maxrss0) / 1024,
                       method="ru_maxrss growth (a lower bound: 0 unless a new process peak)")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self._out = {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}

    def result(self) -> dict:
        return dict(self._out)
