"""How long a training run will take: steps per second measured, remaining time.

The first step of a run is not timed (data workers starting, first-call costs); the
speed is measured over the next few steps (``window``: 5, fewer in a run too short for
that) and from then on over every step since the first, validation and checkpoints
included, so the estimate settles as the run goes.
"""

from __future__ import annotations

import time


def format_duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min``, ``40 s``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class RunEstimate:
    """Steps per second and remaining time of a run from ``start_step`` to ``max_steps``.

    Call :meth:`step_done` after every step with the step count reached; it returns the
    one-line estimate once, when the measuring window is complete, else None.
    """

    def __init__(self, start_step: int, max_steps: int, window: int = 5, clock=time.perf_counter):
        self.max_steps, self.clock = max_steps, clock
        self.t0_step = start_step + 1  # timing starts once the first step is done
        left = max_steps - self.t0_step
        self.window = max(1, min(window, left // 2))
        self.t0: float | None = None
        self.steps_per_s: float | None = None
        self.said = False

    def step_done(self, step: int) -> str | None:
        now = self.clock()
        if step == self.t0_step:
            self.t0 = now
        if self.t0 is None or step <= self.t0_step or now <= self.t0:
            return None
        self.steps_per_s = (step - self.t0_step) / (now - self.t0)
        if self.said or step < self.t0_step + self.window or step >= self.max_steps:
            return None
        self.said = True
        first = self.t0_step + 1
        timed = f"step {step}" if step == first else f"steps {first}-{step}"
        return (f"train: {self.steps_per_s:.2f} steps/s over {timed}: about "
                f"{format_duration(self.remaining_s(step))} for the remaining "
                f"{self.max_steps - step} steps")

    def remaining_s(self, step: int) -> float | None:
        """Seconds to ``max_steps`` at the measured speed (None before it is measured)."""
        if not self.steps_per_s:
            return None
        return (self.max_steps - step) / self.steps_per_s
