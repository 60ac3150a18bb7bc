"""Train a small spiking MLP on random spike patterns: the README quick start, as a script."""

import torch
from torch import nn

import spikelab as sl


def main() -> float:
    torch.manual_seed(0)
    net = sl.layers.Sequential(nn.Linear(100, 64), sl.LIF(tau=2.0), nn.Linear(64, 10))
    x = (torch.rand(25, 32, 100) < 0.2).float()
    labels = torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(50):
        loss = nn.functional.cross_entropy(net(x).mean(0), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (net(x).mean(0).argmax(1) == labels).float().mean().item()
    print(f"final loss {loss.item():.3f}, training accuracy {accuracy:.2f}")
    return accuracy


if __name__ == "__main__":
    main()
