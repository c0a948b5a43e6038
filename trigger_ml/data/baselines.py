"""Trivial-cut baselines scored on the same events as an anomaly score: HT, MET, lepton and object counts.

A trigger physicist asks first whether a learned anomaly score beats simple cuts. Each baseline
is a per-event score computed from the ADC2021 ``Particles`` array ((n, 19, 4): MET, 4 e/gamma,
4 muons, 10 jets; an object is present when its pT > 0), "higher = more anomalous", so it can be
fed to the same metrics (:func:`trigger_ml.core.metrics.signal_metrics`) as the model:

* ``ht``        - scalar sum of the pT of all jets in the event record [GeV];
* ``met``       - missing transverse momentum [GeV];
* ``n_leptons`` - number of e/gamma candidates plus muons;
* ``n_objects`` - number of e/gamma, muons and jets.

The counts are integers: their ROC curves have few points, so a TPR at a tiny FPR is that of
the loosest count cut whose background FPR does not exceed the target (often 0 events pass),
exactly as :func:`trigger_ml.core.metrics.tpr_at_fpr` defines it - no interpolation.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from trigger_ml.core.errors import ConfigError
from trigger_ml.data.adc2021 import OBJECT_SLICES, iter_chunks


def _pt(events: np.ndarray, kind: str) -> np.ndarray:
    return events[:, OBJECT_SLICES[kind], 0]


def ht(events: np.ndarray) -> np.ndarray:
    """Scalar sum of the jet pT per event [GeV]."""
    return _pt(events, "jet").sum(1, dtype=np.float64)


def met(events: np.ndarray) -> np.ndarray:
    """Missing transverse momentum per event [GeV]."""
    return events[:, 0, 0].astype(np.float64)


def n_leptons(events: np.ndarray) -> np.ndarray:
    """Number of e/gamma candidates plus muons per event."""
    return ((_pt(events, "egamma") > 0).sum(1) + (_pt(events, "muon") > 0).sum(1)).astype(np.float64)


def n_objects(events: np.ndarray) -> np.ndarray:
    """Number of e/gamma candidates, muons and jets per event."""
    return (events[:, 1:, 0] > 0).sum(1).astype(np.float64)


#: baseline name -> score function of a (n, 19, 4) events array
BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ht": ht, "met": met, "n_leptons": n_leptons, "n_objects": n_objects,
}


def _check(names) -> list[str]:
    names = list(BASELINES) if names is None else list(names)
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise ConfigError(f"unknown baseline {bad[0]!r}; choose from {', '.join(BASELINES)}")
    return names


def baseline_scores(events: np.ndarray, names: list[str] | tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Scores of the named baselines (default: all of :data:`BASELINES`) for an (n, 19, 4) events array."""
    events = np.asarray(events)
    if events.ndim != 3 or events.shape[1:] != (19, 4):
        raise ConfigError(f"baselines need (n, 19, 4) ADC2021 events, got shape {events.shape}")
    return {n: BASELINES[n](events) for n in _check(names)}


def baseline_scores_file(
    path: str | os.PathLike, start: int = 0, stop: int | None = None, names: list[str] | tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Baseline scores of the events ``[start, stop)`` of an events file, read in chunks (memory ~ the scores)."""
    names = _check(names)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for chunk in iter_chunks(path, start=start, stop=stop):
        for n, v in baseline_scores(chunk, names).items():
            parts[n].append(v)
    return {n: np.concatenate(v) if v else np.zeros(0) for n, v in parts.items()}
