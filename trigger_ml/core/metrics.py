"""Trigger-style metrics: ROC AUC, TPR at tiny FPR and at a target rate, with their statistical basis.

Rates: a trigger's rate = FPR × the bunch-crossing rate (40 MHz nominal, 28.6 MHz of filled
bunches). At FPR = 1e-5 only a handful of background events lie above the threshold, so

* a TPR at an FPR is quoted only where at least ``MIN_BACKGROUND_PER_FPR / FPR`` (10/FPR)
  independent background events support it - ten expected background events above the
  threshold; otherwise ``tpr`` is None with the reason (e.g. "needs >= 1,000,000 background
  events, have 100,000");
* every TPR comes with two 68 % intervals: ``tpr_interval_68`` (Clopper-Pearson, the binomial
  spread of the signal count at a fixed threshold) and ``tpr_interval_68_bootstrap``, which also
  holds the threshold's own uncertainty: a seeded bootstrap over the background AND the signal
  sample. The background resampling is drawn exactly and vectorised: in a multinomial resample
  the number of events at or above the j-th distinct background score is Binomial(n_b, N_j/n_b),
  so the resampled threshold index is drawn by inverting ``P(index <= j) = BinomCDF(k; n_b, N_j/n_b)``
  (k = the largest background count the FPR allows); the signal count above each resampled
  threshold is then Binomial(n_s, TPR(threshold)). Cost: one sort of each sample (~0.1 s per 10^6
  events) plus O(replicas).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trigger_ml.core.constants import BX_RATE_HZ, FILLED_BX_RATE_HZ  # noqa: F401  (re-exported)

#: a TPR at FPR f needs at least this many / f independent background events (10 expected above threshold)
MIN_BACKGROUND_PER_FPR = 10
#: bootstrap replicas of the TPR interval, and its default seed
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
INTERVAL_METHOD = ("68 % bootstrap percentile interval over the background and signal samples "
                   "(threshold re-derived in each replica; trigger_ml.core.metrics)")


def clopper_pearson(k: int, n: int, cl: float = 0.683) -> tuple[float, float]:
    """Exact binomial (Clopper–Pearson) interval for k successes in n trials."""
    lo, hi = clopper_pearson_array(np.array([k]), n, cl)
    return float(lo[0]), float(hi[0])


def clopper_pearson_array(k: np.ndarray, n: int, cl: float = 0.683) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clopper_pearson` for an array of success counts ``k`` out of ``n`` (vectorised)."""
    from scipy.special import betaincinv  # = scipy.stats.beta.ppf, bit for bit; imported when needed (start-up)

    k = np.asarray(k, np.float64)
    a = 1 - cl
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k == 0, 0.0, betaincinv(k, n - k + 1, a / 2))
        hi = np.where(k == n, 1.0, betaincinv(k + 1, n - k, 1 - a / 2))
    return lo, hi


def min_background_events(fpr_target: float) -> int:
    """The number of independent background events a TPR at ``fpr_target`` needs: 10 / FPR."""
    return math.ceil(round(MIN_BACKGROUND_PER_FPR / fpr_target, 6))


def background_shortfall(n_background: int, fpr_target: float) -> str | None:
    """None when ``n_background`` events support a TPR at ``fpr_target``, else the one-line reason."""
    need = min_background_events(fpr_target)
    if n_background >= need:
        return None
    return f"needs >= {need:,} background events, have {n_background:,}"


class SortedScores:
    """A score sample sorted once, with its distinct values and the number of events at or above
    each (reused by every FPR target and signal of one background sample)."""

    def __init__(self, scores: np.ndarray) -> None:
        s = np.sort(np.asarray(scores, np.float64).ravel())
        self.sorted = s
        self.n = len(s)
        first = np.r_[True, s[1:] != s[:-1]] if self.n else np.zeros(0, bool)
        starts = np.flatnonzero(first)
        self.values = s[starts]                 # distinct values, ascending
        self.n_ge = self.n - starts             # events >= each distinct value (decreasing)

    def n_above(self, cut: np.ndarray | float) -> np.ndarray:
        """Number of events strictly above ``cut``."""
        return self.n - np.searchsorted(self.sorted, cut, side="right")


def _cut_index(b: SortedScores, fpr_target: float) -> int:
    """Index c of the background value just below the loosest threshold whose FPR (fraction of
    background >= threshold) does not exceed the target; -1 when every background event may pass.
    The threshold lies between ``values[c]`` and ``values[c+1]``: a signal event passes when its
    score is > values[c] (sklearn ``roc_curve``'s convention)."""
    ok = b.n_ge / b.n <= fpr_target            # the same float comparison as fps / fps[-1] in roc_curve
    j0 = int(np.argmax(ok)) if ok.any() else len(b.values)
    return j0 - 1


def _tpr_sorted(b: SortedScores, s: SortedScores, fpr_target: float, n_bootstrap: int, seed: int | None,
                cl: float) -> dict[str, Any]:
    out: dict[str, Any] = {"fpr_target": fpr_target, "n_background": b.n, "n_signal": s.n}
    why = background_shortfall(b.n, fpr_target)
    if why is not None:
        return out | {"tpr": None, "reason": why, "min_background": min_background_events(fpr_target)}
    c = _cut_index(b, fpr_target)
    lower = -np.inf if c < 0 else b.values[c]
    k_sig = int(s.n_above(lower))
    n_bkg_above = int(b.n_ge[c + 1]) if c + 1 < len(b.values) else 0
    # the threshold sklearn reports: the smallest score of either sample above values[c]
    cands = [b.values[c + 1]] if c + 1 < len(b.values) else []
    i_s = np.searchsorted(s.sorted, lower, side="right")
    if i_s < s.n:
        cands.append(s.sorted[i_s])
    thr = float(min(cands)) if cands else math.inf
    lo, hi = clopper_pearson(k_sig, s.n, cl)
    res = out | {"tpr": k_sig / s.n if s.n else None, "tpr_interval_68": [lo, hi], "fpr": n_bkg_above / b.n,
                 "threshold": thr, "n_background_above": n_bkg_above, "n_signal_above": k_sig}
    if n_bootstrap and s.n:
        res |= _bootstrap(b, s, fpr_target, n_bootstrap, seed, cl)
    return res


def _bootstrap(b: SortedScores, s: SortedScores, fpr_target: float, n_bootstrap: int, seed: int | None,
               cl: float) -> dict[str, Any]:
    """Bootstrap interval of the TPR with the threshold re-derived in every replica (module docstring)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    k_max = int(np.floor(fpr_target * b.n))
    while (k_max + 1) / b.n <= fpr_target:     # the largest count m with m / n <= target (float-exact)
        k_max += 1
    while k_max > 0 and k_max / b.n > fpr_target:
        k_max -= 1
    # only distinct values whose count above could fall to k_max matter (P < 1e-30 below)
    span = k_max + 12 * math.sqrt(k_max + 1) + 40
    j_lo = int(np.searchsorted(-b.n_ge, -span, side="left"))   # first index with n_ge <= span
    p_le = stats.binom.cdf(k_max, b.n, b.n_ge[j_lo:] / b.n)     # P(resampled index j0 <= j), non-decreasing
    u = rng.random(n_bootstrap)
    j0 = j_lo + np.searchsorted(p_le, u, side="left")           # len(values) when even the top value fails
    cut = np.where(j0 - 1 >= 0, b.values[np.clip(j0 - 1, 0, len(b.values) - 1)], -np.inf)
    p_sig = s.n_above(cut) / s.n
    tpr_b = rng.binomial(s.n, p_sig) / s.n
    a = (1 - cl) / 2
    lo, hi = np.quantile(tpr_b, [a, 1 - a])
    return {"tpr_interval_68_bootstrap": [float(lo), float(hi)], "bootstrap": {
        "replicas": int(n_bootstrap), "seed": seed, "method": INTERVAL_METHOD}}


def tpr_at_fpr(bkg: np.ndarray, sig: np.ndarray, fpr_target: float, *, n_bootstrap: int = N_BOOTSTRAP,
               seed: int | None = BOOTSTRAP_SEED, cl: float = 0.683) -> dict[str, Any]:
    """TPR at the loosest threshold whose background FPR does not exceed ``fpr_target``.

    Quoted only when the background sample holds at least 10 / ``fpr_target`` events (else
    ``tpr`` is None and ``reason`` says how many are needed). Returns the TPR, the FPR actually
    reached, the threshold (sklearn ``roc_curve`` convention: score >= threshold passes), the
    number of background and signal events above it, the Clopper-Pearson 68 % interval of the
    signal count (``tpr_interval_68``) and the seeded bootstrap 68 % interval that includes the
    threshold's uncertainty (``tpr_interval_68_bootstrap``; ``n_bootstrap=0`` skips it).
    """
    return _tpr_sorted(SortedScores(bkg), SortedScores(sig), fpr_target, n_bootstrap, seed, cl)


def signal_metrics(bkg: np.ndarray | SortedScores, sig: np.ndarray, target_rate_khz: float | None = None,
                   bx_rate_hz: float = BX_RATE_HZ, *, n_bootstrap: int = N_BOOTSTRAP,
                   seed: int | None = BOOTSTRAP_SEED) -> dict[str, Any]:
    """AUC, TPR at FPR 1e-5 and 1e-4, and TPR at a target rate in kHz (each by :func:`tpr_at_fpr`'s
    rule). ``bkg`` may be a :class:`SortedScores` (sorted once, shared by several signals)."""
    b = bkg if isinstance(bkg, SortedScores) else SortedScores(bkg)
    s = SortedScores(sig)
    # AUC from the sorted samples: the Mann-Whitney statistic (ties count 1/2), = sklearn roc_auc_score
    res: dict[str, Any] = {"auc": _auc(b, s)}
    res["tpr_at_fpr_1e-5"] = _tpr_sorted(b, s, 1e-5, n_bootstrap, seed, 0.683)
    res["tpr_at_fpr_1e-4"] = _tpr_sorted(b, s, 1e-4, n_bootstrap, seed, 0.683)
    if target_rate_khz is not None:
        fpr = target_rate_khz * 1e3 / bx_rate_hz
        res["tpr_at_rate"] = _tpr_sorted(b, s, fpr, n_bootstrap, seed, 0.683) | {"rate_khz": target_rate_khz,
                                                                                "bx_rate_hz": bx_rate_hz}
    return res


def _auc(b: SortedScores, s: SortedScores) -> float:
    if not b.n or not s.n:
        from sklearn.metrics import roc_auc_score  # its refusal of a one-class sample

        return float(roc_auc_score(np.r_[np.zeros(b.n), np.ones(s.n)], np.r_[b.sorted, s.sorted]))
    below = np.searchsorted(b.sorted, s.sorted, side="left")
    ties = np.searchsorted(b.sorted, s.sorted, side="right") - below
    return float((below.sum(dtype=np.float64) + 0.5 * ties.sum(dtype=np.float64)) / (b.n * s.n))


def tail_composition(scores: np.ndarray, labels: np.ndarray, threshold: float, *, strict: bool = False,
                     names: dict[int, str] | None = None) -> dict[str, Any]:
    """Which background processes make up the events above ``threshold`` (``>=``, or ``>`` with
    ``strict`` - the firmware's trigger rule): per label its count, fraction of the tail and
    efficiency (fraction of that process above the threshold), largest first."""
    scores, labels = np.asarray(scores).ravel(), np.asarray(labels).ravel()
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} process labels")
    above = scores > threshold if strict else scores >= threshold
    lab_all, n_all = np.unique(labels, return_counts=True)
    lab_up, n_up = np.unique(labels[above], return_counts=True)
    up = dict(zip(lab_up.tolist(), n_up.tolist()))
    n_tail = int(above.sum())
    rows = []
    for lab, n in zip(lab_all.tolist(), n_all.tolist()):
        k = int(up.get(lab, 0))
        rows.append({"process": (names or {}).get(lab, str(lab)), "code": lab, "n_above": k,
                     "fraction_of_tail": k / n_tail if n_tail else None, "efficiency": k / n,
                     "efficiency_interval_68": list(clopper_pearson(k, n)), "n_events": n})
    rows.sort(key=lambda r: (-r["n_above"], -r["n_events"]))
    return {"threshold": float(threshold), "rule": "score > threshold" if strict else "score >= threshold",
            "n_above": n_tail, "n_events": len(scores), "processes": rows}


def mean_std(values: list[float | None]) -> dict[str, Any]:
    """Mean ± std (ddof=1) of the defined values, for seed ensembles."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}
