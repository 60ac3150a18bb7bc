#!/usr/bin/env bash
# Download the peer libraries that benchmarks/gpu_check.sh installs on a GPU machine with no
# package index (Python 3.12 there). Run once here; the wheels land in .whl/ (git-ignored) and
# travel with the device run (carry: [".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PY="${PYTHON:-.venv/bin/python}"
common=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl)
"$PY" -m pip download -q "${common[@]}" snntorch==1.0.0 spikingjelly==2.0.0 loguru nir==1.0.8 nirtorch==2.6
# norse ships only an sdist; build a pure-Python wheel of it here
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl norse==1.1.0 || echo "norse wheel not built; skipped"
ls -la .whl
