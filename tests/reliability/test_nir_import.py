"""from_nir checks the whole graph before building a module: finite parameters, positive time
constants, shapes along every edge, a runnable structure; each refusal names the node(s)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import nir
import numpy as np
import pytest
import torch
from torch import nn

import spikelab as sl
from spikelab import layers as L
from spikelab.export import NODE_IMPORTERS, NIRImportError, from_nir, to_nir
from tests.nir_numpy import Interpreter

DT = 1e-3


def _chain(in_shape, out_shape, *named) -> nir.NIRGraph:
    """input -> named nodes in order -> output."""
    nodes = {"input": nir.Input(np.array(in_shape)), **dict(named), "output": nir.Output(np.array(out_shape))}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False)


def _affine(n_in: int, n_out: int, seed: int = 0) -> nir.Affine:
    rng = np.random.default_rng(seed)
    return nir.Affine(weight=rng.normal(size=(n_out, n_in)).astype(np.float32), bias=np.zeros(n_out, np.float32))


def _neuron(kind: str, n) -> nir.NIRNode:
    shape = (n,) if isinstance(n, int) else tuple(n)
    full = lambda v: np.full(shape, v, dtype=np.float64)  # noqa: E731
    if kind == "LIF":
        return nir.LIF(tau=full(1e-2), r=full(10.0), v_leak=full(0.0), v_threshold=full(1.0), v_reset=full(0.0))
    if kind == "CubaLIF":
        return nir.CubaLIF(tau_syn=full(5e-3), tau_mem=full(1e-2), r=full(10.0), v_leak=full(0.0),
                           v_threshold=full(1.0), v_reset=full(0.0), w_in=full(5.0))
    if kind == "IF":
        return nir.IF(r=full(1.0), v_threshold=full(1.0), v_reset=full(0.0))
    if kind == "LI":
        return nir.LI(tau=full(1e-2), r=full(10.0), v_leak=full(0.0))
    if kind == "I":
        return nir.I(r=full(1.0))
    if kind == "Delay":
        return nir.Delay(delay=full(2e-3))
    if kind == "Scale":
        return nir.Scale(scale=full(0.5))
    if kind == "Threshold":
        return nir.Threshold(threshold=full(0.5))
    raise AssertionError(kind)


def _spoil(node: nir.NIRNode, field: str, count: int, value: float) -> None:
    a = np.array(getattr(node, field), dtype=np.float64)
    a.flat[:count] = value
    setattr(node, field, a)


# ----- 1. every array finite ------------------------------------------------------------------------

@pytest.mark.parametrize("kind,field,count,value", [
    ("Affine", "weight", 3, np.nan), ("Affine", "bias", 1, np.inf),
    ("LIF", "tau", 2, np.nan), ("LIF", "r", 1, np.nan), ("LIF", "v_threshold", 3, np.nan),
    ("LIF", "v_leak", 1, np.nan), ("LIF", "v_reset", 1, -np.inf),
    ("CubaLIF", "w_in", 1, np.nan), ("CubaLIF", "tau_syn", 1, np.inf), ("IF", "r", 2, np.nan),
    ("IF", "v_threshold", 1, np.nan), ("LI", "r", 1, np.inf), ("I", "r", 1, np.nan),
    ("Delay", "delay", 1, np.nan), ("Scale", "scale", 1, np.inf), ("Threshold", "threshold", 1, np.nan),
])
def test_non_finite_parameter_is_refused_naming_node_and_field(kind, field, count, value):
    fc1, n = _affine(4, 3), (_neuron(kind, 3) if kind != "Affine" else _neuron("IF", 3))
    _spoil(fc1 if kind == "Affine" else n, field, count, value)
    graph = _chain((4,), (3,), ("fc1", fc1), ("n", n))
    name = "fc1" if kind == "Affine" else "n"
    plural = "s" if count > 1 else ""
    with pytest.raises(NIRImportError, match=rf"NIR node '{name}' \({kind}\): {field} has {count} non-finite "
                                             rf"value{plural} \(NaN/inf\); expected finite numbers"):
        from_nir(graph, dt=DT)


def test_non_finite_conv_weight_and_torch_tensor_fields_are_refused():
    w = np.random.default_rng(0).normal(size=(4, 2, 3, 3)).astype(np.float32)
    w[1, 0, 0, 0] = np.nan
    conv = nir.Conv2d(input_shape=(6, 6), weight=w, stride=1, padding=0, dilation=1, groups=1, bias=np.zeros(4))
    graph = _chain((2, 6, 6), (4, 4, 4), ("conv", conv))
    with pytest.raises(NIRImportError, match=r"NIR node 'conv' \(Conv2d\): weight has 1 non-finite value "):
        from_nir(graph, dt=DT)
    fc = _affine(4, 3)
    fc.weight = torch.from_numpy(fc.weight).fill_(float("nan"))  # some exporters store tensors
    with pytest.raises(NIRImportError, match=r"'fc' \(Affine\): weight has 12 non-finite values"):
        from_nir(_chain((4,), (3,), ("fc", fc)), dt=DT)


def test_non_finite_value_in_a_subgraph_names_node_and_subgraph():
    model = L.Sequential(L.Linear(6, 8), L.Recurrent(sl.LIF(beta=0.9, reset="zero"), nn.Linear(8, 8)))
    graph = to_nir(model, dt=DT, input_shape=(6,))
    _spoil(graph.nodes["1"].nodes["neuron"], "v_threshold", 1, np.nan)
    with pytest.raises(NIRImportError, match=r"NIR node 'neuron' \(LIF\) in subgraph '1': v_threshold has 1 "):
        from_nir(graph, dt=DT)


# ----- 3. time constants, thresholds ----------------------------------------------------------------

@pytest.mark.parametrize("kind,field,value", [
    ("LIF", "tau", 0.0), ("LIF", "tau", -1e-2), ("CubaLIF", "tau_mem", 0.0), ("CubaLIF", "tau_syn", -5e-3),
    ("LI", "tau", 0.0),
])
def test_zero_or_negative_time_constant_is_refused(kind, field, value):
    n = _neuron(kind, 3)
    _spoil(n, field, 1, value)
    with pytest.raises(NIRImportError, match=rf"NIR node 'n' \({kind}\): {field} has 1 value\(s\) <= 0 .*"
                                             "expected positive time constants"):
        from_nir(_chain((4,), (3,), ("fc", _affine(4, 3)), ("n", n)), dt=DT)


def test_negative_delay_is_refused_with_its_reason():
    d = _neuron("Delay", 3)
    _spoil(d, "delay", 1, -1e-3)
    with pytest.raises(NIRImportError, match=r"NIR node 'd' \(Delay\): delay has negative values"):
        from_nir(_chain((3,), (3,), ("d", d)), dt=DT)


def test_negative_r_zero_threshold_and_scalar_parameters_are_accepted():
    lif = _neuron("LIF", 3)
    lif.v_threshold = np.zeros(3)
    lif.r = np.full(3, -10.0)
    scalar_if = nir.IF(r=np.array(1.0), v_threshold=np.array(0.5), v_reset=np.array(0.0))  # 0-d: one value for all
    net = from_nir(_chain((4,), (3,), ("fc", _affine(4, 3)), ("lif", lif), ("if", scalar_if)), dt=DT)
    assert net(torch.rand(5, 2, 4)).shape == (5, 2, 3)


def test_negative_neuron_threshold_is_refused_naming_the_node():
    """Legal NIR, but spikelab's neurons fire at thresholds > 0: the refusal says which node."""
    lif = _neuron("LIF", 3)
    lif.v_threshold = np.array([1.0, -0.5, 1.0])
    with pytest.raises(NIRImportError, match=r"node 'lif': v_threshold has 1 negative value\(s\)"):
        from_nir(_chain((4,), (3,), ("fc", _affine(4, 3)), ("lif", lif)), dt=DT)


# ----- 2. shapes along every edge -----------------------------------------------------------------------

def test_affine_feeding_a_smaller_neuron_layer_names_both_nodes_and_shapes():
    graph = _chain((4,), (50,), ("fc1", _affine(4, 100)), ("lif1", _neuron("LIF", 50)))
    with pytest.raises(NIRImportError, match=r"NIR edge 'fc1' -> 'lif1': 'fc1' \(Affine\) gives shape \(100,\) "
                                             r"but 'lif1' \(LIF\) takes \(50,\)"):
        from_nir(graph, dt=DT)


def test_conv_channels_not_matching_the_previous_output_are_refused():
    rng = np.random.default_rng(1)
    conv1 = nir.Conv2d(input_shape=(8, 8), weight=rng.normal(size=(4, 2, 3, 3)), stride=1, padding=0, dilation=1,
                       groups=1, bias=np.zeros(4))
    conv2 = nir.Conv2d(input_shape=None, weight=rng.normal(size=(5, 3, 3, 3)), stride=1, padding=0, dilation=1,
                       groups=1, bias=np.zeros(5))
    graph = _chain((2, 8, 8), (5, 4, 4), ("conv1", conv1), ("conv2", conv2))
    with pytest.raises(NIRImportError, match=r"NIR edge 'conv1' -> 'conv2': 'conv1' \(Conv2d\) gives shape "
                                             r"\(4, 6, 6\) but 'conv2' \(Conv2d\) takes \(3, \?, \?\)"):
        from_nir(graph, dt=DT)


def test_input_type_not_matching_the_first_layer_is_refused():
    with pytest.raises(NIRImportError, match=r"NIR edge 'input' -> 'fc': 'input' \(Input\) gives shape \(5,\) "
                                             r"but 'fc' \(Affine\) takes \(\.\.\., 4\)"):
        from_nir(_chain((5,), (3,), ("fc", _affine(4, 3))), dt=DT)


def test_summed_inputs_of_different_shapes_are_refused():
    n = nir.IF(r=np.array(1.0), v_threshold=np.array(1.0), v_reset=np.array(0.0))  # takes any shape
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([4])), "a": _affine(4, 3), "b": _affine(4, 5),
                                "n": n, "output": nir.Output(np.array([3]))},
                         edges=[("input", "a"), ("input", "b"), ("a", "n"), ("b", "n"), ("n", "output")],
                         type_check=False)
    with pytest.raises(NIRImportError, match=r"NIR node 'n' \(IF\): the inputs it sums differ in shape: 'a' gives "
                                             r"\(3,\), 'b' gives \(5,\)"):
        from_nir(graph, dt=DT)


def test_shape_mismatch_inside_a_subgraph_names_the_subgraph():
    inner = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "lif": _neuron("LIF", 3), "rec": _affine(4, 3),
                                "output": nir.Output(np.array([3]))},
                         edges=[("input", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")],
                         type_check=False)
    graph = _chain((4,), (3,), ("fc", _affine(4, 3)), ("sub", inner))
    with pytest.raises(NIRImportError, match=r"NIR edge 'lif' -> 'rec' in subgraph 'sub': 'lif' \(LIF\) gives shape "
                                             r"\(3,\) but 'rec' \(Affine\) takes \(\.\.\., 4\)"):
        from_nir(graph, dt=DT)


def test_kernel_larger_than_its_input_is_refused():
    conv = nir.Conv2d(input_shape=None, weight=np.ones((2, 1, 5, 5)), stride=1, padding=0, dilation=1, groups=1,
                      bias=np.zeros(2))
    with pytest.raises(NIRImportError, match=r"NIR node 'conv' \(Conv2d\): its input \(1, 3, 3\) is smaller than the "
                                             "kernel"):
        from_nir(_chain((1, 3, 3), (2, 1, 1), ("conv", conv)), dt=DT)
    pool = nir.AvgPool2d(kernel_size=np.array([4, 4]), stride=np.array([4, 4]), padding=np.array([0, 0]))
    with pytest.raises(NIRImportError, match=r"NIR node 'pool' \(AvgPool2d\): its input \(1, 3, 3\) is smaller"):
        from_nir(_chain((1, 3, 3), (1, 1, 1), ("pool", pool)), dt=DT)


def test_parameters_of_one_node_with_different_shapes_are_refused():
    lif = _neuron("LIF", 3)
    lif.r = np.ones(5)  # NIR checks this at construction only
    with pytest.raises(NIRImportError, match=r"NIR node 'lif' \(LIF\): parameter shapes differ \(tau \(3,\), r \(5,\)"):
        from_nir(_chain((3,), (3,), ("lif", lif)), dt=DT)


@pytest.mark.parametrize("field,value,needle", [
    ("stride", (0, 1), r"stride = \(0, 1\); expected one or 2 whole numbers >= 1"),
    ("padding", "full", r"padding 'full'"),
    ("groups", 3, r"4 output channels do not split into groups = 3"),
])
def test_malformed_convolution_is_refused_naming_it(field, value, needle):
    conv = nir.Conv2d(input_shape=None, weight=np.ones((4, 2, 3, 3)), stride=1, padding=0, dilation=1, groups=1,
                      bias=np.zeros(4))
    setattr(conv, field, value)
    with pytest.raises(NIRImportError, match=r"NIR node 'conv' \(Conv2d\): " + needle):
        from_nir(_chain((2, 6, 6), (4, 4, 4), ("conv", conv)), dt=DT)


# ----- 4. Flatten ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("start,end", [(5, -1), (0, 3), (-4, -1), (2, 0)])
def test_flatten_with_dimensions_outside_its_input_is_refused(start, end):
    flat = nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0, end_dim=-1)
    flat.start_dim, flat.end_dim = start, end  # NIR itself accepts some of these (5 -> a dimension of 1)
    graph = _chain((2, 3, 3), (18,), ("flat", flat))
    with pytest.raises(NIRImportError, match=rf"NIR node 'flat' \(Flatten\): start_dim = {start}, end_dim = {end} "
                                             r"do not fit its input shape \(2, 3, 3\)"):
        from_nir(graph, dt=DT)


def test_flatten_without_a_type_is_checked_against_the_shape_it_receives():
    conv = nir.Conv2d(input_shape=None, weight=np.ones((4, 2, 3, 3)), stride=1, padding=0, dilation=1, groups=1,
                      bias=np.zeros(4))
    flat = nir.Flatten(input_type=None, start_dim=3, end_dim=-1)
    graph = _chain((2, 6, 6), (64,), ("conv", conv), ("flat", flat))
    with pytest.raises(NIRImportError, match=r"'flat' \(Flatten\): start_dim = 3, end_dim = -1 do not fit its input "
                                             r"shape \(4, 4, 4\)"):
        from_nir(graph, dt=DT)


def test_flatten_whose_size_differs_from_the_next_layer_is_refused():
    flat = nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0, end_dim=-1)
    graph = _chain((2, 3, 3), (4,), ("flat", flat), ("fc", _affine(20, 4)))
    with pytest.raises(NIRImportError, match=r"NIR edge 'flat' -> 'fc': 'flat' \(Flatten\) gives shape \(18,\) but "
                                             r"'fc' \(Affine\) takes \(\.\.\., 20\)"):
        from_nir(graph, dt=DT)


# ----- 5. structure, checked before any module is built -------------------------------------------------

@dataclass(eq=False)
class Gain(nir.NIRNode):
    """A node type of a user's own, imported through register_node."""

    gain: np.ndarray

    def __post_init__(self):
        self.input_type = {"input": np.array(self.gain.shape)}
        self.output_type = {"output": np.array(self.gain.shape)}


@pytest.fixture
def built(monkeypatch):
    """Names of the Gain nodes whose module was built."""
    names: list[str] = []

    def importer(name, node, dt):
        names.append(name)
        return L.Scale(torch.as_tensor(np.asarray(node.gain, dtype=np.float32)))

    monkeypatch.setitem(NODE_IMPORTERS, Gain, importer)
    return names


def _structure(fault: str) -> nir.NIRGraph:
    nodes = {"input": nir.Input(np.array([3])), "g": Gain(np.ones(3)), "lif": _neuron("LIF", 3),
             "output": nir.Output(np.array([3]))}
    edges = [("input", "g"), ("g", "lif"), ("lif", "output")]
    if fault == "unknown-node":
        edges.append(("lif", "nowhere"))
    elif fault == "no-input":
        del nodes["input"]
        edges = edges[1:]
    elif fault == "no-output":
        del nodes["output"]
        edges = edges[:-1]
    elif fault == "unreachable":
        nodes["island"] = _neuron("IF", 3)
        edges.append(("island", "output"))
    elif fault == "unsupported":
        nodes["odd"] = nir.CubaLI(tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3), v_leak=np.zeros(3))
        edges.append(("lif", "odd"))
    elif fault == "nan":
        nodes["lif"].v_threshold = np.array([1.0, np.nan, 1.0])
    elif fault == "shape":
        nodes["lif"] = _neuron("LIF", 5)
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


@pytest.mark.parametrize("fault,needle", [
    ("unknown-node", r"edge \('lif', 'nowhere'\) names the unknown node 'nowhere'"),
    ("no-input", r"needs Input and Output nodes; it has inputs \[\]"),
    ("no-output", r"needs Input and Output nodes; it has inputs \['input'\], outputs \[\]"),
    ("unreachable", r"NIR nodes \['island'\] cannot be reached from the graph's inputs"),
    ("unsupported", r"node 'odd': NIR node type CubaLI is not supported"),
    ("nan", r"NIR node 'lif' \(LIF\): v_threshold has 1 non-finite value"),
    ("shape", r"NIR edge 'g' -> 'lif': 'g' \(Gain\) gives shape \(3,\) but 'lif' \(LIF\) takes \(5,\)"),
])
def test_graph_faults_are_refused_before_any_module_is_built(built, fault, needle):
    with pytest.raises(NIRImportError, match=needle):
        from_nir(_structure(fault), dt=DT)
    assert built == []
    from_nir(_structure("none"), dt=DT)  # the same graph without the fault imports
    assert built == ["g"]


def test_registered_node_types_are_checked_too(built):
    graph = _structure("none")
    graph.nodes["g"].gain = np.array([1.0, np.inf, 1.0])
    with pytest.raises(NIRImportError, match=r"NIR node 'g' \(Gain\): gain has 1 non-finite value"):
        from_nir(graph, dt=DT)
    graph = _chain((4,), (3,), ("fc", _affine(4, 5)), ("g", Gain(np.ones(3))))
    with pytest.raises(NIRImportError, match=r"'fc' \(Affine\) gives shape \(5,\) but 'g' \(Gain\) takes \(3,\)"):
        from_nir(graph, dt=DT)


def test_cycle_without_a_neuron_or_delay_is_refused():
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "a": _affine(3, 3, 1), "b": _affine(3, 3, 2),
                                "lif": _neuron("LIF", 3), "output": nir.Output(np.array([3]))},
                         edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "lif"), ("lif", "output")],
                         type_check=False)
    with pytest.raises(NIRImportError, match=r"NIR nodes \['a', 'b'\] form a cycle with no neuron, integrator or "
                                             "delay"):
        from_nir(graph, dt=DT)
    graph.edges = [("input", "a"), ("a", "lif"), ("lif", "b"), ("b", "a"), ("lif", "output")]  # through the neuron
    assert from_nir(graph, dt=DT).recurrent


def test_edge_into_the_input_node_is_refused():
    graph = _chain((3,), (3,), ("lif", _neuron("LIF", 3)))
    graph.edges.append(("lif", "input"))
    with pytest.raises(NIRImportError, match=r"edge \('lif', 'input'\) leads into the Input node 'input'"):
        from_nir(graph, dt=DT)


# ----- valid graphs still import ----------------------------------------------------------------------

def _recurrent(n: int, seed: int, inner=None) -> nir.NIRGraph:
    nodes = {"input": nir.Input(np.array([n])), "lif": _neuron("LIF", n), "rec": _affine(n, n, seed),
             "output": nir.Output(np.array([n]))}
    edges = [("input", "lif"), ("lif", "rec"), ("rec", "lif")]
    if inner is None:
        edges.append(("lif", "output"))
    else:
        nodes["deeper"] = inner
        edges += [("lif", "deeper"), ("deeper", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


@pytest.mark.parametrize("depth", [1, 2])
def test_nested_subgraphs_import_and_run_like_the_numpy_interpreter(depth):
    sub = _recurrent(3, 3) if depth == 1 else _recurrent(3, 3, inner=_recurrent(3, 4))
    graph = _chain((4,), (3,), ("fc", _affine(4, 3)), ("sub", sub))
    for node in graph.nodes.values():  # the interpreter multiplies by the raw weights
        if isinstance(node, nir.Affine):
            node.weight = node.weight * 0.5 + 0.3
    x = torch.rand(20, 2, 4) * 2
    with torch.no_grad():
        ours = from_nir(graph, dt=DT)(x).numpy()
    theirs = Interpreter(graph, DT).run(x.numpy())
    assert theirs.sum() > 0
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_grouped_conv_pool_flatten_round_trip_imports_exactly():
    torch.manual_seed(0)
    model = L.Sequential(L.Conv2d(4, 6, 3, padding=1, groups=2), sl.IF(reset="zero", threshold=0.5),
                         L.AvgPool2d(2), L.Flatten(), L.Linear(6 * 4 * 4, 3), sl.IF(reset="zero")).eval()
    x = (torch.rand(6, 2, 4, 8, 8) < 0.4).float()
    back = from_nir(to_nir(model, dt=DT, sample_input=x), dt=DT)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_types_with_a_batch_and_parameters_without_the_channel_still_import():
    """Shapes some exporters write: a batch in the Input/Output types; neuron parameters without the
    channel dimension after a convolution (they broadcast); convolutions and Flatten without types."""
    rng = np.random.default_rng(5)
    conv = nir.Conv2d(input_shape=None, weight=rng.normal(size=(4, 2, 3, 3)), stride=1, padding=0, dilation=1,
                      groups=1, bias=np.zeros(4))
    neuron = nir.IF(r=np.ones((4, 4)), v_threshold=np.ones((4, 4)), v_reset=np.zeros((4, 4)))
    flat = nir.Flatten(input_type=None, start_dim=0, end_dim=-1)
    graph = _chain((1, 2, 6, 6), (1, 3), ("conv", conv), ("if", neuron), ("flat", flat), ("fc", _affine(64, 3)))
    assert from_nir(graph, dt=DT)(torch.rand(5, 2, 2, 6, 6)).shape == (5, 2, 3)


# ----- 6. per-neuron parameter shapes: checked exactly as the importer reads them ---------------------
# A single value; a 1-D array of C values as one per channel (dimension 0 of the input, the form some
# exporters write after a convolution); any other shape by NumPy's broadcasting against the input.
# Neuron decays and thresholds must not vary within a channel (spikelab's neurons take them per
# layer or per channel); LI, I, Scale, Threshold and Delay take any per-neuron values.

def _conv2d(c_in: int, c_out: int, hw: tuple[int, int], seed: int = 0) -> nir.Conv2d:
    rng = np.random.default_rng(seed)
    return nir.Conv2d(input_shape=hw, weight=rng.normal(size=(c_out, c_in, 3, 3)) * 0.4 + 0.15, stride=1,
                      padding=0, dilation=1, groups=1, bias=rng.normal(size=c_out) * 0.1)


_PER_CHANNEL = {  # one value per channel for 3 channels, for each neuron kind
    "LIF": dict(tau=[5e-3, 1e-2, 2e-2], r=[8.0, 10.0, 14.0], v_threshold=[0.6, 1.0, 1.4]),
    "IF": dict(r=[0.5, 1.0, 1.5], v_threshold=[0.6, 1.0, 1.4]),
    # CurrentLIF feeds the current to the membrane with one factor: r * dt / tau_mem the same everywhere
    "CubaLIF": dict(tau_syn=[4e-3, 5e-3, 8e-3], tau_mem=[5e-3, 1e-2, 2e-2], r=[5.0, 10.0, 20.0],
                    w_in=[4.0, 5.0, 6.0], v_threshold=[0.6, 1.0, 1.4]),
}


def _with(node: nir.NIRNode, arrays: dict) -> nir.NIRNode:
    for field, value in arrays.items():
        setattr(node, field, np.asarray(value, dtype=np.float64))
    return node


def _full(node: nir.NIRNode, shape: tuple[int, ...]) -> nir.NIRNode:
    """A copy of ``node`` with every 1-D per-channel parameter written out per neuron, as the numpy
    interpreter (NIR's broadcasting) needs it."""
    fields = {f: np.asarray(getattr(node, f)) for f in ("tau", "tau_syn", "tau_mem", "r", "w_in", "v_leak",
                                                        "v_threshold", "v_reset", "scale", "threshold", "delay")
              if getattr(node, f, None) is not None}
    out = {f: np.broadcast_to(a.reshape(a.shape[0], *([1] * (len(shape) - 1))) if a.ndim == 1 else a, shape).copy()
           for f, a in fields.items()}
    return _with(copy.copy(node), out)


def _runs_like_the_interpreter(graph: nir.NIRGraph, x: torch.Tensor, reference: nir.NIRGraph = None) -> np.ndarray:
    with torch.no_grad():
        ours = from_nir(graph, dt=DT)(x).numpy()
    theirs = Interpreter(reference if reference is not None else graph, DT).run(x.numpy())
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    return ours


@pytest.mark.parametrize("kind", ["LIF", "IF", "CubaLIF"])
@pytest.mark.parametrize("width", [8, 5], ids=["W!=C", "W==C"])
def test_per_channel_parameters_after_a_conv_import_as_one_value_per_channel(kind, width):
    """(C,) parameters after a conv of output (C, H, W) are one value per channel, also when W == C
    (where NumPy would broadcast them along W): the checker reads them as the importer builds them."""
    conv = _conv2d(2, 3, (7, width))
    out = (3, 5, width - 2)
    neuron = _with(_neuron(kind, ()), _PER_CHANNEL[kind])
    graph = _chain((2, 7, width), out, ("conv", conv), ("n", neuron))
    reference = _chain((2, 7, width), out, ("conv", conv), ("n", _full(neuron, out)))
    x = torch.rand(15, 2, 2, 7, width) * 2
    spikes = _runs_like_the_interpreter(graph, x, reference)
    assert spikes.sum() > 0 and 0 < spikes.mean() < 1
    assert np.asarray(graph.nodes["n"].v_threshold).shape == (3,)  # the caller's graph is left as it was


@pytest.mark.parametrize("kind", ["IF", "LIF"])
@pytest.mark.parametrize("form", ["(H,W)", "(C,H,W)", "batched input (1,C,H,W)"])
def test_sinabs_style_conv_export_with_per_neuron_arrays_imports_and_runs(kind, form):
    """sinabs writes IAF/LIF parameters after a Conv2d as (H, W) arrays (one value for the layer) or
    (C, H, W) arrays (one value per channel); with NIR's broadcasting both mean one neuron module."""
    conv = _conv2d(2, 3, (7, 8), seed=2)
    out = (3, 5, 6)
    if form == "(H,W)":
        neuron = _neuron(kind, (5, 6))
    else:
        neuron = _full(_with(_neuron(kind, ()), _PER_CHANNEL[kind]), out)
    in_shape = (1, 2, 7, 8) if form.startswith("batched") else (2, 7, 8)
    flat = nir.Flatten(input_type=None, start_dim=0, end_dim=-1)
    graph = _chain(in_shape, (4,), ("conv", conv), ("n", neuron), ("flat", flat), ("fc", _affine(90, 4, 3)),
                   ("if", _neuron("IF", 4)))
    net = from_nir(graph, dt=DT)
    assert net(torch.rand(3, 2, 2, 7, 8)).shape == (3, 2, 4)
    graph = _chain(in_shape, out, ("conv", conv), ("n", neuron))
    spikes = _runs_like_the_interpreter(graph, torch.rand(15, 2, 2, 7, 8) * 2)
    assert spikes.sum() > 0


@pytest.mark.parametrize("kind,field,spoilt", [
    ("LIF", "tau", lambda a: a * np.linspace(1, 2, a.shape[-2])[:, None]),  # varies by row
    ("IF", "v_threshold", lambda a: a * np.linspace(1, 2, a.shape[-2])[:, None]),
    ("CubaLIF", "tau_mem", lambda a: a * np.linspace(1, 2, a.shape[-1])),  # varies by column
])
@pytest.mark.parametrize("out", [(3, 5, 6), (3, 3, 6)], ids=["H!=C", "H==C"])
def test_neuron_parameters_varying_within_a_channel_are_refused(kind, field, spoilt, out):
    """(H, W) parameters that vary by row used to pass the check and be read as H channels (failing
    when run, or, with H == C, running per channel); now the refusal names everything."""
    conv = _conv2d(2, 3, (out[1] + 2, 8))
    neuron = _neuron(kind, out[1:])
    setattr(neuron, field, spoilt(np.asarray(getattr(neuron, field))))
    if kind == "CubaLIF":
        neuron.r = neuron.r * neuron.tau_mem / 1e-2  # keep r * dt / tau_mem one value
    graph = _chain((2, out[1] + 2, 8), out, ("conv", conv), ("n", neuron))
    module = {"LIF": "LIF", "IF": "IF", "CubaLIF": "CurrentLIF"}[kind]
    h, w = out[1:]
    with pytest.raises(NIRImportError, match=(
            rf"NIR node 'n' \({kind}\): {field} of shape \({h}, {w}\) varies within a channel of its input of shape "
            rf"\(3, {h}, {w}\) \(dimension 0 is the channel\); spikelab's {module} takes {field} as one value per "
            rf"layer or per channel; accepted: a single value, \(3,\) \(one per channel, dimension 0\) or a shape "
            rf"of 2 to 3 dimensions that broadcasts to \(3, {h}, {w}\) by NumPy's rules, such as \({h}, {w}\), "
            r"\(3, 1, 1\), \(3, " + rf"{h}, {w}\), with values equal within each channel")):
        from_nir(graph, dt=DT)
    per_neuron = _neuron(kind, out)  # (C, H, W) varying within a channel: refused too
    getattr(per_neuron, field).flat[1] *= 1.5
    with pytest.raises(NIRImportError, match=rf"'n' \({kind}\): {field} of shape \(3, {h}, {w}\) varies within"):
        from_nir(_chain((2, out[1] + 2, 8), out, ("conv", conv), ("n", per_neuron)), dt=DT)


def test_per_neuron_layers_take_any_broadcasting_shape_after_a_conv():
    """LI, Scale, Threshold and Delay hold one value per neuron: (H, W) varying by row and (C,) per
    channel both import and run as NIR means them."""
    conv = _conv2d(2, 3, (7, 8), seed=4)
    out = (3, 5, 6)
    rows = np.linspace(1, 2, 5)[:, None] * np.ones((5, 6))
    scale = nir.Scale(scale=np.array([0.5, 1.0, 2.0]))
    delay = nir.Delay(delay=np.array([0.0, 1e-3, 3e-3]))
    li = nir.LI(tau=1e-2 * rows, r=10.0 * rows[::-1], v_leak=np.zeros((5, 6)))
    graph = _chain((2, 7, 8), out, ("conv", conv), ("scale", scale), ("delay", delay), ("li", li))
    reference = _chain((2, 7, 8), out, ("conv", conv), ("scale", _full(scale, out)), ("delay", _full(delay, out)),
                       ("li", li))
    _runs_like_the_interpreter(graph, torch.rand(12, 2, 2, 7, 8), reference)
    threshold = nir.Threshold(threshold=0.5 * rows)
    graph = _chain((2, 7, 8), out, ("conv", conv), ("threshold", threshold))
    assert _runs_like_the_interpreter(graph, torch.rand(6, 2, 2, 7, 8)).sum() > 0


@pytest.mark.parametrize("kind,shape", [("LIF", (6,)), ("IF", (4, 5, 6)), ("LI", (2, 6)), ("Scale", (5, 5))])
def test_parameter_shapes_the_importer_cannot_read_are_refused_naming_them(kind, shape):
    """(W,) after (C, H, W) with W != C: 1-D is one value per channel, so it does not fit (NumPy
    would broadcast it along W, spikelab's neurons cannot); other shapes that do not broadcast."""
    conv = _conv2d(2, 3, (7, 8))
    node = _neuron(kind, shape)
    field = {"LIF": "tau", "IF": "r", "LI": "tau", "Scale": "scale"}[kind]
    graph = _chain((2, 7, 8), (3, 5, 6), ("conv", conv), ("n", node))
    with pytest.raises(NIRImportError, match=(
            rf"NIR edge 'conv' -> 'n': 'conv' \(Conv2d\) gives shape \(3, 5, 6\) but 'n' \({kind}\) takes .*: its "
            rf"{field} has shape {re.escape(str(shape))}; for an input of shape \(3, 5, 6\) it accepts "
            r"a single value, \(3,\) \(one per channel, dimension 0\) or a shape of 2 to 3 dimensions that "
            r"broadcasts to \(3, 5, 6\) by NumPy's rules, such as \(5, 6\), \(3, 1, 1\), \(3, 5, 6\)")):
        from_nir(graph, dt=DT)


def test_per_neuron_parameters_after_a_batched_affine_input():
    """An Input type carrying a batch before an affine map (snnTorch, sinabs): the neurons' 1-D
    parameters are one per neuron of the affine output, whatever the batch."""
    for in_shape in [(8, 4), (3, 4), (1, 4)]:
        lif = _with(_neuron("LIF", ()), dict(tau=np.linspace(5e-3, 2e-2, 8), v_threshold=np.linspace(0.5, 1.5, 8),
                                             r=np.linspace(5, 15, 8)))
        fc = _affine(4, 8, 7)
        fc.weight = np.abs(fc.weight)
        graph = _chain(in_shape, (8,), ("fc", fc), ("lif", lif))
        assert _runs_like_the_interpreter(graph, torch.rand(12, 2, 4) * 2).sum() > 0


@pytest.mark.parametrize("stride", [2, (1, 2)])
def test_same_padding_with_a_stride_is_refused_for_the_stride(stride):
    conv = nir.Conv2d(input_shape=None, weight=np.ones((4, 2, 3, 3)), stride=stride, padding="same", dilation=1,
                      groups=1, bias=np.zeros(4))
    stride2 = (stride, stride) if isinstance(stride, int) else stride
    graph = _chain((2, 8, 8), (4, 4, 4), ("conv", conv), ("if", _neuron("IF", (4, 4, 4))))
    with pytest.raises(NIRImportError, match=rf"NIR node 'conv' \(Conv2d\): stride {re.escape(str(stride2))} is not "
                                             r"supported with padding='same' \(torch pads 'same' only at stride 1\)"):
        from_nir(graph, dt=DT)
    conv.stride = (1, 1)
    assert from_nir(_chain((2, 8, 8), (4, 8, 8), ("conv", conv)), dt=DT)(torch.rand(2, 1, 2, 8, 8)).shape == \
        (2, 1, 4, 8, 8)
