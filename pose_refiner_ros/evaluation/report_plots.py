"""The evaluation report's plots (``evaluation.report``): error distributions before and
after refinement, error per iteration, confidence against error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["write_plots"]


def write_plots(out_dir: Path, init: list, ref: list, iters_R: list, iters_t: list,
                score_err: list, threshold: float | None) -> dict[str, str]:
    """Write the PNGs under ``out_dir/plots`` (each under a temporary name, renamed when
    complete); returns ``{file name: path relative to out_dir}``.

    Args:
        init, ref: ``metrics.PoseMetrics`` of the coarse and refined poses (same order).
        iters_R, iters_t: per object, the rotation / translation error of the coarse pose
            and of every iterate.
        score_err: per object with ground truth, ``(score, e_R, ADD(-S) / diameter,
            diverged)``.
        threshold: the node's ``confidence_threshold``, or None (no node rule).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    def log_axis(axis):  # plain numbers (20, 30) rather than 2 x 10^1
        axis.set_major_formatter(LogFormatter())
        axis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.4)))

    pdir = out_dir / "plots"
    pdir.mkdir(exist_ok=True)
    files: dict[str, str] = {}

    def save(fig, name):
        tmp = pdir / f".{name}.partial.png"
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, pdir / name)
        files[name] = f"plots/{name}"

    if ref:
        cols = [("e_R_deg", "rotation error e_R (deg)", 1.0),
                ("t_err_m", "translation error (cm)", 100.0),
                ("add_or_adds_m", "ADD(-S) / diameter", None)]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for ax, (key, label, scale) in zip(axes, cols, strict=True):
            for recs, name, style in ((init, "coarse", "--"),
                                      (ref, "refined", "-")):
                v = np.array([getattr(r, key) for r in recs], dtype=np.float64)
                if scale is None:
                    v = v / np.array([r.diameter_m for r in recs])
                else:
                    v = v * scale
                v = np.sort(np.where(np.isfinite(v), v, np.inf))
                ax.step(v, np.arange(1, len(v) + 1) / len(v), style, where="post", label=name)
            if key == "add_or_adds_m":
                ax.axvline(0.1, color="grey", lw=0.8, ls=":")
            ax.set_xscale("log")
            log_axis(ax.xaxis)
            ax.set_xlabel(label)
            ax.set_ylabel("share of objects below")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle("Error distributions before and after refinement (cumulative)")
        save(fig, "errors.png")

    if iters_R:
        n = max(len(x) for x in iters_R)

        def padded(rows):
            return np.array([r + [r[-1]] * (n - len(r)) for r in rows], dtype=np.float64)

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, rows, label, scale in (
                (axes[0], iters_R, "e_R (deg)", 1.0),
                (axes[1], iters_t, "translation error (cm)", 100.0)):
            a = padded(rows) * scale
            x = np.arange(n)
            ax.plot(x, np.nanmedian(a, 0), "o-", label="median")
            ax.fill_between(x, np.nanpercentile(a, 25, 0), np.nanpercentile(a, 75, 0),
                            alpha=0.25, label="25-75 %")
            ax.set_xlabel("iteration (0 = coarse pose)")
            ax.set_ylabel(label)
            ax.set_yscale("log")
            log_axis(ax.yaxis)
            ax.grid(alpha=0.3, which="both")
            ax.legend()
        fig.suptitle("Error per iteration")
        save(fig, "iterations.png")

    if score_err:
        a = np.array([x[:3] for x in score_err], dtype=np.float64)
        div = np.array([x[3] for x in score_err])
        # Constrained layout: the right panel's axis label overlapped the left panel.
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
        for ax, col, label in ((axes[0], 1, "refined e_R (deg)"),
                               (axes[1], 2, "refined ADD(-S) / diameter")):
            y = np.clip(a[:, col], 1e-4, None)
            t = threshold
            ok = ~div & (a[:, 0] >= (t if t is not None else -np.inf))
            ax.scatter(a[ok, 0], y[ok], s=10,
                       label="published" if t is not None else "not flagged")
            low = ~div & ~ok
            if low.any():
                ax.scatter(a[low, 0], y[low], s=10, marker="^",
                           label="below threshold: withheld")
            if div.any():
                ax.scatter(a[div, 0], y[div], s=10, marker="x", label="diverged")
            if t is not None:
                ax.axvline(t, color="crimson", lw=1, ls="--",
                           label=f"confidence_threshold {t:g}")
            ax.set_xlabel("confidence (score)")
            ax.set_ylabel(label)
            ax.set_yscale("log")
            log_axis(ax.yaxis)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle("Confidence against error")
        save(fig, "confidence.png")
    return files
