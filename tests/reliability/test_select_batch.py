"""``select_batch`` keeps exactly the samples asked for, or refuses: a wrong mask would mix the
states of different samples (Dynamic Confidence and streaming shrink batches with it)."""

from __future__ import annotations

import pytest
import torch

import spikelab as sl
from spikelab import layers as L


def _model() -> torch.nn.Module:
    return L.Sequential(L.Linear(5, 6), sl.LIF(tau=2.0), L.Dropout(0.3), L.Linear(6, 3), sl.LIF(tau=3.0))


def _streamed(model, x):
    sl.reset(model)
    model.train()  # dropout masks are part of the state
    for t in range(x.shape[0]):
        model.step(x[t])


def _states(model) -> list[torch.Tensor]:
    return [t for m in model.modules() if isinstance(m, sl.neurons.base.BaseNeuron) for t in m.state.values()]


@pytest.mark.parametrize("index, message", [
    (torch.tensor([True, False, True]), "boolean mask of length 3"),
    (torch.tensor([[True], [False], [True], [True]]), r"got shape \(4, 1\)"),
    (torch.tensor([0, 0, 2]), "repeated indices"),
    (torch.tensor([1, 4]), "values from 1 to 4"),
    (torch.tensor([-1, 2]), "values from -1 to 2"),
    (torch.tensor(2), r"got shape \(\)"),
])
def test_wrong_masks_and_indices_are_refused(index, message):
    model = _model()
    torch.manual_seed(0)
    _streamed(model, torch.rand(3, 4, 5))
    before = [s.clone() for s in _states(model)]
    with pytest.raises(ValueError, match=rf"index: expected a 1-D boolean mask of length 4 or 1-D unique integer "
                                         rf"indices in \[0, 4\).*{message}"):
        sl.select_batch(model, index)
    assert all(torch.equal(a, b) for a, b in zip(before, _states(model)))  # nothing changed


def test_float_index_is_refused():
    model = _model()
    _streamed(model, torch.rand(2, 4, 5))
    with pytest.raises(TypeError, match="index: expected .* got dtype torch.float32"):
        sl.select_batch(model, torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("index", [torch.tensor([True, False, True, True]), torch.tensor([3, 0, 2]), [2, 3]])
def test_selected_samples_continue_as_if_run_alone(index):
    torch.manual_seed(1)
    x = torch.rand(6, 4, 5)
    model = _model()
    model.eval()  # no dropout: the kept samples must continue exactly as in the full batch
    sl.reset(model)
    full = [model.step(x[t]) for t in range(6)]
    sl.reset(model)
    for t in range(3):
        model.step(x[t])
    sl.select_batch(model, index)
    keep = torch.as_tensor(index)
    keep = keep.nonzero().flatten() if keep.dtype == torch.bool else keep
    for t in range(3, 6):
        assert torch.equal(model.step(x[t, keep]), full[t][keep])


def test_delay_refuses_bad_masks():
    from spikelab.layers.elementwise import Delay

    delay = Delay(torch.tensor([1.0, 2.0]))
    for t in range(3):
        delay.step(torch.rand(4, 2))
    with pytest.raises(ValueError, match="boolean mask of length 3"):
        delay.select_batch(torch.tensor([True, True, False]))
    delay.select_batch(torch.tensor([0, 3]))
    assert delay.step(torch.rand(2, 2)).shape == (2, 2)
