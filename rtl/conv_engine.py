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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .engine_ports import check_config, engine_members
from .dot_array import DotArray
from .requant import Requantizer

__all__ = ["ConvEngine", "Divider"]


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
        m.d.comb += [self.ready.eq(cnt == 0), self.quotient.eq(quo)]
        shifted = Cat(quo[-1], rem[:w])
        with m.If(self.start):
            m.d.sync += [rem.eq(0), quo.eq(self.dividend), div.eq(self.divisor), cnt.eq(w)]
        with m.Elif(cnt != 0):
            m.d.sync += cnt.eq(cnt - 1)
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
        m.submodules.lb = lb = memory.Memory(shape=8 * C, depth=LBW, init=[])
        m.submodules.wmem = wmem = memory.Memory(shape=8 * C * R, depth=WB, init=[])
        m.submodules.psum = psum = memory.Memory(shape=32 * R, depth=2 * MWP, init=[])
        m.submodules.bias = bias = memory.Memory(shape=32 * R, depth=NCO, init=[])
        m.submodules.qp = qp = memory.Memory(shape=32, depth=cfg.max_channels, init=[])
        m.submodules.table = table = memory.Memory(shape=32, depth=NCO, init=[])
        m.submodules.obuf = obuf = memory.Memory(shape=8, depth=2 * HALF, init=[])
        lb_w, lb_r = lb.write_port(), lb.read_port()
        wm_w, wm_r = wmem.write_port(granularity=8 * C), wmem.read_port()
        ps_w = psum.write_port()
        ps_r = psum.read_port(transparent_for=(ps_w,))
        ps_d = psum.read_port()
        bi_w, bi_r = bias.write_port(granularity=32), bias.read_port()
        qp_w, qp_r = qp.write_port(), qp.read_port()
        tb_w, tb_r = table.write_port(), table.read_port()
        ob_w, ob_r = obuf.write_port(), obuf.read_port()

        m.submodules.div = div = Divider(18)
        m.submodules.array = array = DotArray(R, C)
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
        g_lo = Signal(18)
        g_hi = Signal(18)
        ci_lo = Signal(32)
        ci_hi = Signal(32)
        t_lo = Signal(18)
        t_hi = Signal(18)

        # The shared setup multiplier: operands and product registered, so neither the FSM's operand
        # selection nor the write-back shares a cycle with the multiply (MULT18X18D has no fabric
        # registers packed into it by Yosys; an unregistered 18x24 here limited the whole design's clock).
        mul_a = Signal(18)
        mul_b = Signal(24)
        mul_p = Signal(42)
        m.d.sync += mul_p.eq(mul_a * mul_b)

        # ------------------------------------------------------------------ shared control state
        w_en = Signal()            # the pixel writer may run (ring geometry known)
        run = Signal()             # compute phase
        issue_done = Signal()
        reader_top = Signal(20)    # padded row index of the top of the window being read
        w_rows = Signal(16)        # input rows completely written
        s_rows = Signal(16)        # output rows completely read out of the row buffer
        p_cnt = Signal(16)
        p_done = Signal()
        m.d.comb += p_done.eq(p_cnt == d.out_channels)
        done_cond = Signal()

        ld_busy = Signal()         # the weight loader reads a block this cycle
        w_ptr = Signal(range(WB + 1))
        w_wr = Signal(32)          # weight beats received
        wl_blk = Signal(range(WB + 1))
        wl_row = Signal(range(R + 1))

        def mul_state(name, a, b, dst, nxt):
            """``dst <- a * b`` in three cycles: operands, product, result (once per layer or tile)."""
            with m.State(name):
                m.d.sync += [mul_a.eq(a), mul_b.eq(b)]
                m.next = name + "_M"
            with m.State(name + "_M"):
                m.next = name + "_P"
            with m.State(name + "_P"):
                m.d.sync += dst.eq(mul_p)
                m.next = nxt

        def div_state(name, a, b, dst, nxt):
            with m.State(name):
                m.d.comb += [div.start.eq(1), div.dividend.eq(a), div.divisor.eq(b)]
                m.next = name + "_W"
            with m.State(name + "_W"):
                with m.If(div.ready):
                    m.d.sync += dst.eq(div.quotient)
                    m.next = nxt

        kh, kw, sh, sw = d.kernel_h, d.kernel_w, d.stride_h, d.stride_w
        m.d.sync += self.done.eq(0)
        with m.FSM(name="main") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        p_cnt.eq(0), w_en.eq(0), run.eq(0), issue_done.eq(0), reader_top.eq(0),
                        w_rows.eq(0), s_rows.eq(0), w_wr.eq(0), ld_busy.eq(0), w_ptr.eq(0), sum_cnt.eq(0),
                        wl_blk.eq(0), wl_row.eq(0),
                    ]
                    m.next = "NCI"
            div_state("NCI", d.in_channels + (C - 1), C, n_ci, "NCO")
            div_state("NCO", d.out_channels + (R - 1), R, n_co, "COG")
            div_state("COG", d.out_channels, d.groups, cog, "CIG")
            div_state("CIG", d.in_channels, d.groups, cig, "RW")
            mul_state("RW", d.in_width, n_ci, row_words, "KK")
            mul_state("KK", kh, kw, kk, "CS")
            mul_state("CS", sw, n_ci, colstep, "KX")
            mul_state("KX", d.pad_left, n_ci, pl_off, "ST")
            mul_state("ST", d.out_width, d.out_channels, s_total, "P1")
            mul_state("P1", kh + sh, row_words, p1, "P2")
            mul_state("P2", kh + 1, row_words, p2, "NS")
            with m.State("NS"):
                m.d.sync += [ns.eq(Mux(p1 <= LBW, kh + sh, Mux(p2 <= LBW, kh + 1, kh))),
                             pt_mod.eq(d.pad_top), sh_mod.eq(sh)]
                m.next = "MOD"
            with m.State("MOD"):
                # pad_top mod ns and stride_h mod ns by one subtraction per cycle (<= 15 cycles, once per
                # layer): unrolled into one cycle, this chain was the whole design's critical path (22 MHz).
                with m.If(pt_mod >= ns):
                    m.d.sync += pt_mod.eq(pt_mod - ns)
                with m.If(sh_mod >= ns):
                    m.d.sync += sh_mod.eq(sh_mod - ns)
                with m.If((pt_mod < ns) & (sh_mod < ns)):
                    m.next = "RING"
            mul_state("RING", ns, row_words, ring_words, "RSTEP")
            mul_state("RSTEP", sh_mod, row_words, row_step, "WB")
            mul_state("WB", pt_mod, row_words, w_base0, "T_START")
            with m.State("T_START"):
                m.d.sync += [w_en.eq(1), tt.eq(0), co_lo.eq(0)]
                m.next = "T_CHK"

            tb_lo, tb_cnt = Signal(16), Signal(16)
            m.d.comb += [tb_w.addr.eq(tt), tb_w.data.eq(Cat(tb_lo, tb_cnt))]

            def advance_tile():
                m.d.comb += tb_w.en.eq(1)
                m.d.sync += [sum_cnt.eq(sum_cnt + tb_cnt), tt.eq(tt + 1), co_lo.eq(co_lo + R)]
                with m.If(tt + 1 == n_co):
                    m.next = "NB"
                with m.Else():
                    m.next = "T_CHK"

            with m.State("T_CHK"):
                with m.If(d.groups == 1):
                    m.d.comb += [tb_lo.eq(0), tb_cnt.eq(n_ci)]
                    advance_tile()
                with m.Else():
                    m.next = "T_G1"
            co_hi = Mux(co_lo + R < d.out_channels, co_lo + R, d.out_channels)
            div_state("T_G1", co_lo, cog, g_lo, "T_G2")
            div_state("T_G2", co_hi - 1, cog, g_hi, "T_M1")
            mul_state("T_M1", g_lo, cig, ci_lo, "T_M2")
            mul_state("T_M2", g_hi + 1, cig, ci_hi, "T_D1")
            div_state("T_D1", ci_lo, C, t_lo, "T_D2")
            div_state("T_D2", ci_hi + (C - 1), C, t_hi, "T_W")
            with m.State("T_W"):
                m.d.comb += [tb_lo.eq(t_lo), tb_cnt.eq(t_hi - t_lo)]
                advance_tile()
            mul_state("NB", kk, sum_cnt, nb, "NW")
            mul_state("NW", nb, R, nw, "WLOAD")
            with m.State("WLOAD"):
                m.d.comb += self.weights.ready.eq(p_done)
                m.d.comb += [wm_w.addr.eq(wl_blk), wm_w.data.eq(Cat(*[self.weights.payload] * R))]
                with m.If(self.weights.valid & p_done):
                    m.d.comb += wm_w.en.eq(1 << wl_row)
                    m.d.sync += w_wr.eq(w_wr + 1)
                    with m.If(wl_row == R - 1):
                        m.d.sync += [wl_row.eq(0), wl_blk.eq(wl_blk + 1)]
                    with m.Else():
                        m.d.sync += wl_row.eq(wl_row + 1)
                    with m.If(w_wr + 1 == nw):
                        m.d.sync += [run.eq(1), ld_busy.eq(1), w_ptr.eq(0)]      # preload block 0
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(done_cond):
                    m.d.sync += [self.done.eq(1), run.eq(0), w_en.eq(0)]
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))

        # ------------------------------------------------------------------ parameters
        p_word = Signal(range(NCO + 1))
        p_lane = Signal(range(R + 1))
        m.d.comb += self.params.ready.eq(self.busy & ~p_done)
        pbias = self.params.payload[:32]
        m.d.comb += [
            bi_w.addr.eq(p_word), bi_w.data.eq(Cat(*[pbias] * R)),
            qp_w.addr.eq(p_cnt), qp_w.data.eq(self.params.payload[32:64]),
        ]
        with m.If(fsm.ongoing("IDLE")):
            m.d.sync += [p_word.eq(0), p_lane.eq(0)]
        with m.If(self.params.valid & self.params.ready):
            m.d.comb += [bi_w.en.eq(1 << p_lane), qp_w.en.eq(1)]
            m.d.sync += p_cnt.eq(p_cnt + 1)
            with m.If(p_lane == R - 1):
                m.d.sync += [p_lane.eq(0), p_word.eq(p_word + 1)]
            with m.Else():
                m.d.sync += p_lane.eq(p_lane + 1)

        # ------------------------------------------------------------------ pixel writer (line-buffer ring)
        w_ch = Signal(16)
        w_lane = Signal(range(C + 1))
        w_k = Signal(A)
        w_px = Signal(16)
        w_base = Signal(A)
        wreg = Signal(8 * C)
        with m.If(fsm.ongoing("T_START")):
            m.d.sync += [w_ch.eq(0), w_lane.eq(0), w_k.eq(0), w_px.eq(0), w_base.eq(w_base0), wreg.eq(0)]
        may_write = Signal()
        m.d.comb += may_write.eq(issue_done | (w_rows + d.pad_top < reader_top + ns))
        m.d.comb += self.pixels.ready.eq(w_en & (w_rows < d.in_height) & may_write)
        word = Signal(8 * C)
        m.d.comb += word.eq(Cat(*[Mux(w_lane == c, self.pixels.payload, wreg.word_select(c, 8))
                                  for c in range(C)]))
        m.d.comb += [lb_w.addr.eq(w_base + w_k), lb_w.data.eq(word)]
        with m.If(self.pixels.valid & self.pixels.ready):
            last_ch = w_ch + 1 == d.in_channels
            with m.If((w_lane == C - 1) | last_ch):
                m.d.comb += lb_w.en.eq(1)
                m.d.sync += [w_k.eq(w_k + 1), w_lane.eq(0), wreg.eq(0)]
            with m.Else():
                m.d.sync += [wreg.eq(word), w_lane.eq(w_lane + 1)]
            with m.If(last_ch):
                m.d.sync += w_ch.eq(0)
                with m.If(w_px + 1 == d.in_width):
                    nbase = w_base + row_words
                    m.d.sync += [w_px.eq(0), w_k.eq(0), w_rows.eq(w_rows + 1),
                                 w_base.eq(Mux(nbase >= ring_words, nbase - ring_words, nbase))]
                with m.Else():
                    m.d.sync += w_px.eq(w_px + 1)
            with m.Else():
                m.d.sync += w_ch.eq(w_ch + 1)

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

        nx_valid = Signal()
        nx = {name: Signal(shape, name=f"nx_{name}") for name, shape in (
            ("t", 16), ("bank", 1), ("ob", 1), ("first", 1), ("last", 1), ("row_first", 1),
            ("row_last", 1), ("layer_last", 1), ("t_last", 1), ("row_pad", 1), ("addr0", signed(A)),
            ("ix0", signed(20)), ("need", 16))}
        take = Signal()           # the issue stage takes the pass in nx this cycle

        m.d.comb += tb_r.addr.eq(pg_t)
        with m.If(take):
            m.d.sync += nx_valid.eq(0)
        with m.FSM(name="passgen"):
            with m.State("IDLE"):
                with m.If(fsm.ongoing("WLOAD") & self.weights.valid & p_done & (w_wr + 1 == nw)):
                    m.d.sync += [
                        pg_oy.eq(0), pg_t.eq(0), pg_ky.eq(0), pg_kx.eq(0), pg_iy_top.eq(-d.pad_top),
                        pg_base_top.eq(0), pg_base_k.eq(0), pg_kx_off.eq(-pl_off), pg_bank.eq(0),
                        pg_ob.eq(0), nx_valid.eq(0),
                    ]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.next = "LOAD"
            with m.State("LOAD"):
                lo = tb_r.data[:16]
                m.d.sync += [pg_lo.eq(lo), pg_hi.eq(lo + tb_r.data[16:32]), pg_ci.eq(lo)]
                m.next = "GEN"
            with m.State("GEN"):
                first = (pg_ky == 0) & (pg_kx == 0) & (pg_ci == pg_lo)
                last = (pg_ky + 1 == kh) & (pg_kx + 1 == kw) & (pg_ci + 1 == pg_hi)
                t_last = pg_t + 1 == n_co
                oy_last = pg_oy + 1 == d.out_height
                iy = pg_iy_top + pg_ky
                need = pg_iy_top + kh
                with m.If(~nx_valid | take):
                    m.d.sync += [
                        nx_valid.eq(1),
                        nx["t"].eq(pg_t), nx["bank"].eq(pg_bank), nx["ob"].eq(pg_ob),
                        nx["first"].eq(first), nx["last"].eq(last),
                        nx["row_first"].eq(first & (pg_t == 0)), nx["row_last"].eq(last & t_last),
                        nx["layer_last"].eq(last & t_last & oy_last), nx["t_last"].eq(t_last),
                        nx["row_pad"].eq((iy < 0) | (iy >= d.in_height)),
                        nx["addr0"].eq(pg_base_k + pg_kx_off + pg_ci),
                        nx["ix0"].eq(pg_kx - d.pad_left),
                        nx["need"].eq(Mux(need < 0, 0, Mux(need > d.in_height, d.in_height, need))),
                    ]
                    with m.If(pg_ci + 1 < pg_hi):
                        m.d.sync += pg_ci.eq(pg_ci + 1)
                    with m.Else():
                        m.d.sync += pg_ci.eq(pg_lo)
                        with m.If(pg_kx + 1 < kw):
                            m.d.sync += [pg_kx.eq(pg_kx + 1), pg_kx_off.eq(pg_kx_off + n_ci)]
                        with m.Else():
                            m.d.sync += [pg_kx.eq(0), pg_kx_off.eq(-pl_off)]
                            with m.If(pg_ky + 1 < kh):
                                nk = pg_base_k + row_words
                                m.d.sync += [pg_ky.eq(pg_ky + 1),
                                             pg_base_k.eq(Mux(nk >= ring_words, nk - ring_words, nk))]
                            with m.Else():
                                m.d.sync += [pg_ky.eq(0), pg_bank.eq(~pg_bank)]
                                with m.If(~t_last):
                                    m.d.sync += [pg_t.eq(pg_t + 1), pg_base_k.eq(pg_base_top)]
                                    m.next = "FETCH"
                                with m.Elif(oy_last):
                                    m.next = "IDLE"
                                with m.Else():
                                    nbt = pg_base_top + row_step
                                    nbt = Mux(nbt >= ring_words, nbt - ring_words, nbt)
                                    m.d.sync += [pg_t.eq(0), pg_oy.eq(pg_oy + 1), pg_ob.eq(~pg_ob),
                                                 pg_iy_top.eq(pg_iy_top + sh),
                                                 pg_base_top.eq(nbt), pg_base_k.eq(nbt)]
                                    m.next = "FETCH"

        # ------------------------------------------------------------------ issue stage + weight loader
        bank_busy = Signal(2)
        drain_req = Signal(2)
        b_t = [Signal(16, name=f"b_t{i}") for i in range(2)]
        b_ob = Signal(2)
        b_rowend = Signal(2)

        is_active = Signal()
        ox = Signal(range(MWP))
        cur_ix = Signal(signed(20))
        cur_addr = Signal(signed(A))
        cur = {name: Signal(s.shape(), name=f"cur_{name}") for name, s in nx.items()
               if name in ("t", "bank", "first", "last", "row_last", "layer_last", "row_pad")}
        pass_end = Signal()       # the pass's last pixel issues this cycle (a register: it heads `take`)

        want = nx_valid & (~is_active | pass_end) & run
        rows_ok = (w_rows >= nx["need"])
        bank_ok = ~bank_busy.bit_select(nx["bank"], 1)
        m.d.comb += take.eq(want & (~nx["row_first"] | rows_ok) & (~nx["first"] | bank_ok))

        with m.If(take):
            m.d.sync += [is_active.eq(1), ox.eq(0), cur_ix.eq(nx["ix0"]), cur_addr.eq(nx["addr0"]),
                         *[cur[k].eq(nx[k]) for k in cur], ld_busy.eq(1), pass_end.eq(d.out_width == 1)]
            with m.If(nx["first"]):
                for b in range(2):
                    with m.If(nx["bank"] == b):
                        m.d.sync += [bank_busy[b].eq(1), b_t[b].eq(nx["t"]), b_ob[b].eq(nx["ob"]),
                                     b_rowend[b].eq(nx["t_last"])]
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
        ld_we = Signal()
        m.d.sync += ld_we.eq(ld_busy)
        m.d.comb += [array.w_we.eq(ld_we), array.w_data.eq(wm_r.data)]

        # ------------------------------------------------------------------ compute pipeline
        tag_layout = data.StructLayout({
            "valid": 1, "pad": 1, "ox": OXB, "first": 1, "bank": 1, "t": 16, "tile_end": 1, "pass_start": 1})
        stages = 2 + array.latency
        tags = [Signal(tag_layout, name=f"tag{i}") for i in range(stages)]
        m.d.comb += [
            tags[0].valid.eq(is_active),
            tags[0].pad.eq(cur["row_pad"] | (cur_ix < 0) | (cur_ix >= d.in_width)),
            tags[0].ox.eq(ox), tags[0].first.eq(cur["first"]), tags[0].bank.eq(cur["bank"]),
            tags[0].t.eq(cur["t"]), tags[0].tile_end.eq(cur["last"] & pass_end), tags[0].pass_start.eq(ox == 0),
        ]
        for i in range(1, stages):
            m.d.sync += tags[i].eq(tags[i - 1])
        m.d.comb += lb_r.addr.eq(cur_addr[:LAW])

        # Stage 1: line-buffer word -> x - x_zp lanes.
        t1 = tags[1]
        for c in range(C):
            raw = lb_r.data.word_select(c, 8)
            xv = Mux(d.in_signed, raw.as_signed(), raw.as_unsigned()) - d.x_zero_point
            m.d.comb += array.x[c].eq(Mux(t1.pad, 0, xv))
        m.d.comb += [array.swap.eq(t1.valid & t1.pass_start), self.array_active.eq(t1.valid)]

        # Accumulate at stage A = 1 + latency, where the row sums arrive. The psum and bias reads are
        # addressed two stages before and their block-RAM outputs registered (clock-to-out, then the adder,
        # in one cycle was one of the design's long paths). The read is transparent to the write in its own
        # cycle; the one write it cannot see -- the element just ahead writing the same address (passes a
        # single pixel long: dense layers, one-column outputs) -- is forwarded from the last sums.
        ta_rd, ta_pre, ta = tags[stages - 3], tags[stages - 2], tags[stages - 1]
        m.d.comb += [ps_r.addr.eq(Cat(ta_rd.ox, ta_rd.bank)), bi_r.addr.eq(ta_rd.t)]
        ps_q, bi_q, last = Signal(32 * R), Signal(32 * R), Signal(32 * R)
        forward = Signal()
        m.d.sync += [ps_q.eq(ps_r.data), bi_q.eq(bi_r.data),
                     forward.eq(ta.valid & (ta_pre.ox == ta.ox) & (ta_pre.bank == ta.bank))]
        acc_new = []
        for r in range(R):
            psum_r = Mux(forward, last.word_select(r, 32), ps_q.word_select(r, 32))
            base = Mux(ta.first, bi_q.word_select(r, 32), psum_r).as_signed()
            acc_new.append((base + array.y[r])[:32])
        m.d.sync += last.eq(Cat(*acc_new))
        m.d.comb += [ps_w.addr.eq(Cat(ta.ox, ta.bank)), ps_w.data.eq(Cat(*acc_new)), ps_w.en.eq(ta.valid)]

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
        cur_ob = b_ob.bit_select(db, 1)
        with m.If(fsm.ongoing("IDLE")):
            m.d.sync += db.eq(0)
        with m.If(~dr_active):
            can = drain_req.bit_select(db, 1) & ((cur_t != 0) | ~ob_busy.bit_select(cur_ob, 1))
            with m.If(can):
                chbase = cur_t * R
                rem = d.out_channels - chbase
                m.d.sync += [
                    dr_active.eq(1), dr_ox.eq(0), dr_r.eq(0), dr_ch.eq(chbase), dr_chbase.eq(chbase),
                    dr_px.eq(Cat(Const(0, HB), cur_ob) + chbase), dr_nch.eq(Mux(rem < R, rem, R)),
                    dr_rowend.eq(b_rowend.bit_select(db, 1)), dr_ob.eq(cur_ob),
                ]
                with m.If(cur_t == 0):
                    m.d.comb += ob_set_busy.eq(1 << cur_ob)
        d1 = Signal(data.StructLayout({"valid": 1, "r": range(max(R, 2)), "addr": HB + 1, "rowend": 1, "ob": 1}))
        m.d.comb += [ps_d.addr.eq(Cat(dr_ox, db)), qp_r.addr.eq(dr_ch)]
        m.d.sync += [d1.valid.eq(dr_active), d1.r.eq(dr_r), d1.addr.eq(dr_px + dr_r), d1.ob.eq(dr_ob),
                     d1.rowend.eq(dr_rowend & (dr_ox + 1 == d.out_width) & (dr_r + 1 == dr_nch))]
        with m.If(dr_active):
            with m.If(dr_r + 1 == dr_nch):
                m.d.sync += [dr_r.eq(0), dr_ch.eq(dr_chbase), dr_px.eq(dr_px + d.out_channels)]
                with m.If(dr_ox + 1 == d.out_width):
                    m.d.sync += [dr_active.eq(0), db.eq(~db)]
                    m.d.comb += dr_clear.eq(1 << db)
                with m.Else():
                    m.d.sync += dr_ox.eq(dr_ox + 1)
            with m.Else():
                m.d.sync += [dr_r.eq(dr_r + 1), dr_ch.eq(dr_ch + 1)]

        bank_set = Signal(2)
        m.d.comb += bank_set.eq(Mux(take & nx["first"], 1 << nx["bank"], 0))
        with m.If(fsm.ongoing("IDLE")):
            m.d.sync += [bank_busy.eq(0), drain_req.eq(0), ob_busy.eq(0), ob_ready.eq(0)]
        with m.Else():
            m.d.sync += [bank_busy.eq((bank_busy | bank_set) & ~dr_clear),
                         drain_req.eq((drain_req | req_set) & ~dr_clear)]

        m.d.comb += [
            rq.i.valid.eq(d1.valid),
            rq.i.payload.acc.eq(ps_d.data.word_select(d1.r, 32)),
            rq.i.payload.mantissa.eq(qp_r.data[:24]),
            rq.i.payload.shift.eq(qp_r.data[24:30]),
            rq.i.payload.zero_point.eq(d.y_zero_point),
            rq.i.payload.lo.eq(d.clamp_lo),
            rq.i.payload.hi.eq(d.clamp_hi),
            rq.i.payload.out_unsigned.eq(~d.out_signed),
            rq.i.payload.user.eq(Cat(d1.addr, d1.rowend, d1.ob)),
            rq.o.ready.eq(1),
        ]
        o_user = rq.o.payload.user
        m.d.comb += [ob_w.addr.eq(o_user[:HB + 1]), ob_w.data.eq(rq.o.payload.data), ob_w.en.eq(rq.o.valid)]
        ob_set_ready = Signal(2)
        m.d.comb += ob_set_ready.eq(Mux(rq.o.valid & o_user[HB + 1], 1 << o_user[HB + 2], 0))

        # ------------------------------------------------------------------ output streamer
        s_active = Signal()
        s_ptr = Signal(32)
        s_bank = Signal()
        s_clear = Signal(2)
        en_pipe = ~self.out.valid | self.out.ready
        m.d.comb += [ob_r.addr.eq(Cat(s_ptr[:HB], s_bank)), ob_r.en.eq(en_pipe)]
        with m.If(fsm.ongoing("IDLE")):
            m.d.sync += [s_active.eq(0), s_bank.eq(0)]
        with m.Elif(~s_active & ob_ready.bit_select(s_bank, 1)):
            m.d.sync += [s_active.eq(1), s_ptr.eq(0)]
        with m.If(en_pipe):
            m.d.sync += self.out.valid.eq(s_active)
            with m.If(s_active):
                m.d.sync += s_ptr.eq(s_ptr + 1)
                with m.If(s_ptr + 1 == s_total):
                    m.d.sync += [s_active.eq(0), s_bank.eq(~s_bank), s_rows.eq(s_rows + 1)]
                    m.d.comb += s_clear.eq(1 << s_bank)
        m.d.comb += self.out.payload.eq(ob_r.data)
        with m.If(~fsm.ongoing("IDLE")):
            m.d.sync += [ob_busy.eq((ob_busy | ob_set_busy) & ~s_clear),
                         ob_ready.eq((ob_ready | ob_set_ready) & ~s_clear)]

        m.d.comb += done_cond.eq(issue_done & (s_rows == d.out_height) & (w_rows == d.in_height)
                                 & ~self.out.valid)
        return m
