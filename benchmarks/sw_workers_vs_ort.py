"""SCALENet's software workers vs onnxruntime on the same int8 layers, with the same thread count.

Each layer (int8 activations, full-range int8 weights, per-channel scales: what the zoo networks use)
runs as (a) SoftwareWorkers (with their numpy kernels, and with their default kernels), (b) an in-memory
ONNX QLinearConv/QLinearMatMul with s8 activations (s8s8: exact), (c) the same with the activations shifted to u8 (u8s8: onnxruntime's fast path on x86, which
saturates int16 pair sums without VNNI, see tests/test_ort_exact.py). Best-of-N wall times and the
ratios are printed side by side, with the number of outputs that differ from the reference.

    python benchmarks/sw_workers_vs_ort.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from scalenet.ir import Conv, Dense, Graph, Tensor
from scalenet.quant import QParams
from scalenet.scheduler.workers import SoftwareWorkers

_T = {np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8}


def layers():
    rng = np.random.default_rng(0)
    xq = QParams(np.float32(0.05), -3, "int8")
    yq = QParams(np.float32(4.0), 2, "int8")

    def conv(name, cin, cout, hw, k, groups=1):
        w = rng.integers(-127, 128, (cout, cin // groups, k, k)).astype(np.int8)
        ws = rng.uniform(0.002, 0.02, cout).astype(np.float32)
        layer = Conv(name=name, inputs=["x"], output="y", weight=w, w_q=QParams(ws, 0, "int8"),
                     bias=rng.integers(-5000, 5000, cout), pads=(k // 2,) * 4, groups=groups)
        out = layer.out_shape([(cin, hw, hw)])
        return Graph(name, {"x": Tensor("x", (cin, hw, hw), xq), "y": Tensor("y", out, yq)}, [layer], ["x"], ["y"])

    def dense(name, fin, fout):
        w = rng.integers(-127, 128, (fout, fin)).astype(np.int8)
        layer = Dense(name=name, inputs=["x"], output="y", weight=w,
                      w_q=QParams(np.float32(0.01), 0, "int8"))      # QLinearMatMul has no bias
        return Graph(name, {"x": Tensor("x", (fin,), xq), "y": Tensor("y", (fout,), QParams(np.float32(2.0), 0))},
                     [layer], ["x"], ["y"])

    return [conv("conv3x3 64->64 @56", 64, 64, 56, 3), conv("conv1x1 128->128 @28", 128, 128, 28, 1),
            conv("conv3x3 3->32 @112", 3, 32, 112, 3), conv("dwconv3x3 128 @28", 128, 128, 28, 3, groups=128),
            dense("dense 1024->1000", 1024, 1000)]


def ort_model(graph, act_dtype):
    """The graph's one layer as QLinearConv / QLinearMatMul (+bias via conv only) with ``act_dtype`` activations."""
    layer = graph.layers[0]
    xq, yq = graph.tensors["x"].q, graph.tensors["y"].q
    shift = 128 if act_dtype == np.uint8 else 0
    init = [numpy_helper.from_array(np.float32(xq.scale), "xs"),
            numpy_helper.from_array(np.array(int(xq.zero_point) + shift, act_dtype), "xz"),
            numpy_helper.from_array(layer.weight, "w"),
            numpy_helper.from_array(np.asarray(layer.w_q.scale, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(np.shape(layer.w_q.scale), np.int8), "wz"),
            numpy_helper.from_array(np.float32(yq.scale), "ys"),
            numpy_helper.from_array(np.array(int(yq.zero_point) + shift, act_dtype), "yz")]
    if isinstance(layer, Conv):
        init.append(numpy_helper.from_array(layer.bias.astype(np.int32), "b"))
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                                pads=list(layer.pads), strides=list(layer.stride), group=layer.groups)
        shape = [1, *graph.tensors["x"].shape]
    else:
        init[2] = numpy_helper.from_array(np.ascontiguousarray(layer.weight.T), "w")
        node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
        shape = [1, layer.weight.shape[1]]
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", _T[act_dtype], shape)],
                          [helper.make_tensor_value_info("y", _T[act_dtype], [1, *graph.tensors["y"].shape])], init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]), shift


def best(fn, repeats):
    fn()
    t = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s) everywhere, best of {args.repeats}")
    print(f"{'layer':24s} {'numpy ms':>9s} {'workers ms':>10s} {'ORT s8s8 ms':>11s} {'ratio':>6s} {'exact':>5s} "
          f"{'ORT u8s8 ms':>11s} {'ratio':>6s} {'wrong outputs':>13s}")
    rng = np.random.default_rng(1)
    with SoftwareWorkers(args.threads) as workers, SoftwareWorkers(args.threads, kernel="numpy") as numpy_workers:
        for graph in layers():
            layer = graph.layers[0]
            x = rng.integers(-128, 128, (1, *graph.tensors["x"].shape)).astype(np.int8)
            ref = graph.run(x)["y"]
            ours = workers.run_layer(graph, layer, [x])
            assert np.array_equal(ours, ref), graph.name
            assert np.array_equal(numpy_workers.run_layer(graph, layer, [x]), ref), graph.name
            t_numpy = best(lambda: numpy_workers.run_layer(graph, layer, [x]), args.repeats)
            t_ours = best(lambda: workers.run_layer(graph, layer, [x]), args.repeats)
            row = [f"{graph.name:24s} {1e3 * t_numpy:9.2f} {1e3 * t_ours:10.2f}"]
            for dtype in (np.int8, np.uint8):
                model, shift = ort_model(graph, dtype)
                onnx.checker.check_model(model)
                sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
                xin = (x.astype(np.int16) + shift).astype(dtype)
                feed = {"x": xin if isinstance(layer, Conv) else xin.reshape(1, -1)}
                y = sess.run(None, feed)[0].reshape(ref.shape).astype(np.int16) - shift
                wrong = int(np.count_nonzero(y != ref))
                t = best(lambda: sess.run(None, feed), args.repeats)
                if dtype == np.int8:
                    row.append(f"{1e3 * t:11.2f} {t / t_ours:6.2f} {'yes' if wrong == 0 else 'NO':>5s}")
                else:
                    row.append(f"{1e3 * t:11.2f} {t / t_ours:6.2f} {wrong:6d}/{ref.size:<6d}")
            print(" ".join(row))
    print("numpy = the workers' numpy kernels (kernel='numpy'); workers = their default kernels (onnxruntime s8s8 "
          "QLinearConv for eligible convs and dense layers). ratio = onnxruntime time / workers time (> 1: the "
          "workers are faster). u8s8 is onnxruntime's fast x86 path; without VNNI it saturates on full-range "
          "weights (wrong outputs), so the workers never use it.")


if __name__ == "__main__":
    main()
