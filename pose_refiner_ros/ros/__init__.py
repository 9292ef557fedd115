"""The thin ROS 2 layer: the only sub-package that imports rclpy or message packages.

- ``conversions``  messages <-> core types (readers import no ROS, so bags read the same)
- ``compressed``   image_transport's compressed images (JPEG, PNG) read and written
- ``frame_inputs`` a frame's images checked and made ready for the refiner (node and eval-bag)
- ``params``       the node's parameters, declared and validated in one place
- ``sync``         stamp matching and the newest-wins hand-over to the worker (pure Python)
- ``diagnostics``  the node's counters and their DiagnosticArray
- ``markers``      RViz markers of the published objects (meshes and labels)
- ``startup``      what the node loads once (objects, refiner, model); failures name the fix
- ``node``         ``RefinerNode``, the node (and ``RefinerCore``, what it shares with the next)
- ``lifecycle``    ``ManagedRefinerNode``, the same node as a lifecycle (managed) node
- ``processing``   what the worker does with a frame: refine or track, then publish
- ``tracking``     the worker's tracking mode (tracker, re-registrations)
- ``reregistration`` background re-registrations of tracked objects, in a child process
- ``node_main``    ``refiner_node`` / ``refiner_lifecycle_node``: start-up checks, then the node
- ``ros_args``     the ``--ros-args`` (params files, ``-p``) checked before rclpy reads them
- ``availability`` whether rclpy and the message packages are importable, in one line
- ``demo``         ``pose-refiner demo``: the node on a synthetic recording
"""
