"""The CPU buffer cache of the fused kernels: reuse only after the last view is gone."""

import gc

import torch

from spikelab.kernels import buffers


def _ptr(t):
    return t.untyped_storage().data_ptr()


def test_buffer_returns_only_after_last_view_dies():
    buffers.clear()
    a = buffers.empty((512, 1024), torch.float32)  # 2 MiB: cached size
    view = a[3:].view(-1)
    ptr = _ptr(a)
    del a
    gc.collect()
    assert buffers.idle_bytes() == 0  # a view still uses it
    b = buffers.empty((512, 1024), torch.float32)
    assert _ptr(b) != ptr
    view.fill_(1.0)
    del view
    gc.collect()
    assert buffers.idle_bytes() == 512 * 1024 * 4
    c = buffers.empty((1024, 512), torch.float32)  # same byte size, any shape
    assert _ptr(c) == ptr and c.shape == (1024, 512)
    del b, c
    buffers.clear()


def test_small_and_other_dtypes_bypass_the_cache():
    buffers.clear()
    small = buffers.empty((10, 10), torch.float32)
    half = buffers.empty((1024, 1024), torch.float16)
    del small, half
    gc.collect()
    assert buffers.idle_bytes() == 0


def test_limit_and_switch_off(monkeypatch):
    buffers.clear()
    monkeypatch.setenv("SPIKELAB_CPU_CACHE_MB", "3")
    kept = [buffers.empty((512, 1024), torch.float32) for _ in range(3)]  # 2 MiB each
    del kept
    gc.collect()
    assert buffers.idle_bytes() == 2 << 20  # only one fits under 3 MiB
    monkeypatch.setenv("SPIKELAB_CPU_CACHE_MB", "0")
    buffers.clear()
    t = buffers.empty((512, 1024), torch.float32)
    del t
    gc.collect()
    assert buffers.idle_bytes() == 0
    buffers.clear()


def test_training_reuses_buffers_across_steps():
    import spikelab as sl

    buffers.clear()
    x = torch.rand(20, 8, 4096, requires_grad=True)
    neuron = sl.LIF()
    ptrs = []
    for _ in range(3):
        out = neuron(x)
        out.sum().backward()
        ptrs.append(_ptr(out))
        x.grad = None
        del out
    assert ptrs[1] == ptrs[2]
    buffers.clear()
