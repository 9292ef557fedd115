"""The node's ``--ros-args``, checked before rclpy reads them.

Two things rclpy does not do well, and this module does first:

- **Params files.** A missing or unreadable ``--params-file`` makes ``rclpy.init`` raise
  an ``RCLError`` with a traceback. :func:`check_params_file` says which file and what
  is wrong with it, in one line.
- **Overrides of the wrong type.** rcl keeps one value *per type* for each parameter,
  and rclpy then takes the boolean, else the integer, else the double, else the string.
  So ``--params-file refiner.yaml -p iterations:=four`` starts with the file's 4 and
  says nothing, while ``-p iterations:=four`` alone fails. :func:`check` finds every
  value given for one of :data:`~pose_refiner_ros.ros.params.PARAMS` (in every params
  file and ``-p``) and refuses a wrong-typed one whichever way it came, and the value
  that takes effect (the last given) when it is out of the parameter's range.

Values are read as rcl reads them (:func:`rcl_value`): quoted text is a string;
``true``/``yes``/``on``... a boolean; what ``strtol`` reads whole an integer, what
``strtod`` reads whole a double; anything else a string. Pure Python: no rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import os
import re
from typing import Any

import yaml

from .params import SPECS, type_error, value_error

_TRUE = {"Y", "y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_FALSE = {"N", "n", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_INT_RE = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf(inity)?|nan)",
                       re.IGNORECASE)
_SPECIAL_FLOATS = {".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan, ".inf": math.inf,
                   ".Inf": math.inf, ".INF": math.inf, "-.inf": -math.inf,
                   "-.Inf": -math.inf, "-.INF": -math.inf}
#: ROS arguments followed by a value that is not a rule of ours.
_WITH_VALUE = {"-r", "--remap", "-e", "--enclave", "--log-level", "--log-config-file",
               "--log-file-name"}


@dataclass(frozen=True)
class Given:
    """One value given for a parameter.

    Attributes:
        name: the parameter's name.
        value: the value as rcl reads it (:func:`rcl_value`).
        source: where it came from, for messages: "`-p iterations:=four`" or
            "params file /x/refiner.yaml, line 9".
    """

    name: str
    value: Any
    source: str


def rcl_value(node: yaml.Node | None) -> Any:
    """The Python value rcl makes of a YAML node (a ``-p`` value or a params file entry):
    a bool, int, float or str, or a list of them."""
    if node is None:
        return ""
    if isinstance(node, yaml.SequenceNode):
        return [rcl_value(n) for n in node.value]
    text = node.value
    if node.style in ("'", '"'):
        return text
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    if _INT_RE.fullmatch(text.strip()):
        return int(text.strip(), 8 if re.fullmatch(r"[+-]?0[0-7]+", text.strip()) else 0)
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text]
    if _FLOAT_RE.fullmatch(text.strip()):
        return float(text)
    return text


def _matches(pattern: str, fqn: str) -> bool:
    """Whether a node name pattern of rcl (``*`` one token, ``**`` any number) names
    the node ``fqn``."""

    def match(p: list, n: list) -> bool:
        if not p:
            return not n
        if p[0] == "**":
            return any(match(p[1:], n[i:]) for i in range(len(n) + 1))
        return bool(n) and p[0] in ("*", n[0]) and match(p[1:], n[1:])

    return match([t for t in pattern.split("/") if t], [t for t in fqn.split("/") if t])


def ros_sections(argv: list) -> list:
    """The tokens between each ``--ros-args`` and the next ``--`` (or the end)."""
    tokens, inside = [], False
    for a in argv:
        if a == "--ros-args":
            inside = True
        elif inside and a == "--":
            inside = False
        elif inside:
            tokens.append(a)
    return tokens


def _rules(argv: list):
    """(kind, text) of every params file (kind "file") and ``-p`` rule ("param") and
    remap ("remap"), in order."""
    tokens = ros_sections(argv)
    i = 0
    while i < len(tokens):
        flag = tokens[i]
        value = tokens[i + 1] if i + 1 < len(tokens) else None
        if flag in ("-p", "--param"):
            yield "param", value
        elif flag == "--params-file":
            yield "file", value
        elif flag in ("-r", "--remap"):
            yield "remap", value
        elif flag not in _WITH_VALUE:
            i += 1
            continue
        i += 2


def node_fqn(argv: list, name: str = "pose_refiner") -> str:
    """The node's fully qualified name after ``-r __node:=`` / ``-r __ns:=``."""
    ns = "/"
    for kind, rule in _rules(argv):
        if kind != "remap" or not rule or ":=" not in rule:
            continue
        lhs, value = rule.split(":=", 1)
        target, _, key = lhs.rpartition(":")
        if target and target.lstrip("/") != name:
            continue
        if key in ("__node", "__name"):
            name = value
        elif key == "__ns":
            ns = value
    return f"{ns.rstrip('/')}/{name}"


def check_params_file(path: str | None) -> str | None:
    """Why rcl cannot read the params file ``path`` (one line naming it), or None."""
    if not path:
        return "--params-file is given without a file"
    if not os.path.exists(path):
        return f"params file {path} not found"
    if os.path.isdir(path):
        return f"params file {path} is a directory, not a YAML file"
    if not os.access(path, os.R_OK):
        return f"params file {path} cannot be read (permission denied)"
    try:
        with open(path, encoding="utf-8") as f:
            root = yaml.compose(f)
    except UnicodeDecodeError:
        return f"params file {path} is not a text file"
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        return f"params file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}"
    if root is None:
        return None
    if not isinstance(root, yaml.MappingNode):
        return (f"params file {path}: expected node names, each with 'ros__parameters:' "
                f"below it (e.g. '/**:'), line {root.start_mark.line + 1}")
    return _check_tree(path, root)


def list_error(node: yaml.Node | None) -> str | None:
    """Why rcl refuses a value that is not a plain one: a mapping, or a list whose items
    are not plain values of one type; None when it is fine."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping is not a parameter value"
    if not isinstance(node, yaml.SequenceNode):
        return None
    if any(not isinstance(n, yaml.ScalarNode) for n in node.value):
        return "a list may hold only plain values"
    kinds = {type(rcl_value(n)).__name__ for n in node.value}
    return f"a list mixes types ({', '.join(sorted(kinds))})" if len(kinds) > 1 else None


def _check_parameters(path: str, node: yaml.MappingNode) -> str | None:
    for key, value in node.value:
        if isinstance(value, yaml.MappingNode):
            why = _check_parameters(path, value)
        else:
            why = list_error(value)
            why = why and f"params file {path}, line {key.start_mark.line + 1}: {why}"
        if why:
            return why
    return None


def _check_tree(path: str, node: yaml.MappingNode) -> str | None:
    for key, value in node.value:
        line = key.start_mark.line + 1
        if key.value == "ros__parameters":
            if not isinstance(value, yaml.MappingNode):
                return (f"params file {path}, line {line}: 'ros__parameters' must hold "
                        "'name: value' entries")
            why = _check_parameters(path, value)
            if why:
                return why
        elif not isinstance(value, yaml.MappingNode):
            return (f"params file {path}, line {line}: {key.value!r} is neither a node name "
                    "(with 'ros__parameters:' below it) nor 'ros__parameters'")
        else:
            why = _check_tree(path, value)
            if why:
                return why
    return None


def _file_values(path: str, fqn: str):
    """Every (name, YAML node) the params file sets for the node ``fqn``."""
    with open(path, encoding="utf-8") as f:
        root = yaml.compose(f)

    def walk(node, names):
        for key, value in node.value:
            if key.value == "ros__parameters":
                if isinstance(value, yaml.MappingNode) and _matches("/".join(names), fqn):
                    yield from params(value, "")
            elif isinstance(value, yaml.MappingNode):
                yield from walk(value, [*names, key.value])

    def params(node, prefix):  # nested mappings are dotted names
        for key, value in node.value:
            if isinstance(value, yaml.MappingNode):
                yield from params(value, f"{prefix}{key.value}.")
            else:
                yield f"{prefix}{key.value}", value

    if isinstance(root, yaml.MappingNode):
        yield from walk(root, [])


def given_values(argv: list, fqn: str) -> list:
    """Every :class:`Given` value of one of our parameters for node ``fqn``, in the
    order rcl applies them (command-line order; the last wins among values of a type).
    Call after :func:`check` found the arguments readable."""
    found = []
    for kind, rule in _rules(argv):
        if kind == "file":
            for name, node in _file_values(rule, fqn):
                if name in SPECS:
                    line = node.start_mark.line + 1
                    found.append(Given(name, rcl_value(node), f"params file {rule}, line {line}"))
        elif kind == "param":
            lhs, _, text = rule.partition(":=")
            target, _, name = lhs.rpartition(":")
            if name in SPECS and (not target or _matches(target, fqn)):
                found.append(Given(name, rcl_value(yaml.compose(text)), f"`-p {rule}`"))
    return found


def check(argv: list, fqn: str) -> str | None:
    """Why the node cannot start with these arguments (one line), or None: a params
    file rcl cannot read, a ``-p`` rule it cannot parse, a value of the wrong type
    for one of our parameters, wherever it is given, or the value that takes effect
    out of its range (or against its own rule)."""
    for kind, rule in _rules(argv):
        if kind == "file":
            why = check_params_file(rule)
            if why:
                return why
        elif kind == "param":
            if not rule or ":=" not in rule:
                return f"`-p {rule or ''}` is not a parameter override; write -p name:=value"
            try:
                why = list_error(yaml.compose(rule.partition(":=")[2]))
            except yaml.YAMLError as e:
                why = f"the value is not valid YAML ({getattr(e, 'problem', e)})"
            if why:
                return f"`-p {rule}`: {why}"
    given = given_values(argv, fqn)
    for g in given:
        why = type_error(SPECS[g.name].default, g.value)
        if why:
            return f"parameter {g.name!r} ({g.source}): {why}"
    for g in {g.name: g for g in given}.values():  # the value that takes effect: the last
        why = value_error(SPECS[g.name], g.value)
        if why:
            return f"parameter {g.name!r} ({g.source}): {why}"
    return None


def number_overrides(argv: list, fqn: str) -> dict:
    """``{name: float}`` for each number parameter given both as an integer and as a
    floating-point number: rclpy would take the integer whatever the order (see the
    module docstring), so the last one given is passed to the node explicitly."""
    out, kinds = {}, {}
    for g in given_values(argv, fqn):
        if isinstance(SPECS[g.name].default, float):
            kinds.setdefault(g.name, set()).add(type(g.value))
            out[g.name] = float(g.value)
    return {n: v for n, v in out.items() if len(kinds[n]) > 1}
