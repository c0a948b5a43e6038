"""Write a collected report (:func:`trigger_ml.reports.collect.collect_report`) as Markdown, HTML and JSON.

:func:`write_report` creates ``out_dir`` atomically (built in a temporary sibling directory and
renamed into place; an existing ``out_dir`` is refused unless ``force``) holding

* ``report.md``   - the human-readable report (tables + the plots as relative PNG links),
* ``report.html`` - the same content, self-contained: every plot is embedded as
  ``<img src="data:image/png;base64,...">`` so the file can be mailed or opened anywhere,
* ``report.json`` - every figure with its unit and ``source`` (the collected dict, plus the list
  of plots),
* ``*.png``       - the plots (matplotlib, Agg canvas; no display needed): ROC curves with their
  Clopper-Pearson 68 % bands and score distributions per signal with lines at the firmware's built-in
  threshold and at the menu's working points, the per-layer bit-width map, the latency-budget
  waterfall and the resources against the FPGA part. ``report.json``'s ``plots`` list records what
  each plot draws (``drawn``: threshold / rate lines and bands, read back from the figure's artists).

The section "Trigger threshold and working points" shows the threshold built into the firmware (value,
raw integer, score type, the rate it was calibrated to) and the working-point menu exactly as
``trigger-ml emulate`` computes it; without signal files the report prints the command that adds the
physics section.

The text is written for a physicist who never opened the code: every number carries its unit and
where it came from (``parsed`` from a vendor report, ``measured`` with open tools by ``trigger-ml measure``,
``estimated`` by a model), and the report starts with the pass/fail verdict against the latency
budget.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.constants import BX_RATE_HZ
from trigger_ml.core.errors import ArtifactError

__all__ = ["write_report", "report_destination", "render_markdown", "render_html", "make_plots"]

_KIND_TEXT = {
    "parsed": "parsed: read from the vendor tool's synthesis report (Vivado/Vitis HLS, Vivado)",
    "measured": "measured: obtained with open tools by `trigger-ml measure` (Yosys logic synthesis, Verilator "
                "simulation), read from the project's measurements.json",
    "estimated": "estimated: computed from a model of the hardware (EBOPs, the analytic hls4ml model, da4ml's own cost)",
}

_FIGURE_TEXT = {
    "latency_cycles": "latency (clock cycles)",
    "latency_ns": "latency (ns)",
    "II_cycles": "initiation interval (cycles)",
    "clock_estimated_ns": "estimated clock period (ns)",
    "LUT": "LUTs (look-up tables)",
    "LUT+55DSP": "LUT + 55·DSP (LUT-equivalent)",
    "FF": "FFs (flip-flops)",
    "DSP": "DSP slices",
    "BRAM_18K": "block RAM (18 Kb)",
    "URAM": "UltraRAM",
    "CARRY": "carry cells (CARRY4)",
    "multipliers": "multipliers",
}

_MODEL_TEXT = {"float": "float (Keras)", "quantized": "quantized (Keras HGQ2)", "firmware": "firmware (bit-exact emulation)"}
_MODEL_STYLE = {"float": ("tab:gray", "--"), "quantized": ("tab:blue", "-"), "firmware": ("tab:red", ":")}

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
code{background:#f4f4f4;padding:0 .2em}blockquote{border-left:4px solid #ccc;margin:1em 0;padding:.2em 1em;color:#555}
.verdict{font-size:1.3em;font-weight:bold;padding:.6em 1em;border-radius:6px;margin:1em 0}
.pass{background:#e3f6e3;border:2px solid #2e8b2e;color:#1d5e1d}.fail{background:#fbe4e4;border:2px solid #b22;color:#801818}
.unknown{background:#eee;border:2px solid #888;color:#444}
.mixed{background:#fff6d6;border:2px solid #c90;color:#6b4f00}
"""


# ----------------------------------------------------------------------------- small formatting helpers


def _ok(section: Any) -> bool:
    return isinstance(section, dict) and section.get("status") == "ok"


def _num(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        s = f"{int(v):,}"
    elif isinstance(v, float):
        s = f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    else:
        s = str(v)
    return f"{s} {unit}".strip() if unit and unit not in ("LUT", "FF", "DSP", "BRAM_18K", "URAM", "CARRY") else s


def _cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or ("l" * len(header))
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "x"


def _pct(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3g} %" if v < 1 else f"{v:.1f} %"


# ----------------------------------------------------------------------------- plots


def _new_figure(w: float = 6.4, h: float = 4.2):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="png")


def _plot_signal(figure: Callable) -> Callable[[dict, str, Path], dict | bool]:
    """A per-signal plot: draw ``figure(report, signal)``, save it, return what it drew (False: nothing)."""
    def plot(report: dict, signal: str, path: Path) -> dict | bool:
        fig = figure(report, signal)
        if fig is None:
            return False
        _save(fig, path)
        return _drawn(fig)
    return plot


def _roc_figure(report: dict, signal: str):
    """ROC curves of every model for ``signal`` with their Clopper-Pearson 68 % bands (TPR band:
    ``gid="band:tpr:<model>"``, FPR band: ``gid="band:fpr:<model>"``) and the trigger rate line
    (``gid="rate"``); None when there is nothing to draw."""
    m = report["metrics"]
    curves = m.get("roc", {}).get(signal)
    if not curves:
        return None
    fig = _new_figure()
    ax = fig.add_subplot()
    x_min = max(1.0 / max(m.get("n_background", 10), 10), 1e-7)
    for model, c in curves.items():
        color, ls = _MODEL_STYLE.get(model, ("k", "-"))
        idx = [i for i, f in enumerate(c["fpr"]) if f > 0]
        if not idx:
            continue
        fpr = [c["fpr"][i] for i in idx]
        tpr = [c["tpr"][i] for i in idx]
        auc = m["signals"][signal][model]["auc"]
        ax.plot(fpr, tpr, color=color, ls=ls, lw=1.8, label=f"{_MODEL_TEXT.get(model, model)}, AUC {auc:.3f}",
                gid=f"roc:{model}")
        if "tpr_lo" in c:
            lo = [c["tpr_lo"][i] for i in idx]
            hi = [c["tpr_hi"][i] for i in idx]
            ax.fill_between(fpr, lo, hi, color=color, alpha=0.18, lw=0, step=None, gid=f"band:tpr:{model}",
                            label="68 % Clopper-Pearson band" if model == list(curves)[-1] else None)
            f_lo = [max(c["fpr_lo"][i], x_min / 10) for i in idx]
            f_hi = [c["fpr_hi"][i] for i in idx]
            ax.fill_betweenx(tpr, f_lo, f_hi, color=color, alpha=0.10, lw=0, gid=f"band:fpr:{model}")
    base_colors = {"ht": "tab:olive", "met": "tab:cyan", "n_leptons": "tab:purple", "n_objects": "tab:brown"}
    bsig = (m.get("baselines") or {}).get(signal) or {}
    for bname, c in (m.get("baseline_roc", {}).get(signal) or {}).items():
        idx = [i for i, f in enumerate(c["fpr"]) if f > 0]
        if idx and bname in bsig:
            ax.plot([c["fpr"][i] for i in idx], [c["tpr"][i] for i in idx], color=base_colors.get(bname, "k"), lw=1,
                    ls=(0, (1, 1)), marker=".", ms=3, label=f"baseline {_BASELINE_TEXT.get(bname, bname)}, AUC {bsig[bname]['auc']:.3f}",
                    gid=f"baseline:{bname}")
    rate = m.get("target_rate_khz")
    if rate:
        fpr_rate = rate * 1e3 / m.get("bx_rate_hz", BX_RATE_HZ)
        ax.axvline(fpr_rate, color="tab:green", lw=1, ls="-.", label=f"{rate:g} kHz trigger rate", gid="rate")
    ax.set_xscale("log")
    ax.set_xlim(left=x_min, right=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("background efficiency (false-positive rate)")
    ax.set_ylabel("signal efficiency (true-positive rate)")
    ax.set_title(f"ROC curve: {signal} (bands: 68 % Clopper-Pearson)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _drawn(fig) -> dict[str, Any]:
    """What a figure draws, read back from its artists (for report.json and the tests): the
    threshold / rate lines (x position and label) and the uncertainty bands (model, kind, the
    number of points and the band's extent)."""
    out: dict[str, Any] = {"lines": [], "bands": []}
    for ax in fig.axes:
        for ln in ax.get_lines():
            gid = ln.get_gid() or ""
            if gid.startswith(("threshold:", "rate")):
                out["lines"].append({"gid": gid, "x": float(ln.get_xdata()[0]), "label": ln.get_label()})
        for col in ax.collections:
            gid = col.get_gid() or ""
            if gid.startswith("band:"):
                _, kind, model = gid.split(":", 2)
                verts = [p.vertices for p in col.get_paths() if len(p.vertices)]
                ext = None
                if verts:
                    v = np.concatenate(verts)
                    ext = {"x": [float(v[:, 0].min()), float(v[:, 0].max())], "y": [float(v[:, 1].min()), float(v[:, 1].max())]}
                out["bands"].append({"model": model, "kind": kind, "extent": ext})
    return out


def _thresholds_to_mark(report: dict) -> list[tuple[str, str, float]]:
    """(gid, label, value in score units) of the firmware's built-in threshold and of the menu's
    working points."""
    marks: list[tuple[str, str, float]] = []
    ft = report.get("firmware_threshold")
    if _ok(ft) and ft.get("value") is not None:
        rate = f"{ft['target_rate_khz']:g} kHz, " if ft.get("target_rate_khz") else ""
        marks.append(("threshold:firmware", f"firmware threshold ({rate}built in): > {ft['value']:.6g}", float(ft["value"])))
    menu = report.get("menu")
    if _ok(menu):
        for wp, row in menu.get("working_points", {}).items():
            t = row.get("threshold")
            if t and t.get("value") is not None:
                label = f"{wp} ({t.get('target_rate_khz') or 0:g} kHz): > {t['value']:.6g}"
                marks.append((f"threshold:{wp}", label, float(t["value"])))
    return marks


def _scores_figure(report: dict, signal: str):
    """Score distributions of background and ``signal`` per model, with vertical lines at the
    firmware's built-in threshold (``gid="threshold:firmware"``) and at each working point of the
    menu (``gid="threshold:<name>"``) inside the plotted range; None when there is nothing to draw."""
    h = report["metrics"].get("score_hist", {}).get(signal)
    if not h or not h.get("counts"):
        return None
    fig = _new_figure(7.2, 4.6)
    ax = fig.add_subplot()
    edges = h["edges"]
    for model, per_class in h["counts"].items():
        ls = _MODEL_STYLE.get(model, ("k", "-"))[1]
        for cls, counts in per_class.items():
            n = max(sum(counts), 1)
            frac = [c / n for c in counts]
            color = "tab:blue" if cls == "background" else "tab:orange"
            ax.stairs(frac, edges, color=color, ls=ls, lw=1.5,
                      label=f"{'background' if cls == 'background' else 'signal'}, {_MODEL_TEXT.get(model, model)}")
    lo, hi = edges[0], edges[-1]
    greys = ["0.35", "0.5", "0.6", "0.7", "0.8"]
    k = 0
    for gid, label, v in _thresholds_to_mark(report):
        if not (lo <= v <= hi) or (h.get("log_x") and v <= 0):
            continue
        if gid == "threshold:firmware":
            ax.axvline(v, color="k", lw=2.0, ls="-", label=label, gid=gid)
        else:
            ax.axvline(v, color=greys[k % len(greys)], lw=1.0, ls=(0, (4, 2)), label=label, gid=gid)
            k += 1
    if h.get("log_x"):
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("anomaly score" + (" (log scale)" if h.get("log_x") else "") + "; the trigger fires right of a line")
    ax.set_ylabel("fraction of events per bin")
    ax.set_title(f"Score distributions: background vs {signal}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _plot_bitwidths(report: dict, path: Path) -> bool:
    bw = report.get("bitwidths")
    if not _ok(bw) or not bw.get("layers"):
        return False
    layers = bw["layers"]
    roles = [r for r in ("weight", "bias", "accum", "result") if any(r in row for row in layers)]
    fig = _new_figure(max(6.4, 0.55 * len(layers) + 2), 4.2)
    ax = fig.add_subplot()
    n = len(roles)
    width = 0.8 / max(n, 1)
    colors = {"weight": "tab:blue", "bias": "tab:cyan", "accum": "tab:orange", "result": "tab:green"}
    for k, role in enumerate(roles):
        xs = [i + (k - (n - 1) / 2) * width for i in range(len(layers))]
        ys = [row.get(role, 0) for row in layers]
        ax.bar(xs, ys, width, label=role, color=colors[role])
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([row["layer"] for row in layers], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("bit width (bits)")
    ax.set_title("Per-layer fixed-point bit widths")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _plot_waterfall(report: dict, path: Path) -> bool:
    b = report.get("budget")
    if not _ok(b):
        return False
    profiles = [(fl, p) for fl, p in b["profiles"].items() if _ok(p) and p.get("layers")]
    if not profiles:
        return False
    names, starts, widths, colors = [], [], [], []
    palette = {"hls4ml": "tab:blue", "alkaid": "tab:purple"}
    for fl, p in profiles:
        for r in p["layers"]:
            names.append(f"{fl}: {r['name']}" if len(profiles) > 1 else r["name"])
            starts.append(r["cumulative_ns"] - r["ns"])
            widths.append(r["ns"])
            colors.append(palette.get(fl, "tab:blue"))
        names.append(f"{fl} total" + (f" ({p['total_source']})" if p["total_source"] != "sum of layers" else ""))
        starts.append(0.0)
        widths.append(p["total_ns"])
        colors.append("tab:green" if p["latency_passed"] else "tab:red")
    budget = profiles[0][1]["budget_ns"]
    fig = _new_figure(7.5, max(3.0, 0.32 * len(names) + 1.8))
    ax = fig.add_subplot()
    y = list(range(len(names)))[::-1]
    ax.barh(y, widths, left=starts, color=colors, edgecolor="k", lw=0.5)
    ax.axvline(budget, color="k", ls="--", lw=1.5, label=f"budget {budget:g} ns")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=7.5)
    ax.set_xlabel("time after the inputs arrive (ns)")
    ax.set_title("Latency budget: cumulative ns per layer (green total = within budget, red = over)")
    ax.title.set_fontsize(9)
    ax.set_xlim(0, max([budget] + [p["total_ns"] for _, p in profiles]) * 1.08)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)
    return True


def _plot_resources(report: dict, path: Path) -> bool:
    part = report.get("part")
    impl = report.get("implementation")
    if not _ok(part) or not isinstance(impl, dict) or not impl.get("figures"):
        return False
    totals = part["totals"]
    keys = [k for k in ("LUT", "FF", "DSP", "BRAM_18K", "URAM") if totals.get(k)]
    bars: list[tuple[str, str, float, float]] = []  # resource, label, value, percent
    for f in impl["figures"]:
        if f["figure"] in keys and f["value"]:  # zero-use figures have no bar
            bars.append((f["figure"], f"{f['flavour']}: {f['source']}", float(f["value"]),
                         100.0 * float(f["value"]) / totals[f["figure"]]))
    if not bars:
        return False
    keys = [k for k in keys if any(b[0] == k for b in bars)]
    labels = sorted({b[1] for b in bars})
    cmap = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
            "tab:cyan", "tab:gray"]
    fig = _new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        xs, ys = [], []
        for i, k in enumerate(keys):
            for b in bars:
                if b[0] == k and b[1] == lab:
                    xs.append(i + (j - (len(labels) - 1) / 2) * width)
                    ys.append(max(b[3], 1e-6))
        if xs:
            ax.bar(xs, ys, width, label=lab, color=cmap[j % len(cmap)])
    ax.axhline(100, color="k", ls="--", lw=1.2, label="part capacity (100 %)")
    pcts = [b[3] for b in bars if b[3] > 0]
    log = bool(pcts) and (max(pcts + [100.0]) / min(pcts) > 30)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(min(pcts) / 3, max(pcts + [100.0]) * 3)
    else:
        ax.set_ylim(0, max(pcts + [100.0]) * 1.1)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys)
    ax.set_ylabel(f"percent of {part['name']}")
    ax.set_title("Resources against the FPGA part" + (" (log scale)" if log else ""))
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True


def make_plots(report: dict, out_dir: Path) -> list[dict[str, str]]:
    """Draw every plot the report's content allows into ``out_dir``; returns
    ``[{"file", "title", "section"}]`` in display order. A plot that fails is skipped."""
    out_dir = Path(out_dir)
    plots: list[dict[str, str]] = []

    def attempt(fn: Callable[..., bool], file: str, title: str, section: str, *args) -> None:
        try:
            res = fn(report, *args, out_dir / file)
            if res:
                plots.append({"file": file, "title": title, "section": section,
                              **({"drawn": res} if isinstance(res, dict) else {})})
        except Exception as err:  # noqa: BLE001 - a broken plot must not lose the report
            report.setdefault("render_notes", []).append(f"plot {file} skipped: {type(err).__name__}: {err}")

    m = report.get("metrics")
    if _ok(m):
        for sig in m.get("signals", {}):
            attempt(_plot_signal(_roc_figure), f"roc_{_slug(sig)}.png", f"ROC curve, {sig}", "metrics", sig)
            attempt(_plot_signal(_scores_figure), f"scores_{_slug(sig)}.png", f"Score distributions, {sig}", "metrics", sig)
    attempt(_plot_waterfall, "latency_budget.png", "Latency budget waterfall", "budget")
    attempt(_plot_resources, "resources.png", "Resources against the FPGA part", "resources")
    attempt(_plot_bitwidths, "bitwidths.png", "Per-layer bit widths", "bitwidths")
    return plots


# ----------------------------------------------------------------------------- markdown


def _overall(report: dict) -> tuple[str, str, list[str]]:
    """(css class, headline, one line per flavour): the headline names every flavour's verdict,
    e.g. ``FAIL (hls4ml) / PASS (alkaid)``; the class is pass / fail / mixed / unknown."""
    b = report.get("budget")
    if not _ok(b):
        why = b.get("reason") if isinstance(b, dict) else "no budget section"
        return "unknown", "UNKNOWN", [f"No latency verdict: {why}"]
    lines, parts, verdicts = [], [], []
    for flavour, p in b["profiles"].items():
        if _ok(p):
            lines.append(p["verdict"])
            verdicts.append(bool(p["passed"]))
            parts.append(f"{'PASS' if p['passed'] else 'FAIL'} ({flavour})")
        else:
            lines.append(f"{flavour}: no verdict ({p.get('reason')})")
    if not verdicts:
        return "unknown", "UNKNOWN", lines
    cls = "pass" if all(verdicts) else ("fail" if not any(verdicts) else "mixed")
    return cls, " / ".join(parts), lines


def _plots_for(plots: list[dict[str, str]], section: str) -> list[str]:
    return [f"![{p['title']}]({p['file']})" for p in plots if p["section"] == section]


def _add_physics_command(add: Callable[[str], None], report: dict) -> None:
    pc = report.get("physics_command")
    if not _ok(pc):
        return
    add("To add the physics section (efficiencies, ROC curves, score distributions and the working-point menu), run:")
    add("")
    add(f"    {pc.get('command') or ' '.join(pc['argv'])}")
    add("")
    if pc.get("note"):
        add(f"({pc['note']}.)")
        add("")


def _interval(lo_hi: Sequence[float] | None, fmt: str = "{:.3g}") -> str:
    if not lo_hi or lo_hi[0] is None:
        return ""
    return f" [{fmt.format(lo_hi[0])}, {fmt.format(lo_hi[1])}]"


_BASELINE_TEXT = {"ht": "HT", "met": "MET", "n_leptons": "lepton count", "n_objects": "object count"}


def _tpr_cell(d: dict | None) -> str:
    """A TPR with its 68 % interval (bootstrap when recorded, else Clopper-Pearson) and {background events above}."""
    if not d:
        return "—"
    if d.get("tpr") is None:
        return f"n/a ({d.get('reason', '')})"
    iv = d.get("tpr_interval_68_bootstrap") or d.get("tpr_interval_68")
    return f"{d['tpr']:.3g}{_interval(iv)} {{{d.get('n_background_above', '?')}}}"


def _baseline_verdicts(mt: dict, bases: dict) -> list[str]:
    """One line per signal: does the best model beat the best trivial cut (AUC and the first quoted TPR)?"""
    out = []
    for sig, per in mt.get("signals", {}).items():
        b = bases.get(sig) or {}
        if not b or not per:
            continue
        bm = max(b, key=lambda k: b[k]["auc"])
        model = "firmware" if "firmware" in per else max(per, key=lambda k: per[k]["auc"])
        key = next((k for k in ("tpr_at_fpr_1e-5", "tpr_at_rate", "tpr_at_fpr_1e-4")
                    if (per[model].get(k) or {}).get("tpr") is not None), None)
        txt = (f"**{sig}**: {_MODEL_TEXT.get(model, model)} AUC {per[model]['auc']:.3f} vs best trivial cut "
               f"{_BASELINE_TEXT.get(bm, bm)} {b[bm]['auc']:.3f}")
        if key:
            bt = max(b, key=lambda k: (b[k].get(key) or {}).get("tpr") or 0)
            mv, bv = per[model][key]["tpr"], (b[bt].get(key) or {}).get("tpr") or 0.0
            label = key.replace("tpr_at_fpr_", "TPR @ FPR ").replace("tpr_at_rate", "TPR @ rate")
            txt += f"; {label} {mv:.3g} vs {_BASELINE_TEXT.get(bt, bt)} {bv:.3g}"
            beats = mv > bv and per[model]["auc"] > b[bm]["auc"]
            worse = mv < bv and per[model]["auc"] < b[bm]["auc"]
        else:
            beats, worse = per[model]["auc"] > b[bm]["auc"], per[model]["auc"] < b[bm]["auc"]
        txt += (" → the model beats the trivial cuts." if beats else
                " → a trivial cut does better." if worse else " → mixed: the model is not clearly better.")
        out.append(txt)
    return out


def _ms(d: dict | None, fmt: str = "{:.3f}") -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    return f"{fmt.format(d['mean'])} ± {fmt.format(d['std'])} ({d['n']})"


def _render_ensemble(add: Callable[[str], None], mt: dict) -> None:
    ens = mt.get("ensemble")
    if not isinstance(ens, dict):
        return
    add("")
    if not _ok(ens):
        add(f"*Seed spread not measured:* {ens.get('reason')}.")
        return
    add(f"**Training-seed ensemble** ({ens['n_runs']} runs): mean ± std (number of runs quoting it). {ens.get('note', '')}.")
    add("")
    rows = []
    for sig, kinds in ens["signals"].items():
        for kind, m in kinds.items():
            rows.append([sig, _MODEL_TEXT.get(kind, kind), _ms(m.get("auc"), "{:.4f}"), _ms(m.get("tpr_at_fpr_1e-5")),
                         _ms(m.get("tpr_at_fpr_1e-4")), _ms(m.get("tpr_at_rate"))])
    add(_table(["signal", "model", "AUC", "TPR @ FPR 1e-5", "TPR @ FPR 1e-4", "TPR @ rate"], rows, "llrrrr"))


def _render_tail(add: Callable[[str], None], mt: dict) -> None:
    tc = mt.get("tail_composition")
    if not isinstance(tc, dict):
        return
    add("")
    if not _ok(tc):
        add(f"*Background tail composition unknown:* {tc.get('reason')}.")
        return
    add("**Background tail by process**: which generated background processes lie above each working point "
        "(fraction of the events above; in brackets the fraction of that process which passes). "
        f"{tc.get('note', '')}.")
    add("")
    rows = []
    for model, pts in tc["models"].items():
        for wp, r in pts.items():
            if r.get("threshold") is None:
                rows.append([_MODEL_TEXT.get(model, model), wp, "—", "—", f"n/a ({r.get('reason', '')})"])
                continue
            parts = [f"{p['process']} {100 * p['fraction_of_tail']:.1f} % ({p['efficiency']:.2g})"
                     for p in r["processes"] if p["n_above"]] if r["n_above"] else ["no event above"]
            rows.append([_MODEL_TEXT.get(model, model), wp, f"{r['threshold']:.6g} ({r['rule'].split()[1]})",
                         _num(r["n_above"]), "; ".join(parts)])
    add(_table(["model", "working point", "threshold", "background events above", "composition"], rows, "llrrl"))


def _render_trigger_section(add: Callable[[str], None], report: dict) -> None:
    """The firmware's built-in threshold and the working-point menu (as `trigger-ml emulate`)."""
    add("## Trigger threshold and working points")
    add("")
    ft = report.get("firmware_threshold")
    if _ok(ft):
        add(f"**Threshold built into the firmware**: the trigger fires when score > **{ft['value']:.6g}** "
            f"(raw integer **{ft['raw']}** of `{ft.get('score_type')}`, {ft.get('frac_bits')} fractional bits), "
            f"{ft['how']}" + (f"; rate there {_num(ft.get('rate_khz'))} kHz{_interval(ft.get('rate_interval_khz_68'))} "
                               "(68 % Clopper-Pearson)" if ft.get("rate_khz") is not None else "")
            + f". Source: {ft['source']}.")
        for n in ft.get("notes", []):
            add(f"\n> {n}")
    else:
        add(f"*No built-in threshold:* {ft.get('reason') if isinstance(ft, dict) else 'not collected'}")
    add("")
    menu = report.get("menu")
    if not _ok(menu):
        add(f"*Working-point menu absent:* {menu.get('reason') if isinstance(menu, dict) else 'not collected'}")
        add("")
        if not _ok(report.get("metrics")):
            return
        _add_physics_command(add, report)
        return
    bx = menu.get("bx_rate_hz", BX_RATE_HZ)
    built = menu.get("firmware_threshold") or {}
    if built.get("raw") is not None and built.get("rate_khz_here") is not None:
        add(f"On this report's background ({_num(menu.get('n_background'))} events, below) the built-in threshold "
            f"fires at {built['rate_khz_here']:.4g} kHz.")
        add("")
    add(f"Working points calibrated on the firmware's own integer scores ({menu.get('scorer')}): each threshold is the "
        "smallest one whose background rate does not exceed the target. Rate = background fraction above the "
        f"threshold × {bx / 1e6:g} MHz; pure rate = the part no reference seed ({', '.join(menu.get('reference_seeds', []))}) "
        "already accepts; efficiency = signal fraction above the threshold. Brackets: 68 % Clopper-Pearson intervals. "
        f"Background: {'; '.join(menu.get('background', []))} ({_num(menu.get('n_background'))} events). "
        f"The same table as `{menu.get('command')}`.")
    add("")
    sig_names: list[str] = []
    for row in menu["working_points"].values():
        for sname in row.get("signals", {}):
            if sname not in sig_names:
                sig_names.append(sname)
    rows = []
    for wp, row in menu["working_points"].items():
        t = row.get("threshold")
        if t is None:
            rows.append([wp, _num(row.get("target_rate_khz")), "—", "—", row.get("error", "not calibrated"), "—"]
                        + ["—"] * len(sig_names))
            continue
        mark = " (= firmware)" if built.get("raw") == t["raw"] else ""
        cells = [wp + mark, f"{t.get('target_rate_khz'):g}", f"{t['value']:.6g}", str(t["raw"]),
                 f"{t['rate_khz']:.3g}{_interval(t.get('rate_interval_khz_68'))}",
                 f"{row['pure_rate_khz']:.3g}{_interval(row.get('pure_rate_interval_khz_68'))}"]
        for sname in sig_names:
            e = row["signals"].get(sname)
            cells.append(f"{e['efficiency']:.4g}{_interval(e.get('efficiency_interval_68'), '{:.4g}')}" if e else "—")
        rows.append(cells)
    add(_table(["working point", "target kHz", "threshold (score)", "threshold (raw)", "rate kHz", "pure rate kHz"]
               + [f"efficiency {n}" for n in sig_names], rows, "lrrrrr" + "r" * len(sig_names)))
    add("")
    ph = report.get("metrics")
    if _ok(ph) and ph.get("n_background") != menu.get("n_background"):
        add(f"Note: the menu uses all {_num(menu.get('n_background'))} held-out background events (as `trigger-ml "
            f"emulate`); the physics table above {_num(ph.get('n_background'))}.")
        add("")


def render_markdown(report: dict, plots: list[dict[str, str]]) -> str:
    """The Markdown text of the report (plots referenced by their file names)."""
    md: list[str] = []
    add = md.append
    add(f"# {report.get('title', 'Trigger firmware report')}")
    add("")
    add(f"Created {report.get('created', '')} from `{report.get('path', '')}`.")
    add("")
    _cls, headline, lines = _overall(report)
    b = report.get("budget")
    budget_txt = f"{b['budget_ns']:g} ns = {b['budget_bx']:g} BX" if _ok(b) else "n/a"
    add(f"## Verdict: {headline}")
    add("")
    add(f"Latency budget: **{budget_txt}** (1 bunch crossing, BX, = 25 ns). "
        + (b.get("explanation", "") if _ok(b) else ""))
    add("")
    for ln in lines:
        add(f"* {ln}")
    add("")

    inputs = report.get("inputs", {})
    add("## What was analysed")
    add("")
    add(_table(["input", "path"], [["model run", inputs.get("run") or "—"], ["hls4ml project", inputs.get("hls") or "—"],
                                   ["da4ml RTL project", inputs.get("rtl") or "—"]]))
    for n in inputs.get("notes", []):
        add(f"\n* {n}")
    add("")

    # ---- model
    add("## Model")
    add("")
    m = report.get("model")
    if _ok(m):
        cfg = m.get("config", {})
        rows = [["name", m.get("name")]] + [[k, v] for k, v in cfg.items()]
        if m.get("ebops"):
            rows.append(["EBOPs (HGQ2 effective bit operations)", f"{_num(m['ebops']['value'])} — {m['ebops']['source']}"])
        add(_table(["property", "value"], rows))
        tr = m.get("training") or {}
        if tr:
            add("")
            add("Training (validation loss of the best epoch; lower is better):")
            add("")
            add(_table(["model", "best validation loss", "epochs", "s / epoch"],
                       [[k, _num(v.get("best_val_loss")), _num(v.get("epochs")), _num(v.get("seconds_per_epoch"))]
                        for k, v in tr.items()], "lrrr"))
    else:
        add(f"*Absent:* {m.get('reason') if isinstance(m, dict) else 'not collected'}")
    add("")

    # ---- metrics
    add("## Physics performance")
    add("")
    mt = report.get("metrics")
    if _ok(mt):
        stat = mt.get("statistics") or {}
        add("Efficiency of the trigger on each signal for a given background efficiency. The background rate of a "
            f"Level-1 trigger is its background efficiency × the {mt.get('bx_rate_hz', BX_RATE_HZ) / 1e6:g} MHz "
            "bunch-crossing rate, so 1e-5 ≈ 0.4 kHz. TPR = true-positive rate (signal efficiency); after it the "
            "68 % interval "
            + ("(bootstrap over the background and signal samples, so it holds the threshold's own uncertainty) "
               if stat.get("interval") else "")
            + "and, in braces, the number of background events above the threshold. "
            + (f"Rule: {stat['rule']}; otherwise n/a with the reason. " if stat.get("rule") else "")
            + f"Background: {mt.get('background')} ({_num(mt.get('n_background'))} events). Baselines: trivial cuts "
            "scored on the same events - a learned score is worth its firmware only where it beats them.")
        add("")
        rows = []
        bl = mt.get("baselines")
        bases = bl if isinstance(bl, dict) and "status" not in bl else {}  # {signal: {baseline: metrics}}
        for sig, per in mt["signals"].items():
            for model, r in per.items():
                rows.append([sig, _MODEL_TEXT.get(model, model), f"{r['auc']:.4f}", _tpr_cell(r.get("tpr_at_fpr_1e-5")),
                             _tpr_cell(r.get("tpr_at_fpr_1e-4")), _tpr_cell(r.get("tpr_at_rate")), r.get("source", "")])
            for bname, r in (bases.get(sig) or {}).items():
                rows.append([sig, f"baseline: {_BASELINE_TEXT.get(bname, bname)}", f"{r['auc']:.4f}",
                             _tpr_cell(r.get("tpr_at_fpr_1e-5")), _tpr_cell(r.get("tpr_at_fpr_1e-4")),
                             _tpr_cell(r.get("tpr_at_rate")), "trivial cut, same events"])
        rate = mt.get("target_rate_khz")
        fw_rate = str(mt.get("target_rate_source", "")).startswith("the rate the firmware")
        rate_head = (f"TPR @ {rate:g} kHz" + (" (the firmware's rate)" if fw_rate else "")) if rate else "TPR @ rate"
        add(_table(["signal", "model", "AUC", "TPR @ FPR 1e-5", "TPR @ FPR 1e-4", rate_head, "source"], rows, "llrrrrl"))
        if rate and mt.get("target_rate_source"):
            add("")
            add(f"The TPR @ {rate:g} kHz column: {mt['target_rate_source']}.")
        for ln in _baseline_verdicts(mt, bases):
            add("")
            add(ln)
        _render_ensemble(add, mt)
        _render_tail(add, mt)
        ag = mt.get("firmware_agreement")
        if ag:
            add("")
            add(f"Firmware emulation vs Keras quantized model on {_num(ag['n_events'])} background events: "
                f"{100 * (ag['identical_fraction'] or 0):.2f} % identical scores, largest difference "
                f"{_num(ag['max_abs_difference'])}.")
        for n in mt.get("notes", []):
            add(f"\n* {n}")
        add("")
        mplots = _plots_for(plots, "metrics")
        if mplots:
            add("The ROC curve shows the signal efficiency against the background efficiency as the score threshold "
                "moves; the shaded bands are 68 % Clopper-Pearson intervals of each point (vertical: the number of "
                "signal events above the threshold; horizontal: the number of background events above it, which "
                "dominates at the tiny rates of a Level-1 trigger). The score distributions show where background "
                "and signal events fall; the solid black line is the threshold built into the firmware, the dashed "
                "lines the working points of the menu below (the trigger fires right of a line). When the firmware "
                "emulation is bit-exact its curves lie on top of the quantized model's.")
            add("")
        for p in mplots:
            add(p)
            add("")
    else:
        add(f"*Absent:* {mt.get('reason') if isinstance(mt, dict) else 'not collected'}")
        add("")
        _add_physics_command(add, report)

    _render_trigger_section(add, report)

    # ---- implementation
    add("## Latency and resources: three sources side by side")
    add("")
    for k in ("parsed", "measured", "estimated"):
        add(f"* **{_KIND_TEXT[k]}**")
    add("")
    impl = report.get("implementation")
    if isinstance(impl, dict) and impl.get("table"):
        clocks = impl.get("clocks", {})
        add("Clock periods: " + ", ".join(f"{fl} {_num(c['value'])} ns ({c['source']})" for fl, c in clocks.items()) + ".")
        add("")
        rows = []
        for r in impl["table"]:
            def cell(kind):
                vals = r[kind]
                return "; ".join(f"{_num(v['value'])} ({v['source']})" for v in vals) if vals else "—"
            rows.append([r["flavour"], _FIGURE_TEXT.get(r["figure"], r["figure"]), cell("parsed"), cell("measured"),
                         cell("estimated")])
        add(_table(["flavour", "figure", "parsed", "measured", "estimated"], rows))
    else:
        add(f"*Absent:* {impl.get('reason') if isinstance(impl, dict) else 'not collected'}")
    if isinstance(impl, dict) and impl.get("absent_sources"):
        add("")
        add("Missing sources:")
        add("")
        for a in impl["absent_sources"]:
            add(f"* {a['kind']}: {a['reason']}")
    add("")

    # ---- budget
    add("## Latency budget")
    add("")
    if _ok(b):
        for flavour, p in b["profiles"].items():
            add(f"### {flavour}")
            add("")
            if not _ok(p):
                add(f"*Absent:* {p.get('reason')}")
                add("")
                continue
            add(f"**{'PASS' if p['passed'] else 'FAIL'}** — {p['verdict']}")
            add("")
            add(_table(["layer", "cycles", "ns", "cumulative ns", "source"],
                       [[r["name"], r["cycles"], f"{r['ns']:.2f}", f"{r['cumulative_ns']:.2f}", r["source"]]
                        for r in p["layers"]]
                       + [["**total**", p["total_cycles"], f"{p['total_ns']:.2f}", "", p["total_source"]]], "lrrrl"))
            add("")
            add(f"Clock {p['clock_period_ns']:g} ns ({p.get('clock_source', '')}); a new event every "
                f"{p['ii_cycles']} cycle(s) ({p['ii_ns']:g} ns); slack {p['slack_ns']:+.2f} ns.")
            add("")
            if p.get("resources"):
                add(_table(["resource", "used", f"available on {p['part']}", "percent", "source"],
                           [[k, _num(v), _num((p.get("part_totals") or {}).get(k)), _pct(p["resource_percent"].get(k)),
                             p.get("resource_sources", {}).get(k, "")] for k, v in p["resources"].items()], "lrrrl"))
                add("")
        for pl in _plots_for(plots, "budget"):
            add(pl)
            add("")
    else:
        add(f"*Absent:* {b.get('reason') if isinstance(b, dict) else 'not collected'}")
        add("")

    add("## Resources against the FPGA part")
    add("")
    part = report.get("part")
    if _ok(part):
        add(f"Part {part['name']} ({part['source']}): " + ", ".join(f"{_num(v)} {k}" for k, v in part["totals"].items()) + ".")
        add("")
        for pl in _plots_for(plots, "resources"):
            add(pl)
            add("")
    else:
        add(f"*Absent:* {part.get('reason') if isinstance(part, dict) else 'not collected'}")
        add("")

    # ---- bit widths
    add("## Bit widths per layer")
    add("")
    bw = report.get("bitwidths")
    if _ok(bw):
        add(f"Fixed-point widths in bits (source: {bw['source']}). Narrower weights and activations mean smaller "
            "multipliers; the accumulator holds the sum of a layer's products.")
        add("")
        add(_table(["layer", "kind", "weight", "bias", "accum", "result"],
                   [[r["layer"], r.get("kind", ""), r.get("weight", "—"), r.get("bias", "—"), r.get("accum", "—"),
                     r.get("result", "—")] for r in bw["layers"]], "llrrrr"))
        add("")
        for pl in _plots_for(plots, "bitwidths"):
            add(pl)
            add("")
    else:
        add(f"*Absent:* {bw.get('reason') if isinstance(bw, dict) else 'not collected'}")
        add("")

    # ---- analytic model
    add("## Analytic hls4ml Latency model (per layer)")
    add("")
    an = report.get("analytic")
    if _ok(an):
        a = an.get("assumptions", {})
        add(f"Source: {an['source']} on {an.get('firmware_model', '')}. Assumptions: clock {a.get('clock_ns')} ns, "
            f"{a.get('levels_per_cycle')} adder levels per cycle, a product goes to a DSP when both operands are wider "
            f"than {a.get('dsp_min_width')} bits (zero, power-of-two and 1-bit products are free).")
        if an.get("note"):
            add(f"\n> {an['note']}")
        add("")
        add(_table(["layer", "kind", "multipliers", "DSP", "LUT", "FF", "cycles", "note"],
                   [[r["layer"], r["kind"], r["multipliers"], r["dsp"], _num(r["lut"]), _num(r["ff"]), r["cycles"],
                     r.get("note", "")] for r in an["layers"]]
                   + [["**total**", "", an["totals"]["multipliers"], an["totals"]["DSP"], _num(an["totals"]["LUT"]),
                       _num(an["totals"]["FF"]), an["totals"]["cycles"], ""]], "llrrrrrl"))
    else:
        add(f"*Absent:* {an.get('reason') if isinstance(an, dict) else 'not collected'}")
    add("")

    # ---- calibration
    add("## How good are the estimates?")
    add("")
    cal = report.get("calibration")
    if _ok(cal):
        add("Relative error = (estimate − measurement) / measurement, for the same design.")
        add("")
        add(_table(["flavour", "figure", "estimate", "measurement", "relative error", "note"],
                   [[r["flavour"], r["figure"], f"{_num(r['estimated'])} ({r['estimate_source']})",
                     f"{_num(r['measured'])} ({r['measured_source']})",
                     "not comparable" if r["rel_error"] is None else f"{100 * r['rel_error']:+.1f} %", r.get("note", "")]
                    for r in cal["rows"]]))
    else:
        add(f"*Absent:* {cal.get('reason') if isinstance(cal, dict) else 'not collected'}")
    add("")

    add("## Glossary")
    add("")
    add("* **LUT**: look-up table, the FPGA's basic logic cell; **FF**: flip-flop (one stored bit); **DSP**: hard "
        "multiplier block (27 × 18 bits); **BRAM_18K**: 18 Kb block memory.")
    add("* **BX**: bunch crossing, 25 ns at the LHC; **II**: initiation interval, cycles between two accepted events.")
    add("* **EBOPs**: HGQ2's effective bit operations, the sum over multiplications of the product of operand widths — "
        "a resource proxy minimised during training.")
    for n in report.get("render_notes", []):
        add(f"* note: {n}")
    add("")
    return "\n".join(md)


# ----------------------------------------------------------------------------- html


def render_html(markdown_text: str, report: dict, image_dir: Path) -> str:
    """Self-contained HTML of ``markdown_text``: every ``<img src="x.png">`` becomes a base64 data URI."""
    from markdown_it import MarkdownIt

    # html=False: text such as "<name>_prj" in a reason is shown, not swallowed as a tag
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)

    def inline(mt: re.Match) -> str:
        name = html.unescape(mt.group(1))
        p = image_dir / name
        if "/" in name or not p.is_file():
            return mt.group(0)
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}"'

    body = re.sub(r'<img src="([^"]+\.png)"', inline, body)
    cls, _, _ = _overall(report)
    body = re.sub(r"<h2>Verdict: ([^<]*)</h2>",
                  lambda mt: f'<div class="verdict {cls}">Verdict: {mt.group(1)}</div>', body, count=1)
    title = html.escape(report.get("title", "Trigger firmware report"))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


# ----------------------------------------------------------------------------- entry point


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_json"):
        return o.to_json()
    return str(o)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


#: the stage name of a report directory (its marker is ``report.json`` with ``format`` trigger_ml.report)
STAGE = "report"


def _report_inputs(report: dict[str, Any], extra: Sequence[str | os.PathLike | None] = ()) -> list[Path]:
    """What a report reads: the run / firmware directories it found (and the run's source data), plus ``extra``."""
    found = report.get("inputs") if isinstance(report.get("inputs"), dict) else {}
    paths = [found.get(k) for k in ("run", "hls", "rtl")]
    return [Path(p) for p in [*paths, *extra] if p]


def report_destination(
    path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    signals: Sequence[str | os.PathLike] = (),
    background: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Where `trigger-ml report PATH [--out OUT]` writes, checked before any work.

    Default: ``PATH/report`` when PATH holds the run / firmware directories, ``PATH_report`` next to
    PATH when PATH is itself a run or firmware directory (a report never goes inside what it reads).
    Refused (one-line ArtifactError): an output equal to, containing or inside a directory the report
    reads or a signal/background file, a missing parent, an existing output that is not a report
    (even with ``force``), an existing report without ``force``.
    """
    from trigger_ml.core.artifacts import check_output
    from trigger_ml.reports.collect import discover

    found = discover(path)
    if out_dir is None:
        root = Path(path)
        if root.absolute() in {Path(p).absolute() for k in ("run", "hls", "rtl") if (p := found[k]) is not None}:
            out_dir = root.absolute().parent / f"{root.absolute().name}_report"
        else:
            out_dir = root / "report"
    inputs = [found[k] for k in ("run", "hls", "rtl")] + [*signals, background]
    return check_output(out_dir, inputs, STAGE, force)


def write_report(
    report: dict[str, Any], out_dir: str | os.PathLike, force: bool = False,
    inputs: Sequence[str | os.PathLike | None] = (),
) -> Path:
    """Write ``report.md``, ``report.html`` (self-contained), ``report.json`` and the PNG plots into
    ``out_dir`` atomically. An existing ``out_dir`` raises ArtifactError unless ``force`` - and even
    then unless it is an earlier report; ``out_dir`` must not be, contain or lie inside what the
    report read (the run / firmware directories recorded in ``report["inputs"]`` and ``inputs``,
    e.g. the signal and background files)."""
    from trigger_ml.core.artifacts import atomic_dir, check_output

    if not isinstance(report, dict):
        raise ArtifactError(f"report must be a dict (from collect_report), got {type(report).__name__}")
    out = check_output(out_dir, _report_inputs(report, inputs), STAGE, force)
    report = json.loads(json.dumps(report, default=_json_default))  # private, JSON-clean copy
    pc = report.get("physics_command")
    if _ok(pc) and pc.get("argv"):  # the exact command: this report's directory, replaced
        import shlex

        pc["command"] = shlex.join([*pc["argv"], "--out", str(out), "--force"])
    with atomic_dir(out, force=force, stage=STAGE) as tmp:
        plots = make_plots(report, tmp)
        text = render_markdown(report, plots)
        (tmp / "report.md").write_text(text, encoding="utf-8")
        (tmp / "report.html").write_text(render_html(text, report, tmp), encoding="utf-8")
        payload = _finite({"format": "trigger_ml.report", **report, "plots": plots})  # the report marker
        (tmp / "report.json").write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return out
