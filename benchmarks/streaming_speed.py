"""Single-step (streaming) neuron speed: spikelab against snnTorch, SpikingJelly and Norse.

What converted networks, Dynamic Confidence's live mode and online inference run: one time
step at a time, the state kept between calls, no gradients. For each layer shape every library
steps the same neuron over the same ``STEPS`` inputs ``[B, ...]``, its state carried from step
to step, under ``torch.no_grad()``:

* IF (no leak), threshold 0.7, reset by subtraction: spikelab ``IF.step``, snnTorch
  ``Leaky(beta=1, init_hidden=True)``, SpikingJelly ``IFNode(v_reset=None, step_mode="s")``
  (Norse has no IF neuron);
* LIF, ``beta = 0.9``, threshold 1, reset to zero: spikelab ``LIF.step``, snnTorch
  ``Leaky(reset_mechanism="zero")``, SpikingJelly ``LIFNode(tau=10, decay_input=False,
  v_reset=0)``, Norse ``LIFBoxCell`` (``dt * tau_mem_inv = 0.1``, so it is fed ``10 x``).

Every library's spikes are checked equal to spikelab's first; then each library's whole
stream is timed, interleaved, medians over repeats (network_speed.timed: at most 3 repeats
for a call over two seconds); ratio = peer time / spikelab time.

    python benchmarks/streaming_speed.py                       # the default shapes, 2 threads
    python benchmarks/streaming_speed.py --shapes 128x16x34x34 --steps 32
    python benchmarks/streaming_speed.py --device cuda        # on a GPU (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
from typing import Callable, Optional

import torch

import spikelab as sl
from network_speed import timed  # interleaved medians (benchmarks/ is on the path when run from there)

STEPS = 32
SHAPES = ["128x16x34x34", "128x32x17x17", "128x1024"]


def spikelab_stream(kind: str, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    neuron = (sl.IF(threshold=0.7, reset="subtract") if kind == "if" else sl.LIF(beta=0.9, reset="zero")).to(device)

    def run(xs: torch.Tensor) -> torch.Tensor:
        neuron.reset()
        return torch.stack([neuron.step(x) for x in xs])
    return run


def snntorch_stream(kind: str, device: str) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    try:
        import snntorch as snn
    except ImportError:
        return None
    neuron = (snn.Leaky(beta=1.0, threshold=0.7, reset_mechanism="subtract", init_hidden=True) if kind == "if"
              else snn.Leaky(beta=0.9, threshold=1.0, reset_mechanism="zero", init_hidden=True)).to(device)

    def run(xs: torch.Tensor) -> torch.Tensor:
        neuron.reset_hidden()
        return torch.stack([neuron(x) for x in xs])
    return run


def spikingjelly_stream(kind: str, device: str) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    try:
        from spikingjelly.activation_based import neuron as sj
    except ImportError:
        return None
    node = (sj.IFNode(v_threshold=0.7, v_reset=None, step_mode="s") if kind == "if"
            else sj.LIFNode(tau=10.0, decay_input=False, v_threshold=1.0, v_reset=0.0, step_mode="s")).to(device)

    def run(xs: torch.Tensor) -> torch.Tensor:
        node.reset()
        return torch.stack([node(x) for x in xs])
    return run


def norse_stream(kind: str, device: str) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    if kind == "if":
        return None
    try:
        from norse.torch import LIFBoxCell, LIFBoxParameters
    except ImportError:
        return None
    # Norse: v <- v + dt * tau_mem_inv * ((v_leak - v) + x) = 0.9 v + 0.1 x: fed 10 x, it is 0.9 v + x
    def t(v: float) -> torch.Tensor:
        return torch.tensor(v, device=device)

    cell = LIFBoxCell(p=LIFBoxParameters(tau_mem_inv=t(100.0), v_th=t(1.0), v_leak=t(0.0), v_reset=t(0.0)), dt=1e-3)

    def run(xs: torch.Tensor) -> torch.Tensor:
        state, out = None, []
        for x in xs * 10.0:  # Norse scales the input by dt * tau_mem_inv (one multiply, outside its loop)
            z, state = cell(x, state)
            out.append(z)
        return torch.stack(out)
    return run


PEERS = {"snnTorch": snntorch_stream, "SpikingJelly": spikingjelly_stream, "Norse": norse_stream}


def bench(kind: str, shape: tuple[int, ...], steps: int, repeats: int, device: str = "cpu") -> dict[str, float]:
    torch.manual_seed(0)
    xs = (torch.rand(steps, *shape) * (0.8 if kind == "if" else 0.35)).to(device)
    streams = {"spikelab": spikelab_stream(kind, device)}
    streams.update({name: make(kind, device) for name, make in PEERS.items()})
    streams = {name: fn for name, fn in streams.items() if fn is not None}
    with torch.no_grad():
        ours = streams["spikelab"](xs)
        rate = ours.mean().item()
        for name, fn in streams.items():
            differ = (fn(xs) != ours).float().mean().item()
            if differ > 1e-4:  # a rounding at the threshold may flip a rare spike
                raise RuntimeError(f"{kind} {shape}: {name}'s spikes differ from spikelab's at {differ:.2%} of "
                                   "neuron-steps; the layers are not the same")
        times = timed({name: (lambda fn=fn: fn(xs)) for name, fn in streams.items()}, repeats, device)
    per_step = {name: t["ms"] / steps for name, t in times.items()}
    cells = "  ".join(f"{name} {ms:.2f} ms ({ms / per_step['spikelab']:.2f}x)" for name, ms in per_step.items()
                      if name != "spikelab")
    print(f"{kind.upper():3s} {'x'.join(map(str, shape)):14s} rate {rate:.3f}  spikelab {per_step['spikelab']:.2f} "
          f"ms/step  {cells}", flush=True)
    return per_step


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="per-step shapes, e.g. 128x16x34x34")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads; {args.steps} steps per stream, "
          f"median of {args.repeats}; per-step ms, (peer / spikelab)")
    for shape in args.shapes:
        dims = tuple(int(d) for d in shape.lower().split("x"))
        for kind in ("if", "lif"):
            bench(kind, dims, args.steps, args.repeats, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
