"""How a value of one of the node's parameters is checked: its type, its range, and
any rule of its own (a set of choices, a device name, a TF prefix...).

Every refusal is one phrase that says what was expected and what was given, in words
("expected an integer in [1, 20], got 1000"); :func:`~.params.validate` puts the
parameter's name in front. Pure Python: no rclpy.
"""

from __future__ import annotations

from collections.abc import Callable
import math
import re
from typing import Any

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_TYPE_WORDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def one_of(*choices: str) -> Callable[[Any], str | None]:
    """A check that accepts ``choices`` only; they are kept as ``check.choices`` (the
    README's table lists them)."""
    def check(v):
        return None if v in choices else f"expected one of {list(choices)}, got {v!r}"

    check.choices = choices
    return check


def values_text(check) -> str | None:
    """The allowed values of a :func:`one_of` check as the README writes them
    (`` `a`, `b` ``), or None for another check."""
    choices = getattr(check, "choices", None)
    return ", ".join(f"`{c}`" for c in choices) if choices else None


def device(v):
    return None if _DEVICE_RE.match(v) else f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}"


def multiple_of_8(v):
    return None if v % 8 == 0 else f"expected a multiple of 8, got {v}"


def tf_prefix(v):
    if not re.match(r"^[A-Za-z0-9_/]*$", v):
        return f"expected letters, digits, '_' or '/', got {v!r}"
    if v.startswith("/") or "//" in v:
        # tf2 refuses frame ids that start with '/' (ROS 2 dropped the leading slash)
        return f"TF frame ids must not start with '/' or contain '//', got {v!r}"
    return None


def range_text(bounds: tuple) -> str:
    """``[lo, hi]`` as the README and the refusals write it."""
    return f"[{bounds[0]}, {bounds[1]}]"


def range_error(default: Any, bounds: tuple | None, value: Any) -> str | None:
    """Why the number ``value`` is outside ``bounds`` (inclusive; a parameter whose
    default is ``default``), or None. NaN and infinities are outside every range."""
    if bounds is None:
        return None
    lo, hi = bounds
    if isinstance(value, float) and not math.isfinite(value):
        pass
    elif lo <= value <= hi:
        return None
    kind = "an integer" if isinstance(default, int) else "a value"
    return f"expected {kind} in {range_text(bounds)}, got {value!r}"


def describe_value(value: Any) -> str:
    """``value`` and its type in words, for messages: "a string ('four')"."""
    if value is None:
        return "no value"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a floating-point number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return f"a list ({list(value)!r})"  # rclpy gives arrays as lists or array.array


def type_error(default: Any, value: Any) -> str | None:
    """Why ``value`` has the wrong type for a parameter whose default is ``default``,
    in words, or None. An integer is accepted where a number is expected."""
    want = type(default)
    if type(value) is want or (want is float and type(value) is int):
        return None
    why = f"expected {_TYPE_WORDS[want]}, got {describe_value(value)}"
    if want is str and isinstance(value, (bool, int, float)):
        why += "; quote text that reads as a number or boolean, e.g. '1'"
    return why
