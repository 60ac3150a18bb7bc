"""spikelab neurons and a tutorial network against SpikingJelly's multi-step nodes (docs/spikingjelly.md)."""

import pytest
import torch

import spikelab as sl
from tests.needs import peer
from tests.peer_compare import assert_same_spikes_and_gradients

sj = peer("spikingjelly.activation_based")
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

SHAPES = [(1, 16, 8), (17, 4, 8), (40, 2, 3, 4), (64, 8, 128)]
BACKENDS = ["torch", "numba"]


def _compare(ours, theirs, x, params=()):
    def run_theirs(x2):
        functional.reset_net(theirs)
        return theirs(x2)

    assert_same_spikes_and_gradients(ours, run_theirs, x, params)


def _input(shape, seed):
    torch.manual_seed(seed)
    return torch.randn(shape) * 1.5 + 0.8


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", [2.0, 3.0, 10.0])
@pytest.mark.parametrize("detach", [False, True])
def test_lif_matches_lifnode(backend, shape, tau, detach):
    ours = sl.LIF(tau=tau, decay_input=True, reset="zero", detach_reset=detach, surrogate="sigmoid",
                  surrogate_alpha=4, backend=backend)
    theirs = neuron.LIFNode(tau=tau, detach_reset=detach, step_mode="m")
    _compare(ours, theirs, _input(shape, int(tau)) * tau / 2)  # a single step reaches x / tau


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_lif_soft_reset_without_input_decay_matches_lifnode(backend, shape):
    ours = sl.LIF(tau=2.0, decay_input=False, reset="subtract", surrogate="sigmoid", surrogate_alpha=4,
                  backend=backend)
    theirs = neuron.LIFNode(tau=2.0, decay_input=False, v_reset=None, step_mode="m")
    _compare(ours, theirs, _input(shape, 1) * 0.6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_if_matches_ifnode(backend, shape):
    ours = sl.IF(reset="zero", surrogate="sigmoid", surrogate_alpha=4, backend=backend)
    theirs = neuron.IFNode(step_mode="m")
    _compare(ours, theirs, _input(shape, 2) * 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", [2.0, 5.0])
def test_plif_matches_parametric_lifnode(backend, shape, tau):
    ours = sl.PLIF(tau=tau, reset="zero", surrogate="sigmoid", surrogate_alpha=4, backend=backend)
    theirs = neuron.ParametricLIFNode(init_tau=tau, step_mode="m")
    _compare(ours, theirs, _input(shape, 3) * tau / 2, params=[(ours.w, theirs.w)])


def test_same_tau_means_different_dynamics_by_default():
    # LIFNode decays its input (decay_input=True); spikelab's LIF does not unless asked
    x = _input((30, 4, 16), 4)
    functional.reset_net(node := neuron.LIFNode(tau=2.0, step_mode="m"))
    theirs = node(x)
    assert not torch.equal(sl.LIF(tau=2.0, reset="zero")(x), theirs)
    assert torch.equal(sl.LIF(tau=2.0, decay_input=True, reset="zero")(x), theirs)


def test_spikingjelly_tutorial_csnn_ported_line_by_line():
    # SpikingJelly's convolutional Fashion-MNIST tutorial network (multi-step), at a small size
    torch.manual_seed(0)
    c, steps = 8, 6
    theirs = torch.nn.Sequential(
        layer.Conv2d(1, c, kernel_size=3, padding=1, bias=False), layer.BatchNorm2d(c),
        neuron.IFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2, 2),
        layer.Conv2d(c, c, kernel_size=3, padding=1, bias=False), layer.BatchNorm2d(c),
        neuron.IFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2, 2),
        layer.Flatten(),
        layer.Linear(c * 7 * 7, c * 4 * 4, bias=False), neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.Linear(c * 4 * 4, 10, bias=False), neuron.IFNode(surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(theirs, step_mode="m")
    L = sl.layers
    ours = L.Sequential(
        L.Conv2d(1, c, kernel_size=3, padding=1, bias=False), L.BatchNorm2d(c),
        sl.IF(reset="zero", surrogate="atan", surrogate_alpha=2), L.MaxPool2d(2, 2),
        L.Conv2d(c, c, kernel_size=3, padding=1, bias=False), L.BatchNorm2d(c),
        sl.IF(reset="zero", surrogate="atan", surrogate_alpha=2), L.MaxPool2d(2, 2),
        L.Flatten(),
        L.Linear(c * 7 * 7, c * 4 * 4, bias=False), sl.IF(reset="zero", surrogate="atan", surrogate_alpha=2),
        L.Linear(c * 4 * 4, 10, bias=False), sl.IF(reset="zero", surrogate="atan", surrogate_alpha=2),
    )
    # SpikingJelly's nodes keep no tensors in their state_dict; spikelab's hold their parameters
    missing, unexpected = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[-1] for k in missing} == {"threshold", "beta", "running_v"}
    with torch.no_grad():  # larger linear weights so that the last layers spike too
        for net in (ours, theirs):
            net[9].weight.mul_(4)
            net[11].weight.mul_(6)
    img = torch.rand(4, 1, 28, 28)
    label = torch.nn.functional.one_hot(torch.tensor([0, 3, 7, 9]), 10).float()
    # the tutorial's forward and loss: the static image at every step, MSE on the firing rate
    x_seq = img.unsqueeze(0).repeat(steps, 1, 1, 1, 1)
    functional.reset_net(theirs)
    out_theirs = theirs(x_seq)
    torch.nn.functional.mse_loss(out_theirs.mean(0), label).backward()
    out_ours = ours(x_seq)
    torch.nn.functional.mse_loss(out_ours.mean(0), label).backward()
    assert 0 < out_theirs.mean() < 1
    assert torch.equal(out_ours, out_theirs)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=f"gradient of {name}")
    # the running statistics follow the same update
    torch.testing.assert_close(ours[1].running_var, theirs[1].running_var)
