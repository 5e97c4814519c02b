"""The requantisation unit against :func:`scalenet.quant.requantize`, integer for integer."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from amaranth.sim import Simulator

from scalenet.quant import decode_multiplier, encode_multiplier, requantize, round_half_even_shift
from scalenet.rtl.requant import Requantizer

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
TYPES = {"int8": (-128, 127), "uint8": (0, 255)}


def simulate(cases, *, user_width=0, seed=0, gaps=True):
    """Push ``cases`` (dicts of input payload fields) through a Requantizer; return the output bytes.

    With ``gaps`` the producer idles and the consumer withholds ``ready`` at random, so the pipeline's
    stall path is exercised as well as the full-rate path.
    """
    dut = Requantizer(user_width=user_width)
    rng = np.random.default_rng(seed)
    out = []

    async def producer(ctx):
        for case in cases:
            if gaps and rng.random() < 0.2:
                await ctx.tick().repeat(int(rng.integers(1, 4)))
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, case)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while len(out) < len(cases):
            ready = not gaps or rng.random() < 0.7
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                out.append(payload)
        ctx.set(dut.o.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(1e-8 * (20 + 8 * len(cases)))     # a hang fails below instead of running forever
    assert len(out) == len(cases), f"only {len(out)} of {len(cases)} outputs came out"
    return out


def payloads(acc, mult, zp, dtype, lo=None, hi=None):
    """Input payloads for numpy arrays of cases, with the multipliers encoded by the library encoder."""
    mant, shift = encode_multiplier(mult)
    t_lo, t_hi = TYPES[dtype]
    lo = np.full(len(acc), t_lo) if lo is None else lo
    hi = np.full(len(acc), t_hi) if hi is None else hi
    return [{"acc": int(a), "mantissa": int(mn), "shift": int(sh), "zero_point": int(z), "lo": int(l),
             "hi": int(h), "out_unsigned": int(dtype == "uint8")}
            for a, mn, sh, z, l, h in zip(acc, mant, shift, zp, lo, hi)]


def check(acc, mult, zp, dtype, lo=None, hi=None, **kwargs):
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.broadcast_to(np.asarray(mult, dtype=np.float32), acc.shape)
    zp = np.broadcast_to(np.asarray(zp, dtype=np.int64), acc.shape)
    out = simulate(payloads(acc, mult, zp, dtype, lo, hi), **kwargs)
    got = np.array([o.data for o in out], dtype=np.uint8).view(np.dtype(dtype))
    want = requantize(acc, mult, zp, dtype, lo=lo, hi=hi)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, (
        f"{bad.size} of {acc.size} differ; first: acc={acc[bad[0]]} M={mult[bad[0]]!r} zp={zp[bad[0]]} "
        f"got {got[bad[0]]} want {want[bad[0]]}")
    return want


def test_rne_ties_and_boundaries():
    """Exact .5 results, ties in the int32->float32 and product roundings, and |acc| near 2**24, 2**31."""
    accs, mults = [], []
    # Results that are exactly n + 0.5: acc odd with M = 2**-1, acc = odd * 2**(j-1) with M = 2**-j.
    for j in (1, 2, 5, 13, 24, 30):
        for odd in (1, 3, 5, 7, 255, 257):
            for sign in (1, -1):
                if abs(odd * 2 ** (j - 1)) < 2**31:
                    accs.append(sign * odd * 2 ** (j - 1))
                    mults.append(2.0 ** -j)
    # |acc| around 2**24 .. 2**31, where the first rounding (to 24 significant bits) ties or carries.
    for e in (23, 24, 25, 26, 27, 30, 31):
        for d in (-3, -2, -1, 0, 1, 2, 3, 4, 5, 6):
            v = 2**e + d
            for sign in (1, -1):
                a = sign * v
                if INT32_MIN <= a <= INT32_MAX:
                    for mult in (2.0 ** -24, 3.0 * 2.0 ** -26, 0.999999940395, 1e-7):
                        accs.append(a)
                        mults.append(mult)
    # Ties in the product rounding: a_man * m with exactly one bit below 24 significant bits set.
    m_odd = float(np.float32((2**23 + 1) * 2.0 ** -40))         # mantissa 2**23 + 1, odd
    for a in (2**23 + 1, 2**23 + 3, 2**24 - 1, 2**24 - 3, 3 * 2**22 + 1):
        for sign in (1, -1):
            accs.append(sign * a)
            mults.append(m_odd)
    accs += [INT32_MIN, INT32_MAX, INT32_MIN + 1, 0, 1, -1]
    mults += [2.0 ** -32, 2.0 ** -32, 2.0 ** -31, 0.5, 0.5, 0.5]
    acc = np.array(accs, dtype=np.int64)
    mult = np.array(mults, dtype=np.float32)
    want = check(acc, mult, 0, "int8", seed=1)
    assert len(np.unique(want)) > 20                          # the cases are not all saturated or zero
    check(acc, mult, 128, "uint8", seed=2)


def exact_rne(acc, mantissa, shift):
    """The mathematically exact ``rne(acc * mantissa / 2**shift)`` (no float32 roundings), Python ints."""
    num = abs(int(acc)) * int(mantissa)
    q, rem = divmod(num, 1 << int(shift))
    half = 1 << (int(shift) - 1)
    q += rem > half or (rem == half and q & 1)
    return q if acc >= 0 else -q


def double_rounding_cases(rng):
    """Cases where float32's two roundings change the result: the hardware must round exactly as ORT.

    First rounding: ``acc = tie + d`` above 2**25 with ``0 < |d| < 2**(k-1)``: the int32 -> float32
    rounding removes ``d`` and leaves an exact tie for the final shift. Second rounding: ``a_man * m``
    whose 24-bit rounding lands on a tie of the final shift although the exact product was not one.
    """
    accs, mults = [], []
    for q in (40, 41, 100, 101, 63):
        for d in (1, 2, 3, -1, -2, -3):
            for sign in (1, -1):
                accs.append(sign * ((2 * q + 1) * 2**19 + d))          # bitlen 26..27: k = 2..3
                mults.append(2.0 ** -20)
    a = np.arange(2**23, 2**24, dtype=np.int64)
    right = 17
    for _ in range(3):
        m = int(rng.integers(2**23, 2**24)) | 1
        p = a * m                                                       # < 2**48: pk = 24
        p_man = round_half_even_shift(p, 24)
        tie = ((p_man & ((1 << right) - 1)) == (1 << (right - 1))) & ((p & ((1 << 24) - 1)) != 0)
        hits = a[tie][:8]
        accs += [int(h) for h in hits] + [-int(h) for h in hits]
        mults += [m * 2.0 ** -(right + 24)] * (2 * len(hits))
    return np.array(accs, dtype=np.int64), np.array(mults, dtype=np.float32)


def test_double_rounding_follows_float32():
    rng = np.random.default_rng(3)
    acc, mult = double_rounding_cases(rng)
    mant, shift = encode_multiplier(mult)
    exact = np.array([exact_rne(a, mn, sh) for a, mn, sh in zip(acc, mant, shift)])
    want = check(acc, mult, 0, "int8", seed=4)
    # The cases are real: for most, the float32 result differs from exact rounding (and none saturate).
    assert (np.abs(exact) < 127).all()
    assert (want != exact).sum() >= len(acc) // 4


def visible_product_rounding_cases(rng, right=17):
    """Cases whose output shows the product rounding's decision, at every shift ``pk`` of the product.

    For each ``pk`` in 1..24 (25 is out of reach: ``a_man <= 2**24`` and ``mantissa < 2**24`` keep the
    product below ``2**48``): an exact tie (guard set, nothing below it) and, from ``pk = 2``, a round-up
    decided by the sticky bits alone (guard set, quotient even, something below the guard). The
    quotient ``q`` is picked next to a rounding boundary of the final ``rne(p_man / 2**right)``, so that
    rounding the product the other way changes the output byte: a wrong guard, sticky or quotient bit at
    any ``pk`` shows. ``|acc| < 2**24``, so the first rounding leaves it unchanged (``a_man = |acc|``).
    """
    accs, mults, found = [], [], set()
    half = 1 << (right - 1)
    quots = np.arange(2 ** (23 - right), 2 ** (24 - right), dtype=np.int64)     # q in [2**23, 2**24)
    for pk in range(1, 25):
        # Tie: p = X * 2**(pk - 1), X odd, q = X >> 1; ORT rounds to even. Pick q one below the boundary
        # (odd q: rounds up onto it) or on it (even q: stays), with the final quotient's parity making
        # the two choices differ; |acc| = 3 * 2**(pk - 1) and mantissa X / 3 (for pk = 24: 3 * 2**22 and
        # 2 * X / 3, as 3 * 2**23 would round first).
        q = np.where(quots % 2 == 1, quots * 2 * half + half - 1, quots * 2 * half + half)
        x = 2 * q + 1
        a = 3 << min(pk - 1, 22)
        mant = x // 3 * (2 if pk == 24 else 1)
        ok = (x % 3 == 0) & (mant >= 2**23) & (mant < 2**24)
        cases = [(a, int(mt)) for mt in mant[ok][:2]]
        # Sticky: q even on the boundary with an even final quotient, p = q * 2**pk + 2**(pk - 1) + s,
        # 0 < s < 2**(pk - 1): the smallest multiple of a random |acc| above the guard, if it fits.
        if pk >= 2:
            qs = rng.choice(quots[quots % 2 == 0], size=4096) * 2 * half + half
            accs_s = rng.integers(2 ** min(pk, 23), 2 ** min(pk + 1, 24), size=4096)
            low = (qs << pk) + (1 << (pk - 1)) + 1
            mant_s = -(-low // accs_s)
            fits = (accs_s * mant_s < (qs << pk) + (1 << pk)) & (mant_s >= 2**23) & (mant_s < 2**24)
            cases += [(int(av), int(mt)) for av, mt in zip(accs_s[fits][:2], mant_s[fits][:2])]
        for a, mant in cases:
            prod = a * mant                                    # re-derive the rounding from scratch
            q, guard = prod >> pk, (prod >> (pk - 1)) & 1
            sticky = prod & ((1 << (pk - 1)) - 1) != 0
            up = guard & (sticky | q & 1)
            assert prod.bit_length() == 24 + pk and guard
            assert round_half_even_shift(q + up, right) != round_half_even_shift(q + 1 - up, right)
            mult = np.float32(mant * 2.0 ** -(right + pk))     # exact: a 24-bit mantissa
            accs += [a, -a]
            mults += [mult, mult]
            found.add((pk, "sticky" if sticky else "tie"))
    return np.array(accs, dtype=np.int64), np.array(mults, dtype=np.float32), found


def test_product_rounding_at_every_shift():
    """The product's shift by ``pk`` is split over two stages (whole bytes, then the rest) and its sticky
    mask comes from the product a stage ahead: every ``pk`` must round ties and sticky cases as ORT."""
    acc, mult, found = visible_product_rounding_cases(np.random.default_rng(21))
    assert found == {(pk, kind) for pk in range(1, 25) for kind in ("tie", "sticky") if (pk, kind) != (1, "sticky")}
    want = check(acc, mult, 0, "uint8", seed=22)
    assert len(np.unique(want)) > 10


def test_multiplier_range_and_zero_mantissa():
    """Multipliers from 0 and the zero-mantissa encoding (< 2**-32) to just below 2**16."""
    rng = np.random.default_rng(7)
    special = np.array([0.0, 1e-12, 2.0 ** -33, np.nextafter(np.float32(2.0 ** -32), np.float32(0)),
                        2.0 ** -32, 2.0 ** -31, 1.0, np.nextafter(np.float32(2.0 ** 16), np.float32(0)),
                        2.0 ** 15, 1.5], dtype=np.float32)
    mant, _ = encode_multiplier(special)
    assert (mant == 0).sum() >= 3                            # the zero-mantissa encoding is exercised
    logs = rng.uniform(-40, 16, size=150)
    random_m = np.exp2(logs).astype(np.float32)
    random_m = np.minimum(random_m, np.nextafter(np.float32(2.0 ** 16), np.float32(0)))
    mult = np.concatenate([np.repeat(special, 6), random_m])
    # Accumulators scaled so that many outputs land inside the int8 range, plus raw int32 extremes.
    target = rng.normal(0, 80, size=mult.size)
    acc = np.clip(np.rint(target / np.maximum(mult.astype(np.float64), 1e-12)), INT32_MIN, INT32_MAX)
    extremes = rng.choice([INT32_MIN, INT32_MAX, 2**24, -(2**24), 0], size=mult.size)
    acc = np.where(rng.random(mult.size) < 0.15, extremes, acc).astype(np.int64)
    zp = rng.integers(-128, 128, size=mult.size)
    want = check(acc, mult, zp, "int8", seed=3)
    assert ((want > -128) & (want < 127)).sum() > mult.size // 3


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_fused_relu_bounds(dtype):
    """Per-element zero points and clamp bounds: ReLU (lo = zp), ReLU6-like (hi), odd or crossed bounds."""
    rng = np.random.default_rng(11 if dtype == "int8" else 12)
    n = 120
    t_lo, t_hi = TYPES[dtype]
    zp = rng.integers(t_lo, t_hi + 1, size=n)
    mult = np.exp2(rng.uniform(-20, -2, size=n)).astype(np.float32)
    acc = np.rint(rng.normal(0, 150, size=n) / mult.astype(np.float64)).astype(np.int64)
    acc = np.clip(acc, INT32_MIN, INT32_MAX)
    lo = np.where(rng.random(n) < 0.5, zp, rng.integers(-256, 256, size=n))     # 9-bit signed bounds
    hi = np.where(rng.random(n) < 0.5, np.minimum(zp + rng.integers(0, 100, size=n), 255),
                  rng.integers(-256, 256, size=n))
    want = check(acc, mult, zp, dtype, lo, hi, seed=13)
    assert np.any(want == np.clip(lo, t_lo, t_hi)) and np.any(want == np.clip(hi, t_lo, t_hi))


@settings(max_examples=12, deadline=None)
@given(st.lists(
    st.tuples(
        st.integers(INT32_MIN, INT32_MAX),
        st.floats(2.0 ** -36, 65535.98828125, width=32),
        st.integers(-128, 127),
    ),
    min_size=1, max_size=25),
    st.sampled_from(["int8", "uint8"]))
def test_property_matches_reference(cases, dtype):
    acc = np.array([c[0] for c in cases], dtype=np.int64)
    # Mix raw accumulators with ones scaled into the interesting (non-saturating) range.
    mult = np.array([c[1] for c in cases], dtype=np.float32)
    scaled = np.clip(np.rint(acc / 2.0**24 * 200 / mult.astype(np.float64)), INT32_MIN, INT32_MAX)
    acc = np.where(np.arange(acc.size) % 2 == 0, acc, scaled).astype(np.int64)
    zp = np.array([c[2] for c in cases]) + (128 if dtype == "uint8" else 0)
    check(acc, mult, zp, dtype, seed=len(cases))


def test_user_passthrough_and_full_rate():
    """With no stalls the unit accepts one accumulator per cycle; ``user`` bits stay with their element."""
    rng = np.random.default_rng(5)
    n = 40
    acc = rng.integers(-(2**20), 2**20, size=n)
    mult = np.float32(2.0 ** -13)
    cases = payloads(acc, np.full(n, mult), np.zeros(n, dtype=np.int64), "int8")
    for idx, case in enumerate(cases):
        case["user"] = idx % 8
    dut = Requantizer(user_width=3)
    got, cycles = [], []

    async def producer(ctx):
        ctx.set(dut.o.ready, 1)
        for case in cases:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, case)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(got) < n:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid:
                got.append((payload.data, payload.user))
                cycles.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(1e-8 * (n + 40))
    want = requantize(acc, mult, 0, "int8")
    assert [np.uint8(d).view(np.int8) for d, _ in got] == list(want)
    assert [u for _, u in got] == [i % 8 for i in range(n)]
    assert cycles == list(range(cycles[0], cycles[0] + n))        # back to back
    # Accepted at edge 1, registered through LATENCY stages, so first seen valid at edge LATENCY + 1.
    assert cycles[0] == Requantizer.LATENCY + 1


def test_decode_roundtrip_of_test_multipliers():
    """The test drives the hardware with encode_multiplier's output: it must be an exact encoding."""
    m = np.exp2(np.linspace(-31, 15.9, 50)).astype(np.float32)
    assert np.array_equal(decode_multiplier(*encode_multiplier(m)), m)
