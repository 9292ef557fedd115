"""Correspondence-field estimators: the learned network and a classical optical-flow one.

Both map (image crop, rendering) to a field and weights on the crop, so the refiner's
loop and solver are shared (``make_estimator`` picks one; OpenCV is imported only by the
flow estimator).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import copy
import logging

import numpy as np
import torch

from ..net.model import CorrespondenceNet


class FieldEstimator(ABC):
    """(image crop, rendering) -> (field (B, 2, h, w) in crop px, weights (B, 1, h, w))."""

    #: Name reported in results and benchmarks.
    name: str = ""

    @abstractmethod
    def __call__(self, image: torch.Tensor, render: torch.Tensor) -> tuple:
        """image: (B, 3, S, S) RGB in [0, 1]; render: (B, 8, S, S), see ``render_input``."""

    def warm_up(self, crop_size: int) -> None:
        """Pay one-time costs (tracing, first-call optimisation) now, not on a frame."""
        return None


class _LastStep(torch.nn.Module):
    """The network's last field and weight logits as a tuple (what tracing can return)."""

    def __init__(self, net: CorrespondenceNet, gru_iters: int | None):
        super().__init__()
        self.net = net
        self.gru_iters = gru_iters

    def forward(self, image, render):
        out = self.net(image, render, gru_iters=self.gru_iters)
        return out.flows_px[-1], out.weight_logits[-1]


class LearnedField(FieldEstimator):
    """The correspondence-field network; weights are its sigmoid confidences.

    On a CPU the network runs on the estimator's own copy of it, in the channels-last
    memory layout, which oneDNN's convolutions prefer (8% less time per pass on this
    project's 2-core CPU, one thread, 128 px crops; outputs within 1e-4 px of the default
    layout's), and traced and frozen by TorchScript at the first call (``jit``): one
    graph with the weights as constants instead of some 150 Python module calls and
    dataclasses per pass. The traced graph gives the same numbers as the module (it
    records the same operations; checked over batch sizes and crop sizes in the tests);
    it is traced for this estimator's ``gru_iters`` (the loop is unrolled).
    """

    name = "learned"

    def __init__(self, net: CorrespondenceNet, gru_iters: int | None = None, jit: bool = True):
        self.net = net.eval()
        self.gru_iters = gru_iters
        self._layout = torch.contiguous_format
        self._traced = None
        self._jit = False
        if next(net.parameters()).device.type == "cpu":
            self._layout = torch.channels_last
            # A copy: the caller's network (training, other refiners) keeps its layout.
            self.net = copy.deepcopy(net).eval().to(memory_format=self._layout)
            self._jit = jit

    def _trace(self, image, render):
        """Trace and freeze the copy on these inputs (any batch and crop size later)."""
        import warnings

        with warnings.catch_warnings():  # shape checks become constants: intended
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_LastStep(self.net, self.gru_iters).eval(),
                                     (image, render), check_trace=False)
            return torch.jit.freeze(traced)

    def warm_up(self, crop_size: int) -> None:
        """Trace now and run the graph's first calls (TorchScript optimises it on its
        second): about 2 s on this project's CPU, which would otherwise land on the
        first frames."""
        dev = next(self.net.parameters()).device
        for _ in range(3):
            self(torch.rand(1, 3, crop_size, crop_size, device=dev),
                 torch.rand(1, 8, crop_size, crop_size, device=dev))

    @torch.no_grad()
    def __call__(self, image, render):
        image = image.contiguous(memory_format=self._layout)
        render = render.contiguous(memory_format=self._layout)
        if self._jit and self._traced is None:
            try:
                self._traced = self._trace(image, render)
            except Exception as e:  # an optimisation only: the module gives the same field
                self._jit = False
                logging.getLogger(__name__).warning(
                    f"the network could not be traced ({e!r}); running it as a module")
        if self._jit:
            flow, logit = self._traced(image, render)
        else:
            out = self.net(image, render, gru_iters=self.gru_iters)
            flow, logit = out.flows_px[-1], out.weight_logits[-1]
        return flow.contiguous(), torch.sigmoid(logit).contiguous()


class OpticalFlowField(FieldEstimator):
    """Training-free: dense optical flow (OpenCV DIS) from the shaded rendering to the image.

    Both are converted to grey and contrast-normalised; the weight of a pixel is 1 where
    forward and backward flow agree within ``fb_tol_px`` and 0 elsewhere.
    """

    name = "flow"

    def __init__(self, fb_tol_px: float = 2.0):
        import cv2

        self._cv2 = cv2
        self.fb_tol_px = fb_tol_px
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def _grey(self, rgb: np.ndarray) -> np.ndarray:
        g = self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2GRAY)
        return self._cv2.equalizeHist(g)

    def __call__(self, image, render):
        cv2 = self._cv2
        B, _, S, _ = image.shape
        img = (image.permute(0, 2, 3, 1).clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        ren = (render[:, :3].permute(0, 2, 3, 1).clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        flows = np.zeros((B, 2, S, S), np.float32)
        weights = np.zeros((B, 1, S, S), np.float32)
        ys, xs = np.mgrid[0:S, 0:S].astype(np.float32)
        for b in range(B):
            a, c = self._grey(ren[b]), self._grey(img[b])
            fwd = self._dis.calc(a, c, None)
            bwd = self._dis.calc(c, a, None)
            back = cv2.remap(bwd, xs + fwd[..., 0], ys + fwd[..., 1], cv2.INTER_LINEAR)
            err = np.linalg.norm(fwd + back, axis=-1)
            flows[b] = fwd.transpose(2, 0, 1)
            weights[b, 0] = (err < self.fb_tol_px).astype(np.float32)
        dev = image.device
        return torch.from_numpy(flows).to(dev), torch.from_numpy(weights).to(dev)


def make_estimator(mode: str, net: CorrespondenceNet | None = None, **kwargs) -> FieldEstimator:
    """``mode``: ``"learned"`` (needs ``net``) or ``"flow"``."""
    if mode == "learned":
        if net is None:
            raise ValueError("mode 'learned' needs a network: pass a checkpoint (model path)")
        return LearnedField(net, **kwargs)
    if mode == "flow":
        return OpticalFlowField(**kwargs)
    raise ValueError(f"estimator mode: expected 'learned' or 'flow', got {mode!r}")
