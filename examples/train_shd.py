"""Train a spiking network on the Spiking Heidelberg Digits from a local folder:

    python examples/train_shd.py /path/to/dataset [--epochs N] [--out runs/shd]
"""

import sys

from _presets import main

if __name__ == "__main__":
    sys.exit(main("shd"))
