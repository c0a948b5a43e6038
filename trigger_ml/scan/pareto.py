"""The Pareto front of a scan's results (max TPR, min LUTs, min latency): ``pareto.json`` and ``pareto.png``,
and the verdict of every point against a latency budget (:func:`budget_verdicts`, :func:`best_in_budget`).

Budget verdict of a point: its latency (pipeline depth in cycles × the point's clock period, the
figure and its source as the point recorded them) against the budget, by the one budget rule of
:func:`trigger_ml.reports.budget.build_budget_profile` (``latency_ns <= budget_ns`` passes). The
best point in budget is the one with the highest TPR at the scan's rate among the points that meet
the budget (ties: fewer LUTs, then lower latency, then the key) - always a Pareto-optimal point.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


#: columns the budget verdict adds to the results table
BUDGET_COLUMNS = ("budget_ns", "budget_bx", "meets_budget", "budget_slack_ns", "budget_clock_ns", "budget_source",
                  "best_in_budget")


def budget_verdicts(df, budget_ns: float):
    """A copy of the results table ``df`` with the latency-budget verdict of every finished point.

    Added columns: ``budget_ns`` / ``budget_bx``, ``meets_budget`` (True / False; None for a point
    without a latency or not ``ok``), ``budget_slack_ns`` (budget - latency), ``budget_clock_ns``
    (the clock period the point's latency in ns was computed with), ``budget_source`` (where the
    latency came from, e.g. ``estimated (alkaid)``) and ``best_in_budget`` (True for the one best
    point meeting the budget, see the module docstring). The verdict is
    :func:`trigger_ml.reports.budget.build_budget_profile` on the point's cycles and clock."""
    import pandas as pd

    from trigger_ml.reports.budget import BX_NS, build_budget_profile, resolve_budget_ns

    budget = resolve_budget_ns(budget_ns=budget_ns)
    d = df.drop(columns=[c for c in BUDGET_COLUMNS if c in df.columns]).copy()
    meets: list[Any] = []
    slack: list[Any] = []
    clocks: list[Any] = []
    sources: list[Any] = []
    for _, r in d.iterrows():
        cyc, lat, clk = (_float(r.get(c)) for c in ("latency_cycles", "latency_ns", "clock_ns"))
        ok = r.get("status", "ok") == "ok"
        src = r.get("latency_source") if isinstance(r.get("latency_source"), str) else None
        if ok and not np.isnan(cyc) and clk > 0:
            cycles, period = int(cyc), float(clk)
        elif ok and lat > 0:  # only a latency in ns: one "cycle" of that length
            cycles, period = 1, float(lat)
        else:  # failed, or no latency figure
            meets.append(None)
            slack.append(None)
            clocks.append(None if np.isnan(clk) else float(clk))
            sources.append(src)
            continue
        p = build_budget_profile([("pipeline", cycles, src or "scan row")], period, 1, budget_ns=budget)
        meets.append(bool(p.latency_passed))
        slack.append(float(p.slack_ns))
        clocks.append(float(clk) if not np.isnan(clk) else None)
        sources.append(src)
    d["budget_ns"] = budget
    d["budget_bx"] = budget / BX_NS
    d["meets_budget"] = pd.Series(meets, index=d.index, dtype=object)
    d["budget_slack_ns"] = pd.Series(slack, index=d.index, dtype=float)
    d["budget_clock_ns"] = pd.Series(clocks, index=d.index, dtype=float)
    d["budget_source"] = pd.Series(sources, index=d.index, dtype=object)
    best = best_in_budget(d)
    d["best_in_budget"] = False
    if best is not None:
        d.loc[d["key"] == best["key"], "best_in_budget"] = True
    return d


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _true(v: Any) -> bool:
    """A ``meets_budget`` cell that is True (the column holds True / False / None, or numpy bools)."""
    return _is_bool(v) and bool(v)


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def best_in_budget(df, tpr_col: str = "tpr") -> dict | None:
    """The best finished point meeting the budget (highest ``tpr_col``; ties: fewer LUTs, lower
    latency, key) as a dict, or None when no point with a ``tpr_col`` meets it. ``df`` carries
    the ``meets_budget`` column of :func:`budget_verdicts`."""
    import pandas as pd

    if "meets_budget" not in df.columns or tpr_col not in df.columns:
        return None
    d = df[df["meets_budget"].map(_true)]  # object column: True / False / None
    if "status" in d.columns:
        d = d[d["status"] == "ok"]
    tpr = pd.to_numeric(d[tpr_col], errors="coerce")
    d = d[tpr.notna()]
    if d.empty:
        return None
    order = pd.DataFrame({"tpr": -pd.to_numeric(d[tpr_col], errors="coerce"),
                          "luts": pd.to_numeric(d["luts"], errors="coerce").fillna(np.inf) if "luts" in d else 0.0,
                          "lat": pd.to_numeric(d["latency_ns"], errors="coerce").fillna(np.inf),
                          "key": d["key"].astype(str)}, index=d.index)
    idx = order.sort_values(["tpr", "luts", "lat", "key"], kind="stable").index[0]
    return _records(d.loc[[idx]])[0]


def pareto_figure(df, front, *, tpr_col: str = "tpr", title: str = "", ylabel: str | None = None,
                  budget_ns: float | None = None):
    """The matplotlib Figure of :func:`plot_pareto` (Agg canvas, no global pyplot state).

    Two panels: TPR vs LUTs (colour: latency) and TPR vs latency (colour: LUTs); the Pareto points
    are ringed and joined by the staircase of the best TPR so far. With ``budget_ns`` (and the
    ``meets_budget`` column of :func:`budget_verdicts`): the budget is a vertical line on the latency
    panel (``gid="budget"``) with the region over it shaded, points over the budget are drawn as
    crosses, and the best point in budget is starred (``gid="best_in_budget"``) and named in the legend."""
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d = df[df["status"] == "ok"] if "status" in df.columns else df
    cols = [tpr_col, "luts", "latency_ns"]
    d = d[d[cols].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)] if set(cols) <= set(d.columns) else d.iloc[:0]
    best = best_in_budget(d, tpr_col) if budget_ns is not None else None

    def source(col: str) -> str:
        src = d[col].dropna().unique() if col in d.columns else []
        return f" [{src[0]}]" if len(src) == 1 else (" [mixed sources]" if len(src) > 1 else "")

    fig = Figure(figsize=(11, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    ylabel = ylabel or (f"{tpr_col} (mean over signals)")
    panels = [("luts", "latency_ns", "LUTs" + source("luts_source"), "latency [ns]"),
              ("latency_ns", "luts", "latency [ns]" + source("latency_source"), "LUTs")]
    if budget_ns is not None and "meets_budget" in d.columns:
        inside = d["meets_budget"].map(_true).to_numpy(bool)
    else:
        inside = np.ones(len(d), bool)
    for ax, (xc, cc, xl, cl) in zip(axes, panels):
        if len(d):
            vmin, vmax = float(pd.to_numeric(d[cc]).min()), float(pd.to_numeric(d[cc]).max())
            sc = None
            for mask, marker, lab in ((inside, "o", "meets the budget" if budget_ns is not None else None),
                                      (~inside, "X", "over the budget")):
                if mask.any():
                    sc = ax.scatter(d[xc][mask], d[tpr_col][mask], c=d[cc][mask], cmap="viridis", vmin=vmin, vmax=vmax,
                                    s=36 if marker == "o" else 48, marker=marker, zorder=2, label=lab,
                                    gid="in_budget" if marker == "o" else "over_budget")
            if sc is not None:
                fig.colorbar(sc, ax=ax, label=cl)
        if len(front):
            f = front.sort_values(xc)
            ax.scatter(f[xc], f[tpr_col], s=110, facecolors="none", edgecolors="crimson", linewidths=1.5, zorder=3,
                       label=f"Pareto-optimal ({len(front)})", gid="pareto")
            ax.plot(f[xc], f[tpr_col].cummax(), color="crimson", lw=1, ls="--", drawstyle="steps-post", zorder=1)
        if budget_ns is not None and xc == "latency_ns":
            ax.axvline(budget_ns, color="k", ls="--", lw=1.5, gid="budget",
                       label=f"latency budget {budget_ns:g} ns ({budget_ns / 25.0:g} BX)")
            hi = max([budget_ns * 1.1] + ([float(pd.to_numeric(d[xc]).max()) * 1.05] if len(d) else []))
            ax.axvspan(budget_ns, hi, color="tab:red", alpha=0.08, lw=0, gid="over_budget_region")
            ax.set_xlim(right=hi)
        if best is not None:
            ax.scatter([best[xc]], [best[tpr_col]], marker="*", s=300, color="gold", edgecolors="k", zorder=4,
                       gid="best_in_budget",
                       label=f"best in budget: {best['key'][:8]} ({tpr_col} {best[tpr_col]:.3g}, "
                             f"{best['luts']:.0f} LUT, {best['latency_ns']:g} ns)")
        if len(d) or budget_ns is not None:
            ax.legend(loc="best", fontsize=7)
        if not len(d):
            ax.text(0.5, 0.5, "no finished points", ha="center", va="center", transform=ax.transAxes)
        elif budget_ns is not None and best is None:
            ax.text(0.02, 0.98, f"no point meets the {budget_ns:g} ns budget", ha="left", va="top",
                    transform=ax.transAxes, color="tab:red", fontsize=8, gid="no_point_in_budget")
        ax.set_xlabel(xl, fontsize=9)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_pareto(df, front, path: str | Path, *, tpr_col: str = "tpr", title: str = "", ylabel: str | None = None,
                budget_ns: float | None = None) -> Path:
    """Write :func:`pareto_figure` (two panels: TPR vs LUTs and TPR vs latency, the Pareto points
    ringed; with ``budget_ns`` the budget line and the best point in budget) to ``path`` (PNG,
    atomically)."""
    fig = pareto_figure(df, front, tpr_col=tpr_col, title=title, ylabel=ylabel, budget_ns=budget_ns)
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path


def _write_outputs(out_dir: Path, df, *, title: str = "", rate_khz: float | None = None,
                   budget_ns: float | None = None, log: Callable[[str], None] = lambda _m: None) -> list[dict]:
    """pareto.json and pareto.png of the table ``df`` (with the budget verdict columns when
    ``budget_ns`` is given, :func:`budget_verdicts`); returns the Pareto-optimal rows."""
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
    doc: dict[str, Any] = {"objectives": {"maximize": [tpr_col], "minimize": ["luts", "latency_ns"]},
                           "n_points": int(len(df)),
                           "n_ok": int((df["status"] == "ok").sum()) if "status" in df.columns else 0,
                           "pareto": recs}
    if budget_ns is not None:
        doc["budget"] = budget_summary(df, budget_ns, tpr_col)
        b = doc["budget"]
        log(f"latency budget {budget_ns:g} ns: {b['n_meeting']} of {b['n_with_latency']} points meet it; "
            + (f"best in budget: {b['best']['key']} ({tpr_col} {b['best'][tpr_col]:.4g}, {b['best']['luts']:.0f} LUT, "
               f"{b['best']['latency_ns']:g} ns)" if b["best"] else "none meets it"))
    write_text_atomic(out_dir / PARETO_JSON, json.dumps(_jsonable(doc), indent=1))
    n_sig = len([c for c in df.columns if c.startswith("auc:")])
    what = f"TPR at {rate_khz:g} kHz" if tpr_col == "tpr" and rate_khz else tpr_col.upper()
    plot_pareto(df, front, out_dir / PARETO_PNG, tpr_col=tpr_col, title=title,
                ylabel=f"{what} (mean over {n_sig} signal{'s' if n_sig != 1 else ''})", budget_ns=budget_ns)
    return recs


def budget_summary(df, budget_ns: float, tpr_col: str = "tpr") -> dict[str, Any]:
    """The budget block of ``pareto.json`` for a table with :func:`budget_verdicts` columns: the
    budget (ns and BX), the rule, how many points meet it, and the best point in budget (the
    columns that name it: key, parameters, TPR, LUTs, latency with its cycles, clock and source)."""
    from trigger_ml.reports.budget import BX_NS

    meets = df["meets_budget"] if "meets_budget" in df.columns else []
    best = best_in_budget(df, tpr_col)
    keep = ("key", "params", tpr_col, "auc", "luts", "luts_source", "ffs", "dsps", "latency_cycles", "latency_ns",
            "clock_ns", "latency_source", "budget_slack_ns")
    if best is not None:
        best = {k: best.get(k) for k in keep if k in best}
        if isinstance(best.get("params"), str):
            best["params"] = json.loads(best["params"])
    return {
        "budget_ns": float(budget_ns), "budget_bx": float(budget_ns) / BX_NS,
        "rule": "a point meets the budget when latency_cycles x clock_ns <= budget_ns (the point's own clock; "
                "trigger_ml.reports.budget.build_budget_profile)",
        "n_with_latency": int(sum(_is_bool(v) for v in meets)),
        "n_meeting": int(sum(_true(v) for v in meets)),
        "best": best,
        "best_rule": f"highest {tpr_col} among the points meeting the budget (ties: fewer LUTs, lower latency)",
    }
