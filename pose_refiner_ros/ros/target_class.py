"""``target_class_id`` that names no registered object.

``refined_pose`` carries the most confident object of class ``target_class_id``; a class
the objects YAML does not register never matches, and ``refined_pose`` would fall
silent without a word. :func:`check_target` is called when the parameter is set (at
start-up and by every change while the node runs): it logs a warning, and keeps a
``problem.target_class_id`` in ``/diagnostics`` (WARN level) for as long as it matches
nothing.
"""

from __future__ import annotations

PROBLEM = "target_class_id"


def unknown_target(target: str, class_ids) -> str | None:
    """Why ``target`` matches no registered class (one line), or None (it does, or it
    is empty: the most confident object of any class)."""
    if not target or target in class_ids:
        return None
    return (f"target_class_id {target!r} is not a registered object "
            f"({', '.join(sorted(class_ids))}): refined_pose stays silent until it names one")


def check_target(node, target: str) -> None:
    """Warn on ``node``'s logger and set (or clear) the diagnostics problem for
    ``target``, against ``node.registry``."""
    why = unknown_target(target, node.registry.class_ids)
    node.stats.set_problem(PROBLEM, why)
    if why:
        node.get_logger().warning(why)
