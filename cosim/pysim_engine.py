"""The simulated platform on Amaranth's Python simulator: the reference engine, no compiler needed.

``amaranth.sim`` only lets coroutines inside the simulation touch signals, while the driver calls the
platform synchronously (write a register, let it run, read a register). :class:`PysimHost` bridges the
two with one background testbench that runs "jobs" handed to it: a call stores its job and advances the
simulator until the job is done; between jobs the testbench idles without a clock edge, so a register
access starts in the cycle the previous call ended in, exactly as on the compiled engine — together with
the cycle-identical memory models this makes both engines agree cycle for cycle.
"""

from __future__ import annotations

from pathlib import Path

from .axi_memory import AXIMemory

__all__ = ["PysimHost", "CLOCK_PERIOD"]

CLOCK_PERIOD = 10e-9
"""The simulated clock (10 ns; the compiled engine's VCD uses the same period)."""

_IDLE = 1e-15   # an idle wait between jobs: the smallest step of the simulator's timeline, not a clock edge


class PysimHost:
    """The top level with its AXI memory in ``amaranth.sim``; AXI4-Lite register accesses and clock runs.

    ``memory_options`` are :class:`~scalenet.cosim.axi_memory.AXIMemory` keywords; ``vcd`` a path for a
    trace of every signal (closed, and so complete, by :meth:`close`).
    """

    engine = "pysim"

    def __init__(self, top, *, mem_size, memory_options, vcd=None):
        from amaranth.sim import Simulator
        self.top = top
        self.memory = AXIMemory(top.mem, size=mem_size, **memory_options)
        self._sim = Simulator(top)
        self._sim.add_clock(CLOCK_PERIOD)
        self._sim.add_process(self.memory.process)
        self._sim.add_testbench(self._host, background=True)
        self._job = self._result = self._exc = None
        self._done = True
        self._vcd = None
        if vcd is not None:
            try:
                self._vcd = self._sim.write_vcd(str(Path(vcd)))
                self._vcd.__enter__()
            except OSError as e:
                raise OSError(f"cannot open {vcd} for writing the trace: {e}") from None

    @property
    def cycles(self) -> int:
        """Rising clock edges so far."""
        return self.memory.cycle

    # -- the bridge ----------------------------------------------------------------------------------
    async def _host(self, ctx):
        while True:
            job = self._job
            if job is None:
                await ctx.delay(_IDLE)
                continue
            self._job = None
            try:
                self._result = await job(ctx)
            except Exception as e:      # handed back to the caller by _call
                self._exc = e
            self._done = True

    def _call(self, job):
        if self._sim is None:
            raise RuntimeError("the simulated platform is closed")
        self._job, self._done, self._result, self._exc = job, False, None, None
        advance = self._sim.advance
        while not self._done:
            advance()
        if self._exc is not None:
            exc, self._exc = self._exc, None
            raise exc
        return self._result

    # -- what the platform asks for ------------------------------------------------------------------
    def reset(self, cycles=3):
        """Idle cycles standing for the compiled engine's reset pulse (the design starts in its reset
        state here), so both engines' cycle counters and memory models start alike."""
        self.run(cycles)

    def run(self, cycles):
        cycles = int(cycles)

        async def job(ctx):
            if cycles > 0:
                await ctx.tick().repeat(cycles)
        self._call(job)

    def run_until_irq(self, max_cycles) -> int:
        """Tick until the interrupt line is high after an edge; returns the cycles run (raises
        TimeoutError after ``max_cycles``)."""
        irq = self.top.irq

        async def job(ctx):
            for n in range(1, max_cycles + 1):
                await ctx.tick()
                if ctx.get(irq):
                    return n
            raise TimeoutError(f"irq did not become 1 within {max_cycles} cycles")
        return self._call(job)

    def transaction(self, setup, requests, response, max_cycles=1000):
        """Set the request signals (``setup``: member path -> value), hold each request channel's VALID
        until it is accepted, then take the response; returns (resp, data)."""
        ctrl = self.top.ctrl
        resp_ch = getattr(ctrl, response)

        def member(path):
            obj = ctrl
            for part in path.split("__"):
                obj = getattr(obj, part)
            return obj

        async def job(ctx):
            for path, value in setup.items():
                ctx.set(member(path), value)
            pending = set(requests)
            watched = [getattr(ctrl, ch).ready for ch in requests] + [resp_ch.valid, resp_ch.resp, ctrl.r.data]
            for _ in range(max_cycles):
                _, _, *v = await ctx.tick().sample(*watched)
                ready = dict(zip(requests, v))
                valid, resp, data = v[len(requests):]
                answered = not pending and valid
                accepted = {ch for ch in pending if ready[ch]}
                for ch in accepted:
                    ctx.set(getattr(ctrl, ch).valid, 0)
                pending -= accepted
                if answered:
                    ctx.set(resp_ch.ready, 0)
                    return getattr(resp, "value", resp), int(data) if response == "r" else None
            raise TimeoutError(f"the control slave did not answer within {max_cycles} cycles")
        return self._call(job)

    def close(self):
        if self._vcd is not None:
            self._vcd.__exit__(None, None, None)
            self._vcd = None
        self._sim = None
