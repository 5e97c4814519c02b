"""Elaboration parameters of the accelerator: what the RTL is built with, what CONFIG0/CONFIG1 report,
and the limits the layer compiler checks layers against. Plain Python, shared by RTL, driver and models."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["AcceleratorConfig"]


@dataclass(frozen=True)
class AcceleratorConfig:
    rows: int = 8                    #: PE rows: output channels in parallel
    cols: int = 8                    #: PE columns: input channels in parallel
    max_kernel: int = 7              #: largest kernel height/width
    max_stride: int = 4
    max_pad: int = 15
    max_width: int = 256             #: widest input row the line buffers hold
    max_channels: int = 1024         #: most channels of a layer's input or output
    line_buffer_bytes: int = 64 * 1024    #: (kernel_h + stride_h) rows x width x input channels must fit
    weight_buffer_bytes: int = 64 * 1024  #: one layer's weights, padded to R x C blocks, must fit
    data_bytes: int = 8              #: AXI4 data width in bytes
    #: PE product registers: 1 (DSP blocks), or 2 -- LUT products in two nibble steps, one cycle more of
    #: latency (:class:`~scalenet.rtl.dot_array.DotArray`; what ``boards.build`` uses with LUT PEs)
    pe_product_stages: int = 1

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"accelerator config {name} must be a positive integer, not {value!r}")
        if self.rows > 255 or self.cols > 255:
            raise ValueError("the PE array is at most 255 x 255")
        if self.pe_product_stages not in (1, 2):
            raise ValueError(f"pe_product_stages must be 1 or 2, not {self.pe_product_stages}")
        if self.data_bytes not in (4, 8, 16, 32):
            raise ValueError(f"data_bytes must be 4, 8, 16 or 32, not {self.data_bytes}")

    @property
    def out_row_bytes(self) -> int:
        """One output row of a conv/dense layer: the engine's output buffer holds two, in the line-buffer
        budget (the largest power of two <= line_buffer_bytes / 2)."""
        return 1 << max(0, (self.line_buffer_bytes // 2).bit_length() - 1)

    @property
    def pool_row_bytes(self) -> int:
        """One pooled row (``pooled_width * channels``) of a conv with a fused max pool: the running-max
        row buffer of rtl/fused_pool.py, half an output row bank."""
        return max(1, self.out_row_bytes // 2)

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    def describe(self) -> str:
        return f"{self.rows}x{self.cols} PEs, K<={self.max_kernel}, width<={self.max_width}, channels<={self.max_channels}"
