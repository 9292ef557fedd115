"""What a benchmark run costs: how long it will take, stated before it starts, and the
torch threads it runs on by default.

Not measured here (measuring would cost the run itself): the time per object of each
method as recorded in ``docs/bench/*.json``, on this project's 2-core AMD EPYC, idle,
one torch thread:

- ``ours`` 0.43 s and ``ours-rgbd`` 0.34 s: medians of ``docs/bench/polish24_200.json``
  (200 objects, the shipped defaults, 2026-12-02); ``gcf-adam-matched`` is matched to
  ``ours``' time by construction;
- ``flow-baseline`` 0.06 s and ``flow-baseline-rgbd`` 0.11 s: ``docs/bench/quick.json``;
- ``gcf-adam`` 20 ms per update (1000 updates: 20 s per object): 20.4 s per object in a
  24-sample run with one thread (``docs/benchmarks.md``); 17.5 ms with two threads
  idle (``docs/bench/quick.json``);
- drawing the samples about 0.1 s each plus 10 s of start-up; the scaling runs about
  8 s per timed call of their cases (assumed from ``quick.json``'s elapsed time less
  its methods').

Each method also makes one uncounted warm-up call. On a machine whose cores are busy
with other work everything scales with the slowdown: ``bench --quick`` once took 54 min
instead of about 3 (``gcf-adam`` 355 s per object, two threads contending with other
jobs on two cores).
"""

from __future__ import annotations

import os

#: Seconds per object of each method (module docstring); ``gcf-adam`` per update.
SECONDS_PER_OBJECT = {"initial": 0.0, "ours": 0.43, "ours-rgbd": 0.34, "flow-baseline": 0.06,
                      "flow-baseline-rgbd": 0.11, "gcf-adam-matched": 0.43}
GCF_SECONDS_PER_UPDATE = 0.020
START_S, DRAW_S_PER_SAMPLE, SCALING_S_PER_CALL = 10.0, 0.1, 8.0
#: What the figures were measured on, for the message.
MEASURED_ON = "an idle 2-core CPU with one thread"
BUSY = ("many times as long when other work keeps the cores busy (bench --quick: 54 min "
        "seen)")


def expected_seconds(cfg) -> dict:
    """Expected seconds of each part of the run of ``cfg`` (a ``BenchConfig``):
    ``{method: s, "samples": s, "scaling": s, "total": s}``."""
    n, n_gcf = cfg.samples, min(cfg.gcf_samples, cfg.samples)
    out: dict = {"samples": START_S + DRAW_S_PER_SAMPLE * n}
    for m in cfg.methods:
        if m == "gcf-adam":
            out[m] = (n_gcf * cfg.gcf_steps + 2) * GCF_SECONDS_PER_UPDATE if n_gcf else 0.0
        else:
            out[m] = (n + (m != "initial")) * SECONDS_PER_OBJECT[m]
    scaling = cfg.objects_per_frame or cfg.mesh_faces or cfg.crop_sizes
    out["scaling"] = SCALING_S_PER_CALL * (cfg.scaling_repeats + 1) if scaling else 0.0
    out["total"] = sum(out.values())
    return out


def minutes(seconds: float) -> str:
    """``about 3 min`` (``under a minute`` below 45 s)."""
    return "under a minute" if seconds < 45 else f"about {max(1, round(seconds / 60))} min"


def expectation(cfg) -> str:
    """The sentence said at the start of a run."""
    parts = expected_seconds(cfg)
    gcf = parts.get("gcf-adam", 0.0)
    most = (f"; gcf-adam, {min(cfg.gcf_samples, cfg.samples)} objects x {cfg.gcf_steps} "
            f"updates, is {gcf / parts['total']:.0%} of it") if gcf else ""
    return (f"expect {minutes(parts['total'])} on {MEASURED_ON}{most}; {BUSY}")


#: Up to this many cores the benchmark runs one torch thread unless told otherwise: on
#: this project's 2-core CPU torch's default of two threads gained about 15% idle
#: (gcf-adam 17.5 against 20.4 ms per update) and lost with other work running (two
#: threads contending for two cores: one was faster there; training measured 5x slower).
SMALL_CPU_CORES = 4


def default_threads(cores: int | None = None) -> int | None:
    """The benchmark's torch threads when ``--threads`` is not given: 1 on a machine
    with ``SMALL_CPU_CORES`` or fewer (``cores``: default, those this process may use),
    else None (torch's default)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return 1 if cores <= SMALL_CPU_CORES else None
