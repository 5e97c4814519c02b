"""Train ``digits_cnn`` in pure numpy and write ``digits_cnn.npz`` (``python -m scalenet.zoo.train_digits``).

Data: ``sklearn.datasets.load_digits`` (1,797 images, bundled with scikit-learn, no download), split
fixed and stratified: per class, a ``numpy.random.default_rng(0)`` permutation puts 36 images in the test
set (360 test, 1,437 train; our own split, so it does not depend on the scikit-learn version).
Training, with the zoo's shared numpy trainer :mod:`scalenet.zoo.nptrain`: convolutions as im2col matrix
products, softmax cross-entropy, Adam (lr 3e-3, halved every 10 epochs), batch 32, 30 epochs, one seeded
generator for the initialisation and the shuffles. The run is deterministic on a given numpy/BLAS (the
float32 matrix products are the only source of platform differences). About 5 s on 2 cores.

Needs scikit-learn (a test dependency); loading the shipped weights does not.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from .digits import SHAPES, WEIGHTS_PATH, float_net, scale_images
from .nptrain import Chain, fit

__all__ = ["N_TRAIN", "load_split", "train", "accuracy", "main"]

N_TRAIN = 1437
TEST_PER_CLASS = 36
SPLIT_SEED = 0
N_CALIBRATION = 256


def split_indices(y):
    """Stratified fixed split: (train indices, test indices), each sorted."""
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:TEST_PER_CLASS] for c in range(10)])
    mask = np.zeros(len(y), dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def load_split():
    """(x_train, y_train, x_test, y_test, raw_train): x float32 (N, 1, 8, 8) in [0, 1]; raw uint8 0..16."""
    from sklearn.datasets import load_digits
    d = load_digits()
    raw = d.images.astype(np.uint8)
    x, y = scale_images(raw), d.target.astype(np.int64)
    tr, te = split_indices(y)
    return x[tr], y[tr], x[te], y[te], raw[tr]


def _chain():
    """The trainable form of the zoo's digits_cnn (its FloatNet with zero weights)."""
    return Chain(float_net({k: np.zeros(s, np.float32) for k, s in SHAPES.items()}))


def train(epochs=30, *, seed=0, batch=32, lr=3e-3, data=None, verbose=False):
    """Train from scratch; returns (float32 weights dict, list of mean training loss per epoch)."""
    x_train, y_train = (load_split()[:2] if data is None else data)
    return fit(_chain(), SHAPES, x_train, y_train, epochs, seed=seed, batch=batch, lr=lr, halve_every=10,
               verbose=verbose)


def accuracy(weights, x, y):
    """Float accuracy of the weights through the zoo's FloatNet (the same graph that gets quantised)."""
    logits = float_net(weights).run(x)["fc"]
    return float((logits.argmax(axis=1) == y).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=str(WEIGHTS_PATH))
    args = ap.parse_args(argv)
    x_train, y_train, x_test, y_test, raw_train = load_split()
    t0 = time.perf_counter()
    weights, history = train(args.epochs, seed=args.seed, data=(x_train, y_train), verbose=True)
    elapsed = time.perf_counter() - t0
    print(f"trained in {elapsed:.1f} s; train acc {accuracy(weights, x_train, y_train):.4f}, "
          f"test acc {accuracy(weights, x_test, y_test):.4f}")
    calib = raw_train[np.random.default_rng(args.seed).permutation(N_TRAIN)[:N_CALIBRATION]]
    np.savez_compressed(args.output, calibration=calib, **weights)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
