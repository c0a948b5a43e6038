"""Jet-tagging data: the ``hls4ml_lhc_jets_hlf`` table layout (16 named features + class) and a toy generator.

The real dataset (used by the hls4ml jet-tagging benchmark) is a table of 16 high-level jet
substructure features and a class label among g, q, w, z, t. ``load_jets`` reads it from CSV or
parquet when a user has it (label either as a ``class`` column with those letters/indices, or
one-hot ``j_g, j_q, j_w, j_z, j_t`` columns).

``generate_jets`` is a toy with the same columns: per class, the groomed jet mass peaks at the
parent mass (q/g: light, W 80, Z 91, t 173 GeV with a W sub-peak), the 2-/3-prong ratios (c2, d2,
n2) are lower for 2-prong W/Z and 3-prong-like for tops, and gluons have higher multiplicity than
quarks. Features are correlated through a shared per-jet "prongness" and mass; resolutions are
broad so that the classes overlap (W vs Z is deliberately hard). It is not a physics simulation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trigger_ml.core.errors import DataFormatError

FEATURES: tuple[str, ...] = (
    "zlogz", "c1_b0_mmdt", "c1_b1_mmdt", "c1_b2_mmdt", "c2_b1_mmdt", "c2_b2_mmdt", "d2_b1_mmdt", "d2_b2_mmdt",
    "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt", "m2_b2_mmdt", "n2_b1_mmdt", "n2_b2_mmdt", "mass_mmdt",
    "multiplicity",
)
CLASSES: tuple[str, ...] = ("g", "q", "w", "z", "t")
_MASS = {"g": (15.0, 12.0), "q": (12.0, 10.0), "w": (80.4, 9.0), "z": (91.2, 9.5), "t": (172.5, 18.0)}
_PRONG = {"g": 1.0, "q": 1.0, "w": 2.0, "z": 2.0, "t": 3.0}
_MULT = {"g": 45.0, "q": 30.0, "w": 35.0, "z": 36.0, "t": 55.0}


def generate_jets(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` toy jets: (features (n, 16) float32, labels (n,) int in 0..4 for g, q, w, z, t)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    mass_mu = np.array([_MASS[c][0] for c in CLASSES])[y]
    mass_sd = np.array([_MASS[c][1] for c in CLASSES])[y]
    prong = np.array([_PRONG[c] for c in CLASSES])[y] + rng.normal(0, 0.45, n)
    mult = np.array([_MULT[c] for c in CLASSES])[y]
    # tops sometimes lose a prong in grooming and look like a W
    lost = (y == 4) & (rng.random(n) < 0.25)
    mass = np.where(lost, rng.normal(80.4, 10.0, n), rng.normal(mass_mu, mass_sd))
    mass = np.abs(mass)
    prong = np.where(lost, prong - 1.0, prong)
    x = np.empty((n, len(FEATURES)), np.float64)
    x[:, 0] = -2.5 - 0.35 * prong + rng.normal(0, 0.4, n)  # zlogz
    for j, b in enumerate((0.0, 1.0, 2.0)):  # c1_b*
        x[:, 1 + j] = 0.45 / (1 + b) * (0.3 + 0.25 * prong) * np.exp(rng.normal(0, 0.25, n))
    for j, b in enumerate((1.0, 2.0)):  # c2_b*
        x[:, 4 + j] = 0.12 / b * np.exp(-0.4 * (prong - 1)) * np.exp(rng.normal(0, 0.35, n))
    for j, b in enumerate((1.0, 2.0)):  # d2_b*, d2_a1_b*
        x[:, 6 + j] = 2.2 / b * np.exp(-0.5 * (prong - 1.5) ** 2 * 0.6) * np.exp(rng.normal(0, 0.3, n))
        x[:, 8 + j] = 1.8 / b * np.exp(-0.3 * (prong - 2)) * np.exp(rng.normal(0, 0.3, n))
    for j, b in enumerate((1.0, 2.0)):  # m2_b*, n2_b*
        x[:, 10 + j] = 0.05 / b * (1 + 0.4 * prong) * np.exp(rng.normal(0, 0.3, n))
        x[:, 12 + j] = 0.35 / b * np.exp(-0.25 * (prong - 2) ** 2) * np.exp(rng.normal(0, 0.25, n))
    x[:, 14] = mass
    x[:, 15] = np.maximum(rng.poisson(mult) + 0, 1)
    return x.astype(np.float32), y.astype(np.int64)


def save_jets(path: str | os.PathLike, x: np.ndarray, y: np.ndarray) -> Path:
    """Write jets in the hls4ml_lhc_jets_hlf table layout (CSV or parquet by suffix)."""
    import pandas as pd

    p = Path(path)
    df = pd.DataFrame(x, columns=list(FEATURES))
    df["class"] = [CLASSES[i] for i in y]
    if p.suffix == ".parquet":
        df.to_parquet(p, index=False)
    else:
        df.to_csv(p, index=False)
    return p


def load_jets(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an hls4ml_lhc_jets_hlf-layout table (CSV/parquet): (features (n, 16) float32, labels (n,))."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise DataFormatError(f"{p}: file not found")
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a format problem of this file
        raise DataFormatError(f"{p}: cannot be read as a jets table ({type(exc).__name__}: {exc})") from None
    missing = [f for f in FEATURES if f not in df.columns]
    if missing:
        raise DataFormatError(f"{p}: missing feature columns {missing[:4]}{'...' if len(missing) > 4 else ''}; "
                              f"expected the 16 hls4ml_lhc_jets_hlf features")
    if "class" in df.columns:
        lab = df["class"].astype(str).str.strip().str.lower()
        idx = {c: i for i, c in enumerate(CLASSES)} | {str(i): i for i in range(5)}
        bad = ~lab.isin(list(idx))
        if bad.any():
            raise DataFormatError(f"{p}: row {int(np.flatnonzero(bad.values)[0])} has class {lab[bad].iloc[0]!r}; "
                                  f"expected one of {', '.join(CLASSES)}")
        y = lab.map(idx).to_numpy(np.int64)
    elif all(f"j_{c}" in df.columns for c in CLASSES):
        y = df[[f"j_{c}" for c in CLASSES]].to_numpy().argmax(1).astype(np.int64)
    else:
        raise DataFormatError(f"{p}: no label column; give 'class' (g/q/w/z/t) or one-hot j_g, j_q, j_w, j_z, j_t")
    try:
        x = df[list(FEATURES)].to_numpy(np.float32)
    except (ValueError, TypeError):
        col = next((f for f in FEATURES if not pd.api.types.is_numeric_dtype(df[f])), FEATURES[0])
        raise DataFormatError(f"{p}: feature column {col!r} holds non-numeric values; expected numbers") from None
    if not np.isfinite(x).all():
        r = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise DataFormatError(f"{p}: row {r} has a non-finite feature value")
    return x, y
