"""Clock generation for the board tops: PLL parameters found in Python, the vendor primitive instanced.

Why not call ``ecppll``: the parameter search is a few lines, and a Python search lets the pre-check
refuse an unreachable frequency before anything is elaborated. :func:`ecp5_pll_params` follows
``ecppll`` (prjtrellis) exactly -- same ranges, same tie-break on the VCO, same CPHASE arithmetic in
single precision -- and the tests compare the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scalenet.errors import ScalenetError

__all__ = ["ClockError", "PllParams", "ecp5_pll_params", "xc7_pll_params", "ecp5_pll", "xc7_pll"]


class ClockError(ScalenetError, ValueError):
    """A target frequency the board's PLL cannot generate."""


@dataclass(frozen=True)
class PllParams:
    f_in_mhz: float
    f_out_mhz: float             #: what the PLL actually generates
    in_div: int
    fb_div: int
    out_div: int
    f_vco_mhz: float
    cphase: int = 0


# ECP5 EHXPLLL ranges (prjtrellis libtrellis/tools/ecppll.cpp).
_ECP5_PFD = (3.125, 400.0)
_ECP5_VCO = (400.0, 800.0)
_ECP5_OUT = (10.0, 400.0)


def ecp5_pll_params(f_in_mhz: float, f_out_mhz: float) -> PllParams:
    """EHXPLLL dividers (feedback from CLKOP) for ``f_out_mhz`` from ``f_in_mhz``, nearest frequency."""
    if not _ECP5_OUT[0] <= f_out_mhz <= _ECP5_OUT[1]:
        raise ClockError(f"{f_out_mhz} MHz is outside the ECP5 PLL output range "
                         f"{_ECP5_OUT[0]}-{_ECP5_OUT[1]} MHz")
    f32 = np.float32
    best, best_err = None, np.inf
    fin, fout = f32(f_in_mhz), f32(f_out_mhz)
    for in_div in range(1, 129):
        pfd = fin / f32(in_div)
        if pfd < _ECP5_PFD[0] or pfd > _ECP5_PFD[1]:
            continue
        for fb_div in range(1, 81):
            step = float(pfd) * fb_div                  # the VCO is step * out_div: visit only legal ones
            lo = max(1, math.ceil(_ECP5_VCO[0] / step) - 1)
            hi = min(128, math.floor(_ECP5_VCO[1] / step) + 1)
            for out_div in range(lo, hi + 1):
                vco = pfd * f32(fb_div) * f32(out_div)
                if vco < _ECP5_VCO[0] or vco > _ECP5_VCO[1]:
                    continue
                f = vco / f32(out_div)
                err = abs(f - fout)
                if err < best_err or (err == best_err and abs(vco - 600) < abs(best[3] - 600)):
                    best, best_err = (in_div, fb_div, out_div, vco, f), err
    if best is None:
        raise ClockError(f"the ECP5 PLL cannot make {f_out_mhz} MHz from {f_in_mhz} MHz")
    in_div, fb_div, out_div, vco, f = best
    # ecppll: CLKOP shifted by 180 degrees; ns_phase is a float computed in double, the product in double.
    ns_phase = float(f32(1.0 / (float(f) * 1e6) * 0.5))
    cphase = int(ns_phase * (float(vco) * 1e6))
    return PllParams(float(f_in_mhz), float(f), in_div, fb_div, out_div, float(vco), cphase)


# 7-series PLLE2_BASE, speed grade -1: VCO 800-1600 MHz, PFD 19-450 MHz, M 2..64, D 1..56, O 1..128.
_XC7_VCO = (800.0, 1600.0)
_XC7_PFD = (19.0, 450.0)


def xc7_pll_params(f_in_mhz: float, f_out_mhz: float) -> PllParams:
    """PLLE2_BASE ``DIVCLK_DIVIDE``/``CLKFBOUT_MULT``/``CLKOUT0_DIVIDE`` for the nearest frequency."""
    best, best_err = None, None
    for d in range(1, 57):
        pfd = f_in_mhz / d
        if not _XC7_PFD[0] <= pfd <= _XC7_PFD[1]:
            continue
        for mult in range(2, 65):
            vco = pfd * mult
            if not _XC7_VCO[0] <= vco <= _XC7_VCO[1]:
                continue
            o = max(1, min(128, round(vco / f_out_mhz)))
            err = abs(vco / o - f_out_mhz)
            if best_err is None or err < best_err - 1e-9:
                best, best_err = PllParams(f_in_mhz, vco / o, d, mult, o, vco), err
    if best is None or best.f_out_mhz < 6.25:
        raise ClockError(f"the 7-series PLL cannot make {f_out_mhz} MHz from {f_in_mhz} MHz")
    return best


def ecp5_pll(params: PllParams, clk_in, clk_out, locked):
    """An EHXPLLL instance with the attributes nextpnr uses to derive the output clock constraint."""
    from amaranth.hdl import Instance
    p = params
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=_fmt(p.f_in_mhz), a_FREQUENCY_PIN_CLKOP=_fmt(p.f_out_mhz),
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
        p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=p.in_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.out_div,
        p_CLKOP_CPHASE=p.cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p.fb_div,
        i_RST=0, i_STDBY=0, i_CLKI=clk_in, o_CLKOP=clk_out, i_CLKFB=clk_out,
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
        i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)


def xc7_pll(params: PllParams, clk_in, clk_out, locked):
    """A PLLE2_BASE with its feedback loop and a BUFG on the output."""
    from amaranth.hdl import Instance, Module, Signal
    m = Module()
    fb, out = Signal(), Signal()
    p = params
    m.submodules.pll = Instance(
        "PLLE2_BASE",
        p_CLKIN1_PERIOD=round(1000.0 / p.f_in_mhz, 3), p_DIVCLK_DIVIDE=p.in_div,
        p_CLKFBOUT_MULT=p.fb_div, p_CLKOUT0_DIVIDE=p.out_div,
        i_CLKIN1=clk_in, i_CLKFBIN=fb, o_CLKFBOUT=fb, o_CLKOUT0=out, o_LOCKED=locked,
        i_RST=0, i_PWRDWN=0)
    m.submodules.bufg = Instance("BUFG", i_I=out, o_O=clk_out)
    return m


def _fmt(mhz):
    return f"{mhz:.6g}"
