"""Monitors record only what they watch; synaptic operations match a hand count."""

from __future__ import annotations

import pytest
import torch

import spikelab as sl
from spikelab import layers as L
from spikelab.stats import EnergyModel, activity, firing_rates


def _net():
    torch.manual_seed(0)
    return L.Sequential(L.Linear(10, 16), sl.LIF(beta=0.8), L.Linear(16, 8), sl.IF(), L.Linear(8, 3))


def test_monitor_records_chosen_layers_and_leaves_others_alone():
    net, x = _net(), torch.rand(12, 4, 10) * 2
    expected = net(x)
    with sl.Monitor(net, layers=["1"], membrane=True) as mon:
        out = net(x)
    assert torch.equal(out, expected)  # the monitored run computes the same
    assert set(mon.spikes) == {"1"}
    spikes, v = mon.spikes["1"], mon.membrane["1"]
    assert spikes.shape == v.shape == (12, 4, 16)
    assert torch.equal(spikes, (v >= 1.0).float())  # spikes where the charged membrane crossed
    assert net[3]._membrane_trace is None and net[1]._membrane_trace is None  # detached on exit
    assert len(net[1]._forward_hooks) == 0
    net(x)
    assert mon.spikes["1"].shape[1] == 4  # nothing recorded after exit


def test_monitor_by_type_accumulates_batches_and_refuses_bad_specs():
    net = _net()
    with sl.Monitor(net, layers=sl.IF) as mon:
        net(torch.rand(5, 2, 10))
        net(torch.rand(5, 3, 10))
    assert list(mon.spikes) == ["3"] and mon.spikes["3"].shape == (5, 5, 8)
    assert 0.0 <= mon.firing_rates()["3"] <= 1.0
    with pytest.raises(KeyError, match="no layer 'lif9'"):
        sl.Monitor(net, layers="lif9")
    with pytest.raises(TypeError, match="not spikelab neurons"):
        sl.Monitor(net, layers=["0"], membrane=True)
    with pytest.raises(RuntimeError, match="membrane=False"):
        _ = mon.membrane


def test_monitor_watches_a_bare_neuron_and_refuses_what_it_cannot_watch():
    neuron, x = sl.LIF(beta=0.8), torch.rand(9, 3, 5) * 2
    with sl.Monitor(neuron, membrane=True) as mon:
        out = neuron(x)
    assert list(mon.spikes) == ["LIF"]
    assert torch.equal(mon.spikes["LIF"], out) and mon.membrane["LIF"].shape == (9, 3, 5)
    from torch import nn

    with pytest.raises(ValueError, match="Sequential holds no spikelab neuron to watch"):
        sl.Monitor(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    with pytest.raises(TypeError, match="expected an nn.Module"):
        sl.Monitor(lambda x: x)
    # other modules are watched when named
    plain = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with sl.Monitor(plain, layers=["1"]) as mon:
        plain(torch.rand(4, 2, 3))
    assert mon.spikes["1"].shape == (4, 2, 3)
    # streaming does not pass through forward hooks: said, not silently empty
    with pytest.warns(UserWarning, match="recorded nothing.*step"):
        with sl.Monitor(neuron):
            neuron.step(x[0])
    import warnings

    with warnings.catch_warnings():  # a failing run raises its own error, without the warning on top
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="x_seq"):
            with sl.Monitor(neuron):
                neuron(torch.rand(3))


def test_firing_rates_per_layer_and_neuron():
    net, x = _net(), torch.rand(20, 6, 10) * 2
    rates = firing_rates(net, x)
    per = firing_rates(net, x, per_neuron=True)
    assert set(rates) == {"1", "3"} and per["1"].shape == (16,)
    assert rates["1"] == pytest.approx(float(per["1"].mean()), abs=1e-6)


def test_synaptic_operations_match_a_hand_count():
    conv = L.Conv2d(1, 2, 3, padding=1, bias=False)
    lin = L.Linear(32, 3, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        lin.weight.fill_(0.1)
    net = L.Sequential(conv, sl.IF(reset="zero"), L.Flatten(), lin)
    x = torch.zeros(2, 1, 1, 4, 4)
    x[0, 0, 0, 0, 0] = 1  # a corner pixel: reaches 2x2 output positions x 2 channels = 8 synapses
    x[1, 0, 0, 1, 1] = 1  # an inner pixel: 3x3 x 2 = 18
    x[1, 0, 0, 3, 3] = 1  # a corner: 8
    # the IF neurons (threshold 1, all-ones kernel): 2 x 4 spikes at t=0; at t=1 the union of the
    # two neighbourhoods (9 + 4 - 1 = 12 positions) x 2 channels = 24 spikes; each reaches 3 outputs
    report = activity(net, x)
    ops = report["ops_per_sample"]
    assert ops["ac"] == {"0": 8 + 18 + 8, "3": 3 * (8 + 24)}
    assert ops["mac"] == {}
    # the same network as an ANN: 4x4 input, 3x3 kernel, padding 1: corners reach 4 outputs, edges 6,
    # the 4 inner pixels 9 -> (4*4 + 8*6 + 4*9) x 2 channels = 200 MACs; the linear layer 32 x 3
    assert ops["ann_mac"] == {"0": 200, "3": 96}
    energy = report["energy_per_sample_pj"]
    assert energy["snn"] == pytest.approx(130 * 0.9) and energy["ann"] == pytest.approx(296 * 4.6)
    assert report["firing_rate"]["1"] == pytest.approx((8 + 24) / (2 * 32))
    custom = activity(net, x, energy=EnergyModel(mac_pj=1.0, ac_pj=0.5))["energy_per_sample_pj"]
    assert custom["snn"] == pytest.approx(65.0) and custom["ann"] == pytest.approx(296.0)


def test_analog_input_costs_macs_and_event_counts_cost_one_ac_per_event():
    lin = L.Linear(4, 5, bias=False)
    net = L.Sequential(lin, sl.IF())
    analog = torch.tensor([[[0.5, 0.0, 0.25, 0.0]]])  # [T=1, B=1, 4]
    assert activity(net, analog)["ops_per_sample"]["mac"] == {"0": 2 * 5}
    counts = torch.tensor([[[3.0, 0.0, 1.0, 0.0]]])  # 4 events
    assert activity(net, counts)["ops_per_sample"]["ac"] == {"0": 4 * 5}
