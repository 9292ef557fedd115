"""The head of an evaluation report: what ran, on what, with which settings.

``report.json``'s ``meta`` holds the run's inputs (scalars) and its settings (mappings:
the node's parameters, the refiner's configuration, the topics). :func:`header_lines`
writes all of it at the top of ``report.md``, so that a report says by itself how to
reproduce it; :func:`settings` turns a settings dataclass into the plain mapping ``meta``
stores. Image stamps are shown as times (:func:`stamp_text`, :func:`source_text`), not
as raw nanoseconds.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone

__all__ = ["settings", "header_lines", "stamp_text", "source_text"]

#: Stamps from this one on (2001-09-09) are read as wall-clock time, earlier ones as the
#: seconds of a simulated clock (``use_sim_time``) that started near 0.
WALL_CLOCK_FROM_NS = 1_000_000_000 * 1_000_000_000

#: Section titles of the mappings in ``meta``, in the order they are shown.
SETTINGS_TITLES = {
    "params": "Node parameters (the node's defaults, then --params, then the options)",
    "refiner": "Refiner configuration (RefinerConfig, as built from those parameters)",
    "topics": "Topics",
}


def settings(cfg) -> dict:
    """A (nested) settings dataclass as a plain mapping, values JSON-ready."""
    return asdict(cfg) if is_dataclass(cfg) else dict(vars(cfg))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v) if v else "(none)"
    if v is None or v == "":
        return "(none)" if v is None else '""'
    return str(v)


def stamp_text(stamp_ns: int) -> str:
    """An image stamp as a time: UTC date and time to the millisecond for wall-clock
    stamps, seconds for a simulated clock; the nanoseconds in brackets."""
    stamp_ns = int(stamp_ns)
    if stamp_ns >= WALL_CLOCK_FROM_NS:
        t = datetime.fromtimestamp(stamp_ns // 1_000_000 / 1e3, tz=timezone.utc)
        text = t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    else:
        text = f"{stamp_ns / 1e9:.3f} s (simulated clock)"
    return f"{text} (stamp {stamp_ns} ns)"


def source_text(record: dict, first_stamp_ns: int | None) -> str:
    """Where an object's image came from, readable: for a bag the seconds after the
    first refined image (``+1.234 s``), for a dataset ``scene_id/im_id``."""
    if "stamp_ns" in record:
        if first_stamp_ns is None:
            return stamp_text(record["stamp_ns"])
        return f"+{(int(record['stamp_ns']) - int(first_stamp_ns)) / 1e9:.3f} s"
    return f"{record.get('scene_id')}/{record.get('im_id')}"


def header_lines(title: str, meta: dict, first_stamp_ns: int | None = None) -> list[str]:
    """``report.md``'s head: the title, the run's inputs (``mode`` and ``model`` first),
    then one table per settings mapping of ``meta`` with every value it ran with."""
    lines = [f"# {title}", ""]
    first = [k for k in ("command", "mode", "model") if k in meta]
    for k in first + [k for k in meta if k not in first]:
        v = meta[k]
        if isinstance(v, list):
            lines.append(f"- **{k}**: {_value(v)}")
        elif not isinstance(v, dict):
            lines.append(f"- **{k}**: `{_value(v)}`")
    if first_stamp_ns is not None:
        lines.append(f"- **first image**: {stamp_text(first_stamp_ns)}; the per-object "
                     "table gives the seconds after it")
    for k, v in meta.items():
        if isinstance(v, dict):
            lines += ["", f"### {SETTINGS_TITLES.get(k, k)}", "", "| setting | value |",
                      "|---|---|"]
            lines += [f"| {name} | `{_value(x)}` |" for name, x in _flatten(v).items()]
    return lines
