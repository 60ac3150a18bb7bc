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
