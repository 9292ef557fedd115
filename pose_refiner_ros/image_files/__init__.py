"""The refiner on image files, without ROS: reading ``camera.json`` and ``initial.json``
with errors that name the file and the field (:mod:`.inputs`), the ``pose-refiner
refine`` subcommand (:mod:`.command`), and the small sample it runs on as shipped in
``examples/refine/`` (:mod:`.sample`)."""
