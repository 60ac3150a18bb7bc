"""Train a spiking network on DVS128 Gesture from a local folder:

    python examples/train_dvsgesture.py /path/to/dataset [--epochs N] [--out runs/dvsgesture]
"""

import sys

from _presets import main

if __name__ == "__main__":
    sys.exit(main("dvsgesture"))
