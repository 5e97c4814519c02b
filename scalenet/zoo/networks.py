"""The nine networks of the paper's two applications, as seeded float networks.

Every builder follows a published layer table (cited per function) with He-initialised random weights;
the zoo's job is the workload shape (layers, parameters, MACs) the accelerator and the scheduler see,
not trained accuracy. Conventions shared by all:

- batch normalisation is folded into the preceding convolution, so every conv has a bias and BN adds no
  parameters of its own (a framework that counts BN's scale and shift separately reports more);
- LRN (AlexNet/GoogLeNet papers), dropout and the final softmax are omitted: outputs are logits;
- a MAC is one multiply-accumulate of a conv or fully connected layer (pooling, adds and biases count 0);
- every conv/dense that the publication follows by a ReLU has a ReLU node after it (fused on quantisation).
"""

from __future__ import annotations

from ._builder import Builder

__all__ = ["BUILDERS"]


def lenet5(seed=0, lazy=False):
    """LeNet-5 (LeCun et al., Proc. IEEE 1998), 32x32x1: C1 conv5x5x6 - S2 - C3 conv5x5x16 - S4 -
    C5 conv5x5x120 - F6 fc84 - fc10, ReLU and 2x2 max pooling in place of tanh/subsampling, and C3 fully
    connected to S2 (the paper's sparse C3 table has 1,516 parameters; the full one 2,416)."""
    b = Builder("lenet5", (1, 32, 32), seed=seed, lazy=lazy)
    x = b.conv("input", 6, 5, name="c1")
    x = b.maxpool(x, 2, name="s2")
    x = b.conv(x, 16, 5, name="c3")
    x = b.maxpool(x, 2, name="s4")
    x = b.conv(x, 120, 5, name="c5")
    x = b.flatten(x, name="flatten")
    x = b.dense(x, 84, name="f6")
    x = b.dense(x, 10, relu=False, name="output")
    return b.finish(x)


def cifar10_quick(seed=0, lazy=False):
    """Caffe's cifar10_quick (BVLC caffe examples/cifar10/cifar10_quick_train_test.prototxt): conv5x5x32
    pad2 - maxpool3/2 - relu - conv5x5x32 pad2 - relu - avgpool3/2 - conv5x5x64 pad2 - relu - avgpool3/2
    - fc64 - fc10. Caffe pools in ceil mode (32 -> 16 -> 8 -> 4), reproduced with ``ceil_mode``. ReLU and
    max pooling commute, so pool1's ReLU is applied before the pool (and fused into conv1). As in the
    prototxt, ip1 has no ReLU."""
    b = Builder("cifar10_quick", (3, 32, 32), seed=seed, lazy=lazy)
    x = b.conv("input", 32, 5, pad=2, name="conv1")
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="pool1")
    x = b.conv(x, 32, 5, pad=2, name="conv2")
    x = b.avgpool(x, 3, 2, ceil_mode=True, name="pool2")
    x = b.conv(x, 64, 5, pad=2, name="conv3")
    x = b.avgpool(x, 3, 2, ceil_mode=True, name="pool3")
    x = b.flatten(x, name="flatten")
    x = b.dense(x, 64, relu=False, name="ip1")
    x = b.dense(x, 10, relu=False, name="ip2")
    return b.finish(x)


VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg11_cifar(seed=0, lazy=False):
    """VGG-11 (configuration "A" of Simonyan & Zisserman, ICLR 2015) adapted to 32x32 CIFAR-10 in the
    usual way (e.g. kuangliu/pytorch-cifar ``VGG('VGG11')``): eight conv3x3 pad1 layers
    64-M-128-M-256-256-M-512-512-M-512-512-M (BN folded) leaving 1x1x512, then one fc 512->10."""
    b = Builder("vgg11_cifar", (3, 32, 32), seed=seed, lazy=lazy)
    x = "input"
    for v in VGG11:
        x = b.maxpool(x, 2) if v == "M" else b.conv(x, v, 3, pad=1)
    x = b.flatten(x, name="flatten")
    x = b.dense(x, 10, relu=False, name="fc")
    return b.finish(x)


def resnet20(seed=0, lazy=False):
    """ResNet-20 for CIFAR-10: :func:`resnet_cifar` with depth 20."""
    return resnet_cifar(20, seed=seed, lazy=lazy)


def resnet_cifar(depth=20, seed=0, lazy=False):
    """ResNet-``depth`` for CIFAR-10 (He et al., CVPR 2016, sec. 4.2; depth = 6n + 2): conv3x3x16, three
    stages of n basic blocks (16, 32, 64 filters; stride 2 at the first block of stages 2 and 3), global
    average pool, fc10.

    Shortcuts are option A (identity; parameter-free), expressed with the IR's ops: the shortcut is
    subsampled by a 1x1 stride-2 max pool (= ``x[:, ::2, ::2]``) and zero-padded in channels by
    splitting the block's second conv into two halves: the first half is added to the shortcut, the second
    half (whose shortcut channels are zero) is only ReLU'd, and the halves are concatenated. This is
    exactly relu(conv(h) + pad(x)) with the same weights, parameters and MACs as the unsplit block.
    The residual branch's last conv is initialised at half the He scale so activations do not grow
    with depth.
    """
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, not {depth}")
    b = Builder(f"resnet{depth}", (3, 32, 32), seed=seed, lazy=lazy)
    x = b.conv("input", 16, 3, pad=1, name="conv1")
    cin = 16
    for stage, planes in enumerate((16, 32, 64), start=1):
        for block in range(1, (depth - 2) // 6 + 1):
            p = f"s{stage}b{block}_"
            stride = 2 if (stage > 1 and block == 1) else 1
            h = b.conv(x, planes, 3, stride=stride, pad=1, name=p + "conv1")
            if stride == 1 and cin == planes:
                y = b.conv(h, planes, 3, pad=1, relu=False, gain=0.5, name=p + "conv2")
                x = b.add(y, x, relu=True, name=p + "add")
            else:
                # Option A: shortcut = zero-pad(x[:, ::2, ::2]) from cin to planes channels.
                sc = b.maxpool(x, 1, stride, name=p + "shortcut")
                ya = b.conv(h, cin, 3, pad=1, relu=False, gain=0.5, name=p + "conv2a")
                yb = b.conv(h, planes - cin, 3, pad=1, relu=True, gain=0.5, name=p + "conv2b")
                a = b.add(ya, sc, relu=True, name=p + "add")
                x = b.concat([a, yb], name=p + "concat")
            cin = planes
    x = b.gap(x, name="gap")
    x = b.flatten(x, name="flatten")
    x = b.dense(x, 10, relu=False, name="fc")
    return b.finish(x)


MOBILENET_V1 = [  # (pointwise output channels at width 1.0, depthwise stride)
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]


def mobilenet_v1_025(seed=0, lazy=False):
    """MobileNetV1 with width multiplier 0.25 at 224x224 (Howard et al., arXiv:1704.04861, Table 1 with
    alpha = 0.25): conv3x3/2 x8, thirteen depthwise-separable blocks (depthwise 3x3 + pointwise 1x1, BN
    folded) up to 256 channels, global average pool, fc 256->1000."""
    alpha = 0.25
    b = Builder("mobilenet_v1_025", (3, 224, 224), seed=seed, lazy=lazy)
    c = int(32 * alpha)
    x = b.conv("input", c, 3, stride=2, pad=1, name="conv1")
    for i, (out, stride) in enumerate(MOBILENET_V1, start=1):
        x = b.conv(x, c, 3, stride=stride, pad=1, groups=c, name=f"dw{i}")
        c = int(out * alpha)
        x = b.conv(x, c, 1, name=f"pw{i}")
    x = b.gap(x, name="gap")
    x = b.flatten(x, name="flatten")
    x = b.dense(x, 1000, relu=False, name="fc")
    return b.finish(x)


def _fire(b, x, name, squeeze, expand):
    s = b.conv(x, squeeze, 1, name=f"{name}_squeeze")
    e1 = b.conv(s, expand, 1, name=f"{name}_expand1x1")
    e3 = b.conv(s, expand, 3, pad=1, name=f"{name}_expand3x3")
    return b.concat([e1, e3], name=f"{name}_concat")


def squeezenet1_1(seed=0, lazy=False):
    """SqueezeNet 1.1 (DeepScale/SqueezeNet v1.1 release; torchvision ``squeezenet1_1``): conv3x3/2 x64,
    maxpool3/2 (ceil), fire2-3, maxpool, fire4-5, maxpool, fire6-9, conv1x1 x1000 + ReLU, global average
    pool (dropout omitted)."""
    b = Builder("squeezenet1_1", (3, 224, 224), seed=seed, lazy=lazy)
    x = b.conv("input", 64, 3, stride=2, name="conv1")
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="pool1")
    x = _fire(b, x, "fire2", 16, 64)
    x = _fire(b, x, "fire3", 16, 64)
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="pool3")
    x = _fire(b, x, "fire4", 32, 128)
    x = _fire(b, x, "fire5", 32, 128)
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="pool5")
    x = _fire(b, x, "fire6", 48, 192)
    x = _fire(b, x, "fire7", 48, 192)
    x = _fire(b, x, "fire8", 64, 256)
    x = _fire(b, x, "fire9", 64, 256)
    x = b.conv(x, 1000, 1, name="conv10")
    x = b.gap(x, name="gap")
    x = b.flatten(x, name="flatten")
    return b.finish(x)


def alexnet(seed=0, lazy=False):
    """AlexNet, single-tower torchvision layout (Krizhevsky, arXiv:1404.5997 "one weird trick" channel
    counts; torchvision ``alexnet``) without LRN and dropout: conv11x11/4 x64 pad2 - maxpool3/2 -
    conv5x5 x192 pad2 - maxpool - conv3x3 x384 - conv3x3 x256 - conv3x3 x256 - maxpool (6x6x256) -
    fc4096 - fc4096 - fc1000."""
    b = Builder("alexnet", (3, 224, 224), seed=seed, lazy=lazy)
    x = b.conv("input", 64, 11, stride=4, pad=2, name="conv1")
    x = b.maxpool(x, 3, 2, name="pool1")
    x = b.conv(x, 192, 5, pad=2, name="conv2")
    x = b.maxpool(x, 3, 2, name="pool2")
    x = b.conv(x, 384, 3, pad=1, name="conv3")
    x = b.conv(x, 256, 3, pad=1, name="conv4")
    x = b.conv(x, 256, 3, pad=1, name="conv5")
    x = b.maxpool(x, 3, 2, name="pool5")
    x = b.flatten(x, name="flatten")
    x = b.dense(x, 4096, name="fc6")
    x = b.dense(x, 4096, name="fc7")
    x = b.dense(x, 1000, relu=False, name="fc8")
    return b.finish(x)


GOOGLENET_INCEPTION = {  # Szegedy et al. 2015, Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def _inception(b, x, name, c1, r3, c3, r5, c5, pp):
    y1 = b.conv(x, c1, 1, name=f"i{name}_1x1")
    y3 = b.conv(b.conv(x, r3, 1, name=f"i{name}_3x3_reduce"), c3, 3, pad=1, name=f"i{name}_3x3")
    y5 = b.conv(b.conv(x, r5, 1, name=f"i{name}_5x5_reduce"), c5, 5, pad=2, name=f"i{name}_5x5")
    yp = b.conv(b.maxpool(x, 3, 1, pad=1, name=f"i{name}_pool"), pp, 1, name=f"i{name}_pool_proj")
    return b.concat([y1, y3, y5, yp], name=f"i{name}_concat")


def googlenet(seed=0, lazy=False):
    """GoogLeNet / Inception-v1 (Szegedy et al., CVPR 2015, Table 1) with the paper's 5x5 branch (not
    torchvision's 3x3), without LRN, dropout and the two auxiliary classifiers: conv7x7/2 x64 - maxpool3/2
    - conv1x1 x64 - conv3x3 x192 - maxpool3/2 - 3a 3b - maxpool3/2 - 4a..4e - maxpool3/2 - 5a 5b - global
    average pool - fc1000. Max pools run in ceil mode (112 -> 56 -> 28 -> 14 -> 7, as in the table)."""
    b = Builder("googlenet", (3, 224, 224), seed=seed, lazy=lazy)
    x = b.conv("input", 64, 7, stride=2, pad=3, name="conv1")
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="pool1")
    x = b.conv(x, 64, 1, name="conv2_reduce")
    x = b.conv(x, 192, 3, pad=1, name="conv2")
    x = b.maxpool(x, 3, 2, ceil_mode=True, name="pool2")
    for name, cfg in GOOGLENET_INCEPTION.items():
        x = _inception(b, x, name, *cfg)
        if name in ("3b", "4e"):
            x = b.maxpool(x, 3, 2, ceil_mode=True, name=f"pool{name[0]}")
    x = b.gap(x, name="gap")
    x = b.flatten(x, name="flatten")
    x = b.dense(x, 1000, relu=False, name="fc")
    return b.finish(x)


def eeg_mpcnn(seed=0, lazy=False):
    """Seizure detection on raw scalp EEG in the style of the authors' max-pooling CNN (MPCNN; Page,
    Shea & Mohsenin, "Wearable seizure detection using convolutional neural networks with transfer
    learning", ISCAS 2016): one 1-s window of 23 channels at 256 Hz (CHB-MIT montage) enters a 1-D CNN
    whose input channels are the EEG channels. The exact published layer table is not available to us,
    so this is our own instance of that style (documented here and counted in the tests):

    ====== ========================== ============ ========= ==========
    layer  op                          output       params    MACs
    ====== ========================== ============ ========= ==========
    conv1  conv1d k7 pad3, 23->16, ReLU (16, 256)   2,592     659,456
    pool1  maxpool 4/4                 (16, 64)
    conv2  conv1d k5 pad2, 16->32, ReLU (32, 64)    2,592     163,840
    pool2  maxpool 4/4                 (32, 16)
    conv3  conv1d k3 pad1, 32->64, ReLU (64, 16)    6,208      98,304
    pool3  maxpool 4/4                 (64, 4)
    fc1    dense 256->32, ReLU         (32,)        8,224       8,192
    fc2    dense 32->2 (logits)        (2,)            66          64
    ====== ========================== ============ ========= ==========
    """
    b = Builder("eeg_mpcnn", (23, 256), seed=seed, lazy=lazy)
    x = b.conv("input", 16, 7, pad=3, name="conv1")
    x = b.maxpool(x, 4, name="pool1")
    x = b.conv(x, 32, 5, pad=2, name="conv2")
    x = b.maxpool(x, 4, name="pool2")
    x = b.conv(x, 64, 3, pad=1, name="conv3")
    x = b.maxpool(x, 4, name="pool3")
    x = b.flatten(x, name="flatten")
    x = b.dense(x, 32, name="fc1")
    x = b.dense(x, 2, relu=False, name="fc2")
    return b.finish(x)


BUILDERS = {
    "lenet5": lenet5,
    "cifar10_quick": cifar10_quick,
    "vgg11_cifar": vgg11_cifar,
    "resnet20": resnet20,
    "mobilenet_v1_025": mobilenet_v1_025,
    "squeezenet1_1": squeezenet1_1,
    "alexnet": alexnet,
    "googlenet": googlenet,
    "eeg_mpcnn": eeg_mpcnn,
}
