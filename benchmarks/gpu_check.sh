#!/usr/bin/env bash
# One script for a CUDA machine: check every Triton kernel (hand-written and generated from the
# neuron specs, through check_neuron) against the reference (values and
# gradients, float32 and half inputs) and the fused layer blocks (batch norm / pooling) against the
# unfused layers, then time the LIF layer, single-step streams and whole networks against the
# peers on the GPU.
#
#   bash benchmarks/fetch_gpu_wheels.sh      # here, once: peers' wheels into .whl/
#   device run: carry [".whl"], command "bash benchmarks/gpu_check.sh", timeout ~540 s
#
# Results go to $OUT (or ./gpu_check_out): pytest log, benchmark table and JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# spikelab itself, without touching the machine's torch/triton
$PY -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/spikelab . || exit 1
export PYTHONPATH=/tmp/spikelab${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

echo "== Triton kernels against the reference (on the GPU)"
unset TRITON_INTERPRET
(cd tests && timeout 300 $PY -m pytest -q -p no:cacheprovider test_triton.py test_specs.py 2>&1) | tee "$OUT/triton_tests.log"
tests_rc=${PIPESTATUS[0]}
(cd tests && timeout 120 $PY -m pytest -q -p no:cacheprovider test_blocks.py -k triton 2>&1) | tee -a "$OUT/triton_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || tests_rc=1
(cd tests && timeout 120 $PY -m pytest -q -p no:cacheprovider test_dynamic_calibration.py -k cuda 2>&1) | tee -a "$OUT/triton_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || tests_rc=1

echo "== LIF layer speed on the GPU"
timeout 120 $PY benchmarks/neuron_speed.py --device cuda --repeats 20 --json "$OUT/gpu_bench.json" 2>&1 \
    | tee "$OUT/gpu_bench.txt"

echo "== Streaming single steps on the GPU"
timeout 60 $PY benchmarks/streaming_speed.py --device cuda --repeats 5 2>&1 | tee "$OUT/gpu_streaming.txt"

echo "== Whole networks on the GPU"
timeout 150 $PY benchmarks/network_speed.py --device cuda --nets cnn,mlp --json "$OUT/gpu_network.json" 2>&1 \
    | tee "$OUT/gpu_network.txt"
exit $tests_rc
