"""EEG seizure detection on SYNTHETIC data: the generator, the detector's post-processing and metrics, the
trained int8 eeg_mpcnn (held-out sensitivity and false alarms), bit-exactness on the accelerator model
and the RTL simulator, the scheduled real-time run, the EDF reader and the shared numpy trainer."""

import numpy as np
import pytest

from scalenet import zoo
from scalenet.eeg import EEGError, detect, synth
from scalenet.quant import quantize
from scalenet.zoo import train_eeg
from scalenet.zoo.nptrain import Chain, param_shapes

QUIET = synth.SynthParams().scaled(alpha_per_min=0.0, blinks_per_min=0.0, eye_moves_per_min=0.0,
                                   muscle_per_min=0.0, chewing_per_min=0.0, pops_per_min=0.0)


@pytest.fixture(scope="module")
def graph():
    return zoo.build("eeg_mpcnn")


@pytest.fixture(scope="module")
def held_out():
    """Two hours of SYNTHETIC EEG with twenty seizures, from a seed no training recording used."""
    return synth.generate(7200, seed=train_eeg.EVAL_SEED, n_seizures=20)


# -- the generator -----------------------------------------------------------------------------------------
def test_generator_is_seeded_and_labelled_synthetic():
    a = synth.generate(300, seed=3, n_seizures=2)
    b = synth.generate(300, seed=3, n_seizures=2)
    c = synth.generate(300, seed=4, n_seizures=2)
    assert a.signal.shape == (23, 300 * 256) and a.signal.dtype == np.float32 and a.fs == 256
    assert np.array_equal(a.signal, b.signal) and np.array_equal(a.seizures, b.seizures)
    assert not np.array_equal(a.signal, c.signal)
    assert a.synthetic and a.meta["synthetic"] and a.channels == synth.CHANNELS and len(a.channels) == 23
    (on1, off1), (on2, off2) = a.seizures
    assert 10 <= on1 and off1 + 30 <= on2 and off2 <= 290
    assert all(10 <= off - on <= 60.01 for on, off in a.seizures)
    lab = a.labels()
    assert lab.sum() == sum(int(round(off * 256)) - int(round(on * 256)) for on, off in a.seizures)
    kinds = {e[0] for e in a.events}
    assert {"blink", "alpha", "seizure"} <= kinds
    assert len(synth.generate(120, seed=3, n_seizures=0).seizures) == 0


def test_bipolar_montage():
    b = synth.bipolar_matrix()
    assert b.shape == (23, 21) and np.all(b.sum(axis=1) == 0)
    # T8-P8 appears twice (as in CHB-MIT) and P7-T7 is the negative of T7-P7
    ch = list(synth.CHANNELS)
    assert np.array_equal(b[ch.index("T8-P8-0")], b[ch.index("T8-P8-1")])
    assert np.array_equal(b[ch.index("P7-T7")], -b[ch.index("T7-P7")])


def _psd(x, fs=256):
    f = np.fft.rfftfreq(x.shape[-1], 1 / fs)
    return f, (np.abs(np.fft.rfft(x, axis=-1)) ** 2).mean(axis=0)


def test_background_is_pink_and_spatially_correlated():
    rec = synth.generate(120, seed=7, n_seizures=0, params=QUIET)
    f, p = _psd(rec.signal)
    band = lambda lo, hi: p[(f >= lo) & (f < hi)].mean()  # noqa: E731
    # 1/f: power density at 2-3 Hz is ~8x that at 16-24 Hz (amplifier white noise adds a little at 16-24)
    assert 5 < band(2, 3) / band(16, 24) < 10
    assert band(0.05, 0.4) < 0.05 * band(0.6, 1.0)       # the 0.5 Hz high-pass
    c = np.corrcoef(rec.signal)
    ch = list(synth.CHANNELS)
    assert c[ch.index("T7-P7"), ch.index("P7-T7")] < -0.99
    assert c[ch.index("T8-P8-0"), ch.index("T8-P8-1")] > 0.99


def test_seizures_are_three_to_four_hertz_spike_and_wave():
    """The seizure component alone (same seed, seizure amplitude 0 subtracted) peaks at 2.5-4.5 Hz."""
    a = synth.generate(200, seed=11, n_seizures=2)
    b = synth.generate(200, seed=11, n_seizures=2, params=synth.SynthParams().scaled(seizure_uv=(0.0, 0.0)))
    d = a.signal - b.signal
    outside = ~a.labels()
    assert np.abs(d[:, outside]).max() == 0
    for (on, off), info in zip(a.seizures, a.meta["seizure_info"]):
        seg = d[:, int(on * 256):int(off * 256)]
        f, p = _psd(seg)
        peak = f[np.argmax(p * (f > 1))]
        assert 2.4 <= peak <= 4.6, (peak, info)
        assert 3.5 <= info["f_start_hz"] <= 4.5 and 2.5 <= info["f_end_hz"] <= 3.2
        # spike and wave: asymmetric (a sharp negative spike, a broad positive wave) on the best channel
        best = seg[np.argmax(seg.std(axis=1))]
        assert abs(best.min()) > 1.3 * best.max() or abs(best.max()) > 1.3 * abs(best.min())


def test_generator_bad_input():
    with pytest.raises(EEGError, match="at least 10 s"):
        synth.generate(5)
    with pytest.raises(EEGError, match="non-negative integer"):
        synth.generate(60, n_seizures=-1)
    with pytest.raises(EEGError, match="do not fit"):
        synth.generate(100, n_seizures=5)


# -- windows, alarms, metrics ------------------------------------------------------------------------------
def test_normalise_and_windows():
    rec = synth.generate(60, seed=2, n_seizures=0)
    x = detect.normalise(rec.signal)
    assert x.dtype == np.float32 and x.shape == rec.signal.shape and np.abs(x).max() <= detect.CLIP
    med, sigma = detect.robust_scale(rec.signal)
    assert np.array_equal(x, detect.normalise(rec.signal, (med, sigma)))
    assert np.allclose(np.median(x, axis=1), 0, atol=0.05)
    starts = detect.window_starts(x.shape[1], hop=128)
    assert len(starts) == (60 * 256 - 256) // 128 + 1
    w = detect.windows(x, starts)
    assert w.shape == (len(starts), 23, 256) and np.array_equal(w[3], x[:, 3 * 128:3 * 128 + 256])
    lab = detect.window_labels([[1.5, 3.0]], np.array([0, 256, 512, 768]), 256)
    assert lab.tolist() == [False, True, True, False]     # window 1-2 s is half inside: counted
    with pytest.raises(EEGError, match="23 channels"):
        detect.normalise(rec.signal[:22])
    with pytest.raises(EEGError, match="fewer than one"):
        detect.normalise(rec.signal[:, :100])
    bad = rec.signal.copy()
    bad[4, -1] = np.nan
    with pytest.raises(EEGError, match="NaN"):
        detect.normalise(bad)


def test_alarms_k_of_n_and_merging():
    p = np.zeros(40, bool)
    p[[2, 4, 5]] = True            # 3 of the 4 windows 2..5 -> alarm at window 5
    p[[9]] = True                  # isolated: nothing
    p[[30, 31, 32]] = True         # a second alarm, 25 s later: not merged
    times = np.arange(40) + 1.0    # window i ends at i + 1 s
    ev = detect.alarms(p, times, k=3, n=4, merge_s=10)
    assert ev.tolist() == [[6.0, 6.0], [33.0, 34.0]]   # windows 30-33 still hold 3 positives
    ev = detect.alarms(p, times, k=3, n=4, merge_s=30)
    assert ev.tolist() == [[6.0, 34.0]]
    assert detect.alarms(p, times, k=1, n=1, merge_s=0).tolist() == [[3, 3], [5, 6], [10, 10], [31, 33]]
    assert detect.alarms(p, times, k=1, n=1, merge_s=10).tolist() == [[3, 10], [31, 33]]
    with pytest.raises(EEGError, match="k <= n"):
        detect.alarms(p, times, k=4, n=3)


def test_score_by_hand():
    seizures = [[100.0, 140.0], [1000.0, 1030.0], [2000.0, 2010.0]]
    events = [[104.0, 130.0], [500.0, 505.0], [1033.0, 1034.0], [3000.0, 3001.0]]
    s = detect.score(events, seizures, 3600.0, tolerance_s=5.0)
    assert (s["seizures"], s["detected"], s["false_alarms"]) == (3, 2, 2)
    assert s["sensitivity"] == pytest.approx(2 / 3)
    background_h = (3600 - (45 + 35 + 15)) / 3600
    assert s["background_hours"] == pytest.approx(background_h)
    assert s["fa_per_hour"] == pytest.approx(2 / background_h)
    assert s["latencies_s"] == [4.0, 33.0] and s["mean_latency_s"] == 18.5


# -- the trained network -----------------------------------------------------------------------------------
def test_trained_weights_ship_and_load(graph):
    assert graph.params == 19_682 and graph.input.shape == (23, 256)
    trained, random0 = zoo.float_net("eeg_mpcnn"), zoo.float_net("eeg_mpcnn", seed=0)
    w = {n.name: n.attrs["weight"] for n in trained.nodes if n.op in ("conv", "dense")}
    assert not np.array_equal(w["conv1"], random0.nodes[0].attrs["weight"])
    assert np.array_equal(w["fc2"], train_eeg.load_weights()["fc2_w"])
    calib = train_eeg.calibration()
    assert calib.shape == (train_eeg.N_CALIBRATION, 23, 256) and np.abs(calib).max() <= detect.CLIP
    assert zoo.build("eeg_mpcnn") is graph and zoo.build("eeg_mpcnn", seed=0) is not graph


def test_held_out_sensitivity_and_false_alarms(graph, held_out):
    """The done-when criterion on held-out SYNTHETIC data: >= 90 % sensitivity, <= 1 false alarm/hour."""
    r = detect.evaluate(graph, held_out)
    print(f"\nSYNTHETIC held-out ({r['hours']:.1f} h, {r['seizures']} seizures), int8 reference: "
          f"sensitivity {r['sensitivity']:.2f}, {r['false_alarms']} false alarms = {r['fa_per_hour']:.2f}/h, "
          f"latency mean {r['mean_latency_s']:.1f} s (max {r['max_latency_s']:.1f}), window sens/spec "
          f"{r['window_sensitivity']:.3f}/{r['window_specificity']:.3f}, {r['ms_per_window']:.2f} ms/window")
    assert r["synthetic"] and r["seizures"] == 20 and r["windows"] == 7200
    assert r["sensitivity"] >= 0.9
    assert r["fa_per_hour"] <= 1.0
    assert 0 < r["mean_latency_s"] <= 10


def test_int8_follows_float(graph, held_out):
    """Window decisions of the int8 graph against the float network it was quantised from."""
    x = detect.normalise(held_out.signal)
    starts = detect.window_starts(x.shape[1])[::8]
    w = detect.windows(x, starts)
    truth = detect.window_labels(held_out.seizures, starts, 256)
    f = zoo.float_net("eeg_mpcnn").run(w)["fc2"]
    pos_q, _ = detect.classify(graph, w)
    acc_f = ((f[:, 1] > f[:, 0]) == truth).mean()
    acc_q = (pos_q == truth).mean()
    assert (pos_q == (f[:, 1] > f[:, 0])).mean() >= 0.98
    assert abs(acc_f - acc_q) <= 0.01 and acc_q >= 0.9


# -- the same bytes on the accelerator ---------------------------------------------------------------------
def _seizure_windows(rec, count):
    """``count`` windows: the middle of each seizure in turn, then background before the first one."""
    x = detect.normalise(rec.signal)
    mids = [int((on + off) / 2 * 256) for on, off in rec.seizures]
    starts = (mids * count)[:count - 2] + [int(rec.seizures[0][0] * 256) - 256 * i for i in (5, 9)]
    return detect.windows(x, np.array(starts))


def test_accelerator_model_is_bit_exact(graph, held_out):
    from scalenet.driver.accelerator import open_target
    xq = quantize(_seizure_windows(held_out, 12), graph.input.q)
    acc = open_target("model")
    try:
        got = acc.run(acc.load(graph), xq)[graph.outputs[0]]
    finally:
        acc.close()
    ref = graph.run(xq)[graph.outputs[0]]
    assert got.dtype == np.int8 and np.array_equal(got, ref)
    assert (ref[:, 1] > ref[:, 0]).any() and (ref[:, 1] <= ref[:, 0]).any()   # both classes covered


def test_rtl_simulator_is_bit_exact(graph, held_out):
    from scalenet.driver.accelerator import open_target
    xq = quantize(_seizure_windows(held_out, 12)[[1, 10]], graph.input.q)     # a seizure, a background window
    acc = open_target("sim", progress=False)
    try:
        got = acc.run(acc.load(graph), xq)[graph.outputs[0]]
        cycles = acc.counters()["cycles"]
    finally:
        acc.close()
    assert np.array_equal(got, graph.run(xq)[graph.outputs[0]]) and cycles > 0


def test_scheduled_real_time_run(graph, held_out):
    from scalenet.eeg.realtime import run_realtime
    on = float(held_out.seizures[0][0])
    r = run_realtime(graph, held_out, target="zedboard", deadline_s=1.0, frames=4, start_s=on + 5)
    assert r["bit_exact"] and r["feasible"] and r["deadline_met"] and r["synthetic"]
    assert r["predicted_latency_s"] <= 1.0 and len(r["measured_latency_s"]) == 4
    assert sum(r["counts"].values()) == len(graph.layers)
    # weighting latency puts the convolutions and dense layers on the accelerator, the pools in software:
    # several accelerator segments interleaved with software ones, still bit-exact and in time
    fast = run_realtime(graph, held_out, deadline_s=1.0, frames=3, start_s=on + 5, weights={"latency": 1.0})
    assert fast["counts"]["accel"] > 0 and fast["counts"]["cpu"] > 0
    assert fast["bit_exact"] and fast["deadline_met"] and fast["predicted_latency_s"] < r["predicted_latency_s"]
    with pytest.raises(EEGError, match="frames"):
        run_realtime(graph, held_out, frames=0)


# -- EDF ---------------------------------------------------------------------------------------------------
def test_edf_round_trip(tmp_path):
    pyedflib = pytest.importorskip("pyedflib")
    from pyedflib import highlevel

    from scalenet.eeg.edf import load_edf
    rec = synth.generate(20, seed=5, n_seizures=0)
    sig = np.round(rec.signal.astype(np.float64) * 10) / 10               # on the 0.1 uV EDF grid below
    labels = ["EEG " + c.rsplit("-", 1)[0] if c.startswith("T8-P8") else c for c in synth.CHANNELS]
    headers = highlevel.make_signal_headers(labels, dimension="uV", sample_frequency=256,
                                            physical_min=-3276.8, physical_max=3276.7)
    headers[0]["dimension"] = "mV"                                         # one channel stored in mV
    sig_file = sig.copy()
    sig_file[0] /= 1000
    headers[0]["physical_min"], headers[0]["physical_max"] = -3.2768, 3.2767
    path = tmp_path / "rec.edf"
    assert highlevel.write_edf(str(path), list(sig_file), headers,
                               header={"annotations": [[4.0, 6.5, "Seizure"], [1.0, 0, "eyes closed"]]})
    got = load_edf(path, channels=synth.CHANNELS)
    assert got.signal.shape == (23, 20 * 256) and got.fs == 256 and not got.synthetic
    assert got.channels == synth.CHANNELS
    assert np.abs(got.signal - sig).max() <= 0.1 + 1e-4   # EDF stores 16-bit samples: one 0.1-uV step
    assert got.seizures.tolist() == [[4.0, 10.5]]
    assert load_edf(path).signal.shape == (23, 20 * 256)
    both = load_edf(path, ["t8-p8-1", "FP1-F7"], seizures=[[12, 15]])
    assert np.abs(both.signal - sig[[22, 0]]).max() <= 0.1 + 1e-4 and both.seizures.tolist() == [[4, 10.5], [12, 15]]
    with pytest.raises(EEGError, match="no channel 'CZ-OZ'"):
        load_edf(path, ["CZ-OZ"])
    with pytest.raises(EEGError, match="no EDF file"):
        load_edf(tmp_path / "missing.edf")
    (tmp_path / "junk.edf").write_bytes(b"not an edf file" * 20)
    with pytest.raises(EEGError, match="not a readable EDF"):
        load_edf(tmp_path / "junk.edf")
    assert pyedflib


def test_evaluate_rejects_other_rates(graph):
    rec = synth.generate(20, seed=1, n_seizures=0)
    rec.fs = 200
    with pytest.raises(EEGError, match="256 Hz"):
        detect.evaluate(graph, rec)


# -- the shared numpy trainer ------------------------------------------------------------------------------
def test_trainer_gradients_match_finite_differences():
    """The 1-D conv / pool / dense backward passes of the shared trainer, checked numerically (float64)."""
    net = zoo.float_net("eeg_mpcnn", lazy=True)
    chain = Chain(net)
    rng = np.random.default_rng(0)
    p = {k: rng.standard_normal(s) * 0.2 for k, s in param_shapes(net).items()}
    x = rng.standard_normal((3, 23, 256))
    y = np.array([0, 1, 1])
    _, g = chain.loss_and_grads(p, x, y)
    for key in ("conv1_w", "conv2_b", "conv3_w", "fc1_w", "fc2_b"):
        idx = tuple(rng.integers(0, s) for s in p[key].shape)
        old = p[key][idx]
        p[key][idx] = old + 1e-5
        lp = chain.loss_and_grads(p, x, y)[0]
        p[key][idx] = old - 1e-5
        lm = chain.loss_and_grads(p, x, y)[0]
        p[key][idx] = old
        assert g[key][idx] == pytest.approx((lp - lm) / 2e-5, rel=1e-4, abs=1e-8), key


def test_training_runs_and_matches_the_zoo_graph():
    x, y = train_eeg.make_dataset(seeds=(1, 2), recording_s=120, seizures=1, n_negative=128, n_positive=64)
    assert x.shape == (192, 23, 256) and y.sum() == 64 and not y[:128].any()
    w1, h1 = train_eeg.train(x, y, 3, batch=32)
    w2, h2 = train_eeg.train(x, y, 3, batch=32)
    assert h1 == h2 and all(np.array_equal(w1[k], w2[k]) for k in w1)     # seeded: repeatable
    assert h1[-1] < h1[0]
    # the trainer's forward pass is the zoo FloatNet's (the graph that gets quantised)
    ours = train_eeg.chain().predict(w1, x[:8])
    theirs = train_eeg.float_net(w1).run(x[:8])["fc2"]
    assert np.allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_training_reproduces_the_shipped_weights(tmp_path):
    """The script regenerates eeg_mpcnn.npz: same seeds, same weights (on this numpy/BLAS; a different BLAS
    may differ in the last bits, hence the tolerance). About 2-4 minutes."""
    out = tmp_path / "eeg.npz"
    assert train_eeg.main(["--output", str(out)]) == 0
    new, shipped = np.load(out), np.load(train_eeg.WEIGHTS_PATH)
    assert np.array_equal(new["calibration"], shipped["calibration"])
    for k in param_shapes(zoo.float_net("eeg_mpcnn", lazy=True)):
        np.testing.assert_allclose(new[k], shipped[k], rtol=0, atol=1e-3)
