"""Regenerate scalenet/zoo/digits_cnn.npz: train the digits CNN in pure numpy (about 5-8 s on 2 cores).

    python benchmarks/train_digits.py [--epochs 30] [--seed 0] [--output path.npz]

The training code lives in scalenet.zoo.train_digits (so the tests can exercise it); this is its
command-line entry point. Needs scikit-learn for the digits data.
"""

import sys

from scalenet.zoo.train_digits import main

if __name__ == "__main__":
    sys.exit(main())
