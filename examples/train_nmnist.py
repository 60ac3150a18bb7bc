"""Train a spiking network on N-MNIST from a local folder:

    python examples/train_nmnist.py /path/to/dataset [--epochs N] [--out runs/nmnist]
"""

import sys

from _presets import main

if __name__ == "__main__":
    sys.exit(main("nmnist"))
