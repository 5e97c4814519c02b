"""SCALENet RTL: the accelerator's Amaranth components (``scalenet.rtl``).

Importing this package does not import Amaranth: the blocks are loaded on first attribute access, so
``scalenet.rtl.regmap`` stays usable where no HDL tooling is installed and ``import scalenet`` stays fast.

Blocks: :class:`~scalenet.rtl.requant.Requantizer` (int32 -> int8, bit-exact with
:func:`scalenet.quant.requantize`), :class:`~scalenet.rtl.pe_array.PEArray` (output-stationary int8 MAC
array) and :class:`~scalenet.rtl.line_buffer.LineBuffer` (raster pixels -> padded K x K windows).
"""

import importlib

__all__ = ["Requantizer", "PEArray", "LineBuffer"]

_LAZY = {
    "Requantizer": "requant",
    "PEArray": "pe_array",
    "LineBuffer": "line_buffer",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return sorted([*globals(), *_LAZY])
