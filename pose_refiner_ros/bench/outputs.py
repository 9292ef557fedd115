"""The benchmark's outputs: the JSON record, its Markdown summary and PNG plot, written
all or nothing under SIGINT and SIGTERM, and the summary printed on the terminal."""

from __future__ import annotations

import json
import os
from pathlib import Path
import sys

from ..evaluation.all_or_nothing import Staging, pause_for_test

__all__ = ["write_outputs"]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(record: dict, json_path, markdown_path=None, plot_path=None,
                  where=Path) -> None:
    """Write the JSON record, and the Markdown summary and PNG plot when given paths;
    each to ``where(path)`` (a :meth:`Staging.outside` stages them)."""
    from .report import markdown, write_plot

    json_path = Path(json_path)
    _write_atomic(where(json_path), json.dumps(record, indent=1, allow_nan=False) + "\n")
    if plot_path:
        write_plot(record, where(Path(plot_path)))
    if markdown_path:
        md_path = Path(markdown_path)
        rel = None
        if plot_path:
            rel = os.path.relpath(Path(plot_path).resolve(), md_path.resolve().parent)
        _write_atomic(where(md_path), markdown(record, plot_relpath=rel))


def _all_or_nothing(paths: list, write) -> int | None:
    """``write(where)`` the outputs at ``paths`` all or nothing under SIGINT and SIGTERM
    (:mod:`..evaluation.all_or_nothing`): None once all are in place, else the exit code."""
    paths = [Path(p) for p in paths]
    stage = Staging(paths[0].parent, "bench", stale=tuple(
        f".{p.name}.partial" for p in paths if p.parent == paths[0].parent))
    try:
        write(stage.outside)
        pause_for_test("report_written")
    except KeyboardInterrupt:
        stage.abort()
        print("bench: interrupted; nothing was written (partial outputs removed)",
              file=sys.stderr)
        return 130
    except BaseException:
        stage.abort()
        raise
    if stage.commit():
        print("bench: interrupted once the output was complete; wrote "
              + ", ".join(map(str, paths)), file=sys.stderr)
        return 130
    return None


def _terminal_summary(record: dict) -> str:
    rows = ["method               n   ADD(-S)@0.1d  med e_R  med t_err   worse(ADD)  ms/obj"]
    for name, r in record["methods"].items():
        m = r["metrics"]
        t = (r.get("timing_ms_per_object") or {}).get("total", {}).get("median")
        rows.append(f"{name:<18} {r['n']:>3}   {m['acc_add_or_adds_0.1d']:>11.3f}  "
                    f"{m['median_e_R_deg']:>7.2f}  {100 * m['median_t_err_m']:>6.2f} cm  "
                    f"{r['share_worse']['add_or_adds_m']:>9.2f}  "
                    f"{'-' if t is None else f'{t:.0f}':>6}")
    for name, c in record["acceptance"].items():
        rows.append(f"{name}: {'-' if c is None else ('PASS' if c['passed'] else 'FAIL')}")
    return "\n".join(rows)
