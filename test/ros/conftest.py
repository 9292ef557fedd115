"""Node tests: make best-effort camera images deliverable in this process.

Fast DDS reads its XML profile once per process, when the first participant is created,
and a best-effort reader never gets a sample larger than the publisher's shared-memory
segment (512 KB by default; see ``config/fastdds_large_data.xml``).
The test process publishes 640x480 images, so the profile is set here, at collection,
before any test creates a participant. A profile the user set is kept.
"""

import os

from pose_refiner_ros.ros.demo import ENV_KEYS, ros_env

_env = ros_env()
for _key in ENV_KEYS[3:]:  # the Fast DDS profile only; domain ids are set per test
    if _key in _env:
        os.environ[_key] = _env[_key]
