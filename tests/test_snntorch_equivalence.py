"""spikelab neurons against snnTorch, configured to the same dynamics (see docs/snntorch.md)."""

import pytest
import torch

import spikelab as sl
from tests.needs import peer
from tests.peer_compare import assert_same_spikes_and_gradients

snn = peer("snntorch")

SHAPES = [(1, 16, 8), (17, 4, 8), (40, 2, 3, 4)]


def _run_snntorch(neuron, x, n_states):
    states = [neuron.reset_mem()] if n_states == 1 else list(neuron.reset_mem())
    outs = []
    for t in range(x.shape[0]):
        spk, *states = neuron(x[t], *states)
        outs.append(spk)
    return torch.stack(outs)


def _compare(ours, theirs, x, n_states=1):
    # inputs bounded by the threshold cannot fire in a single step
    assert_same_spikes_and_gradients(ours, lambda x2: _run_snntorch(theirs, x2, n_states), x,
                                     some_firing=x.shape[0] > 1, some_silent=False, x_atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.5, 0.9, 1.0])
def test_lif_subtract_matches_leaky_without_reset_delay(shape, seed, beta):
    torch.manual_seed(seed)
    threshold = 1.0 + seed * 0.25
    # |x| <= threshold keeps v below the threshold after a reset (see docs/snntorch.md)
    x = (torch.rand(shape) * 2 - 1) * threshold
    ours = sl.LIF(beta=beta, threshold=threshold, reset="subtract")
    theirs = snn.Leaky(beta=beta, threshold=threshold, reset_mechanism="subtract", reset_delay=False)
    _compare(ours, theirs, x)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_lif_zero_reset_matches_leaky_default(shape, seed):
    # snnTorch's default delayed zero reset is our hard reset with a detached reset term
    torch.manual_seed(seed)
    x = torch.randn(shape) * 1.5
    ours = sl.LIF(beta=0.7, reset="zero", detach_reset=True)
    theirs = snn.Leaky(beta=0.7, reset_mechanism="zero")
    _compare(ours, theirs, x)


@pytest.mark.parametrize("shape", [(6, 3, 5), (17, 4, 8), (40, 2, 3, 4)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_current_lif_matches_synaptic(shape, seed):
    torch.manual_seed(seed)
    alpha, beta = 0.6, 0.8
    # x in [-0.1, 0.3) keeps i < 0.75 and so h < 0.8 * 1 + 0.75 < 2 * threshold
    x = torch.rand(shape) * 0.4 - 0.1
    ours = sl.CurrentLIF(alpha=alpha, beta=beta, reset="subtract")
    theirs = snn.Synaptic(alpha=alpha, beta=beta, reset_mechanism="subtract", reset_delay=False)
    _compare(ours, theirs, x, n_states=2)


def test_threshold_equality_mapping():
    # spikelab fires at h >= threshold, snnTorch at h > threshold: at equality they differ,
    # and snnTorch's threshold one float below ours gives our spikes exactly.
    x = torch.tensor([1.0, 0.5, 0.5, 1.0, 0.25]).view(5, 1, 1).expand(5, 2, 3).contiguous()
    ours = sl.LIF(beta=1.0, threshold=1.0, reset="zero", detach_reset=True)(x)
    strict = _run_snntorch(snn.Leaky(beta=1.0, threshold=1.0, reset_mechanism="zero"), x, 1)
    assert not torch.equal(ours, strict)
    below = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item()
    mapped = _run_snntorch(snn.Leaky(beta=1.0, threshold=below, reset_mechanism="zero"), x, 1)
    assert torch.equal(ours, mapped)
    assert ours[:, 0, 0].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]


# ----- snnTorch's defaults (reset_delay=True): the delayed-reset neurons ---------------------------------

BACKENDS = ["torch", "numba"]


def _compare_all(ours, theirs, x, n_states, params=()):
    """Spikes identical; gradients of the input and of ``params`` (ours, theirs) pairs within float32."""
    assert_same_spikes_and_gradients(ours, lambda x2: _run_snntorch(theirs, x2, n_states), x, params)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES + [(120, 8, 64)])
@pytest.mark.parametrize("beta,threshold", [(0.5, 1.0), (0.9, 0.7), (1.0, 1.5)])
def test_delayed_reset_lif_matches_default_leaky(backend, shape, beta, threshold):
    # inputs well above the threshold too: the delayed reset may leave the membrane above it
    torch.manual_seed(int(beta * 10) + len(shape))
    x = torch.randn(shape) * 1.5 + 0.3
    ours = sl.DelayedResetLIF(beta=beta, threshold=threshold, backend=backend)
    theirs = snn.Leaky(beta=beta, threshold=threshold)
    _compare_all(ours, theirs, x, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_delayed_reset_lif_learned_parameters_match_leaky(backend):
    torch.manual_seed(3)
    x = torch.randn(30, 4, 16) * 1.2 + 0.4
    ours = sl.DelayedResetLIF(beta=0.8, threshold=1.2, learn=("beta",), learn_threshold=True,
                              surrogate="fast_sigmoid", surrogate_alpha=25, backend=backend)
    theirs = snn.Leaky(beta=0.8, threshold=1.2, learn_beta=True, learn_threshold=True,
                       spike_grad=snn.surrogate.fast_sigmoid(slope=25))
    _compare_all(ours, theirs, x, 1, params=[(ours.beta, theirs.beta), (ours.threshold, theirs.threshold)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_delayed_reset_clamps_a_learned_decay_past_one_as_snntorch(backend):
    # training may push a learned beta above 1; snnTorch clamps it at every step, so do we
    torch.manual_seed(8)
    x = torch.randn(30, 4, 16) * 1.2 + 0.2
    ours = sl.DelayedResetLIF(beta=0.9, learn=("beta",), backend=backend)
    theirs = snn.Leaky(beta=0.9, learn_beta=True)
    with torch.no_grad():
        ours.beta.fill_(1.3)
        theirs.beta.fill_(1.3)
    _compare_all(ours, theirs, x, 1)
    ours_c = sl.DelayedResetCurrentLIF(alpha=0.5, beta=0.8, learn=True, backend=backend)
    theirs_c = snn.Synaptic(alpha=0.5, beta=0.8, learn_alpha=True, learn_beta=True)
    with torch.no_grad():
        ours_c.alpha.fill_(-0.2)
        theirs_c.alpha.fill_(-0.2)
    _compare_all(ours_c, theirs_c, x, 2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES + [(120, 8, 64)])
@pytest.mark.parametrize("alpha,beta", [(0.6, 0.8), (0.9, 0.95)])
def test_delayed_reset_current_lif_matches_default_synaptic(backend, shape, alpha, beta):
    torch.manual_seed(int(alpha * 10) + len(shape))
    x = torch.randn(shape) * 1.2 + 0.2
    ours = sl.DelayedResetCurrentLIF(alpha=alpha, beta=beta, backend=backend)
    theirs = snn.Synaptic(alpha=alpha, beta=beta)
    _compare_all(ours, theirs, x, 2)


def test_delayed_reset_differs_from_immediate_reset():
    # the mapping matters: with snnTorch's default Leaky, spikelab's plain LIF is not the port
    torch.manual_seed(0)
    x = torch.randn(60, 8, 32) * 1.5 + 0.3
    delayed = sl.DelayedResetLIF(beta=0.9)(x)
    immediate = sl.LIF(beta=0.9, reset="subtract")(x)
    assert not torch.equal(delayed, immediate)
    assert torch.equal(delayed, _run_snntorch(snn.Leaky(beta=0.9), x, 1))


def test_delayed_reset_refuses_other_reset_modes_and_bad_decays():
    with pytest.raises(ValueError, match="reset.*detach_reset=True"):
        sl.DelayedResetLIF(beta=0.9, reset="zero")
    with pytest.raises(ValueError, match="beta"):
        sl.DelayedResetLIF(beta=1.5)
    with pytest.raises(ValueError, match="alpha"):
        sl.DelayedResetCurrentLIF(alpha=-0.1)
    assert "reset=subtract (delayed)" in repr(sl.DelayedResetLIF())


def test_delayed_reset_streaming_matches_sequence():
    # step() keeps the pending reset between calls: a stream reproduces the whole-sequence run
    torch.manual_seed(4)
    x = torch.randn(25, 3, 10) * 1.5 + 0.3
    neuron = sl.DelayedResetLIF(beta=0.7)
    whole = neuron(x)
    streamed = torch.stack([neuron.step(x[t]) for t in range(x.shape[0])])
    assert torch.equal(whole, streamed)
    assert set(neuron.state) == {"v", "r"}


# ----- snnTorch tutorial 6 (convolutional SNN), ported line by line (docs/snntorch.md) ----------------

def _tutorial_snntorch(beta, steps):
    from torch import nn
    from snntorch import surrogate

    grad = surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(nn.Conv2d(1, 12, 5), nn.MaxPool2d(2),
                         snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
                         nn.Conv2d(12, 64, 5), nn.MaxPool2d(2),
                         snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
                         nn.Flatten(),
                         nn.Linear(64 * 4 * 4, 10),
                         snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True, output=True))


def _tutorial_spikelab(beta):
    L = sl.layers

    def lif():
        return sl.DelayedResetLIF(beta=beta, surrogate="fast_sigmoid", surrogate_alpha=25)

    return L.Sequential(L.Conv2d(1, 12, 5), L.MaxPool2d(2), lif(),
                        L.Conv2d(12, 64, 5), L.MaxPool2d(2), lif(),
                        L.Flatten(),
                        L.Linear(64 * 4 * 4, 10), lif())


def test_snntorch_tutorial_cnn_ported_line_by_line():
    from snntorch import functional as SF
    from snntorch import utils

    torch.manual_seed(0)
    beta, steps = 0.5, 25
    theirs = _tutorial_snntorch(beta, steps)
    ours = _tutorial_spikelab(beta)
    # same weights: the spikelab layers hold the torch layers' parameters under the same positions
    theirs_params = [p for p in theirs.parameters()]
    ours_params = [p for p in ours.parameters()]
    assert [p.shape for p in theirs_params] == [p.shape for p in ours_params]
    with torch.no_grad():
        for a, b in zip(ours_params, theirs_params):
            a.copy_(b * 4)  # larger weights: every layer spikes
            b.copy_(a)
    data = torch.rand(4, 1, 28, 28)
    targets = torch.tensor([3, 1, 4, 1])

    # snnTorch: the tutorial's forward_pass and loss
    utils.reset(theirs)
    spk_rec, mem_rec = [], []
    for _ in range(steps):
        spk_out, mem_out = theirs(data)
        spk_rec.append(spk_out)
        mem_rec.append(mem_out)
    spk_rec, mem_rec = torch.stack(spk_rec), torch.stack(mem_rec)
    SF.ce_rate_loss()(spk_rec, targets).backward()

    # spikelab: the whole sequence at once; the membrane through a Monitor
    x_seq = data.unsqueeze(0).expand(steps, *data.shape)
    with sl.Monitor(ours, layers=["8"], membrane=True) as mon:
        out = ours(x_seq)
    sl.train.losses.tet(out, targets).backward()

    assert 0 < spk_rec.mean() < 1
    assert torch.equal(out, spk_rec)
    torch.testing.assert_close(mon.membrane["8"], mem_rec.detach(), rtol=1e-5, atol=1e-5)
    for a, b in zip(ours_params, theirs_params):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_rleaky_maps_to_recurrent_delayed_reset_lif():
    # RLeaky adds the feedback after the decay, spikelab before the neuron: the same sum in another
    # order, so spikes agree except where rounding decides (none here), gradients within float32
    from torch import nn

    torch.manual_seed(5)
    n = 12
    theirs = snn.RLeaky(beta=0.8, linear_features=n)
    ours = sl.layers.Recurrent(sl.DelayedResetLIF(beta=0.8), nn.Linear(n, n))
    ours.feedback.load_state_dict(theirs.recurrent.state_dict())
    x = torch.randn(40, 5, n) + 0.3
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    spk, mem = theirs.init_rleaky()
    outs = []
    for t in range(x.shape[0]):
        spk, mem = theirs(x2[t], spk, mem)
        outs.append(spk)
    ref = torch.stack(outs)
    got = ours(x1)
    assert 0 < ref.mean() < 1
    assert torch.equal(got, ref)
    w = torch.randn_like(got)
    (got * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.feedback.weight.grad, theirs.recurrent.weight.grad, rtol=1e-4, atol=1e-5)


def test_spikegen_rate_is_poisson_encoder():
    from snntorch import spikegen

    data = torch.rand(6, 1, 8, 8)
    torch.manual_seed(11)
    theirs = spikegen.rate(data, num_steps=20)
    torch.manual_seed(11)
    ours = sl.layers.PoissonEncoder(num_steps=20)(data)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("theirs,ours,alpha", [("atan", "atan", 2.0), ("fast_sigmoid", "fast_sigmoid", 25.0),
                                               ("sigmoid", "sigmoid", 25.0), ("fast_sigmoid", "fast_sigmoid", 5.0)])
def test_surrogates_map(theirs, ours, alpha):
    from snntorch import surrogate

    kwargs = {} if theirs == "atan" else {"slope": alpha}
    fn = getattr(surrogate, theirs)(**kwargs) if theirs != "atan" else surrogate.atan(alpha=alpha)
    x1 = torch.linspace(-3, 3, 121).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    fn(x1).sum().backward()
    sl.surrogate.spike(x2, sl.surrogate.get(ours, alpha)).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-5)  # tails: exp under- and overflow


def test_losses_map():
    from snntorch import functional as SF

    torch.manual_seed(6)
    spk = (torch.rand(10, 5, 10) < 0.3).float()
    y = torch.randint(0, 10, (5,))
    torch.testing.assert_close(sl.train.losses.tet(spk, y), SF.ce_rate_loss()(spk, y).squeeze())
    torch.testing.assert_close(sl.train.losses.membrane_ce(spk, y), SF.ce_count_loss()(spk, y).squeeze())
    # snnTorch divides by the step count (and truncates T * rate to whole spikes: 8 and 2 here)
    torch.testing.assert_close(sl.train.losses.count_mse(spk, y, 0.8, 0.2) / spk.shape[0],
                               SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)(spk, y).squeeze())
