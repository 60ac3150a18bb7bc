"""The demo's convolutional network through NIR into Norse 1.1 and snnTorch 1.0: the graph that
``to_nir(compat=...)`` writes loads in each peer and spikes as spikelab does, layer by layer.

Time steps: both peers run one NIR step per call and a neuron spikes in the step its input
arrives, as spikelab's neurons do, so spikes are compared step for step with no shift.
The peers run the graph with BatchNorm folded into the convolutions (that is what the file
holds), so they are compared with :func:`fold_batchnorm` of the model, which the graph
reproduces exactly.
"""

from __future__ import annotations

import logging
import warnings

import nir
import numpy as np
import pytest
import torch

import spikelab as sl
from spikelab import layers as L
from spikelab import models
from spikelab.export import NIRExportError, fix_snntorch_if, fold_batchnorm, from_nir, quantize, to_nir
from spikelab.train.config import neuron_factory
from tests.needs import peer

DT = 1e-4  # snnTorch reads LIF time constants with dt = 1e-4; Norse takes dt as an argument
NEURONS = ("2", "6")  # the two LIF layers of the demo CNN (conv, bn, lif, pool, conv, bn, lif, pool, ...)


def _demo_cnn(seed: int = 0) -> torch.nn.Module:
    """The demo's architecture (spikelab.demo.DEMO_CONFIG's model) with random weights and
    BatchNorm statistics."""
    torch.manual_seed(seed)
    neuron = neuron_factory({"type": "lif", "tau": 2.0, "reset": "zero", "detach_reset": True})
    net = models.SpikingCNN(2, 10, 34, (16, 32), neuron=neuron)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(1.5, 3.0)
    return net.eval()


def _events(t: int = 12, b: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return (torch.rand(t, b, 2, 34, 34) < 0.3).float()


def _ours(net, x):
    """The folded network's output and the spikes of its neuron layers ``[T, B, ...]``."""
    folded = fold_batchnorm(net)
    spikes = {}
    hooks = [folded.get_submodule(k).register_forward_hook(
        lambda m, i, o, k=k: spikes.__setitem__(k, o)) for k in NEURONS]
    with torch.no_grad():
        out = folded(x)
    for h in hooks:
        h.remove()
    return out, spikes


def _through_file(graph, tmp_path, name):
    path = tmp_path / f"{name}.nir"
    nir.write(path, graph)
    return nir.read(path)  # the peers read the file, as a user's would


def _run_norse(graph, x, neurons=NEURONS):
    norse = peer("norse.torch")
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # nirtorch.load, which Norse 1.1 calls
            net = norse.from_nir(graph, dt=DT)
    finally:
        logging.disable(logging.NOTSET)
    spikes = {k: [] for k in neurons}
    for k in neurons:  # Norse's neuron cells return (spikes, state)
        getattr(net, k).register_forward_hook(lambda m, i, o, k=k: spikes[k].append(o[0]))
    state, outs = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = net(x[t], state)
            outs.append(out)
    return torch.stack(outs), {k: torch.stack(v) for k, v in spikes.items()}


def _run_snntorch(graph, x, neurons=NEURONS):
    snntorch_nir = peer("snntorch.import_nir")
    import snntorch.utils

    net = snntorch_nir.import_from_nir(graph)
    spikes = {k: [] for k in neurons}
    for k in neurons:  # init_hidden neurons return their spikes
        getattr(net, k).register_forward_hook(lambda m, i, o, k=k: spikes[k].append(o))
    snntorch.utils.reset(net)
    outs = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            out = net(x[t])
            outs.append(out[0] if isinstance(out, tuple) else out)  # (output, state) from nirtorch
    return torch.stack(outs), {k: torch.stack(v) for k, v in spikes.items()}


RUNNERS = {"norse": _run_norse, "snntorch": _run_snntorch}


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "loihi2-8bit"])
@pytest.mark.parametrize("compat", ["norse", "snntorch"])
def test_demo_cnn_spikes_equal_in_peer(tmp_path, compat, quantized):
    """Float, and as deployed to Loihi 2 (BatchNorm folded, sum pooling, 8-bit weights)."""
    net, x = _demo_cnn(), _events()
    if quantized:
        net, report = quantize(net, "loihi2")
        assert len(report["rewrites"]) == 2  # both poolings are sum poolings now
    expected, our_spikes = _ours(net, x)
    graph = _through_file(to_nir(net, dt=DT, sample_input=x, compat=compat), tmp_path, compat)
    out, their_spikes = RUNNERS[compat](graph, x)
    for k in NEURONS:
        assert our_spikes[k].sum() > 1000, "the comparison needs spikes"
        assert their_spikes[k].shape == our_spikes[k].shape
        assert torch.equal(their_spikes[k], our_spikes[k]), \
            f"{compat}, layer {k}: {(their_spikes[k] != our_spikes[k]).sum().item()} spikes differ"
    assert out.shape == expected.shape
    # the readout is a float matrix product over a different batch layout (B instead of T*B)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the model itself (BatchNorm unfolded) predicts the same
        assert torch.equal(net(x).sum(0).argmax(-1), out.sum(0).argmax(-1))


@pytest.mark.parametrize("compat", ["norse", "snntorch"])
def test_compat_graph_is_the_same_network_for_spikelab(tmp_path, compat):
    """The rewrites move parameters, never change the network: spikelab reads the peer's graph
    back to the same outputs, exactly (the 2x2 pooling factor is a power of two)."""
    net, x = _demo_cnn(), _events()
    graph = _through_file(to_nir(net, dt=DT, sample_input=x, compat=compat), tmp_path, compat)
    nir.read(tmp_path / f"{compat}.nir", type_check=True)  # still passes NIR's own check
    assert graph.metadata["compat"] == compat
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert kinds & {"AvgPool2d", "SumPool2d"} == ({"SumPool2d"} if compat == "norse" else {"AvgPool2d"})
    flatten = graph.nodes["8"]
    assert (int(flatten.start_dim), int(flatten.end_dim)) == (-3, -1)  # the same with or without a batch
    if compat == "norse":
        assert all(np.all(graph.nodes[k].r == 1) for k in NEURONS)  # Norse reads r = 1
    expected, _ = _ours(net, x)
    with torch.no_grad():
        back = from_nir(graph, dt=DT)(x)
    assert torch.equal(back, expected)


def test_plain_graph_fails_in_both_peers_as_documented(tmp_path):
    """Without compat=, the peers' own bugs show (docs/export.md): Norse 1.1 has no AvgPool2d
    (nirtorch then fails with KeyError '3', the pooling node's name), snnTorch 1.0 turns NIR's
    per-sample Flatten(start_dim=0) into torch's, which flattens the batch."""
    net, x = _demo_cnn(), _events()
    graph = _through_file(to_nir(net, dt=DT, sample_input=x), tmp_path, "plain")
    peer("norse.torch")
    with pytest.raises(KeyError, match="'3'"):
        _run_norse(graph, x)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        _run_snntorch(graph, x)


def test_snntorch_needs_its_fixed_dt_and_one_threshold_per_layer():
    net = _demo_cnn()
    with pytest.raises(NIRExportError, match=r"nodes \['2', '6'\].*fixed dt = 0.0001 s.*dt = 0.001 s"):
        to_nir(net, dt=1e-3, input_shape=(2, 34, 34), compat="snntorch")
    per_channel = L.Sequential(L.Conv2d(2, 3, 3), sl.LIF(tau=2.0, reset="zero", num_channels=3,
                                                         threshold=torch.tensor([0.5, 1.0, 1.5])), L.Flatten())
    with pytest.raises(NIRExportError, match="node '1' \\(LIF\\): thresholds differ.*one threshold per layer"):
        to_nir(per_channel, dt=DT, input_shape=(2, 8, 8), compat="snntorch")
    to_nir(per_channel, dt=DT, input_shape=(2, 8, 8), compat="norse")  # Norse takes per-neuron thresholds


def test_norse_refusals_name_the_node_and_the_way_out():
    pool_into_neuron = L.Sequential(L.Conv2d(2, 4, 3), sl.IF(reset="zero"), L.AvgPool2d(2), sl.IF(reset="zero"))
    with pytest.raises(NIRExportError, match="node '2' \\(AvgPool2d\\): Norse 1.1 .*reads no AvgPool2d.*"
                                             "feeds '3' \\(IF\\)"):
        to_nir(pool_into_neuron, dt=DT, input_shape=(2, 10, 10), compat="norse")
    with pytest.warns(UserWarning, match="Leaky\\(beta=0.9\\)"):  # snnTorch reads AvgPool2d, and misreads IF
        to_nir(pool_into_neuron, dt=DT, input_shape=(2, 10, 10), compat="snntorch")
    reset_value = L.Sequential(L.Linear(4, 3), sl.LIF(tau=2.0, reset=-0.5))
    with pytest.raises(NIRExportError, match="node '1' \\(LIF\\): v_reset = -0.5; Norse 1.1 .*resets every neuron to 0"):
        to_nir(reset_value, dt=DT, input_shape=(4,), compat="norse")
    readout = L.Sequential(L.Linear(4, 3), sl.LeakyIntegrator(beta=0.9))
    with pytest.raises(NIRExportError, match="'1' \\(LI\\): Norse 1.1 .* reads only"):
        to_nir(readout, dt=DT, input_shape=(4,), compat="norse")
    with pytest.raises(ValueError, match="compat: unknown peer 'lava'"):
        to_nir(readout, dt=DT, input_shape=(4,), compat="lava")


def test_snntorch_reads_sum_pooling_as_average_pooling(tmp_path):
    """snnTorch has no SumPool2d: it is written as AvgPool2d with the factor in the next weights."""
    torch.manual_seed(3)
    net = L.Sequential(L.Conv2d(2, 4, 3, padding=1), sl.LIF(tau=2.0, reset="zero"), L.SumPool2d(2), L.Flatten(),
                       L.Linear(4 * 5 * 5, 6), sl.LIF(tau=4.0, reset="zero", threshold=0.5)).eval()
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[4].weight.mul_(4.0)
    x = (torch.rand(10, 2, 2, 10, 10) < 0.4).float()
    graph = _through_file(to_nir(net, dt=DT, sample_input=x, compat="snntorch"), tmp_path, "sum")
    assert isinstance(graph.nodes["2"], nir.AvgPool2d)
    np.testing.assert_array_equal(graph.nodes["4"].weight, net[4].weight.detach().numpy() * 4)
    snntorch_nir = peer("snntorch.import_nir")
    import snntorch.utils

    peer_net = snntorch_nir.import_from_nir(graph)
    snntorch.utils.reset(peer_net)
    with torch.no_grad():
        theirs = torch.stack([peer_net(x[t])[0] for t in range(x.shape[0])])
        ours = net(x)
    assert ours.sum() > 5
    assert torch.equal(theirs, ours)


def test_snntorch_if_bug_and_its_workaround(tmp_path):
    """snnTorch 1.0 imports NIR IF as Leaky(beta=0.9) with a subtracting reset, which no NIR
    rewrite avoids: to_nir(compat="snntorch") warns, and fix_snntorch_if(net) makes the imported
    network run the IF it is. Shown on a convolutional IF network (Speck's kind)."""
    snntorch_nir = peer("snntorch.import_nir")
    import snntorch
    import snntorch.utils

    torch.manual_seed(4)
    net = L.Sequential(L.Conv2d(2, 4, 3, padding=1), sl.IF(reset="zero", threshold=0.8), L.SumPool2d(2),
                       L.Conv2d(4, 4, 3, padding=1), sl.IF(reset="zero"), L.Flatten(), L.Linear(4 * 4 * 4, 3),
                       sl.IF(reset="zero", threshold=0.5)).eval()
    with torch.no_grad():
        for i, gain in ((0, 2.0), (3, 3.0), (6, 4.0)):
            net[i].weight.mul_(gain)
        net[6].bias.fill_(0.2)
    x = (torch.rand(16, 2, 2, 8, 8) < 0.5).float()
    with pytest.warns(UserWarning, match="node '1' \\(IF\\): snnTorch 1.0 .* Leaky\\(beta=0.9\\).*fix_snntorch_if"):
        graph = to_nir(net, dt=DT, sample_input=x, compat="snntorch")
    graph = _through_file(graph, tmp_path, "if")

    def run(peer_net):
        snntorch.utils.reset(peer_net)
        with torch.no_grad():
            return torch.stack([peer_net(x[t])[0] for t in range(x.shape[0])])

    with torch.no_grad():
        ours = net(x)
    assert ours.sum() > 10
    as_imported = snntorch_nir.import_from_nir(graph)
    ifs = [m for m in as_imported.modules() if isinstance(m, snntorch.Leaky)]
    assert [(round(float(m.beta), 6), m.reset_mechanism, m.init_hidden) for m in ifs] == \
        [(0.9, "subtract", False)] * 3  # the bug: a leaky, subtracting neuron that returns (spikes, membrane)
    with pytest.raises(TypeError, match="not tuple"):
        run(as_imported)
    assert fix_snntorch_if(as_imported) == 3
    assert torch.equal(run(as_imported), ours)
    assert fix_snntorch_if(as_imported) == 0  # nothing left to repair
    # Norse reads the same network's IF neurons as they are
    norse_graph = _through_file(to_nir(net, dt=DT, sample_input=x, compat="norse"), tmp_path, "if_norse")
    _, spikes = _run_norse(norse_graph, x, neurons=("1", "4", "7"))
    assert torch.equal(spikes["7"], ours)


def test_cli_writes_the_peer_graph(tmp_path, capsys):
    from spikelab.cli import main

    net = _demo_cnn()
    torch.save(net, tmp_path / "cnn.pt")
    args = ["export", str(tmp_path / "cnn.pt"), "--trust", "--input-shape", "2,34,34"]
    assert main(args + ["--out", str(tmp_path / "n.nir"), "--for", "norse", "--dt", str(DT)]) == 0
    assert "for norse" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "s.nir"), "--for", "snntorch"]) == 0  # dt defaults to 1e-4
    assert "dt = 0.0001 s" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "s.nir"), "--for", "snntorch", "--dt", "1e-3"]) == 2
    assert "fixed dt = 0.0001 s" in capsys.readouterr().err
    x = _events(6, 2)
    expected, spikes = _ours(net, x)
    for name, runner in RUNNERS.items():
        out, theirs = runner(nir.read(tmp_path / f"{name[0]}.nir"), x)
        assert all(torch.equal(theirs[k], spikes[k]) for k in NEURONS), name


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_snntorch_per_channel_time_constants_with_decay_input(tmp_path, conv):
    """decay_input=True with a time constant per channel: the input scale r*dt/tau differs between
    neurons, and snnTorch divides its one threshold by a single neuron's scale. compat="snntorch"
    moves the scale into the feeding layer's weights and bias (r becomes tau/dt, scale 1), so
    snnTorch spikes as spikelab does; spikelab reads the graph back to the same network."""
    torch.manual_seed(5)
    beta = [0.5, 0.9, 0.7]
    if conv:
        net = L.Sequential(L.Conv2d(2, 3, 3, padding=1), sl.LIF(beta=beta, decay_input=True, num_channels=3,
                                                                reset="zero"), L.Flatten())
        x = (torch.rand(60, 2, 2, 4, 4) < 0.5).float()
    else:
        net = L.Sequential(L.Linear(5, 3), sl.LIF(beta=beta, decay_input=True, num_channels=3, reset="zero"))
        x = (torch.rand(60, 4, 5) < 0.5).float()
    net.eval()
    with torch.no_grad():  # a drive between 1 and 10: spikes in spikelab, none where the threshold is misread
        net[0].weight.mul_(3.0)
        net[0].bias.fill_(1.5)
        ours = net(x)
    per_channel = ours.reshape(*ours.shape[:2], 3, -1).sum((0, 1, 3))
    assert (per_channel > 5).all(), f"the comparison needs spikes in every channel: {per_channel}"
    graph = _through_file(to_nir(net, dt=DT, sample_input=x, compat="snntorch"), tmp_path, "tau")
    lif = graph.nodes["1"]
    np.testing.assert_allclose(lif.r * DT / lif.tau, 1.0, rtol=1e-12)  # snnTorch reads scale 1: no rescaling
    snntorch_nir = peer("snntorch.import_nir")
    import snntorch.utils

    peer_net = snntorch_nir.import_from_nir(graph)
    snntorch.utils.reset(peer_net)
    with torch.no_grad():
        theirs = torch.stack([peer_net(x[t])[0] for t in range(x.shape[0])])
        back = from_nir(graph, dt=DT)(x)
    assert torch.equal(theirs, ours), f"spike counts per channel: spikelab {per_channel.tolist()}, snnTorch " \
        f"{theirs.reshape(*ours.shape[:2], 3, -1).sum((0, 1, 3)).tolist()}"
    assert torch.equal(back, ours)


def test_snntorch_per_channel_scale_refused_where_no_layer_can_take_it():
    net = L.Sequential(L.Conv2d(2, 3, 3), sl.LIF(tau=2.0, reset="zero"), L.AvgPool2d(2),
                       sl.LIF(beta=[0.5, 0.9, 0.7], decay_input=True, num_channels=3, reset="zero"))
    with pytest.raises(NIRExportError, match=r"node '3' \(LIF\): its input scale r \* dt / tau differs between "
                                             r"neurons.*fed by \[\"'2' \(AvgPool2d\)\"\]"):
        to_nir(net, dt=DT, input_shape=(2, 10, 10), compat="snntorch")
    uniform = L.Sequential(L.Conv2d(2, 3, 3), sl.LIF(tau=2.0, reset="zero"), L.AvgPool2d(2),
                           sl.LIF(beta=0.9, decay_input=True, reset="zero"))
    graph = to_nir(uniform, dt=DT, input_shape=(2, 10, 10), compat="snntorch")  # one scale: snnTorch's threshold
    assert np.all(graph.nodes["3"].r == 1)  # division is exact, nothing moves


def test_norse_refuses_sum_pooling_with_padding():
    """Norse 1.1 reads SumPool2d as LPPool2d, which has no padding (it only logs a warning)."""
    net = L.Sequential(L.Conv2d(2, 4, 3), sl.LIF(tau=2.0, reset="zero"), L.SumPool2d(2, 2, 1), L.Flatten(),
                       L.Linear(4 * 5 * 5, 3))
    with pytest.raises(NIRExportError, match=r"node '2' \(SumPool2d\): padding \(1, 1\); Norse 1.1 .*ignores its "
                                             "padding"):
        to_nir(net, dt=DT, input_shape=(2, 10, 10), compat="norse")
    to_nir(net, dt=DT, input_shape=(2, 10, 10), compat="snntorch")  # snnTorch's AvgPool2d counts the padding
    unpadded = L.Sequential(L.Conv2d(2, 4, 3), sl.LIF(tau=2.0, reset="zero"), L.SumPool2d(2), L.Flatten(),
                            L.Linear(4 * 4 * 4, 3))
    assert isinstance(to_nir(unpadded, dt=DT, input_shape=(2, 10, 10), compat="norse").nodes["2"], nir.SumPool2d)
