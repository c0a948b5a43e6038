"""Write a collected report (:func:`trigger_ml.reports.collect.collect_report`) as Markdown, HTML and JSON.

:func:`write_report` creates ``out_dir`` atomically (built in a temporary sibling directory and
renamed into place; an existing ``out_dir`` is refused unless ``force``) holding

* ``report.md``   - the human-readable report (tables + the plots as relative PNG links),
* ``report.html`` - the same content, self-contained: every plot is embedded as
  ``<img src="data:image/png;base64,...">`` so the file can be mailed or opened anywhere,
* ``report.json`` - every figure with its unit and ``source`` (the collected dict, plus the list
  of plots),
* ``*.png``       - the plots (matplotlib, Agg canvas; no display needed): ROC curves and score
  distributions per signal, the per-layer bit-width map, the latency-budget waterfall and the
  resources against the FPGA part.

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


def _plot_roc(report: dict, signal: str, path: Path) -> bool:
    m = report["metrics"]
    curves = m.get("roc", {}).get(signal)
    if not curves:
        return False
    fig = _new_figure()
    ax = fig.add_subplot()
    for model, c in curves.items():
        color, ls = _MODEL_STYLE.get(model, ("k", "-"))
        fpr = [f for f in c["fpr"]]
        tpr = c["tpr"]
        pts = [(f, t) for f, t in zip(fpr, tpr) if f > 0]
        if not pts:
            continue
        auc = m["signals"][signal][model]["auc"]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, ls=ls, lw=1.8,
                label=f"{_MODEL_TEXT.get(model, model)}, AUC {auc:.3f}")
    rate = m.get("target_rate_khz")
    if rate:
        fpr_rate = rate * 1e3 / m.get("bx_rate_hz", BX_RATE_HZ)
        ax.axvline(fpr_rate, color="tab:green", lw=1, ls="-.", label=f"{rate:g} kHz trigger rate")
    ax.set_xscale("log")
    ax.set_xlim(left=max(1.0 / max(m.get("n_background", 10), 10), 1e-7), right=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("background efficiency (false-positive rate)")
    ax.set_ylabel("signal efficiency (true-positive rate)")
    ax.set_title(f"ROC curve: {signal}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)
    return True


def _plot_scores(report: dict, signal: str, path: Path) -> bool:
    h = report["metrics"].get("score_hist", {}).get(signal)
    if not h or not h.get("counts"):
        return False
    fig = _new_figure()
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
    if h.get("log_x"):
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("anomaly score" + (" (log scale)" if h.get("log_x") else ""))
    ax.set_ylabel("fraction of events per bin")
    ax.set_title(f"Score distributions: background vs {signal}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


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
            if fn(report, *args, out_dir / file):
                plots.append({"file": file, "title": title, "section": section})
        except Exception as err:  # noqa: BLE001 - a broken plot must not lose the report
            report.setdefault("render_notes", []).append(f"plot {file} skipped: {type(err).__name__}: {err}")

    m = report.get("metrics")
    if _ok(m):
        for sig in m.get("signals", {}):
            attempt(_plot_roc, f"roc_{_slug(sig)}.png", f"ROC curve, {sig}", "metrics", sig)
            attempt(_plot_scores, f"scores_{_slug(sig)}.png", f"Score distributions, {sig}", "metrics", sig)
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
        add("Efficiency of the trigger on each signal for a given background efficiency. The background rate of a "
            f"Level-1 trigger is its background efficiency × the {mt.get('bx_rate_hz', BX_RATE_HZ) / 1e6:g} MHz "
            "bunch-crossing rate, so 1e-5 ≈ 0.4 kHz. TPR = true-positive rate (signal efficiency), with the "
            "number of background events the threshold rests on in brackets. "
            f"Background: {mt.get('background')} ({_num(mt.get('n_background'))} events).")
        add("")
        rows = []
        for sig, per in mt["signals"].items():
            for model, r in per.items():
                def tpr(key):
                    d = r.get(key) or {}
                    if d.get("tpr") is None:
                        return f"n/a ({d.get('reason', '')})" if d else "—"
                    return f"{d['tpr']:.3f} [{d.get('n_background_above', '?')}]"
                rows.append([sig, _MODEL_TEXT.get(model, model), f"{r['auc']:.4f}", tpr("tpr_at_fpr_1e-5"),
                             tpr("tpr_at_fpr_1e-4"), tpr("tpr_at_rate"), r.get("source", "")])
        rate = mt.get("target_rate_khz")
        add(_table(["signal", "model", "AUC", "TPR @ FPR 1e-5", "TPR @ FPR 1e-4", f"TPR @ {rate:g} kHz" if rate else "TPR @ rate",
                    "source"], rows, "llrrrrl"))
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
                "moves; the score distributions show where background and signal events fall. When the firmware "
                "emulation is bit-exact its curves lie on top of the quantized model's.")
            add("")
        for p in mplots:
            add(p)
            add("")
    else:
        add(f"*Absent:* {mt.get('reason') if isinstance(mt, dict) else 'not collected'}")
        add("")

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
    with atomic_dir(out, force=force, stage=STAGE) as tmp:
        plots = make_plots(report, tmp)
        text = render_markdown(report, plots)
        (tmp / "report.md").write_text(text, encoding="utf-8")
        (tmp / "report.html").write_text(render_html(text, report, tmp), encoding="utf-8")
        payload = _finite({"format": "trigger_ml.report", **report, "plots": plots})  # the report marker
        (tmp / "report.json").write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return out
