"""Stand-ins for the part of ROS 2's ``launch`` / ``launch_ros`` our launch files use, and
a launch service that evaluates a launch file into the node processes ``ros2 launch``
would start.

No registry this project installs from has ``launch`` or ``launch_ros`` (PyPI's
``launch`` is an unrelated 2017 application launcher), so the launch files cannot be
run here with the real ones. These classes follow the upstream code (ros2/launch,
ros2/launch_ros, Kilted) where it decides what the node receives:

- launch arguments: ``ros2 launch`` sets the given ``name:=value`` pairs as launch
  configurations first; ``DeclareLaunchArgument`` then sets its default where none was
  given, and refuses a value outside ``choices``;
- ``LaunchConfiguration`` performs to the configuration's value (else its default, else
  it fails); ``IfCondition`` / ``UnlessCondition`` accept ``true`` / ``false`` / ``1`` /
  ``0`` in any case and refuse anything else;
- ``GroupAction`` (scoped, forwarding) and ``IncludeLaunchDescription`` (its arguments
  set as configurations, then the included description) as upstream; ``OpaqueFunction``
  calls its function with the context;
- ``Node`` / ``LifecycleNode``: the command ``<executable> --ros-args -r __node:=<name>
  -r __ns:=<namespace> --params-file ... -r <from>:=<to>`` in upstream's order; the
  namespace is made absolute (``PushRosNamespace`` prefixes a relative one); a path in
  ``parameters`` is passed as ``--params-file`` (skipped with a warning when it is not
  a file, as upstream does); a dict is written to a YAML params file under the node's
  full name, each value a ``ParameterValue`` coerced to its ``value_type``
  (``launch.utilities.type_utils.coerce_to_type``) or, for a bare substitution, read by
  YAML rules.

Stricter than upstream, to catch mistakes: an argument given to a launch file (on the
command line or by an include) that it does not declare, and an unknown keyword of an
action, raise.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
import importlib.util
import os
from pathlib import Path
import sys
import types

import yaml


class SubstitutionFailure(RuntimeError):
    pass


class LaunchContext:
    def __init__(self, tmp_dir: Path):
        self.launch_configurations: dict = {}
        self.tmp_dir = Path(tmp_dir)
        self.nodes: list = []
        self.warnings: list = []
        self.declared: set = set()


def perform(context: LaunchContext, value) -> str:
    """A string, a substitution, or a list of them, performed to one string."""
    if isinstance(value, str):
        return value
    if isinstance(value, Substitution):
        return value.perform(context)
    if isinstance(value, (list, tuple)):
        return "".join(perform(context, v) for v in value)
    raise TypeError(f"expected a string or substitution(s), got {value!r}")


# -- launch.substitutions ------------------------------------------------------------------
class Substitution:
    def perform(self, context: LaunchContext) -> str:
        raise NotImplementedError


class TextSubstitution(Substitution):
    def __init__(self, *, text: str):
        self.text = text

    def perform(self, context):
        return self.text


class LaunchConfiguration(Substitution):
    def __init__(self, variable_name, *, default=None):
        self.variable_name = variable_name
        self.default = default

    def perform(self, context):
        name = perform(context, self.variable_name)
        if name in context.launch_configurations:
            return context.launch_configurations[name]
        if self.default is not None:
            return perform(context, self.default)
        raise SubstitutionFailure(f"launch configuration '{name}' does not exist")


# -- launch.conditions ---------------------------------------------------------------------
def _truth(context, expression) -> bool:
    text = perform(context, expression).lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"condition expression {text!r}: expected true, false, 1 or 0")


class IfCondition:
    def __init__(self, predicate_expression):
        self.expression = predicate_expression

    def evaluate(self, context) -> bool:
        return _truth(context, self.expression)


class UnlessCondition(IfCondition):
    def evaluate(self, context) -> bool:
        return not _truth(context, self.expression)


# -- launch ----------------------------------------------------------------------------------
class LaunchDescription:
    def __init__(self, initial_entities=None):
        self.entities = list(initial_entities or [])

    def visit(self, context):
        for entity in self.entities:
            entity.visit(context)


class Action:
    def __init__(self, *, condition=None):
        self.condition = condition

    def visit(self, context):
        if self.condition is None or self.condition.evaluate(context):
            self.execute(context)

    def execute(self, context):
        raise NotImplementedError


class DeclareLaunchArgument(Action):
    def __init__(self, name: str, *, default_value=None, description: str = "",
                 choices=None, **kwargs):
        super().__init__(**kwargs)
        self.name, self.default_value = name, default_value
        self.description, self.choices = description, choices
        if choices is not None and isinstance(default_value, str) and default_value not in choices:
            raise RuntimeError(f"default value of argument {name!r} not in choices {choices}")

    def execute(self, context):
        context.declared.add(self.name)
        configs = context.launch_configurations
        if self.name not in configs:
            if self.default_value is None:
                raise RuntimeError(f'Required launch argument "{self.name}" was not provided.')
            configs[self.name] = perform(context, self.default_value)
        if self.choices is not None and configs[self.name] not in self.choices:
            raise RuntimeError(
                f'Argument "{self.name}" provided value "{configs[self.name]}" is not valid. '
                f"Valid options are: {self.choices}")


class OpaqueFunction(Action):
    def __init__(self, *, function, args=None, kwargs=None, **action_kwargs):
        super().__init__(**action_kwargs)
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}

    def execute(self, context):
        for entity in self.function(context, *self.args, **self.kwargs) or []:
            entity.visit(context)


class GroupAction(Action):
    def __init__(self, actions, *, scoped: bool = True, forwarding: bool = True,
                 launch_configurations=None, **kwargs):
        super().__init__(**kwargs)
        if not forwarding:
            raise NotImplementedError("GroupAction(forwarding=False) is not stood in for")
        self.actions, self.scoped = list(actions), scoped
        self.launch_configurations = launch_configurations or {}

    def execute(self, context):
        saved = dict(context.launch_configurations)
        for k, v in self.launch_configurations.items():
            context.launch_configurations[perform(context, k)] = perform(context, v)
        for action in self.actions:
            action.visit(context)
        if self.scoped:
            context.launch_configurations = saved


class PythonLaunchDescriptionSource:
    def __init__(self, launch_file_path):
        self.launch_file_path = launch_file_path


class IncludeLaunchDescription(Action):
    def __init__(self, launch_description_source, *, launch_arguments=None, **kwargs):
        super().__init__(**kwargs)
        self.source = launch_description_source
        self.launch_arguments = list(launch_arguments or [])

    def execute(self, context):
        path = perform(context, self.source.launch_file_path)
        args = {perform(context, k): perform(context, v) for k, v in self.launch_arguments}
        _run_launch_file(context, Path(path), args)


# -- launch_ros ------------------------------------------------------------------------------
class ParameterValue:
    def __init__(self, value, *, value_type=None):
        self.value, self.value_type = value, value_type

    def evaluate(self, context):
        if not isinstance(self.value, (Substitution, list, tuple)):
            if self.value_type is not None and not isinstance(self.value, self.value_type):
                raise TypeError(f"{self.value!r} is not a {self.value_type.__name__}")
            return self.value
        return coerce_to_type(perform(context, self.value), self.value_type)


def coerce_to_type(text: str, value_type):
    """``launch.utilities.type_utils.coerce_to_type`` for scalar types."""
    if value_type is None:
        out = yaml.safe_load(text) if text else text
    elif value_type is str:
        return text
    elif value_type in (int, float):
        return value_type(text)
    elif value_type is bool:
        out = yaml.safe_load({"1": "true", "0": "false"}.get(text, text))
    else:
        raise ValueError(f"value_type {value_type!r} is not stood in for")
    if value_type is not None and not isinstance(out, value_type):
        raise ValueError(f"Cannot convert value '{text}' to '{value_type}'")
    if not isinstance(out, (bool, int, float, str)):
        raise ValueError(f"Failed to convert '{text}' using yaml rules")
    return out


def _evaluate_value(context, value):
    """A value of a parameters dict: a ``ParameterValue`` coerced to its type; a string or
    substitution(s) read by YAML rules (upstream makes a plain string a substitution
    too); anything else (a number, a list of numbers) as it is."""
    if isinstance(value, ParameterValue):
        return value.evaluate(context)
    is_text = isinstance(value, (str, Substitution)) or (
        isinstance(value, (list, tuple)) and value
        and all(isinstance(v, (str, Substitution)) for v in value)
        and any(isinstance(v, Substitution) for v in value))
    if not is_text:
        return value
    text = perform(context, value)
    out = yaml.safe_load(text if text else "''")
    if not isinstance(out, (bool, int, float, str)):
        raise TypeError(f"Allowed value types are bytes, bool, int, float, str; got {out!r}")
    return out


def _flatten(params: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _absolute_ns(base, ns):
    """``prefix_namespace`` then ``make_namespace_absolute`` (launch_ros.utilities)."""
    if base is None and ns is None:
        return None
    if ns is None:
        combined = base
    elif not base or ns.startswith("/"):
        combined = ns
    else:
        combined = ("" if base == "/" else base) + "/" + ns
    if combined != "/":
        combined = combined.rstrip("/")
    return combined if combined.startswith("/") else "/" + combined


@dataclass
class LaunchedNode:
    """One node process as ``ros2 launch`` would start it."""

    package: str
    executable: str
    name: str | None
    namespace: str | None  # absolute, or None when none was given
    lifecycle: bool
    params_files: list  # in the order given, dicts as the YAML files written for them
    parameters: dict  # every dict parameter, evaluated (later ones win)
    remappings: list  # (from, to)
    ros_args: list = field(default_factory=list)  # the command after the executable

    @property
    def fqn(self) -> str:
        ns = self.namespace or "/"
        return ns.rstrip("/") + "/" + (self.name or "")


_EXECUTE_PROCESS_KWARGS = {"output", "emulate_tty", "respawn", "respawn_delay",
                           "additional_env", "sigterm_timeout", "sigkill_timeout", "prefix"}


class Node(Action):
    lifecycle = False

    def __init__(self, *, executable, package=None, name=None, namespace=None,
                 exec_name=None, parameters=None, remappings=None, ros_arguments=None,
                 arguments=None, condition=None, **kwargs):
        unknown = set(kwargs) - _EXECUTE_PROCESS_KWARGS
        if unknown:
            raise TypeError(f"Node() got unexpected keyword arguments {sorted(unknown)}")
        super().__init__(condition=condition)
        self.package, self.executable = package, executable
        self.name, self.namespace = name, namespace
        if parameters is not None and not isinstance(parameters, list):
            raise TypeError("parameters must be a list")
        self.parameters = parameters or []
        self.remappings = list(remappings or [])
        self.ros_arguments, self.arguments = ros_arguments, arguments

    def execute(self, context):
        name = perform(context, self.name) if self.name is not None else None
        ns = perform(context, self.namespace) if self.namespace is not None else None
        ns = _absolute_ns(context.launch_configurations.get("ros_namespace"), ns)
        cmd = ["--ros-args"] + (["-r", f"__node:={name}"] if name is not None else [])
        if ns is not None and ns != "":
            cmd += ["-r", f"__ns:={ns}"]
        files, merged = [], {}
        fqn_known = name is not None and ns is not None
        for entry in self.parameters:
            if isinstance(entry, dict):
                params = _flatten({perform(context, k): _evaluate_value(context, v)
                                   for k, v in entry.items()})
                merged.update(params)
                key = (ns.rstrip("/") + "/" + name) if fqn_known else "/**"
                path = context.tmp_dir / f"launch_params_{len(os.listdir(context.tmp_dir))}"
                path.write_text(yaml.dump({key: {"ros__parameters": params}},
                                          default_flow_style=False))
            else:
                path = Path(perform(context, entry))
                if not path.is_file():
                    context.warnings.append(f"Parameter file path is not a file: {path}")
                    continue
            files.append(str(path))
            cmd += ["--params-file", str(path)]
        remaps = [(perform(context, a), perform(context, b)) for a, b in self.remappings]
        for a, b in remaps:
            cmd += ["-r", f"{a}:={b}"]
        context.nodes.append(LaunchedNode(
            perform(context, self.package) if self.package is not None else None,
            perform(context, self.executable), name, ns, self.lifecycle, files, merged,
            remaps, cmd))


class LifecycleNode(Node):
    lifecycle = True

    def __init__(self, *, name, namespace, **kwargs):
        super().__init__(name=name, namespace=namespace, **kwargs)


class PushRosNamespace(Action):
    def __init__(self, namespace, **kwargs):
        super().__init__(**kwargs)
        self.namespace = namespace

    def execute(self, context):
        configs = context.launch_configurations
        configs["ros_namespace"] = _absolute_ns(configs.get("ros_namespace"),
                                                perform(context, self.namespace))


# -- the modules and the service ---------------------------------------------------------------
_MODULES = {
    "launch": {"LaunchDescription": LaunchDescription, "LaunchContext": LaunchContext},
    "launch.actions": {c.__name__: c for c in (DeclareLaunchArgument, GroupAction,
                                               IncludeLaunchDescription, OpaqueFunction)},
    "launch.substitutions": {c.__name__: c for c in (LaunchConfiguration, TextSubstitution)},
    "launch.conditions": {c.__name__: c for c in (IfCondition, UnlessCondition)},
    "launch.launch_description_sources": {
        "PythonLaunchDescriptionSource": PythonLaunchDescriptionSource},
    "launch_ros": {},
    "launch_ros.actions": {c.__name__: c for c in (Node, LifecycleNode, PushRosNamespace)},
    "launch_ros.parameter_descriptions": {"ParameterValue": ParameterValue},
}


@contextlib.contextmanager
def standin_modules():
    """``launch`` and ``launch_ros`` in ``sys.modules`` as these stand-ins, for the block."""
    saved = {name: sys.modules.get(name) for name in _MODULES}
    try:
        for name, attrs in _MODULES.items():
            mod = types.ModuleType(name, "stand-in (test/ros/launch_standin.py)")
            mod.__dict__.update(attrs)
            sys.modules[name] = mod
        for name in _MODULES:
            if "." in name:
                parent, child = name.rsplit(".", 1)
                setattr(sys.modules[parent], child, sys.modules[name])
        yield
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def load_launch_description(path: Path) -> LaunchDescription:
    """``generate_launch_description()`` of the launch file at ``path`` (under
    :func:`standin_modules`)."""
    spec = importlib.util.spec_from_file_location(f"launch_file_{Path(path).stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate_launch_description()


def declared_arguments(ld: LaunchDescription) -> dict:
    """name -> DeclareLaunchArgument of a description's top level (``--show-args``)."""
    return {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}


def _run_launch_file(context, path: Path, args: dict) -> None:
    ld = load_launch_description(path)
    declared = declared_arguments(ld)
    unknown = set(args) - set(declared)
    if unknown:
        raise RuntimeError(f"{path.name} declares no argument {sorted(unknown)}; "
                           f"it declares {sorted(declared)}")
    context.launch_configurations.update(args)
    ld.visit(context)


def launch(path, arguments: dict | None = None, tmp_dir=None) -> tuple[list, LaunchContext]:
    """What ``ros2 launch <path> name:=value ...`` would start: the
    :class:`LaunchedNode` list and the context (its ``warnings``)."""
    import tempfile

    tmp = Path(tmp_dir) if tmp_dir is not None else Path(tempfile.mkdtemp(prefix="launch_"))
    context = LaunchContext(tmp)
    with standin_modules():
        _run_launch_file(context, Path(path), dict(arguments or {}))
    return context.nodes, context
