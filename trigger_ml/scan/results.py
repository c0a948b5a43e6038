"""The resumable results table of a scan: one row per point, rewritten atomically as ``results.parquet``
and ``results.csv`` (columns: :mod:`trigger_ml.scan`), and read back to resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.artifacts import atomic_file

RESULTS_PARQUET, RESULTS_CSV = "results.parquet", "results.csv"
ROW_FILE = "row.json"
PARAM_PREFIX = "param:"


# ============================================================================ rows and the table


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


_FIRST_COLUMNS = ["key", "status", "tpr", "luts", "latency_ns", "auc", "ebops", "ffs", "dsps", "latency_cycles",
                  "seconds", "attempt", "error"]


def _frame(rows: Iterable[Mapping[str, Any]]):
    import pandas as pd

    df = pd.DataFrame([dict(r) for r in rows])
    if df.empty:
        return df
    params = sorted(c for c in df.columns if c.startswith(PARAM_PREFIX))
    first = [c for c in _FIRST_COLUMNS if c in df.columns]
    rest = [c for c in df.columns if c not in first and c not in params]
    df = df[["key", "status"] + params + [c for c in first if c not in ("key", "status")] + rest]
    for c in df.columns:  # all-None or mixed object columns: keep numbers numeric where possible
        if df[c].dtype == object:
            conv = pd.to_numeric(df[c], errors="coerce")
            if conv.notna().sum() == df[c].notna().sum() and df[c].notna().any() and not df[c].map(lambda v: isinstance(v, (str, bool))).any():
                df[c] = conv
    return df


def _write_table(out_dir: Path, rows: Iterable[Mapping[str, Any]]):
    """Rewrite results.parquet and results.csv atomically; return the DataFrame."""
    df = _frame(rows)
    for name, write in ((RESULTS_PARQUET, lambda p: df.to_parquet(p, index=False)),
                        (RESULTS_CSV, lambda p: df.to_csv(p, index=False))):
        with atomic_file(out_dir / name) as tmp:
            write(tmp)
    return df


# ============================================================================ reading it back


def read_results(out_dir: str | Path):
    """The results table of a scan directory (parquet, else CSV), or an empty DataFrame."""
    import pandas as pd

    out_dir = Path(out_dir)
    readers = ((RESULTS_PARQUET, pd.read_parquet),
               (RESULTS_CSV, lambda p: pd.read_csv(p, dtype={"key": str, "params": str, "context": str})))
    for name, read in readers:
        p = out_dir / name
        if p.is_file():
            try:
                return read(p)
            except Exception:  # noqa: BLE001 - unreadable (e.g. truncated by hand): try the other copy
                continue
    return pd.DataFrame()


def _records(df) -> list[dict]:
    if df is None or df.empty:
        return []
    return [{k: (None if _isnan(v) else _jsonable(v)) for k, v in r.items()} for r in df.to_dict("records")]


def _isnan(v: Any) -> bool:
    try:
        return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))
    except TypeError:
        return False
