"""SCALENet: an open int8 FPGA accelerator for DNNs with a heterogeneous real-time scheduler.

The package root stays thin: importing ``scalenet`` loads only numpy-level code, so the CPU path and the
scheduler start fast and work where no HDL tooling is installed. ``scalenet.rtl`` and the others import
Amaranth on demand.
"""

from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all

__version__ = "0.1.0"

__all__ = ["load", "__version__", *_errors_all]


def load(model, **kwargs):
    """Load a network: a zoo name, an ONNX path/bytes/ModelProto, or a Graph (returned as is).

    See :func:`scalenet.onnx_import.load_onnx` for quantisation options of float models.
    """
    from .ir import Graph
    if isinstance(model, Graph):
        return model
    if isinstance(model, str):
        from . import zoo
        if model in zoo.NETWORKS:
            return zoo.build(model, **kwargs)
    from .onnx_import import load_onnx
    return load_onnx(model, **kwargs)
