"""Pure-numpy training of the zoo's small trained networks (``digits_cnn``, ``eeg_mpcnn``).

Training reads the network's own :class:`~scalenet.floatnet.FloatNet` (built with any weights, e.g. the
zoo's lazy zero weights), so what is trained is exactly the graph that gets quantised: a chain of conv
(1-D or 2-D, stride 1, symmetric padding), ReLU, non-overlapping max pooling, flatten and dense, ending in
logits. Parameters are named ``<node>_w`` / ``<node>_b``. Convolutions run as im2col matrix products
(float32 BLAS), the loss is softmax cross-entropy and the optimiser Adam; one seeded generator draws the
He initialisation and the epoch shuffles, so a run is repeatable on a given numpy/BLAS. No torch: the
package keeps numpy as its only numerical dependency.
"""

from __future__ import annotations

import numpy as np

from ..floatnet import FloatNet

__all__ = ["Chain", "he_init", "softmax_xent", "Adam", "fit", "param_shapes"]


# -- layers with their backward passes ---------------------------------------------------------------------
def _im2col(x, kernel, pads):
    """Stride 1: (N, C, H, W) -> (N*H'*W', C*KH*KW) in the (C, KH, KW) order of OIHW weights."""
    n, c, h, w = x.shape
    (kh, kw), (ph, pw) = kernel, pads
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))    # N C H' W' KH KW
    oh, ow = win.shape[2:4]
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * oh * ow, c * kh * kw), (oh, ow)


def _col2im(cols, shape, kernel, pads, out_hw):
    n, c, h, w = shape
    (kh, kw), (ph, pw), (oh, ow) = kernel, pads, out_hw
    g = cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)           # N C KH KW H' W'
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + oh, j:j + ow] += g[:, :, i, j]
    return dxp[:, :, ph:ph + h, pw:pw + w]


def _pool_fwd(x, kernel):
    n, c, h, w = x.shape
    kh, kw = kernel
    r = x.reshape(n, c, h // kh, kh, w // kw, kw)
    out = r.max(axis=(3, 5))
    mask = r == out[:, :, :, None, :, None]
    mask = mask / mask.sum(axis=(3, 5), keepdims=True)                          # ties share the gradient
    return out, mask


def _pool_bwd(dy, mask):
    n, c, h2, kh, w2, kw = mask.shape
    return (mask * dy[:, :, :, None, :, None]).reshape(n, c, h2 * kh, w2 * kw)


def _pairs(v, n):
    return (int(v),) * n if np.isscalar(v) else tuple(int(i) for i in v)


class Chain:
    """The trainable form of a chain-shaped FloatNet (see the module docstring for what is supported).

    1-D tensors (N, C, W) are handled as (N, C, 1, W). Unsupported structure raises ValueError."""

    def __init__(self, net: FloatNet):
        self.name = net.name
        self.input_shape = tuple(net.input_shape)
        self.one_d = len(self.input_shape) == 2
        self.ops = []
        prev = net.input_name
        for node in net.nodes:
            if node.inputs != [prev]:
                raise ValueError(f"{net.name}: node {node.name} does not continue a chain")
            a = node.attrs
            if node.op == "conv":
                w = a["weight"]
                nd = w.ndim - 2
                k = tuple(w.shape[2:])
                pads = _pairs(a.get("pads", 0), 2 * nd)
                if (_pairs(a.get("stride", 1), nd) != (1,) * nd or _pairs(a.get("dilation", 1), nd) != (1,) * nd
                        or a.get("groups", 1) != 1 or pads[:nd] != pads[nd:] or a.get("bias") is None):
                    raise ValueError(f"{net.name}: conv {node.name} must be stride 1, dense, symmetric pads, biased")
                if nd == 1:
                    k, pads = (1, *k), (0, pads[0])
                self.ops.append(("conv", node.name, (k, pads[:2] if nd == 2 else pads)))
            elif node.op == "dense":
                if a.get("bias") is None:
                    raise ValueError(f"{net.name}: dense {node.name} needs a bias")
                self.ops.append(("dense", node.name, None))
            elif node.op == "relu":
                self.ops.append(("relu", node.name, None))
            elif node.op == "maxpool":
                nd = 1 if self.one_d else 2
                k = _pairs(a["kernel"], nd)
                st = _pairs(a.get("stride") or k, nd)
                if st != k or any(_pairs(a.get("pads") or 0, 2 * nd)) or a.get("ceil_mode", False):
                    raise ValueError(f"{net.name}: max pool {node.name} must be non-overlapping, unpadded")
                self.ops.append(("pool", node.name, (1, *k) if nd == 1 else k))
            elif node.op == "flatten":
                self.ops.append(("flatten", node.name, None))
            else:
                raise ValueError(f"{net.name}: op {node.op} ({node.name}) is not trainable here")
            prev = node.output
        if prev not in net.outputs:
            raise ValueError(f"{net.name}: the chain does not end at the network output")

    def forward(self, p, x, need_cache=True):
        """Logits of a batch and the caches of the backward pass."""
        h = x[:, :, None, :] if self.one_d else x
        caches = []
        for op, name, arg in self.ops:
            if op == "conv":
                w = p[name + "_w"]
                kernel, pads = arg
                cols, (oh, ow) = _im2col(h, kernel, pads)
                out = cols @ w.reshape(w.shape[0], -1).T + p[name + "_b"]
                caches.append((cols, h.shape, (oh, ow)) if need_cache else None)
                h = out.reshape(h.shape[0], oh, ow, -1).transpose(0, 3, 1, 2)
            elif op == "relu":
                caches.append(h if need_cache else None)
                h = np.maximum(h, 0)
            elif op == "pool":
                h, mask = _pool_fwd(h, arg)
                caches.append(mask if need_cache else None)
            elif op == "flatten":
                caches.append(h.shape)
                h = h.reshape(len(h), -1)
            else:                               # dense
                caches.append(h if need_cache else None)
                h = h @ p[name + "_w"].T + p[name + "_b"]
        return h, caches

    def loss_and_grads(self, p, x, y):
        logits, caches = self.forward(p, x)
        loss, d = softmax_xent(logits, y)
        g = {}
        for i in range(len(self.ops) - 1, -1, -1):
            op, name, arg = self.ops[i]
            cache = caches[i]
            if op == "dense":
                g[name + "_w"], g[name + "_b"] = d.T @ cache, d.sum(axis=0)
                if i:
                    d = d @ p[name + "_w"]
            elif op == "flatten":
                d = d.reshape(cache)
            elif op == "pool":
                d = _pool_bwd(d, cache)
            elif op == "relu":
                d = d * (cache > 0)
            else:                               # conv
                cols, x_shape, out_hw = cache
                w = p[name + "_w"]
                co = w.shape[0]
                dy2 = d.transpose(0, 2, 3, 1).reshape(-1, co)
                g[name + "_w"] = (dy2.T @ cols).reshape(w.shape)
                g[name + "_b"] = dy2.sum(axis=0)
                if i:                           # the input needs no gradient
                    d = _col2im(dy2 @ w.reshape(co, -1), x_shape, *arg, out_hw)
        return loss, g

    def predict(self, p, x, batch=512):
        """Float logits in batches (the same arithmetic as training)."""
        return np.concatenate([self.forward(p, x[i:i + batch], need_cache=False)[0]
                               for i in range(0, len(x), batch)])


def softmax_xent(logits, y):
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    n = len(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(n), y].mean())
    d = np.exp(logp)
    d[np.arange(n), y] -= 1
    d /= n
    return loss, d


def param_shapes(net: FloatNet) -> dict:
    """``{"<node>_w": shape, "<node>_b": shape}`` of every conv/dense, in node order."""
    out = {}
    for node in net.nodes:
        if node.op in ("conv", "dense"):
            out[node.name + "_w"] = tuple(np.shape(node.attrs["weight"]))
            out[node.name + "_b"] = tuple(np.shape(node.attrs["bias"]))
    return out


def he_init(shapes, rng):
    """He-normal weights (fan-in of the trailing axes), zero biases, drawn in ``shapes`` order."""
    p = {}
    for k, shape in shapes.items():
        if k.endswith("_b"):
            p[k] = np.zeros(shape, dtype=np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            p[k] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return p


class Adam:
    def __init__(self, params, b1=0.9, b2=0.999, eps=1e-8):
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.b1, self.b2, self.eps, self.step_count = b1, b2, eps, 0

    def step(self, p, g, rate):
        b1, b2, eps = self.b1, self.b2, self.eps
        self.step_count += 1
        step = self.step_count
        m, v = self.m, self.v
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
            mh = m[k] / (1 - b1 ** step)
            vh = v[k] / (1 - b2 ** step)
            p[k] = (p[k] - rate * mh / (np.sqrt(vh) + eps)).astype(np.float32)


def fit(chain: Chain, shapes, x, y, epochs, *, seed=0, batch=32, lr=3e-3, halve_every=10, verbose=False,
        validate=None):
    """Train from scratch: returns (float32 parameters, mean training loss per epoch). The learning rate
    halves every ``halve_every`` epochs. ``validate(params) -> score`` (higher is better), if given, runs
    after every epoch and the parameters of the best-scoring epoch are returned (early stopping)."""
    rng = np.random.default_rng(seed)
    p = he_init(shapes, rng)
    opt = Adam(p)
    history, best = [], None
    for epoch in range(epochs):
        rate = lr * 0.5 ** (epoch // halve_every)
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            loss, g = chain.loss_and_grads(p, x[idx], y[idx])
            total += loss * len(idx)
            opt.step(p, g, rate)
        history.append(total / len(order))
        line = f"epoch {epoch + 1:3d}  loss {history[-1]:.4f}"
        if validate is not None:
            score = float(validate(p))
            line += f"  validation {score:.4f}"
            if best is None or score > best[0]:
                best = (score, {k: v.copy() for k, v in p.items()})
        if verbose:
            print(line, flush=True)
    return (p if best is None else best[1]), history
