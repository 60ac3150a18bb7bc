"""Neuron semantics: equations on hand-made inputs, state handling, options and bad input."""

import math

import pytest
import torch

import spikelab as sl
from spikelab.kernels import reference

ALL = {
    "LIF": lambda **kw: sl.LIF(beta=0.8, **kw),
    "IF": lambda **kw: sl.IF(**kw),
    "PLIF": lambda **kw: sl.PLIF(tau=3.0, **kw),
    "AdaptiveLIF": lambda **kw: sl.AdaptiveLIF(beta=0.9, tau_adapt=10.0, adaptation=0.5, **kw),
    "CurrentLIF": lambda **kw: sl.CurrentLIF(alpha=0.5, beta=0.8, **kw),
    "ProbabilisticLIF": lambda **kw: sl.ProbabilisticLIF(temperature=0.2, **kw),
}


def test_lif_equations_by_hand():
    x = torch.tensor([0.6, 0.6, 0.6, 0.0, 1.5]).view(5, 1)
    out = sl.LIF(beta=0.5, threshold=1.0, reset="subtract")(x)
    # h: 0.6, 0.9, 1.05 -> spike, v = 0.05; h = 0.025; h = 1.5125 -> spike
    assert out.flatten().tolist() == [0, 0, 1, 0, 1]
    zero = sl.LIF(beta=0.5, reset="zero")(torch.tensor([1.2, 0.9, 0.3]).view(3, 1))
    # after the hard reset the membrane restarts from 0: h = 0.9 (no spike), then 0.75
    assert zero.flatten().tolist() == [1, 0, 0]
    none = sl.LIF(beta=1.0, reset="none")(torch.tensor([1.0, 0.0, 0.0]).view(3, 1))
    assert none.flatten().tolist() == [1, 1, 1]
    hard_value = sl.LIF(beta=1.0, reset=0.5)(torch.tensor([1.0, 0.4, 0.1]).view(3, 1))
    assert hard_value.flatten().tolist() == [1, 0, 1]  # restarts at 0.5: 0.9, then 1.0


def test_decay_input_and_tau():
    lif = sl.LIF(tau=4.0, decay_input=True)
    assert lif.beta.item() == pytest.approx(0.75)
    x = torch.full((50, 1), 2.0)
    neuron = sl.LIF(tau=4.0, decay_input=True, reset="none", threshold=10.0)
    neuron.step(x[0])
    for t in range(1, 50):
        neuron.step(x[t])
    # h -> x in steady state when the input is decayed
    assert neuron.state["v"].item() == pytest.approx(2.0, rel=1e-3)


def test_if_integrates_without_leak():
    out = sl.IF(threshold=1.0)(torch.full((10, 1), 0.25))
    assert out.flatten().tolist() == [0, 0, 0, 1] * 2 + [0, 0]


def test_current_lif_equations():
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(4, 1)
    neuron = sl.CurrentLIF(alpha=0.5, beta=0.5, threshold=1.5, reset="none")
    for t in range(4):
        neuron.step(x[t])
    # i: 1, .5, .25, .125; v: 1, 1, .75, .5
    assert neuron.state["i"].item() == pytest.approx(0.125)
    assert neuron.state["v"].item() == pytest.approx(0.5)


def test_adaptive_threshold_rises_and_relaxes():
    neuron = sl.AdaptiveLIF(beta=0.0, rho=0.5, adaptation=2.0, threshold=1.0, reset="zero")
    x = torch.tensor([1.0, 1.0, 1.4, 1.2, 1.2]).view(5, 1)
    out = []
    for t in range(5):
        out.append(neuron.step(x[t]).item())
        if t == 0:
            assert neuron.state["a"].item() == pytest.approx(0.5)  # (1 - rho) * S
    # effective thresholds: 1, 2, 1.5, 1.25, 1.125 (a halves each step after the spike)
    assert out == [1, 0, 0, 0, 1]


def test_probabilistic_reproducible_and_rate_follows_probability():
    x = torch.full((2000, 1, 4), 0.5)
    # no reset: h converges to x / (1 - beta) = 1.0 = threshold, so p -> 0.5
    neuron = sl.ProbabilisticLIF(tau=2.0, temperature=0.5, threshold=1.0, reset="none", learn=False)
    torch.manual_seed(5)
    a = neuron(x)
    torch.manual_seed(5)
    b = neuron(x)
    assert torch.equal(a, b)
    assert a[50:].mean().item() == pytest.approx(0.5, abs=0.03)
    torch.manual_seed(6)
    assert not torch.equal(a, neuron(x))


def test_probabilistic_gradient_is_escape_derivative():
    neuron = sl.ProbabilisticLIF(tau=2.0, temperature=0.3, threshold=1.0, learn=True)
    x = torch.tensor([[0.7]], requires_grad=True)
    out = neuron(x.unsqueeze(0))
    out.sum().backward()
    p = torch.sigmoid(torch.tensor((0.7 - 1.0) / 0.3))
    assert x.grad.item() == pytest.approx((p * (1 - p) / 0.3).item(), rel=1e-5)
    assert neuron.threshold.grad.item() == pytest.approx(-(p * (1 - p) / 0.3).item(), rel=1e-5)
    assert neuron.log_temperature.grad is not None and neuron.w.grad is not None


@pytest.mark.parametrize("name", sorted(ALL))
def test_step_matches_forward_and_state_persists(name):
    neuron = ALL[name]()
    x = torch.rand(12, 3, 5) * 1.5
    torch.manual_seed(1)
    seq = neuron(x)
    torch.manual_seed(1)
    steps = torch.stack([neuron.step(x[t]) for t in range(12)])
    assert torch.equal(seq, steps)
    assert all(v is not None and v.shape == (3, 5) for v in neuron.state.values())
    sl.reset(neuron)
    assert all(v is None for v in neuron.state.values())


@pytest.mark.parametrize("name", sorted(ALL))
def test_steps_in_chunks_continue_the_stream(name):
    """steps() on chunks 5 + 1 + 6 equals one forward and 12 step() calls (stochastic included:
    the noise follows the stream's step counter), and the state goes on from there."""
    neuron = ALL[name]()
    x = torch.rand(12, 3, 5) * 1.5
    torch.manual_seed(1)
    whole = torch.stack([neuron.step(x[t]) for t in range(12)])
    sl.reset(neuron)
    torch.manual_seed(1)
    chunks = torch.cat([neuron.steps(x[:5]), neuron.steps(x[5:6]), neuron.steps(x[6:])])
    assert torch.equal(chunks, whole)
    if name != "ProbabilisticLIF":
        assert torch.equal(neuron(x), whole)
    with pytest.raises(ValueError, match=r"steps got a step of shape \(4, 5\) but its state has shape \(3, 5\)"):
        neuron.steps(torch.rand(2, 4, 5))
    net = sl.layers.Sequential(torch.nn.Linear(5, 7), ALL[name](), torch.nn.Linear(7, 2), sl.LIF(beta=0.9))
    torch.manual_seed(3)
    ref = torch.stack([net.step(x[t]) for t in range(12)])
    sl.reset(net)
    torch.manual_seed(3)
    assert torch.equal(torch.cat([net.steps(x[:7]), net.steps(x[7:])]), ref)


STREAMED = {**ALL, "LIF-per-channel": lambda **kw: sl.LIF(beta=torch.linspace(0.5, 0.9, 5), num_channels=5,
                                                            threshold=torch.linspace(0.6, 1.0, 5), **kw)}


@pytest.mark.parametrize("name", sorted(STREAMED))
def test_streaming_parameter_copies_follow_changes_and_go_with_reset(name):
    """step() keeps per-neuron copies of broadcast parameters for the stream (the kernels take
    one value per neuron); a threshold changed in place, the other parameters changed, a batch
    shrunk by select_batch or float64 is seen at the next step exactly as by advance(), which
    copies every call; reset() drops the copies."""
    kw = {"stochastic": False} if name == "ProbabilisticLIF" else {}  # the stream's noise differs from advance()'s
    stream, functional = STREAMED[name](**kw), STREAMED[name](**kw)
    functional.load_state_dict(stream.state_dict())
    x = torch.rand(9, 3, 5) * 1.5
    state, kept = None, ()
    with torch.no_grad():
        for t in range(9):
            if t == 3:  # in place: the same tensor, new values
                for m in (stream, functional):
                    m.threshold.mul_(0.6)
            if t == 5:  # every other parameter (the threshold comes last in the kernels' arguments)
                for m in (stream, functional):
                    for n, p in list(m.named_parameters()) + list(m.named_buffers()):
                        if p.is_floating_point() and n != "threshold":
                            p.mul_(0.9)
            xt = x[t] if t < 7 else x[t, :2]  # two samples go on from step 7 (as in live early exit)
            if t == 7:
                stream.select_batch(torch.tensor([0, 1]))
                state = tuple(v[:2] for v in state)
            state = functional.initial_state(xt) if state is None else state
            torch.manual_seed(t)
            a = stream.step(xt)
            torch.manual_seed(t)
            b, state = functional.advance(xt, state)
            assert torch.equal(a, b), t
            if t in (1, 2):
                copies = stream._full_params[2]
                assert all(p.shape == xt.shape for p in copies)
                assert t == 1 or all(p is q for p, q in zip(copies, kept)), "rebuilt with nothing changed"
                kept = copies
    stream.reset()
    assert stream._full_params is None
    stream.double()  # float64 parameters and input: float64 copies, the same spikes as advance()
    functional.double()
    with torch.no_grad():
        x64 = x[0].double()
        torch.manual_seed(0)
        a = stream.step(x64)
        torch.manual_seed(0)
        assert torch.equal(a, functional.advance(x64, functional.initial_state(x64))[0])
    assert all(p.dtype == torch.float64 and p.shape == x64.shape for p in stream._full_params[2])
    stream.reset()
    with torch.no_grad():
        stream(x.double())  # a whole-sequence forward keeps no copies
        assert stream._full_params is None
        with torch.autograd.forward_ad.dual_level():  # forward-mode AD: no copies (they would drop tangents)
            stream.step(x64)
        assert stream._full_params is None
    stream.reset()
    stream.step(x64)  # gradients on: copies only where no parameter takes gradients
    assert (stream._full_params is None) == any(p.requires_grad for p in stream.parameters())


def test_step_keeps_subclasses_that_override_run_or_advance():
    """Subclasses written before the parameter copies: an own ``_run(x_seq, state, record)``
    still streams (through the copies), an own ``advance`` is what ``step`` runs."""
    class Clamped(sl.LIF):
        def _run(self, x_seq, state, record=False):
            return super()._run(x_seq.clamp(max=0.5), state, record)

    class Silent(sl.LIF):
        def advance(self, x, state):
            out, state = super().advance(x, state)
            return out * 0, state

    x = torch.rand(6, 2, 4) * 1.5
    with torch.no_grad():
        clamped = Clamped(beta=0.5)
        streamed = torch.stack([clamped.step(xt) for xt in x])
        assert torch.equal(streamed, Clamped(beta=0.5)(x)) and torch.equal(streamed, sl.LIF(beta=0.5)(x.clamp(max=0.5)))
        silent = Silent(beta=0.5)
        assert not torch.stack([silent.step(xt) for xt in x]).any() and sl.LIF(beta=0.5)(x).any()


@pytest.mark.parametrize("name", sorted(ALL))
def test_forward_starts_fresh(name):
    neuron = ALL[name]()
    x = torch.rand(8, 2, 4) * 1.5
    neuron.step(torch.ones(2, 4) * 0.9)
    before = {k: v.clone() for k, v in neuron.state.items()}
    torch.manual_seed(2)
    a = neuron(x)
    torch.manual_seed(2)
    b = neuron(x)
    assert torch.equal(a, b)
    # forward leaves the streaming state alone
    assert all(torch.equal(before[k], v) for k, v in neuron.state.items())


@pytest.mark.parametrize("name", sorted(ALL))
def test_select_batch_shrinks_state(name):
    neuron = ALL[name]()
    x = torch.rand(6, 4, 3) * 1.5
    torch.manual_seed(3)
    full = torch.stack([neuron.step(x[t]) for t in range(6)])
    neuron.reset()
    torch.manual_seed(3)
    for t in range(3):
        neuron.step(x[t])
    keep = torch.tensor([0, 2])
    neuron.select_batch(keep)
    assert all(v.shape[0] == 2 for v in neuron.state.values())
    if name != "ProbabilisticLIF":  # its random draws follow the batch size
        tail = [neuron.step(x[t, keep]) for t in range(3, 6)]
        assert torch.equal(torch.stack(tail), full[3:, keep])
    neuron.select_batch(torch.tensor([True, False]))
    assert all(v.shape[0] == 1 for v in neuron.state.values())


def test_step_shape_change_needs_reset():
    neuron = sl.LIF()
    neuron.step(torch.rand(2, 3))
    with pytest.raises(ValueError, match="reset"):
        neuron.step(torch.rand(4, 3))
    neuron.reset()
    neuron.step(torch.rand(4, 3))


def test_mismatched_device_and_dtype_are_refused():
    neuron = sl.LIF()
    with pytest.raises(ValueError, match=r"meta.*\.to\("):
        neuron(torch.empty(3, 2, 4, device="meta"))
    neuron.step(torch.rand(2, 4))
    with pytest.raises(ValueError, match="float64.*reset"):
        neuron.step(torch.rand(2, 4, dtype=torch.float64))


def test_set_state_and_reading():
    neuron = sl.CurrentLIF(alpha=0.5, beta=0.5, threshold=10.0)
    neuron.set_state(v=torch.full((1, 2), 1.0), i=torch.full((1, 2), 2.0))
    neuron.step(torch.zeros(1, 2))
    assert neuron.state["i"][0, 0].item() == pytest.approx(1.0)
    assert neuron.state["v"][0, 0].item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown state"):
        neuron.set_state(u=torch.zeros(1, 2))


def test_detach_reset_changes_only_the_gradient():
    x = torch.rand(20, 2, 6) * 1.5
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a = sl.LIF(beta=0.9)(x1)
    b = sl.LIF(beta=0.9, detach_reset=True)(x2)
    assert torch.equal(a, b)
    a.sum().backward()
    b.sum().backward()
    assert not torch.allclose(x1.grad, x2.grad)


def test_per_channel_parameters_broadcast_on_channel_dim():
    neuron = sl.PLIF(tau=torch.tensor([1.5, 4.0]), num_channels=2)
    x = torch.rand(5, 3, 2, 4, 4)
    out = neuron(x)
    for c, tau in enumerate([1.5, 4.0]):
        ref = sl.PLIF(tau=tau)(x[:, :, c])
        assert torch.equal(out[:, :, c], ref)
    out.sum().backward()
    assert neuron.w.grad.shape == (2,)
    with pytest.raises(ValueError, match="num_channels"):
        neuron(torch.rand(5, 3, 3, 4))


def test_learnable_threshold_gets_gradient():
    neuron = sl.LIF(beta=0.9, learn_threshold=True, threshold=0.7)
    out = neuron(torch.rand(10, 4, 8) * 1.5)
    out.sum().backward()
    assert isinstance(neuron.threshold, torch.nn.Parameter)
    assert neuron.threshold.grad is not None and neuron.threshold.grad.item() != 0


def test_threshold_robust_gradient_is_scale_invariant():
    # TrSG: scaling threshold and input by k leaves d out / d h unchanged, and out scales by k
    x = torch.rand(15, 3, 7) * 1.5
    grads = []
    outs = []
    for k in (0.1, 1.0, 10.0):
        neuron = sl.LIF(beta=0.8, threshold=k, learn_threshold=True, threshold_robust=True,
                        surrogate="sigmoid")
        xk = (x * k).requires_grad_(True)
        out = neuron(xk)
        outs.append(out / k)
        (out / k).sum().backward()
        grads.append(xk.grad * k)  # d(out/k)/d(x) * k = d out / d (k x)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])
    assert set(outs[1].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[2], grads[1], rtol=1e-4, atol=1e-5)
    # plain (absolute) surrogate: the gradient changes with the scale
    g = []
    for k in (0.1, 1.0):
        xk = (x * k).requires_grad_(True)
        sl.LIF(beta=0.8, threshold=k, surrogate="sigmoid")(xk).sum().backward()
        g.append(xk.grad * k)
    assert not torch.allclose(g[0], g[1])


def test_mp_init_learns_running_mean_and_starts_there():
    neuron = sl.LIF(beta=0.9, mp_init=True, mp_init_momentum=0.5)
    x = torch.rand(30, 8, 16) * 0.8
    neuron.train()
    out = neuron(x)
    _, (v_final,) = reference.lif_sequence(x, torch.zeros(8, 16), neuron.beta, torch.ones(()), neuron.threshold,
                                           surrogate=neuron.surrogate)
    active = (out != 0).any(0)
    expected = 0.5 * (v_final[active].mean()).item()
    assert neuron.running_v.item() == pytest.approx(expected, rel=1e-5)
    # evaluation uses, and does not update, the learned initial membrane
    neuron.eval()
    before = neuron.running_v.clone()
    neuron.step(torch.zeros(8, 16))
    assert torch.allclose(neuron.state["v"], torch.full((8, 16), before.item() * 0.9))
    neuron.reset()
    assert torch.equal(neuron.running_v, before)
    # streaming training updates it at reset()
    neuron.train()
    for t in range(30):
        neuron.step(x[t])
    neuron.reset()
    assert neuron.running_v.item() != before.item()
    assert "running_v" in neuron.state_dict()


# ----- bad input -----------------------------------------------------------------------------

def test_bad_input_rank_and_dtype():
    neuron = sl.LIF()
    with pytest.raises(ValueError, match="x_seq"):
        neuron(torch.rand(5))
    with pytest.raises(TypeError, match="floating"):
        neuron(torch.ones(5, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="x_seq"):
        neuron([[1.0]])
    with pytest.raises(TypeError, match="x"):
        neuron.step(torch.ones(2, dtype=torch.int32))


@pytest.mark.parametrize("make, match", [
    (lambda: sl.LIF(surrogate="nope"), "surrogate"),
    (lambda: sl.LIF(reset="sometimes"), "reset"),
    (lambda: sl.LIF(reset=True), "reset"),
    (lambda: sl.LIF(beta=float("nan")), "beta"),
    (lambda: sl.LIF(beta=1.5), "beta"),
    (lambda: sl.LIF(tau=0.5), "tau"),
    (lambda: sl.LIF(beta=0.5, tau=2.0), "beta"),
    (lambda: sl.LIF(threshold=float("nan")), "threshold"),
    (lambda: sl.LIF(threshold=-1.0), "threshold"),
    (lambda: sl.LIF(threshold=torch.tensor([1.0, float("inf")])), "threshold"),
    (lambda: sl.PLIF(tau=1.0), "tau"),
    (lambda: sl.CurrentLIF(alpha=float("nan")), "alpha"),
    (lambda: sl.AdaptiveLIF(adaptation=float("nan")), "adaptation"),
    (lambda: sl.ProbabilisticLIF(temperature=0.0), "temperature"),
    (lambda: sl.ProbabilisticLIF(temperature=float("nan")), "temperature"),
    (lambda: sl.LIF(surrogate_alpha=float("nan")), "alpha"),
    (lambda: sl.LIF(backend="cuda-magic"), "backend"),
    (lambda: sl.LIF(num_channels=0), "num_channels"),
    (lambda: sl.LIF(mp_init_momentum=2.0), "mp_init_momentum"),
])
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_unknown_surrogate_type():
    with pytest.raises(TypeError, match="surrogate"):
        sl.LIF(surrogate=3)


def test_missing_backend_says_what_to_use(monkeypatch):
    from spikelab import backends

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(sl.BackendUnavailableError, match="CUDA.*numba"):
        sl.LIF(backend="triton")(torch.rand(3, 2, 2))
    monkeypatch.setitem(backends._INSTALLED, "numba", False)
    with pytest.raises(sl.BackendUnavailableError, match="pip install numba.*torch"):
        sl.LIF(backend="numba")(torch.rand(3, 2, 2))
    # auto falls back to the reference when the fused backend is missing
    assert sl.LIF(backend="auto")(torch.rand(3, 2, 2)).shape == (3, 2, 2)
    smooth = sl.surrogate.ATan(smooth_forward=True)
    monkeypatch.setitem(backends._INSTALLED, "numba", True)
    with pytest.raises(sl.BackendUnavailableError, match="smooth_forward"):
        sl.LIF(backend="numba", surrogate=smooth)(torch.rand(3, 2, 2))


def test_auto_backend_uses_fused_kernel_and_matches_reference():
    x = torch.rand(20, 3, 16) * 1.5
    for make in ALL.values():
        torch.manual_seed(1)
        fused = make(backend="auto")(x)
        torch.manual_seed(1)
        ref = make(backend="torch")(x)
        assert torch.equal(fused, ref)


def test_repr_names_parameters():
    text = repr(sl.PLIF(num_channels=4, learn_threshold=True))
    assert "num_channels=4" in text and "learn_threshold=True" in text and "ATan" in text
    assert "surrogate" not in repr(sl.ProbabilisticLIF())
    assert math.isclose(sl.PLIF(tau=4.0).tau.item(), 4.0, rel_tol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_shared_unit_scale_first_made_in_inference_mode_still_trains(backend):
    """LIF's unit input scale is one shared 0-d tensor per dtype and device; made first inside
    ``torch.inference_mode()``, it must still be a normal tensor that autograd can save."""
    from spikelab.neurons import base

    base._ONES.clear()
    neuron = sl.LIF(beta=0.5, backend=backend)
    with torch.inference_mode():
        neuron(torch.rand(3, 2, 4))
        neuron.step(torch.rand(2, 4))
    assert not base._ONES[(torch.float32, torch.device("cpu"))].is_inference()
    x = torch.rand(3, 2, 4, requires_grad=True)
    neuron.reset()
    neuron(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
