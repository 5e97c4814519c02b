"""The serial transport: registers and memory of a CPU-less board through the UART bridge (rtl/bridge.py).

Frames, CRC and command codes come from :mod:`scalenet.rtl.bridge_protocol` (spec: docs/serial-protocol.md).
Every request waits for its answer with a deadline; a lost or corrupted answer, or a NAK caused by line
noise, is retried with the same sequence number (the bridge answers a retried write without executing
it twice). What cannot be recovered raises one specific exception: :class:`BridgeTimeout` (no answer),
:class:`BridgeProtocolError` (answers that never check, or not a SCALENet bridge), :class:`DeviceDisconnected`
(the port went away), :class:`~scalenet.driver.transport.RegisterAccessError` (the register refused the
access), :class:`BridgeBusError` (memory answered a bus error). Bulk memory moves in maximal frames.
"""

from __future__ import annotations

import struct
import time

import numpy as np

from scalenet.errors import ScalenetError
from scalenet.rtl.bridge_protocol import (BRIDGE_MAGIC, IDENT_BYTES, PROTOCOL_VERSION, RESP_SYNC, Cmd, Status,
                                          crc16, decode_ident, encode_request)

from .transport import RegisterAccessError, Transport

__all__ = ["BridgeError", "BridgeTimeout", "BridgeProtocolError", "BridgeBusError", "DeviceDisconnected",
           "SerialTransport", "parse_port"]


class BridgeError(ScalenetError):
    """The serial bridge could not complete a request."""


class BridgeTimeout(BridgeError):
    """No (complete) answer within the timeout, after every retry."""


class BridgeProtocolError(BridgeError):
    """Answers that are malformed (CRC, framing) or refuse well-formed requests, after every retry; or
    the device on the port is not a SCALENet bridge of a protocol version this driver speaks."""


class BridgeBusError(BridgeError):
    """The bridge's memory access was answered SLVERR/DECERR by the SoC's bus."""


class DeviceDisconnected(BridgeError):
    """The serial port could not be opened or went away (unplugged board, closed pseudo-terminal)."""


class _NoAnswer(Exception):
    pass


def _line_errors() -> tuple:
    """Exceptions that mean the port itself failed (pyserial's, termios', the OS's)."""
    errors = [OSError]
    try:
        import termios
        errors.append(termios.error)
    except ImportError:                                  # not POSIX
        pass
    try:
        import serial
        errors.append(serial.SerialException)
    except ImportError:
        pass
    return tuple(errors)


class _BadAnswer(Exception):
    pass


_RETRIED = {Status.BAD_CRC, Status.BAD_CMD, Status.BAD_LEN}   # our frames are well-formed: line noise


def parse_port(spec: str) -> tuple[str, int | None]:
    """``"/dev/ttyUSB0@921600"`` -> ("/dev/ttyUSB0", 921600); no ``@baud``: (spec, None)."""
    port, at, baud = spec.rpartition("@")
    if at and baud.isdigit():
        return port, int(baud)
    return spec, None


class SerialTransport(Transport):
    """The driver's transport over a serial line to a BoardSoC.

    ``port`` is a device path or pyserial URL (opened with pyserial at ``baud``), or an open file-like
    object with ``read(n)``/``write(data)`` (read returning fewer bytes on timeout). ``timeout`` bounds
    each answer in seconds, ``retries`` the extra attempts per request. On open the bridge is pinged:
    its identification gives the memory size and the largest frame payload.
    """

    def __init__(self, port, baud: int = 115_200, *, timeout: float = 1.0, retries: int = 3):
        if retries < 0 or timeout <= 0:
            raise ValueError(f"timeout must be > 0 and retries >= 0 (got {timeout}, {retries})")
        self.timeout, self.retries = float(timeout), int(retries)
        self.stats = {"requests": 0, "retries": 0, "timeouts": 0, "bad_answers": 0, "naks": 0, "stale": 0}
        self._seq = 0
        self._owned = isinstance(port, str)
        if self._owned:
            try:
                import serial
            except ImportError as e:
                raise BridgeError("the serial transport needs pyserial: pip install pyserial") from e
            self.name = port
            try:
                self._port = serial.serial_for_url(port, baudrate=baud, timeout=0.05, write_timeout=self.timeout)
            except (serial.SerialException, OSError, ValueError) as e:
                raise DeviceDisconnected(f"cannot open serial port {port}: {e}") from None
        else:
            self._port = port
            self.name = getattr(port, "name", None) or getattr(port, "port", None) or repr(port)
        self._line_errors = _line_errors()
        self._rx = bytearray()                           # bytes read but not consumed (resynchronisation)
        self.max_payload = 4
        try:
            self.ident = self.ping()
        except BaseException:
            self.close()
            raise
        self.max_payload = self.ident["max_payload"]
        self.mem_base = self.ident["mem_base"]
        self.mem_size = self.ident["mem_base"] + self.ident["mem_bytes"]

    # -- the line --------------------------------------------------------------------------------------
    def _io_error(self, e):
        return DeviceDisconnected(f"serial port {self.name}: the device went away ({e})")

    def _write(self, frame):
        try:
            self._port.write(frame)
            if hasattr(self._port, "flush"):
                self._port.flush()
        except self._line_errors as e:
            if type(e).__name__ == "SerialTimeoutException":
                raise BridgeTimeout(f"serial port {self.name}: writing a frame timed out after {self.timeout:g} s")
            raise self._io_error(e) from None

    def _read(self, n, deadline) -> bytes:
        out = bytearray(self._rx[:n])
        del self._rx[:n]
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _NoAnswer()
            try:
                if hasattr(self._port, "timeout") and self._owned:
                    self._port.timeout = min(left, 0.1)
                chunk = self._port.read(n - len(out))
            except self._line_errors as e:
                raise self._io_error(e) from None
            out += chunk
        return bytes(out)

    def _discard_input(self):
        self._rx.clear()
        try:
            if hasattr(self._port, "reset_input_buffer"):
                self._port.reset_input_buffer()
        except self._line_errors as e:
            raise self._io_error(e) from None

    def _answer(self, seq, deadline):
        """The answer to ``seq``: skips noise before a sync byte and stale answers to earlier requests.
        A candidate frame that does not check (a sync byte inside noise, or a corrupted answer) is
        unread after its sync byte and the search goes on; if the deadline passes after one, the
        attempt failed with a bad answer rather than with silence."""
        problem = None
        try:
            while True:
                while self._read(1, deadline)[0] != RESP_SYNC:
                    pass
                header = self._read(4, deadline)
                status, rseq, n = struct.unpack("<BBH", header)
                if n > max(self.max_payload, IDENT_BYTES):
                    problem = f"an answer announcing {n} payload bytes"
                    self._rx[:0] = header
                    continue
                body = self._read(n + 2, deadline)
                if crc16(header + body) != 0:
                    problem = "an answer with a CRC error"
                    self._rx[:0] = header + body
                    continue
                if rseq != seq:
                    self.stats["stale"] += 1
                    continue
                return status, body[:n]
        except _NoAnswer:
            if problem:
                raise _BadAnswer(problem) from None
            raise

    def _request(self, cmd: Cmd, addr=0, payload=b"", length=None):
        """One request with retries; returns (status, payload) for OK, BAD_ADDR and BUS_ERROR answers."""
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFF
        frame = encode_request(cmd, seq, addr, payload, length)
        self.stats["requests"] += 1
        problems = []
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self._discard_input()
            self._write(frame)
            try:
                status, data = self._answer(seq, time.monotonic() + self.timeout)
            except _NoAnswer:
                self.stats["timeouts"] += 1
                problems.append("no answer")
                continue
            except _BadAnswer as e:
                self.stats["bad_answers"] += 1
                problems.append(str(e))
                continue
            if status in _RETRIED:
                self.stats["naks"] += 1
                problems.append(f"a {Status(status).name} answer")
                continue
            if status not in Status._value2member_map_:
                self.stats["bad_answers"] += 1
                problems.append(f"unknown status 0x{status:02X}")
                continue
            return Status(status), data
        what = f"{cmd.name} at 0x{addr:X} on {self.name}"
        if all(p == "no answer" for p in problems):
            raise BridgeTimeout(f"{what}: no answer within {self.timeout:g} s in {len(problems)} attempts "
                                f"(is the board powered, programmed and on this port at this baud rate?)")
        raise BridgeProtocolError(f"{what}: failed {len(problems)} attempts: {', '.join(problems)}")

    # -- the transport interface ---------------------------------------------------------------------
    def ping(self) -> dict:
        """The bridge's identification (checks that it is a SCALENet bridge of this protocol version)."""
        status, data = self._request(Cmd.PING)
        if status != Status.OK or len(data) != IDENT_BYTES:
            raise BridgeProtocolError(f"{self.name}: PING answered {status.name} with {len(data)} bytes")
        ident = decode_ident(data)
        if ident["magic"] != BRIDGE_MAGIC:
            raise BridgeProtocolError(f"{self.name}: the device identifies as 0x{ident['magic']:08X}, "
                                      f"not a SCALENet bridge (0x{BRIDGE_MAGIC:08X})")
        if ident["version"] != PROTOCOL_VERSION:
            raise BridgeProtocolError(f"{self.name}: bridge protocol version {ident['version']}, this driver "
                                      f"speaks {PROTOCOL_VERSION}")
        return ident

    def read_reg(self, offset):
        status, data = self._request(Cmd.REG_READ, offset, length=4)
        self._check_reg(status, "read of", offset)
        return int.from_bytes(data, "little")

    def write_reg(self, offset, value):
        status, _ = self._request(Cmd.REG_WRITE, offset, (value & 0xFFFF_FFFF).to_bytes(4, "little"))
        self._check_reg(status, "write to", offset)

    @staticmethod
    def _check_reg(status, what, offset):
        if status == Status.BUS_ERROR:
            raise RegisterAccessError(f"{what} register offset 0x{offset:03X} answered a bus error "
                                      f"(reserved or read-only)")
        if status == Status.BAD_ADDR:
            raise RegisterAccessError(f"{what} register offset 0x{offset:03X}: outside the bridge's register "
                                      f"window or not word aligned")

    def _check_range(self, addr, length, what):
        if addr < self.mem_base or addr + length > self.mem_size:
            raise ValueError(f"{what} of {length} bytes at 0x{addr:x} is outside the device memory "
                             f"[0x{self.mem_base:x}, 0x{self.mem_size:x})")

    def _check_mem(self, status, what, addr, n):
        if status == Status.BUS_ERROR:
            raise BridgeBusError(f"{what} of {n} bytes at 0x{addr:x}: the memory answered a bus error")
        if status == Status.BAD_ADDR:
            raise BridgeProtocolError(f"{what} of {n} bytes at 0x{addr:x}: the bridge refused the address "
                                      f"(its memory window differs from the identification)")

    def write_mem(self, addr, data):
        data = (data.view(np.uint8).reshape(-1) if isinstance(data, np.ndarray)
                else np.frombuffer(bytes(data), np.uint8)).tobytes()
        self._check_range(addr, len(data), "write")
        for start in range(0, len(data), self.max_payload):
            chunk = data[start:start + self.max_payload]
            status, _ = self._request(Cmd.MEM_WRITE, addr + start, chunk)
            self._check_mem(status, "write", addr + start, len(chunk))

    def read_mem(self, addr, length):
        self._check_range(addr, length, "read")
        out = bytearray()
        for start in range(0, length, self.max_payload):
            n = min(self.max_payload, length - start)
            status, data = self._request(Cmd.MEM_READ, addr + start, length=n)
            self._check_mem(status, "read", addr + start, n)
            if len(data) != n:
                raise BridgeProtocolError(f"read of {n} bytes at 0x{addr + start:x} returned {len(data)}")
            out += data
        return bytes(out)

    def wait(self, cycles):
        """Nothing: each status poll is a round trip on the line, which paces polling by itself."""

    def close(self):
        if self._owned and self._port is not None:
            try:
                self._port.close()
            except Exception:
                pass
            self._port = None
