"""Regenerate scalenet/zoo/eeg_mpcnn.npz on SYNTHETIC EEG and report the detector on held-out synthetic data.

    python benchmarks/train_eeg.py [--epochs 8] [--seed 0] [--output path.npz] [--hours 2] [--no-train]

1. Training (scalenet.zoo.train_eeg.main): synthetic data generation + pure-numpy training, timed.
2. Evaluation of the written weights, quantised to int8 with the shipped calibration batch, on held-out
   synthetic recordings (seeds from train_eeg.EVAL_SEED, never used in training): float vs int8 window
   accuracy, then the int8 reference (Graph.run) over ``--hours`` of 20-minute recordings with 3 seizures
   each: sensitivity, false alarms per hour, detection latency (k=4 of n=6 one-second windows).
3. The scheduled real-time run of 8 windows on the zedboard target (accelerator model + software
   workers) under a 1-s deadline, bit-exact check included.

Everything here is SYNTHETIC data (scalenet.eeg.synth); no real EEG is involved. Tip: on a machine
shared by several jobs, OPENBLAS_NUM_THREADS=1 is faster than letting BLAS threads compete.
"""

import argparse
import sys
import time

import numpy as np

from scalenet.eeg import detect, synth
from scalenet.eeg.realtime import run_realtime
from scalenet.floatnet import quantize_net
from scalenet.zoo import train_eeg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=str(train_eeg.WEIGHTS_PATH))
    ap.add_argument("--hours", type=float, default=2.0, help="held-out synthetic hours to evaluate")
    ap.add_argument("--no-train", action="store_true", help="evaluate the existing --output weights only")
    args = ap.parse_args(argv)
    if not args.no_train:
        t0 = time.perf_counter()
        train_eeg.main(["--epochs", str(args.epochs), "--seed", str(args.seed), "--output", args.output])
        print(f"total (data + training + writing): {time.perf_counter() - t0:.1f} s")

    net = train_eeg.float_net(train_eeg.load_weights(args.output))
    graph = quantize_net(net, train_eeg.calibration(args.output))
    graph.meta.update(zoo="eeg_mpcnn")
    n_rec = max(1, int(round(args.hours * 3)))
    totals = dict(seizures=0, detected=0, false_alarms=0, background_hours=0.0, latencies=[], windows=0,
                  infer_s=0.0, float_ok=0, int8_ok=0, agree=0)
    for i in range(n_rec):
        rec = synth.generate(1200, seed=train_eeg.EVAL_SEED + i, n_seizures=3)
        r = detect.evaluate(graph, rec)
        for k in ("seizures", "detected", "false_alarms", "background_hours", "windows"):
            totals[k] += r[k]
        totals["latencies"] += r["latencies_s"]
        totals["infer_s"] += r["inference_s"]
        x = detect.normalise(rec.signal)
        starts = detect.window_starts(x.shape[1])
        w = detect.windows(x, starts)
        truth = detect.window_labels(rec.seizures, starts, rec.fs)
        f = np.concatenate([net.run(w[j:j + 512])["fc2"] for j in range(0, len(w), 512)])
        pq, _ = detect.classify(graph, w)
        pf = f[:, 1] > f[:, 0]
        totals["float_ok"] += int((pf == truth).sum())
        totals["int8_ok"] += int((pq == truth).sum())
        totals["agree"] += int((pf == pq).sum())
    n = totals["windows"]
    lat = np.array(totals["latencies"])
    print(f"\nSYNTHETIC held-out data: {n_rec} recordings x 20 min ({n_rec / 3:.1f} h), {totals['seizures']} seizures")
    print(f"window accuracy: float {totals['float_ok'] / n:.4f}, int8 {totals['int8_ok'] / n:.4f} "
          f"(int8 and float agree on {totals['agree'] / n:.4f} of {n} windows)")
    print(f"int8 detector (k={detect.K} of n={detect.N} 1-s windows): sensitivity "
          f"{totals['detected']}/{totals['seizures']} = "
          f"{totals['detected'] / totals['seizures']:.3f}, false alarms {totals['false_alarms']} in "
          f"{totals['background_hours']:.2f} h = {totals['false_alarms'] / totals['background_hours']:.2f}/h, "
          f"latency mean {lat.mean():.2f} s, median {np.median(lat):.2f} s, max {lat.max():.2f} s")
    print(f"int8 reference inference: {1e3 * totals['infer_s'] / n:.2f} ms per window (Graph.run, batched)")

    rec = synth.generate(120, seed=train_eeg.EVAL_SEED + 999, n_seizures=1)
    rt = run_realtime(graph, rec, target="zedboard", deadline_s=1.0, frames=8, start_s=float(rec.seizures[0][0]))
    print(f"real-time on {rt['target']} (accelerator model + software workers, power modelled): placement "
          f"{rt['counts']}, predicted {1e3 * rt['predicted_latency_s']:.2f} ms, measured max "
          f"{1e3 * rt['max_measured_latency_s']:.2f} ms per 1-s window, deadline met: {rt['deadline_met']}, "
          f"bit-exact with the reference: {rt['bit_exact']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
