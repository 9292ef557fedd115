"""The thin ROS 2 layer: the only sub-package that imports rclpy or message packages.

- ``conversions``  messages <-> core types (readers import no ROS, so bags read the same)
- ``params``       the node's parameters, declared and validated in one place
- ``sync``         stamp matching and the newest-wins hand-over to the worker (pure Python)
- ``diagnostics``  the node's counters and their DiagnosticArray
- ``node``         ``RefinerNode`` and ``main`` (the ``refiner_node`` executable)
- ``demo``         ``pose-refiner demo``: the node on a synthetic recording
"""
