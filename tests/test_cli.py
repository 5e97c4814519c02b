"""The `scalenet` command: zoo listing, runs, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

import scalenet
from scalenet.quant import quantize


def scalenet_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "scalenet", *args], capture_output=True, text=True, cwd=cwd)


def test_zoo_lists_nine_paper_networks_and_the_demo():
    r = scalenet_cli("zoo", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    paper = [row for row in rows if row["application"] in ("image", "eeg")]
    assert len(paper) == 9
    assert {"lenet5", "digits_cnn"} <= {row["name"] for row in rows}
    assert all(row["macs"] > 0 and row["params"] > 0 for row in rows)
    table = scalenet_cli("zoo")
    assert table.returncode == 0 and "lenet5" in table.stdout


def test_run_writes_exact_reference_output(tmp_path):
    graph = scalenet.load("digits_cnn")
    rng = np.random.default_rng(0)
    xf = rng.uniform(0, 16, (5, *graph.input.shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", xf)
    r = scalenet_cli("run", "digits_cnn", "--input", "x.npy", "--output", "y.npy", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    y = np.load(tmp_path / "y.npy")
    want = graph.run(quantize(xf, graph.input.q))[graph.outputs[0]]
    np.testing.assert_array_equal(y, want)
    assert info["frames"] == 5 and info["argmax"] == [int(i) for i in want.reshape(5, -1).argmax(1)]
    r = scalenet_cli("run", "digits_cnn", "--input", "x.npy", "--output", "f.npy", "--dequantize", cwd=tmp_path)
    assert r.returncode == 0 and np.load(tmp_path / "f.npy").dtype == np.float32


@pytest.mark.parametrize("setup, args, message", [
    (None, ["run", "no_such.onnx"], "no_such.onnx"),
    ("garbage", ["run", "bad.onnx"], "not a valid ONNX model"),
    (None, ["run", "digits_cnn", "--input", "missing.npy"], "input file not found"),
    ("wrong_shape", ["run", "digits_cnn", "--input", "x.npy"], "shape"),
    ("wrong_dtype", ["run", "digits_cnn", "--input", "x.npy"], "dtype"),
    ("not_npy", ["run", "digits_cnn", "--input", "x.npy"], "cannot read input"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, setup, args, message):
    if setup == "garbage":
        (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage-not-protobuf\xff\xff")
    elif setup == "wrong_shape":
        np.save(tmp_path / "x.npy", np.zeros((3, 3), np.float32))
    elif setup == "wrong_dtype":
        np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.int16))
    elif setup == "not_npy":
        (tmp_path / "x.npy").write_text("hello")
    r = scalenet_cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scalenet: error:"), r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = scalenet_cli("--debug", "run", "no_such.onnx", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_regmap_command_prints_generated_docs():
    r = scalenet_cli("regmap", "--c-header")
    assert r.returncode == 0 and "#define SCALENET_ID_MAGIC" in r.stdout


def test_model_backend_equals_cpu_and_reports_counters(tmp_path):
    graph = scalenet.load("digits_cnn")
    x = np.random.default_rng(1).integers(-128, 128, (3, *graph.input.shape)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    outs = {}
    for backend in ("cpu", "model"):
        r = scalenet_cli("run", "digits_cnn", "--input", "x.npy", "--output", f"{backend}.npy", "--backend", backend,
                         "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        outs[backend] = (np.load(tmp_path / f"{backend}.npy"), json.loads(r.stdout))
    np.testing.assert_array_equal(outs["cpu"][0], outs["model"][0])
    assert outs["model"][1]["counters"]["mac_active"] == 3 * graph.macs
    assert outs["cpu"][1]["counters"] is None


def test_info_and_hardware_limits_on_the_command_line(tmp_path):
    r = scalenet_cli("info", "--target", "model", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["config"]["rows"] == 8
    r = scalenet_cli("run", "alexnet", "--backend", "model", cwd=tmp_path)
    assert r.returncode == 2 and "kernel size 11 exceeds" in r.stderr and "Traceback" not in r.stderr
    r = scalenet_cli("info", "--target", "nowhere")
    assert r.returncode == 2 and "unknown target 'nowhere'" in r.stderr


def test_unsupported_onnx_operator_is_named(tmp_path):
    from onnx import TensorProto, helper
    node = helper.make_node("LpNormalization", ["x"], ["y"], name="norm1")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    (tmp_path / "m.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    r = scalenet_cli("run", "m.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "norm1" in r.stderr and "LpNormalization" in r.stderr


@pytest.mark.parametrize("case", ["s8s8_per_channel", "u8s8_per_tensor", "matmul_u8"])
def test_run_on_quantised_onnx_equals_onnxruntime(tmp_path, case):
    """`scalenet run model.onnx --backend cpu` writes exactly onnxruntime's integers."""
    from onnx_models import ort_run, qlinearconv_model, qlinearmatmul_model
    rng = np.random.default_rng(11)
    if case == "matmul_u8":
        b = rng.integers(0, 256, (24, 10)).astype(np.uint8)
        model = qlinearmatmul_model(24, np.uint8, 0.03, 120, b, 0.01, 127, 0.2, 100)
        x = rng.integers(0, 256, (1, 24)).astype(np.uint8)
    else:
        signed = case.startswith("s8")
        x_dtype = np.int8 if signed else np.uint8
        w = rng.integers(-127 if signed else -64, 128 if signed else 64, (6, 3, 3, 3)).astype(np.int8)
        w_scale = rng.uniform(0.002, 0.01, 6).astype(np.float32) if "per_channel" in case else np.float32(0.005)
        bias = rng.integers(-500, 500, 6).astype(np.int32)
        model = qlinearconv_model((1, 3, 9, 9), x_dtype, 0.04, 0 if signed else 128, w, w_scale, 0, 0.3,
                                  -5 if signed else 110, bias=bias, pads=(1, 1, 1, 1), strides=(2, 1))
        lo, hi = (-128, 128) if signed else (0, 256)
        x = rng.integers(lo, hi, (1, 3, 9, 9)).astype(x_dtype)
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    np.save(tmp_path / "x.npy", x)
    r = scalenet_cli("run", "m.onnx", "--input", "x.npy", "--output", "y.npy", "--backend", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), ort_run(model, {model.graph.input[0].name: x})[0])


def test_sim_backend_on_pysim_writes_a_trace_that_matches_the_counters(tmp_path):
    """`run --backend sim --engine pysim --vcd` equals the reference; `trace --json` reads the VCD back and
    its cycle and MAC figures are the device counters the run reported."""
    from onnx_models import qlinearconv_model
    rng = np.random.default_rng(5)
    w = rng.integers(-60, 60, (8, 8, 3, 3)).astype(np.int8)
    model = qlinearconv_model((1, 8, 4, 4), np.uint8, 0.05, 120, w, 0.004, 0, 0.2, 100,
                              bias=rng.integers(-300, 300, 8), pads=(1, 1, 1, 1))
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    x = rng.integers(0, 256, (1, 8, 4, 4)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    r = scalenet_cli("run", "m.onnx", "--input", "x.npy", "--output", "y.npy", "--backend", "sim", "--engine",
                     "pysim", "--vcd", "t.vcd", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["engine"] == "pysim" and info["vcd"] == "t.vcd"
    assert "simulating" not in r.stderr            # no progress bar when stderr is not a terminal
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), scalenet.load(str(tmp_path / "m.onnx")).run(x)["y"])
    r = scalenet_cli("trace", "t.vcd", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trace = json.loads(r.stdout)
    assert trace["runs"] == 1
    assert trace["totals"]["cycles"] == sum(la["cycles"] for la in trace["layers"]) == info["counters"]["cycles"]
    assert trace["totals"]["mac_ops"] == info["counters"]["mac_active"] >= 8 * 8 * 9 * 16
    assert trace["totals"]["dma_rd_bytes"] == info["counters"]["dma_rd_bytes"]
    table = scalenet_cli("trace", "t.vcd", cwd=tmp_path)
    assert table.returncode == 0 and "PE active" in table.stdout
    r = scalenet_cli("run", "m.onnx", "--vcd", "u.vcd", cwd=tmp_path)
    assert r.returncode == 2 and "--engine and --vcd need --backend sim" in r.stderr
    r = scalenet_cli("trace", "x.npy", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
