"""EEG seizure detection with the zoo's ``eeg_mpcnn``: a documented SYNTHETIC EEG generator, windowing,
detection post-processing and metrics, real-time runs under the scheduler, and an EDF reader.

No public EEG recordings can be fetched where this package is built and tested, so training and the
reported figures use :mod:`scalenet.eeg.synth` (synthetic data, labelled as such everywhere); real
recordings (EDF, e.g. CHB-MIT) load through :func:`scalenet.eeg.edf.load_edf` (needs the ``eeg`` extra:
``pyedflib``). Submodules import on demand, so ``import scalenet.eeg`` is cheap:

- :mod:`.synth`: ``generate(duration_s, seed=...)`` -> :class:`~.synth.Recording`
- :mod:`.detect`: ``normalise``, ``windows``, ``alarms``, ``score``, ``evaluate(graph, recording)``
- :mod:`.realtime`: ``run_realtime(graph, recording, deadline_s=1.0)`` (scheduler + accelerator)
- :mod:`.edf`: ``load_edf(path, channels=None)``
"""

from scalenet.errors import ScalenetError

__all__ = ["EEGError"]


class EEGError(ScalenetError, ValueError):
    """Bad EEG input: wrong channel count or sampling rate, unknown channels, a recording too short..."""
