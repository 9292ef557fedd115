"""Settings dataclasses from plain dicts (YAML files, checkpoint metadata).

One rule for every config of the project: an unknown key is an error that lists the known
ones (a typo in a YAML file must not be silently ignored), and nested settings given as
dicts become their own dataclasses, on top of the parent's default for that field (a
parent may default a nested setting to other values than the nested class's own, as
``RefinerConfig.region`` does).
"""

from __future__ import annotations

from dataclasses import MISSING, fields, replace


def dataclass_from_dict(cls, d: dict, what: str, nested: tuple = (), lists_to_tuples=False):
    """Build the dataclass ``cls`` from ``d``.

    Args:
        cls: the dataclass.
        d: its fields by name; missing ones take their defaults.
        what: the config's name in the error message.
        nested: ``(key, dataclass)`` pairs: a dict under ``key`` becomes that dataclass,
            its missing fields taken from ``cls``'s default for ``key`` when that is one.
        lists_to_tuples: turn list values into tuples (frozen, hashable settings).

    Raises:
        ValueError: ``d``, or a nested dict, has keys that are not fields of its class.
    """
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    d = dict(d)
    defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    for key, typ in nested:
        if isinstance(d.get(key), dict):
            sub = dataclass_from_dict(typ, d[key], f"{what}: {key}",
                                      lists_to_tuples=lists_to_tuples)
            base = defaults.get(key)
            # Only the keys given replace the parent's default; the rest stay its values.
            d[key] = (replace(base, **{k: getattr(sub, k) for k in d[key]})
                      if isinstance(base, typ) else sub)
    if lists_to_tuples:
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**d)


def check_off_or_positive(obj, *names: str, prefix: str = "") -> None:
    """Raise ``ValueError`` naming the setting when any of ``names`` (attributes of the
    settings dataclass ``obj``, where 0 turns a feature off) is negative."""
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise ValueError(f"{prefix}{name}: expected >= 0 (0: off), got {value}")
