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

Flow control: the pipeline never stalls. The tap counters emit a tap only while the output queue
(:class:`~.credit_queue.CreditQueue`, behind the clamp or the requantiser) has room for every window
result still in flight, so back pressure from ``out`` stops the counters and nothing else: no enable
fans out from the output handshake into the stages and the line buffer's 32 blocks (that enable was the
whole 8x8 SoC's critical path, 12.56 ns).

Timing (>= 100 MHz on ECP5): the tap pipeline is G (counters) -> A (registered tap: line-buffer and GAP
reads from registered addresses) -> B, B2 (the line buffer's two registers per bank; GAP sum registered
off its block) -> B3 (bank select; parameter entry arrives, read at the registered count - 1) -> C (byte
registered off the bank select; reduction) -> D (window result taken from the reduction registers) ->
result. Every bound a counter is compared
with is a register set when the layer starts, and counters carry registered "last" flags. Since a window's
last tap reads the line buffer one cycle after it leaves the counters, the oldest row is released only once
stage A is empty.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

from .banked_memory import BankedMemory
from .collisions import UNDEFINED_COLLISIONS
from .config import AcceleratorConfig
from .credit_queue import CreditQueue
from .engine_ports import check_config, engine_members
from .regmap import Opcode
from .requant import Requantizer

__all__ = ["PoolEngine"]

OUT_QUEUE = 32
"""Output queue entries: a window's last tap reaches the queue about 22 cycles after the counters (7 tap
stages, 14 in the requantiser); a few more keep 1x1 windows at one byte per cycle."""


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

        # Deeper than one block RAM (the default is 32 blocks): read through two registers per bank (stages
        # B, B2; the second in front of the bank select, see BankedMemory for what it measured). Written a
        # cycle late from registers (address, data, each bank's decoded enable): the write address
        # ld_base + ld_off, its bank decode and 5.7 ns of route to the blocks' write enables were 11.4 ns in
        # the whole 8x8 design. A row is read at least 3 edges after its last byte's write lands (that
        # byte's take -> ld_row -> rows_in -> RUN -> stage A -> read; test_maxpool_reads_a_row_right_after_
        # its_only_byte is the tightest case), so a late write is always seen; and it lands in a slot that
        # was free a cycle earlier already.
        m.submodules.lb = lb = BankedMemory(8, lb_depth, registered_write=True, read_latency=3)
        # mantissa 24 | shift 6; written in PARAMS, read only after it (:mod:`.collisions`)
        m.submodules.pm = pm = Memory(shape=30, depth=n_params, init=[], attrs=UNDEFINED_COLLISIONS)
        pm_w = pm.write_port()
        pm_r = pm.read_port()
        # Read-modify-write, but not transparent: the transparent port's bypass multiplexer sat between the
        # block's 5.8 ns clock-to-out and b2_gsum / g2_acc (10.6 ns in the whole 8x8 design). Every write
        # the accumulation's read cannot see is forwarded from registers (g_fwd1..3 below) and the output
        # pass reads only once the last write has landed, so a word read while its address is written is
        # never used (:mod:`.collisions`): the last write lands an edge before the output pass's first read.
        m.submodules.gap = gap = Memory(shape=signed(32), depth=1 << ceil_log2(cfg.max_channels), init=[],
                                        attrs=UNDEFINED_COLLISIONS)
        gap_w = gap.write_port()
        gap_r = gap.read_port()
        m.submodules.rq = rq = Requantizer()

        is_max = Signal()
        is_gap = Signal()
        m.d.comb += [is_max.eq(d.opcode == Opcode.MAXPOOL), is_gap.eq(d.opcode == Opcode.GLOBAL_AVGPOOL)]
        # Registered at start for use during the run: keeps the opcode decode off the enables.
        is_max_r, is_gap_r = Signal(), Signal()

        # Geometry registered at start (or in INIT, from start-registered values): every bound the counters
        # are compared with is a register, so no descriptor arithmetic (subtractions, sums, products) sits
        # on a per-cycle path.
        row_bytes = Signal(32)
        # The setup products' operands, registered at start and multiplied in SETUP (one more cycle per
        # layer): the descriptor's route into the multiplier block, the multiplier and its route to
        # row_bytes were 10.75 ns in the whole 8x8 design (kernel_h * kernel_w into p_need 9.5 ns).
        rb_w, rb_c = Signal(16), Signal(16)
        p_kh, p_kw = Signal(4), Signal(4)
        s_sw, s_pl = Signal(3), Signal(4)     # stride_w, pad_left: for sw_c and pl_c (9.3 ns from desc)
        sw_c = Signal(24)
        pl_c = Signal(24)
        n_rows = Signal(5)                  # R = kernel_h + stride_h
        m.d.comb += n_rows.eq(d.kernel_h + d.stride_h)
        nr_m2 = Signal(5)                   # R - 2
        nr_one = Signal()                   # R == 1
        # A counter's "at its last value" flag is a register updated with the counter (compared one step
        # ahead with last - 1, or on restart set from a start-time "count is 1" flag): keeps wide equality
        # compares off the nested counter enables.
        fl_m2 = {}                          # name -> (count - 2 register, count == 1 register)

        def end_regs(name, width):
            fl_m2[name] = (Signal(width, name=f"{name}_m2"), Signal(name=f"{name}_one"))
            return fl_m2[name]

        def step(counter, flag, name, restart):
            """sync statements: counter to 0 when ``restart`` else + 1, with its registered last flag."""
            m2, one = fl_m2[name]
            return [counter.eq(Mux(restart, 0, counter + 1)), flag.eq(Mux(restart, one, counter == m2))]

        def clear(counter, flag, name):
            return [counter.eq(0), flag.eq(fl_m2[name][1])]

        for name, width in (("kx", 4), ("ky", 4), ("c", 16), ("ox", 16), ("oy", 16), ("ocx", 16)):
            end_regs(name, width)

        # Bounds of a counted tap: the image, or image + explicit pads with count_include_pad.
        cy_lo, cy_hi, cx_lo, cx_hi = (Signal(signed(18)) for _ in range(4))

        class Base:
            """A ring slot base (a multiple of row_bytes) with its slot index and a registered "last slot"
            flag: the wrap is a 1-bit select, not a 32-bit compare against R * row_bytes."""
            def __init__(self, name):
                self.base = Signal(32, name=name)
                self.slot = Signal(5, name=f"{name}_slot")
                self.last = Signal(name=f"{name}_last")

            def wrap(self):
                return [self.base.eq(Mux(self.last, 0, self.base + row_bytes)),
                        self.slot.eq(Mux(self.last, 0, self.slot + 1)),
                        self.last.eq(Mux(self.last, nr_one, self.slot == nr_m2))]

            def copy(self, other):
                return [self.base.eq(other.base), self.slot.eq(other.slot), self.last.eq(other.last)]

            def reset(self, one):
                return [self.base.eq(0), self.slot.eq(0), self.last.eq(one)]

        # ---------------------------------------------------------------------------------------------
        # The output queue's credit (``ok``: emit a tap) and the result registers (res_max: input of the
        # clamp; res_val: of the requantiser).
        m.submodules.out_q = out_q = CreditQueue(width=8, depth=OUT_QUEUE)
        ok = out_q.ok
        res_valid = Signal()
        res_val = Signal(signed(32))
        # A max is a 10-bit value: the clamp compares that, not the 32-bit result (descriptor bounds ->
        # two 32-bit carry chains -> the queue's data register was 9.5 ns in the 8x8 SoC).
        res_max = Signal(signed(10))
        res_mant = Signal(24)
        res_shift = Signal(6)

        # ---------------------------------------------------------------------------------------------
        # Loader: pixels -> line buffer (pooling) or per-channel accumulators (GAP).
        ld_row = Signal(17)                  # complete rows received
        ld_left = Signal(17)                 # rows still to receive
        ld_off = Signal(32)                  # byte within the row
        ld_c = Signal(16)                    # channel of the byte
        ldb = Base("ld_base")                # slot base of row ld_row
        ld_base = ldb.base
        top_row = Signal(17)                 # oldest row still read by the compute side
        # top_row + R - ld_row, kept as a counter: keeps an add and a 17-bit compare off pixels.ready.
        ld_room = Signal(signed(8))
        loaded_all = Signal()                # registered ld_row == in_height
        ld_left_one = Signal()               # registered ld_left == 1
        ld_run = Signal()                    # loader running: from INIT until the last row is in
        compute_done = Signal()
        ld_allowed = Signal()
        # Registered terms only (room_ok is ld_room > 0, computed with it): pixels.ready is one LUT deep.
        room_ok = Signal()
        ld_gate = Signal()                   # is_gap | compute_done | room_ok, all registered
        m.d.comb += [
            ld_gate.eq(is_gap_r | compute_done | room_ok),
            ld_allowed.eq(ld_run & ld_gate),
        ]
        m.d.comb += self.pixels.ready.eq(ld_allowed)
        ld_take = Signal()
        m.d.comb += ld_take.eq(self.pixels.valid & ld_allowed)
        m.d.comb += [
            lb.w_addr.eq(ld_base + ld_off),
            lb.w_data.eq(self.pixels.payload),
            lb.w_en.eq(ld_take & ~is_gap_r),
        ]
        ld_row_done = Signal()
        top_adv = Signal()                   # top_row advances this cycle (driven by the FSM)
        # The room it frees is granted a cycle late (safe: room only shrinks by the loader's own rows):
        # keeps the ADVANCE compare off the room counter.
        top_adv_q = Signal()
        top_lt = Signal()                    # registered top_row < iy0
        top_fresh = Signal()                 # top_lt is up to date (set in ADVANCE, see there)
        m.d.sync += top_adv_q.eq(top_adv)
        ld_end = Signal()                    # registered ld_off == row_bytes - 1
        ld_c_last = Signal()                 # registered ld_c == in_channels - 1
        row_m2 = Signal(32)
        row_one = Signal()
        m.d.comb += ld_row_done.eq(ld_take & ld_end)
        with m.If(ld_take):
            m.d.sync += [
                ld_off.eq(ld_off + 1), ld_end.eq(ld_off == row_m2), *step(ld_c, ld_c_last, "c", ld_c_last),
            ]
            with m.If(ld_row_done):
                m.d.sync += [
                    ld_off.eq(0), ld_end.eq(row_one), ld_row.eq(ld_row + 1), ld_left.eq(ld_left - 1), *ldb.wrap(),
                    loaded_all.eq(ld_left_one), ld_run.eq(~ld_left_one), ld_left_one.eq(ld_left == 2),
                ]
        room_adv = Signal(signed(8))
        m.d.comb += room_adv.eq(ld_room + top_adv_q)
        # ld_row_done (behind the pixel handshake) only selects between sums and compares made from
        # registers: the count subtracting it took 10.19 ns from is_gap_r in the 8x8 SoC.
        m.d.sync += [ld_room.eq(Mux(ld_row_done, room_adv - 1, room_adv)),
                     room_ok.eq(Mux(ld_row_done, room_adv > 1, room_adv > 0))]

        # GAP accumulation: read acc[c] when the byte is taken (cycle t), register the read data (the block
        # RAM's clock-to-out then does not stack on the 32-bit add), compute acc[c] + (x - x_zp) at t + 2 into
        # the write register gw (the sum's carry chain then does not stack on the route to the block's data
        # pins: 9.8 ns in the whole 8x8 design) and write it at t + 3. The read misses the writes of the bytes
        # taken at t - 1, t - 2 and t - 3 (in_channels <= 3): those sums are forwarded from gw, gw2 and gw3
        # by flags compared a cycle ahead (g_fwd1..3, most recent first).
        g_valid, g_first, g_c, g_val = Signal(), Signal(), Signal(16), Signal(signed(11))
        g2_valid, g2_first, g2_c, g2_val = Signal(), Signal(), Signal(16), Signal(signed(11))
        g2_acc = Signal(signed(32))
        g_fwd1, g_fwd2, g_fwd3 = Signal(), Signal(), Signal()
        g_sum = Signal(signed(32))
        gw_en, gw_c, gw_sum = Signal(), Signal(16), Signal(signed(32))        # the write of the byte at t - 1
        gw2_en, gw2_c, gw2_sum = Signal(), Signal(16), Signal(signed(32))     # t - 2 (written last edge)
        gw3_sum = Signal(signed(32))                                          # t - 3
        m.d.sync += [
            g_valid.eq(ld_take & is_gap_r),
            g_first.eq((ld_row == 0) & (ld_off < d.in_channels)),
            g_c.eq(ld_c),
            g_val.eq(as_value9(self.pixels.payload, d.in_signed) - d.x_zero_point),
            g2_valid.eq(g_valid), g2_first.eq(g_first), g2_c.eq(g_c), g2_val.eq(g_val),
            g2_acc.eq(gap_r.data),
            # g holds the byte of t; g2, gw and gw2 those of t - 1, t - 2 and t - 3 (a cycle from stage g2).
            g_fwd1.eq(g2_valid & (g2_c == g_c)),
            g_fwd2.eq(gw_en & (gw_c == g_c)),
            g_fwd3.eq(gw2_en & (gw2_c == g_c)),
            gw_en.eq(g2_valid), gw_c.eq(g2_c), gw_sum.eq(g_sum),
            gw2_en.eq(gw_en), gw2_c.eq(gw_c), gw2_sum.eq(gw_sum),
            gw3_sum.eq(gw2_sum),
        ]
        m.d.comb += [
            g_sum.eq(Mux(g2_first, 0,
                         Mux(g_fwd1, gw_sum, Mux(g_fwd2, gw2_sum, Mux(g_fwd3, gw3_sum, g2_acc)))) + g2_val),
            gap_w.addr.eq(gw_c),
            gap_w.data.eq(gw_sum),
            gap_w.en.eq(gw_en),
        ]

        # ---------------------------------------------------------------------------------------------
        # Parameter loading.
        p_count = Signal(range(n_params + 1))
        p_need = Signal(range(16 * 16 + 1))     # registered in SETUP: keeps the product off params.ready
        p_loading = Signal()                 # registered p_count < p_need (a compare into params.ready:
        p_nm1 = Signal.like(p_need)          # 9.2 ns to the top's skid in the whole 8x8 design)
        m.d.comb += [
            self.params.ready.eq(p_loading),
            pm_w.addr.eq(p_count),
            pm_w.data.eq(self.params.payload[32:62]),
            pm_w.en.eq(p_loading & self.params.valid),
        ]
        with m.If(p_loading & self.params.valid):
            m.d.sync += [p_count.eq(p_count + 1), p_loading.eq(p_count != p_nm1)]

        # ---------------------------------------------------------------------------------------------
        # Tap generator (stage G): counters and the per-tap flags, registered into stage A.
        oy = Signal(16)
        ox = Signal(16)
        c = Signal(16)
        ky = Signal(4)
        kx = Signal(4)
        iy0 = Signal(signed(18))
        m.d.sync += top_lt.eq(top_row.as_signed() < iy0)
        need = Signal(signed(18))            # iy0 + kernel_h: the rows output row oy waits for
        iy = Signal(signed(18))
        ix0 = Signal(signed(18))
        ix = Signal(signed(18))
        ix0_c = Signal(signed(col_w))        # ix0 * C
        col = Signal(signed(col_w))          # ix * C + c
        # ix0 * C + c, kept as a register stepped with c: col's restarts are then col_c or col_c + 1 instead
        # of ix0_c + c + 1 (two adders into col behind the counter muxes: 10.0 ns in the whole 8x8 design).
        col_c = Signal(signed(col_w))
        rowb = Base("row_base")
        topb = Base("top_base")
        row_base = rowb.base
        rows_in = Signal()                   # registered: the window rows of output row oy have arrived
        m.d.sync += rows_in.eq(loaded_all | (ld_row.as_signed() >= need))

        gap_reading = Signal()               # the GAP accumulators' read port serves the output pass
        emit = Signal()                      # a tap (or a GAP channel) leaves stage G this cycle
        gap_out = Signal()
        tap_ok = Signal()
        tap_counted = Signal()
        first = Signal()
        last = Signal()
        kx_last, ky_last, c_last, ox_last, oy_last = Signal(), Signal(), Signal(), Signal(), Signal()
        m.d.comb += [
            first.eq((ky == 0) & (kx == 0)),
            last.eq(ky_last & kx_last),
            tap_ok.eq((iy >= 0) & (iy < d.in_height) & (ix >= 0) & (ix < d.in_width)),
            tap_counted.eq((iy >= cy_lo) & (iy < cy_hi) & (ix >= cx_lo) & (ix < cx_hi)),
        ]
        lb_addr = Signal(32)
        m.d.comb += lb_addr.eq(row_base + col[:32])
        if lb_depth & (lb_depth - 1):          # keep don't-care reads (padding taps) inside the memory
            lb_addr = Mux(lb_addr < lb_depth, lb_addr, 0)

        # Stage A: registered tap. The line buffer is read from a registered address (a combinational
        # address would put the tap arithmetic in front of the block RAM and of yosys' write-collision
        # compare), and the tap count is accumulated here as count - 1, the parameter-memory address.
        a_valid, a_first, a_last, a_ok, a_counted, a_gap = (Signal() for _ in range(6))
        a_addr = Signal(32)
        a_c = Signal(16)
        cnt_m1 = Signal(9)                   # taps counted so far in this window, minus one (mod 512)
        m.d.sync += [
            a_valid.eq(emit),
            a_first.eq(first | gap_out),
            a_last.eq(last | gap_out),
            a_ok.eq(tap_ok),
            a_counted.eq(tap_counted),
            a_gap.eq(gap_out),
            a_addr.eq(lb_addr),
            a_c.eq(c),
        ]
        with m.If(a_valid):
            m.d.sync += cnt_m1.eq(Mux(a_gap, 0, Mux(a_first, 0x1FF, cnt_m1) + a_counted))

        # Stage B: the line-buffer blocks' outputs are registered (inside ``lb``) and the GAP accumulator
        # arrives; the window's count - 1 is registered into b_cnt, the parameter memory's address in B2.
        b_valid, b_first, b_last, b_ok, b_gap = (Signal() for _ in range(5))
        b_cnt = Signal.like(cnt_m1)
        m.d.sync += [
            b_valid.eq(a_valid), b_first.eq(a_first), b_last.eq(a_last), b_ok.eq(a_ok), b_gap.eq(a_gap),
            b_cnt.eq(cnt_m1),
        ]
        m.d.comb += [
            lb.r_addr.eq(a_addr),
            lb.r_en.eq(1),
            pm_r.addr.eq(b_cnt),
            pm_r.en.eq(1),
            gap_r.addr.eq(Mux(gap_reading, a_c, ld_c)),
            gap_r.en.eq(1),
        ]

        # Stage B2: the line buffer's second register per bank (inside ``lb``); the GAP sum is registered
        # straight out of its memory and the parameter entry read.
        b2_valid, b2_first, b2_last, b2_ok, b2_gap = (Signal() for _ in range(5))
        b2_gsum = Signal(signed(32))
        m.d.sync += [
            b2_valid.eq(b_valid), b2_first.eq(b_first), b2_last.eq(b_last), b2_ok.eq(b_ok),
            b2_gap.eq(b_gap), b2_gsum.eq(gap_r.data),
        ]

        # Stage B3: the line-buffer byte arrives (its bank selected), and the parameter entry.
        b3_valid, b3_first, b3_last, b3_ok, b3_gap = (Signal() for _ in range(5))
        b3_gsum = Signal(signed(32))
        m.d.sync += [
            b3_valid.eq(b2_valid), b3_first.eq(b2_first), b3_last.eq(b2_last), b3_ok.eq(b2_ok),
            b3_gap.eq(b2_gap), b3_gsum.eq(b2_gsum),
        ]

        # Stage C: the byte (registered off the bank select, so block-RAM clock-to-out never stacks on
        # the reduction) and the reduction.
        s_valid, s_first, s_last, s_ok, s_gap = (Signal() for _ in range(5))
        s_pm = Signal(30)
        s_byte = Signal(8)
        s_gsum = Signal(signed(32))
        red_max = Signal(signed(10))
        # At most 15 * 15 taps of |x - x_zp| <= 511 sum to < 2**17: 18 bits hold every window sum exactly
        # and keep the carry chain short.
        red_sum = Signal(signed(18))
        m.d.sync += [
            s_valid.eq(b3_valid), s_first.eq(b3_first), s_last.eq(b3_last), s_ok.eq(b3_ok),
            s_gap.eq(b3_gap), s_byte.eq(lb.r_data), s_gsum.eq(b3_gsum), s_pm.eq(pm_r.data),
        ]
        value = Signal(signed(9))
        m.d.comb += value.eq(as_value9(s_byte, d.in_signed))
        max_next = Signal(signed(10))
        sum_next = Signal(signed(18))
        # A window's first tap starts from -256, below every byte: it is taken when inside the image. The
        # compare reads red_max straight from its register (no first-tap select in front of the carry chain).
        with m.If(s_first):
            m.d.comb += max_next.eq(Mux(s_ok, value, -256))
        with m.Elif(s_ok & (value > red_max)):
            m.d.comb += max_next.eq(value)
        with m.Else():
            m.d.comb += max_next.eq(red_max)
        m.d.comb += sum_next.eq(Mux(s_first, 0, red_sum) + Mux(s_ok, value - d.x_zero_point, 0))
        # Stage D: the window's result is read from red_max / red_sum (their last update happened on the
        # edge that brought the last tap here), so the reduction's compare and add end at a register
        # instead of running on through the result select.
        d_valid, d_gap = Signal(), Signal()
        d_gsum = Signal(signed(32))
        d_mant, d_shift = Signal(24), Signal(6)
        with m.If(s_valid):
            m.d.sync += [red_max.eq(max_next), red_sum.eq(sum_next)]
        m.d.sync += [
            d_valid.eq(s_valid & s_last), d_gap.eq(s_gap), d_gsum.eq(s_gsum),
            d_mant.eq(s_pm[:24]), d_shift.eq(s_pm[24:30]),
            res_valid.eq(d_valid),
            res_val.eq(Mux(d_gap, d_gsum, red_sum)),       # averages only: a max leaves through res_max
            res_max.eq(red_max),
            res_mant.eq(d_mant),
            res_shift.eq(d_shift),
        ]

        # ---------------------------------------------------------------------------------------------
        # Output: clamp (max) or requantise (averages).
        lo, hi = d.clamp_lo, d.clamp_hi
        clamped = Signal(signed(32))
        m.d.comb += clamped.eq(Mux(res_max < lo, lo, Mux(res_max > hi, hi, res_max)))
        m.d.comb += [
            rq.i.payload.acc.eq(res_val),
            rq.i.payload.mantissa.eq(res_mant),
            rq.i.payload.shift.eq(res_shift),
            rq.i.payload.zero_point.eq(d.y_zero_point),
            rq.i.payload.lo.eq(lo),
            rq.i.payload.hi.eq(hi),
            rq.i.payload.out_unsigned.eq(~d.out_signed),
        ]
        # Into the output queue, which has room for every result in flight: the requantiser never stalls.
        # Through a register: the clamp's compares with the descriptor's bounds ran on into the queue's LUT
        # RAM (10.5 ns in the tiny SoC).
        q_valid, q_data = Signal(), Signal(8)
        m.d.comb += [rq.i.valid.eq(res_valid & ~is_max_r), rq.o.ready.eq(1)]
        m.d.sync += [q_valid.eq(Mux(is_max_r, res_valid, rq.o.valid)),
                     q_data.eq(Mux(is_max_r, clamped[:8], rq.o.payload.data))]
        m.d.comb += [out_q.w_en.eq(q_valid), out_q.w_data.eq(q_data)]
        wiring.connect(m, wiring.flipped(self.out), out_q.out)

        # Output byte counters: the run ends when out_height * out_width * in_channels bytes have left.
        # Their bounds are registered at start (keeps descriptor subtractions off the output handshake).
        oc = Signal(16)
        ocx = Signal(16)
        ocy = Signal(17)
        ocy_end = Signal(17)
        oc_last, ocx_last = Signal(), Signal()
        out_done = Signal()                  # registered ocy == ocy_end (a cycle late: only delays done)
        m.d.sync += out_done.eq(ocy == ocy_end)
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += step(oc, oc_last, "c", oc_last)
            with m.If(oc_last):
                m.d.sync += step(ocx, ocx_last, "ocx", ocx_last)
                with m.If(ocx_last):
                    m.d.sync += ocy.eq(ocy + 1)

        # ---------------------------------------------------------------------------------------------
        # Control.
        # Stage G in RUN: the tap counters step under a registered "in RUN" flag (run_st, set and cleared
        # with the FSM's transitions into and out of RUN) instead of the FSM's state decode: the decode,
        # the pipeline enable and the four last flags into the enables of oy, iy0, need and the column
        # registers were 9.4 ns in the whole 8x8 design.
        run_st = Signal()
        m.d.comb += emit.eq(run_st & ok)      # (GAP_OUT drives emit in the FSM below)
        m.d.comb += out_q.issue.eq(emit & (last | gap_out))      # a window's last tap: one result
        with m.If(run_st & ok):
            m.d.sync += step(kx, kx_last, "kx", kx_last)
            with m.If(~kx_last):
                m.d.sync += [ix.eq(ix + 1), col.eq(col + d.in_channels)]
            with m.Else():
                m.d.sync += [ix.eq(ix0), col.eq(col_c)]
                m.d.sync += step(ky, ky_last, "ky", ky_last)
                with m.If(~ky_last):
                    m.d.sync += iy.eq(iy + 1)
                    with m.If(iy >= 0):
                        m.d.sync += rowb.wrap()
                with m.Else():
                    m.d.sync += [iy.eq(iy0), *rowb.copy(topb)]
                    m.d.sync += step(c, c_last, "c", c_last)
                    with m.If(~c_last):
                        m.d.sync += [col.eq(col_c + 1), col_c.eq(col_c + 1)]
                    with m.Else():
                        m.d.sync += step(ox, ox_last, "ox", ox_last)
                        with m.If(~ox_last):
                            m.d.sync += [
                                ix0.eq(ix0 + d.stride_w), ix.eq(ix0 + d.stride_w),
                                ix0_c.eq(ix0_c + sw_c), col.eq(ix0_c + sw_c), col_c.eq(ix0_c + sw_c),
                            ]
                        with m.Else():
                            m.d.sync += [
                                ix0.eq(-d.pad_left.as_signed()),
                                ix0_c.eq(-pl_c.as_signed()),
                                *step(oy, oy_last, "oy", 0),
                                iy0.eq(iy0 + d.stride_h), need.eq(need + d.stride_h),
                            ]
                            m.d.sync += run_st.eq(0)

        m.d.comb += self.done.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    pad = d.count_include_pad
                    m.d.sync += [
                        rb_w.eq(d.in_width), rb_c.eq(d.in_channels), p_kh.eq(d.kernel_h), p_kw.eq(d.kernel_w),
                        s_sw.eq(d.stride_w), s_pl.eq(d.pad_left),
                        *[fl_m2[name][i].eq(v) for name, w in (
                            ("kx", d.kernel_w), ("ky", d.kernel_h), ("c", d.in_channels),
                            ("ox", d.out_width), ("oy", d.out_height)) for i, v in ((0, w - 2), (1, w == 1))],
                        cy_lo.eq(Mux(pad, -d.pad_top.as_signed(), 0)),
                        cy_hi.eq(d.in_height + Mux(pad, d.pad_bottom, 0)),
                        cx_lo.eq(Mux(pad, -d.pad_left.as_signed(), 0)),
                        cx_hi.eq(d.in_width + Mux(pad, d.pad_right, 0)),
                        p_count.eq(0),
                        ld_row.eq(0), ld_left.eq(d.in_height), ld_off.eq(0), ld_c.eq(0), *ldb.reset(n_rows == 1),
                        loaded_all.eq(d.in_height == 0), ld_room.eq(n_rows),
                        room_ok.eq(1), is_gap_r.eq(is_gap), is_max_r.eq(is_max), ld_left_one.eq(d.in_height == 1),
                        nr_m2.eq(n_rows - 2), nr_one.eq(n_rows == 1),
                        ld_c_last.eq(d.in_channels == 1),
                        top_row.eq(0), *topb.reset(n_rows == 1), compute_done.eq(0),
                        oc.eq(0), ocx.eq(0), ocy.eq(0), out_done.eq(0),
                        oc_last.eq(d.in_channels == 1), ocx_last.eq(is_gap | (d.out_width == 1)),
                        fl_m2["ocx"][0].eq(Mux(is_gap, 1, d.out_width) - 2),
                        fl_m2["ocx"][1].eq(is_gap | (d.out_width == 1)),
                        ocy_end.eq(Mux(is_gap, 1, d.out_height)),
                    ]
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.sync += [
                    row_bytes.eq(rb_w * rb_c),
                    sw_c.eq(s_sw * rb_c),
                    pl_c.eq(s_pl * rb_c),
                    # kernel_h * kernel_w as four shifted adds, not a $mul: a MULT18X18D is placed where
                    # the DSP rows are, and its routes in and out were 7.4 ns in the 8x8 SoC (12.2 ns).
                    p_need.eq(Mux(is_max_r, 0, Mux(is_gap_r, 1, sum(Mux(p_kh[i], p_kw << i, 0) for i in range(4))))),
                ]
                m.next = "INIT"
            with m.State("INIT"):
                m.d.sync += [
                    row_m2.eq(row_bytes - 2), row_one.eq(row_bytes == 1), ld_end.eq(row_bytes == 1),
                    ld_run.eq(~loaded_all),
                    *clear(oy, oy_last, "oy"), ox.eq(0), c.eq(0), ky.eq(0), kx.eq(0),
                    iy0.eq(-d.pad_top.as_signed()), need.eq(d.kernel_h - d.pad_top.as_signed()),
                    ix0.eq(-d.pad_left.as_signed()),
                    ix0_c.eq(-pl_c.as_signed()),
                    p_loading.eq(p_need != 0), p_nm1.eq(p_need - 1),
                ]
                m.next = "PARAMS"
            with m.State("PARAMS"):
                with m.If(p_count >= p_need):
                    with m.If(is_gap_r):
                        m.next = "GAP_ACC"
                    with m.Else():
                        m.next = "ADVANCE"
            with m.State("ADVANCE"):
                # Move the oldest needed row up to max(0, iy0) -- once the previous row's last tap has
                # read the line buffer (stage A empty), since a freed slot may be overwritten at once.
                # top_lt is the compare registered (the 18-bit compare into the enables of top_row and
                # its slot base: 9.6 ns in the whole 8x8 design), so it is used only when fresh: after a
                # cycle in ADVANCE without an advance (top_fresh).
                with m.If(~top_fresh):
                    m.d.sync += top_fresh.eq(1)
                with m.Elif(top_lt):
                    with m.If(~a_valid):
                        m.d.comb += top_adv.eq(1)
                        m.d.sync += [top_row.eq(top_row + 1), *topb.wrap(), top_fresh.eq(0)]
                with m.Else():
                    m.d.sync += top_fresh.eq(0)
                    m.next = "WAIT"
            with m.State("WAIT"):
                # rows_in is a cycle old; both terms only grow while need is fixed (WAIT follows at least
                # one ADVANCE cycle after need changes), so a late flag is never wrongly true.
                with m.If(rows_in):
                    m.d.sync += [
                        iy.eq(iy0), ix.eq(ix0), col.eq(ix0_c), col_c.eq(ix0_c), *rowb.copy(topb),
                        *clear(ky, ky_last, "ky"), *clear(kx, kx_last, "kx"), *clear(c, c_last, "c"),
                        *clear(ox, ox_last, "ox"), run_st.eq(1),
                    ]
                    m.next = "RUN"
            with m.State("RUN"):
                # The taps are stepped from run_st outside the FSM (above); here only the exit.
                with m.If(ok & kx_last & ky_last & c_last & ox_last):
                    with m.If(oy_last):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "ADVANCE"
            with m.State("DRAIN"):
                # The last tap reads the line buffer from stage A; only then may the loader overwrite it.
                with m.If(~a_valid):
                    m.d.sync += compute_done.eq(1)
                    m.next = "FINISH"
            with m.State("GAP_ACC"):
                # The last sum (g2 at the latest in this cycle, gw in the next) is written at the latest
                # on the next edge; GAP_OUT's first read is from stage A, an edge after that.
                with m.If(loaded_all & ~g_valid & ~g2_valid):
                    m.d.sync += [*clear(c, c_last, "c"), gap_reading.eq(1)]
                    m.next = "GAP_OUT"
            with m.State("GAP_OUT"):
                m.d.comb += [gap_out.eq(1), emit.eq(ok)]
                with m.If(ok):
                    m.d.sync += step(c, c_last, "c", 0)
                    with m.If(c_last):
                        m.d.sync += compute_done.eq(1)
                        m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(out_done & loaded_all):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += [ld_run.eq(0), compute_done.eq(0), gap_reading.eq(0)]
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
