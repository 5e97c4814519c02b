"""Train ``digits_cnn`` in pure numpy and write ``digits_cnn.npz`` (``python -m scalenet.zoo.train_digits``).

Data: ``sklearn.datasets.load_digits`` (1,797 images, bundled with scikit-learn, no download), split
fixed and stratified: per class, a ``numpy.random.default_rng(0)`` permutation puts 36 images in the test
set (360 test, 1,437 train; our own split, so it does not depend on the scikit-learn version). Training: convolutions as im2col matrix products,
softmax cross-entropy, Adam (lr 3e-3, halved every 10 epochs), batch 32, 30 epochs, one seeded
generator for the initialisation and the shuffles. The run is deterministic on a given numpy/BLAS (the
float32 matrix products are the only source of platform differences). About 5 s on 2 cores.

Needs scikit-learn (a test dependency); loading the shipped weights does not.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from .digits import SHAPES, WEIGHTS_PATH, float_net, scale_images

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


# -- layers with their backward passes ---------------------------------------------------------------------
def _im2col(x):
    """3x3, stride 1, pad 1: (N, C, H, W) -> (N*H*W, C*9) in the (C, KH, KW) order of OIHW weights."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))     # N C H W 3 3
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * h * w, c * 9)


def _col2im(cols, shape):
    n, c, h, w = shape
    g = cols.reshape(n, h, w, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)               # N C 3 3 H W
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=cols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + h, j:j + w] += g[:, :, i, j]
    return dxp[:, :, 1:-1, 1:-1]


def _conv_fwd(x, w, b):
    n, _, h, wd = x.shape
    cols = _im2col(x)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), cols


def _conv_bwd(dy, cols, x_shape, w):
    co = w.shape[0]
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, co)
    dw = (dy2.T @ cols).reshape(w.shape)
    db = dy2.sum(axis=0)
    dx = _col2im(dy2 @ w.reshape(co, -1), x_shape)
    return dx, dw, db


def _pool_fwd(x):
    n, c, h, w = x.shape
    r = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = r.max(axis=(3, 5))
    mask = r == out[:, :, :, None, :, None]
    mask = mask / mask.sum(axis=(3, 5), keepdims=True)                          # ties share the gradient
    return out, mask


def _pool_bwd(dy, mask):
    n, c, h2, _, w2, _ = mask.shape
    return (mask * dy[:, :, :, None, :, None]).reshape(n, c, h2 * 2, w2 * 2)


def _forward(p, x):
    z1, c1 = _conv_fwd(x, p["conv1_w"], p["conv1_b"])
    a1 = np.maximum(z1, 0)
    p1, m1 = _pool_fwd(a1)
    z2, c2 = _conv_fwd(p1, p["conv2_w"], p["conv2_b"])
    a2 = np.maximum(z2, 0)
    p2, m2 = _pool_fwd(a2)
    f = p2.reshape(len(x), -1)
    logits = f @ p["fc_w"].T + p["fc_b"]
    return logits, (x, z1, c1, p1, m1, z2, c2, m2, f)


def _loss_and_grads(p, x, y):
    logits, (x, z1, c1, p1, m1, z2, c2, m2, f) = _forward(p, x)
    n = len(x)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(n), y].mean())
    d = np.exp(logp)
    d[np.arange(n), y] -= 1
    d /= n
    g = {"fc_w": d.T @ f, "fc_b": d.sum(axis=0)}
    dp2 = (d @ p["fc_w"]).reshape(n, 32, 2, 2)
    dz2 = _pool_bwd(dp2, m2) * (z2 > 0)
    dp1, g["conv2_w"], g["conv2_b"] = _conv_bwd(dz2, c2, p1.shape, p["conv2_w"])
    dz1 = _pool_bwd(dp1, m1) * (z1 > 0)
    _, g["conv1_w"], g["conv1_b"] = _conv_bwd(dz1, c1, x.shape, p["conv1_w"])
    return loss, g


def _init(rng):
    p = {}
    for k, shape in SHAPES.items():
        if k.endswith("_b"):
            p[k] = np.zeros(shape, dtype=np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            p[k] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return p


def train(epochs=30, *, seed=0, batch=32, lr=3e-3, data=None, verbose=False):
    """Train from scratch; returns (float32 weights dict, list of mean training loss per epoch)."""
    x_train, y_train = (load_split()[:2] if data is None else data)
    rng = np.random.default_rng(seed)
    p = _init(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    history = []
    for epoch in range(epochs):
        rate = lr * 0.5 ** (epoch // 10)
        order = rng.permutation(len(x_train))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            loss, g = _loss_and_grads(p, x_train[idx], y_train[idx])
            total += loss * len(idx)
            step += 1
            for k in p:
                m[k] = b1 * m[k] + (1 - b1) * g[k]
                v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
                mh = m[k] / (1 - b1 ** step)
                vh = v[k] / (1 - b2 ** step)
                p[k] = (p[k] - rate * mh / (np.sqrt(vh) + eps)).astype(np.float32)
        history.append(total / len(order))
        if verbose:
            print(f"epoch {epoch + 1:3d}  loss {history[-1]:.4f}")
    return p, history


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
