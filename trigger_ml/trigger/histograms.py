"""Exact, mergeable trigger statistics: integer histograms of the firmware score.

The firmware score is a fixed-point integer, so everything the trigger menu needs — thresholds for a
target rate, rates, pure rates, efficiencies and their Clopper–Pearson intervals — is a function of
the *counts* of events per (raw score, reference-seed pattern). :class:`ScoreHistogram` holds those
counts exactly (int64, sparse: one entry per distinct (score, pattern) pair that occurred), so

* a chunk of events becomes a histogram at once and its scores are dropped: the client's memory is
  bounded by the number of distinct scores (at most the score type's range ``2**width`` times the
  ``2**n_seeds`` seed patterns), not by the number of events;
* histograms of chunks, files or Dask workers merge by adding counts (:meth:`ScoreHistogram.merge`),
  in any order, with identical results;
* :func:`calibrate_threshold_hist` gives exactly the threshold of
  :func:`trigger_ml.core.threshold.calibrate_threshold` on the same events (the smallest raw
  threshold whose background rate ``#(score > thr) / n × bx_rate`` does not exceed the target), and
  the counts above it are exact.

The seed pattern of an event is the bit mask ``Σ 2**i`` over the reference seeds ``i`` that fire
(bit i = seed i of the menu's seed list); pattern 0 means no reference seed accepts the event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from trigger_ml.core.constants import BX_RATE_HZ
from trigger_ml.core.errors import ConfigError
from trigger_ml.core.fixed import FixedType
from trigger_ml.core.threshold import Threshold, _check_range, _frac_of, target_fpr

__all__ = ["ScoreHistogram", "HistogramAccumulator", "calibrate_threshold_hist", "seed_patterns"]

#: most reference seeds a pattern can hold (bits of an int64 next to a 62-bit score offset is not needed:
#: wide combinations fall back to a lexicographic sort)
MAX_SEEDS = 62


def seed_patterns(ref_bits: np.ndarray) -> np.ndarray:
    """(n,) int64 bit mask of the reference seeds firing on each event, from (n, n_seeds) bool."""
    b = np.asarray(ref_bits, dtype=bool)
    if b.ndim != 2:
        raise ValueError(f"reference bits must be (n_events, n_seeds), got shape {b.shape}")
    if b.shape[1] > MAX_SEEDS:
        raise ConfigError(f"{b.shape[1]} reference seeds: at most {MAX_SEEDS} are supported; use fewer seeds")
    out = np.zeros(len(b), np.int64)
    for i in range(b.shape[1]):
        out |= b[:, i].astype(np.int64) << i
    return out


def _aggregate(score: np.ndarray, pattern: np.ndarray, count: np.ndarray | None, n_seeds: int):
    """Sorted unique (score, pattern) pairs and their summed counts (exact int64)."""
    score = np.asarray(score, np.int64).ravel()
    pattern = np.asarray(pattern, np.int64).ravel()
    if not len(score):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo, hi = int(score.min()), int(score.max())
    if (hi - lo).bit_length() + n_seeds <= 62:  # one int64 key per pair: (score - lo) << n_seeds | pattern
        key = ((score - lo) << n_seeds) | pattern
        if count is None:
            uk, cnt = np.unique(key, return_counts=True)
            cnt = cnt.astype(np.int64)
        else:
            order = np.argsort(key, kind="stable")
            ks = key[order]
            starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
            uk, cnt = ks[starts], np.add.reduceat(np.asarray(count, np.int64)[order], starts)
        return (uk >> n_seeds) + lo, uk & ((1 << n_seeds) - 1), cnt
    order = np.lexsort((pattern, score))
    s, p = score[order], pattern[order]
    c = np.ones(len(s), np.int64) if count is None else np.asarray(count, np.int64)[order]
    starts = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (p[1:] != p[:-1])])
    return s[starts], p[starts], np.add.reduceat(c, starts)


@dataclass
class ScoreHistogram:
    """Exact counts of the firmware score (raw integers) per reference-seed pattern for one sample.

    ``score_raw``, ``pattern`` and ``count`` are aligned int64 arrays sorted by (score, pattern),
    one entry per distinct pair; ``n_seeds`` is the number of reference seeds (pattern bits),
    ``name`` / ``files`` describe the sample. Build one with :meth:`from_scores`, combine with
    :meth:`merge`; all the menu's figures follow from the counts (:func:`calibrate_threshold_hist`,
    :meth:`n_above`, :meth:`n_above_unique`)."""

    name: str
    score_raw: np.ndarray
    pattern: np.ndarray
    count: np.ndarray
    n_seeds: int
    files: list[str] = field(default_factory=list)

    @classmethod
    def from_scores(cls, name: str, score_raw: np.ndarray, ref_bits: np.ndarray | None = None, n_seeds: int | None = None,
                    files: Sequence[str] = ()) -> ScoreHistogram:
        """Histogram of per-event raw scores ``(n,)`` and reference bits ``(n, n_seeds)`` (None: no seeds)."""
        s = np.asarray(score_raw, dtype=np.int64).ravel()
        if ref_bits is None:
            ref_bits = np.zeros((len(s), n_seeds or 0), bool)
        ref_bits = np.asarray(ref_bits, bool)
        if len(ref_bits) != len(s):
            raise ValueError(f"{len(s)} scores but {len(ref_bits)} rows of reference bits")
        k = ref_bits.shape[1]
        sc, pa, cn = _aggregate(s, seed_patterns(ref_bits), None, k)
        return cls(name, sc, pa, cn, k, list(map(str, files)))

    @classmethod
    def empty(cls, name: str, n_seeds: int, files: Sequence[str] = ()) -> ScoreHistogram:
        z = np.zeros(0, np.int64)
        return cls(name, z, z.copy(), z.copy(), int(n_seeds), list(map(str, files)))

    @classmethod
    def merge(cls, hists: Sequence[ScoreHistogram], name: str | None = None, files: Sequence[str] | None = None) -> ScoreHistogram:
        """The sum of histograms (same seeds): counts of equal (score, pattern) pairs add up exactly."""
        hists = list(hists)
        if not hists:
            raise ValueError("merge needs at least one histogram")
        k = hists[0].n_seeds
        if any(h.n_seeds != k for h in hists):
            raise ValueError("cannot merge histograms made with different numbers of reference seeds")
        if len(hists) == 1:
            h = hists[0]
            sc, pa, cn = h.score_raw, h.pattern, h.count
        else:
            sc, pa, cn = _aggregate(np.concatenate([h.score_raw for h in hists]),
                                    np.concatenate([h.pattern for h in hists]),
                                    np.concatenate([h.count for h in hists]), k)
        fl = list(files) if files is not None else [f for h in hists for f in h.files]
        return cls(name if name is not None else hists[0].name, sc, pa, cn, k, fl)

    # -- figures --------------------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        return int(self.count.sum())

    @property
    def n_bins(self) -> int:
        """Number of distinct (score, pattern) pairs stored (what the memory scales with)."""
        return len(self.count)

    def n_above(self, thr: Threshold | int) -> int:
        """Events with ``score_raw > thr`` (the firmware trigger bit fires)."""
        t = thr.raw if isinstance(thr, Threshold) else int(thr)
        return int(self.count[self.score_raw > t].sum())

    def n_above_unique(self, thr: Threshold | int) -> int:
        """Events firing the trigger that no reference seed accepts (pattern 0)."""
        t = thr.raw if isinstance(thr, Threshold) else int(thr)
        return int(self.count[(self.score_raw > t) & (self.pattern == 0)].sum())

    @property
    def n_reference(self) -> int:
        """Events that at least one reference seed accepts."""
        return int(self.count[self.pattern != 0].sum())

    def seed_counts(self) -> list[int]:
        """Events accepted by each reference seed (in seed order)."""
        return [int(self.count[(self.pattern >> i) & 1 == 1].sum()) for i in range(self.n_seeds)]

    def score_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct raw scores ascending, events per score), summed over the seed patterns."""
        if not len(self.score_raw):
            return self.score_raw, self.count
        starts = np.flatnonzero(np.r_[True, self.score_raw[1:] != self.score_raw[:-1]])
        return self.score_raw[starts], np.add.reduceat(self.count, starts)

    def expand(self) -> np.ndarray:
        """The sorted per-event raw scores (for tests and small samples only: memory ∝ events)."""
        return np.repeat(self.score_raw, self.count)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "n_seeds": self.n_seeds, "files": self.files, "score_raw": self.score_raw.tolist(),
                "pattern": self.pattern.tolist(), "count": self.count.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ScoreHistogram:
        return cls(d["name"], np.asarray(d["score_raw"], np.int64), np.asarray(d["pattern"], np.int64),
                   np.asarray(d["count"], np.int64), int(d["n_seeds"]), list(d.get("files", [])))


class HistogramAccumulator:
    """Adds chunk histograms as they arrive (any order), merging in batches so that the cost stays
    O(total log total) and the memory O(distinct scores) whatever the number of chunks."""

    def __init__(self, name: str, n_seeds: int, files: Sequence[str] = ()) -> None:
        self.name, self.n_seeds, self.files = name, int(n_seeds), list(map(str, files))
        self._acc = ScoreHistogram.empty(name, n_seeds, files)
        self._pending: list[ScoreHistogram] = []
        self._pending_bins = 0

    def add(self, h: ScoreHistogram) -> None:
        self._pending.append(h)
        self._pending_bins += h.n_bins
        if self._pending_bins > max(self._acc.n_bins, 1 << 18):
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._acc = ScoreHistogram.merge([self._acc, *self._pending], self.name, self.files)
            self._pending, self._pending_bins = [], 0

    def result(self) -> ScoreHistogram:
        self._flush()
        return self._acc


def calibrate_threshold_hist(
    hist: ScoreHistogram, score: FixedType | float, target_rate_khz: float, bx_rate_hz: float = BX_RATE_HZ,
) -> Threshold:
    """:func:`trigger_ml.core.threshold.calibrate_threshold` on a histogram: the same threshold (the
    smallest raw threshold whose background rate does not exceed the target), the same counts and
    the same refusals, computed from the counts instead of the sorted per-event scores."""
    frac, t = _frac_of(score)
    fpr = target_fpr(target_rate_khz, bx_rate_hz)
    values, counts = hist.score_counts()
    n = int(counts.sum())
    allowed = int(np.floor(fpr * n))
    if allowed < 1:
        need = math.ceil(1 / fpr)
        raise ConfigError(f"rate {target_rate_khz:g} kHz (FPR {fpr:.3g}) needs at least {need:,} background events "
                          f"to calibrate, got {n:,}; give more background events or a threshold value")
    cum = np.cumsum(counts)  # cum[i] = events with score <= values[i]
    pos = n - allowed - 1  # index of the threshold in the sorted per-event scores
    i = int(np.searchsorted(cum, pos, side="right"))
    thr = int(values[i])
    _check_range(thr, t, f"for {target_rate_khz:g} kHz (raw {thr})")
    n_pass = int(n - cum[i])
    return Threshold(thr, frac, t.to_hls() if t is not None else None, None, float(target_rate_khz), n_pass, n,
                     float(bx_rate_hz))
