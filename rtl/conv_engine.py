"""The convolution engine: one CONV or DENSE descriptor from byte streams, on the weight-stationary array.

What it computes is exactly :func:`scalenet.cosim.tlm._conv`; how is docs/architecture.md. The streams
are consumed in the order a single DMA reads them: the ``params`` table (8 bytes per output channel),
then every weight block (R beats of C bytes each, engine order) into the on-chip weight memory, while
the ``pixels`` stream (raster HWC bytes) fills a ring of input rows; the ``out`` stream gives the output
tensor in raster HWC order.

Structure (one clock domain, no back-pressure inside the compute pipeline)::

    setup  -- one shared divider and multiplier: tile counts, ring geometry, and per output-channel
              tile the input-channel tile range (compiler.ci_tile_range) into a small table
    writer -- pixels -> C-byte words -> line-buffer ring of ``ns`` rows (kernel_h + stride_h when it
              fits), lanes beyond in_channels zero; gated so it never overwrites a row still read
    passgen-- loops oy, co tile, ky, kx, ci tile: one *pass* descriptor ahead of the issue stage
    issue  -- one output pixel per cycle: line-buffer address, padding flag; at a pass start the
              weight loader reads the *next* block (one R x C word) into the array's shadow set, so
              passes run back to back even when they are a single pixel long (dense, narrow rows)
    array  -- DotArray: x - x_zp per lane, R x C products, adder tree (rtl/dot_array.py)
    accum  -- psum[bank][ox] (+)= row sums; the first pass of a tile starts from the bias
    drain  -- after a tile's last pass: OW x R psums -> Requantizer (per-channel mantissa/shift,
              clamp, zero point) -> output row buffer; psum banks alternate so this overlaps compute
    stream -- output row buffer (two row banks) -> ``out`` while the next rows compute

Limits besides the descriptor's: the ring stores rows as whole C-byte words, so it needs
``kernel_h * in_width * ceil(in_channels / C) * C <= line_buffer_bytes`` (it takes kernel_h + stride_h
rows when they fit, else kernel_h + 1, else kernel_h rows without prefetch); padded weight bytes
``<= weight_buffer_bytes``; one output row ``out_width * out_channels <= out_row_bytes`` (the largest power
of two <= line_buffer_bytes / 2: the output row buffer holds two rows). The compiler checks all three.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .engine_ports import check_config, engine_members
from .dot_array import X_BITS, DotArray, sum_bits
from .banked_memory import BankedMemory
from .collisions import UNDEFINED_COLLISIONS
from .credit_queue import CreditQueue
from .requant import Requantizer

__all__ = ["ConvEngine", "Divider"]

OUT_QUEUE = 8
"""Output queue entries: a row-buffer read reaches the queue two cycles after its issue; 3 more (and
some slack) keep one byte per cycle."""


def _ceil_log2(n):
    return max(1, (n - 1).bit_length())


class Divider(wiring.Component):
    """Restoring unsigned division, one quotient bit per cycle: ``quotient`` is valid when ``ready``.

    Members
    -------
    start : In(1)
        Load ``dividend`` and ``divisor``; ``ready`` falls in the next cycle and rises ``width``
        cycles later.
    """

    def __init__(self, width):
        self._width = width
        super().__init__({
            "start": In(1),
            "dividend": In(width),
            "divisor": In(width),
            "ready": Out(1),
            "quotient": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        w = self._width
        rem = Signal(w + 1)
        quo = Signal(w)
        div = Signal(w)
        cnt = Signal(range(w + 1))
        # ready (cnt == 0) is a register, updated with the count: the engine's FSM waits on it.
        ready = Signal(init=1)
        m.d.comb += [self.ready.eq(ready), self.quotient.eq(quo)]
        shifted = Cat(quo[-1], rem[:w])
        with m.If(self.start):
            m.d.sync += [rem.eq(0), quo.eq(self.dividend), div.eq(self.divisor), cnt.eq(w), ready.eq(0)]
        with m.Elif(~ready):
            m.d.sync += [cnt.eq(cnt - 1), ready.eq(cnt == 1)]
            with m.If(shifted >= div):
                m.d.sync += [rem.eq(shifted - div), quo.eq(Cat(1, quo[:-1]))]
            with m.Else():
                m.d.sync += [rem.eq(shifted), quo.eq(Cat(0, quo[:-1]))]
        return m


class ConvEngine(wiring.Component):
    """Runs one CONV/DENSE descriptor (``desc``, held stable while ``busy``) from streams.

    Members
    -------
    desc : In(descriptor_layout())
    start : In(1)
        Begin (ignored while busy).
    busy : Out(1)
    done : Out(1)
        One-cycle pulse when the last output byte has been accepted.
    params : In(stream.Signature(64))
        ``out_channels`` entries: bias int32, mantissa 24 bits, shift 8 bits (little endian).
    weights : In(stream.Signature(8 * C))
        The weight blocks in engine order, one PE row (C int8 bytes, lane 0 low) per beat.
    pixels : In(stream.Signature(8))
        The input tensor, raster HWC bytes.
    out : Out(stream.Signature(8))
        The output tensor, raster HWC bytes.
    array_active : Out(1)
        High in every cycle the PE array takes a pixel of a pass (the performance counter input).
    """

    def __init__(self, config: AcceleratorConfig | None = None):
        cfg = check_config(config)
        self._cfg = cfg
        super().__init__(engine_members(weights=In(stream.Signature(8 * cfg.cols)), array_active=Out(1)))

    @property
    def config(self):
        return self._cfg

    # Memory geometry (also what the report and tests quote).
    @property
    def line_words(self):
        return self._cfg.line_buffer_bytes // self._cfg.cols

    @property
    def weight_blocks(self):
        """Depth of the weight memory: one R x C block per word."""
        return self._cfg.weight_buffer_bytes // (self._cfg.rows * self._cfg.cols)

    @property
    def out_row_bytes(self):
        """Capacity of one of the two output-row banks (a power of two)."""
        return self._cfg.out_row_bytes

    @property
    def psum_row_words(self):
        return 1 << _ceil_log2(self._cfg.max_width)

    @property
    def co_tiles_max(self):
        return -(-self._cfg.max_channels // self._cfg.rows)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        d = self.desc

        LBW = self.line_words
        LAW = _ceil_log2(LBW)
        WB = self.weight_blocks
        MWP = self.psum_row_words
        OXB = _ceil_log2(MWP)
        HALF = self.out_row_bytes
        HB = _ceil_log2(HALF)
        NCO = self.co_tiles_max
        A = 24                                       # width of address arithmetic (signed)

        # ------------------------------------------------------------------ memories
        # No word read in the cycle its address is written is ever used (:mod:`.collisions`): the line
        # buffer's rows are read only once written and overwritten only after their last read; weights,
        # bias and requantiser parameters are written before the run and only read during it; the table
        # is written during setup while the idle generator re-reads entry 0 every cycle until it starts;
        # a partial sum read while written is replaced by a forwarded sum (``last1`` .. ``last3``, taken a
        # cycle early but for ``last1``) and the drain reads the other bank.
        collide_x = UNDEFINED_COLLISIONS
        m.submodules.lb = lb = memory.Memory(shape=8 * C, depth=LBW, init=[], attrs=collide_x)
        m.submodules.wmem = wmem = memory.Memory(shape=8 * C * R, depth=WB, init=[], attrs=collide_x)
        m.submodules.psum = psum = memory.Memory(shape=32 * R, depth=2 * MWP, init=[], attrs=collide_x)
        m.submodules.bias = bias = memory.Memory(shape=32 * R, depth=NCO, init=[], attrs=collide_x)
        m.submodules.qp = qp = memory.Memory(shape=32, depth=cfg.max_channels, init=[], attrs=collide_x)
        # Per output-channel tile: first ci tile (16), end ci tile (16), "one ci tile" (1) -- the end and
        # the flag stored rather than derived from a count at the read, which comes late in its cycle --
        # and the tile's used PE rows (R bits: the array's row enables).
        m.submodules.table = table = memory.Memory(shape=33 + R, depth=NCO, init=[], attrs=collide_x)
        m.submodules.obuf = obuf = BankedMemory(8, 2 * HALF)
        lb_w, lb_r = lb.write_port(), lb.read_port()
        wm_w, wm_r = wmem.write_port(granularity=8 * C), wmem.read_port()
        ps_w = psum.write_port()
        ps_r = psum.read_port()
        ps_d = psum.read_port()
        bi_w, bi_r = bias.write_port(granularity=32), bias.read_port()
        qp_w, qp_r = qp.write_port(), qp.read_port()
        tb_w, tb_r = table.write_port(), table.read_port()

        m.submodules.div = div = Divider(18)
        m.submodules.array = array = DotArray(R, C, split_products=cfg.pe_product_stages == 2)
        m.submodules.rq = rq = Requantizer(user_width=HB + 1 + 2)

        # ------------------------------------------------------------------ setup registers
        n_ci = Signal(16)
        n_co = Signal(16)
        cog = Signal(16)
        cig = Signal(16)
        row_words = Signal(32)
        kk = Signal(8)
        colstep = Signal(A)
        pl_off = Signal(A)
        s_total = Signal(32)
        s_tm2 = Signal(signed(34))   # s_total - 2: the streamer's down-counter start
        p1 = Signal(32)
        p2 = Signal(32)
        ns = Signal(5)
        pt_mod = Signal(5)
        sh_mod = Signal(5)
        ring_words = Signal(A)
        row_step = Signal(A)
        w_base0 = Signal(A)
        sum_cnt = Signal(16)
        nb = Signal(24)
        nw = Signal(32)
        tt = Signal(16)
        co_lo = Signal(16)
        co_hi_m1 = Signal(16)
        g_lo = Signal(18)
        g_hi = Signal(18)
        ci_lo = Signal(32)
        ci_hi = Signal(32)
        t_lo = Signal(18)
        t_hi = Signal(18)

        # Ring-address steps minus the ring size (free-running registers, settled long before T_START):
        # ``ring_add`` then wraps with two parallel adders and a select by a sign bit instead of an
        # adder, a compare and a subtracter in series.
        rw_m_ring = Signal(signed(A + 2))
        rs_m_ring = Signal(signed(A + 2))
        m.d.sync += [rw_m_ring.eq(row_words - ring_words), rs_m_ring.eq(row_step - ring_words)]

        def ring_add(base, step, step_m_ring):
            """``(base + step) mod ring_words`` for ``base < ring_words`` and ``step <= ring_words``."""
            alt = Signal(signed(A + 2))
            m.d.comb += alt.eq(base + step_m_ring)
            return Mux(alt[-1], base + step, alt)

        # The shared setup multiplier: operands and product registered, so neither the FSM's operand
        # selection nor the write-back shares a cycle with the multiply (MULT18X18D has no fabric
        # registers packed into it by Yosys; an unregistered 18x24 here limited the whole design's clock).
        # Two registered 18x12 halves, one block each, then their sum: one 18x24 product (two blocks and
        # the adder joining them) in a cycle was the engine's longest routed path (10.4 ns).
        mul_a = Signal(18)
        mul_b = Signal(24)
        mul_lo, mul_hi = Signal(30), Signal(30)
        mul_p = Signal(42)
        m.d.sync += [mul_lo.eq(mul_a * mul_b[:12]), mul_hi.eq(mul_a * mul_b[12:]),
                     mul_p.eq(mul_lo + (mul_hi << 12))]
        # The divider's operands are registered for the same reason: the FSM's operand selection (e.g.
        # ``co_hi - 1`` behind a compare) in front of the divider's first subtract was a 17 ns path.
        div_a = Signal(18)
        div_b = Signal(18)

        # ------------------------------------------------------------------ shared control state
        w_en = Signal()            # the pixel writer may run (ring geometry known)
        run = Signal()             # compute phase
        issue_done = Signal()
        reader_top = Signal(20)    # padded row index of the top of the window being read
        w_rows = Signal(16)        # input rows completely written
        wr_pt = Signal(17)         # w_rows + pad_top, counted with it
        s_rows = Signal(16)        # output rows completely read out of the row buffer
        p_cnt = Signal(16)
        p_done = Signal()
        done_cond = Signal()
        # Descriptor/setup values minus one or two, so "next is last" flags are equalities, not adders.
        ic_m2 = Signal(signed(18))
        iw_m2 = Signal(signed(18))
        nw_m2 = Signal(signed(34))
        nco_m2 = Signal(signed(18))
        oh_m2 = Signal(signed(18))
        p_rem = Signal(signed(18))   # out_channels - 1 - p_cnt: p_done is its sign (no compare behind ready)
        m.d.comb += p_done.eq(p_rem[-1])
        idle = Signal(init=1)      # the main FSM is in IDLE, as a register (it fans out to many resets)
        groups1 = Signal()         # d.groups == 1, registered at the start (read in the FSM's T_CHK)
        done_reg = Signal()        # done_cond one cycle late: keeps its wide compares off the FSM's enables
        m.d.sync += done_reg.eq(done_cond)
        pg_go = Signal()           # one-cycle pulse: the weights are in, the pass generator may start
        w_last = Signal()          # the next weight beat is the last one (w_wr + 1 == nw, one cycle ahead)
        in_wload = Signal()        # the main FSM is in WLOAD and the last weight beat has not arrived

        ld_busy = Signal()         # the weight loader reads a block this cycle
        w_ptr = Signal(range(WB + 1))
        w_wr = Signal(32)          # weight beats received
        wl_blk = Signal(range(WB + 1))
        wl_row = Signal(range(R + 1))

        # The operands of the shared multiplier and divider are chosen by a small index register the FSM
        # sets one cycle ahead (mul_op/div_op), not by the FSM state: a 20-way state-decoded operand mux
        # in front of mul_a was a long path. mul_a/mul_b and div_a/div_b load from the indexed sources in
        # every cycle (the sources are registers, stable across the operation).
        mul_src, div_src = [], []
        # The divider's start (high in the *_S states) and the writer's reset (the T_START state) are
        # one-cycle register pulses set by the state before: they fan out to many registers.
        div_go = Signal()
        w_init = Signal()
        m.d.sync += [div_go.eq(0), w_init.eq(0)]
        m.d.comb += [div.start.eq(div_go), div.dividend.eq(div_a), div.divisor.eq(div_b)]
        mul_op = Signal(range(32))
        div_op = Signal(range(16))

        # Each multiply/divide is one FSM state that counts its cycles in op_step (cleared on leaving), not
        # four states: with ~80 states the FSM's next-state logic was the engine's longest path.
        op_step = Signal(3)

        def mul_state(name, a, b, dst, nxt):
            """``dst <- a * b`` in five cycles: index, operands, halves, product, result (once per layer or
            tile)."""
            idx = len(mul_src)
            mul_src.append((a, b))
            with m.State(name):
                m.d.sync += mul_op.eq(idx)
                with m.If(op_step == 4):
                    m.d.sync += [dst.eq(mul_p), op_step.eq(0)]
                    m.next = nxt
                with m.Else():
                    m.d.sync += op_step.eq(op_step + 1)

        def div_state(name, a, b, dst, nxt):
            """``dst <- a // b``: index, operands, start, then wait for the divider."""
            idx = len(div_src)
            div_src.append((a, b))
            with m.State(name):
                m.d.sync += div_op.eq(idx)
                with m.If(op_step == 1):
                    m.d.sync += div_go.eq(1)
                with m.If(op_step != 3):
                    m.d.sync += op_step.eq(op_step + 1)
                with m.Elif(div.ready):
                    m.d.sync += [dst.eq(div.quotient), op_step.eq(0)]
                    m.next = nxt

        kh, kw, sh, sw = d.kernel_h, d.kernel_w, d.stride_h, d.stride_w
        # The operand sums, as free-running registers (their inputs settle long before the state that
        # reads them): an adder behind the operand multiplexer in front of mul_a/div_a was a long path.
        ic_up, oc_up, kh_sh, kh_1 = Signal(18), Signal(18), Signal(8), Signal(8)
        g_hi_1, ci_hi_up = Signal(19), Signal(33)
        m.d.sync += [ic_up.eq(d.in_channels + (C - 1)), oc_up.eq(d.out_channels + (R - 1)),
                     kh_sh.eq(kh + sh), kh_1.eq(kh + 1), g_hi_1.eq(g_hi + 1), ci_hi_up.eq(ci_hi + (C - 1))]
        m.d.sync += [self.done.eq(0), pg_go.eq(0)]
        # The weight-side counters are cleared a cycle after the start, from a register (in NCI, whose
        # division takes four cycles at least; nothing reads them before WLOAD and the tile loop): cleared
        # from the FSM's IDLE decode, main state -> start -> their enables was 9.9-10.1 ns in the 8x8 SoC.
        starting = Signal()
        m.d.sync += starting.eq(0)
        with m.If(starting):
            m.d.sync += [w_wr.eq(0), w_ptr.eq(0), sum_cnt.eq(0), wl_blk.eq(0), wl_row.eq(0)]
        with m.FSM(name="main") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        idle.eq(0), ic_m2.eq(d.in_channels - 2), groups1.eq(d.groups == 1),
                        iw_m2.eq(d.in_width - 2), oh_m2.eq(d.out_height - 2), p_rem.eq(d.out_channels - 1),
                        p_cnt.eq(0), w_en.eq(0), run.eq(0), issue_done.eq(0), reader_top.eq(0),
                        w_rows.eq(0), wr_pt.eq(d.pad_top), s_rows.eq(0), ld_busy.eq(0), starting.eq(1),
                    ]
                    m.next = "NCI"
            div_state("NCI", ic_up, C, n_ci, "NCO")
            div_state("NCO", oc_up, R, n_co, "COG")
            div_state("COG", d.out_channels, d.groups, cog, "CIG")
            div_state("CIG", d.in_channels, d.groups, cig, "RW")
            mul_state("RW", d.in_width, n_ci, row_words, "KK")
            mul_state("KK", kh, kw, kk, "CS")
            mul_state("CS", sw, n_ci, colstep, "KX")
            mul_state("KX", d.pad_left, n_ci, pl_off, "ST")
            mul_state("ST", d.out_width, d.out_channels, s_total, "P1")
            mul_state("P1", kh_sh, row_words, p1, "P2")
            mul_state("P2", kh_1, row_words, p2, "FIT")
            p1_fits, p2_fits = Signal(), Signal()
            with m.State("FIT"):
                # The ring-size compares get their own cycle, apart from the choice and the state decode.
                m.d.sync += [p1_fits.eq(p1 <= LBW), p2_fits.eq(p2 <= LBW), s_tm2.eq(s_total - 2)]
                m.next = "NS"
            mod_ok = Signal()
            with m.State("NS"):
                m.d.sync += [ns.eq(Mux(p1_fits, kh + sh, Mux(p2_fits, kh + 1, kh))),
                             pt_mod.eq(d.pad_top), sh_mod.eq(sh), mod_ok.eq(0)]
                m.next = "MOD"
            with m.State("MOD"):
                # pad_top mod ns and stride_h mod ns by one subtraction per cycle (<= 15 cycles, once per
                # layer): unrolled into one cycle, this chain was the whole design's critical path (22 MHz).
                # The exit test is registered (mod_ok: both were below ns a cycle ago; they then stay) so the
                # compares do not head the FSM's next-state logic; one extra cycle per layer.
                with m.If(pt_mod >= ns):
                    m.d.sync += pt_mod.eq(pt_mod - ns)
                with m.If(sh_mod >= ns):
                    m.d.sync += sh_mod.eq(sh_mod - ns)
                m.d.sync += mod_ok.eq((pt_mod < ns) & (sh_mod < ns))
                with m.If(mod_ok):
                    m.next = "RING"
            mul_state("RING", ns, row_words, ring_words, "RSTEP")
            mul_state("RSTEP", sh_mod, row_words, row_step, "WB")
            mul_state("WB", pt_mod, row_words, w_base0, "WB1")
            with m.State("WB1"):
                m.d.sync += w_init.eq(1)
                m.next = "T_START"
            # The tile's entry is registered (tb_*) and written in T_ADV: the count's adder and the
            # "last tile" compare do not share a cycle with the FSM's state decode.
            tb_lo, tb_hi, tb_cnt = Signal(16), Signal(16), Signal(16)
            tt_last = Signal()
            # The tile's used rows, a free-running register: co_lo moves in T_ADV, T_CHK follows it.
            tb_rows = Signal(R)
            m.d.sync += tb_rows.eq(Cat(*[co_lo + r < d.out_channels for r in range(R)]))
            # The tile's last channel min(co_lo + R, out_channels) - 1, free-running in two steps (its
            # add, compare, select and decrement in T_CHK made 9.6 ns in the 8x8 SoC): valid two cycles
            # after co_lo moves, within T_G1 (four cycles at least), read in T_G2.
            co_end_m1, co_fits, oc_m1 = Signal(16), Signal(), Signal(16)
            m.d.sync += [co_end_m1.eq(co_lo + (R - 1)), co_fits.eq(co_lo + R < d.out_channels),
                         oc_m1.eq(d.out_channels - 1), co_hi_m1.eq(Mux(co_fits, co_end_m1, oc_m1))]
            m.d.comb += [tb_w.addr.eq(tt), tb_w.data.eq(Cat(tb_lo, tb_hi, tb_cnt == 1, tb_rows))]
            with m.State("T_START"):
                m.d.sync += [w_en.eq(1), tt.eq(0), co_lo.eq(0), tt_last.eq(n_co == 1), nco_m2.eq(n_co - 2)]
                m.next = "T_CHK"
            with m.State("T_ADV"):
                m.d.comb += tb_w.en.eq(1)
                m.d.sync += [sum_cnt.eq(sum_cnt + tb_cnt), tt.eq(tt + 1), co_lo.eq(co_lo + R),
                             tt_last.eq(tt == nco_m2)]
                with m.If(tt_last):
                    m.next = "NB"
                with m.Else():
                    m.next = "T_CHK"

            with m.State("T_CHK"):
                with m.If(groups1):
                    m.d.sync += [tb_lo.eq(0), tb_hi.eq(n_ci), tb_cnt.eq(n_ci)]
                    m.next = "T_ADV"
                with m.Else():
                    m.next = "T_G1"
            div_state("T_G1", co_lo, cog, g_lo, "T_G2")
            div_state("T_G2", co_hi_m1, cog, g_hi, "T_M1")
            mul_state("T_M1", g_lo, cig, ci_lo, "T_M2")
            mul_state("T_M2", g_hi_1, cig, ci_hi, "T_D1")
            div_state("T_D1", ci_lo, C, t_lo, "T_D2")
            div_state("T_D2", ci_hi_up, C, t_hi, "T_W")
            with m.State("T_W"):
                m.d.sync += [tb_lo.eq(t_lo), tb_hi.eq(t_hi), tb_cnt.eq(t_hi - t_lo)]
                m.next = "T_ADV"
            mul_state("NB", kk, sum_cnt, nb, "NW")
            mul_state("NW", nb, R, nw, "WL0")
            with m.State("WL0"):
                m.d.sync += [w_last.eq(nw == 1), nw_m2.eq(nw - 2), in_wload.eq(1)]
                m.next = "WLOAD"
            with m.State("WLOAD"):
                with m.If(~in_wload):
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(done_reg):
                    m.d.sync += [self.done.eq(1), run.eq(0), w_en.eq(0), idle.eq(1)]
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~idle)

        # The weight stream is gated by a register (in_wload) rather than by the FSM's state decode: the
        # beat handshake then fans out to the weight-memory enables and counters from two flags. Each
        # beat is written a cycle later from registers (the 32 blocks spread over the die: the enable
        # decode in front of their byte enables was the whole design's longest path, 11.7 ns of route),
        # so the run starts a cycle after the last beat, once that beat is in the memory.
        wq_en, wq_addr, wq_data = Signal(R), Signal.like(wl_blk), Signal(8 * C)
        w_fin = Signal()
        m.d.sync += [wq_en.eq(0), w_fin.eq(0)]
        m.d.comb += [self.weights.ready.eq(in_wload & p_done),
                     wm_w.addr.eq(wq_addr), wm_w.data.eq(Cat(*[wq_data] * R)), wm_w.en.eq(wq_en)]
        with m.If(self.weights.valid & in_wload & p_done):
            m.d.sync += [wq_en.eq(1 << wl_row), wq_addr.eq(wl_blk), wq_data.eq(self.weights.payload)]
            m.d.sync += [w_wr.eq(w_wr + 1), w_last.eq(w_wr == nw_m2)]
            with m.If(wl_row == R - 1):
                m.d.sync += [wl_row.eq(0), wl_blk.eq(wl_blk + 1)]
            with m.Else():
                m.d.sync += wl_row.eq(wl_row + 1)
            with m.If(w_last):
                m.d.sync += [in_wload.eq(0), w_fin.eq(1)]
        with m.If(w_fin):
            m.d.sync += [run.eq(1), ld_busy.eq(1), w_ptr.eq(0), pg_go.eq(1)]     # preload block 0
        assert len(mul_src) <= 32 and len(div_src) <= 16
        m.d.sync += [mul_a.eq(Array(a for a, _ in mul_src)[mul_op]), mul_b.eq(Array(b for _, b in mul_src)[mul_op]),
                     div_a.eq(Array(a for a, _ in div_src)[div_op]), div_b.eq(Array(b for _, b in div_src)[div_op])]

        # ------------------------------------------------------------------ parameters
        p_word = Signal(range(NCO + 1))
        p_lane = Signal(range(R + 1))
        m.d.comb += self.params.ready.eq(self.busy & ~p_done)
        # Each parameter is written a cycle later from registers (the handshake decode in front of the
        # bias blocks' byte enables, which share their address pins, was a 10.2 ns routed path); the
        # weights, which follow the last parameter, take at least two more cycles before the run reads.
        pq_bias, pq_qp = Signal(32), Signal(32)
        pq_word, pq_cnt = Signal.like(p_word), Signal.like(p_cnt)
        pq_lane_en, pq_en = Signal(R), Signal()
        m.d.sync += [pq_lane_en.eq(0), pq_en.eq(0)]
        m.d.comb += [
            bi_w.addr.eq(pq_word), bi_w.data.eq(Cat(*[pq_bias] * R)), bi_w.en.eq(pq_lane_en),
            qp_w.addr.eq(pq_cnt), qp_w.data.eq(pq_qp), qp_w.en.eq(pq_en),
        ]
        with m.If(idle):
            m.d.sync += [p_word.eq(0), p_lane.eq(0)]
        with m.If(self.params.valid & self.params.ready):
            m.d.sync += [pq_lane_en.eq(1 << p_lane), pq_en.eq(1), pq_word.eq(p_word), pq_cnt.eq(p_cnt),
                         pq_bias.eq(self.params.payload[:32]), pq_qp.eq(self.params.payload[32:64])]
            m.d.sync += [p_cnt.eq(p_cnt + 1), p_rem.eq(p_rem - 1)]
            with m.If(p_lane == R - 1):
                m.d.sync += [p_lane.eq(0), p_word.eq(p_word + 1)]
            with m.Else():
                m.d.sync += p_lane.eq(p_lane + 1)

        # ------------------------------------------------------------------ pixel writer (line-buffer ring)
        w_ch = Signal(16)
        w_lane = Signal(range(C + 1))
        w_px = Signal(16)
        w_addr = Signal(A)         # the row's base + the word index in the row, a counter (no adder to the RAM)
        w_base_next = Signal(A)    # the next row's base (ring wrap included), ready before the row ends
        nbase = ring_add(w_base_next, row_words, rw_m_ring)
        # The second row's base, a free-running register (w_base0 settles a cycle before w_init: state
        # WB1): an adder, a compare and a subtracter in series behind the writer's load mux was the
        # engine's longest routed path.
        nbase0 = Signal(A)
        m.d.sync += nbase0.eq(ring_add(w_base0, row_words, rw_m_ring))
        wreg = Signal(8 * C)
        # "Last" flags one cycle ahead of the counters, so the handshake drives no wide compares.
        w_ch_last = Signal()
        w_px_last = Signal()
        with m.If(w_init):
            m.d.sync += [w_ch.eq(0), w_lane.eq(0), w_px.eq(0), w_addr.eq(w_base0),
                         w_base_next.eq(nbase0),
                         wreg.eq(0), w_ch_last.eq(d.in_channels == 1), w_px_last.eq(d.in_width == 1)]
        # The ready is a register: "row w_rows (after this cycle's beat) may be written", i.e. it is in
        # the layer and its ring slot is no longer read. Both candidates (this row, the next one) are
        # compared in parallel and the beat picks one. reader_top and issue_done only grow, and w_en rises
        # a cycle before it matters, so their one-cycle lag only delays a ready, never raises one early.
        w_ready = Signal()
        # Every operand is a register, so each term is one compare: ``wr_pt`` (w_rows + pad_top) counts
        # with w_rows; ``room`` and ``room_m1`` (reader_top + ns, minus one) and ``ih_m1`` are free-running
        # and may lag a cycle, which only delays a ready (reader_top only grows). Adders in series in
        # front of the compares were a 10.1 ns path of the whole design.
        room, room_m1, ih_m1 = Signal(21), Signal(signed(22)), Signal(signed(17))
        m.d.sync += [room.eq(reader_top + ns), room_m1.eq(reader_top + ns - 1), ih_m1.eq(d.in_height - 1)]
        ok_this = (w_rows < d.in_height) & (issue_done | (wr_pt < room))
        ok_next = (w_rows < ih_m1) & (issue_done | (wr_pt < room_m1))
        w_row_end = Signal()       # this cycle's beat completes a row
        m.d.sync += w_ready.eq(w_en & Mux(w_row_end, ok_next, ok_this))
        m.d.comb += self.pixels.ready.eq(w_ready)
        word = Signal(8 * C)
        m.d.comb += word.eq(Cat(*[Mux(w_lane == c, self.pixels.payload, wreg.word_select(c, 8))
                                  for c in range(C)]))
        # Words are written a cycle later from registers (no logic in front of the 32 blocks' ports);
        # a row is read no earlier than two cycles after w_rows counts it (pg_rows_ok, nx_ok registered).
        lq_en, lq_addr, lq_data = Signal(), Signal.like(w_addr), Signal(8 * C)
        m.d.sync += lq_en.eq(0)
        m.d.comb += [lb_w.addr.eq(lq_addr), lb_w.data.eq(lq_data), lb_w.en.eq(lq_en)]
        with m.If(self.pixels.valid & self.pixels.ready):
            with m.If((w_lane == C - 1) | w_ch_last):
                m.d.sync += [lq_en.eq(1), lq_addr.eq(w_addr), lq_data.eq(word)]
                m.d.sync += [w_addr.eq(w_addr + 1), w_lane.eq(0), wreg.eq(0)]
            with m.Else():
                m.d.sync += [wreg.eq(word), w_lane.eq(w_lane + 1)]
            with m.If(w_ch_last):
                m.d.sync += [w_ch.eq(0), w_ch_last.eq(d.in_channels == 1)]
                with m.If(w_px_last):
                    m.d.comb += w_row_end.eq(1)
                    m.d.sync += [w_px.eq(0), w_px_last.eq(d.in_width == 1), w_rows.eq(w_rows + 1),
                                 wr_pt.eq(wr_pt + 1), w_addr.eq(w_base_next),
                                 w_base_next.eq(nbase)]
                with m.Else():
                    m.d.sync += [w_px.eq(w_px + 1), w_px_last.eq(w_px == iw_m2)]
            with m.Else():
                m.d.sync += [w_ch.eq(w_ch + 1), w_ch_last.eq(w_ch == ic_m2)]

        # ------------------------------------------------------------------ pass generator
        pg_oy = Signal(16)
        pg_t = Signal(16)
        pg_ky = Signal(4)
        pg_kx = Signal(4)
        pg_ci = Signal(16)
        pg_lo = Signal(16)
        pg_hi = Signal(16)
        pg_iy_top = Signal(signed(20))
        pg_base_top = Signal(A)
        pg_base_k = Signal(A)
        pg_kx_off = Signal(signed(A))
        pg_bank = Signal()
        pg_ob = Signal()
        pg_rows = Signal(R)

        # A generated pass goes to ``nx`` (the pass the issue stage takes next) or, when that is full and
        # not taken this cycle, to the skid slot ``nx2``; the generator steps whenever ``nx2`` is empty, a
        # register. Stepping on ``~nx_valid | take`` put the issue stage's `take` (from `pass_end`) through
        # the generator's nested loop conditions into the enables of its 20-bit counters and ring bases,
        # eight LUTs deep (10.1-10.7 ns in the whole 8x8 design); now `take` only loads ``nx``.
        nx_valid, nx2_valid = Signal(), Signal()
        nx_fields = (("t", 16), ("t0", 1), ("bank", 1), ("ob", 1), ("first", 1), ("last", 1), ("row_first", 1),
                     ("row_last", 1), ("layer_last", 1), ("t_last", 1), ("row_pad", 1), ("addr0", signed(A)),
                     ("ix0", signed(20)), ("need", 16), ("rows", R))
        nx = {name: Signal(shape, name=f"nx_{name}") for name, shape in nx_fields}
        nx2 = {name: Signal(shape, name=f"nx2_{name}") for name, shape in nx_fields}
        gen = {name: Signal(shape, name=f"gen_{name}") for name, shape in nx_fields}   # the generator's pass
        take = Signal()           # the issue stage takes the pass in nx this cycle
        gen_fire = Signal()       # the generator emits ``gen`` and steps this cycle

        # The loop counters' compares live in flags updated with the counters (one cycle ahead), so the
        # generator's step only selects between precomputed values.
        ci_first, ci_last, ci_one = Signal(), Signal(), Signal()
        kx_last, ky_last, t_last, oy_last = Signal(), Signal(), Signal(), Signal()
        # Rows the current output row needs, and whether they are in: registered from pg_iy_top, which
        # settles in FETCH, so both are fresh by GEN (two cycles later).
        pg_need = Signal(16)
        pg_rows_ok = Signal()
        need = pg_iy_top + kh
        m.d.sync += [pg_need.eq(Mux(need < 0, 0, Mux(need > d.in_height, d.in_height, need))),
                     pg_rows_ok.eq(w_rows >= pg_need)]

        # The table is read early (in GEN: the tile after pg_t; in IDLE: tile 0) and its word registered
        # twice (FETCH, FETCH2), so LOAD works from a register the placer can put near the generator: one
        # register straight out of the block (clock-to-out is 5.8 ns in nextpnr's ECP5 model, and a
        # single register with all of LOAD's fan-out was still the engine's longest routed path). One
        # extra cycle per tile.
        tb_q, tb_q2 = Signal(33 + R), Signal(33 + R)
        tb_ra = Signal(range(NCO))     # the table address, a register (set in IDLE and LOAD)
        m.d.comb += tb_r.addr.eq(tb_ra)
        pg_hm2 = Signal(signed(18))    # pg_hi - 2: "the next ci tile is the last" is an equality
        m.d.sync += [tb_q.eq(tb_r.data), tb_q2.eq(tb_q)]

        first = (pg_ky == 0) & (pg_kx == 0) & ci_first
        last = ky_last & kx_last & ci_last
        iy = pg_iy_top + pg_ky
        m.d.comb += [
            gen["t"].eq(pg_t), gen["t0"].eq(pg_t == 0), gen["bank"].eq(pg_bank), gen["ob"].eq(pg_ob),
            gen["first"].eq(first), gen["last"].eq(last),
            gen["row_first"].eq(first & (pg_t == 0)), gen["row_last"].eq(last & t_last),
            gen["layer_last"].eq(last & t_last & oy_last), gen["t_last"].eq(t_last),
            gen["row_pad"].eq((iy < 0) | (iy >= d.in_height)),
            gen["addr0"].eq(pg_base_k + pg_kx_off + pg_ci),
            gen["ix0"].eq(pg_kx - d.pad_left),
            gen["need"].eq(pg_need), gen["rows"].eq(pg_rows),
        ]
        nx_free = Signal()           # nx is empty or taken this cycle
        m.d.comb += nx_free.eq(~nx_valid | take)
        with m.If(nx_free):
            with m.If(nx2_valid):
                m.d.sync += [nx_valid.eq(1), nx2_valid.eq(0), *(nx[k].eq(nx2[k]) for k in nx)]
            with m.Elif(gen_fire):
                m.d.sync += [nx_valid.eq(1), *(nx[k].eq(gen[k]) for k in nx)]
            with m.Else():
                m.d.sync += nx_valid.eq(0)
        with m.Elif(gen_fire):
            m.d.sync += [nx2_valid.eq(1), *(nx2[k].eq(gen[k]) for k in nx)]
        with m.FSM(name="passgen"):
            with m.State("IDLE"):
                m.d.sync += tb_ra.eq(0)
                with m.If(pg_go):
                    m.d.sync += [
                        pg_oy.eq(0), pg_t.eq(0), pg_ky.eq(0), pg_kx.eq(0), pg_iy_top.eq(-d.pad_top),
                        pg_base_top.eq(0), pg_base_k.eq(0), pg_kx_off.eq(-pl_off), pg_bank.eq(0),
                        pg_ob.eq(0), nx_valid.eq(0), nx2_valid.eq(0),
                        kx_last.eq(kw == 1), ky_last.eq(kh == 1), t_last.eq(n_co == 1),
                        oy_last.eq(d.out_height == 1),
                    ]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.next = "FETCH2"
            with m.State("FETCH2"):
                m.next = "LOAD"
            with m.State("LOAD"):
                lo, hi, one = tb_q2[:16], tb_q2[16:32], tb_q2[32]
                m.d.sync += tb_ra.eq(Mux(t_last, 0, pg_t + 1))     # prefetch the tile after this one
                m.d.sync += [pg_lo.eq(lo), pg_hi.eq(hi), pg_hm2.eq(hi - 2), pg_ci.eq(lo), pg_rows.eq(tb_q2[33:]),
                             ci_first.eq(1), ci_one.eq(one), ci_last.eq(one)]
                m.next = "GEN"
            with m.State("GEN"):
                m.d.comb += gen_fire.eq(~nx2_valid)
                with m.If(~nx2_valid):
                    with m.If(~ci_last):
                        m.d.sync += [pg_ci.eq(pg_ci + 1), ci_first.eq(0), ci_last.eq(pg_ci == pg_hm2)]
                    with m.Else():
                        m.d.sync += [pg_ci.eq(pg_lo), ci_first.eq(1), ci_last.eq(ci_one)]
                        with m.If(~kx_last):
                            m.d.sync += [pg_kx.eq(pg_kx + 1), pg_kx_off.eq(pg_kx_off + n_ci),
                                         kx_last.eq(pg_kx + 2 == kw)]
                        with m.Else():
                            m.d.sync += [pg_kx.eq(0), pg_kx_off.eq(-pl_off), kx_last.eq(kw == 1)]
                            with m.If(~ky_last):
                                nk = ring_add(pg_base_k, row_words, rw_m_ring)
                                m.d.sync += [pg_ky.eq(pg_ky + 1), ky_last.eq(pg_ky + 2 == kh),
                                             pg_base_k.eq(nk)]
                            with m.Else():
                                m.d.sync += [pg_ky.eq(0), ky_last.eq(kh == 1), pg_bank.eq(~pg_bank)]
                                with m.If(~t_last):
                                    m.d.sync += [pg_t.eq(pg_t + 1), pg_base_k.eq(pg_base_top),
                                                 t_last.eq(pg_t == nco_m2)]
                                    m.next = "FETCH"
                                with m.Elif(oy_last):
                                    m.next = "IDLE"
                                with m.Else():
                                    nbt = ring_add(pg_base_top, row_step, rs_m_ring)
                                    m.d.sync += [pg_t.eq(0), pg_oy.eq(pg_oy + 1), pg_ob.eq(~pg_ob),
                                                 t_last.eq(n_co == 1), oy_last.eq(pg_oy == oh_m2),
                                                 pg_iy_top.eq(pg_iy_top + sh),
                                                 pg_base_top.eq(nbt), pg_base_k.eq(nbt)]
                                    m.next = "FETCH"

        # ------------------------------------------------------------------ issue stage + weight loader
        bank_busy = Signal(2)
        drain_req = Signal(2)
        b_t = [Signal(16, name=f"b_t{i}") for i in range(2)]
        b_ob = Signal(2)
        b_rowend = Signal(2)
        b_t0 = Signal(2)          # b_t == 0 (the drain's ob_busy test without a 16-bit compare)

        is_active = Signal()
        ox = Signal(range(MWP))
        cur_ix = Signal(signed(20))
        cur_addr = Signal(signed(A))
        cur = {name: Signal(s.shape(), name=f"cur_{name}") for name, s in nx.items()
               if name in ("t", "bank", "first", "last", "row_last", "layer_last", "row_pad", "rows")}
        pass_end = Signal()       # the pass's last pixel issues this cycle (a register: it heads `take`)

        # `take` enables nx, the issue registers and the weight loader, so it is computed from four
        # registers. nx_ok says "the rows the pass in nx needs are in (if it starts a row) and its psum
        # bank is free (if it starts a tile)": loaded with a new pass (from the generator's flags, or
        # computed from nx2), else refreshed. It may be one cycle late, which is safe: w_rows only grows, a
        # bank is only freed (a take sets the busy bit of the bank of the pass it takes, while the pass
        # loaded in the same cycle -- the next one generated -- either continues that tile or starts the
        # next, which uses the other bank).
        # (`run` is not needed: the generator starts with it and nx_valid is clear when it falls.)
        nx_ok = Signal()

        def pass_ok(p, rows_in):
            return (~p["row_first"] | rows_in) & (~p["first"] | ~bank_busy.bit_select(p["bank"], 1))
        with m.If(nx_free & nx2_valid):
            m.d.sync += nx_ok.eq(pass_ok(nx2, w_rows >= nx2["need"]))
        with m.Elif(nx_free & gen_fire):
            m.d.sync += nx_ok.eq(pass_ok(gen, pg_rows_ok))      # pg_rows_ok: w_rows >= pg_need, registered
        with m.Else():
            m.d.sync += nx_ok.eq(pass_ok(nx, w_rows >= nx["need"]))
        m.d.comb += take.eq(nx_valid & (~is_active | pass_end) & nx_ok)

        with m.If(take):
            m.d.sync += [is_active.eq(1), ox.eq(0), cur_ix.eq(nx["ix0"]), cur_addr.eq(nx["addr0"]),
                         *[cur[k].eq(nx[k]) for k in cur], ld_busy.eq(1), pass_end.eq(d.out_width == 1)]
            with m.If(nx["first"]):
                for b in range(2):
                    with m.If(nx["bank"] == b):
                        m.d.sync += [bank_busy[b].eq(1), b_t[b].eq(nx["t"]), b_ob[b].eq(nx["ob"]),
                                     b_rowend[b].eq(nx["t_last"]), b_t0[b].eq(nx["t0"])]
        with m.Elif(is_active):
            with m.If(pass_end):
                m.d.sync += is_active.eq(0)
            with m.Else():
                m.d.sync += [ox.eq(ox + 1), cur_ix.eq(cur_ix + sw), cur_addr.eq(cur_addr + colstep),
                             pass_end.eq(ox + 2 == d.out_width)]
        with m.If(is_active & pass_end & cur["row_last"]):
            m.d.sync += reader_top.eq(reader_top + sh)
            with m.If(cur["layer_last"]):
                m.d.sync += issue_done.eq(1)

        # Weight loader: reads the next block in the cycle a pass's first pixel issues (c0); the block
        # lands in the shadow at the end of c1, the same edge that swaps the current block in (the swap
        # takes the old shadow), so a pass may be a single pixel long.
        with m.If(ld_busy):
            with m.If(~take):
                m.d.sync += ld_busy.eq(0)
            m.d.sync += w_ptr.eq(Mux(w_ptr + 1 == nb, 0, w_ptr + 1))
        m.d.comb += wm_r.addr.eq(w_ptr)
        # The block's word passes two registers before it fans out to the PEs' shadow registers (the
        # shadow write two cycles later to match): block-RAM clock-to-out is 5.8 ns in nextpnr's ECP5
        # model and the 32 blocks spread over the die, so one register straight out of each block and a
        # second one the placer can put near the array. The line-buffer word takes the same two, so the
        # swap keeps its place relative to the first pixel (stage 3 below).
        ld_we, ld_we2, ld_we3 = Signal(), Signal(), Signal()
        wm_q, wm_q2 = Signal(8 * C * R), Signal(8 * C * R)
        m.d.sync += [ld_we.eq(ld_busy), ld_we2.eq(ld_we), ld_we3.eq(ld_we2), wm_q.eq(wm_r.data), wm_q2.eq(wm_q)]
        m.d.comb += [array.w_we.eq(ld_we3), array.w_data.eq(wm_q2)]

        # ------------------------------------------------------------------ compute pipeline
        tag_layout = data.StructLayout({
            "valid": 1, "pad": 1, "ox": OXB, "first": 1, "bank": 1, "t": 16, "tile_end": 1, "pass_start": 1,
            "rows": R})
        stages = 4 + array.latency
        tags = [Signal(tag_layout, name=f"tag{i}") for i in range(stages)]
        m.d.comb += [
            tags[0].valid.eq(is_active),
            tags[0].pad.eq(cur["row_pad"] | (cur_ix < 0) | (cur_ix >= d.in_width)),
            tags[0].ox.eq(ox), tags[0].first.eq(cur["first"]), tags[0].bank.eq(cur["bank"]),
            tags[0].t.eq(cur["t"]), tags[0].tile_end.eq(cur["last"] & pass_end), tags[0].pass_start.eq(ox == 0),
            tags[0].rows.eq(cur["rows"]),
        ]
        for i in range(1, stages):
            m.d.sync += tags[i].eq(tags[i - 1])
        m.d.comb += lb_r.addr.eq(cur_addr[:LAW])

        # Stages 1 and 2 register the line-buffer word twice (block-RAM clock-to-out is 5.8 ns in nextpnr's
        # ECP5 model: one register straight out of the blocks, one the placer can put near the array; with
        # the lane arithmetic behind the block it was the engine's longest routed path); stage 3:
        # word -> x - x_zp lanes into the array's input registers.
        lb_q, lb_q2 = Signal(8 * C), Signal(8 * C)
        m.d.sync += [lb_q.eq(lb_r.data), lb_q2.eq(lb_q)]
        t3 = tags[3]
        for c in range(C):
            raw = lb_q2.word_select(c, 8)
            xv = Mux(d.in_signed, raw.as_signed(), raw.as_unsigned()) - d.x_zero_point
            m.d.comb += array.x.word_select(c, X_BITS).eq(Mux(t3.pad, 0, xv))
        m.d.comb += [array.swap.eq(t3.valid & t3.pass_start), self.array_active.eq(t3.valid),
                     array.row_en.eq(Mux(t3.valid, t3.rows, 0))]

        # Accumulate at the last stage (3 + latency), where the row sums arrive. The psum and bias reads are
        # addressed four stages before and their block-RAM outputs registered three times (5.8 ns
        # clock-to-out leaves ~4 ns of route): twice register to register (``ps_q`` -> ``ps_q2``, so the
        # first can sit beside its block -- with the forwarding multiplexer behind the first, block ->
        # register was 3.5-4.5 ns and over 10 ns in 5 of 14 block/build pairs of the 8x8 SoC; with none,
        # the whole design's second-longest path, 11.8 ns), then into ``base_pre`` near the adders.
        # The sums are written a cycle later from ``last`` (the adders straight into the 16 blocks' data
        # pins, 5.7 ns of route, were the engine's longest paths). The read port is not transparent and
        # its collisions are undefined, so the five sums a read cannot see -- those of the elements one to
        # five ahead writing the same address (passes a single pixel long: dense layers, one-column
        # outputs) -- are forwarded. Which word an element adds to (bias, psum or a forwarded sum, the
        # nearest one first) is chosen the cycle before, when every candidate but the sum of the element
        # just ahead is a register: ``last`` .. ``last4``, ``ps_q2``, ``bi_q2`` (those one to four ahead are
        # one register further down the line a cycle later). The choice among them is registered as
        # ``base_pre`` -- the second register behind the blocks -- so the loop through the adder keeps a 2:1
        # choice, ``last`` or ``base_pre``, on one flag (a 3-bit select decoded in front of the 8 x 32-bit
        # 6:1 multiplexer and fanned out to all of it was 10.1-10.6 ns in every SoC build).
        n_fwd = 5
        ta_rd, ta_pre, ta = tags[stages - 5], tags[stages - 2], tags[stages - 1]
        m.d.comb += [ps_r.addr.eq(Cat(ta_rd.ox, ta_rd.bank)), bi_r.addr.eq(ta_rd.t)]
        ps_q, bi_q, ps_q2, bi_q2 = (Signal(32 * R, name=n) for n in ("ps_q", "bi_q", "ps_q2", "bi_q2"))
        lasts = [Signal(32 * R, name=f"last{j}") for j in range(1, n_fwd)]
        last = lasts[0]
        m.d.sync += [ps_q.eq(ps_r.data), bi_q.eq(bi_r.data), ps_q2.eq(ps_q), bi_q2.eq(bi_q)]
        m.d.sync += [lasts[j].eq(lasts[j - 1]) for j in range(1, n_fwd - 1)]

        def same(tag):
            return ta.valid & (tag.ox == ta.ox) & (tag.bank == ta.bank)

        # near[j]: the element at ta_pre (next to accumulate) writes the address the element j + 1 ahead of
        # it wrote. Compared when that element is at ta, delayed until the next one reaches ta_pre.
        near = [same(ta_pre)]
        for j in range(1, n_fwd):
            flag = same(tags[stages - 2 - j])
            for k in range(j - 1):
                nxt = Signal(name=f"same{j + 1}_d{k + 1}")
                m.d.sync += nxt.eq(flag)
                flag = nxt
            held = Signal(name=f"same{j + 1}")
            m.d.sync += held.eq(flag)
            near.append(held)
        fwd_last = Signal()                 # the element at ta adds to ``last``, else to ``base_pre``
        base_pre = Signal(32 * R)
        pre = ps_q2
        for j in reversed(range(1, n_fwd)):
            pre = Mux(near[j], lasts[j - 1], pre)
        m.d.sync += [fwd_last.eq(~ta_pre.first & near[0]), base_pre.eq(Mux(ta_pre.first, bi_q2, pre))]
        acc_new = []
        for r in range(R):
            base = Mux(fwd_last, last.word_select(r, 32), base_pre.word_select(r, 32)).as_signed()
            acc_new.append((base + array.y.word_select(r, sum_bits(C)).as_signed())[:32])
        ps_waddr, ps_wen = Signal.like(ps_w.addr), Signal()
        m.d.sync += [last.eq(Cat(*acc_new)), ps_waddr.eq(Cat(ta.ox, ta.bank)), ps_wen.eq(ta.valid)]
        m.d.comb += [ps_w.addr.eq(ps_waddr), ps_w.data.eq(last), ps_w.en.eq(ps_wen)]

        # ------------------------------------------------------------------ drain: psums -> requantiser
        ob_busy = Signal(2)
        ob_ready = Signal(2)
        db = Signal()
        dr_active = Signal()
        dr_ox = Signal(range(MWP))
        dr_r = Signal(range(max(R, 2)))
        dr_ch = Signal(16)
        dr_chbase = Signal(16)
        dr_px = Signal(32)
        dr_nch = Signal(range(R + 1))
        dr_rowend = Signal()
        dr_ob = Signal()
        req_set = Signal(2)
        m.d.comb += req_set.eq(Mux(ta.valid & ta.tile_end, 1 << ta.bank, 0))
        dr_clear = Signal(2)
        ob_set_busy = Signal(2)

        cur_t = Mux(db, b_t[1], b_t[0])
        cur_t0 = b_t0.bit_select(db, 1)
        cur_ob = b_ob.bit_select(db, 1)
        dr_ox_last = Signal()      # dr_ox + 1 == out_width, one cycle ahead
        with m.If(idle):
            m.d.sync += db.eq(0)
        with m.If(~dr_active):
            can = drain_req.bit_select(db, 1) & (~cur_t0 | ~ob_busy.bit_select(cur_ob, 1))
            with m.If(can):
                chbase = cur_t * R
                rem = d.out_channels - chbase
                m.d.sync += [
                    dr_active.eq(1), dr_ox.eq(0), dr_r.eq(0), dr_ch.eq(chbase), dr_chbase.eq(chbase),
                    dr_px.eq(Cat(Const(0, HB), cur_ob) + chbase), dr_nch.eq(Mux(rem < R, rem, R)),
                    dr_rowend.eq(b_rowend.bit_select(db, 1)), dr_ob.eq(cur_ob),
                    dr_ox_last.eq(d.out_width == 1),
                ]
                with m.If(cur_t0):
                    m.d.comb += ob_set_busy.eq(1 << cur_ob)
        d1 = Signal(data.StructLayout({"valid": 1, "r": range(max(R, 2)), "addr": HB + 1, "rowend": 1, "ob": 1}))
        m.d.comb += [ps_d.addr.eq(Cat(dr_ox, db)), qp_r.addr.eq(dr_ch)]
        m.d.sync += [d1.valid.eq(dr_active), d1.r.eq(dr_r), d1.addr.eq(dr_px + dr_r), d1.ob.eq(dr_ob),
                     d1.rowend.eq(dr_rowend & dr_ox_last & (dr_r + 1 == dr_nch))]
        with m.If(dr_active):
            with m.If(dr_r + 1 == dr_nch):
                m.d.sync += [dr_r.eq(0), dr_ch.eq(dr_chbase), dr_px.eq(dr_px + d.out_channels)]
                with m.If(dr_ox_last):
                    m.d.sync += [dr_active.eq(0), db.eq(~db)]
                    m.d.comb += dr_clear.eq(1 << db)
                with m.Else():
                    m.d.sync += [dr_ox.eq(dr_ox + 1), dr_ox_last.eq(dr_ox + 2 == d.out_width)]
            with m.Else():
                m.d.sync += [dr_r.eq(dr_r + 1), dr_ch.eq(dr_ch + 1)]
        # The psum and parameter words are registered twice straight out of the block RAMs (d1q, d1q2:
        # their clock-to-out is 5.8 ns and the blocks sit far apart; with the lane shift behind the first
        # register, block -> register was 3.6-4.5 ns, over 10 ns in 2 of 7 builds of the 8x8 SoC), then d2
        # registers the requantiser's inputs: clock-to-out, the 8:1 lane mux and the requantiser's first
        # adder in one cycle was once the engine's longest path (15.4 ns). The lanes of a psum word drain
        # in order (r = 0, 1, ...), so a shift register loaded at lane 0 replaces the mux.
        d1q, d1q2 = Signal.like(d1), Signal.like(d1)
        ps_dq, ps_dq2 = Signal(32 * R), Signal(32 * R)
        qp_q, qp_q2 = Signal(32), Signal(32)
        m.d.sync += [d1q.eq(d1), ps_dq.eq(ps_d.data), qp_q.eq(qp_r.data),
                     d1q2.eq(d1q), ps_dq2.eq(ps_dq), qp_q2.eq(qp_q)]
        d2 = Signal.like(d1)
        d2_word = Signal(32 * R)
        d2_qp = Signal(32)
        d2_acc = d2_word[:32]
        m.d.sync += [d2.eq(d1q2), d2_qp.eq(qp_q2),
                     d2_word.eq(Mux(d1q2.r == 0, ps_dq2, d2_word[32:]))]

        bank_set = Signal(2)
        m.d.comb += bank_set.eq(Mux(take & nx["first"], 1 << nx["bank"], 0))
        with m.If(idle):
            m.d.sync += [bank_busy.eq(0), drain_req.eq(0), ob_busy.eq(0), ob_ready.eq(0)]
        with m.Else():
            m.d.sync += [bank_busy.eq((bank_busy | bank_set) & ~dr_clear),
                         drain_req.eq((drain_req | req_set) & ~dr_clear)]

        m.d.comb += [
            rq.i.valid.eq(d2.valid),
            rq.i.payload.acc.eq(d2_acc),
            rq.i.payload.mantissa.eq(d2_qp[:24]),
            rq.i.payload.shift.eq(d2_qp[24:30]),
            rq.i.payload.zero_point.eq(d.y_zero_point),
            rq.i.payload.lo.eq(d.clamp_lo),
            rq.i.payload.hi.eq(d.clamp_hi),
            rq.i.payload.out_unsigned.eq(~d.out_signed),
            rq.i.payload.user.eq(Cat(d2.addr, d2.rowend, d2.ob)),
            rq.o.ready.eq(1),
        ]
        o_user = rq.o.payload.user
        m.d.comb += [obuf.w_addr.eq(o_user[:HB + 1]), obuf.w_data.eq(rq.o.payload.data), obuf.w_en.eq(rq.o.valid)]
        ob_set_ready = Signal(2)
        m.d.comb += ob_set_ready.eq(Mux(rq.o.valid & o_user[HB + 1], 1 << o_user[HB + 2], 0))

        # ------------------------------------------------------------------ output streamer
        s_active = Signal()
        s_ptr = Signal(HB)         # only the row buffer address; the end comes from s_left
        s_left = Signal(signed(34))   # s_total - 2 - s_ptr: its sign is "this byte is the row's last"
        s_bank = Signal()
        s_clear = Signal(2)
        m.submodules.out_q = out_q = CreditQueue(width=8, depth=OUT_QUEUE)
        s_issue = Signal()
        m.d.comb += [s_issue.eq(s_active & out_q.ok), out_q.issue.eq(s_issue)]
        s_last = Signal()
        m.d.comb += s_last.eq(s_left[-1])
        m.d.comb += [obuf.r_addr.eq(Cat(s_ptr[:HB], s_bank)), obuf.r_en.eq(1)]
        with m.If(idle):
            m.d.sync += [s_active.eq(0), s_bank.eq(0)]
        with m.Elif(~s_active & ob_ready.bit_select(s_bank, 1)):
            m.d.sync += [s_active.eq(1), s_ptr.eq(0), s_left.eq(s_tm2)]
        # The row buffer's two read stages (a_valid, b_valid: their outputs are valid) never stall: a byte
        # is read only while the output queue has room for it and every byte in flight, so the consumer's
        # ready reaches neither the 32 blocks' enables nor the counters (the stall enable was the way the
        # whole accelerator's longest routed paths began).
        a_valid, b_valid = Signal(), Signal()
        m.d.sync += [a_valid.eq(s_issue), b_valid.eq(a_valid)]
        with m.If(s_issue):
            m.d.sync += [s_ptr.eq(s_ptr + 1), s_left.eq(s_left - 1)]
            with m.If(s_last):
                m.d.sync += [s_active.eq(0), s_bank.eq(~s_bank), s_rows.eq(s_rows + 1)]
                m.d.comb += s_clear.eq(1 << s_bank)
        m.d.comb += [out_q.w_en.eq(b_valid), out_q.w_data.eq(obuf.r_data)]
        wiring.connect(m, wiring.flipped(self.out), out_q.out)
        with m.If(~idle):
            m.d.sync += [ob_busy.eq((ob_busy | ob_set_busy) & ~s_clear),
                         ob_ready.eq((ob_ready | ob_set_ready) & ~s_clear)]

        m.d.comb += done_cond.eq(issue_done & (s_rows == d.out_height) & (w_rows == d.in_height)
                                 & out_q.idle)
        return m
