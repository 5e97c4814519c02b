"""The UART bridge's framed protocol: constants, CRC and frame codec, defined once for gateware and host.

Plain Python (no Amaranth import), so the host transport (driver/serial_transport.py) and the gateware
(rtl/bridge.py) take the command codes, status codes, identification layout and CRC from the same place.
The byte-level specification is docs/serial-protocol.md.

Request  (host → device): ``A5 cmd seq addr[4, LE] len[2, LE] payload[len] crc[2, big endian]``
Response (device → host): ``5A status seq len[2, LE] payload[len] crc[2, big endian]``

The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) over every byte
after the sync byte; sent high byte first, so the CRC over a whole frame (sync excluded) is zero.
"""

from __future__ import annotations

import binascii
import enum
import struct

__all__ = [
    "REQ_SYNC", "RESP_SYNC", "PROTOCOL_VERSION", "BRIDGE_MAGIC", "REQ_HEADER", "RESP_HEADER",
    "Cmd", "Status", "IDENT_FORMAT", "IDENT_BYTES", "crc16", "encode_request", "encode_response",
    "decode_ident",
]

REQ_SYNC = 0xA5
RESP_SYNC = 0x5A
PROTOCOL_VERSION = 1
BRIDGE_MAGIC = 0x424E4353            # b"SCNB" little endian
REQ_HEADER = 8                       # cmd, seq, addr[4], len[2] (after the sync byte)
RESP_HEADER = 4                      # status, seq, len[2] (after the sync byte)


class Cmd(enum.IntEnum):
    PING = 0x01          #: len 0; answers the identification block
    REG_READ = 0x02      #: len 4; answers the 32-bit register at addr
    REG_WRITE = 0x03     #: len 4; payload is the 32-bit value (LE)
    MEM_READ = 0x04      #: len 1..max_payload; answers len bytes from addr
    MEM_WRITE = 0x05     #: len 1..max_payload; payload is written at addr


class Status(enum.IntEnum):
    OK = 0x00
    BAD_CRC = 0x01       #: the request's CRC did not check; nothing was executed
    BAD_CMD = 0x02       #: unknown command; the rest of the frame was skipped until the line went idle
    BAD_LEN = 0x03       #: length not allowed for the command; skipped like BAD_CMD
    BAD_ADDR = 0x04      #: register offset unaligned/out of the window, or memory range outside memory
    BUS_ERROR = 0x05     #: the AXI slave answered SLVERR/DECERR (e.g. a read-only register)


IDENT_FORMAT = "<IBBHIII"
"""magic, protocol version, flags (bit 0: on-chip SRAM), max_payload, mem_base, mem_bytes, clk_hz."""
IDENT_BYTES = struct.calcsize(IDENT_FORMAT)


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (binascii's CRC-CCITT with init 0xFFFF)."""
    return binascii.crc_hqx(bytes(data), crc)


def encode_request(cmd: int, seq: int, addr: int = 0, payload: bytes = b"", length: int | None = None) -> bytes:
    """A request frame; ``length`` defaults to the payload's (reads pass the length they want)."""
    length = len(payload) if length is None else length
    body = struct.pack("<BBIH", int(cmd), seq & 0xFF, addr & 0xFFFF_FFFF, length) + bytes(payload)
    return bytes([REQ_SYNC]) + body + crc16(body).to_bytes(2, "big")


def encode_response(status: int, seq: int, payload: bytes = b"") -> bytes:
    """A response frame (what the gateware sends; used by tests and host models)."""
    body = struct.pack("<BBH", int(status), seq & 0xFF, len(payload)) + bytes(payload)
    return bytes([RESP_SYNC]) + body + crc16(body).to_bytes(2, "big")


def decode_ident(payload: bytes) -> dict:
    magic, version, flags, max_payload, mem_base, mem_bytes, clk_hz = struct.unpack(IDENT_FORMAT, payload)
    return {"magic": magic, "version": version, "sram": bool(flags & 1), "max_payload": max_payload,
            "mem_base": mem_base, "mem_bytes": mem_bytes, "clk_hz": clk_hz}
