"""Surrogates: derivative is the primitive's derivative; lookup by name or object; documented peaks."""

import math

import pytest
import torch

from spikelab import surrogate as sg
from tests.needs import peer

ALL = [sg.ATan, sg.Sigmoid, sg.FastSigmoid, sg.Triangle, sg.Rectangle, sg.Erf, sg.StraightThrough]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("alpha", [0.5, 2.0, 7.0])
def test_derivative_is_derivative_of_primitive(cls, alpha):
    s = cls(alpha)
    # avoid the kinks of piecewise shapes
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    kinks = torch.tensor([0.0, 1 / alpha, -1 / alpha, 0.5 / alpha, -0.5 / alpha], dtype=torch.float64)
    x = x[(x.unsqueeze(1) - kinks).abs().min(1).values > 1e-3].requires_grad_(True)
    (grad,) = torch.autograd.grad(s.primitive(x).sum(), x)
    torch.testing.assert_close(grad, s.derivative(x.detach()), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cls, peak", [
    (sg.ATan, lambda a: a / 2), (sg.Sigmoid, lambda a: a / 4), (sg.FastSigmoid, lambda a: 1.0),
    (sg.Triangle, lambda a: a), (sg.Rectangle, lambda a: a), (sg.Erf, lambda a: a / math.sqrt(math.pi)),
])
def test_documented_peak_and_unit_area(cls, peak):
    s = cls(3.0)
    assert s.derivative(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(peak(3.0))
    if cls is not sg.FastSigmoid:
        x = torch.linspace(-200, 200, 2_000_001, dtype=torch.float64)
        area = torch.trapezoid(s.derivative(x), x).item()
        assert area == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("cls", ALL)
def test_forward_is_heaviside_and_backward_uses_derivative(cls):
    s = cls()
    x = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0], requires_grad=True)
    y = s(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    torch.testing.assert_close(x.grad, s.derivative(x.detach()))


def test_lookup_by_name_alias_and_object():
    assert sg.get("atan") == sg.ATan()
    assert sg.get("ATan", 3.0).alpha == 3.0
    assert isinstance(sg.get("superspike"), sg.FastSigmoid)
    assert isinstance(sg.get("ste"), sg.StraightThrough)
    obj = sg.Erf(1.5)
    assert sg.get(obj) is obj
    assert set(sg.available()) == {"atan", "sigmoid", "fast_sigmoid", "triangle", "rectangle", "erf",
                                   "straight_through"}


def test_snntorch_compatible_slopes():
    snn_sg = peer("snntorch.surrogate")
    x = torch.linspace(-2, 2, 101)
    for ours, theirs in [(sg.ATan(2.0), snn_sg.atan(alpha=2.0)), (sg.FastSigmoid(25.0), snn_sg.fast_sigmoid(25))]:
        a = x.clone().requires_grad_(True)
        b = x.clone().requires_grad_(True)
        ours(a).sum().backward()
        theirs(b).sum().backward()
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("bad, err", [("nope", ValueError), (3, TypeError), (None, TypeError)])
def test_bad_surrogate_names(bad, err):
    with pytest.raises(err, match="surrogate"):
        sg.get(bad)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        sg.ATan(alpha)


def test_alpha_given_twice():
    with pytest.raises(ValueError, match="alpha"):
        sg.get(sg.ATan(), 2.0)


@pytest.mark.parametrize("bad", ["2", True, [1.0]])
def test_alpha_of_the_wrong_type(bad):
    with pytest.raises(TypeError, match="alpha must be a number"):
        sg.ATan(bad)


def test_equality_needs_same_class_alpha_and_forward():
    assert sg.ATan(2.0) == sg.ATan(2.0) and hash(sg.ATan(2.0)) == hash(sg.ATan(2.0))
    assert sg.ATan(2.0) != sg.Erf(2.0)
    assert sg.ATan(2.0) != sg.ATan(3.0)
    assert sg.ATan(2.0) != sg.ATan(2.0, smooth_forward=True)


def _documented_defaults() -> dict[str, float]:
    """``name -> alpha`` from the table in docs/surrogates.md (``| `atan` (default, alpha 2) |``)."""
    import re
    from pathlib import Path

    table = (Path(__file__).resolve().parents[1] / "docs" / "surrogates.md").read_text()
    return {m[1]: float(m[2]) for m in re.finditer(r"^\| `(\w+)`[^|]*?alpha ([\d.]+)\)", table, re.M)}


def test_default_alphas_are_the_documented_ones():
    documented = _documented_defaults()
    assert len(documented) == 6, documented
    for name, alpha in documented.items():
        assert sg.get(name).alpha == alpha, name
    # a Surrogate of the user's own without a default gets alpha 1
    assert type("Mine", (sg.Surrogate,), {"name": "mine"})().alpha == 1.0


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("alpha", [0.5, 3.0])
def test_primitive_is_a_step_centred_at_zero(cls, alpha):
    s = cls(alpha)
    x = torch.tensor([-1e4, 0.0, 1e4], dtype=torch.float64)
    low, mid, high = s.primitive(x).tolist()
    assert mid == pytest.approx(0.5)
    if cls is sg.StraightThrough:  # the identity shifted by 1/2: slope 1 everywhere
        assert (low, high) == (0.5 - 1e4, 0.5 + 1e4)
    elif cls is sg.FastSigmoid:  # x / (1 + alpha |x|) + 1/2 tends to 1/2 +- 1/alpha
        assert (low, high) == pytest.approx((0.5 - 1 / alpha, 0.5 + 1 / alpha), abs=1e-3)
    else:
        assert (low, high) == pytest.approx((0.0, 1.0), abs=1e-3)


def test_rectangle_window_is_open_at_its_edges_in_every_backend():
    # |x| < 1/(2 alpha): the edges themselves get no gradient, in the reference and the kernels alike
    s = sg.Rectangle(2.0)
    edge = torch.tensor([-0.25, 0.25, -0.2499, 0.2499], dtype=torch.float64)
    assert s.derivative(edge).tolist() == [0.0, 0.0, 2.0, 2.0]


class _Cubic(sg.Surrogate):
    """A surrogate of the user's own: only the reference can call its derivative."""

    name = "cubic"

    def primitive(self, x):
        return (x.clamp(-1, 1) ** 3 + 1) / 2

    def derivative(self, x):
        return 1.5 * x.clamp(-1, 1) ** 2 * (x.abs() <= 1)


@pytest.mark.parametrize("base", [sg.Surrogate, sg.ATan])
def test_a_surrogate_of_your_own_never_runs_as_a_built_in_in_the_kernels(base):
    cls = type("Mine", (base,), {"name": "mine", "derivative": _Cubic.derivative, "primitive": _Cubic.primitive})
    import spikelab as sl

    x = (torch.rand(6, 2, 5) * 1.5).requires_grad_(True)
    ref = x.detach().clone().requires_grad_(True)
    sl.LIF(surrogate=cls(), backend="auto")(x).sum().backward()  # auto: the reference, with its derivative
    sl.LIF(surrogate=cls(), backend="torch")(ref).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)
    assert not cls().in_kernels and sg.ATan().in_kernels
    with pytest.raises(sl.BackendUnavailableError, match="Surrogate class of your own"):
        sl.LIF(surrogate=cls(), backend="numba")(x)
