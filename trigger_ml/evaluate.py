"""Evaluate model artifacts on background and signal files: float twin and quantized model side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.constants import MANIFEST_FILE
from trigger_ml.core.errors import ArtifactError, ConfigError
from trigger_ml.core.metrics import BX_RATE_HZ, mean_std, signal_metrics


def check_rates(target_rate_khz: float | None, bx_rate_hz: float) -> None:
    """A target rate (if any) must be a positive number of kHz below the bunch-crossing rate."""
    import math

    def number(v) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

    if not number(bx_rate_hz) or bx_rate_hz <= 0:
        got = f"{bx_rate_hz / 1e6:g} MHz" if isinstance(bx_rate_hz, (int, float)) else repr(bx_rate_hz)
        raise ConfigError(f"bunch-crossing rate (--bx-rate-mhz) must be a positive number, got {got}")
    if target_rate_khz is not None and (not number(target_rate_khz) or target_rate_khz <= 0
                                        or target_rate_khz * 1e3 >= bx_rate_hz):
        raise ConfigError(f"target rate (--rate-khz) must be a positive number of kHz below the bunch-crossing "
                          f"rate ({bx_rate_hz / 1e3:g} kHz), got {target_rate_khz!r}")


def check_signal_files(signals) -> None:
    """Every signal file follows the layout, holds events and only valid ones (one-line error
    otherwise) - checked before any model runs, not after the background was scored."""
    from trigger_ml.data.adc2021 import check_events

    for s in signals:
        check_events(s, "signal efficiencies need signal events; give a signal file with events (--signals)")


def _scores(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=16384, verbose=0), dtype=np.float64).reshape(len(x), -1)[:, 0]


def evaluate_artifact(
    run: str | Path, signals: list[Path], background: Path | None = None, *, max_events: int | None = None,
    target_rate_khz: float | None = 10.0, bx_rate_hz: float = BX_RATE_HZ, baselines: bool = True,
) -> dict[str, Any]:
    """Per-signal AUC / TPR@FPR / TPR@rate for the float twin and the quantized model.

    The background follows the one held-out rule (:func:`trigger_ml.train.held_out_background`):
    ``background`` if given, else the events of the training file that training did not read, so
    no event is scored that the model was fitted on. With ``baselines`` (event models only) the
    trivial cuts of :mod:`trigger_ml.data.baselines` (HT, MET, lepton and object counts) are
    scored on exactly the same background and signal events, under ``res["baselines"][signal]``.
    """
    from trigger_ml.train import load_artifact

    check_rates(target_rate_khz, bx_rate_hz)
    art = load_artifact(run)
    if art.config.kind == "classifier":
        raise ArtifactError(f"{run}: evaluate computes anomaly-trigger metrics; {art.config.name} is a classifier")
    check_signal_files(signals)
    ho = art.held_out(background, max_events)
    b_note = ho.note
    xb = art.inputs_from_file(ho.path, start=ho.start, stop=ho.stop)
    models = {"quantized": art.model}
    try:
        models["float"] = art.float_model()
    except ArtifactError:
        pass
    bkg = {k: _scores(m, xb) for k, m in models.items()}
    res: dict[str, Any] = {"run": str(run), "model": art.config.name, "background": b_note, "n_background": len(xb),
                           "bx_rate_hz": bx_rate_hz, "signals": {}}
    base_b = None
    if baselines and art.config.kind != "classifier":
        from trigger_ml.data.baselines import baseline_scores_file

        base_b = baseline_scores_file(ho.path, ho.start, ho.stop)
        res["baselines"] = {}
    for s in signals:
        xs = art.inputs_from_file(s, stop=max_events)
        name = Path(s).stem
        res["signals"][name] = {k: signal_metrics(bkg[k], _scores(m, xs), target_rate_khz, bx_rate_hz) | {"n_signal": len(xs)}
                                for k, m in models.items()}
        if base_b is not None:
            base_s = baseline_scores_file(s, stop=max_events)
            res["baselines"][name] = {k: signal_metrics(base_b[k], base_s[k], target_rate_khz, bx_rate_hz)
                                      | {"n_signal": len(base_s[k])} for k in base_b}
    return res


def evaluate(runs: list[Path], signals: list[Path], background: Path | None = None, **kw) -> dict[str, Any]:
    """Evaluate one run, or an ensemble (several runs / a directory of ``seed*`` runs): mean ± std."""
    expanded: list[Path] = []
    for r in runs:
        r = Path(r)
        subs = sorted(p for p in r.glob("seed*") if (p / MANIFEST_FILE).exists())
        expanded.extend(subs if subs and not (r / MANIFEST_FILE).exists() else [r])
    per_run = [evaluate_artifact(r, signals, background, **kw) for r in expanded]
    if len(per_run) == 1:
        return per_run[0]
    agg: dict[str, Any] = {"runs": [str(r) for r in expanded], "ensemble": {}, "per_run": per_run}
    for sig in per_run[0]["signals"]:
        agg["ensemble"][sig] = {}
        for kind in per_run[0]["signals"][sig]:
            rows = [p["signals"][sig][kind] for p in per_run]
            agg["ensemble"][sig][kind] = {
                "auc": mean_std([r["auc"] for r in rows]),
                "tpr_at_fpr_1e-5": mean_std([r["tpr_at_fpr_1e-5"]["tpr"] for r in rows]),
                "tpr_at_fpr_1e-4": mean_std([r["tpr_at_fpr_1e-4"]["tpr"] for r in rows]),
            }
    if "baselines" in per_run[0]:  # baselines do not depend on the training seed: those of the first run's background
        agg["baselines"] = per_run[0]["baselines"]
        agg["baselines_background"] = per_run[0]["background"]
    return agg
