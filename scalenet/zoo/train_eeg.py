"""Train ``eeg_mpcnn`` on SYNTHETIC EEG in pure numpy and write ``eeg_mpcnn.npz``
(``python -m scalenet.zoo.train_eeg``; ``benchmarks/train_eeg.py`` is the same entry point).

Data: :func:`scalenet.eeg.synth.generate` recordings with seeds ``TRAIN_SEEDS`` (disjoint from the
held-out evaluation seeds, ``EVAL_SEED`` onwards), each ``RECORDING_S`` long with
``SEIZURES_PER_RECORDING`` seizures, normalised as the detector does (:func:`scalenet.eeg.detect.normalise`).
Seizure windows (at least half inside a seizure) are cut with a 0.5-s hop, background windows with a
1-s hop, and subsampled to ``N_POSITIVE`` and ``N_NEGATIVE`` (2:1 background, as the detector mostly
sees background). Training: the shared numpy trainer (:mod:`scalenet.zoo.nptrain`: im2col
convolutions, softmax cross-entropy, Adam lr 2e-3 halved every 4 epochs, batch 64, 8 epochs) on the
network's own FloatNet, keeping the epoch with the best balanced window accuracy on the validation
recordings (``VALIDATION_SEEDS``: early stopping; the network otherwise learns its 64 training
"subjects'" backgrounds by heart). A calibration batch of training windows
(``N_CALIBRATION``, half seizure) ships with the weights, stored as int8 on the +-CLIP grid, so loading
needs neither the generator nor training. Deterministic on a given numpy/BLAS.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .nptrain import Chain, fit, param_shapes

WINDOW_HOP = 256          #: samples (1 s)

__all__ = ["WEIGHTS_PATH", "TRAIN_SEEDS", "VALIDATION_SEEDS", "EVAL_SEED", "balanced_accuracy", "make_dataset",
           "train", "accuracy", "main", "chain",
           "float_net", "load_weights", "calibration", "encode_calibration"]

WEIGHTS_PATH = Path(__file__).with_name("eeg_mpcnn.npz")
TRAIN_SEEDS = tuple(range(1000, 1064))
VALIDATION_SEEDS = tuple(range(1100, 1108))   #: early stopping (never trained on, never evaluated on)
EVAL_SEED = 5000          #: first seed of the held-out synthetic evaluation recordings
RECORDING_S = 180
SEIZURES_PER_RECORDING = 2
N_NEGATIVE = 4000         #: background windows (the detector sees mostly background)
N_POSITIVE = 2000         #: seizure windows
N_CALIBRATION = 32


def _structure():
    from .networks import eeg_mpcnn
    return eeg_mpcnn(lazy=True)


def chain():
    return Chain(_structure())


def float_net(weights):
    """The zoo's eeg_mpcnn FloatNet carrying ``weights`` ({"conv1_w": ..., ...})."""
    from .networks import eeg_mpcnn
    net = eeg_mpcnn(lazy=True)
    shapes = param_shapes(net)
    for node in net.nodes:
        if node.op in ("conv", "dense"):
            for key, attr in (("_w", "weight"), ("_b", "bias")):
                w = np.asarray(weights[node.name + key], np.float32)
                if w.shape != shapes[node.name + key]:
                    raise ValueError(f"eeg_mpcnn weight {node.name + key} has shape {w.shape}, "
                                     f"expected {shapes[node.name + key]}")
                node.attrs[attr] = w
    net.meta.update(trained="synthetic EEG (scalenet.eeg.synth)")
    return net


def load_weights(path=WEIGHTS_PATH):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k].astype(np.float32) for k in param_shapes(_structure())}


def encode_calibration(x):
    from scalenet.eeg.detect import CLIP
    return np.clip(np.round(np.asarray(x) * (127 / CLIP)), -127, 127).astype(np.int8)


def calibration(path=WEIGHTS_PATH):
    """The shipped calibration windows, float32 (N, 23, 256) normalised amplitudes."""
    from scalenet.eeg.detect import CLIP
    with np.load(path, allow_pickle=False) as data:
        return data["calibration"].astype(np.float32) * np.float32(CLIP / 127)


def make_dataset(seeds=TRAIN_SEEDS, *, recording_s=RECORDING_S, seizures=SEIZURES_PER_RECORDING,
                 n_negative=N_NEGATIVE, n_positive=N_POSITIVE, seizure_hop=WINDOW_HOP // 2, sample_seed=0):
    """Training windows from synthetic recordings: (x float32 (N, 23, 256), y int64 (N,)), background
    first. Seizure windows are cut every ``seizure_hop`` samples, background windows every second; each
    class is subsampled to its count (None: keep all)."""
    from scalenet.eeg import detect, synth
    pos, neg = [], []
    for seed in seeds:
        rec = synth.generate(recording_s, seed=seed, n_seizures=seizures)
        x = detect.normalise(rec.signal)
        for hop, want in ((seizure_hop, True), (detect.WINDOW, False)):
            starts = detect.window_starts(x.shape[1], hop)
            lab = detect.window_labels(rec.seizures, starts, rec.fs)
            (pos if want else neg).append(detect.windows(x, starts[lab == want]))
    rng = np.random.default_rng(sample_seed)
    out = []
    for arrays, count in ((neg, n_negative), (pos, n_positive)):
        a = np.concatenate(arrays)
        out.append(a if count is None else a[np.sort(rng.permutation(len(a))[:count])])
    x = np.concatenate(out)
    y = np.concatenate([np.zeros(len(out[0]), np.int64), np.ones(len(out[1]), np.int64)])
    return x, y


def balanced_accuracy(chain_, weights, x, y):
    """(seizure-window recall + background-window recall) / 2 of float weights on (x, y)."""
    pred = chain_.predict(weights, x).argmax(axis=1)
    return 0.5 * (float((pred[y == 1] == 1).mean()) + float((pred[y == 0] == 0).mean()))


def train(x, y, epochs=8, *, seed=0, batch=64, lr=2e-3, verbose=False, validation=None):
    """Train from scratch: (float32 weights, mean training loss per epoch). ``validation`` = (x, y):
    keep the epoch with the best balanced accuracy on it."""
    net = _structure()
    c = Chain(net)
    validate = None if validation is None else (lambda p: balanced_accuracy(c, p, *validation))
    return fit(c, param_shapes(net), x, y, epochs, seed=seed, batch=batch, lr=lr, halve_every=4,
               verbose=verbose, validate=validate)


def accuracy(weights, x, y):
    """Float window accuracy through the zoo's FloatNet (the graph that gets quantised)."""
    logits = np.concatenate([float_net(weights).run(x[i:i + 256])["fc2"] for i in range(0, len(x), 256)])
    return float((logits.argmax(axis=1) == y).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=str(WEIGHTS_PATH))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    x, y = make_dataset()
    val = make_dataset(VALIDATION_SEEDS, n_negative=None, n_positive=None, seizure_hop=WINDOW_HOP)
    t1 = time.perf_counter()
    print(f"SYNTHETIC training data: {len(x)} windows ({int(y.sum())} seizure) from {len(TRAIN_SEEDS)} "
          f"recordings of {RECORDING_S} s, validation {len(val[0])} windows from {len(VALIDATION_SEEDS)}; "
          f"generated in {t1 - t0:.1f} s", flush=True)
    weights, history = train(x, y, args.epochs, seed=args.seed, verbose=True, validation=val)
    t2 = time.perf_counter()
    print(f"trained in {t2 - t1:.1f} s; float window accuracy: train {accuracy(weights, x, y):.4f}, "
          f"validation {accuracy(weights, *val):.4f} (balanced {balanced_accuracy(chain(), weights, *val):.4f})")
    rng = np.random.default_rng(args.seed)
    half = N_CALIBRATION // 2
    pick = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:half] for c in (0, 1)])
    np.savez_compressed(args.output, calibration=encode_calibration(x[np.sort(pick)]), **weights)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
