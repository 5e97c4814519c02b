"""Seizure detection on a recording: normalisation, 1-s windows, the int8 network, alarms and metrics.

The pipeline (the same normalisation is used in training, :mod:`scalenet.zoo.train_eeg`):

1. :func:`normalise`: per channel, subtract the median and divide by the quiet-background level (the
   10th percentile of the per-second standard deviations over the recording, or scales given by the
   caller, e.g. from a calibration period when streaming), then clip to +-``CLIP``: amplitudes become
   "background sigmas", comparable across recordings and montages, and artefacts cannot blow up the
   int8 input range.
2. :func:`windows`: 1-s windows (256 samples at 256 Hz), hop configurable (default 1 s).
3. :func:`classify`: the quantised network on the int8 windows (:meth:`Graph.run`, batched, or any
   ``runner`` giving the same int8 logits, e.g. the accelerator); a window is positive when its seizure
   logit is strictly larger than its background logit.
4. :func:`alarms`: an alarm fires when ``k`` of the last ``n`` windows are positive (default 4 of 6,
   chosen on synthetic tuning recordings that are neither training nor evaluation data) (at the end time of
   the window that completes the count: the moment the data exists); an alarm lasts while the k-of-n
   condition holds, and a new rising edge within ``merge_s`` of the previous alarm's end extends that alarm.
5. :func:`score`: an alarm whose time falls within [onset, offset + ``tolerance_s``] of a seizure detects
   it (sensitivity = detected seizures / seizures; latency = first such alarm time - onset); any other
   alarm is a false alarm, counted per hour of non-seizure time (the recording minus the seizures'
   [onset, offset + tolerance] intervals).
"""

from __future__ import annotations

import time

import numpy as np

from . import EEGError

__all__ = ["WINDOW", "CLIP", "K", "N", "robust_scale", "normalise", "window_starts", "windows", "window_labels",
           "classify", "alarms", "score", "evaluate"]

WINDOW = 256            #: samples per window (1 s at 256 Hz)
CLIP = 8.0              #: normalised amplitudes are clipped to +-CLIP robust sigmas
CHANNELS = 23           #: the network's input channels
K, N = 4, 6              #: alarm when K of the last N windows are positive (chosen on tuning seeds 1200-1205)
QUIET_PERCENTILE = 10   #: the background level is this percentile of the per-window standard deviations


def _check_signal(signal):
    x = np.asarray(signal)
    if x.ndim != 2 or x.shape[0] != CHANNELS:
        raise EEGError(f"EEG signal must be (23 channels, samples), got shape {x.shape}")
    if x.shape[1] < WINDOW:
        raise EEGError(f"EEG signal has {x.shape[1]} samples, fewer than one {WINDOW}-sample window")
    if not np.all(np.isfinite(x[:, ::97])) or not np.all(np.isfinite(x[:, -1])):
        raise EEGError("EEG signal contains NaN or infinite values")
    return x


def robust_scale(signal, step=4, percentile=QUIET_PERCENTILE):
    """Per-channel (median, background sigma): the median of every ``step``-th sample, and the
    ``percentile``-th percentile of the channel's standard deviation over the 1-s windows (the level of
    the quiet background: unmoved by seizures, artefacts or alpha as long as they fill fewer windows). A
    flat channel gets sigma 1."""
    x = _check_signal(signal)
    med = np.median(x[:, ::step], axis=1).astype(np.float32)
    n = x.shape[1] // WINDOW
    if n < 1:
        raise EEGError(f"EEG signal has {x.shape[1]} samples, fewer than one {WINDOW}-sample window")
    sd = x[:, :n * WINDOW].reshape(x.shape[0], n, WINDOW)[:, :, ::step].std(axis=2)
    sigma = np.percentile(sd, percentile, axis=1)
    return med, np.where(sigma > 0, sigma, 1.0).astype(np.float32)


def normalise(signal, scale=None, clip=CLIP):
    """float32 (23, samples): (signal - median) / sigma clipped to +-clip; ``scale`` = (median, sigma)
    per channel (default: :func:`robust_scale` of this signal)."""
    x = _check_signal(signal)
    med, sigma = robust_scale(x) if scale is None else (np.asarray(s, np.float32) for s in scale)
    out = (x.astype(np.float32) - med[:, None]) / sigma[:, None]
    return np.clip(out, -clip, clip, out=out)


def window_starts(n_samples, hop=WINDOW, length=WINDOW):
    """Start samples of the windows that fit in ``n_samples`` (hop and length in samples)."""
    if hop < 1:
        raise EEGError(f"window hop must be at least one sample, not {hop}")
    return np.arange(0, n_samples - length + 1, int(hop))


def windows(x, starts, length=WINDOW):
    """(len(starts), channels, length) float32 copies of the windows of ``x`` at ``starts``."""
    view = np.lib.stride_tricks.sliding_window_view(x, length, axis=1)      # C, positions, length
    return np.ascontiguousarray(view[:, starts].transpose(1, 0, 2))


def window_labels(seizures, starts, fs, length=WINDOW, min_fraction=0.5):
    """True for windows with at least ``min_fraction`` of their samples inside a seizure interval."""
    inside = np.zeros(len(starts))
    for on, off in np.asarray(seizures).reshape(-1, 2):
        lo = np.maximum(starts, on * fs)
        hi = np.minimum(starts + length, off * fs)
        inside += np.clip(hi - lo, 0, None)
    return inside >= min_fraction * length


def classify(graph, x, *, batch=512, runner=None):
    """Quantise normalised windows to the graph's input and run them: (positive mask, int8 logits).
    ``runner(xq)`` -> logits replaces :meth:`Graph.run` (e.g. an accelerator's run)."""
    from scalenet.quant import quantize
    out = graph.outputs[0]
    logits = []
    for i in range(0, len(x), batch):
        xq = quantize(x[i:i + batch], graph.input.q)
        logits.append(runner(xq) if runner is not None else graph.run(xq)[out])
    y = np.concatenate(logits) if logits else np.zeros((0, 2), np.int8)
    return y[:, 1] > y[:, 0], y


def alarms(positive, times, *, k=K, n=N, merge_s=10.0):
    """Alarm events from per-window decisions: (m, 2) float array of (alarm time, end time) in seconds.

    ``times`` are the windows' end times (when each decision can be made)."""
    if not 1 <= k <= n:
        raise EEGError(f"k-of-n post-processing needs 1 <= k <= n, got k={k}, n={n}")
    p = np.asarray(positive, bool)
    times = np.asarray(times, float)
    count = np.convolve(p.astype(int), np.ones(n, int))[:len(p)]   # positives among the last n windows
    on = count >= k
    events = []
    i = 0
    while i < len(on):
        if on[i]:
            j = i
            while j + 1 < len(on) and on[j + 1]:
                j += 1
            if events and times[i] - events[-1][1] <= merge_s:
                events[-1][1] = times[j]
            else:
                events.append([times[i], times[j]])
            i = j + 1
        else:
            i += 1
    return np.array(events, float).reshape(-1, 2)


def score(alarm_events, seizures, duration_s, *, tolerance_s=5.0):
    """Sensitivity, false alarms per hour and latencies of ``alarm_events`` against ``seizures``."""
    seizures = np.asarray(seizures, float).reshape(-1, 2)
    ev = np.asarray(alarm_events, float).reshape(-1, 2)
    latencies, detected, false = [], 0, 0
    for on, off in seizures:
        hit = ev[(ev[:, 0] >= on) & (ev[:, 0] <= off + tolerance_s), 0]
        if len(hit):
            detected += 1
            latencies.append(float(hit.min() - on))
    for t in ev[:, 0]:
        if not np.any((t >= seizures[:, 0]) & (t <= seizures[:, 1] + tolerance_s)):
            false += 1
    seizure_s = float(np.sum(np.minimum(seizures[:, 1] + tolerance_s, duration_s) - seizures[:, 0]))
    background_h = max(duration_s - seizure_s, 0.0) / 3600
    return {
        "seizures": int(len(seizures)), "detected": detected,
        "sensitivity": detected / len(seizures) if len(seizures) else float("nan"),
        "false_alarms": false, "background_hours": background_h,
        "fa_per_hour": false / background_h if background_h > 0 else float("nan"),
        "latencies_s": latencies,
        "mean_latency_s": float(np.mean(latencies)) if latencies else float("nan"),
        "median_latency_s": float(np.median(latencies)) if latencies else float("nan"),
        "max_latency_s": float(np.max(latencies)) if latencies else float("nan"),
    }


def evaluate(graph, recording, *, hop_s=1.0, k=K, n=N, merge_s=10.0, tolerance_s=5.0, batch=512,
             runner=None, scale=None) -> dict:
    """Run ``graph`` (the int8 ``eeg_mpcnn``) over a whole recording and score its alarms.

    Returns sensitivity, false alarms per hour, detection latencies (seconds from onset to alarm, the
    alarm being stamped at the end of the window that completes the k-of-n count), window-level
    sensitivity/specificity, the alarm events, and the inference time. ``synthetic`` says whether the
    recording was synthetic: figures on synthetic data must be reported as such."""
    if recording.fs != 256:
        raise EEGError(f"the detector runs on 256 Hz EEG; this recording is sampled at {recording.fs} Hz "
                       "(resample it first)")
    if tuple(graph.input.shape) != (CHANNELS, WINDOW):
        raise EEGError(f"graph {graph.name} takes {graph.input.shape}, not (23, 256) EEG windows")
    hop = int(round(hop_s * recording.fs))
    x = normalise(recording.signal, scale)
    starts = window_starts(x.shape[1], hop)
    t0 = time.perf_counter()
    positive, logits = classify(graph, windows(x, starts), batch=batch, runner=runner)
    infer_s = time.perf_counter() - t0
    ends = (starts + WINDOW) / recording.fs
    events = alarms(positive, ends, k=k, n=n, merge_s=merge_s)
    result = score(events, recording.seizures, recording.duration_s, tolerance_s=tolerance_s)
    truth = window_labels(recording.seizures, starts, recording.fs)
    result.update({
        "synthetic": bool(getattr(recording, "synthetic", False)),
        "hours": recording.duration_s / 3600, "windows": int(len(starts)),
        "window_sensitivity": float(positive[truth].mean()) if truth.any() else float("nan"),
        "window_specificity": float((~positive[~truth]).mean()) if (~truth).any() else float("nan"),
        "alarms": events.tolist(), "inference_s": infer_s,
        "ms_per_window": 1e3 * infer_s / max(len(starts), 1),
        "post_processing": {"k": k, "n": n, "hop_s": hop / recording.fs, "merge_s": merge_s,
                            "tolerance_s": tolerance_s},
    })
    return result
