"""Pooling engine: runs one MAXPOOL, AVGPOOL or GLOBAL_AVGPOOL descriptor, bit-exact with ``cosim.tlm._pool``.

Why one tap-byte per cycle
--------------------------
Pooling is a small share of a network's work (no multiplies), so the engine spends its area on nothing
but a byte-wide block RAM and a few counters: for every output byte (pixel ``(oy, ox)``, channel ``c``)
it walks the ``kernel_h x kernel_w`` window, one tap per cycle, and reduces the taps (max, or the sum of
``x - x_zero_point``). That costs ``kernel_h * kernel_w`` cycles per output byte and makes clipping,
padding, ``count_include_pad`` and ceil-mode overhang windows plain per-tap bounds checks:

- a tap inside the image contributes; padding never wins a max and adds nothing to a sum;
- the count of an average is the number of taps inside the image, or inside image + explicit pads with
  ``count_include_pad`` (the ceil-mode overhang is never counted, as in onnxruntime); the requantisation
  multiplier is parameter entry ``count - 1`` (the compiler stores ``kernel_h * kernel_w`` entries).

Line buffer
-----------
Input bytes (raster HWC, ``in_channels`` per pixel) are written into a ring of ``R = kernel_h +
stride_h`` rows of ``in_width * in_channels`` bytes in one byte-wide :class:`~amaranth.lib.memory.Memory`
of ``line_buffer_bytes`` entries: row ``r`` lives in slot ``r mod R``. While output row ``oy`` computes,
its window rows are ``[max(0, iy0), iy0 + kernel_h)`` (``iy0 = oy * stride_h - pad_top``); the loader may
write rows up to ``max(0, iy0) + R - 1``, i.e. prefetch ``stride_h`` rows for the next output row without
touching a slot that is still read. An output row starts when its last window row has arrived.

Global average pooling bypasses the line buffer: each input byte is added into a per-channel int32
accumulator (a ``max_channels``-entry Memory; the first pixel initialises instead of adding, so nothing
needs clearing), then each channel is requantised with the single parameter entry.

Averages go through :class:`~scalenet.rtl.requant.Requantizer` (zero point ``y_zero_point``, clamp
``[clamp_lo, clamp_hi]``); a max is only clamped.

Flow control: one pipeline enable ``~res.valid | res.ready`` holds the tap counters, the synchronous read
ports and the reduction registers together, so back pressure from ``out`` never drops a tap.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

from .config import AcceleratorConfig
from .engine_ports import check_config, engine_members
from .regmap import Opcode
from .requant import Requantizer

__all__ = ["PoolEngine"]


def as_value9(byte, is_signed):
    """A byte as a 9-bit signed value: int8 when ``is_signed``, else uint8."""
    return Cat(byte, is_signed & byte[7]).as_signed()


class PoolEngine(wiring.Component):
    """One MAXPOOL / AVGPOOL / GLOBAL_AVGPOOL descriptor.

    Members
    -------
    desc : In(descriptor_layout())
        The descriptor; must be stable from ``start`` until ``done``.
    start : In(1)
        Pulse while idle to run ``desc``.
    busy : Out(1)
    done : Out(1)
        One-cycle pulse when the last output byte has been accepted and all input bytes consumed.
    params : In(stream.Signature(64))
        Parameter entries (8 bytes, little endian: bias, mantissa, shift): ``kernel_h * kernel_w`` for
        AVGPOOL, 1 for GLOBAL_AVGPOOL, none for MAXPOOL. Consumed before any output is computed.
    pixels : In(stream.Signature(8))
        Input bytes, raster HWC order (``in_height * in_width * in_channels`` of them).
    out : Out(stream.Signature(8))
        Output bytes, raster HWC order (``out_height * out_width * in_channels``).
    """

    def __init__(self, config: AcceleratorConfig | None = None):
        self._config = check_config(config)
        super().__init__(engine_members())

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        d = self.desc

        lb_depth = cfg.line_buffer_bytes
        # Column offsets ix * C + c over the padded, overhanging row, signed.
        col_w = ((cfg.max_width + 2 * cfg.max_pad + 2 * cfg.max_kernel + 2) * cfg.max_channels).bit_length() + 2
        n_params = 1 << ceil_log2(cfg.max_kernel * cfg.max_kernel)     # any 6-bit count - 1 is in range

        m.submodules.lb = lb = Memory(shape=8, depth=lb_depth, init=[])
        lb_w = lb.write_port()
        lb_r = lb.read_port()
        m.submodules.pm = pm = Memory(shape=30, depth=n_params, init=[])      # mantissa 24 | shift 6
        pm_w = pm.write_port()
        pm_r = pm.read_port()
        m.submodules.gap = gap = Memory(shape=signed(32), depth=1 << ceil_log2(cfg.max_channels), init=[])
        gap_w = gap.write_port()
        gap_r = gap.read_port(transparent_for=(gap_w,))
        m.submodules.rq = rq = Requantizer()

        is_max = Signal()
        is_gap = Signal()
        m.d.comb += [is_max.eq(d.opcode == Opcode.MAXPOOL), is_gap.eq(d.opcode == Opcode.GLOBAL_AVGPOOL)]

        # Geometry registered at start.
        row_bytes = Signal(32)
        ring_bytes = Signal(32)
        sw_c = Signal(24)
        pl_c = Signal(24)
        n_rows = Signal(5)                  # R = kernel_h + stride_h
        m.d.comb += n_rows.eq(d.kernel_h + d.stride_h)

        def wrap(base):
            nxt = base + row_bytes
            return Mux(nxt >= ring_bytes, nxt - ring_bytes, nxt)

        # ---------------------------------------------------------------------------------------------
        # Pipeline enable and the result register (input of the clamp or of the requantiser).
        en = Signal()
        res_valid = Signal()
        res_val = Signal(signed(32))
        res_mant = Signal(24)
        res_shift = Signal(6)
        res_ready = Signal()
        m.d.comb += en.eq(~res_valid | res_ready)

        # ---------------------------------------------------------------------------------------------
        # Loader: pixels -> line buffer (pooling) or per-channel accumulators (GAP).
        ld_active = Signal()
        ld_row = Signal(17)                  # complete rows received
        ld_off = Signal(32)                  # byte within the row
        ld_c = Signal(16)                    # channel of the byte
        ld_base = Signal(32)                 # slot base of row ld_row
        top_row = Signal(17)                 # oldest row still read by the compute side
        compute_done = Signal()
        ld_allowed = Signal()
        m.d.comb += ld_allowed.eq(ld_active & (ld_row < d.in_height)
                                  & (is_gap | compute_done | (ld_row < top_row + n_rows)))
        m.d.comb += self.pixels.ready.eq(ld_allowed)
        ld_take = Signal()
        m.d.comb += ld_take.eq(self.pixels.valid & ld_allowed)
        m.d.comb += [
            lb_w.addr.eq(ld_base + ld_off),
            lb_w.data.eq(self.pixels.payload),
            lb_w.en.eq(ld_take & ~is_gap),
        ]
        with m.If(ld_take):
            m.d.sync += [ld_off.eq(ld_off + 1), ld_c.eq(Mux(ld_c == d.in_channels - 1, 0, ld_c + 1))]
            with m.If(ld_off == row_bytes - 1):
                m.d.sync += [ld_off.eq(0), ld_row.eq(ld_row + 1), ld_base.eq(wrap(ld_base))]
        loaded_all = Signal()
        m.d.comb += loaded_all.eq(ld_row == d.in_height)

        # GAP accumulation: read acc[c] now, write acc[c] + (x - x_zp) next cycle (transparent read).
        g_valid = Signal()
        g_first = Signal()
        g_c = Signal(16)
        g_val = Signal(signed(11))
        m.d.sync += [
            g_valid.eq(ld_take & is_gap),
            g_first.eq((ld_row == 0) & (ld_off < d.in_channels)),
            g_c.eq(ld_c),
            g_val.eq(as_value9(self.pixels.payload, d.in_signed) - d.x_zero_point),
        ]
        m.d.comb += [
            gap_w.addr.eq(g_c),
            gap_w.data.eq(Mux(g_first, 0, gap_r.data) + g_val),
            gap_w.en.eq(g_valid),
        ]

        # ---------------------------------------------------------------------------------------------
        # Parameter loading.
        p_count = Signal(range(n_params + 1))
        p_need = Signal(range(16 * 16 + 1))     # registered at start: keeps the product off params.ready
        p_loading = Signal()
        m.d.comb += [
            self.params.ready.eq(p_loading),
            pm_w.addr.eq(p_count),
            pm_w.data.eq(self.params.payload[32:62]),
            pm_w.en.eq(p_loading & self.params.valid),
        ]
        with m.If(p_loading & self.params.valid):
            m.d.sync += p_count.eq(p_count + 1)

        # ---------------------------------------------------------------------------------------------
        # Tap generator (stage 0).
        oy = Signal(16)
        ox = Signal(16)
        c = Signal(16)
        ky = Signal(4)
        kx = Signal(4)
        iy0 = Signal(signed(18))
        iy = Signal(signed(18))
        ix0 = Signal(signed(18))
        ix = Signal(signed(18))
        ix0_c = Signal(signed(col_w))        # ix0 * C
        col = Signal(signed(col_w))          # ix * C + c
        row_base = Signal(32)
        top_base = Signal(32)
        cnt = Signal(range(16 * 16 + 1))

        gap_reading = Signal()               # the GAP accumulators' read port serves the output pass
        emit = Signal()                      # a tap (or a GAP channel) leaves stage 0 this cycle
        gap_out = Signal()
        tap_ok = Signal()
        tap_counted = Signal()
        first = Signal()
        last = Signal()
        m.d.comb += [
            first.eq((ky == 0) & (kx == 0)),
            last.eq((ky == d.kernel_h - 1) & (kx == d.kernel_w - 1)),
            tap_ok.eq((iy >= 0) & (iy < d.in_height) & (ix >= 0) & (ix < d.in_width)),
        ]
        with m.If(d.count_include_pad):
            m.d.comb += tap_counted.eq((iy >= -d.pad_top.as_signed()) & (iy < d.in_height + d.pad_bottom)
                                       & (ix >= -d.pad_left.as_signed()) & (ix < d.in_width + d.pad_right))
        with m.Else():
            m.d.comb += tap_counted.eq(tap_ok)
        cnt_next = Signal(range(16 * 16 + 1))
        m.d.comb += cnt_next.eq(Mux(first, 0, cnt) + tap_counted)

        lb_addr = Signal(32)
        m.d.comb += lb_addr.eq(row_base + col[:32])
        if lb_depth & (lb_depth - 1):          # keep don't-care reads (padding taps) inside the memory
            lb_addr = Mux(lb_addr < lb_depth, lb_addr, 0)
        m.d.comb += [
            lb_r.addr.eq(lb_addr),
            lb_r.en.eq(en),
            pm_r.addr.eq(Mux(is_gap, 0, cnt_next - 1)),
            pm_r.en.eq(en),
            gap_r.addr.eq(Mux(gap_reading, c, ld_c)),
            gap_r.en.eq(Mux(gap_reading, en, 1)),
        ]

        # ---------------------------------------------------------------------------------------------
        # Stage 1: the byte read (or the GAP sum) and the reduction.
        s1_valid = Signal()
        s1_first = Signal()
        s1_last = Signal()
        s1_ok = Signal()
        s1_gap = Signal()
        red_max = Signal(signed(10))
        red_sum = Signal(signed(32))
        with m.If(en):
            m.d.sync += [
                s1_valid.eq(emit),
                s1_first.eq(first | gap_out),
                s1_last.eq(last | gap_out),
                s1_ok.eq(tap_ok),
                s1_gap.eq(gap_out),
            ]
        value = Signal(signed(9))
        m.d.comb += value.eq(as_value9(lb_r.data, d.in_signed))
        max_next = Signal(signed(10))
        sum_next = Signal(signed(32))
        prev_max = Signal(signed(10))
        m.d.comb += prev_max.eq(Mux(s1_first, -256, red_max))
        with m.If(s1_ok & (value > prev_max)):
            m.d.comb += max_next.eq(value)
        with m.Else():
            m.d.comb += max_next.eq(prev_max)
        m.d.comb += sum_next.eq(Mux(s1_first, 0, red_sum) + Mux(s1_ok, value - d.x_zero_point, 0))
        with m.If(en):
            with m.If(s1_valid):
                m.d.sync += [red_max.eq(max_next), red_sum.eq(sum_next)]
            m.d.sync += [
                res_valid.eq(s1_valid & s1_last),
                res_val.eq(Mux(s1_gap, gap_r.data, Mux(is_max, max_next, sum_next))),
                res_mant.eq(pm_r.data[:24]),
                res_shift.eq(pm_r.data[24:30]),
            ]

        # ---------------------------------------------------------------------------------------------
        # Output: clamp (max) or requantise (averages).
        lo, hi = d.clamp_lo, d.clamp_hi
        clamped = Signal(signed(32))
        m.d.comb += clamped.eq(Mux(res_val < lo, lo, Mux(res_val > hi, hi, res_val)))
        m.d.comb += [
            rq.i.payload.acc.eq(res_val),
            rq.i.payload.mantissa.eq(res_mant),
            rq.i.payload.shift.eq(res_shift),
            rq.i.payload.zero_point.eq(d.y_zero_point),
            rq.i.payload.lo.eq(lo),
            rq.i.payload.hi.eq(hi),
            rq.i.payload.out_unsigned.eq(~d.out_signed),
        ]
        with m.If(is_max):
            m.d.comb += [
                self.out.valid.eq(res_valid),
                self.out.payload.eq(clamped[:8]),
                res_ready.eq(self.out.ready),
            ]
        with m.Else():
            m.d.comb += [
                rq.i.valid.eq(res_valid),
                res_ready.eq(rq.i.ready),
                self.out.valid.eq(rq.o.valid),
                self.out.payload.eq(rq.o.payload.data),
                rq.o.ready.eq(self.out.ready),
            ]

        # Output byte counters: the run ends when out_height * out_width * in_channels bytes have left.
        # Their bounds are registered at start (keeps descriptor subtractions off the output handshake).
        oc = Signal(16)
        ocx = Signal(16)
        ocy = Signal(17)
        oc_end, ocx_end, ocy_end = Signal(16), Signal(16), Signal(17)
        out_done = Signal()
        m.d.comb += out_done.eq(ocy == ocy_end)
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += oc.eq(oc + 1)
            with m.If(oc == oc_end):
                m.d.sync += [oc.eq(0), ocx.eq(ocx + 1)]
                with m.If(ocx == ocx_end):
                    m.d.sync += [ocx.eq(0), ocy.eq(ocy + 1)]

        # ---------------------------------------------------------------------------------------------
        # Control.
        m.d.comb += self.done.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        row_bytes.eq(d.in_width * d.in_channels),
                        sw_c.eq(d.stride_w * d.in_channels),
                        pl_c.eq(d.pad_left * d.in_channels),
                        p_count.eq(0),
                        ld_row.eq(0), ld_off.eq(0), ld_c.eq(0), ld_base.eq(0),
                        top_row.eq(0), top_base.eq(0), compute_done.eq(0),
                        oc.eq(0), ocx.eq(0), ocy.eq(0),
                        oc_end.eq(d.in_channels - 1), ocx_end.eq(Mux(is_gap, 1, d.out_width) - 1),
                        ocy_end.eq(Mux(is_gap, 1, d.out_height)),
                        p_need.eq(Mux(is_max, 0, Mux(is_gap, 1, d.kernel_h * d.kernel_w))),
                    ]
                    m.next = "INIT"
            with m.State("INIT"):
                m.d.sync += [
                    ring_bytes.eq(row_bytes * n_rows),
                    ld_active.eq(1),
                    oy.eq(0), ox.eq(0), c.eq(0), ky.eq(0), kx.eq(0),
                    iy0.eq(-d.pad_top.as_signed()), ix0.eq(-d.pad_left.as_signed()),
                    ix0_c.eq(-pl_c.as_signed()),
                ]
                m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.comb += p_loading.eq(p_count < p_need)
                with m.If(p_count >= p_need):
                    with m.If(is_gap):
                        m.next = "GAP_ACC"
                    with m.Else():
                        m.next = "ADVANCE"
            with m.State("ADVANCE"):
                # Move the oldest needed row up to max(0, iy0).
                with m.If((top_row.as_signed() < iy0)):
                    m.d.sync += [top_row.eq(top_row + 1), top_base.eq(wrap(top_base))]
                with m.Else():
                    m.next = "WAIT"
            with m.State("WAIT"):
                need = iy0 + d.kernel_h
                with m.If((ld_row == d.in_height) | (ld_row.as_signed() >= need)):
                    m.d.sync += [
                        iy.eq(iy0), ix.eq(ix0), col.eq(ix0_c), row_base.eq(top_base),
                        ky.eq(0), kx.eq(0), c.eq(0), ox.eq(0),
                    ]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += emit.eq(en)
                with m.If(en):
                    m.d.sync += cnt.eq(cnt_next)
                    with m.If(kx != d.kernel_w - 1):
                        m.d.sync += [kx.eq(kx + 1), ix.eq(ix + 1), col.eq(col + d.in_channels)]
                    with m.Else():
                        m.d.sync += [kx.eq(0), ix.eq(ix0), col.eq(ix0_c + c)]
                        with m.If(ky != d.kernel_h - 1):
                            m.d.sync += [ky.eq(ky + 1), iy.eq(iy + 1)]
                            with m.If(iy >= 0):
                                m.d.sync += row_base.eq(wrap(row_base))
                        with m.Else():
                            m.d.sync += [ky.eq(0), iy.eq(iy0), row_base.eq(top_base)]
                            with m.If(c != d.in_channels - 1):
                                m.d.sync += [c.eq(c + 1), col.eq(ix0_c + c + 1)]
                            with m.Else():
                                m.d.sync += c.eq(0)
                                with m.If(ox != d.out_width - 1):
                                    m.d.sync += [
                                        ox.eq(ox + 1), ix0.eq(ix0 + d.stride_w), ix.eq(ix0 + d.stride_w),
                                        ix0_c.eq(ix0_c + sw_c), col.eq(ix0_c + sw_c),
                                    ]
                                with m.Else():
                                    m.d.sync += [
                                        ox.eq(0), ix0.eq(-d.pad_left.as_signed()),
                                        ix0_c.eq(-pl_c.as_signed()),
                                        oy.eq(oy + 1), iy0.eq(iy0 + d.stride_h),
                                    ]
                                    with m.If(oy == d.out_height - 1):
                                        m.d.sync += compute_done.eq(1)
                                        m.next = "FINISH"
                                    with m.Else():
                                        m.next = "ADVANCE"
            with m.State("GAP_ACC"):
                with m.If(loaded_all & ~g_valid):
                    m.d.sync += [c.eq(0), gap_reading.eq(1)]
                    m.next = "GAP_OUT"
            with m.State("GAP_OUT"):
                m.d.comb += [gap_out.eq(1), emit.eq(en)]
                with m.If(en):
                    m.d.sync += c.eq(c + 1)
                    with m.If(c == d.in_channels - 1):
                        m.d.sync += compute_done.eq(1)
                        m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(out_done & loaded_all):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += [ld_active.eq(0), compute_done.eq(0), gap_reading.eq(0)]
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
