"""A documented, seeded generator of SYNTHETIC multichannel scalp EEG with seizure-like discharges.

Why synthetic: no public EEG recording can be fetched where SCALENet is built and tested, and no pip
package ships one. Every number this module produces is synthetic, and every figure computed from it
must say so (``Recording.synthetic`` is True). Real recordings load through :mod:`scalenet.eeg.edf`.

The model (all amplitudes in microvolts; parameters in :class:`SynthParams`, defaults in brackets):

- **Montage.** 21 scalp electrodes of the 10-20 system (plus FT9/FT10) on a unit-radius 2-D head map
  (:data:`ELECTRODES`), read as the 23 bipolar derivations of the CHB-MIT montage (:data:`CHANNELS`,
  T8-P8 twice as in those files) at 256 Hz. Every source is simulated at the electrodes and projected
  through the bipolar matrix, so neighbouring channels share sources the way real bipolar EEG does
  (P7-T7 = -(T7-P7); a field wider than two electrodes partly cancels).
- **Background.** Per electrode, 1/f^alpha noise [alpha 1.0, pink] between 0.5 Hz and 70 Hz, spatially
  correlated with covariance exp(-distance/lambda) [lambda 0.6 head radii] (Cholesky mixing, the same
  spectrum at every electrode), an RMS of ``background_uv`` [25] scaled per electrode by U(0.8, 1.2) and
  per recording by U(0.8, 1.25), plus white amplifier noise [1.5 RMS].
- **Alpha bursts** [6 per minute]: 8-12 Hz sinusoids under a Hann envelope of 1-6 s, 8-30 uV, strongest
  over the occipital electrodes (weight exp(-(y + 0.95)^2 / 0.25)).
- **Artefacts** (so that false alarms are a real risk):
  eye blinks [10/min; 15 % doubled] - a 0.2-0.45 s positive half-cosine of 60-250 uV at FP1/FP2,
  attenuated frontally; lateral eye movements [3/min] - a smooth 0.3-2 s plateau of 30-100 uV, opposite
  polarity at F7 and F8; muscle bursts [2/min] - 0.5-5 s of 20-90 Hz band-limited noise (5-50 uV RMS),
  independent per electrode, over one or both temporal regions; chewing [0.4/min] - 3-15 s of muscle
  bursts of 0.1-0.25 s repeating at 1-2 Hz, bilateral temporal, 20-80 uV RMS (rhythmic, the hardest
  false-alarm source); electrode pops [0.3/min] - a step of 50-300 uV on one electrode decaying with a
  0.2-1 s time constant.
- **Seizures** [10 per hour unless ``n_seizures`` is given]: 10-60 s of rhythmic spike-and-wave
  discharges. The discharge frequency evolves linearly from U(3.5, 4.5) Hz at onset to U(2.5, 3.2) Hz at
  offset (with a slow random wobble); each cycle is a sharp negative spike (sigma 0.045 cycle, about
  15 ms at 3 Hz) followed by a positive slow wave (sigma 0.17 cycle, peak at 0.45 cycle), per-cycle
  amplitude jitter 15 %, peak amplitude U(80, 250) uV. The envelope ramps up over 2-6 s after onset
  (raised cosine) and down over 1-3 s before offset. Half the seizures [``p_focal`` 0.5] are focal: a
  Gaussian field of sigma U(0.25, 0.5) head radii around a random electrode; the others generalised:
  every electrode at U(0.3, 1.0) of the peak with a frontal emphasis, amplitude x1.5. Each electrode
  lags by its distance from the focus (or from CZ) times U(10, 60) ms per head radius (propagation).
  Seizures do not overlap, are >= 30 s apart and >= 10 s from the ends; the label is the whole
  interval from onset to offset, ramps included.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``: the same (duration, seed,
n_seizures, params) gives the same recording on the same numpy.

>>> rec = generate(600, seed=1, n_seizures=3)      # 10 minutes, (23, 153600) float32 uV
>>> rec.seizures                                    # (3, 2) onset/offset in seconds
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import EEGError

__all__ = ["FS", "CHANNELS", "ELECTRODES", "SynthParams", "Recording", "generate", "bipolar_matrix"]

FS = 256
"""Sampling rate (Hz) of the generator and of the detector's windows (CHB-MIT's rate)."""

ELECTRODES = {  # unit-radius head map, x to the right ear, y to the nose
    "FP1": (-0.31, 0.95), "FP2": (0.31, 0.95), "F7": (-0.81, 0.59), "F3": (-0.40, 0.52), "FZ": (0.0, 0.45),
    "F4": (0.40, 0.52), "F8": (0.81, 0.59), "FT9": (-1.05, 0.30), "FT10": (1.05, 0.30), "T7": (-1.0, 0.0),
    "C3": (-0.5, 0.0), "CZ": (0.0, 0.0), "C4": (0.5, 0.0), "T8": (1.0, 0.0), "P7": (-0.81, -0.59),
    "P3": (-0.40, -0.52), "PZ": (0.0, -0.45), "P4": (0.40, -0.52), "P8": (0.81, -0.59), "O1": (-0.31, -0.95),
    "O2": (0.31, -0.95),
}

CHANNELS = (  # the 23 bipolar derivations of CHB-MIT, in its order (T8-P8 appears twice there)
    "FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4", "F4-C4", "C4-P4",
    "P4-O2", "FP2-F8", "F8-T8", "T8-P8-0", "P8-O2", "FZ-CZ", "CZ-PZ", "P7-T7", "T7-FT9", "FT9-FT10",
    "FT10-T8", "T8-P8-1",
)

_NAMES = list(ELECTRODES)
_POS = np.array([ELECTRODES[e] for e in _NAMES])
_DIST = np.linalg.norm(_POS[:, None] - _POS[None], axis=-1)
_TEMPORAL = {"left": ("T7", "FT9", "F7", "P7"), "right": ("T8", "FT10", "F8", "P8")}


def bipolar_matrix() -> np.ndarray:
    """(23, 21) float32: channel = electrode A - electrode B for each name "A-B" of :data:`CHANNELS`."""
    b = np.zeros((len(CHANNELS), len(_NAMES)), np.float32)
    for i, ch in enumerate(CHANNELS):
        a, c = ch.split("-")[:2]
        b[i, _NAMES.index(a)], b[i, _NAMES.index(c)] = 1, -1
    return b


_B = bipolar_matrix()


@dataclass(frozen=True)
class SynthParams:
    """The generator's parameters (see the module docstring for the model they drive)."""

    background_uv: float = 25.0            #: electrode background RMS (uV)
    pink_exponent: float = 1.0             #: power spectrum ~ 1/f**pink_exponent
    band_hz: tuple = (0.5, 70.0)          #: background band
    spatial_length: float = 0.6            #: correlation length of the background (head radii)
    amplifier_uv: float = 1.5              #: white noise per channel (uV RMS)
    alpha_per_min: float = 6.0
    blinks_per_min: float = 10.0
    eye_moves_per_min: float = 3.0
    muscle_per_min: float = 2.0
    chewing_per_min: float = 0.4
    pops_per_min: float = 0.3
    seizures_per_hour: float = 10.0        #: used when n_seizures is None
    seizure_s: tuple = (10.0, 60.0)        #: duration range
    seizure_uv: tuple = (80.0, 250.0)      #: peak electrode amplitude range
    p_focal: float = 0.5                   #: probability that a seizure is focal (else generalised)

    def scaled(self, **changes) -> "SynthParams":
        return SynthParams(**{**asdict(self), **changes})


@dataclass
class Recording:
    """A multichannel EEG recording: ``signal`` (channels, samples) float32 in uV at ``fs`` Hz, seizure
    intervals in seconds, the simulated events (synthetic recordings) and provenance."""

    signal: np.ndarray
    fs: int
    channels: tuple
    seizures: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))   #: (k, 2) onset, offset (s)
    events: list = field(default_factory=list)      #: (kind, start s, end s) of simulated events
    synthetic: bool = True
    meta: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs

    def labels(self) -> np.ndarray:
        """Per-sample seizure label (bool, samples)."""
        lab = np.zeros(self.signal.shape[1], bool)
        for on, off in self.seizures:
            lab[int(round(on * self.fs)):int(round(off * self.fs))] = True
        return lab


# -- building blocks ---------------------------------------------------------------------------------------
def _colored(rng, n, fs, exponent, band, size=1):
    """(size, n) float32 noise with power ~ 1/f**exponent inside ``band``, unit RMS per row."""
    f = np.fft.rfftfreq(n, 1 / fs)
    shape = np.zeros_like(f)
    inside = (f >= band[0]) & (f <= band[1])
    shape[inside] = f[inside] ** (-exponent / 2)
    out = np.empty((size, n), np.float32)
    for i in range(size):
        spec = (rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))) * shape
        x = np.fft.irfft(spec, n)
        out[i] = x / x.std()
    return out


def _bandnoise(rng, rows, n, fs, lo, hi):
    """(rows, n) independent band-limited white noise, unit RMS per row."""
    n_fft = max(n, 16)
    f = np.fft.rfftfreq(n_fft, 1 / fs)
    mask = (f >= lo) & (f <= hi)
    spec = (rng.standard_normal((rows, len(f))) + 1j * rng.standard_normal((rows, len(f)))) * mask
    x = np.fft.irfft(spec, n_fft, axis=1)[:, :n]
    return (x / (x.std(axis=1, keepdims=True) + 1e-12)).astype(np.float32)


def _weights(names, value=1.0):
    w = np.zeros(len(_NAMES))
    for name in names:
        w[_NAMES.index(name)] = value
    return w


def _raised_cosine_env(n, rise, fall):
    env = np.ones(n)
    if rise > 0:
        env[:rise] = 0.5 - 0.5 * np.cos(np.pi * np.arange(rise) / rise)
    if fall > 0:
        env[n - fall:] = np.minimum(env[n - fall:], 0.5 + 0.5 * np.cos(np.pi * np.arange(fall) / fall))
    return env


class _Canvas:
    """The bipolar signal being built; events are added as electrode-level patterns."""

    def __init__(self, signal, fs, rng):
        self.x, self.fs, self.rng = signal, fs, rng
        self.n = signal.shape[1]
        self.events = []

    def add_coherent(self, kind, t0, weights, waveform):
        """One waveform on every electrode times ``weights`` (21,), starting at ``t0``."""
        s0 = max(0, int(round(t0 * self.fs)))
        s1 = min(self.n, s0 + len(waveform))
        if s1 <= s0:
            return
        self.x[:, s0:s1] += np.outer(_B @ weights, waveform[:s1 - s0]).astype(np.float32)
        self.events.append((kind, s0 / self.fs, s1 / self.fs))

    def add_electrodes(self, kind, t0, e):
        """An electrode-level pattern ``e`` (21, m) starting at ``t0``."""
        s0 = max(0, int(round(t0 * self.fs)))
        s1 = min(self.n, s0 + e.shape[1])
        if s1 <= s0:
            return
        self.x[:, s0:s1] += (_B @ e[:, :s1 - s0]).astype(np.float32)
        self.events.append((kind, s0 / self.fs, s1 / self.fs))


def _poisson_times(rng, per_min, duration_s):
    k = rng.poisson(per_min * duration_s / 60.0)
    return np.sort(rng.uniform(0, duration_s, k))


# -- events ------------------------------------------------------------------------------------------------
def _alpha(c, rng, t, gain):
    fs = c.fs
    dur = rng.uniform(1, 6)
    m = int(dur * fs)
    f = rng.uniform(8, 12) + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * np.arange(m) / fs)
    wave = np.sin(2 * np.pi * np.cumsum(f) / fs + rng.uniform(0, 2 * np.pi)) * np.hanning(m)
    w = np.exp(-(_POS[:, 1] + 0.95) ** 2 / 0.25) * rng.uniform(0.8, 1.2, len(_NAMES))
    c.add_coherent("alpha", t, w * rng.uniform(8, 30) * gain, wave)


def _blink(c, rng, t):
    fs = c.fs
    dur = rng.uniform(0.2, 0.45)
    m = int(dur * fs)
    wave = np.sin(np.pi * np.arange(m) / m)
    w = _weights(("FP1", "FP2"), 1.0) + _weights(("F7", "F8", "F3", "F4"), 0.35) + _weights(("FZ",), 0.3) \
        + _weights(("FT9", "FT10", "C3", "C4", "CZ"), 0.08)
    amp = rng.uniform(60, 250)
    c.add_coherent("blink", t, w * amp * rng.uniform(0.85, 1.15, len(_NAMES)), wave)
    if rng.random() < 0.15:         # a double blink
        c.add_coherent("blink", t + dur + rng.uniform(0.05, 0.3), w * amp * rng.uniform(0.6, 1.0), wave)


def _eye_move(c, rng, t):
    fs = c.fs
    dur = rng.uniform(0.3, 2.0)
    m = int(dur * fs)
    edge = max(2, int(rng.uniform(0.03, 0.08) * fs))
    wave = _raised_cosine_env(m, edge, edge)
    sign = rng.choice((-1.0, 1.0))
    w = sign * (_weights(("F7",), 1.0) - _weights(("F8",), 1.0) + _weights(("FP1", "T7", "FT9"), 0.4)
                - _weights(("FP2", "T8", "FT10"), 0.4))
    c.add_coherent("eye_move", t, w * rng.uniform(30, 100), wave)


def _muscle(c, rng, t, kind="muscle", dur=None, amp=None, sides=None):
    fs = c.fs
    dur = rng.uniform(0.5, 5.0) if dur is None else dur
    m = max(8, int(dur * fs))
    sides = sides or (("left",), ("right",), ("left", "right"))[rng.integers(3)]
    names = [e for s in sides for e in _TEMPORAL[s]]
    w = _weights(names, 1.0)
    e = np.zeros((len(_NAMES), m))
    idx = np.flatnonzero(w)
    amp = rng.uniform(5, 50) if amp is None else amp
    noise = _bandnoise(rng, len(idx), m, fs, 20, 90)
    env = _raised_cosine_env(m, m // 6, m // 6)
    e[idx] = noise * env * amp * rng.uniform(0.5, 1.0, (len(idx), 1))
    c.add_electrodes(kind, t, e)


def _chewing(c, rng, t):
    dur = rng.uniform(3, 15)
    rate = rng.uniform(1.0, 2.0)
    amp = rng.uniform(20, 80)
    start = len(c.events)
    k = 0.0
    while k < dur:
        _muscle(c, rng, t + k, "chewing", dur=rng.uniform(0.1, 0.25), amp=amp * rng.uniform(0.7, 1.2),
                sides=("left", "right"))
        k += 1 / rate * rng.uniform(0.9, 1.1)
    if len(c.events) > start:        # one event for the whole episode
        del c.events[start:]
        c.events.append(("chewing", t, min(t + dur, c.n / c.fs)))


def _pop(c, rng, t):
    fs = c.fs
    tau = rng.uniform(0.2, 1.0)
    m = int(5 * tau * fs)
    e = np.zeros((len(_NAMES), m))
    e[rng.integers(len(_NAMES))] = rng.choice((-1, 1)) * rng.uniform(50, 300) * np.exp(-np.arange(m) / (tau * fs))
    c.add_electrodes("pop", t, e)


def _spike_wave(phase):
    """The spike-and-wave cycle as a function of phase in cycles (zero mean over a cycle)."""
    u = np.mod(phase, 1.0)
    ds = (u + 0.5) % 1.0 - 0.5
    dw = (u - 0.45 + 0.5) % 1.0 - 0.5
    spike = -np.exp(-0.5 * (ds / 0.045) ** 2)
    wave = 0.55 * np.exp(-0.5 * (dw / 0.17) ** 2)
    return spike + wave - (-0.045 + 0.55 * 0.17) * np.sqrt(2 * np.pi)


def _seizure(c, rng, onset, dur, params):
    fs = c.fs
    m = int(round(dur * fs))
    t = np.arange(m) / fs
    f0, f1 = rng.uniform(3.5, 4.5), rng.uniform(2.5, 3.2)
    freq = f0 + (f1 - f0) * t / dur + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6.3))
    phase = np.cumsum(freq) / fs + rng.uniform(0, 1)
    env = _raised_cosine_env(m, int(rng.uniform(2, 6) * fs), int(rng.uniform(1, 3) * fs))
    jitter = 1 + 0.15 * rng.standard_normal(int(phase[-1]) + 2)
    amp = rng.uniform(*params.seizure_uv)
    focal = rng.random() < params.p_focal
    if focal:
        focus = rng.integers(len(_NAMES))
        d = _DIST[focus]
        gain = np.exp(-0.5 * (d / rng.uniform(0.25, 0.5)) ** 2)
    else:
        d = _DIST[_NAMES.index("CZ")]
        gain = rng.uniform(0.3, 1.0, len(_NAMES)) * (0.75 + 0.25 * _POS[:, 1]) * 1.5
    lag = d * rng.uniform(0.01, 0.06)              # seconds per electrode
    e = np.zeros((len(_NAMES), m))
    for i in np.flatnonzero(gain > 0.02):
        ph = np.interp(t - lag[i], t, phase, left=phase[0])
        e[i] = gain[i] * _spike_wave(ph) * jitter[ph.astype(int)]
    e *= amp * env
    c.add_electrodes("seizure", onset, e)
    return {"onset_s": float(onset), "offset_s": float(onset + m / fs), "focal": bool(focal), "peak_uv": float(amp),
            "f_start_hz": float(f0), "f_end_hz": float(f1),
            "focus": _NAMES[focus] if focal else None}


def _place_seizures(rng, k, duration_s, params):
    lo, hi = params.seizure_s
    for _ in range(200):
        durs = rng.uniform(lo, hi, k)
        free = duration_s - 20 - durs.sum() - 30 * max(k - 1, 0)
        if free < 0:
            break
        gaps = np.diff(np.concatenate([[0], np.sort(rng.uniform(0, free, k)), [free]]))
        onsets, t = [], 10.0
        for i in range(k):
            t += gaps[i]
            onsets.append(t)
            t += durs[i] + 30
        return np.array(onsets), durs
    raise EEGError(f"{k} seizures of {lo:g}-{hi:g} s do not fit into {duration_s:g} s "
                   "(they need 30 s gaps and 10 s margins)")


def generate(duration_s, *, seed=0, n_seizures=None, params: SynthParams | None = None, fs=FS) -> Recording:
    """A SYNTHETIC recording of ``duration_s`` seconds (23 bipolar channels at ``fs`` Hz, float32 uV).

    ``n_seizures`` defaults to a Poisson draw at ``params.seizures_per_hour``; 0 gives background and
    artefacts only. See the module docstring for the model."""
    params = params or SynthParams()
    if not duration_s >= 10:
        raise EEGError(f"a synthetic recording must last at least 10 s, not {duration_s!r}")
    if n_seizures is not None and (int(n_seizures) != n_seizures or n_seizures < 0):
        raise EEGError(f"n_seizures must be a non-negative integer, not {n_seizures!r}")
    rng = np.random.default_rng([int(seed), 0xEE6])
    n = int(round(duration_s * fs))
    level = params.background_uv * rng.uniform(0.8, 1.25)
    gain = rng.uniform(0.8, 1.2, len(_NAMES))
    chol = np.linalg.cholesky(np.exp(-_DIST / params.spatial_length))
    mix = (_B @ (gain[:, None] * chol) * level).astype(np.float32)
    pink = _colored(rng, n, fs, params.pink_exponent, params.band_hz, size=len(_NAMES))
    signal = np.empty((len(CHANNELS), n), np.float32)
    step = 1 << 18
    for s in range(0, n, step):
        signal[:, s:s + step] = mix @ pink[:, s:s + step]
    del pink
    for s in range(0, n, step):
        m = min(step, n - s)
        signal[:, s:s + m] += rng.standard_normal((len(CHANNELS), m), dtype=np.float32) * params.amplifier_uv

    canvas = _Canvas(signal, fs, rng)
    alpha_gain = rng.uniform(0.5, 1.5)
    rate = lambda r: r * rng.uniform(0.5, 1.5)  # noqa: E731 - per-recording artefact rates
    for t in _poisson_times(rng, rate(params.alpha_per_min), duration_s):
        _alpha(canvas, rng, t, alpha_gain)
    for t in _poisson_times(rng, rate(params.blinks_per_min), duration_s):
        _blink(canvas, rng, t)
    for t in _poisson_times(rng, rate(params.eye_moves_per_min), duration_s):
        _eye_move(canvas, rng, t)
    for t in _poisson_times(rng, rate(params.muscle_per_min), duration_s):
        _muscle(canvas, rng, t)
    for t in _poisson_times(rng, rate(params.chewing_per_min), duration_s):
        _chewing(canvas, rng, t)
    for t in _poisson_times(rng, rate(params.pops_per_min), duration_s):
        _pop(canvas, rng, t)

    k = rng.poisson(params.seizures_per_hour * duration_s / 3600) if n_seizures is None else int(n_seizures)
    info = []
    if k:
        onsets, durs = _place_seizures(rng, k, duration_s, params)
        info = [_seizure(canvas, rng, on, d, params) for on, d in zip(onsets, durs)]
    seizures = np.array([[s["onset_s"], s["offset_s"]] for s in info]).reshape(-1, 2)
    events = sorted(canvas.events, key=lambda e: e[1])
    return Recording(signal, fs, CHANNELS, seizures, events, synthetic=True,
                     meta={"generator": "scalenet.eeg.synth", "seed": int(seed), "params": asdict(params),
                           "seizure_info": info, "synthetic": True})
