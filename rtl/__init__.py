"""SCALENet RTL: the accelerator's Amaranth components (``scalenet.rtl``).

Importing this package does not import Amaranth: the blocks are loaded on first attribute access, so
``scalenet.rtl.regmap`` stays usable where no HDL tooling is installed and ``import scalenet`` stays fast.

Blocks: :class:`~scalenet.rtl.top.ScaleNet` (the accelerator top level),
:class:`~scalenet.rtl.dot_array.DotArray` (the weight-stationary int8 PE array),
:class:`~scalenet.rtl.requant.Requantizer` (int32 -> int8, bit-exact with
:func:`scalenet.quant.requantize`) and :class:`~scalenet.rtl.fused_pool.FusedMaxPool` (a conv's output
max-pooled on its way to memory).
"""

import importlib

__all__ = ["ScaleNet", "DotArray", "Requantizer", "FusedMaxPool"]

_LAZY = {
    "ScaleNet": "top",
    "DotArray": "dot_array",
    "Requantizer": "requant",
    "FusedMaxPool": "fused_pool",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return sorted([*globals(), *_LAZY])
