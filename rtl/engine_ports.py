"""The ports every layer engine shares, so the sequencer can drive any of them the same way."""

from amaranth.lib import stream
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .regmap import descriptor_layout

__all__ = ["check_config", "engine_members"]


def check_config(config) -> AcceleratorConfig:
    config = AcceleratorConfig() if config is None else config
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
    return config


def engine_members(**extra) -> dict:
    """``desc`` (held while busy), ``start``/``busy``/``done``, the ``params`` beats, the ``pixels`` bytes
    in and the ``out`` bytes (raster HWC), plus an engine's own ``extra`` ports."""
    return {
        "desc": In(descriptor_layout()),
        "start": In(1),
        "busy": Out(1),
        "done": Out(1),
        "params": In(stream.Signature(64)),
        "pixels": In(stream.Signature(8)),
        "out": Out(stream.Signature(8)),
        **extra,
    }
