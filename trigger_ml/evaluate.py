"""Evaluate model artifacts on background and signal files: float twin and quantized model side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.errors import ArtifactError
from trigger_ml.core.metrics import BX_RATE_HZ, mean_std, signal_metrics


def _scores(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=16384, verbose=0), dtype=np.float64).reshape(len(x), -1)[:, 0]


def evaluate_artifact(
    run: str | Path, signals: list[Path], background: Path | None = None, *, max_events: int | None = None,
    target_rate_khz: float | None = 10.0, bx_rate_hz: float = BX_RATE_HZ,
) -> dict[str, Any]:
    """Per-signal AUC / TPR@FPR / TPR@rate for the float twin and the quantized model.

    The background follows the one held-out rule (:func:`trigger_ml.train.held_out_background`):
    ``background`` if given, else the events of the training file that training did not read, so
    no event is scored that the model was fitted on.
    """
    from trigger_ml.train import load_artifact

    art = load_artifact(run)
    if art.config.kind == "classifier":
        raise ArtifactError(f"{run}: evaluate computes anomaly-trigger metrics; {art.config.name} is a classifier")
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
    for s in signals:
        xs = art.inputs_from_file(s, stop=max_events)
        name = Path(s).stem
        res["signals"][name] = {k: signal_metrics(bkg[k], _scores(m, xs), target_rate_khz, bx_rate_hz) | {"n_signal": len(xs)}
                                for k, m in models.items()}
    return res


def evaluate(runs: list[Path], signals: list[Path], background: Path | None = None, **kw) -> dict[str, Any]:
    """Evaluate one run, or an ensemble (several runs / a directory of ``seed*`` runs): mean ± std."""
    expanded: list[Path] = []
    for r in runs:
        r = Path(r)
        subs = sorted(p for p in r.glob("seed*") if (p / "manifest.json").exists())
        expanded.extend(subs if subs and not (r / "manifest.json").exists() else [r])
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
    return agg
