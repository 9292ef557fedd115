"""Random draws shared by the synthetic generators (``data.synthetic``,
``data.training_batch``): every one from a NumPy ``rng``, so that their output is a
deterministic function of its state.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch


def _uniform(rng, lo_hi, size=None):
    return rng.uniform(lo_hi[0], lo_hi[1], size)


def _log_uniform(rng, lo_hi, size=None):
    return np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]), size))


def _random_color(rng) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(rng.random(), rng.random() ** 0.7, rng.uniform(0.1, 1)))


def _torch_gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
