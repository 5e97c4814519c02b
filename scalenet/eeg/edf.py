"""Read real EEG recordings from EDF/EDF+ files (e.g. CHB-MIT) into a :class:`~.synth.Recording`.

Uses pyedflib (the optional ``eeg`` extra: ``pip install 'scalenet[eeg]'``); the rest of
:mod:`scalenet.eeg` does not need it. Signals are returned in microvolts (converted from the file's
physical dimension when it is mV or V). Channel labels are matched case-insensitively with a leading
``"EEG "`` removed; a label that occurs more than once (CHB-MIT's ``T8-P8``) is also reachable as
``NAME-0``, ``NAME-1``... in file order, the names :data:`scalenet.eeg.synth.CHANNELS` uses. Seizure
intervals come from the ``seizures`` argument (CHB-MIT keeps them in its summary files) and from EDF+
annotations whose text contains "seizure" and that have a duration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scalenet.errors import ScalenetError

from . import EEGError
from .synth import Recording

__all__ = ["load_edf", "EDFDependencyError"]

_UNITS = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6}


class EDFDependencyError(ScalenetError, ImportError):
    """pyedflib, needed to read EDF files, is not installed."""


def _pyedflib():
    try:
        import pyedflib
    except ImportError:
        raise EDFDependencyError("reading EDF files needs pyedflib: pip install 'scalenet[eeg]' "
                                 "(or pip install pyedflib)") from None
    return pyedflib


def _clean(label):
    label = label.strip().upper()
    return label[4:].strip() if label.startswith("EEG ") else label


def _names(labels):
    """Every name each signal answers to: its label, and NAME-i for repeated labels."""
    clean = [_clean(l) for l in labels]
    seen = {}
    out = {}
    for i, name in enumerate(clean):
        out.setdefault(name, i)
        if clean.count(name) > 1:
            out[f"{name}-{seen.get(name, 0)}"] = i
            seen[name] = seen.get(name, 0) + 1
    return out


def load_edf(path, channels=None, *, seizures=None) -> Recording:
    """Load ``channels`` (names; default: every signal in file order) of the EDF file at ``path``.

    All chosen channels must share one sampling rate. ``seizures``: (k, 2) onset/offset seconds to
    attach (added to any EDF+ seizure annotations)."""
    pyedflib = _pyedflib()
    path = Path(path)
    if not path.is_file():
        raise EEGError(f"no EDF file at {str(path)!r}")
    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as e:
        raise EEGError(f"{path.name} is not a readable EDF/EDF+ file: {e}") from None
    try:
        labels = reader.getSignalLabels()
        names = _names(labels)
        if channels is None:
            index = list(range(reader.signals_in_file))
            chosen = [_clean(l) for l in labels]
        else:
            if isinstance(channels, str):
                channels = [channels]
            missing = [c for c in channels if _clean(c) not in names]
            if missing:
                raise EEGError(f"{path.name} has no channel {', '.join(map(repr, missing))}; it has "
                               f"{', '.join(labels)}")
            index = [names[_clean(c)] for c in channels]
            chosen = [str(c) for c in channels]
        rates = {float(reader.getSampleFrequency(i)) for i in index}
        if len(rates) != 1:
            raise EEGError(f"{path.name}: the chosen channels have different sampling rates {sorted(rates)}")
        fs = rates.pop()
        signal = np.empty((len(index), reader.getNSamples()[index[0]]), np.float32)
        for row, i in enumerate(index):
            unit = reader.getPhysicalDimension(i).strip().lower()
            factor = _UNITS.get(unit, 1.0)
            data = reader.readSignal(i)
            if len(data) != signal.shape[1]:
                raise EEGError(f"{path.name}: channel {labels[i]} has {len(data)} samples, "
                               f"{labels[index[0]]} has {signal.shape[1]}")
            signal[row] = data * factor
        intervals = []
        onsets, durations, texts = reader.readAnnotations()
        for on, dur, text in zip(onsets, durations, texts):
            if "seizure" in str(text).lower() and dur > 0:
                intervals.append((float(on), float(on + dur)))
    finally:
        reader.close()
    if seizures is not None:
        given = np.asarray(seizures, float).reshape(-1, 2)
        if np.any(given[:, 1] <= given[:, 0]):
            raise EEGError("every seizure interval must end after it starts")
        intervals += [tuple(r) for r in given]
    sz = np.array(sorted(intervals), float).reshape(-1, 2)
    return Recording(signal, int(fs) if float(fs).is_integer() else fs, tuple(chosen), sz, [],
                     synthetic=False, meta={"source": str(path), "labels": list(labels)})
