"""Trigger-style metrics: ROC AUC, TPR at tiny FPR and at a target rate, with their statistical basis.

Rates: a trigger's rate = FPR × the bunch-crossing rate (40 MHz nominal, 28.6 MHz of filled
bunches). At FPR = 1e-5 only a handful of background events lie above the threshold, so every
TPR comes with the number of background events it rests on and a Clopper–Pearson interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from trigger_ml.core.constants import BX_RATE_HZ, FILLED_BX_RATE_HZ  # noqa: F401  (re-exported)


def clopper_pearson(k: int, n: int, cl: float = 0.683) -> tuple[float, float]:
    """Exact binomial (Clopper–Pearson) interval for k successes in n trials."""
    a = 1 - cl
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def tpr_at_fpr(bkg: np.ndarray, sig: np.ndarray, fpr_target: float) -> dict[str, Any]:
    """TPR at the loosest threshold whose background FPR does not exceed ``fpr_target``.

    Returns the TPR with its Clopper–Pearson 68 % interval, the FPR actually reached, and the
    number of background events above threshold the estimate rests on (None if the background
    sample is too small to resolve this FPR: fewer than 1/fpr events).
    """
    bkg, sig = np.asarray(bkg, np.float64).ravel(), np.asarray(sig, np.float64).ravel()
    n_b, n_s = len(bkg), len(sig)
    out: dict[str, Any] = {"fpr_target": fpr_target, "n_background": n_b, "n_signal": n_s}
    if n_b * fpr_target < 1:
        return out | {"tpr": None, "reason": f"needs >= {int(np.ceil(1 / fpr_target)):,} background events, have {n_b:,}"}
    y = np.r_[np.zeros(n_b), np.ones(n_s)]
    fpr, tpr, thr = roc_curve(y, np.r_[bkg, sig], drop_intermediate=False)
    i = int(np.searchsorted(fpr, fpr_target, side="right") - 1)
    k_sig = int(round(tpr[i] * n_s))
    lo, hi = clopper_pearson(k_sig, n_s)
    return out | {
        "tpr": float(tpr[i]), "tpr_interval_68": [lo, hi], "fpr": float(fpr[i]), "threshold": float(thr[i]),
        "n_background_above": int(round(fpr[i] * n_b)),
    }


def signal_metrics(bkg: np.ndarray, sig: np.ndarray, target_rate_khz: float | None = None,
                   bx_rate_hz: float = BX_RATE_HZ) -> dict[str, Any]:
    """AUC, TPR at FPR 1e-5 and 1e-4, and TPR at a target rate in kHz."""
    y = np.r_[np.zeros(len(bkg)), np.ones(len(sig))]
    res: dict[str, Any] = {"auc": float(roc_auc_score(y, np.r_[np.ravel(bkg), np.ravel(sig)]))}
    res["tpr_at_fpr_1e-5"] = tpr_at_fpr(bkg, sig, 1e-5)
    res["tpr_at_fpr_1e-4"] = tpr_at_fpr(bkg, sig, 1e-4)
    if target_rate_khz is not None:
        fpr = target_rate_khz * 1e3 / bx_rate_hz
        res["tpr_at_rate"] = tpr_at_fpr(bkg, sig, fpr) | {"rate_khz": target_rate_khz, "bx_rate_hz": bx_rate_hz}
    return res


def mean_std(values: list[float | None]) -> dict[str, Any]:
    """Mean ± std (ddof=1) of the defined values, for seed ensembles."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}
