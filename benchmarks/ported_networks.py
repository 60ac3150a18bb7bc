"""The peers' tutorial networks against their line-by-line spikelab ports (docs/snntorch.md,
docs/spikingjelly.md), in one run: same weights, same input, identical output spikes checked
first, then the time of a training step (forward, loss, backward, Adam step) and of inference.

* snnTorch tutorial 6: conv 1-12-5, max-pool, ``Leaky(beta=0.5)`` (its default delayed reset,
  fast-sigmoid surrogate, ``init_hidden``), conv 12-64-5, max-pool, Leaky, linear 1024-10, Leaky;
  the static MNIST-sized image at every step, ``ce_rate_loss``. snnTorch loops the
  ``nn.Sequential`` over time, as the tutorial does; spikelab runs ``DelayedResetLIF`` on the
  whole sequence.
* SpikingJelly's convolutional Fashion-MNIST tutorial network (channels ``c``), multi-step, torch
  backend (the CuPy backend needs a GPU): conv-BN-IF-pool twice, two linear-IF layers; MSE on
  the firing rate. spikelab runs batch norm, IF and pooling fused.

Timings are medians over interleaved repeats (each repeat runs every library once).

    python benchmarks/ported_networks.py            # B=32: snnTorch T=25, SpikingJelly T=8 (~1 min on 2 cores)
    python benchmarks/ported_networks.py --quick    # smaller, 2 repeats (smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

import spikelab as sl

L = sl.layers


def snntorch_pair(beta: float = 0.5):
    import snntorch as snn
    from snntorch import surrogate

    grad = surrogate.fast_sigmoid(slope=25)
    theirs = nn.Sequential(nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
                           nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
                           nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
                           snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True, output=True))

    def lif():
        return sl.DelayedResetLIF(beta=beta, surrogate="fast_sigmoid", surrogate_alpha=25)

    ours = L.Sequential(L.Conv2d(1, 12, 5), L.MaxPool2d(2), lif(), L.Conv2d(12, 64, 5), L.MaxPool2d(2), lif(),
                        L.Flatten(), L.Linear(64 * 4 * 4, 10), lif())
    with torch.no_grad():
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            b.mul_(4)  # larger weights: every layer spikes
            a.copy_(b)
    return theirs, ours


def snntorch_forward(net, data, steps):
    from snntorch import utils

    utils.reset(net)
    return torch.stack([net(data)[0] for _ in range(steps)])


def spikingjelly_pair(c: int = 32):
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    theirs = nn.Sequential(
        layer.Conv2d(1, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.MaxPool2d(2, 2),
        layer.Conv2d(c, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.MaxPool2d(2, 2), layer.Flatten(),
        layer.Linear(c * 7 * 7, c * 4 * 4, bias=False), neuron.IFNode(surrogate_function=surrogate.ATan()),
        layer.Linear(c * 4 * 4, 10, bias=False), neuron.IFNode(surrogate_function=surrogate.ATan()))
    functional.set_step_mode(theirs, step_mode="m")

    def node():
        return sl.IF(reset="zero", surrogate="atan", surrogate_alpha=2)

    ours = L.Sequential(
        L.Conv2d(1, c, 3, padding=1, bias=False), L.BatchNorm2d(c), node(), L.MaxPool2d(2, 2),
        L.Conv2d(c, c, 3, padding=1, bias=False), L.BatchNorm2d(c), node(), L.MaxPool2d(2, 2), L.Flatten(),
        L.Linear(c * 7 * 7, c * 4 * 4, bias=False), node(), L.Linear(c * 4 * 4, 10, bias=False), node())
    with torch.no_grad():
        theirs[9].weight.mul_(4)
        theirs[11].weight.mul_(6)
    ours.load_state_dict(theirs.state_dict(), strict=False)
    return theirs, ours


def _median_times(runs: dict, repeats: int) -> dict:
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    batch = 8 if args.quick else 32
    torch.manual_seed(0)

    # ----- snnTorch tutorial 6 -----
    from snntorch import functional as SF
    from spikingjelly.activation_based import functional as sjf

    steps = 5 if args.quick else 25
    theirs, ours = snntorch_pair()
    data, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    x_seq = data.unsqueeze(0).expand(steps, *data.shape)
    with torch.no_grad():
        same = torch.equal(snntorch_forward(theirs, data, steps), ours(x_seq))
    opt_t, opt_o = torch.optim.Adam(theirs.parameters(), 1e-3), torch.optim.Adam(ours.parameters(), 1e-3)

    def step_t():
        opt_t.zero_grad()
        SF.ce_rate_loss()(snntorch_forward(theirs, data, steps), y).backward()
        opt_t.step()

    def step_o():
        opt_o.zero_grad()
        sl.train.losses.tet(ours(x_seq), y).backward()
        opt_o.step()

    def infer_t():
        with torch.no_grad():
            snntorch_forward(theirs, data, steps)

    def infer_o():
        with torch.no_grad():
            ours(x_seq)

    _median_times({"t": step_t, "o": step_o}, 1)  # warm-up (kernel compilation)
    train = _median_times({"snntorch": step_t, "spikelab": step_o}, repeats)
    infer = _median_times({"snntorch": infer_t, "spikelab": infer_o}, repeats)
    print(f"snnTorch tutorial CNN, B={batch}, T={steps}: identical spikes {same}")
    print(f"  training step  snnTorch {train['snntorch'] * 1e3:8.1f} ms   spikelab {train['spikelab'] * 1e3:8.1f} ms"
          f"   {train['snntorch'] / train['spikelab']:.2f}x")
    print(f"  inference      snnTorch {infer['snntorch'] * 1e3:8.1f} ms   spikelab {infer['spikelab'] * 1e3:8.1f} ms"
          f"   {infer['snntorch'] / infer['spikelab']:.2f}x")

    # ----- SpikingJelly CSNN -----
    steps = 4 if args.quick else 8
    theirs, ours = spikingjelly_pair(8 if args.quick else 32)
    img = torch.rand(batch, 1, 28, 28)
    label = F.one_hot(torch.randint(0, 10, (batch,)), 10).float()
    x_seq = img.unsqueeze(0).repeat(steps, 1, 1, 1, 1)
    theirs.eval(), ours.eval()
    with torch.no_grad():
        sjf.reset_net(theirs)
        same = torch.equal(theirs(x_seq), ours(x_seq))
    theirs.train(), ours.train()
    opt_t, opt_o = torch.optim.Adam(theirs.parameters(), 1e-3), torch.optim.Adam(ours.parameters(), 1e-3)

    def sj_step_t():
        opt_t.zero_grad()
        sjf.reset_net(theirs)
        F.mse_loss(theirs(x_seq).mean(0), label).backward()
        opt_t.step()

    def sj_step_o():
        opt_o.zero_grad()
        F.mse_loss(ours(x_seq).mean(0), label).backward()
        opt_o.step()

    _median_times({"t": sj_step_t, "o": sj_step_o}, 1)
    train = _median_times({"spikingjelly": sj_step_t, "spikelab": sj_step_o}, repeats)
    print(f"SpikingJelly tutorial CSNN (torch backend), B={batch}, T={steps}: identical spikes (eval) {same}")
    print(f"  training step  SpikingJelly {train['spikingjelly'] * 1e3:8.1f} ms   spikelab "
          f"{train['spikelab'] * 1e3:8.1f} ms   {train['spikingjelly'] / train['spikelab']:.2f}x")


if __name__ == "__main__":
    main()
