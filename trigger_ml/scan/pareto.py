"""The Pareto front of a scan's results (max TPR, min LUTs, min latency): ``pareto.json`` and ``pareto.png``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from trigger_ml.core.artifacts import atomic_file, write_text_atomic
from trigger_ml.core.errors import TriggerMLError
from trigger_ml.scan.results import _jsonable, _records

PARETO_PNG, PARETO_JSON = "pareto.png", "pareto.json"


def pareto_front(df, maximize: Sequence[str] = ("tpr",), minimize: Sequence[str] = ("luts", "latency_ns")):
    """Rows of ``df`` not dominated by any other row (rows with a missing objective, or a
    ``status`` other than ``ok`` when the column exists, are left out). Row ``b`` dominates ``a``
    when it is at least as good in every objective and strictly better in one; rows with equal
    objectives do not dominate each other. Sorted by the first minimised objective."""
    import pandas as pd

    cols = list(maximize) + list(minimize)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TriggerMLError(f"pareto_front: column(s) {', '.join(missing)} not in the table")
    d = df
    if "status" in d.columns:
        d = d[d["status"] == "ok"]
    vals = d[cols].apply(pd.to_numeric, errors="coerce")
    d = d[vals.notna().all(axis=1)]
    vals = vals.loc[d.index]
    if d.empty:
        return d.copy()
    # turn every objective into "smaller is better"
    m = np.column_stack([-vals[c].to_numpy(float) for c in maximize] + [vals[c].to_numpy(float) for c in minimize])
    le = (m[:, None, :] <= m[None, :, :]).all(axis=2)  # le[j, i]: j at least as good as i everywhere
    lt = (m[:, None, :] < m[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    front = d[~dominated]
    return front.sort_values(list(minimize[:1]) or cols[:1], kind="stable")


def plot_pareto(df, front, path: str | Path, *, tpr_col: str = "tpr", title: str = "", ylabel: str | None = None) -> Path:
    """Two panels: TPR vs LUTs (colour: latency) and TPR vs latency (colour: LUTs); the Pareto
    points are ringed and joined by the staircase of the best TPR so far. Uses matplotlib's Agg
    canvas (no display, no global pyplot state)."""
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d = df[df["status"] == "ok"] if "status" in df.columns else df
    cols = [tpr_col, "luts", "latency_ns"]
    d = d[d[cols].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)] if set(cols) <= set(d.columns) else d.iloc[:0]

    def source(col: str) -> str:
        src = d[col].dropna().unique() if col in d.columns else []
        return f" [{src[0]}]" if len(src) == 1 else (" [mixed sources]" if len(src) > 1 else "")

    fig = Figure(figsize=(11, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    ylabel = ylabel or (f"{tpr_col} (mean over signals)")
    panels = [("luts", "latency_ns", "LUTs" + source("luts_source"), "latency [ns]"),
              ("latency_ns", "luts", "latency [ns]" + source("latency_source"), "LUTs")]
    for ax, (xc, cc, xl, cl) in zip(axes, panels):
        if len(d):
            sc = ax.scatter(d[xc], d[tpr_col], c=d[cc], cmap="viridis", s=36, zorder=2)
            fig.colorbar(sc, ax=ax, label=cl)
        if len(front):
            f = front.sort_values(xc)
            ax.scatter(f[xc], f[tpr_col], s=110, facecolors="none", edgecolors="crimson", linewidths=1.5, zorder=3,
                       label=f"Pareto-optimal ({len(front)})")
            ax.plot(f[xc], f[tpr_col].cummax(), color="crimson", lw=1, ls="--", drawstyle="steps-post", zorder=1)
            ax.legend(loc="lower right", fontsize=8)
        if not len(d):
            ax.text(0.5, 0.5, "no finished points", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xl, fontsize=9)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path


def _write_outputs(out_dir: Path, df, *, title: str = "", rate_khz: float | None = None,
                   log: Callable[[str], None] = lambda _m: None) -> list[dict]:
    """pareto.json and pareto.png of the table ``df``; returns the Pareto-optimal rows."""
    tpr_col = "tpr"
    if "tpr" not in df.columns or not df["tpr"].notna().any():
        tpr_col = "auc"  # too few background events for the target rate: fall back to the AUC
        if len(df):
            log("no point has a TPR at the target rate (too few background events?): Pareto front on the mean AUC")
    if df.empty or not {tpr_col, "luts", "latency_ns"} <= set(df.columns):
        front = df.iloc[:0] if not df.empty else df
    else:
        front = pareto_front(df, maximize=(tpr_col,), minimize=("luts", "latency_ns"))
    recs = _records(front)
    for r in recs:
        r["params"] = json.loads(r["params"]) if isinstance(r.get("params"), str) else r.get("params")
        if isinstance(r.get("metrics"), str):
            r["metrics"] = json.loads(r["metrics"])
    doc = {"objectives": {"maximize": [tpr_col], "minimize": ["luts", "latency_ns"]},
           "n_points": int(len(df)), "n_ok": int((df["status"] == "ok").sum()) if "status" in df.columns else 0,
           "pareto": recs}
    write_text_atomic(out_dir / PARETO_JSON, json.dumps(_jsonable(doc), indent=1))
    n_sig = len([c for c in df.columns if c.startswith("auc:")])
    what = f"TPR at {rate_khz:g} kHz" if tpr_col == "tpr" and rate_khz else tpr_col.upper()
    plot_pareto(df, front, out_dir / PARETO_PNG, tpr_col=tpr_col, title=title,
                ylabel=f"{what} (mean over {n_sig} signal{'s' if n_sig != 1 else ''})")
    return recs
