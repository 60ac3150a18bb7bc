#!/usr/bin/env bash
# The one-line bugs that issue 19 found the suite blind to, planted one at a time with
# tools/mutate.py --replace; each must be reported "killed". Run from the repository root:
#   tools/planted_bugs.sh            (about 3 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
M="$PY tools/mutate.py --jobs 1"
KA=tests/test_known_answers.py
plant() { echo "--- $1"; shift; $M "$@" | grep -E "killed|SURVIVED" | head -1; }

plant "LIF fast-path backward: hard-reset gradient sign flipped (value - h -> h - value)" \
    --generated lif --functions backward_plain_fast --replace "(HARD * (VALUE + (-(c_v))))" "(HARD * (c_v + (-(VALUE))))" \
    -- tests/test_kernels.py -k "lif and not alif"
plant "float64 kernel rounds the membrane to float32" \
    --generated lif --functions forward_plain --replace "c_v = f2" "c_v = np.float32(f2)" \
    -- tests/test_kernels.py -k "float64"
plant "subtract reset behaves as a reset to zero (reference)" \
    --replace "return h - threshold * s" "return h * (1.0 - s)" \
    -- kernels/reference.py $KA -k "reset"
plant "subtract reset behaves as a reset to zero (Numba kernels)" \
    --jit off --replace "return h - th if fired else h" "return h - h if fired else h" \
    -- kernels/numba/common.py $KA -k "reset"
plant "DVS Gesture cut: end inclusive" \
    --replace "np.searchsorted(t, end)" "np.searchsorted(t, end, side='right')" \
    -- spikelab/data/datasets/dvsgesture.py $KA -k dvsgesture
plant "DVS Gesture cut: start exclusive" \
    --replace "np.searchsorted(t, start)" "np.searchsorted(t, start, side='right')" \
    -- spikelab/data/datasets/dvsgesture.py $KA -k dvsgesture
plant "Dynamic Confidence ignores the temperature" \
    --replace "z = evidence / temperature" "z = evidence" \
    -- spikelab/dynamic/controller.py $KA -k "dynamic or confidence"
plant "Dynamic Confidence live mode uses only the first per-step threshold" \
    --replace "self.threshold[t: t + len(steps)].unsqueeze(1)" "self.threshold[0]" \
    -- spikelab/dynamic/controller.py $KA -k "dynamic or confidence"
plant "batch norm over time normalises each step on its own" \
    --replace "return super().forward(x_seq.flatten(0, 1)).unflatten(0, x_seq.shape[:2])" \
    "return torch.stack([super(_Folded, self).forward(x) for x in x_seq])" \
    -- spikelab/layers/temporal.py $KA -k batchnorm
plant "AEDAT 3.1 reader swaps x and y (checked against bytes packed by hand, not our writer)" \
    --replace "(d >> 17)[valid] & 0x7FFF, (d >> 2)[valid] & 0x7FFF" \
    "(d >> 2)[valid] & 0x7FFF, (d >> 17)[valid] & 0x7FFF" \
    -- spikelab/data/formats/aedat3.py $KA::test_aedat31_packed_by_hand
