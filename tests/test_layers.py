"""Layers over [T, B, ...]: time folding, one dropout mask, Sequential, recurrence, encoders, reset."""

import pytest
import torch
from torch import nn

import spikelab as sl
from spikelab import layers as L


@pytest.mark.parametrize("layer, shape", [
    (L.Conv2d(2, 3, 3, padding=1), (4, 2, 2, 6, 6)),
    (L.Conv1d(2, 3, 3), (4, 2, 2, 9)),
    (L.Linear(5, 3), (4, 2, 5)),
    (L.AvgPool2d(2), (4, 2, 3, 6, 6)),
    (L.MaxPool2d(2), (4, 2, 3, 6, 6)),
    (L.AvgPool1d(3), (4, 2, 3, 9)),
    (L.MaxPool1d(3), (4, 2, 3, 9)),
    (L.BatchNorm2d(3).eval(), (4, 2, 3, 5, 5)),
    (L.BatchNorm1d(3).eval(), (4, 2, 3)),
    (L.Flatten(), (4, 2, 3, 5, 5)),
    (L.TimeDistributed(nn.Conv2d(3, 1, 1)), (4, 2, 3, 5, 5)),
])
def test_time_distributed_equals_per_step(layer, shape):
    x = torch.randn(shape)
    out = layer(x)
    per_step = torch.stack([layer.step(x[t]) for t in range(shape[0])])
    assert out.shape[:2] == shape[:2]
    torch.testing.assert_close(out, per_step)


def test_sum_pool_sums():
    x = torch.arange(16.0).view(1, 1, 1, 4, 4)
    out = L.SumPool2d(2)(x)
    assert out.flatten().tolist() == [0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15]


def test_batchnorm_statistics_over_time_and_batch():
    bn = L.BatchNorm1d(2)
    x = torch.randn(6, 5, 2) * 3 + 1
    out = bn(x)
    torch.testing.assert_close(out.mean((0, 1)), torch.zeros(2), atol=1e-5, rtol=0)


def test_conv_rank_is_checked():
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        L.Conv2d(2, 3, 3)(torch.randn(2, 2, 6, 6))


def test_dropout_one_mask_for_all_steps():
    drop = L.Dropout(0.5)
    x = torch.ones(10, 4, 32)
    out = drop(x)
    assert torch.equal(out, out[0].expand_as(out))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    a = drop.step(x[0])
    assert torch.equal(drop.step(x[1]), a)
    sl.reset(drop)
    assert not torch.equal(drop.step(x[0]), a)  # a new mask after reset (2^-128 to coincide)


def test_sequential_runs_mixed_layers_and_streams():
    torch.manual_seed(0)
    net = L.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), L.BatchNorm2d(4), sl.LIF(beta=0.8), L.MaxPool2d(2),
        L.Flatten(), nn.Linear(4 * 4 * 4, 10), sl.LIF(beta=0.9, reset="none", threshold=100.0),
    ).eval()
    x = torch.rand(7, 3, 1, 8, 8) * 2
    out = net(x)
    assert out.shape == (7, 3, 10)
    steps = torch.stack([net.step(x[t]) for t in range(7)])
    torch.testing.assert_close(out, steps)
    # the membrane of the readout layer is the running state; reset clears every neuron
    assert net[6].state["v"] is not None
    sl.reset(net)
    assert net[2].state["v"] is None and net[6].state["v"] is None


def test_sequential_refuses_neurons_hidden_in_plain_containers():
    with pytest.raises(TypeError, match="spikelab.layers.Sequential"):
        L.Sequential(nn.Sequential(nn.Linear(3, 3), sl.LIF()))
    # nested spikelab containers are fine
    L.Sequential(L.Sequential(nn.Linear(3, 3), sl.LIF()))


def test_select_batch_through_model():
    net = L.Sequential(nn.Linear(3, 4), sl.LIF(), L.Recurrent(sl.LIF(), nn.Linear(4, 4)), L.Dropout(0.2))
    x = torch.rand(5, 6, 3)
    for t in range(3):
        net.step(x[t])
    sl.select_batch(net, torch.tensor([1, 4]))
    assert net[1].state["v"].shape == (2, 4)
    assert net[2].neuron.state["v"].shape == (2, 4)
    assert net.step(x[3, [1, 4]]).shape == (2, 4)


def test_recurrent_matches_manual_loop():
    torch.manual_seed(0)
    fb = nn.Linear(5, 5)
    layer = L.Recurrent(sl.LIF(beta=0.8), fb)
    x = torch.rand(9, 2, 5) * 1.5
    out = layer(x)
    neuron = sl.LIF(beta=0.8)
    prev = torch.zeros(2, 5)
    manual = []
    for t in range(9):
        prev = neuron.step(x[t] + fb(prev))  # S[-1] = 0: the feedback bias acts from the first step
        manual.append(prev)
    torch.testing.assert_close(out, torch.stack(manual))
    steps = torch.stack([layer.step(x[t]) for t in range(9)])
    torch.testing.assert_close(out, steps)
    out.sum().backward()
    assert fb.weight.grad is not None and fb.weight.grad.abs().sum() > 0


def test_poisson_encoder_rates():
    enc = L.PoissonEncoder(num_steps=4000)
    x = torch.tensor([[0.0, 0.25, 0.9, 1.0]])
    out = enc(x)
    assert out.shape == (4000, 1, 4)
    torch.testing.assert_close(out.mean(0), x, atol=0.03, rtol=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc(torch.tensor([[1.5]]))


def test_latency_encoder_linear_and_log():
    enc = L.LatencyEncoder(num_steps=11)
    x = torch.tensor([[1.0, 0.5, 0.0, 0.9]])
    out = enc(x)
    assert out.sum(0).tolist() == [[1.0, 1.0, 0.0, 1.0]]
    assert enc.spike_times(x).tolist() == [[0, 5, 11, 1]]
    log = L.LatencyEncoder(num_steps=50, mode="log", tau=50.0, threshold=0.2)
    # 50 * ln(x / (x - 0.2)): 11.2, 25.5, 80.5 (clipped to the window)
    assert log.spike_times(torch.tensor([[1.0, 0.5, 0.25, 0.1]])).tolist() == [[11, 26, 49, 50]]


def test_delta_encoder_catches_slow_drift():
    x = (torch.arange(21.0) * 0.0625).view(21, 1)  # a slow rise, below threshold per step
    out = L.DeltaEncoder(threshold=0.25)(x)
    assert out.sum().item() == 5 and out[4].item() == 1  # one ON event per 0.25 of rise
    down = L.DeltaEncoder(threshold=0.25)(x.flip(0))
    assert down.sum().item() == -5
    assert L.DeltaEncoder(threshold=0.25, off_spikes=False)(x.flip(0)).sum().item() == 0


def test_encoder_arguments_checked():
    with pytest.raises(ValueError, match="num_steps"):
        L.PoissonEncoder(0)
    with pytest.raises(ValueError, match="mode"):
        L.LatencyEncoder(5, mode="exp")
    with pytest.raises(ValueError, match="threshold"):
        L.DeltaEncoder(threshold=0)
    with pytest.raises(ValueError, match="p"):
        L.Dropout(1.0)


def test_reset_refuses_non_modules():
    with pytest.raises(TypeError, match="model"):
        sl.reset("net")
