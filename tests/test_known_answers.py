"""Known-answer tests: expected values worked out by hand from the documented definitions
(docs/neurons.md, datasets/dvsgesture.md, the AEDAT 3.1 format, nn.BatchNorm, docs/dynamic.md),
never taken from the library's own output. Each pins a behaviour that a plausible one-line
bug would change while the rest of the suite still passed:

* reset modes: inputs where subtract, reset-to-zero and reset-to-value give three different
  spike trains and membranes (torch reference and Numba, ``forward`` and ``step``);
* DVS Gesture: events exactly on a label's start and end (and one microsecond either side);
* AEDAT 3.1: a file packed byte by byte with ``struct`` (timestamp overflow, an invalid event,
  packets of other types);
* BatchNorm over time: statistics over ``T x B`` (not per step), running statistics, gradients,
  eval mode, and the BN fused into the neuron kernel of a Sequential;
* Dynamic Confidence: the temperature and per-step thresholds, live and trace mode.

Numbers are dyadic fractions where the arithmetic must be exact (no float ties to argue about).
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from torch import nn

import spikelab as sl
from spikelab import data
from spikelab.data.formats import aedat3
from spikelab.dynamic import DynamicConfidence

# ================================================================================================
# 1. Reset modes of LIF / IF, by hand
# ================================================================================================
#
# docs/neurons.md, per step:  h = beta * v + c * x[t];  S = H(h - threshold) (h >= threshold);
#   subtract: v = h - threshold * S;  hard ("zero" or a number): v = h * (1 - S) + value * S.
# threshold = 1 throughout; v starts at 0; reset value -0.25 for the "value" case.
#
# LIF(beta=0.5), c = 1, x = [1.5, 1.0625, 0.875, 0.5]
#   subtract: h1 = 1.5 -> S, v = 0.5
#             h2 = 0.25 + 1.0625 = 1.3125 -> S, v = 0.3125
#             h3 = 0.15625 + 0.875 = 1.03125 -> S, v = 0.03125
#             h4 = 0.015625 + 0.5 = 0.515625 -> no, v = 0.515625
#   zero:     h1 = 1.5 -> S, v = 0
#             h2 = 1.0625 -> S, v = 0
#             h3 = 0.875 -> no, v = 0.875
#             h4 = 0.4375 + 0.5 = 0.9375 -> no, v = 0.9375
#   -0.25:    h1 = 1.5 -> S, v = -0.25
#             h2 = -0.125 + 1.0625 = 0.9375 -> no, v = 0.9375
#             h3 = 0.46875 + 0.875 = 1.34375 -> S, v = -0.25
#             h4 = -0.125 + 0.5 = 0.375 -> no, v = 0.375
#
# IF (beta = 1), x = [0.125, 0.125, 0.875, 1.125, 0.875]
#   subtract: h = .125, .25, 1.125 S (v .125), 1.25 S (v .25), 1.125 S (v .125)
#   zero:     h = .125, .25, 1.125 S (v 0), 1.125 S (v 0), .875 (v .875)
#   -0.25:    h = .125, .25, 1.125 S (v -.25), .875 (v .875), 1.75 S (v -.25)
#
# LIF(tau=4, decay_input=True): beta = 1 - 1/4 = 0.75, c = 1 - beta = 0.25, x = [6, 4.25, 3]
#   (c * x = 1.5, 1.0625, 0.75)
#   subtract: h1 = 1.5 S (v .5); h2 = .375 + 1.0625 = 1.4375 S (v .4375);
#             h3 = .328125 + .75 = 1.078125 S (v .078125)
#   zero:     h1 = 1.5 S (v 0); h2 = 1.0625 S (v 0); h3 = .75 (v .75)
#   -0.25:    h1 = 1.5 S (v -.25); h2 = -.1875 + 1.0625 = .875 (v .875);
#             h3 = .65625 + .75 = 1.40625 S (v -.25)

RESETS = {"subtract": "subtract", "zero": "zero", "value": -0.25}

KNOWN_RESETS = {
    # name: (factory, x, {reset: (spikes, membrane after each step, charged h of each step)})
    "lif": (lambda **kw: sl.LIF(beta=0.5, threshold=1.0, **kw), [1.5, 1.0625, 0.875, 0.5], {
        "subtract": ([1, 1, 1, 0], [0.5, 0.3125, 0.03125, 0.515625], [1.5, 1.3125, 1.03125, 0.515625]),
        "zero": ([1, 1, 0, 0], [0.0, 0.0, 0.875, 0.9375], [1.5, 1.0625, 0.875, 0.9375]),
        "value": ([1, 0, 1, 0], [-0.25, 0.9375, -0.25, 0.375], [1.5, 0.9375, 1.34375, 0.375]),
    }),
    "if": (lambda **kw: sl.IF(threshold=1.0, **kw), [0.125, 0.125, 0.875, 1.125, 0.875], {
        "subtract": ([0, 0, 1, 1, 1], [0.125, 0.25, 0.125, 0.25, 0.125], [0.125, 0.25, 1.125, 1.25, 1.125]),
        "zero": ([0, 0, 1, 1, 0], [0.125, 0.25, 0.0, 0.0, 0.875], [0.125, 0.25, 1.125, 1.125, 0.875]),
        "value": ([0, 0, 1, 0, 1], [0.125, 0.25, -0.25, 0.875, -0.25], [0.125, 0.25, 1.125, 0.875, 1.75]),
    }),
    "lif_tau_decay_input": (lambda **kw: sl.LIF(tau=4.0, decay_input=True, threshold=1.0, **kw), [6.0, 4.25, 3.0], {
        "subtract": ([1, 1, 1], [0.5, 0.4375, 0.078125], [1.5, 1.4375, 1.078125]),
        "zero": ([1, 1, 0], [0.0, 0.0, 0.75], [1.5, 1.0625, 0.75]),
        "value": ([1, 0, 1], [-0.25, 0.875, -0.25], [1.5, 0.875, 1.40625]),
    }),
}
RESET_CASES = [(n, r) for n in KNOWN_RESETS for r in RESETS]


AT_THRESHOLD = {
    # inputs that charge the membrane to exactly the threshold (1.0) at steps 1 and 3: it fires (H(0) = 1)
    "lif": (lambda **kw: sl.LIF(beta=0.5, threshold=1.0, **kw), [1.0, 0.75, 0.625]),  # h 1, .75, .375 + .625
    "if": (lambda **kw: sl.IF(threshold=1.0, **kw), [1.0, 0.5, 0.5]),  # h 1, .5, 1
    # TrSG fires on h / theta - 1 >= 0 (and outputs theta * S: 1.0 here)
    "lif-trsg": (lambda **kw: sl.LIF(beta=0.5, threshold=1.0, threshold_robust=True, **kw), [1.0, 0.75, 0.625]),
    "alif": (lambda **kw: sl.AdaptiveLIF(beta=0.5, threshold=1.0, adaptation=0.0, **kw), [1.0, 0.75, 0.625]),
    "cuba": (lambda **kw: sl.CurrentLIF(alpha=0.0, beta=0.5, threshold=1.0, **kw), [1.0, 0.75, 0.625]),
}


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("name", AT_THRESHOLD)
def test_a_membrane_exactly_at_threshold_fires(name, backend):
    factory, x = AT_THRESHOLD[name]
    out = factory(reset="subtract", backend=backend)(torch.tensor(x).view(-1, 1, 1))
    assert out.flatten().tolist() == [1.0, 0.0, 1.0], (name, backend)


@pytest.mark.parametrize("learn", [False, True], ids=["x only", "parameters too"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("name", AT_THRESHOLD)
def test_gradients_at_exactly_the_threshold_match_the_reference(name, reset, learn):
    """The fused backward replays the spikes as the forward fired them, H(0) = 1 included (a hard
    reset's gradient depends on it), in both backward variants (only ``x`` requiring gradients,
    or the parameters too)."""
    factory, x = AT_THRESHOLD[name]
    weights = torch.tensor([0.5, -1.0, 2.0]).view(-1, 1, 1)
    grads = []
    for backend in ("torch", "numba"):
        inp = torch.tensor(x).view(-1, 1, 1).requires_grad_(True)
        neuron = factory(reset=reset, backend=backend, learn_threshold=learn)
        (neuron(inp) * weights).sum().backward()
        grads.append([inp.grad.flatten()] + [p.grad.flatten() for p in neuron.parameters() if p.requires_grad])
    assert len(grads[0]) == (2 if learn else 1)
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want)
    assert grads[0][0].abs().sum() > 0


@pytest.mark.parametrize("impl", ["reference", "ops"])
@pytest.mark.parametrize("family", ["lif", "alif", "cuba", "probabilistic"])
def test_sequence_defaults_are_the_documented_ones(family, impl):
    """Called with only what it needs, a family's sequence resets by subtraction, to 0 when asked
    for a hard reset, keeps the reset's gradient and fires unit spikes (no TrSG)."""
    from spikelab.kernels import ops, reference
    from spikelab.surrogate import ATan

    fn = getattr(reference if impl == "reference" else ops, f"{family}_sequence")
    torch.manual_seed(3)
    x = torch.rand(6, 5) * 2.5
    one = torch.ones(5)
    thr = torch.full((5,), 0.5)  # theta * S differs from S: a TrSG output would show
    params = {"lif": (one * 0.0, one * 0.8, one, thr), "alif": (one * 0.0, one * 0.0, one * 0.8, one, thr,
                                                                  one * 0.9, one * 0.2),
              "cuba": (one * 0.0, one * 0.0, one * 0.5, one * 0.8, thr),
              "probabilistic": (one * 0.0, one * 0.8, one, thr, one * 0.2, torch.tensor([11, 0]))}[family]
    options = {} if family == "probabilistic" else {"surrogate": ATan()}

    def run(**kw):
        xi = x.clone().requires_grad_(True)
        out, _ = fn(xi, *params, **options, **kw)
        (out * torch.linspace(-1, 1, 5)).sum().backward()
        return out.detach(), xi.grad

    robust = {} if family == "probabilistic" else {"threshold_robust": False}
    default, explicit = run(), run(reset_mode="subtract", reset_value=0.0, detach_reset=False, **robust)
    assert torch.equal(default[0], explicit[0]) and torch.equal(default[1], explicit[1])
    assert set(default[0].unique().tolist()) == {0.0, 1.0}
    hard, hard_explicit = run(reset_mode="hard"), run(reset_mode="hard", reset_value=0.0)
    assert torch.equal(hard[0], hard_explicit[0]) and torch.equal(hard[1], hard_explicit[1])
    assert not torch.equal(run(detach_reset=True)[1], default[1])


def test_escape_spike_fires_when_the_draw_is_below_the_probability():
    """S = [u < p]: at the membrane's threshold p = 1/2, so u = 1/2 does not fire and the
    largest draw below it does."""
    from spikelab.kernels.reference import escape_spike

    h, thr, temp = torch.full((3,), 0.7), torch.full((3,), 0.7), torch.ones(3)
    below = 0.5 - 2.0**-24  # the draws are multiples of 2**-24
    s = escape_spike(h, thr, temp, torch.tensor([0.5, below, 0.0]))
    assert s.tolist() == [0.0, 1.0, 1.0]
    assert escape_spike(h, thr, temp, None).tolist() == [0.5, 0.5, 0.5]  # mean-field: p itself


def test_reset_known_answers_are_distinct():
    """The hand tables themselves: the three resets differ on every neuron (else they pin nothing)."""
    for name, (_, _, table) in KNOWN_RESETS.items():
        trains = [tuple(table[r][0]) for r in RESETS]
        assert len(set(trains)) == 3, name


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("name,reset", RESET_CASES)
def test_reset_forward_known_answer(name, reset, backend):
    factory, x, table = KNOWN_RESETS[name]
    spikes, _, _ = table[reset]
    neuron = factory(reset=RESETS[reset], backend=backend)
    # two identical samples in the batch, three features: the equations are per element
    x_seq = torch.tensor(x).view(-1, 1, 1).expand(-1, 2, 3).contiguous()
    out = neuron(x_seq)
    assert out.shape == x_seq.shape
    expected = torch.tensor(spikes, dtype=torch.float32).view(-1, 1, 1).expand_as(x_seq)
    assert torch.equal(out, expected), (name, reset, backend, out[:, 0, 0].tolist())


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("name,reset", RESET_CASES)
def test_reset_step_known_answer(name, reset, backend):
    factory, x, table = KNOWN_RESETS[name]
    spikes, membrane, _ = table[reset]
    neuron = factory(reset=RESETS[reset], backend=backend)
    got_s, got_v = [], []
    for xt in x:
        got_s.append(neuron.step(torch.tensor([xt, xt])).tolist())
        got_v.append(neuron.state["v"].tolist())
    assert got_s == [[s, s] for s in spikes], (name, reset, backend)
    # dyadic fractions: exact in float32
    assert got_v == [[v, v] for v in membrane], (name, reset, backend)


@pytest.mark.parametrize("name,reset", RESET_CASES)
def test_reset_membrane_trace_known_answer(name, reset):
    """The charged potential ``h`` a Monitor records over a forward pass."""
    factory, x, table = KNOWN_RESETS[name]
    _, _, charged = table[reset]
    net = sl.layers.Sequential(factory(reset=RESETS[reset]))
    with sl.Monitor(net, membrane=True) as mon:
        net(torch.tensor(x).view(-1, 1))
    (trace,) = mon.membrane.values()
    assert trace.flatten().tolist() == charged


# ================================================================================================
# 2. DVS Gesture: the label cut [start, end) in microseconds
# ================================================================================================

def _gesture_folder(tmp_path):
    """user01 (train) and user24 (test) recordings, each cut by two labels that touch at 2000.

    Events (x identifies each one) at t = 999, 1000, 1001, 1999, 2000, 2001, 2999, 3000, 3001.
    Labels: class 4 on [1000, 2000), class 9 on [2000, 3000).
    """
    folder = tmp_path / "DvsGesture"
    folder.mkdir()
    t = [999, 1000, 1001, 1999, 2000, 2001, 2999, 3000, 3001]
    events = data.make_events(list(range(10, 10 + len(t))), [3] * len(t), t, [1, 0] * 4 + [1])
    for user in ("user01_led", "user24_led"):
        aedat3.write_aedat3(folder / f"{user}.aedat", events)
        (folder / f"{user}_labels.csv").write_text("class,startTime_usec,endTime_usec\n4,1000,2000\n9,2000,3000\n")
    return tmp_path


@pytest.mark.parametrize("split", ["train", "test"])
def test_dvsgesture_cut_includes_start_excludes_end(tmp_path, split):
    root = _gesture_folder(tmp_path)
    ds = data.DVSGesture(root, split)
    assert len(ds) == 2
    first, label = ds[0]
    # [1000, 2000): 1000 (on the start) and 1001, 1999 -- not 999, not 2000 (on the end)
    assert label == 3
    assert first["t"].tolist() == [1000, 1001, 1999]
    assert first["x"].tolist() == [11, 12, 13]
    assert first["p"].tolist() == [0, 1, 0]
    second, label = ds[1]
    # [2000, 3000): 2000 belongs to the second gesture only; 3000 to none
    assert label == 8
    assert second["t"].tolist() == [2000, 2001, 2999]
    assert second["x"].tolist() == [14, 15, 16]


@pytest.mark.parametrize("user, split", [("user23", "train"), ("user29", "test")])
def test_dvsgesture_split_edges_and_a_user_in_neither(tmp_path, user, split):
    """Users 1-23 train, 24-29 test (the published split); a user 30 or 00 fits neither and is an
    error naming the file, not silently left out of both. Extra columns after the three of a
    label row are ignored."""
    root = _gesture_folder(tmp_path)
    folder = root / "DvsGesture"
    events = data.make_events([5, 6], [5, 6], [1500, 1600], [1, 0])
    aedat3.write_aedat3(folder / f"{user}_led.aedat", events)
    (folder / f"{user}_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n2,1000,2000,\n")
    ds = data.DVSGesture(root, split)
    assert ds.sensor_size == (128, 128, 2)  # the DVS128: 128 x 128 pixels, ON and OFF events
    assert len(ds) == 3 and ds[2][1] == 1 and ds[2][0]["x"].tolist() == [5, 6]
    for stray in ("user30_led", "user00_led"):
        aedat3.write_aedat3(folder / f"{stray}.aedat", events)
        for either in ("train", "test"):
            with pytest.raises(data.EventFormatError, match=f"{stray}.aedat.*neither split"):
                data.DVSGesture(root, either)
        (folder / f"{stray}.aedat").unlink()


@pytest.mark.parametrize("x, y, ok", [(127, 127, True), (128, 3, False), (3, 128, False)])
def test_dvsgesture_events_outside_the_128x128_sensor_are_refused(tmp_path, x, y, ok):
    root = _gesture_folder(tmp_path)
    events = data.make_events([x, 5], [y, 5], [1500, 1600], [1, 0])
    aedat3.write_aedat3(root / "DvsGesture" / "user01_led.aedat", events)
    dataset = data.DVSGesture(root, "train")
    if ok:
        assert dataset[0][0]["x"].tolist() == [x, 5]
    else:
        with pytest.raises(ValueError, match=r"user01_led.aedat.*(x|y)"):
            dataset[0]


@pytest.mark.parametrize("row, ok", [("1,1000,1001", True), ("11,1000,2000", True), ("0,1000,2000", False),
                                     ("12,1000,2000", False), ("4,2000,2000", False), ("4,2000,1999", False)])
def test_dvsgesture_label_rows_at_the_limits(tmp_path, row, ok):
    root = _gesture_folder(tmp_path)
    (root / "DvsGesture" / "user01_led_labels.csv").write_text(f"class,startTime_usec,endTime_usec\n{row}\n")
    if ok:  # classes 1..11, a gesture at least 1 us long
        assert len(data.DVSGesture(root, "train")) == 1
    else:
        with pytest.raises(ValueError, match=r"user01_led_labels.csv.*line 2: class"):
            data.DVSGesture(root, "train")


# ================================================================================================
# 3. AEDAT 3.1 packed by hand (libcaer's event packet layout)
# ================================================================================================
#
# Packet header (28 bytes, little endian): int16 eventType, int16 eventSource, int32 eventSize,
# int32 eventTSOffset, int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber,
# int32 eventValid. Polarity event (type 1, 8 bytes): uint32 data, int32 timestamp, where
# data bit 0 = valid, bit 1 = polarity, bits 2..16 = y, bits 17..31 = x;
# full timestamp = eventTSOverflow << 31 | timestamp.

def _packet(kind: int, size: int, overflow: int, events: list[bytes], valid: int) -> bytes:
    n = len(events)
    head = struct.pack("<hhiiiiii", kind, 1, size, 4 if kind == 1 else 0, overflow, n, n, valid)
    assert len(head) == 28
    body = b"".join(events)
    assert len(body) == n * size
    return head + body


def _polarity(x: int, y: int, p: int, ts: int, valid: int = 1) -> bytes:
    return struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, ts)


def _aedat31_bytes() -> bytes:
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#Start-Time: by hand\r\n#!END-HEADER\r\n"
    first = _packet(1, 8, 0, [
        _polarity(5, 7, 1, 100),
        _polarity(127, 0, 0, 150, valid=0),  # invalid: dropped
        _polarity(0, 127, 0, 200),
        _polarity(127, 1, 1, 2_147_483_000),  # close to 2**31
    ], valid=3)
    # a special-event packet (type 0) whose 8-byte events would decode as valid polarity events
    special = _packet(0, 8, 0, [struct.pack("<Ii", (9 << 17) | (9 << 2) | 1, 300),
                                struct.pack("<Ii", (8 << 17) | (8 << 2) | 3, 400)], valid=2)
    # an IMU6 packet (type 3, 36-byte events)
    imu = _packet(3, 36, 0, [struct.pack("<Ii7f", 1, 500, *([0.5] * 7))], valid=1)
    # after the timestamp wrapped: eventTSOverflow = 1, so t = 2**31 + ts
    second = _packet(1, 8, 1, [
        _polarity(100, 50, 1, 5),
        _polarity(64, 64, 1, 7, valid=0),  # invalid: dropped
        _polarity(1, 2, 0, 10),
    ], valid=2)
    return header + first + special + imu + second


AEDAT31_EXPECTED = {
    "x": [5, 0, 127, 100, 1],
    "y": [7, 127, 1, 50, 2],
    "t": [100, 200, 2_147_483_000, 2**31 + 5, 2**31 + 10],
    "p": [1, 0, 1, 1, 0],
}


@pytest.mark.parametrize("how", ["read_events", "format", "read_aedat3", "decode_aedat3"])
def test_aedat31_packed_by_hand(tmp_path, how):
    raw = _aedat31_bytes()
    path = tmp_path / "by_hand.aedat"
    path.write_bytes(raw)
    if how == "read_events":
        events = data.read_events(path)
    elif how == "format":
        events = data.read_events(path, format="aedat3")
    elif how == "read_aedat3":
        events = aedat3.read_aedat3(path)
    else:
        events = aedat3.decode_aedat3(raw)
    got = {k: events[k].tolist() for k in ("x", "y", "t", "p")}
    assert got == AEDAT31_EXPECTED
    assert events["t"].dtype == np.int64


# ================================================================================================
# 4. BatchNorm over time: statistics over T x B (x spatial), as nn.BatchNorm on [T*B, ...]
# ================================================================================================

def test_batchnorm1d_by_hand():
    """[T=2, B=1, C=1] = [1, 3]: mean 2, biased variance 1, unbiased 2 (a per-step BN gives 0, 0)."""
    bn = sl.layers.BatchNorm1d(1, eps=1e-5)
    out = bn(torch.tensor([1.0, 3.0]).view(2, 1, 1))
    assert out.flatten().tolist() == pytest.approx([-1 / math.sqrt(1 + 1e-5), 1 / math.sqrt(1 + 1e-5)])
    assert bn.running_mean.item() == pytest.approx(0.9 * 0 + 0.1 * 2)
    assert bn.running_var.item() == pytest.approx(0.9 * 1 + 0.1 * 2)
    assert bn.num_batches_tracked.item() == 1
    bn.eval()  # (x - 0.2) / sqrt(1.1 + eps)
    out = bn(torch.tensor([1.0, 3.0]).view(2, 1, 1))
    assert out.flatten().tolist() == pytest.approx([0.8 / math.sqrt(1.1 + 1e-5), 2.8 / math.sqrt(1.1 + 1e-5)])


def _set_affine(ours: nn.Module, ref: nn.Module, channels: int) -> None:
    with torch.no_grad():
        w = torch.linspace(0.5, 1.5, channels)
        b = torch.linspace(-0.2, 0.3, channels)
        for m in (ours, ref):
            m.weight.copy_(w)
            m.bias.copy_(b)


@pytest.mark.parametrize("kind,shape", [("2d", (3, 2, 4, 3, 3)), ("1d", (4, 3, 5)), ("1d", (3, 2, 5, 4))])
def test_batchnorm_over_time_matches_torch_on_folded_batch(kind, shape):
    channels = shape[2]
    ours = (sl.layers.BatchNorm2d if kind == "2d" else sl.layers.BatchNorm1d)(channels)
    ref = (nn.BatchNorm2d if kind == "2d" else nn.BatchNorm1d)(channels)
    _set_affine(ours, ref, channels)
    g = torch.Generator().manual_seed(1)
    for step in range(3):
        # each step's statistics differ, and differ between the time steps
        x = torch.randn(shape, generator=g) * (1 + step) + torch.arange(shape[0]).view(-1, *[1] * (len(shape) - 1))
        grad = torch.randn(shape, generator=g)
        x_ours = x.clone().requires_grad_(True)
        x_ref = x.flatten(0, 1).clone().requires_grad_(True)
        out_ours = ours(x_ours)
        out_ref = ref(x_ref)
        assert out_ours.shape == x.shape
        torch.testing.assert_close(out_ours, out_ref.unflatten(0, shape[:2]))
        (out_ours * grad).sum().backward()
        (out_ref * grad.flatten(0, 1)).sum().backward()
        torch.testing.assert_close(x_ours.grad, x_ref.grad.unflatten(0, shape[:2]))
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad)
        ours.zero_grad()
        ref.zero_grad()
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 3
    ours.eval()
    ref.eval()
    x = torch.randn(shape, generator=g)
    torch.testing.assert_close(ours(x), ref(x.flatten(0, 1)).unflatten(0, shape[:2]))
    # step(): one time step [B, ...] in eval mode is the same normalisation
    torch.testing.assert_close(ours.step(x[1]), ref(x[1]))


def _unfused_reference(x, conv, bn, beta, threshold, pool):
    """Conv -> nn.BatchNorm2d on [T*B, ...] -> LIF written out (subtract reset) -> AvgPool2d."""
    T, B = x.shape[:2]
    y = bn(conv(x.flatten(0, 1))).unflatten(0, (T, B))
    v = torch.zeros_like(y[0])
    spikes = []
    for t in range(T):
        h = beta * v + y[t]
        s = (h >= threshold).to(h.dtype)
        v = h - threshold * s
        spikes.append(s)
    s = torch.stack(spikes)
    return pool(s.flatten(0, 1)).unflatten(0, (T, B))


def test_fused_conv_bn_lif_pool_running_stats_match_unfused_torch(monkeypatch):
    from spikelab.layers import fusion

    torch.manual_seed(3)
    dtype = torch.float64
    T, B, C_in, C, H, W = 4, 3, 2, 3, 6, 6
    net = sl.layers.Sequential(sl.layers.Conv2d(C_in, C, 3, padding=1), sl.layers.BatchNorm2d(C),
                               sl.LIF(beta=0.5, threshold=0.5), sl.layers.AvgPool2d(2)).to(dtype)
    conv, bn = nn.Conv2d(C_in, C, 3, padding=1).to(dtype), nn.BatchNorm2d(C).to(dtype)
    with torch.no_grad():
        conv.weight.copy_(net[0].weight)
        conv.bias.copy_(net[0].bias)
        net[1].weight.copy_(torch.tensor([0.8, 1.2, 1.0]))
        net[1].bias.copy_(torch.tensor([0.1, -0.1, 0.3]))
        bn.weight.copy_(net[1].weight)
        bn.bias.copy_(net[1].bias)
    pool = nn.AvgPool2d(2)

    fused_runs = []
    real_run_block = fusion.run_block

    def spy(*args, **kwargs):
        out = real_run_block(*args, **kwargs)
        fused_runs.append(out is not None)
        return out

    monkeypatch.setattr(fusion, "run_block", spy)
    g = torch.Generator().manual_seed(4)
    for step in range(3):
        x = (torch.randn(T, B, C_in, H, W, generator=g, dtype=dtype) + 0.2 * torch.arange(T, dtype=dtype)
             .view(T, 1, 1, 1, 1)) * (1 + step)
        with torch.no_grad():
            out = net(x)
            expected = _unfused_reference(x, conv, bn, 0.5, 0.5, pool)
        assert out.shape == (T, B, C, H // 2, W // 2)
        torch.testing.assert_close(out, expected)
    assert fused_runs == [True] * 3, "the Conv -> BN -> LIF -> AvgPool block did not run fused"
    torch.testing.assert_close(net[1].running_mean, bn.running_mean)
    torch.testing.assert_close(net[1].running_var, bn.running_var)
    assert net[1].num_batches_tracked.item() == bn.num_batches_tracked.item() == 3
    # eval mode: the fused block normalises with the running statistics
    net.eval()
    bn.eval()
    x = torch.randn(T, B, C_in, H, W, generator=g, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _unfused_reference(x, conv, bn, 0.5, 0.5, pool))
    assert fused_runs[-1] is True


def test_fused_block_gradients_match_unfused_reference():
    """BN weight/bias and input gradients through the fused block equal autograd through the
    layers one by one on the reference backend (whose BN is checked against nn.BatchNorm above)."""
    from spikelab.layers import fusion

    torch.manual_seed(5)
    dtype = torch.float64
    T, B, C, H, W = 3, 2, 3, 4, 4

    def build(backend):
        torch.manual_seed(6)
        return sl.layers.Sequential(sl.layers.BatchNorm2d(C), sl.LIF(beta=0.5, threshold=0.5, backend=backend),
                                    sl.layers.AvgPool2d(2)).to(dtype)

    fused, plain = build("numba"), build("torch")
    with torch.no_grad():
        for m in (fused[0], plain[0]):
            m.weight.copy_(torch.tensor([0.8, 1.2, 1.0]))
            m.bias.copy_(torch.tensor([0.1, -0.1, 0.3]))
    x = torch.randn(T, B, C, H, W, dtype=dtype) + 0.3 * torch.arange(T, dtype=dtype).view(T, 1, 1, 1, 1)
    grad = torch.randn(T, B, C, H // 2, W // 2, dtype=dtype)
    xf, xp = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    assert fusion.run_block(xf, fused[0], fused[1], fused[2]) is not None  # the fused path runs here
    fused[0].reset_running_stats()
    out_f = fused(xf)
    with fusion.unfused():
        out_p = plain(xp)
    torch.testing.assert_close(out_f, out_p)
    (out_f * grad).sum().backward()
    (out_p * grad).sum().backward()
    torch.testing.assert_close(xf.grad, xp.grad)
    torch.testing.assert_close(fused[0].weight.grad, plain[0].weight.grad)
    torch.testing.assert_close(fused[0].bias.grad, plain[0].bias.grad)
    torch.testing.assert_close(fused[0].running_mean, plain[0].running_mean)
    torch.testing.assert_close(fused[0].running_var, plain[0].running_var)


# ================================================================================================
# 5. Dynamic Confidence: temperature and per-step thresholds, by hand
# ================================================================================================

class PresetLogits(nn.Module):
    """A stand-in SNN whose output at step t is a preset ``logits[t]`` ``[T, B, C]``; it keeps
    which samples are still in the batch, as a real network's neuron states do."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.reset()

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        assert x_seq.shape[:2] == self.logits.shape[:2]
        return self.logits.clone()

    def step(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] == len(self.rows)
        out = self.logits[self.t, self.rows]
        self.t += 1
        return out.clone()

    def reset(self) -> None:
        self.t = 0
        self.rows = torch.arange(self.logits.shape[1])

    def select_batch(self, index: torch.Tensor) -> None:
        self.rows = self.rows[index]


# Two classes, so maxprob = 1 / (1 + exp(-|d| / temperature)) with d the difference of the
# running mean of the two logits. temperature = 0.5, per-step thresholds [0.99, 0.95, 0.85, 0.7].
#
#   A: [1, 0] every step: d = 1 -> conf = s(2) = 0.8808 at every step
#      0.8808 < 0.99, < 0.95, >= 0.85 -> exits at step 3, class 0
#   B: [3, 0] then [0, 0]...: d = 3 -> s(6) = 0.99753 >= 0.99 -> exits at step 1, class 0
#   C: [0, 0.5], [0, 2.5], [0, 0], [0, 0]: means d = -0.5, -1.5, -1, -0.75
#      conf s(1) = 0.7311, s(3) = 0.9526 >= 0.95 -> exits at step 2, class 1
#   D: [0.25, 0], [0.25, 0], [0.5, 0], [0.5, 0]: means d = .25, .25, .3333, .375
#      conf s(.5) = .6225, .6225, s(.6667) = .6608, s(.75) = .6792 < 0.7 -> forced exit at 4, class 0
#
# With the temperature ignored (1): A = s(1) = .7311 -> step 4; B = s(3) = .9526 < .99, then
# d = 1.5 -> s(1.5) = .8176 < .95, d = 1 -> .7311 < .85, d = .75 -> .6792 < .7 -> step 4; C -> s(1.5)
# = .8176 < .95, s(1) = .7311 < .85, s(.75) = .6792 < .7 -> step 4.
# With only the first threshold (0.99): A, C never reach it -> step 4.
LOGITS = torch.tensor([
    [[1.0, 0.0], [3.0, 0.0], [0.0, 0.5], [0.25, 0.0]],
    [[1.0, 0.0], [0.0, 0.0], [0.0, 2.5], [0.25, 0.0]],
    [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.5, 0.0]],
    [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.5, 0.0]],
])  # [T=4, B=4, C=2]
THRESHOLDS = [0.99, 0.95, 0.85, 0.7]
TEMPERATURE = 0.5
EXPECTED_EXIT = [3, 1, 2, 4]
EXPECTED_PRED = [0, 0, 1, 0]


def _hand_maxprob(logits: list, temperature: float) -> list[list[float]]:
    """Per sample, the maxprob score at each step, from the definition (math only)."""
    T, B = len(logits), len(logits[0])
    scores = []
    for b in range(B):
        row, total = [], [0.0, 0.0]
        for t in range(T):
            total = [total[c] + logits[t][b][c] for c in range(2)]
            mean = [v / (t + 1) for v in total]
            e = [math.exp(m / temperature) for m in mean]
            row.append(max(e) / sum(e))
        scores.append(row)
    return scores


def test_dynamic_hand_scores_agree_with_the_worked_example():
    scores = _hand_maxprob(LOGITS.tolist(), TEMPERATURE)
    assert scores[0] == pytest.approx([1 / (1 + math.exp(-2))] * 4)
    assert scores[1][0] == pytest.approx(1 / (1 + math.exp(-6)))
    assert scores[2][:2] == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-3))])
    exits = []
    for row in scores:
        t = next((t for t, s in enumerate(row, 1) if s >= THRESHOLDS[t - 1]), len(row))
        exits.append(t)
    assert exits == EXPECTED_EXIT


@pytest.mark.parametrize("mode", ["live", "trace"])
def test_dynamic_confidence_temperature_and_per_step_thresholds(mode):
    ctl = DynamicConfidence(score="maxprob", temperature=TEMPERATURE, threshold=THRESHOLDS, t_min=1, evidence="mean",
                            t_max=4)
    model = PresetLogits(LOGITS)
    result = ctl.run(model, torch.zeros(4, 4, 1), mode=mode, keep_traces=True)
    assert result.exit_steps.tolist() == EXPECTED_EXIT
    assert result.predictions.tolist() == EXPECTED_PRED
    hand = _hand_maxprob(LOGITS.tolist(), TEMPERATURE)
    for b, exit_step in enumerate(EXPECTED_EXIT):
        assert result.confidences[b] == pytest.approx(hand[b][:exit_step], abs=1e-6)


def test_dynamic_confidence_trace_scores_every_step_by_hand():
    ctl = DynamicConfidence(score="maxprob", temperature=TEMPERATURE, threshold=THRESHOLDS, t_max=4, evidence="mean")
    trace = ctl.trace(PresetLogits(LOGITS), torch.zeros(4, 4, 1))
    hand = torch.tensor(_hand_maxprob(LOGITS.tolist(), TEMPERATURE)).T  # [T, B]
    torch.testing.assert_close(trace.confidence, hand)
    # the running argmax: C predicts class 1 from step 1; D class 0
    assert trace.prediction[:, 2].tolist() == [1, 1, 1, 1]
    assert trace.prediction[:, 3].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("mode", ["live", "trace"])
def test_dynamic_confidence_t_min_and_margin_by_hand(mode):
    """margin = p_max - p_min = tanh(|d| / (2 * temperature)) for two classes, here tanh(|d| / 4);
    t_min = 2 holds every sample back at step 1; thresholds [0.1, 0.35, 0.3, 0.2].

      A: d = 1 at every step -> tanh(.25) = .2449: < .35, < .3, >= .2 -> step 4, class 0
      B: d = 3 (step 1, before t_min), 1.5 -> tanh(.375) = .3584 >= .35 -> step 2, class 0
      C: d = -.5 (before t_min), -1.5 -> .3584 >= .35 -> step 2, class 1
      D: d = .25, .25, .3333, .375 -> from step 2: tanh(.0625) = .0624, tanh(.0833) = .0831,
         tanh(.0938) = .0935 -> forced at step 4
    (temperature ignored, A would exit at step 2: tanh(.5) = .4621 >= .35; t_min ignored, B at step 1:
    tanh(.75) = .6351 >= .1)
    """
    ctl = DynamicConfidence(score="margin", temperature=2.0, threshold=[0.1, 0.35, 0.3, 0.2], t_min=2, evidence="mean",
                            t_max=4)
    result = ctl.run(PresetLogits(LOGITS), torch.zeros(4, 4, 1), mode=mode, keep_traces=True)
    assert result.exit_steps.tolist() == [4, 2, 2, 4]
    assert result.predictions.tolist() == [0, 0, 1, 0]
    assert result.confidences[1] == pytest.approx([math.tanh(0.75), math.tanh(0.375)], abs=1e-6)


def test_every_confidence_score_from_its_definition():
    """Evidence [2, 0, 0] at temperature 2: z = [1, 0, 0], p = [e, 1, 1] / (e + 2).

    maxprob = e / (e + 2); margin = (e - 1) / (e + 2); entropy score = 1 - H(p) / ln 3;
    logit_margin = 1 - 0 (in readout units over the temperature). Uniform evidence has entropy
    score 0 and margins 0; the scores grow with the evidence.
    """
    from spikelab.dynamic.controller import confidence

    e = math.e
    p = [e / (e + 2), 1 / (e + 2), 1 / (e + 2)]
    entropy = -sum(q * math.log(q) for q in p)
    want = {"maxprob": p[0], "margin": p[0] - p[1], "entropy": 1 - entropy / math.log(3), "logit_margin": 1.0}
    evidence = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0], [8.0, 0.0, 0.0]])
    for score, value in want.items():
        got = confidence(evidence, score, 2.0).tolist()
        assert got[0] == pytest.approx(value, abs=1e-6), score
        flat = 1 / 3 if score == "maxprob" else 0.0
        assert got[1] == pytest.approx(flat, abs=1e-6), score
        assert got[2] > got[0], score
    assert want["entropy"] == pytest.approx(0.11224, abs=1e-4)  # the hand value, worked once on paper


def test_controller_repr_shows_one_threshold_or_says_per_step():
    assert "threshold=0.5," in repr(DynamicConfidence(threshold=0.5, t_max=1))
    assert "threshold=0.5," in repr(DynamicConfidence(threshold=[0.5, 0.5, 0.5], t_max=3))
    assert "threshold=[3 per-step values]" in repr(DynamicConfidence(threshold=[0.5, 0.5, 0.7], t_max=3))


def test_a_result_does_not_print_every_samples_scores():
    ctl = DynamicConfidence(score="maxprob", temperature=1.0, threshold=0.5, t_max=4)
    result = ctl.run(PresetLogits(LOGITS), torch.zeros(4, 4, 1), mode="trace")
    assert "confidences" not in repr(result) and "exit_steps" in repr(result)


class CountingLogits(PresetLogits):
    """PresetLogits that also continues a sequence (``steps``) and counts the sample-steps computed."""

    def reset(self) -> None:
        super().reset()
        self.work = getattr(self, "work", 0)

    def steps(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == len(self.rows)
        out = self.logits[self.t: self.t + x.shape[0]][:, self.rows]
        self.t += x.shape[0]
        self.work += x.shape[0] * len(self.rows)
        return out.clone()


@pytest.mark.parametrize("mode", ["live", "trace"])
def test_default_horizon_is_64_steps(mode):
    """A sample that never reaches its threshold stops at t_max: 64 steps by default (live mode
    stops a longer input there; trace mode simulates exactly t_max steps)."""
    steps = 80 if mode == "live" else 64
    logits = torch.zeros(steps, 2, 2)
    logits[:, 1, 0] = 1.0  # sample 1: a margin of 1 a step, 5 reached at step 5
    ctl = DynamicConfidence(temperature=1.0, threshold=5.0)
    result = ctl.run(CountingLogits(logits), torch.zeros(steps, 2, 1), mode=mode)
    assert result.exit_steps.tolist() == [64, 5]


def test_live_mode_work_follows_the_chunk_rule():
    """Summed logit margin, threshold 5, t_max 16: A gives 10 at step 1 (exits at 1), B 0.6 a
    step (5.4 >= 5 first at step 9), C nothing (forced out at 16). Live mode runs chunks of
    max(1, t // 4) steps after t steps, so B, exiting inside the chunk of steps 9-10, costs 10
    steps, A costs 1, C 16: 27 sample-steps, against 26 one step at a time."""
    logits = torch.zeros(16, 3, 2)
    logits[0, 0, 0] = 10.0
    logits[:, 1, 0] = 0.6
    model = CountingLogits(logits)
    ctl = DynamicConfidence(score="logit_margin", temperature=1.0, threshold=5.0, t_max=16)
    result = ctl.run(model, torch.zeros(16, 3, 1), mode="live")
    assert result.exit_steps.tolist() == [1, 9, 16]
    assert result.predictions.tolist() == [0, 0, 0]
    t, work, alive = 0, 0, {0: 1, 1: 9, 2: 16}
    while t < 16:  # the rule, simulated on its own
        size = min(max(1, t // 4), 16 - t)
        work += size * sum(1 for stop in alive.values() if stop > t)
        t += size
    assert model.work == work == 27
    assert ctl.run(PresetLogits(logits), torch.zeros(16, 3, 1), mode="live").exit_steps.tolist() == [1, 9, 16]
    # the scores kept are those up to each exit, not the rest of the chunk it exited in
    kept = ctl.run(CountingLogits(logits), torch.zeros(16, 3, 1), mode="live", keep_traces=True)
    assert [len(c) for c in kept.confidences] == [1, 9, 16]
    assert kept.confidences[1] == pytest.approx([0.6 * k for k in range(1, 10)], abs=1e-5)


def test_live_chunks_average_the_evidence_as_trace_mode_does():
    """evidence="mean" over multi-step chunks: the margin of the mean is 0.6 for B at every step
    and 10 / t for A; threshold 0.7 lets A out while 10 / t >= 0.7 (step 1) and never B."""
    logits = torch.zeros(16, 3, 2)
    logits[0, 0, 0] = 10.0
    logits[:, 1, 0] = 0.6
    logits[10:, 2, 1] = 2.0  # C: mean margin 2 * (t - 10) / t reaches 0.7 at t = 16 (0.75)
    ctl = DynamicConfidence(score="logit_margin", temperature=1.0, threshold=0.7, t_max=16, evidence="mean")
    live = ctl.run(CountingLogits(logits), torch.zeros(16, 3, 1), mode="live")
    trace = ctl.run(CountingLogits(logits), torch.zeros(16, 3, 1), mode="trace")
    assert live.exit_steps.tolist() == trace.exit_steps.tolist() == [1, 16, 16]
    assert live.predictions.tolist() == trace.predictions.tolist() == [0, 0, 1]


def test_trace_takes_a_t_by_b_input_without_feature_dimensions():
    """``[T, B, ...]`` includes ``[T, B]`` (token ids, one value per sample and step)."""

    class OneHot(nn.Module):
        def forward(self, x):
            return nn.functional.one_hot(x.long(), 3).float()

    ctl = DynamicConfidence(score="logit_margin", temperature=1.0, threshold=2.0, t_max=4)
    ids = torch.tensor([[2, 0], [2, 1], [2, 0], [2, 1]])
    result = ctl.run(OneHot(), ids, mode="trace")
    assert result.exit_steps.tolist() == [2, 4] and result.predictions.tolist() == [2, 0]
