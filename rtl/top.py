"""The SCALENet accelerator: control slave, DMA, sequencer and layer engines behind two AXI ports.

The sequencer runs ``DESC_COUNT`` descriptors from ``DESC_ADDR`` per START, without the CPU: for each it
fetches the 64 descriptor bytes, checks them against the configuration (``BAD_OPCODE`` /
``BAD_DESCRIPTOR`` rather than a hang or a wrong answer), starts the engine of the opcode, issues the DMA
reads the engine consumes in order (parameters, weight blocks, input pixels; for ADD the two inputs in
interleaved chunks, the first one chunk ahead) and one DMA write for the output region, and moves on when
the engine is done and every write response is back.

A CONV with ``pool_after`` set sends its output bytes through the fused max pool
(:class:`~scalenet.rtl.fused_pool.FusedMaxPool`) on the way to the DMA: the descriptor's out_height and
out_width stay the conv's, the output region is the pooled tensor's.

Failures (an AXI error response, ABORT, the watchdog) stop the run: the engines and adapters are held in
reset while the DMA finishes what is on the bus (read data is sunk, write bursts complete with zero
strobes, so memory outside the layer's buffers is never touched and the bus stays legal), then
STATUS.error and ERROR.{code, layer} report what happened.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from . import axi
from .block_ram_fifo import BlockRamFIFO
from .config import AcceleratorConfig
from .control import ControlSlave
from .dma import DMA
from .regmap import DESCRIPTOR_BYTES, ErrorCode, Opcode, descriptor_layout
from .stream_adapters import BytesToWords, FifoSlice, RegionLayout, SkidBuffer, WordSplitter, WordsToBytes

__all__ = ["ScaleNet", "ADD_CHUNK_WORDS", "END_OF_LIST_CYCLES"]

ADD_CHUNK_WORDS = 8
"""Words of each ADD input fetched per DMA command (the first input runs one chunk ahead)."""

END_OF_LIST_CYCLES = 2
"""Cycles from the last descriptor's end to idle (the sequencer's NEXT and NEXT_ACT states): a run of n
descriptors counts n layers' cycles plus these."""

_TARGETS = ("none", "desc", "params", "weights", "pixels", "pixels_b")


class ScaleNet(wiring.Component):
    """The accelerator top level.

    Members
    -------
    ctrl : ``In(axi.LiteSignature(addr_width=12))``
        Registers (rtl/regmap.py).
    mem : ``Out(axi.Signature(addr_width=32, data_width=8 * config.data_bytes))``
        Memory: descriptors, weights, parameters and activations.
    irq : ``Out(1)``
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, watchdog_cycles=1 << 20):
        self.config = config or AcceleratorConfig()
        if self.config.cols * 8 > self.config.data_bytes * 8 or (self.config.data_bytes * 8) % (self.config.cols * 8):
            raise ValueError(f"a PE row ({self.config.cols} bytes) must divide the bus word "
                             f"({self.config.data_bytes} bytes)")
        self.watchdog_cycles = watchdog_cycles
        super().__init__({
            "ctrl": In(axi.LiteSignature(addr_width=12, data_width=32)),
            "mem": Out(axi.Signature(addr_width=32, data_width=8 * self.config.data_bytes)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        from .add_engine import AddEngine
        from .conv_engine import ConvEngine
        from .fused_pool import FusedMaxPool
        from .pool_engine import PoolEngine

        m = Module()
        cfg = self.config
        nb = cfg.data_bytes
        align = nb.bit_length() - 1

        m.submodules.control = control = ControlSlave(
            rows=cfg.rows, cols=cfg.cols, max_kernel=cfg.max_kernel, data_bytes=nb,
            max_width=cfg.max_width, max_channels=cfg.max_channels, addr_width=12)
        connect(m, flipped(self.ctrl), control.bus)
        m.d.comb += self.irq.eq(control.irq)

        m.submodules.dma = dma = DMA(data_width=8 * nb, strobes=True)
        connect(m, flipped(self.mem), dma.bus)

        # Everything that holds per-layer state is reset together when a run fails or is aborted. The reset
        # is a register (high from the cycle after FAIL is entered to the one after it is left): decoded
        # from the sequencer's state it reached the reset pins of every engine register through a LUT
        # (seq_state -> ... -> LSR, 10.0-11.0 ns in the 86.5 MHz whole design).
        eng_rst = Signal()
        wrap = ResetInserter(eng_rst)
        m.submodules.conv = conv = wrap(ConvEngine(cfg))
        m.submodules.pool = pool = wrap(PoolEngine(cfg))
        m.submodules.add = add = wrap(AddEngine(cfg))
        m.submodules.fpool = fpool = wrap(FusedMaxPool(cfg))
        m.submodules.r2b = r2b = wrap(WordsToBytes(8 * nb))
        m.submodules.r2b_b = r2b_b = wrap(WordsToBytes(8 * nb))
        m.submodules.b2w = b2w = wrap(BytesToWords(8 * nb))
        m.submodules.wsplit = wsplit = wrap(WordSplitter(8 * nb, 8 * cfg.cols))
        m.submodules.a_fifo = a_fifo = wrap(BlockRamFIFO(width=8, depth=4 * ADD_CHUNK_WORDS * nb))

        desc = Signal(descriptor_layout())
        for engine in (conv, pool, add):
            m.d.comb += engine.desc.eq(desc)

        # ---- read data routing --------------------------------------------------------------------
        target = Signal(range(len(_TARGETS)))
        T = {name: i for i, name in enumerate(_TARGETS)}
        # The target also as one-hot registers, loaded with it (every assignment is a constant): the
        # decode of ``target`` headed the read-data handshake (target -> stream valids -> the engines'
        # ready logic -> rd.ready -> the read slice, 10.5 ns in the 82 MHz whole design).
        to = {name: Signal(name=f"to_{name}", init=name == "none") for name in _TARGETS}

        def set_target(name):
            return [target.eq(T[name]), *(sig.eq(n == name) for n, sig in to.items())]
        # Register slices on both DMA data streams: the handshakes from the AXI channels through the
        # adapters into the engines are otherwise single combinational chains. The read stream's is a
        # FifoSlice: its ready (an OR over five consumers) then moves a pointer, not 65 payload registers.
        m.submodules.rd_slice = rd_slice = wrap(FifoSlice(dma.rd_data.payload.shape()))
        m.submodules.wr_skid = wr_skid = wrap(SkidBuffer(b2w.o.payload.shape()))
        connect(m, dma.rd_data, rd_slice.i)
        rd = rd_slice.o
        rd_data = rd.payload.data
        op = desc.opcode
        # The opcode decoded into registers when the descriptor is loaded (every stream mux below
        # selects on these; decoding in place put the opcode compare at the head of those paths).
        is_conv, is_pool, is_add, fuse = Signal(), Signal(), Signal(), Signal()

        def decode(d):
            conv = (d.opcode == Opcode.CONV) | (d.opcode == Opcode.DENSE)
            return [is_conv.eq(conv),
                    is_pool.eq((d.opcode == Opcode.MAXPOOL) | (d.opcode == Opcode.AVGPOOL) |
                               (d.opcode == Opcode.GLOBAL_AVGPOOL)),
                    is_add.eq(d.opcode == Opcode.ADD), fuse.eq(conv & (d.pool_after != 0))]

        m.d.comb += [
            fpool.shape.kernel3.eq(desc.pool_after == 3), fpool.shape.ceil.eq(desc.pool_ceil),
            fpool.shape.signed.eq(desc.out_signed), fpool.shape.channels.eq(desc.out_channels),
            fpool.shape.width.eq(desc.out_width), fpool.shape.height.eq(desc.out_height),
        ]
        # Parameters reach the engines through a register slice too: their ready logic (counters against
        # descriptor fields) must not reach the read handshake and the sequencer's beat counter.
        # READ_DATA waits until the slice is empty, so an engine has every parameter before other data.
        m.submodules.prm_skid = prm_skid = wrap(SkidBuffer(8 * nb))
        m.d.comb += [prm_skid.i.payload.eq(rd_data), prm_skid.i.valid.eq(rd.valid & to["params"]),
                     prm_skid.o.ready.eq(Mux(is_conv, conv.params.ready,
                                             Mux(is_pool, pool.params.ready, add.params.ready)))]
        for engine, sel in ((conv, is_conv), (pool, is_pool), (add, is_add)):
            m.d.comb += [engine.params.payload.eq(prm_skid.o.payload),
                         engine.params.valid.eq(prm_skid.o.valid & sel)]
        m.d.comb += [
            wsplit.i.payload.eq(rd_data),
            wsplit.i.valid.eq(rd.valid & to["weights"]),
            r2b.i.payload.eq(rd_data),
            r2b.i.valid.eq(rd.valid & to["pixels"]),
            r2b_b.i.payload.eq(rd_data),
            r2b_b.i.valid.eq(rd.valid & to["pixels_b"]),
        ]
        # Weights through a register slice too: the conv engine's weight ready depends on its valid, so
        # rd.valid -> conv's weight-load logic -> rd.ready -> the read slice was one chain (10.5 ns).
        m.submodules.wt_skid = wt_skid = wrap(SkidBuffer(len(wsplit.o.payload)))
        connect(m, wsplit.o, wt_skid.i)
        connect(m, wt_skid.o, conv.weights)
        desc_beat = Signal()
        sink = Signal()
        # rd.ready as an AND-OR of the one-hot target registers (no decode in front).
        m.d.comb += [
            desc_beat.eq(rd.valid & to["desc"]),
            rd.ready.eq(to["desc"] | to["params"] & prm_skid.i.ready | to["weights"] & wsplit.i.ready |
                        to["pixels"] & r2b.i.ready | to["pixels_b"] & r2b_b.i.ready | to["none"] & sink),
        ]

        # Input bytes: conv/pool from the adapter, ADD's first input through the FIFO; byte streams in and
        # out of the engines through register slices too (the engines' ready logic compares counters with
        # descriptor fields; it must not extend into the adapters and the DMA).
        m.submodules.px_skid = px_skid = wrap(SkidBuffer(8))
        m.submodules.pxb_skid = pxb_skid = wrap(SkidBuffer(8))
        m.submodules.out_skid = out_skid = wrap(SkidBuffer(8))
        # The conv engine's output bytes come straight from its row buffer's block RAM (4.3 ns
        # clock-to-out): a register slice before the fused pool and the engine mux below.
        m.submodules.conv_skid = conv_skid = wrap(SkidBuffer(8))
        connect(m, conv.out, conv_skid.i)
        conv_out = conv_skid.o
        # The pool engine's max-pool output is clamped combinationally against the descriptor's bounds
        # (32-bit compares): a register slice here keeps those compares out of the engine mux in front of
        # out_skid (desc -> compare -> mux -> out_skid was 11.8 ns, the top's longest path).
        m.submodules.pool_skid = pool_skid = wrap(SkidBuffer(8))
        connect(m, pool.out, pool_skid.i)
        pool_out = pool_skid.o
        connect(m, r2b.o, px_skid.i)
        px = px_skid.o
        m.d.comb += [
            conv.pixels.payload.eq(px.payload), pool.pixels.payload.eq(px.payload),
            conv.pixels.valid.eq(px.valid & is_conv), pool.pixels.valid.eq(px.valid & is_pool),
            a_fifo.w_data.eq(px.payload), a_fifo.w_en.eq(px.valid & is_add),
            px.ready.eq(Mux(is_conv, conv.pixels.ready, Mux(is_pool, pool.pixels.ready, a_fifo.w_rdy))),
            add.pixels.payload.eq(a_fifo.r_data), add.pixels.valid.eq(a_fifo.r_rdy), a_fifo.r_en.eq(add.pixels.ready),
        ]
        connect(m, r2b_b.o, pxb_skid.i)
        connect(m, pxb_skid.o, add.pixels_b)

        # Output bytes (a conv's through the fused pool when asked) -> words with strobes -> DMA writer
        # (zero-strobe filler while draining).
        draining = Signal()
        conv_o = (Mux(fuse, fpool.o.payload, conv_out.payload), Mux(fuse, fpool.o.valid, conv_out.valid))
        m.d.comb += [
            fpool.i.payload.eq(conv_out.payload), fpool.i.valid.eq(conv_out.valid & fuse),
            fpool.o.ready.eq(out_skid.i.ready & fuse),
            out_skid.i.payload.eq(Mux(is_conv, conv_o[0], Mux(is_pool, pool_out.payload, add.out.payload))),
            out_skid.i.valid.eq(Mux(is_conv, conv_o[1], Mux(is_pool, pool_out.valid, add.out.valid))),
            conv_out.ready.eq(Mux(fuse, fpool.i.ready, out_skid.i.ready & is_conv)),
            pool_out.ready.eq(out_skid.i.ready & is_pool),
            # (no is_add: the add engine has no output outside its layers; one input less in its enable)
            add.out.ready.eq(out_skid.i.ready),
        ]
        connect(m, out_skid.o, b2w.i)
        connect(m, b2w.o, wr_skid.i)
        with m.If(draining):
            m.d.comb += [dma.wr_data.valid.eq(1), dma.wr_data.payload.eq(0)]
        with m.Else():
            connect(m, wr_skid.o, dma.wr_data)

        # ---- performance counters and status ------------------------------------------------------
        busy, done_flag, error_flag = Signal(), Signal(), Signal()
        error_code = Signal(8)
        layer = Signal(16)
        m.d.comb += [
            control.busy.eq(busy), control.done.eq(done_flag), control.error.eq(error_flag),
            control.error_code.eq(error_code), control.layer.eq(layer),
        ]
        # The counters' increments one cycle late (registered): the DMA's handshake logic in front of a
        # 64-bit adder was a long path; the totals are the same once a run has ended.
        m.d.sync += [
            control.perf_mac.eq(Mux(conv.array_active, cfg.rows * cfg.cols, 0)),
            control.perf_rd_bytes.eq(dma.rd_bytes), control.perf_wr_bytes.eq(dma.wr_bytes),
            control.perf_stall.eq(dma.stall),
        ]

        # ---- sequencer ----------------------------------------------------------------------------
        index = Signal(16)
        desc_bits = Signal(DESCRIPTOR_BYTES * 8)
        beats_left = Signal(24)                 # beats of the current read command not yet delivered
        rd_addr, rd_words = Signal(32), Signal(24)   # the next read command
        engine_done = Signal()
        watchdog = Signal(range(self.watchdog_cycles + 1))
        fail_code = Signal(8)
        in_region, out_region, b_region = Signal(RegionLayout()), Signal(RegionLayout()), Signal(RegionLayout())
        in_base, out_base, b_base = Signal(32), Signal(32), Signal(32)
        pixels_in, pixels_out = Signal(32), Signal(32)
        a_words_left, b_words_left = Signal(24), Signal(24)
        a_next, b_next = Signal(32), Signal(32)
        add_turn_b = Signal()

        m.d.comb += layer.eq(index)
        m.d.sync += engine_done.eq(engine_done | conv.done | pool.done | add.done)
        rd_beat = Signal()
        m.d.comb += rd_beat.eq(rd.valid & rd.ready)
        # beats_left == 0 as a register (READ_DATA's exit test would otherwise start with a 24-bit zero test).
        beats_zero = Signal(init=1)
        with m.If(rd_beat & ~beats_zero):
            m.d.sync += [beats_left.eq(beats_left - 1), beats_zero.eq(beats_left == 1)]
        with m.If(desc_beat):
            m.d.sync += desc_bits.eq(Cat(desc_bits[8 * nb:], rd_data))

        m.d.comb += [dma.rd_cmd.payload.addr.eq(rd_addr), dma.rd_cmd.payload.length.eq(rd_words << align)]

        # One shared multiplier for the per-layer products (pixel counts, the fused pool's row, region
        # spans): shift-and-add, a bit of b a cycle from the top, 18 cycles a product and a few products a
        # layer. It was a DSP (32x16 in two 16x16 halves, registered around): its 3.9 ns and the routes to
        # and from the DSP column (5.6 ns) still made one cycle, 10.07 ns in the 8x8 SoC.
        mul_a, mul_b, mul_p = Signal(32), Signal(16), Signal(48)

        # A product is one FSM state counting its cycles in mul_step (fewer states: a smaller next-state
        # function): load, 16 steps, store. mul_step is cleared on leaving, and in FAIL for a run ended
        # mid-product.
        mul_step = Signal(range(18))

        def mul_state(name, a, b, dst, nxt):
            """``dst <- a * b`` over 18 cycles (abort/errors still end the run from any of them)."""
            with m.State(name):
                with m.If(mul_step == 0):
                    m.d.sync += [mul_a.eq(a), mul_b.eq(b), mul_p.eq(0)]
                with m.Elif(mul_step != 17):
                    m.d.sync += [mul_p.eq((mul_p << 1) + Mux(mul_b[-1], mul_a, 0)), mul_b.eq(mul_b << 1)]
                with m.If(mul_step == 17):
                    m.d.sync += [dst.eq(mul_p), mul_step.eq(0)]
                    m.next = nxt
                with m.Else():
                    m.d.sync += mul_step.eq(mul_step + 1)
                check_fail()

        def region(base_sig, region_sig, addr, stride, channels, span_product):
            """A tensor region from its descriptor fields: ``span = (pixels - 1) * stride + channels`` (the
            product computed before), then the bus words it touches; one adder per cycle. Returns the
            statements of the two states (SPANS, WORDS)."""
            lead = addr[:align]
            spans = [base_sig.eq(Cat(Const(0, align), addr[align:])), region_sig.lead.eq(lead),
                     region_sig.span.eq(span_product + channels), region_sig.stride.eq(stride),
                     region_sig.channels.eq(channels)]
            words = [region_sig.words.eq((region_sig.lead + region_sig.span + nb - 1) >> align)]
            return spans, words

        def issue_read(addr, words, tgt, next_state):
            m.d.sync += [rd_addr.eq(addr), rd_words.eq(words), *set_target(_TARGETS[tgt])]
            m.next = next_state

        # "Something moved", registered: the handshakes it samples (rd.ready's mux, the engines' ready
        # logic) headed the watchdog's reset (target -> ... -> watchdog LSR, 10.5 ns). One cycle late
        # on a counter of 2**20 is nothing.
        progress = Signal()
        m.d.sync += progress.eq(rd_beat | (dma.wr_data.valid & dma.wr_data.ready) | conv.array_active |
                                 b2w.i.valid & b2w.i.ready | conv_out.valid & conv_out.ready)
        with m.If(~busy | progress):
            m.d.sync += watchdog.eq(0)
        with m.Elif(watchdog != self.watchdog_cycles):
            m.d.sync += watchdog.eq(watchdog + 1)

        # A DMA error, an abort (or soft reset) or the watchdog ends the run from wherever it is, one cycle
        # after it happens: the reasons are registered, so the sequencer's next-state logic (every state
        # checks them) does not start at the DMA's and the control slave's logic.
        fail_now = Signal()
        fail_reason = Signal(8)
        fail_soft, fail_soft_now = Signal(), Signal()
        m.d.sync += [
            fail_reason.eq(Mux(dma.error, dma.error_code,
                               Mux(control.abort | control.soft_reset, ErrorCode.ABORTED, ErrorCode.WATCHDOG))),
            fail_now.eq(dma.error | control.abort | control.soft_reset | (watchdog == self.watchdog_cycles)),
            fail_soft_now.eq(control.soft_reset & ~dma.error),
        ]

        def check_fail():
            with m.If(fail_now):
                m.d.sync += [fail_code.eq(fail_reason), fail_soft.eq(fail_soft_now), all_done.eq(0), wr_idle.eq(0)]
                m.next = "FAIL"

        # ADD's read interleaving, registered every cycle in two stages (the differences, then the compare
        # and the choice): the counters they read change only in START and ADD_NEXT, and ADD_NEXT is
        # entered no sooner than three cycles later (WRITE_CMD, AFTER_PARAMS; READ, READ_DATA).
        a_chunk, b_chunk = Signal(range(ADD_CHUNK_WORDS + 1)), Signal(range(ADD_CHUNK_WORDS + 1))
        a_done, b_done_ahead = Signal(24), Signal(25)    # words read of a; of b plus a chunk
        a_nz, b_nz = Signal(), Signal()
        pick_a, pick_b = Signal(), Signal()              # ADD_NEXT's choice: read a chunk of a, of b
        m.d.sync += [
            a_chunk.eq(Mux(a_words_left > ADD_CHUNK_WORDS, ADD_CHUNK_WORDS, a_words_left)),
            b_chunk.eq(Mux(b_words_left > ADD_CHUNK_WORDS, ADD_CHUNK_WORDS, b_words_left)),
            a_done.eq(in_region.words - a_words_left),
            b_done_ahead.eq(b_region.words - b_words_left + ADD_CHUNK_WORDS),
            a_nz.eq(a_words_left != 0), b_nz.eq(b_words_left != 0),
            pick_a.eq(a_nz & (~(a_done > b_done_ahead) | ~b_nz)),
            pick_b.eq(~(a_nz & (~(a_done > b_done_ahead) | ~b_nz)) & b_nz),
        ]

        # CHECK's verdicts, NEXT's end test and descriptor address, READ_DATA's "every beat is in": each
        # registered in one state and acted on in the next.
        chk_bad_op, chk_ks, chk_gap, chk_dims, chk_dims2, chk_pool = (Signal() for _ in range(6))
        at_end, desc_ptr = Signal(), Signal(32)
        rd_all_in = Signal()
        all_done = Signal()     # WAIT's and FAIL's exit test, registered; cleared in every other state
        wr_idle = Signal()      # WRITE_CMD's: the DMA writer is idle, registered; likewise cleared
        m.d.sync += [all_done.eq(0), wr_idle.eq(0)]
        # High in the START state, as a register: the engines' and adapters' start pulses fan out to many
        # resets and enables, so they come from a flip-flop rather than the state decode.
        # Each engine's pulse is its own register too (ANDed with the opcode flags, in_start headed the
        # adapters' counter enables: in_start & is_add -> r2b_b._ch CE 9.9 ns).
        in_start = Signal()
        start_conv, start_pool, start_add, start_fuse = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [in_start.eq(0), start_conv.eq(0), start_pool.eq(0), start_add.eq(0), start_fuse.eq(0)]
        m.d.comb += [
            conv.start.eq(start_conv), pool.start.eq(start_pool), add.start.eq(start_add),
            fpool.start.eq(start_fuse),
            r2b.region.eq(in_region), r2b.start.eq(in_start),
            r2b_b.region.eq(b_region), r2b_b.start.eq(start_add),
            b2w.region.eq(out_region), b2w.start.eq(in_start),
        ]
        # Read lengths of the parameter and weight tables, computed in CHECK (used from WRITE_CMD on).
        param_words, weight_words = Signal(24), Signal(24)
        has_params, has_weights = Signal(), Signal()
        with m.FSM(name="seq") as seq:
            with m.State("IDLE"):
                m.d.sync += set_target("none")
                with m.If(control.soft_reset):
                    m.d.sync += [done_flag.eq(0), error_flag.eq(0), error_code.eq(0)]
                with m.Elif(control.start):
                    m.d.sync += [index.eq(0), busy.eq(1), done_flag.eq(0), error_flag.eq(0),
                                 error_code.eq(0)]
                    m.next = "NEXT"
            with m.State("NEXT"):
                # The end test and the descriptor's address registered here, acted on in NEXT_ACT: the
                # compare and the adder stay out of the next-state and read-command logic.
                m.d.sync += [at_end.eq(index == control.desc_count),
                             desc_ptr.eq(control.desc_addr + index * DESCRIPTOR_BYTES)]
                m.next = "NEXT_ACT"
                check_fail()
            with m.State("NEXT_ACT"):
                with m.If(at_end):
                    m.d.sync += [busy.eq(0), done_flag.eq(1), *set_target("none")]
                    m.next = "IDLE"
                with m.Else():
                    issue_read(desc_ptr, DESCRIPTOR_BYTES // nb, T["desc"], "READ")
                check_fail()
            with m.State("CHECK"):
                d = desc
                bad_op = ~(is_conv | is_pool | is_add)
                k_bad = ((d.kernel_h == 0) | (d.kernel_w == 0) | (d.kernel_h > cfg.max_kernel) |
                         (d.kernel_w > cfg.max_kernel))
                s_bad = ((d.stride_h == 0) | (d.stride_w == 0) | (d.stride_h > cfg.max_stride) |
                         (d.stride_w > cfg.max_stride))
                dims_bad = ((d.in_width == 0) | (d.in_height == 0) | (d.in_channels == 0) |
                            (d.out_width == 0) | (d.out_height == 0) | (d.out_channels == 0))
                dims_bad2 = ((d.in_width > cfg.max_width) | (d.out_width > cfg.max_width) |
                            (d.in_channels > cfg.max_channels) | (d.out_channels > cfg.max_channels) |
                            (d.groups == 0) | (d.in_pixel_stride < d.in_channels) |
                            (d.out_pixel_stride < d.out_channels) |
                            (d.weight_bytes > cfg.weight_buffer_bytes))
                # A fused pool: 2x2/2 or 3x3/2 after a CONV at least one window large, its row in the buffer.
                pool_k = Mux(d.pool_after == 3, 3, 2)
                pool_bad = (d.pool_after != 0) & (
                    (d.pool_after == 1) | (op != Opcode.CONV) | (d.out_height < pool_k) | (d.out_width < pool_k))
                # The verdicts are registered and acted on in the next state: the descriptor compares
                # would otherwise head the FSM's next-state and fail_code logic.
                m.d.sync += [chk_bad_op.eq(bad_op), chk_ks.eq(k_bad | s_bad), chk_gap.eq(op == Opcode.GLOBAL_AVGPOOL),
                             chk_dims.eq(dims_bad), chk_dims2.eq(dims_bad2), chk_pool.eq(pool_bad),
                             param_words.eq((d.param_bytes + nb - 1) >> align), has_params.eq(d.param_bytes != 0),
                             weight_words.eq((d.weight_bytes + nb - 1) >> align),
                             has_weights.eq(is_conv & (d.weight_bytes != 0))]
                m.next = "CHECK_ACT"
                check_fail()
            with m.State("CHECK_ACT"):
                with m.If(chk_bad_op):
                    m.d.sync += fail_code.eq(ErrorCode.BAD_OPCODE)
                    m.next = "FAIL"
                with m.Elif(chk_ks & ~chk_gap | chk_dims | chk_dims2 | chk_pool):
                    m.d.sync += fail_code.eq(ErrorCode.BAD_DESCRIPTOR)
                    m.next = "FAIL"
                with m.Else():
                    m.next = "M_POOL_ROW"
                check_fail()
            # The fused pool's row of running maxima must fit its buffer (the last descriptor check).
            # The verdict registered (a state later): the 32-bit compare headed fail_code's enable and the
            # next-state logic (10.2 ns).
            pool_row = Signal(32)
            pool_row_bad = Signal()
            m.d.sync += pool_row_bad.eq((d.pool_after != 0) & (pool_row > fpool.row_bytes))
            mul_state("M_POOL_ROW", fpool.out_width, d.out_channels, pool_row, "CHECK_POOL_CMP")
            with m.State("CHECK_POOL_CMP"):
                m.next = "CHECK_POOL"
                check_fail()
            with m.State("CHECK_POOL"):
                with m.If(pool_row_bad):
                    m.d.sync += fail_code.eq(ErrorCode.BAD_DESCRIPTOR)
                    m.next = "FAIL"
                with m.Else():
                    m.next = "M_PIXELS_IN"
                check_fail()
            mul_state("M_PIXELS_IN", d.in_height, d.in_width, pixels_in, "M_PIXELS_OUT")
            mul_state("M_PIXELS_OUT", Mux(fuse, fpool.out_height, d.out_height),
                      Mux(fuse, fpool.out_width, d.out_width), pixels_out, "M_SPAN_IN")
            span_in, span_out = Signal(32), Signal(32)
            mul_state("M_SPAN_IN", pixels_in - 1, d.in_pixel_stride, span_in, "M_SPAN_OUT")
            mul_state("M_SPAN_OUT", pixels_out - 1, d.out_pixel_stride, span_out, "SPANS")
            regions = [region(in_base, in_region, desc.in_addr, desc.in_pixel_stride, desc.in_channels, span_in),
                       region(out_base, out_region, desc.out_addr, desc.out_pixel_stride, desc.out_channels,
                              span_out),
                       region(b_base, b_region, desc.b_addr, desc.in_pixel_stride, desc.in_channels, span_in)]
            with m.State("SPANS"):
                m.d.sync += [stmt for spans, _ in regions for stmt in spans]
                m.next = "WORDS"
                check_fail()
            with m.State("WORDS"):
                m.d.sync += [stmt for _, words in regions for stmt in words]
                # exactly when the next state is START
                m.d.sync += [in_start.eq(~fail_now), start_conv.eq(~fail_now & is_conv),
                             start_pool.eq(~fail_now & is_pool), start_add.eq(~fail_now & is_add),
                             start_fuse.eq(~fail_now & fuse)]
                m.next = "START"
                check_fail()
            with m.State("START"):
                m.d.sync += [engine_done.eq(0), a_words_left.eq(in_region.words), b_words_left.eq(b_region.words),
                             a_next.eq(in_base), b_next.eq(b_base), add_turn_b.eq(0)]
                m.next = "WRITE_CMD"
                check_fail()
            with m.State("WRITE_CMD"):
                # The command is offered once the writer was idle a cycle ago (registered; it cannot turn
                # busy without a command, so it is ready then): its busy (outstanding != 0 | ...) headed
                # the state and read-command enables (10.3 ns).
                # wr_idle is high in WRITE_CMD only (cleared as the state is left), so it is the command's
                # valid as it stands, without the state decode (seq_state -> valid -> the writer's load ->
                # its counters' enables was 10.5 ns).
                m.d.sync += wr_idle.eq(~dma.wr_busy)
                with m.If(wr_idle):
                    m.d.sync += wr_idle.eq(0)
                    with m.If(has_params):
                        issue_read(desc.param_addr, param_words, T["params"], "READ")
                    with m.Else():
                        m.next = "AFTER_PARAMS"
                check_fail()
            with m.State("AFTER_PARAMS"):
                with m.If(has_weights):
                    issue_read(desc.weight_addr, weight_words, T["weights"], "READ")
                with m.Elif(is_add):
                    m.next = "ADD_NEXT"
                with m.Else():
                    issue_read(in_base, in_region.words, T["pixels"], "READ")
                check_fail()
            with m.State("READ"):
                # The beat count is loaded here from rd_words rather than by every state that issues a
                # read (a wide multiplexer by state in front of the counter); no beat of this command can
                # arrive before the command is accepted, and the previous one's have all arrived.
                m.d.sync += [beats_left.eq(rd_words), beats_zero.eq(rd_words == 0), rd_all_in.eq(0)]
                m.d.comb += dma.rd_cmd.valid.eq(1)
                with m.If(dma.rd_cmd.ready):
                    m.next = "READ_DATA"
                check_fail()
            with m.State("READ_DATA"):
                # "Every beat is in": registered (one cycle late; it stays true once true in this state),
                # so the DMA's busy logic does not head the sequencer's next-state logic.
                m.d.sync += rd_all_in.eq(beats_zero & ~dma.rd_busy & ~prm_skid.o.valid)
                with m.If(rd_all_in):
                    with m.Switch(target):
                        with m.Case(T["desc"]):
                            m.d.sync += [desc.eq(desc_bits), *set_target("none"),
                                         *decode(descriptor_layout()(desc_bits))]
                            m.next = "CHECK"
                        with m.Case(T["params"]):
                            m.next = "AFTER_PARAMS"
                        with m.Case(T["weights"]):
                            issue_read(in_base, in_region.words, T["pixels"], "READ")
                        with m.Case(T["pixels"]):
                            with m.If(is_add):
                                m.next = "ADD_NEXT"
                            with m.Else():
                                m.next = "WAIT"
                        with m.Case(T["pixels_b"]):
                            m.next = "ADD_NEXT"
                check_fail()
            with m.State("ADD_NEXT"):
                # a0, a1, b0, a2, b1, ...: the first input stays one chunk ahead of the second.
                with m.If(pick_a):
                    m.d.sync += [a_words_left.eq(a_words_left - a_chunk), a_next.eq(a_next + (a_chunk << align))]
                    issue_read(a_next, a_chunk, T["pixels"], "READ")
                with m.Elif(pick_b):
                    m.d.sync += [b_words_left.eq(b_words_left - b_chunk), b_next.eq(b_next + (b_chunk << align))]
                    issue_read(b_next, b_chunk, T["pixels_b"], "READ")
                with m.Else():
                    m.next = "WAIT"
                check_fail()
            with m.State("WAIT"):
                # "Everything is done", registered (one cycle late; once true it stays true here, as
                # nothing new starts): the DMA writer's busy (outstanding != 0 | aw_nz) headed the
                # sequencer's state, index and target enables (10.4-10.8 ns).
                m.d.sync += all_done.eq(engine_done & ~fpool.busy & ~b2w.busy & ~dma.wr_busy)
                with m.If(all_done):
                    m.d.sync += [index.eq(index + 1), *set_target("none")]
                    m.next = "NEXT"
                check_fail()
            with m.State("FAIL"):
                m.d.comb += [draining.eq(1), sink.eq(1)]
                m.d.sync += [*set_target("none"), mul_step.eq(0)]
                # The DMA is idle, registered as in WAIT (no command starts in FAIL; one accepted as FAIL
                # was entered shows as busy by the time this is sampled).
                m.d.sync += all_done.eq(~dma.rd_busy & ~dma.wr_busy)
                with m.If(all_done):
                    m.d.comb += dma.error_clear.eq(1)
                    m.d.sync += [busy.eq(0), error_flag.eq(~fail_soft), error_code.eq(Mux(fail_soft, 0, fail_code)),
                                 done_flag.eq(0), *set_target("none")]
                    m.next = "IDLE"
        m.d.sync += eng_rst.eq(seq.ongoing("FAIL"))
        m.d.comb += [dma.wr_cmd.valid.eq(wr_idle), dma.wr_cmd.payload.addr.eq(out_base),
                     dma.wr_cmd.payload.length.eq(out_region.words << align)]

        return m
