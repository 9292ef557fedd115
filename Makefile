# Entry points: `make demo` and `make test` work on a fresh clone (they run `setup` first).
# The environment lives in .venv (see scripts/setup_env.sh); a second `make setup` with
# nothing changed takes seconds.

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Two test processes, one per core of the CI machine; a file's tests stay in one process
# (its module fixtures are built once). PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= 2

.PHONY: setup demo test lint clean

setup:
	@VENV="$(abspath $(VENV))" bash scripts/setup_env.sh

demo: setup
	$(VENV)/bin/pose-refiner demo

# POSE_REFINER_REQUIRE_ROS=1: the middleware tests fail instead of skipping when rclpy or
# a message package is missing.
test: setup
	POSE_REFINER_REQUIRE_ROS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: setup
	@test -x $(VENV)/bin/ruff || $(PY) -m pip install -q -c $(VENV)/.setup/constraints.txt ruff
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
