#!/usr/bin/env bash
# One script for a CUDA machine: check every Triton kernel (hand-written and generated from the
# neuron specs, through check_neuron) against the reference (values and
# gradients, float32 and half inputs) and the fused layer blocks (batch norm / pooling) against the
# unfused layers, then time the LIF layer, single-step streams and whole networks against the
# peers on the GPU.
#
#   bash benchmarks/fetch_gpu_wheels.sh      # here, once: peers' wheels into .whl/
#   device run: carry [".whl"], command "bash benchmarks/gpu_check.sh", timeout_s 560
#
# The steps' own limits add up to 490 s (200 + 90 + 60 + 40 + 100), plus about 20 s of installs;
# the runs of 2026-12-04 took 243-253 s on an H200. Results go to $OUT (or ./gpu_check_out):
# pytest log, benchmark tables and JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3
start=$SECONDS
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# spikelab itself, without touching the machine's torch/triton
$PY -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/spikelab . || exit 1
# the installed spikelab first; the checkout last, for the tests' own helpers (tests.needs, ...)
export PYTHONPATH=/tmp/spikelab${PYTHONPATH:+:$PYTHONPATH}:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, triton, numba; print('torch', torch.__version__, 'triton', triton.__version__, 'numba', numba.__version__, 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/gpu.txt"

# Triton compiles on the CPU: several pytest workers (when pytest-xdist is there) share the GPU
# and compile side by side; a per-test limit (pytest-timeout) keeps one hung kernel from
# swallowing the report.
unset TRITON_INTERPRET
opts=(-q -p no:cacheprovider --tb=short -rfE)
$PY -c "import xdist" 2>/dev/null && opts+=(-n 12)
$PY -c "import pytest_timeout" 2>/dev/null && opts+=(--timeout 120)
echo "== Triton kernels against the reference (on the GPU)"
(cd tests && timeout 200 $PY -m pytest "${opts[@]}" test_triton.py test_specs.py test_triton_compile.py 2>&1) \
    | tee "$OUT/triton_tests.log"
tests_rc=${PIPESTATUS[0]}
(cd tests && timeout 90 $PY -m pytest "${opts[@]}" test_blocks.py test_dynamic_calibration.py test_compile.py -k "triton or cuda or eager" 2>&1) \
    | tee -a "$OUT/triton_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || tests_rc=1
echo "(tests done at $((SECONDS - start)) s)"

echo "== LIF layer speed on the GPU"
timeout 60 $PY benchmarks/neuron_speed.py --device cuda --repeats 20 --json "$OUT/gpu_bench.json" 2>&1 \
    | tee "$OUT/gpu_bench.txt"

echo "== Streaming single steps on the GPU"
timeout 40 $PY benchmarks/streaming_speed.py --device cuda --repeats 5 2>&1 | tee "$OUT/gpu_streaming.txt"

echo "== Whole networks on the GPU"
timeout 100 $PY benchmarks/network_speed.py --device cuda --nets cnn,mlp --json "$OUT/gpu_network.json" 2>&1 \
    | tee "$OUT/gpu_network.txt"
echo "(all done at $((SECONDS - start)) s)"
exit $tests_rc
