"""The single register-map source: packing, the generated docs and C header, the RTL layout."""

import subprocess
from pathlib import Path

import pytest

from scalenet.errors import HardwareLimitError
from scalenet.rtl import regmap

ROOT = Path(__file__).resolve().parent.parent


def test_register_fields_pack_and_unpack():
    v = regmap.pack("CTRL", start=1, irq_enable=1)
    assert v == 0x101
    assert regmap.unpack("CTRL", v) == {"start": 1, "abort": 0, "soft_reset": 0, "irq_enable": 1}
    with pytest.raises(ValueError, match="does not fit"):
        regmap.pack("ERROR", code=256)
    with pytest.raises(KeyError, match="no field"):
        regmap.pack("CTRL", go=1)
    assert regmap.by_offset(0x0FC) is None
    assert regmap.by_offset(0x000).reset == regmap.ID_MAGIC


def test_descriptor_round_trip_and_limits():
    d = dict(opcode=regmap.Opcode.CONV, kernel_h=3, kernel_w=3, in_channels=64, x_zero_point=-128,
             y_zero_point=255, clamp_lo=-5, out_addr=0xFFFF_FFC0)
    raw = regmap.pack_descriptor(**d)
    assert len(raw) == regmap.DESCRIPTOR_BYTES
    back = regmap.unpack_descriptor(raw)
    assert {k: back[k] for k in d} == {k: int(v) for k, v in d.items()}
    with pytest.raises(HardwareLimitError, match="x_zero_point = 256"):
        regmap.pack_descriptor(x_zero_point=256)
    with pytest.raises(KeyError):
        regmap.pack_descriptor(nonsense=1)


def test_rtl_layout_has_the_same_bit_positions():
    from amaranth.hdl import Const
    layout = regmap.descriptor_layout()
    assert layout.size == regmap.DESCRIPTOR_BYTES * 8
    d = dict(opcode=3, stride_w=5, in_width=1234, x_zero_point=-7, out_addr=0xDEADBEEF)
    value = int.from_bytes(regmap.pack_descriptor(**d), "little")
    view = Const.cast(Const(value, layout.size))
    lsb = 0
    for f in regmap.DESCRIPTOR_FIELDS:
        assert layout[f.name].offset == lsb, f.name
        assert layout[f.name].width == f.width
        lsb += f.width
    assert layout["x_zero_point"].shape.signed


def test_generated_markdown_is_checked_in_and_current():
    text = regmap.markdown()
    for r in regmap.REGISTERS:
        assert f"| {r.name} |" in text
    assert (ROOT / "docs" / "registers.md").read_text() == text, \
        "docs/registers.md is stale: run `scalenet regmap --markdown > docs/registers.md`"


def test_c_header_compiles_and_agrees(tmp_path):
    (tmp_path / "scalenet_regs.h").write_text(regmap.c_header())
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "scalenet_regs.h"\n'
        "int main(void) { printf(\"%u %u %u %u\\n\", SCALENET_ID_MAGIC, SCALENET_STATUS_OFFSET, "
        "SCALENET_CTRL_IRQ_ENABLE_MASK, SCALENET_DESC_OUT_ADDR_LSB); return 0; }\n")
    subprocess.run(["cc", "-Wall", "-Werror", "-o", str(tmp_path / "main"), str(tmp_path / "main.c")], check=True)
    out = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, check=True).stdout.split()
    lsb = sum(f.width for f in regmap.DESCRIPTOR_FIELDS[:-1])
    assert [int(v) for v in out] == [regmap.ID_MAGIC, regmap.by_name("STATUS").offset,
                                     regmap.by_name("CTRL").fields[3].mask, lsb]
