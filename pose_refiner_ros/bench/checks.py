"""The acceptance criteria of the benchmark (issue 8), evaluated on its record.

``ours`` must be more accurate than ``initial`` and ``flow-baseline`` on every metric, at
least as accurate as ``gcf-adam`` with the paper's settings (on the samples that one
ran) while at least 20 times faster per object, and under 250 ms per object (median).

Direction of each summary metric: ``median_*`` errors are better lower; ``acc_*`` and
``ar_*`` shares are better higher. A metric on which both methods already reach the best
possible value (a share of 1, an error of 0) cannot be improved; it is ``"saturated"``
and does not fail "better on every metric".
"""

from __future__ import annotations

__all__ = ["metric_verdicts", "acceptance"]

MAX_MS_PER_OBJECT = 250.0
MIN_SPEEDUP_OVER_GCF = 20.0


def _higher_is_better(key: str) -> bool:
    return key.startswith(("acc_", "ar_"))


def metric_verdicts(a: dict, b: dict) -> dict:
    """``{metric: "better" | "equal" | "saturated" | "worse"}``: summary ``a`` against
    summary ``b`` (``"saturated"``: equal at the best possible value)."""
    out = {}
    for k, va in a.items():
        if k == "n" or k not in b:
            continue
        vb = b[k]
        va_ = float("inf") if va is None else va
        vb_ = float("inf") if vb is None else vb
        if va_ == vb_:
            best = 1.0 if _higher_is_better(k) else 0.0
            out[k] = "saturated" if va_ == best else "equal"
        elif (va_ > vb_) == _higher_is_better(k):
            out[k] = "better"
        else:
            out[k] = "worse"
    return out


def _verdict(a: dict | None, b: dict | None, allow_equal: bool) -> dict | None:
    if a is None or b is None:
        return None
    v = metric_verdicts(a, b)
    ok = {"better", "saturated", "equal"} if allow_equal else {"better", "saturated"}
    return {"passed": all(x in ok for x in v.values()), "per_metric": v}


def acceptance(methods: dict) -> dict:
    """The criteria, each ``{"passed": bool, ...}`` or None when a method was not run."""
    ours = methods.get("ours")
    if ours is None:
        return {}
    out = {
        "ours_better_than_initial_on_every_metric": _verdict(
            ours["metrics"], ours["initial_metrics_same_samples"], allow_equal=False),
        "ours_better_than_flow_baseline_on_every_metric": _verdict(
            ours["metrics"], (methods.get("flow-baseline") or {}).get("metrics"),
            allow_equal=False),
    }
    gcf = methods.get("gcf-adam")
    out["ours_at_least_as_accurate_as_gcf_adam_same_samples"] = _verdict(
        (gcf or {}).get("ours_same_samples"), (gcf or {}).get("metrics"), allow_equal=True)
    t_ours = ours["timing_ms_per_object"]["total"]["median"]
    if gcf is not None:
        speedup = gcf["timing_ms_per_object"]["total"]["median"] / t_ours
        out["ours_20x_faster_than_gcf_adam"] = {"passed": speedup >= MIN_SPEEDUP_OVER_GCF,
                                                "speedup": speedup}
    else:
        out["ours_20x_faster_than_gcf_adam"] = None
    out["ours_under_250ms_per_object"] = {"passed": t_ours < MAX_MS_PER_OBJECT,
                                          "median_ms": t_ours,
                                          "p95_ms": ours["timing_ms_per_object"]["total"]["p95"]}
    return out
