"""Transaction-level model of the accelerator: runs a descriptor chain on a memory image with numpy.

It reads exactly what the hardware reads — descriptors, weight blocks in engine order, parameter
tables, HWC activations with pixel strides — and writes what the hardware writes, so it checks the
compiler's layouts independently of the reference (which works on IR tensors), and it is the fast
golden model the RTL's memory contents are compared with. It also counts the engine's passes and
cycles of the weight-stationary array (docs/architecture.md), the input of the scheduler's cycle model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scalenet import kernels
from scalenet.quant import AddRescale, decode_multiplier, requantize, requantize_add
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.regmap import DESCRIPTOR_BYTES, Opcode, unpack_descriptor

__all__ = ["LayerStats", "run_descriptors", "DescriptorError"]


class DescriptorError(ValueError):
    """A descriptor the hardware would reject (bad opcode or a field beyond the configuration)."""


@dataclass
class LayerStats:
    index: int
    opcode: str
    macs: int = 0                 # useful multiply-accumulates
    array_cycles: int = 0         # cycles the PE array is stepping (weight-stationary passes)
    read_bytes: int = 0
    write_bytes: int = 0
    extra: dict = field(default_factory=dict)

    def utilisation(self, config: AcceleratorConfig):
        return self.macs / (self.array_cycles * config.pes) if self.array_cycles else 0.0


def _read_hwc(memory, addr, h, w, c, stride, signed):
    idx = addr + (np.arange(h * w)[:, None] * stride + np.arange(c)[None])
    if idx.size and idx.max() >= memory.size:
        raise DescriptorError(f"activation read at 0x{addr:x} runs past the end of memory")
    raw = memory[idx].reshape(h, w, c)
    return raw.view(np.int8).astype(np.int64) if signed else raw.astype(np.int64)


def _write_hwc(memory, addr, values, stride, signed):
    h, w, c = values.shape
    idx = addr + (np.arange(h * w)[:, None] * stride + np.arange(c)[None])
    if idx.size and idx.max() >= memory.size:
        raise DescriptorError(f"activation write at 0x{addr:x} runs past the end of memory")
    memory[idx.reshape(-1)] = values.astype(np.int8 if signed else np.uint8).view(np.uint8).reshape(-1)


def _params(memory, addr, n):
    raw = memory[addr:addr + 8 * n].reshape(n, 8)
    bias = raw[:, 0:4].copy().view("<i4").reshape(n).astype(np.int64)
    mantissa = (raw[:, 4].astype(np.int64) | raw[:, 5].astype(np.int64) << 8 | raw[:, 6].astype(np.int64) << 16)
    shift = raw[:, 7].astype(np.int64)
    return bias, decode_multiplier(mantissa, shift)


def _qtype(signed):
    return "int8" if signed else "uint8"


def _conv(memory, d, cfg, stats):
    from scalenet.driver.compiler import ci_tile_range
    rows, cols = cfg.rows, cfg.cols
    h, w, cin = d["in_height"], d["in_width"], d["in_channels"]
    oh, ow, cout = d["out_height"], d["out_width"], d["out_channels"]
    kh, kw, sh, sw = d["kernel_h"], d["kernel_w"], d["stride_h"], d["stride_w"]
    pt, pl, pb, pr = d["pad_top"], d["pad_left"], d["pad_bottom"], d["pad_right"]
    groups = d["groups"]
    if groups < 1 or cin % groups or cout % groups:
        raise DescriptorError(f"groups={groups} does not divide {cin} inputs and {cout} outputs")
    x = _read_hwc(memory, d["in_addr"], h, w, cin, d["in_pixel_stride"], d["in_signed"]) - d["x_zero_point"]
    cin_pad = -(-cin // cols) * cols
    xp = np.zeros((h + pt + pb, w + pl + pr, cin_pad), dtype=np.int64)     # padding reads as x_zp
    xp[pt:pt + h, pl:pl + w, :cin] = x
    n_co_tiles = -(-cout // rows)
    acc = np.zeros((oh, ow, n_co_tiles * rows), dtype=np.int64)
    blocks_addr = d["weight_addr"]
    n_blocks = 0
    for co_t in range(n_co_tiles):
        tiles = ci_tile_range(co_t, rows, cols, cout, cin, groups)
        for ky in range(kh):
            for kx in range(kw):
                win = xp[ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw]   # oh, ow, cin_pad
                for ci_t in tiles:
                    a = blocks_addr + n_blocks * rows * cols
                    block = memory[a:a + rows * cols].view(np.int8).reshape(rows, cols).astype(np.int64)
                    n_blocks += 1
                    acc[:, :, co_t * rows:(co_t + 1) * rows] += win[:, :, ci_t * cols:(ci_t + 1) * cols] @ block.T
                    stats.array_cycles += oh * ow
    if d["weight_bytes"] != n_blocks * rows * cols or d["param_bytes"] != 8 * cout:
        raise DescriptorError(f"descriptor lengths (weights {d['weight_bytes']}, params {d['param_bytes']}) do not "
                              f"match the layer ({n_blocks * rows * cols}, {8 * cout})")
    bias, mult = _params(memory, d["param_addr"], cout)
    acc = acc[:, :, :cout] + bias
    y = requantize(acc, mult, d["y_zero_point"], _qtype(d["out_signed"]), lo=d["clamp_lo"], hi=d["clamp_hi"], axis=2)
    y = _fused_pool(y, d, cfg)
    _write_hwc(memory, d["out_addr"], y.astype(np.int64), d["out_pixel_stride"], d["out_signed"])
    stats.macs = oh * ow * cout * kh * kw * (cin // groups)
    stats.read_bytes = h * w * cin + n_blocks * rows * cols + 8 * cout
    stats.write_bytes = y.size
    stats.extra["weight_blocks"] = n_blocks


def _fused_pool(y, d, cfg):
    """The conv output (oh, ow, c) max-pooled as ``pool_after``/``pool_ceil`` ask (rtl/fused_pool.py)."""
    if d["pool_after"] == 0:
        return y
    if d["pool_after"] not in (2, 3):
        raise DescriptorError(f"pool_after={d['pool_after']}: a fused max pool is 2 (2x2/2) or 3 (3x3/2)")
    k = d["pool_after"]
    oh, ow, c = y.shape
    if oh < k or ow < k:
        raise DescriptorError(f"a fused {k}x{k} pool needs a conv output of at least {k}x{k}, not {oh}x{ow}")
    pw = kernels.pool_output_size(ow, k, 2, 0, 0, 1, bool(d["pool_ceil"]))
    if pw * c > cfg.pool_row_bytes:
        raise DescriptorError(f"fused pool row {pw}x{c} exceeds the {cfg.pool_row_bytes}-byte row buffer")
    pooled = kernels.max_pool(y.transpose(2, 0, 1)[None], (k, k), (2, 2), 0, 1, bool(d["pool_ceil"]))
    return pooled[0].transpose(1, 2, 0)


def _pool(memory, d, cfg, stats, op):
    h, w, c = d["in_height"], d["in_width"], d["in_channels"]
    x = _read_hwc(memory, d["in_addr"], h, w, c, d["in_pixel_stride"], d["in_signed"])
    nchw = x.transpose(2, 0, 1)[None]
    pads = (d["pad_top"], d["pad_left"], d["pad_bottom"], d["pad_right"])
    kernel, stride = (d["kernel_h"], d["kernel_w"]), (d["stride_h"], d["stride_w"])
    qtype = _qtype(d["out_signed"])
    # A window overhanging the end pad (ceil_mode) shows as an output one larger than the floor size.
    ceil = any(kernels.pool_output_size(n, k, s, p0, p1) != o for n, k, s, p0, p1, o in (
        (h, kernel[0], stride[0], pads[0], pads[2], d["out_height"]),
        (w, kernel[1], stride[1], pads[1], pads[3], d["out_width"]))) if op != Opcode.GLOBAL_AVGPOOL else False
    if op == Opcode.MAXPOOL:
        y = kernels.max_pool(nchw, kernel, stride, pads, 1, ceil_mode=ceil)
        y = _fit(y, d)
        y = np.clip(y, d["clamp_lo"], d["clamp_hi"])
    else:
        if op == Opcode.GLOBAL_AVGPOOL:
            total, count = kernels.global_avg_pool(nchw, d["x_zero_point"])
            count = np.full(total.shape, count)
            n_params = 1
        else:
            total, count = kernels.avg_pool(nchw, kernel, stride, pads, bool(d["count_include_pad"]), ceil,
                                            d["x_zero_point"])
            total, count = _fit(total, d), _fit(count, d)
            n_params = d["kernel_h"] * d["kernel_w"]
        _, mult = _params(memory, d["param_addr"], n_params)
        index = np.zeros_like(count) if op == Opcode.GLOBAL_AVGPOOL else count - 1
        y = requantize(total, mult[index], d["y_zero_point"], qtype, lo=d["clamp_lo"], hi=d["clamp_hi"])
    y = y[0].transpose(1, 2, 0)
    _write_hwc(memory, d["out_addr"], y.astype(np.int64), d["out_pixel_stride"], d["out_signed"])
    stats.read_bytes = h * w * c
    stats.write_bytes = y.size


def _fit(y, d):
    oh, ow = d["out_height"], d["out_width"]
    if y.shape[2:] == (oh, ow):
        return y
    raise DescriptorError(f"pool output {y.shape[2:]} does not match the descriptor's {oh}x{ow}")


def _add(memory, d, cfg, stats):
    h, w, c = d["in_height"], d["in_width"], d["in_channels"]
    a = _read_hwc(memory, d["in_addr"], h, w, c, d["in_pixel_stride"], d["in_signed"])
    b = _read_hwc(memory, d["b_addr"], h, w, c, d["in_pixel_stride"], d["in_signed"])
    raw = memory[d["param_addr"]:d["param_addr"] + 16]
    rescale = AddRescale(int(raw[0:4].view("<u4")[0]), int(raw[4:8].view("<u4")[0]), int(raw[8]))
    y = requantize_add(a, d["x_zero_point"], b, d["b_zero_point"], rescale, d["y_zero_point"],
                       _qtype(d["out_signed"]), lo=d["clamp_lo"], hi=d["clamp_hi"])
    _write_hwc(memory, d["out_addr"], y.astype(np.int64), d["out_pixel_stride"], d["out_signed"])
    stats.read_bytes = 2 * a.size
    stats.write_bytes = y.size


def run_descriptors(memory: np.ndarray, desc_addr: int, count: int, config: AcceleratorConfig | None = None):
    """Run ``count`` descriptors from ``desc_addr`` on ``memory`` (uint8, modified in place)."""
    cfg = config or AcceleratorConfig()
    all_stats = []
    for i in range(count):
        a = desc_addr + i * DESCRIPTOR_BYTES
        d = unpack_descriptor(memory[a:a + DESCRIPTOR_BYTES].tobytes())
        try:
            op = Opcode(d["opcode"])
        except ValueError:
            raise DescriptorError(f"descriptor {i}: unknown opcode {d['opcode']}") from None
        stats = LayerStats(i, op.name)
        if d["pool_after"] and op != Opcode.CONV:
            raise DescriptorError(f"descriptor {i}: pool_after={d['pool_after']} on a {op.name} "
                                  "(only a CONV fuses a pool)")
        if op in (Opcode.CONV, Opcode.DENSE):
            _conv(memory, d, cfg, stats)
        elif op in (Opcode.MAXPOOL, Opcode.AVGPOOL, Opcode.GLOBAL_AVGPOOL):
            _pool(memory, d, cfg, stats, op)
        else:
            _add(memory, d, cfg, stats)
        all_stats.append(stats)
    return all_stats
