"""``digits_cnn``: a small trained CNN for the 8x8 sklearn digits (a demo, not one of the paper's nine).

The float weights ship in ``digits_cnn.npz`` next to this file (regenerate them with
``python -m scalenet.zoo.train_digits``), together with a calibration batch of training images, so
loading needs neither training nor scikit-learn.

Architecture (6,090 parameters; input (1, 8, 8), pixel values 0..16 scaled to [0, 1]):
conv3x3 pad1 1->16 + ReLU, maxpool 2 -> (16, 4, 4); conv3x3 pad1 16->32 + ReLU, maxpool 2 -> (32, 2, 2);
flatten 128; fc 128->10 (logits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..floatnet import FloatNet, FNode

__all__ = ["WEIGHTS_PATH", "TEST_PATH", "SHAPES", "float_net", "load_weights", "calibration", "scale_images",
           "test_set", "write_test_set"]

WEIGHTS_PATH = Path(__file__).with_name("digits_cnn.npz")
TEST_PATH = Path(__file__).with_name("digits_test.npz")
"""The fixed 360-image test split (raw 0..16 pixels and labels; sklearn's digits data, BSD licence), shipped
so the demo needs neither scikit-learn nor a download. :func:`write_test_set` regenerates it
(``python -c "from scalenet.zoo.digits import write_test_set; write_test_set()"``, needs scikit-learn)."""
SHAPES = {"conv1_w": (16, 1, 3, 3), "conv1_b": (16,), "conv2_w": (32, 16, 3, 3), "conv2_b": (32,),
          "fc_w": (10, 128), "fc_b": (10,)}
PIXEL_MAX = 16.0


def scale_images(images):
    """sklearn digits pixels (0..16, any shape ending in 64 or 8x8) -> float32 (N, 1, 8, 8) in [0, 1]."""
    x = np.asarray(images, dtype=np.float32).reshape(-1, 1, 8, 8)
    return x / np.float32(PIXEL_MAX)


def load_weights(path=WEIGHTS_PATH):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k].astype(np.float32) for k in SHAPES}


def calibration(path=WEIGHTS_PATH):
    """The calibration batch shipped with the weights (training images only), float32 in [0, 1]."""
    with np.load(path, allow_pickle=False) as data:
        return scale_images(data["calibration"])


def test_set(path=TEST_PATH):
    """(images float32 (360, 1, 8, 8) in [0, 1], labels int64 (360,)): the held-out split, never trained on."""
    with np.load(path, allow_pickle=False) as data:
        return scale_images(data["images"]), data["labels"].astype(np.int64)


def write_test_set(path=TEST_PATH):
    """Store the test split of :func:`scalenet.zoo.train_digits.load_split` as raw pixels."""
    from .train_digits import load_split
    _, _, x_test, y_test, _ = load_split()
    raw = np.rint(x_test.reshape(-1, 8, 8) * PIXEL_MAX).astype(np.uint8)
    np.savez_compressed(path, images=raw, labels=y_test.astype(np.uint8))


def float_net(weights=None):
    w = load_weights() if weights is None else weights
    for k, shape in SHAPES.items():
        if tuple(np.shape(w[k])) != shape:
            raise ValueError(f"digits_cnn weight {k} has shape {np.shape(w[k])}, expected {shape}")
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    nodes = [
        FNode("conv", "conv1", ["input"], "conv1", dict(weight=f32(w["conv1_w"]), bias=f32(w["conv1_b"]),
                                                         stride=1, pads=1)),
        FNode("relu", "conv1_relu", ["conv1"], "conv1_relu"),
        FNode("maxpool", "pool1", ["conv1_relu"], "pool1", dict(kernel=(2, 2), stride=(2, 2), pads=0)),
        FNode("conv", "conv2", ["pool1"], "conv2", dict(weight=f32(w["conv2_w"]), bias=f32(w["conv2_b"]),
                                                         stride=1, pads=1)),
        FNode("relu", "conv2_relu", ["conv2"], "conv2_relu"),
        FNode("maxpool", "pool2", ["conv2_relu"], "pool2", dict(kernel=(2, 2), stride=(2, 2), pads=0)),
        FNode("flatten", "flatten", ["pool2"], "flatten"),
        FNode("dense", "fc", ["flatten"], "fc", dict(weight=f32(w["fc_w"]), bias=f32(w["fc_b"]))),
    ]
    return FloatNet("digits_cnn", "input", (1, 8, 8), nodes, ["fc"], meta={"output_shape": (10,)})
