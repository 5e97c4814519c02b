"""The zoo: nine networks of the paper's two applications, plus one trained demo network.

The JETC 2019 paper runs nine networks in two applications: eight image networks (CIFAR-10 and
ImageNet) and seizure detection on raw EEG. Its exact list is not public, so the zoo carries the
classic networks of that period at their published sizes (layer tables, parameter and MAC counts in
:mod:`scalenet.zoo.networks`; each entry of :data:`NETWORKS` names its source) with seeded random
He-initialised weights: they are workloads for the accelerator and the scheduler, not classifiers.
Two networks ship trained float weights, to show the accuracy of the int8 path end to end:
``digits_cnn`` (application ``"demo"``), a small CNN trained on the sklearn 8x8 digits, and
``eeg_mpcnn``, trained on SYNTHETIC EEG (:mod:`scalenet.eeg.synth`, :mod:`scalenet.zoo.train_eeg`):
``seed=None`` (the default) loads its trained weights, an integer seed gives the He-random workload.

>>> g = build("lenet5")           # quantised IR Graph (cached per name and seed)
>>> f = float_net("lenet5")       # the float network it was quantised from
"""

from __future__ import annotations

import numpy as np

from ..floatnet import FloatNet, quantize_net
from ..ir import Graph
from . import digits as _digits
from ._builder import structure
from .networks import BUILDERS

__all__ = ["NETWORKS", "PAPER_NETWORKS", "TRAINED", "float_net", "build", "info", "calibration_data", "clear_cache"]


def _entry(description, input_shape, application, source, params, macs, reference, calibration_samples=8):
    return {"description": description, "input_shape": tuple(input_shape), "application": application,
            "source": source, "params": params, "macs": macs, "reference": reference,
            "calibration_samples": calibration_samples}


# params/macs are this zoo's exact counts (BN folded, biases counted, see networks.py); "reference" is
# the published figure they are checked against in tests/test_zoo.py.
NETWORKS = {
    "lenet5": _entry(
        "LeNet-5: C1-S2-C3-S4-C5-F6-output, ReLU, max pooling", (1, 32, 32), "image",
        "LeCun et al., Gradient-based learning applied to document recognition, Proc. IEEE 1998",
        61_706, 416_520, "~61.7 k params, ~0.42 M MACs (C3 fully connected)"),
    "cifar10_quick": _entry(
        "Caffe CIFAR-10 quick: 3x conv5x5 (32, 32, 64) + pool, fc64, fc10", (3, 32, 32), "image",
        "BVLC Caffe examples/cifar10/cifar10_quick_train_test.prototxt",
        145_578, 12_354_176, "145,578 params, 12.3 M MACs"),
    "vgg11_cifar": _entry(
        "VGG-11 (config A) for 32x32 CIFAR-10, BN folded, one fc 512->10", (3, 32, 32), "image",
        "Simonyan & Zisserman, ICLR 2015 (config A); CIFAR variant as in kuangliu/pytorch-cifar VGG('VGG11')",
        9_225_610, 152_769_536, "~9.23 M params (with BN), ~153 M MACs"),
    "resnet20": _entry(
        "ResNet-20 for CIFAR-10, option A (zero-pad) shortcuts, BN folded", (3, 32, 32), "image",
        "He et al., Deep residual learning for image recognition, CVPR 2016, sec. 4.2 / Table 6",
        269_034, 40_551_040, "0.27 M params (He et al. Table 6); 40.55 M MACs"),
    "mobilenet_v1_025": _entry(
        "MobileNetV1, width 0.25, 224x224", (3, 224, 224), "image",
        "Howard et al., MobileNets, arXiv:1704.04861 (Table 6: 0.25 MobileNet-224); TF-slim mobilenet_v1.md",
        467_336, 41_030_272, "0.47 M params, 41 M MACs", calibration_samples=4),
    "squeezenet1_1": _entry(
        "SqueezeNet 1.1: conv, 8 fire modules (concat), conv10, global average pool", (3, 224, 224), "image",
        "Iandola et al., arXiv:1602.07360; SqueezeNet v1.1 release (DeepScale); torchvision squeezenet1_1",
        1_235_496, 349_151_936, "1,235,496 params, 0.35 G MACs (torchvision)", calibration_samples=4),
    "alexnet": _entry(
        "AlexNet, single tower (torchvision layout), no LRN", (3, 224, 224), "image",
        "Krizhevsky et al., NIPS 2012; Krizhevsky arXiv:1404.5997; torchvision alexnet",
        61_100_840, 714_188_480, "61,100,840 params, 0.71 G MACs (torchvision)", calibration_samples=4),
    "googlenet": _entry(
        "GoogLeNet / Inception-v1 with the paper's 5x5 branches, no LRN, no auxiliary heads",
        (3, 224, 224), "image", "Szegedy et al., Going deeper with convolutions, CVPR 2015, Table 1",
        6_998_552, 1_582_671_872, "Table 1: 6.8 M params (K = 1024), 1.5 G MACs (1,586 M summed)",
        calibration_samples=4),
    "eeg_mpcnn": _entry(
        "Seizure detection MPCNN on raw EEG: 3x (conv1d + maxpool4), fc32, fc2", (23, 256), "eeg",
        "after Page, Shea & Mohsenin, Wearable seizure detection using CNNs with transfer learning, "
        "ISCAS 2016 (MPCNN); layer table ours (see networks.eeg_mpcnn); default weights trained on "
        "SYNTHETIC EEG by scalenet/zoo/train_eeg.py (eeg_mpcnn.npz)",
        19_682, 929_856, "own layer table: 19,682 params, 929,856 MACs"),
    "digits_cnn": _entry(
        "Trained demo CNN for the 8x8 sklearn digits (not a paper network)", (1, 8, 8), "demo",
        "this package: scalenet/zoo/train_digits.py, weights shipped in digits_cnn.npz",
        6_090, 84_224, "trained here; ~98.6 % float test accuracy", calibration_samples=None),
}

PAPER_NETWORKS = tuple(n for n, e in NETWORKS.items() if e["application"] != "demo")
"""The nine networks that stand for the paper's workloads (``digits_cnn`` excluded)."""

TRAINED = ("eeg_mpcnn",)
"""Paper networks that ship trained weights, used when ``seed`` is None (an integer seed: random)."""

_CACHE: dict = {}


def _check(name):
    if name not in NETWORKS:
        raise KeyError(f"unknown zoo network {name!r}; known: {', '.join(NETWORKS)}")


def _trained(name, seed):
    return name in TRAINED and seed is None


def float_net(name, seed=None, *, lazy=False) -> FloatNet:
    """The float32 network ``name`` with weights seeded by ``seed`` (None: 0, or the shipped trained
    weights of the :data:`TRAINED` networks; ``digits_cnn``: always the shipped trained weights, ``seed``
    ignored). ``lazy=True`` gives the structure only (zero weights, no memory)."""
    _check(name)
    if name == "digits_cnn":
        if lazy:
            return _digits.float_net({k: np.broadcast_to(np.float32(0), s) for k, s in _digits.SHAPES.items()})
        return _digits.float_net()
    if _trained(name, seed) and not lazy:
        from . import train_eeg
        net = train_eeg.float_net(train_eeg.load_weights())
        net.meta.update(zoo=name, seed=None, application=NETWORKS[name]["application"])
        return net
    seed = 0 if seed is None else seed
    net = BUILDERS[name](seed=seed, lazy=lazy)
    net.meta.update(zoo=name, seed=seed, application=NETWORKS[name]["application"])
    return net


def calibration_data(name, seed=None, samples=None):
    """The default calibration batch: seeded standard-normal inputs (like normalised images or EEG),
    ``NETWORKS[name]["calibration_samples"]`` of them (1-8: enough for the min/max ranges of random
    weights and fast at 224x224); for the trained networks, the shipped batch of training inputs."""
    _check(name)
    if name == "digits_cnn":
        return _digits.calibration()
    if _trained(name, seed):
        from . import train_eeg
        return train_eeg.calibration()
    seed = 0 if seed is None else seed
    n = samples or NETWORKS[name]["calibration_samples"]
    rng = np.random.default_rng([seed, 0x5CA1E])
    return rng.standard_normal((n, *NETWORKS[name]["input_shape"]), dtype=np.float32)


def build(name, *, seed=None, calibration=None) -> Graph:
    """The quantised int8 graph of ``name`` (``seed`` as in :func:`float_net`). Built graphs with the
    default calibration are cached per (name, seed) in this process and shared: treat them as read-only
    (see :func:`clear_cache`)."""
    _check(name)
    if not _trained(name, seed) and seed is None:
        seed = 0
    key = (name, seed)
    if calibration is None and key in _CACHE:
        return _CACHE[key]
    net = float_net(name, seed)
    data = calibration_data(name, seed) if calibration is None else calibration
    graph = quantize_net(net, data)
    graph.meta.update(zoo=name, seed=seed, application=NETWORKS[name]["application"],
                      input_q=graph.input.q)
    if calibration is None:
        _CACHE[key] = graph
    return graph


def clear_cache():
    _CACHE.clear()


def info():
    """Rows for ``scalenet zoo``: structure computed without drawing weights or calibrating (fast)."""
    rows = []
    for name, e in NETWORKS.items():
        s = structure(float_net(name, lazy=True))
        rows.append({"name": name, "application": e["application"], "input_shape": list(e["input_shape"]),
                     "layers": s["layers"], "params": s["params"], "macs": s["macs"],
                     "output_shape": list(s["output_shape"]), "description": e["description"],
                     "source": e["source"], "reference": e["reference"]})
    return rows
