"""The serial transport end to end: the driver on a pseudo-terminal to the simulated board (UART, bridge,
arbiter and accelerator gateware in the compiled engine), against the other targets; and every kind of
bad use — wrong device or configuration, oversize layer, start while busy, timeouts, error status,
malformed frames, disconnect — each a specific exception, after which the next run works."""

import os
import threading
import time
import tty

import numpy as np
import pytest

serial = pytest.importorskip("serial", reason="pyserial is a dependency of the serial transport")

from scalenet import zoo  # noqa: E402
from scalenet.cosim.platform import SimTransport  # noqa: E402
from scalenet.cosim.serial_board import SimulatedBoard  # noqa: E402
from scalenet.driver.accelerator import (Accelerator, AcceleratorError, AcceleratorTimeout,  # noqa: E402
                                         DeviceMismatch)
from scalenet.driver.serial_transport import (BridgeProtocolError, BridgeTimeout, DeviceDisconnected,  # noqa: E402
                                              SerialTransport, parse_port)
from scalenet.driver.transport import ModelDevice, ModelTransport, RegisterAccessError  # noqa: E402
from scalenet.errors import HardwareLimitError  # noqa: E402
from scalenet.quant import quantize  # noqa: E402
from scalenet.rtl import regmap  # noqa: E402
from scalenet.rtl.bridge_protocol import (BRIDGE_MAGIC, IDENT_FORMAT, PROTOCOL_VERSION, REQ_SYNC, Cmd,  # noqa: E402
                                          Status, crc16, encode_request, encode_response)
from scalenet.rtl.config import AcceleratorConfig  # noqa: E402
from scalenet.rtl.regmap import DESCRIPTOR_BYTES, ErrorCode  # noqa: E402

CFG = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=512, line_buffer_bytes=8192,
                        weight_buffer_bytes=64 * 1024)
MEM = 1 << 20


def digits_frames(n=2):
    graph = zoo.build("digits_cnn")
    rng = np.random.default_rng(5)
    return graph, quantize(rng.uniform(0, 16, (n, *graph.input.shape)).astype(np.float32), graph.input.q)


@pytest.fixture(scope="module")
def board():
    b = SimulatedBoard(CFG, mem_size=MEM, latency=6)
    yield b
    b.close()


@pytest.fixture(scope="module")
def serial_acc(board):
    """One accelerator on the board's port, with digits_cnn loaded once (10 kB through the UART)."""
    acc = Accelerator(SerialTransport(board.port, timeout=20.0), config=CFG, timeout=120.0)
    graph, _ = digits_frames()
    loaded = acc.load(graph)
    yield acc, loaded
    acc.close()


@pytest.mark.parametrize("kind", ["model", "sim-compiled", "sim-pysim", "serial-pty"])
def test_digits_cnn_gives_identical_bytes_on_every_target(kind, request):
    """The same frames on the behavioural model, the RTL in both simulators and the RTL behind the UART
    bridge on a pseudo-terminal (the network loaded through the bridge by the fixture). Amaranth's simulator
    runs one frame (about a minute), the others two."""
    graph, x = digits_frames()
    if kind == "sim-pysim":
        x = x[:1]
    if kind == "serial-pty":
        acc, loaded = request.getfixturevalue("serial_acc")
        out = acc.run(loaded, x)["fc"]
    else:
        transport = (ModelTransport(ModelDevice(CFG, mem_size=MEM)) if kind == "model"
                     else SimTransport(config=CFG, mem_size=MEM, latency=6, engine=kind.removeprefix("sim-")))
        acc = Accelerator(transport, config=CFG, timeout=300.0, poll_cycles=500)
        try:
            out = acc.run(acc.load(graph), x)["fc"]
        finally:
            acc.close()
    assert out.dtype == graph.tensors["fc"].q.dtype.np_dtype
    np.testing.assert_array_equal(out, graph.run(x)["fc"])


def test_identity_counters_and_register_rules_over_serial(serial_acc):
    acc, _ = serial_acc
    t = acc.transport
    assert acc.info["config"].rows == 4 and acc.info["id"] == regmap.ID_MAGIC
    assert t.ident["mem_bytes"] == MEM and t.ident["max_payload"] == 256
    with pytest.raises(RegisterAccessError, match="read-only"):
        t.write_reg(regmap.by_name("STATUS").offset, 1)
    with pytest.raises(RegisterAccessError, match="not word aligned"):
        t.read_reg(0x006)
    with pytest.raises(ValueError, match="outside the device memory"):
        t.write_mem(MEM - 2, b"1234")
    data = bytes(range(256)) * 3 + b"xyz"                    # several frames, unaligned start and end
    t.write_mem(0xF0003, data)
    assert t.read_mem(0xF0003, len(data)) == data
    assert t.read_mem(0xF0002, 1) == b"\0"


def test_wrong_configuration_and_oversize_layer_are_refused(board, serial_acc):
    with pytest.raises(DeviceMismatch, match="4x4 PEs.*expects 8x8"):
        Accelerator(SerialTransport(board.port, timeout=20.0), config=AcceleratorConfig())
    acc, loaded = serial_acc
    with pytest.raises(HardwareLimitError, match="width"):
        acc.load(zoo.build("eeg_mpcnn"))
    graph, x = digits_frames(1)
    np.testing.assert_array_equal(acc.run(loaded, x)["fc"], graph.run(x)["fc"])


def test_start_while_busy_error_status_and_timeout_recover(serial_acc):
    acc, loaded = serial_acc
    graph, x = digits_frames(1)
    want = graph.run(x)["fc"]
    net = loaded.compiled
    t = acc.transport
    # A long run: the network's descriptors eight times over (each pass recomputes the same buffers).
    # The board advances only while the host talks to it, so the run outlasts the requests below.
    table = 0x8_0000
    descs = t.read_mem(net.desc_addr, net.desc_count * DESCRIPTOR_BYTES)
    t.write_mem(table, descs * 8)
    addr, region = net.encode_input(x[0])
    t.write_mem(addr, region)
    acc.write("DESC_ADDR", table)
    acc.write("DESC_COUNT", 8 * net.desc_count)
    acc.write("CTRL", regmap.pack("CTRL", start=1))
    acc.write("CTRL", regmap.pack("CTRL", start=1))          # a second START while the first runs
    status = regmap.unpack("STATUS", acc.read("STATUS"))
    assert status["busy"] and status["start_while_busy"]
    # The bridge reads memory while the accelerator's DMA reads it: both through the arbiter.
    image = np.asarray(net.image).view(np.uint8).reshape(-1)
    assert t.read_mem(loaded.base, 128) == image[:128].tobytes()
    assert regmap.unpack("STATUS", acc.read("STATUS"))["busy"]
    with pytest.raises(AcceleratorError, match="busy"):
        acc.run(loaded, x)
    acc.abort_and_reset()
    np.testing.assert_array_equal(acc.run(loaded, x)["fc"], want)

    # An error status: a corrupted opcode in descriptor 2 (written through the bridge).
    bad = net.desc_addr + 2 * DESCRIPTOR_BYTES
    saved = acc.transport.read_mem(bad, 1)
    acc.transport.write_mem(bad, bytes([(saved[0] & 0xF0) | 0xF]))
    with pytest.raises(AcceleratorError, match=f"BAD_OPCODE in layer {net.layer_of[2]}") as info:
        acc.run(loaded, x)
    assert info.value.code == ErrorCode.BAD_OPCODE
    acc.transport.write_mem(bad, saved)
    np.testing.assert_array_equal(acc.run(loaded, x)["fc"], want)

    # A run that does not finish in time is aborted and reset.
    quick = Accelerator(acc.transport, config=CFG, timeout=120.0, max_polls=0)
    with pytest.raises(AcceleratorTimeout, match="aborted and reset"):
        quick.run(loaded, x)
    assert not regmap.unpack("STATUS", acc.read("STATUS"))["busy"]
    np.testing.assert_array_equal(acc.run(loaded, x)["fc"], want)


def test_malformed_frames_on_the_line_then_the_transport_works(board, serial_acc):
    acc, loaded = serial_acc
    t = acc.transport
    port = t._port

    def exchange(frame, wait=2.0):
        port.reset_input_buffer()
        port.write(frame)
        deadline = time.monotonic() + wait
        got = b""
        while time.monotonic() < deadline:
            port.timeout = 0.05
            got += port.read(64)
            if len(got) >= 5 and len(got) >= 7 + int.from_bytes(got[3:5], "little"):
                break
        return got

    good = encode_request(Cmd.REG_READ, 200, regmap.by_name("ID").offset, length=4)
    bad_crc = good[:-1] + bytes([good[-1] ^ 1])
    answer = exchange(bad_crc)
    assert answer == encode_response(Status.BAD_CRC, 200)
    unknown = bytearray(good)
    unknown[1] = 0x66
    unknown[-2:] = crc16(bytes(unknown[1:-2])).to_bytes(2, "big")
    assert exchange(bytes(unknown)) == encode_response(Status.BAD_CMD, 200)
    assert exchange(encode_request(Cmd.MEM_READ, 201, 0, length=300)) == encode_response(Status.BAD_LEN, 201)
    assert exchange(good[:6], wait=0.5) == b""                # truncated: dropped without an answer
    assert exchange(good) == encode_response(Status.OK, 200, regmap.ID_MAGIC.to_bytes(4, "little"))
    assert board.framing_errors == 0
    graph, x = digits_frames(1)
    np.testing.assert_array_equal(acc.run(loaded, x)["fc"], graph.run(x)["fc"])


def test_disconnect_raises_and_a_reconnected_board_runs(board, serial_acc):
    acc, loaded = serial_acc
    graph, x = digits_frames(1)
    board.disconnect()
    with pytest.raises(DeviceDisconnected, match="went away"):
        acc.read("ID")
    with pytest.raises(DeviceDisconnected, match="cannot open"):
        SerialTransport("/dev/nonexistent-scalenet-tty")
    port = board.reconnect()
    acc.transport.close()
    acc.transport = SerialTransport(port, timeout=20.0)       # the board kept its memory: no reload
    np.testing.assert_array_equal(acc.run(loaded, x)["fc"], graph.run(x)["fc"])


# ---- the host side against misbehaving peers (a pty whose other end is a small Python device) ---------

class Peer:
    """The far end of a pseudo-terminal answering bridge requests through ``answer(request) -> bytes``."""

    def __init__(self, answer):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave
        self.answer, self.requests = answer, []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        buf = b""
        import select
        while not self._stop:
            if not select.select([self.master], [], [], 0.02)[0]:
                continue
            buf += os.read(self.master, 4096)
            while REQ_SYNC in buf:
                buf = buf[buf.index(REQ_SYNC):]
                if len(buf) < 9:
                    break
                n = int.from_bytes(buf[7:9], "little") if buf[1] in (Cmd.MEM_WRITE, Cmd.REG_WRITE) else 0
                if len(buf) < 11 + n:
                    break
                frame, buf = buf[:11 + n], buf[11 + n:]
                self.requests.append(frame)
                os.write(self.master, self.answer(frame))

    def close(self):
        self._stop = True
        self._thread.join()
        os.close(self.master)
        os.close(self._slave)


def ident(magic=BRIDGE_MAGIC, version=PROTOCOL_VERSION):
    import struct
    return struct.pack(IDENT_FORMAT, magic, version, 1, 64, 0, 4096, 1000)


def test_a_device_that_is_not_a_scalenet_bridge_is_refused():
    peer = Peer(lambda f: encode_response(Status.OK, f[2], ident(magic=0x12345678)))
    try:
        with pytest.raises(BridgeProtocolError, match="not a SCALENet bridge"):
            SerialTransport(peer.port, timeout=0.5)
    finally:
        peer.close()
    peer = Peer(lambda f: encode_response(Status.OK, f[2], ident(version=9)))
    try:
        with pytest.raises(BridgeProtocolError, match="protocol version 9"):
            SerialTransport(peer.port, timeout=0.5)
    finally:
        peer.close()


def test_silence_is_a_timeout_and_corrupt_answers_are_retried_then_refused():
    peer = Peer(lambda f: b"")
    try:
        with pytest.raises(BridgeTimeout, match="no answer within 0.2 s in 2 attempts"):
            SerialTransport(peer.port, timeout=0.2, retries=1)
        assert len(peer.requests) == 2 and peer.requests[0] == peer.requests[1]    # same seq on retry
    finally:
        peer.close()

    answers = {"n": 0}

    def flaky(frame):
        answers["n"] += 1
        good = encode_response(Status.OK, frame[2], ident())
        if answers["n"] == 1:
            return good[:-1] + bytes([good[-1] ^ 0x10])        # the first answer arrives corrupted
        if frame[1] == Cmd.REG_READ:
            return b"\x00\x5A\x00" + encode_response(Status.OK, frame[2], b"\x01\x02\x03\x04")  # noise first
        return good
    peer = Peer(flaky)
    try:
        t = SerialTransport(peer.port, timeout=0.5, retries=2)
        assert t.stats["retries"] == 1 and t.stats["bad_answers"] == 1
        assert t.ident["mem_bytes"] == 4096
        assert t.read_reg(0) == 0x04030201
    finally:
        peer.close()

    peer = Peer(lambda f: encode_response(Status.BAD_CRC, f[2]))
    try:
        with pytest.raises(BridgeProtocolError, match="3 attempts: a BAD_CRC answer"):
            SerialTransport(peer.port, timeout=0.5, retries=2)
    finally:
        peer.close()


def test_port_specs():
    assert parse_port("/dev/ttyUSB0@921600") == ("/dev/ttyUSB0", 921600)
    assert parse_port("/dev/ttyUSB0") == ("/dev/ttyUSB0", None)
    assert parse_port("socket://host:7000") == ("socket://host:7000", None)


def test_cli_info_over_serial(board, serial_acc):
    """`scalenet info --target serial:PORT@BAUD` in another process, against the simulated board."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "scalenet", "info", "--target", f"serial:{board.port}@115200",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"id": "0x53434E54"' in proc.stdout and '"rows": 4' in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "scalenet", "run", "digits_cnn", "--backend", "hw"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "needs --target serial:PORT" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "scalenet", "info", "--target", "serial:"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "names no device" in proc.stderr
