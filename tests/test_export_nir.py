"""NIR export/import: exact round trips, files that pass NIR's type check, independent clients
(snnTorch, Norse, a NumPy interpreter), graphs written by snnTorch, and clear refusals."""

from __future__ import annotations

import logging

import nir
import numpy as np
import pytest
import torch
from torch import nn

import spikelab as sl
from spikelab import layers as L
from spikelab import models
from spikelab.export import NIRExportError, NIRImportError, fold_batchnorm, from_nir, to_nir
from tests.nir_numpy import Interpreter
from tests.needs import peer

DT = 1e-3


def _first(out):
    """snnTorch's imported graphs return (output, state), its neurons (spikes, membrane)."""
    while isinstance(out, tuple):
        out = out[0]
    return out


def _snntorch_run(net, x):
    """Reset an snnTorch network and step it through ``x`` ``[T, B, ...]``: its spikes ``[T, B, ...]``."""
    import snntorch.utils

    snntorch.utils.reset(net)
    return torch.stack([_first(net(x[t])) for t in range(x.shape[0])])


def _spikes(shape, p=0.3):
    return (torch.rand(shape) < p).float()


def _models():
    """(name, model, input [T, B, ...]) for every supported layer and neuron."""
    torch.manual_seed(0)
    t, b = 14, 3
    yield "lif-linear", L.Sequential(L.Linear(12, 10), sl.LIF(beta=0.8, reset="zero"), L.Linear(10, 4)), \
        torch.rand(t, b, 12) * 1.5
    yield "lif-decay-input-per-channel-threshold", L.Sequential(
        L.Linear(12, 6), sl.LIF(tau=torch.tensor([2.0, 3, 4, 5, 6, 7]), decay_input=True, reset=-0.2,
                                threshold=torch.linspace(0.3, 0.8, 6), num_channels=6)), torch.rand(t, b, 12) * 3
    yield "plif", L.Sequential(L.Linear(8, 5), sl.PLIF(tau=3.0, reset="zero", threshold=0.3)), torch.rand(t, b, 8) * 4
    yield "if-no-bias", L.Sequential(L.Linear(9, 7, bias=False), sl.IF(reset="zero", threshold=0.7)), \
        torch.rand(t, b, 9)
    yield "cuba", L.Sequential(L.Linear(10, 6), sl.CurrentLIF(alpha=0.7, beta=0.85, reset="zero", threshold=0.6)), \
        torch.rand(t, b, 10)
    yield "conv2d-bn-sumpool-avgpool-flatten", L.Sequential(
        L.Conv2d(2, 4, 3, padding=1, bias=False), L.BatchNorm2d(4), sl.LIF(tau=2.0, reset="zero"), L.SumPool2d(2),
        L.Conv2d(4, 4, 3, stride=2, padding=1), sl.IF(reset="zero"), L.AvgPool2d(2), L.Flatten(),
        L.Dropout(0.2), L.Linear(4 * 2 * 2, 3)), _spikes((t, b, 2, 16, 16))
    yield "conv1d", L.Sequential(L.Conv1d(3, 5, 3, padding=1), sl.LIF(beta=0.6, reset="zero")), \
        torch.rand(t, b, 3, 11) * 2
    yield "recurrent-readout", L.Sequential(
        L.Linear(6, 8), L.Recurrent(sl.LIF(beta=0.9, reset="zero"), nn.Linear(8, 8)), L.Linear(8, 3),
        sl.LeakyIntegrator(beta=0.9)), torch.rand(t, b, 6) * 2
    yield "sew-resnet-bn", models.SEWResNet(in_channels=2, classes=3, input_size=16, stages=(4,), blocks=2,
                                            neuron=lambda: sl.LIF(tau=2.0, reset="zero")), _spikes((t, b, 2, 16, 16))
    yield "delay", L.Sequential(L.Linear(6, 4), L.Delay(torch.tensor([0, 1, 3, 2])), sl.IF(reset="zero")), \
        torch.rand(t, b, 6) * 2
    yield "scale-threshold-integrator", L.Sequential(
        L.Linear(5, 4), L.Scale(torch.tensor([0.5, 1.0, 2.0, -1.0])), L.Threshold(0.25), L.Linear(4, 2),
        sl.LeakyIntegrator(beta=1.0)), torch.randn(t, b, 5)


def _with_bn_stats(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


MODELS = list(_models())


@pytest.mark.parametrize("name,model,x", MODELS, ids=[m[0] for m in MODELS])
def test_round_trip_reproduces_outputs_exactly(tmp_path, name, model, x):
    model = _with_bn_stats(model)
    graph = to_nir(model, dt=DT, sample_input=x)
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    nir.read(path, type_check=True)  # NIR's own shape/type check passes
    back = from_nir(path, dt=DT)
    with torch.no_grad():
        ours, theirs = model(x), back(x)
    assert ours.shape == theirs.shape
    assert ours.abs().sum() > 0
    if "bn" in name:  # folding BatchNorm into the conv reorders float operations
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
        with torch.no_grad():  # the folded model, which is what the graph holds, is reproduced exactly
            ours = fold_batchnorm(model)(x)
    assert torch.equal(ours, theirs), f"{name}: {(ours != theirs).sum().item()} outputs differ"


@pytest.mark.parametrize("name,model,x", MODELS, ids=[m[0] for m in MODELS])
def test_numpy_interpreter_gives_the_same_spikes(name, model, x):
    model = _with_bn_stats(model)
    graph = to_nir(model, dt=DT, sample_input=x)
    with torch.no_grad():
        ours = model(x).numpy()
    theirs = Interpreter(graph, DT).run(x.numpy())
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)


def test_residual_block_sums_two_edges():
    net = models.SEWResNet(in_channels=2, classes=3, input_size=16, stages=(4,), blocks=1,
                           neuron=lambda: sl.IF(reset="zero"))
    graph = to_nir(net, dt=DT, input_shape=(2, 16, 16))
    into = {}
    for src, dst in graph.edges:
        into.setdefault(dst, []).append(src)
    joined = [d for d, srcs in into.items() if len(srcs) == 2]
    assert len(joined) == 1  # the node after the block: the body's last neuron + the block's input
    srcs = into[joined[0]]
    assert isinstance(graph.nodes[srcs[0]], nir.IF) and srcs[1] == "3"  # "3": the pooling before the block


def test_step_mode_matches_sequence_mode():
    _, model, x = MODELS[0]
    back = from_nir(to_nir(model, dt=DT, sample_input=x), dt=DT)
    with torch.no_grad():
        whole = back(x)
        back.reset()
        steps = torch.stack([back.step(x[t]) for t in range(x.shape[0])])
    assert torch.equal(whole, steps)


def _client_model(decay_input: bool):
    torch.manual_seed(1)
    return L.Sequential(L.Linear(20, 16), sl.LIF(beta=0.9, reset="zero", decay_input=decay_input),
                        L.Linear(16, 8), sl.CurrentLIF(alpha=0.8, beta=0.9, reset="zero")).eval()


def test_snntorch_import_gives_the_same_spikes(capsys):
    """snnTorch reads LIF/CubaLIF with its own fixed dt = 1e-4, so the graph is exported for it."""
    snntorch_nir = peer("snntorch.import_nir")

    model, x = _client_model(False), torch.rand(30, 4, 20) * 2
    net = snntorch_nir.import_from_nir(to_nir(model, dt=1e-4, sample_input=x))
    with torch.no_grad():
        theirs = _snntorch_run(net, x)
        ours = model(x)
    assert ours.sum() > 10
    assert torch.equal(theirs, ours)


def test_snntorch_if_import_with_its_documented_workaround():
    """snnTorch 1.0 imports NIR IF as ``Leaky(beta=0.9)`` with subtraction reset (upstream bug: an
    IF does not leak and NIR resets to v_reset); setting beta=1 and reset 'zero' restores the IF."""
    snntorch_nir = peer("snntorch.import_nir")
    import snntorch

    torch.manual_seed(2)
    model = L.Sequential(L.Linear(10, 12), sl.IF(reset="zero", threshold=0.8)).eval()
    x = torch.rand(25, 4, 10)
    net = snntorch_nir.import_from_nir(to_nir(model, dt=1e-4, sample_input=x))
    for m in net.modules():
        if isinstance(m, snntorch.Leaky):
            assert float(m.beta) == pytest.approx(0.9)  # the bug, still there
            m.beta = torch.tensor(1.0)
            m.reset_mechanism = "zero"
    with torch.no_grad():
        theirs = _snntorch_run(net, x)
        ours = model(x)
    assert ours.sum() > 10
    assert torch.equal(theirs, ours)


def test_norse_import_gives_the_same_spikes():
    """Norse ignores ``r`` of LIF nodes (assumes r = 1, i.e. a decayed input), so its LIF is
    checked with ``decay_input=True``; CubaLIF honours r and w_in."""
    norse = peer("norse.torch")
    model, x = _client_model(True), torch.rand(30, 4, 20) * 3
    logging.disable(logging.WARNING)
    try:
        net = norse.from_nir(to_nir(model, dt=1e-4, sample_input=x), dt=1e-4)
    finally:
        logging.disable(logging.NOTSET)
    with torch.no_grad():
        state, outs = None, []
        for t in range(x.shape[0]):
            out, state = net(x[t], state)
            outs.append(out)
        ours = model(x)
    assert ours.sum() > 10
    assert torch.equal(torch.stack(outs), ours)


def test_graph_written_by_snntorch_runs_like_snntorch():
    snn = peer("snntorch")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(3)
    # snnTorch's exporter writes a scalar beta as a 0-d array that fails NIR's type check: per-neuron
    # tensors are its documented way round
    net = nn.Sequential(nn.Linear(12, 10), snn.Leaky(beta=torch.full((10,), 0.85), threshold=torch.ones(10),
                                                     init_hidden=True, reset_mechanism="zero", reset_delay=False),
                        nn.Linear(10, 6), snn.Synaptic(alpha=torch.full((6,), 0.7), beta=torch.full((6,), 0.8),
                                                       threshold=torch.ones(6), init_hidden=True,
                                                       reset_mechanism="zero", reset_delay=False, output=True))
    x = torch.rand(25, 4, 12) * 2
    graph = export_to_nir(net, x[0, 0])  # one sample: snnTorch records the sample's shape as the input type
    ours = from_nir(graph, dt=1e-4)
    with torch.no_grad():
        theirs = _snntorch_run(net, x)
        mine = ours(x)
    assert theirs.sum() > 10
    assert (mine != theirs).float().mean() < 1e-3  # identical up to float rounding at the threshold
    assert torch.equal(mine, theirs)


def test_graph_written_by_snntorch_with_rleaky_runs_like_snntorch():
    snn = peer("snntorch")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(6, 8), snn.RLeaky(beta=0.9, linear_features=8, init_hidden=True,
                                                    reset_mechanism="zero", reset_delay=False, output=True))
    x = torch.rand(20, 3, 6) * 2
    graph = export_to_nir(net, x[0, 0])  # one sample: snnTorch records the sample's shape as the input type
    ours = from_nir(graph, dt=1e-4)
    with torch.no_grad():
        theirs = _snntorch_run(net, x)
        mine = ours(x)
    assert theirs.sum() > 5
    assert torch.equal(mine, theirs)


# ----- refusals and approximations ------------------------------------------------------------------

@pytest.mark.parametrize("neuron,needle", [
    (lambda: sl.LIF(beta=0.9), "reset by subtraction"),
    (lambda: sl.ProbabilisticLIF(reset="zero"), "escape noise"),
    (lambda: sl.AdaptiveLIF(reset="zero"), "adapts"),
    (lambda: sl.LIF(beta=0.9, reset="none"), "reset 'none'"),
])
def test_inexpressible_neurons_are_refused_with_the_reason(neuron, needle):
    model = L.Sequential(L.Linear(4, 3), neuron())
    with pytest.raises(NIRExportError, match=needle) as err:
        to_nir(model, dt=DT, input_shape=(4,))
    assert "approximate=True" in str(err.value) and "1" in str(err.value)


def test_approximation_is_explicit_warned_and_recorded():
    model = L.Sequential(L.Linear(4, 3), sl.LIF(beta=0.9))  # subtraction reset
    with pytest.warns(UserWarning, match="reset to 0"):
        graph = to_nir(model, dt=DT, input_shape=(4,), approximate=True)
    assert "subtraction" in graph.metadata["approximations"]
    assert isinstance(graph.nodes["1"], nir.LIF) and np.all(graph.nodes["1"].v_reset == 0)


@pytest.mark.parametrize("layer,needle", [
    (L.MaxPool2d(2), "max pooling"),
    (nn.GELU(), "GELU has no NIR node"),
    (L.BatchNorm2d(2), "cannot be folded"),
])
def test_unsupported_layers_are_refused(layer, needle):
    model = L.Sequential(layer, L.Flatten())
    with pytest.raises(NIRExportError, match=needle):
        to_nir(model, dt=DT, input_shape=(2, 4, 4))


def test_parameters_are_per_neuron_arrays_and_dt_is_recorded():
    model = L.Sequential(L.Conv2d(1, 3, 3), sl.LIF(tau=4.0, reset="zero", threshold=torch.tensor([0.5, 1, 2]),
                                                   num_channels=3))
    graph = to_nir(model, dt=0.5e-3, input_shape=(1, 6, 6))
    lif = graph.nodes["1"]
    assert lif.tau.shape == lif.v_threshold.shape == lif.r.shape == (3, 4, 4)
    np.testing.assert_allclose(lif.tau, 0.5e-3 * 4.0)  # beta = 1 - 1/4 -> tau = 4 steps of dt
    assert np.all(lif.v_threshold[1] < 1.0) and np.all(lif.v_threshold[1] == np.nextafter(np.float32(1), 0))
    assert graph.metadata["dt"] == 0.5e-3


def test_import_refusals_name_the_node():
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])),
                            "odd": nir.CubaLI(tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3), v_leak=np.zeros(3)),
                            "output": nir.Output(np.array([3]))},
                     edges=[("input", "odd"), ("odd", "output")])
    with pytest.raises(NIRImportError, match="node 'odd'.*CubaLI is not supported"):
        from_nir(g, dt=DT)
    leaky = nir.NIRGraph(nodes={"input": nir.Input(np.array([2])),
                                "lif": nir.LIF(tau=np.ones(2) * 1e-2, r=np.ones(2), v_leak=np.ones(2),
                                               v_threshold=np.ones(2)),
                                "output": nir.Output(np.array([2]))},
                         edges=[("input", "lif"), ("lif", "output")])
    with pytest.raises(NIRImportError, match="node 'lif': v_leak"):
        from_nir(leaky, dt=DT)
    leaky.nodes["lif"].v_leak = np.zeros(2)
    with pytest.raises(NIRImportError, match="node 'lif': tau must be >= dt"):
        from_nir(leaky, dt=1.0)


def test_unreadable_file_and_dt_mismatch(tmp_path):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(NIRImportError, match="bad.nir: not a readable NIR file"):
        from_nir(bad, dt=DT)
    graph = to_nir(L.Sequential(L.Linear(3, 2), sl.IF(reset="zero")), dt=DT, input_shape=(3,))
    with pytest.warns(UserWarning, match="exported for dt = 0.001"):
        from_nir(graph, dt=2e-3)


def test_delay_node_shifts_by_whole_steps():
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "d": nir.Delay(np.array([0.0, 1e-3, 3e-3])),
                            "output": nir.Output(np.array([3]))}, edges=[("input", "d"), ("d", "output")])
    net = from_nir(g, dt=1e-3)
    x = torch.arange(1.0, 7.0).view(6, 1, 1).expand(6, 1, 3).contiguous()
    y = net(x)[:, 0]
    assert y[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    assert y[:, 1].tolist() == [0, 1, 2, 3, 4, 5]
    assert y[:, 2].tolist() == [0, 0, 0, 1, 2, 3]
    with pytest.raises(NIRImportError, match="whole multiples of dt"):
        from_nir(g, dt=2e-3)


def test_graph_written_by_sinabs_runs_like_sinabs():
    """sinabs writes IAF layers as NIR IF nodes; with one spike per step and reset to zero they match
    exactly. (Its exporter writes the same IF node for its defaults, several spikes per step and
    a subtracting reset, which NIR cannot express: lost upstream; the second case shows it.)"""
    peer("sinabs")
    import sinabs.layers as sil
    import sinabs.nir as snir
    from sinabs.activation import MembraneReset, MembraneSubtract, SingleSpike

    def net(reset):
        torch.manual_seed(5)
        return nn.Sequential(nn.Linear(10, 8), sil.IAF(reset_fn=reset, spike_fn=SingleSpike), nn.Linear(8, 4),
                             sil.IAF(reset_fn=reset, spike_fn=SingleSpike, spike_threshold=0.5))

    x = torch.rand(3, 20, 10) * 1.5  # sinabs: [B, T, ...]
    for reset, same in ((MembraneReset(), True), (MembraneSubtract(), False)):
        theirs = net(reset)
        with torch.no_grad():
            expected = theirs(x)
            graph = snir.to_nir(theirs, x)
            mine = from_nir(graph, dt=DT)(x.transpose(0, 1)).transpose(0, 1)
        assert expected.sum() > 10
        assert torch.equal(mine, expected) == same


def test_file_failing_nirs_type_check_is_read_with_a_warning(tmp_path):
    """Some exporters record the batch in the input type (snnTorch with a batched sample): NIR's own
    reader refuses such a file by default; from_nir reads it without the check and says so."""
    w, b = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32), np.zeros(3, np.float32)
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([2, 4])), "lin": nir.Affine(w, b),
                                "lif": nir.IF(r=np.ones(3), v_threshold=np.ones(3) * 0.5),
                                "output": nir.Output(np.array([3]))},
                         edges=[("input", "lin"), ("lin", "lif"), ("lif", "output")], type_check=False)
    path = tmp_path / "batched.nir"
    nir.write(path, graph)
    with pytest.raises(ValueError):
        nir.read(path)
    with pytest.warns(UserWarning, match="fails NIR's type check"):
        net = from_nir(path, dt=DT)
    x = torch.rand(5, 2, 4)
    expected = L.Sequential(L.Linear(4, 3), sl.IF(reset="zero", threshold=float(np.nextafter(np.float32(0.5), 1))))
    with torch.no_grad():
        expected[0].weight.copy_(torch.from_numpy(w))
        expected[0].bias.zero_()
        assert torch.equal(net(x), expected(x))
