"""Two-sample validation of event samples, and comparison of a sample's summary with a reference.

Two samples (e.g. generated vs real, or two generator versions) are compared on the 57 model
features (pT, eta, phi of the 19 ADC2021 rows, zero padding included, as the models see them):

* **per feature**: the Kolmogorov-Smirnov statistic with its asymptotic p-value
  (``scipy.stats.ks_2samp``) and the Wasserstein-1 distance (``scipy.stats.wasserstein_distance``);
* **multivariate**, the fast 1D-projection statistics studied in "Refereeing the Referees"
  (Grossi et al., arXiv:2409.16336): the mean of the per-feature KS statistics, the sliced KS
  (mean KS over random unit directions of the standardised features) and the sliced
  Wasserstein distance (mean W1 over the same directions), each with a permutation p-value:
  the pooled events are relabelled at random ``n_permutations`` times (seeded) and
  p = (1 + #{T_perm >= T_obs}) / (1 + n_permutations). The permutation tests run on a seeded
  subsample of ``perm_events`` events per sample (recorded in the result); the per-feature
  figures use all events read (``max_events`` per file, a seeded uniform subsample).

All projections and permutations are vectorised: the pooled sample is sorted once per column and
every relabelling costs one gather and one cumulative sum (exact KS with ties, exact W1).

The reference comparison (:func:`compare_to_reference`) checks the per-object means and standard
deviations of :func:`trigger_ml.data.summary.summarize` against a reference summary file; the
shipped default is the real ADC2021 background (:data:`DEFAULT_REFERENCE`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.errors import ConfigError, DataFormatError
from trigger_ml.data.adc2021 import (
    OBJECT_SLICES,
    check_events,
    count_events,
    iter_chunks,
    to_features,
)

#: the shipped real-data reference summary (ADC2021 background, 4M events)
DEFAULT_REFERENCE = Path(__file__).with_name("reference") / "adc2021_background_summary.json"
REFERENCE_KIND = "trigger_ml.reference_summary/1"
STATISTICS = ("mean_ks", "sliced_ks", "sliced_wasserstein")
#: the stage name recorded in the manifest of a plots directory
STAGE = "data.compare"


def feature_names() -> list[str]:
    """Names of the 57 model features, e.g. ``met_pt``, ``egamma1_eta``, ``jet10_phi``."""
    names = []
    for kind, sl in OBJECT_SLICES.items():
        for i in range(sl.stop - sl.start):
            obj = kind if kind == "met" else f"{kind}{i + 1}"
            names += [f"{obj}_pt", f"{obj}_eta", f"{obj}_phi"]
    return names


def load_features(path: str | os.PathLike, max_events: int | None = None, seed: int = 0) -> np.ndarray:
    """The (n, 57) float32 features of an events file; with ``max_events`` a seeded uniform subsample.

    The file is read chunk by chunk (validated as it goes); the subsample is drawn without
    replacement from all events, so it does not favour the start of the file.
    """
    n = check_events(path, "a comparison needs events; give a non-empty ADC2021-layout file")
    keep = None
    if max_events is not None and max_events < n:
        keep = np.zeros(n, bool)
        keep[np.random.default_rng(seed).choice(n, max_events, replace=False)] = True
    parts, start = [], 0
    for chunk in iter_chunks(path):
        sel = chunk if keep is None else chunk[keep[start:start + len(chunk)]]
        parts.append(to_features(sel))
        start += len(chunk)
    return np.concatenate(parts)


class _PooledECDF:
    """Pooled sample sorted once per column; KS and W1 of any two-group labelling of its rows."""

    def __init__(self, z: np.ndarray) -> None:
        self.n = len(z)
        self.order = np.argsort(z, axis=0, kind="stable")
        zs = np.take_along_axis(z, self.order, axis=0)
        self.step = zs[:-1] != zs[1:]  # ECDFs are compared only where a run of tied values ends
        self.dz = np.diff(zs, axis=0)

    def stats(self, is_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(KS, W1) per column for the labelling ``is_a`` (bool per pooled row: True = sample A)."""
        n_a = int(is_a.sum())
        n_b = self.n - n_a
        ca = np.cumsum(is_a[self.order], axis=0, dtype=np.int64)[:-1]
        k = np.arange(1, self.n, dtype=np.int64)[:, None]
        diff = np.abs(ca / n_a - (k - ca) / n_b)
        ks = np.where(self.step, diff, 0.0).max(axis=0, initial=0.0)
        return ks, (diff * self.dz).sum(axis=0)


def _directions(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    v = rng.standard_normal((d, k))
    return v / np.linalg.norm(v, axis=0, keepdims=True)


def sliced_tests(
    x: np.ndarray, y: np.ndarray, *, n_projections: int = 64, n_permutations: int = 100, seed: int = 0
) -> dict[str, Any]:
    """Mean-of-KS, sliced-KS and sliced-Wasserstein statistics of two samples with permutation p-values.

    ``x`` (n, d) and ``y`` (m, d): features are standardised with the pooled mean and standard
    deviation (constant features are left as they are), projected on ``n_projections`` seeded
    random unit directions; the statistics are the means over features / directions. Returns,
    per statistic, the observed value, the permutation p-value and the permutation null's mean.
    """
    rng = np.random.default_rng(seed)
    z = np.concatenate([x, y]).astype(np.float64)
    mu, sd = z.mean(0), z.std(0)
    zs = (z - mu) / np.where(sd > 0, sd, 1.0)
    proj = zs @ _directions(rng, z.shape[1], n_projections)
    d = z.shape[1]
    ecdf = _PooledECDF(np.concatenate([z, proj], axis=1))

    def statistics(is_a):
        ks, w1 = ecdf.stats(is_a)
        return np.array([ks[:d].mean(), ks[d:].mean(), w1[d:].mean()])

    labels = np.r_[np.ones(len(x), bool), np.zeros(len(y), bool)]
    obs = statistics(labels)
    null = np.array([statistics(rng.permutation(labels)) for _ in range(n_permutations)]).reshape(-1, 3)
    out = {}
    for i, name in enumerate(STATISTICS):
        exceed = int((null[:, i] >= obs[i]).sum())
        out[name] = {"value": float(obs[i]), "p_value": (1 + exceed) / (1 + n_permutations),
                     "null_mean": float(null[:, i].mean()) if n_permutations else None}
    return out | {"n_projections": n_projections, "n_permutations": n_permutations, "n_a": len(x), "n_b": len(y),
                  "seed": seed}


def per_feature_tests(x: np.ndarray, y: np.ndarray, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Per feature: means, KS statistic and asymptotic p-value, Wasserstein-1 distance (scipy.stats)."""
    from scipy import stats

    names = names or feature_names()
    rows = []
    for j, name in enumerate(names):
        a, b = x[:, j].astype(np.float64), y[:, j].astype(np.float64)
        ks = stats.ks_2samp(a, b, method="asymp")
        rows.append({"feature": name, "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                     "ks": float(ks.statistic), "ks_p_value": float(ks.pvalue),
                     "wasserstein": float(stats.wasserstein_distance(a, b))})
    return rows


def compare_files(
    a: str | os.PathLike, b: str | os.PathLike, *, max_events: int | None = 200_000, perm_events: int = 20_000,
    n_projections: int = 64, n_permutations: int = 100, seed: int = 0,
) -> dict[str, Any]:
    """Two-sample comparison of two events files: per-feature KS / W1 and the sliced permutation tests.

    At most ``max_events`` per file are read (seeded uniform subsample; None: all); the permutation
    tests use ``perm_events`` per sample of those. Every subsampling is recorded in the result.
    """
    for v, what in ((max_events, "max_events"), (perm_events, "perm_events"), (n_projections, "n_projections")):
        if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
            raise ConfigError(f"{what} must be a positive integer, got {v!r}")
    if n_permutations < 0:
        raise ConfigError(f"n_permutations must be >= 0, got {n_permutations!r}")
    x = load_features(a, max_events, seed)
    y = load_features(b, max_events, seed + 1)
    rng = np.random.default_rng(seed + 2)
    xp = x if len(x) <= perm_events else x[np.sort(rng.choice(len(x), perm_events, replace=False))]
    yp = y if len(y) <= perm_events else y[np.sort(rng.choice(len(y), perm_events, replace=False))]
    notes = []
    for path, arr, n_file in ((a, x, count_events(a)), (b, y, count_events(b))):
        if len(arr) < n_file:
            notes.append(f"{Path(path).name}: {len(arr):,} of {n_file:,} events used (seeded subsample, --max-events)")
    if len(xp) < len(x) or len(yp) < len(y):
        notes.append(f"permutation tests on {len(xp):,} + {len(yp):,} events (seeded subsample, --perm-events)")
    return {
        "a": str(a), "b": str(b), "n_a": len(x), "n_b": len(y), "seed": seed, "notes": notes,
        "features": per_feature_tests(x, y),
        "multivariate": sliced_tests(xp, yp, n_projections=n_projections, n_permutations=n_permutations, seed=seed),
    }


# ------------------------------------------------------------------ reference summaries
def load_reference(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """A reference summary file (default: the shipped real ADC2021 background summary), checked."""
    p = Path(path) if path is not None else DEFAULT_REFERENCE
    try:
        ref = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(f"{p}: reference summary not found; give an existing JSON file (--reference)") from None
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{p}: cannot be read as a JSON reference summary ({exc})") from None
    objs = ref.get("objects") if isinstance(ref, dict) else None
    if not isinstance(objs, dict) or not objs:
        raise DataFormatError(f"{p}: a reference summary needs an 'objects' mapping, e.g. "
                              '{"objects": {"met": {"pt_gev": {"mean": 41.5, "std": 21.2}}}}')
    for kind, qs in objs.items():
        if kind not in OBJECT_SLICES:
            raise DataFormatError(f"{p}: objects.{kind}: unknown object type; use one of {', '.join(OBJECT_SLICES)}")
        for q, st in (qs or {}).items():
            for s, v in (st or {}).items():
                if q not in ("pt_gev", "eta", "phi") or s not in ("mean", "std") or not isinstance(v, (int, float)):
                    raise DataFormatError(f"{p}: objects.{kind}.{q}.{s} = {v!r}: expected a number for "
                                          "pt_gev/eta/phi with mean/std")
    return ref


def compare_summary(summary: dict[str, Any], reference: dict[str, Any], tolerance: float = 0.10) -> dict[str, Any]:
    """Every figure of ``reference`` next to the sample's (a :func:`~trigger_ml.data.summary.summarize` result).

    Each row: object, quantity, statistic, sample and reference values, the relative difference
    and whether it lies within ``tolerance``; ``all_within`` is True only if every figure does.
    """
    rows = []
    for kind, qs in reference["objects"].items():
        for q, st in qs.items():
            for s, ref_v in st.items():
                got = (summary["objects"].get(kind, {}).get(q) or {}).get(s)
                rel = None if got is None or ref_v == 0 else (got - ref_v) / abs(ref_v)
                rows.append({"object": kind, "quantity": q, "statistic": s, "sample": got, "reference": float(ref_v),
                             "rel_diff": rel, "within": rel is not None and abs(rel) <= tolerance})
    return {"reference": reference.get("name", "reference"), "reference_source": reference.get("source"),
            "tolerance": tolerance, "rows": rows, "all_within": all(r["within"] for r in rows)}


def compare_to_reference(
    path: str | os.PathLike, reference: str | os.PathLike | None = None, tolerance: float = 0.10, progress=None
) -> dict[str, Any]:
    """Summarise the events file ``path`` and compare it with a reference summary (default: real ADC2021)."""
    from trigger_ml.data.summary import summarize

    ref = load_reference(reference)
    res = compare_summary(summarize(path, progress=progress), ref, tolerance)
    return {"path": str(path), "reference_file": str(reference or DEFAULT_REFERENCE)} | res


# ------------------------------------------------------------------ plots
def overlay_plots(
    x: np.ndarray, y: np.ndarray, out_dir: str | os.PathLike, labels: tuple[str, str] = ("A", "B"), force: bool = False,
    inputs: dict[str, str | os.PathLike] | None = None,
) -> list[Path]:
    """Overlay histograms (normalised) per object type - pT, eta, phi of present objects and the
    multiplicity - written atomically as ``out_dir/<object>.png`` with a manifest naming the
    ``inputs`` (role -> file); an existing ``out_dir`` is replaced only with ``force`` and only if
    an earlier comparison wrote it. Returns the PNG files."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from trigger_ml.core.artifacts import atomic_dir, check_output, write_manifest

    check_output(out_dir, list((inputs or {}).values()), STAGE, force)

    written = []
    with atomic_dir(out_dir, force=force, stage=STAGE) as tmp:
        for kind, sl in OBJECT_SLICES.items():
            fig = Figure(figsize=(14, 3.4), layout="constrained")
            FigureCanvasAgg(fig)
            axes = fig.subplots(1, 4)
            cols = {"pT [GeV]": 0, "η": 1, "φ": 2}
            data = [arr.reshape(len(arr), 19, 3)[:, sl] for arr in (x, y)]
            for ax, (lab, c) in zip(axes, cols.items()):
                vals = [d[..., c][d[..., 0] > 0] for d in data]
                both = np.concatenate(vals)
                if not len(both):
                    ax.set_title(f"{kind} {lab}: no objects")
                    continue
                hi = np.quantile(both, 0.995) if c == 0 else both.max()
                bins = np.linspace(both.min() if c else 0.0, max(hi, both.min() + 1e-6), 60)
                for v, l in zip(vals, labels):
                    ax.hist(v, bins=bins, density=True, histtype="step", label=f"{l} ({len(v):,})")
                ax.set_xlabel(f"{kind} {lab}")
                if c == 0:
                    ax.set_yscale("log")
            mult = [(d[..., 0] > 0).sum(1) for d in data]
            k = sl.stop - sl.start
            for v, l in zip(mult, labels):
                axes[3].hist(v, bins=np.arange(k + 2) - 0.5, density=True, histtype="step", label=l)
            axes[3].set_xlabel(f"{kind} multiplicity")
            axes[0].legend(fontsize=8)
            fig.savefig(tmp / f"{kind}.png", dpi=90)
            written.append(Path(out_dir) / f"{kind}.png")
        write_manifest(tmp, STAGE, inputs or {}, {"labels": list(labels), "n_a": len(x), "n_b": len(y)},
                       {"plots": [p.name for p in written]})
    return written
