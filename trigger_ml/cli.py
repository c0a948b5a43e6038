"""``trigger-ml`` command line: a thin typer layer over the Python API.

Exit codes: 0 ok, 1 user error (one-line message, no traceback), 2 internal error.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

import trigger_ml
from trigger_ml.core.errors import TriggerMLError

app = typer.Typer(help="Quantized neural networks for the L1 trigger.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Generate and inspect L1 event files (ADC2021 layout).", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)
out = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
        TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal,
    )


def _version(value: bool) -> None:
    if value:
        out.print(f"trigger_ml {trigger_ml.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Quantized neural networks for the L1 trigger."""


class SignalChoice(str, Enum):
    none = "none"
    Ato4l = "Ato4l"
    LQ_btau = "LQ_btau"
    h0_tautau = "h0_tautau"
    hplus_taunu = "hplus_taunu"
    all = "all"


@data_app.command("generate")
def data_generate(
    out_path: Path = typer.Option(..., "--out", help="Output .h5 file (with --signal all: one file per signal, suffixed)."),
    events: int = typer.Option(100_000, "--events", min=1, help="Number of events (after the lepton filter)."),
    signal: SignalChoice = typer.Option(SignalChoice.none, "--signal", help="'none' for the background mixture."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same bytes."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Generate synthetic L1 events in the ADC2021 layout."""
    from trigger_ml.data.synth import SIGNALS, generate_file

    if signal == SignalChoice.none:
        jobs = [("background", out_path)]
    elif signal == SignalChoice.all:
        jobs = [(s, out_path.with_name(f"{out_path.stem}_{s}{out_path.suffix or '.h5'}")) for s in SIGNALS]
    else:
        jobs = [(signal.value, out_path)]
    for sample, path in jobs:
        if path.exists() and not force:
            raise TriggerMLError(f"{path}: exists; pass --force to overwrite")
    for sample, path in jobs:
        with _progress() as prog:
            task = prog.add_task(f"{sample} → {path.name}", total=events)
            generate_file(path, events, sample, seed, force=force, progress=lambda n: prog.update(task, completed=n))
        out.print(f"wrote {path} ({events:,} {sample} events, seed {seed})")


@data_app.command("inspect")
def data_inspect(
    path: Path = typer.Argument(..., help="Events file in the ADC2021 layout."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Validate a file and print counts and per-object pT/eta/phi summaries."""
    from trigger_ml.data.summary import summarize

    with _progress() as prog:
        task = prog.add_task(f"reading {path.name}", total=None)
        s = summarize(path, progress=lambda d, t: prog.update(task, completed=d, total=t))
    if as_json:
        out.print_json(json.dumps(s))
        return
    out.print(f"[bold]{s['path']}[/]: {s['n_events']:,} events ({s['dtype']})")
    t = Table("object", "count", "per event", "pT mean [GeV]", "pT max", "η min", "η max", "φ min", "φ max")
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for kind, o in s["objects"].items():
        t.add_row(kind, f"{o['count']:,}", f"{o['per_event']:.2f}", f(o["pt_gev"]["mean"]), f(o["pt_gev"]["max"]),
                  f(o["eta"]["min"]), f(o["eta"]["max"]), f(o["phi"]["min"]), f(o["phi"]["max"]))
    out.print(t)
    if s["processes"]:
        n = s["n_events"]
        out.print("processes: " + ", ".join(f"{k} {v / n:.1%}" for k, v in s["processes"].items()))


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="Model config YAML (see models/)."),
    data: Path = typer.Option(..., "--data", help="Background events (.h5) or, for the classifier, a jets table (.csv/.parquet)."),
    out_dir: Path = typer.Option(..., "--out", help="Artifact directory to create."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the config seed."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Train an ensemble of k seeds into OUT/seed0..k-1."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    max_events: Optional[int] = typer.Option(None, "--max-events", min=1),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher artifact (cicada-student)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Export the float twin to ONNX and cross-check it."),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Quantization-aware training of a zoo model (and its float twin)."""
    from trigger_ml.models.config import load_model_config
    from trigger_ml.train import train

    cfg = load_model_config(config)
    base = cfg.seed if seed is None else seed
    runs = [(out_dir, base)] if seeds == 1 else [(out_dir / f"seed{i}", base + i) for i in range(seeds)]
    if seeds > 1 and out_dir.exists() and not force:
        raise TriggerMLError(f"{out_dir}: exists; pass --force to overwrite")
    for path, s in runs:
        train(cfg, data, path, seed=s, epochs=epochs, max_events=max_events, teacher=teacher, force=force, log=out.print)
        if onnx and cfg.kind != "classifier":
            from trigger_ml.onnx_export import export_float_onnx
            from trigger_ml.train import load_artifact

            x = load_artifact(path).inputs_from_file(data, stop=2000)
            r = export_float_onnx(path, x)
            out.print(f"ONNX float reference {r['path']}: max |diff| {r['max_abs_diff']:.3g} "
                      f"(rel {r['max_rel_diff']:.2g}) {'ok' if r['passed'] else 'FAILED'}")


@app.command("evaluate")
def evaluate_cmd(
    runs: list[Path] = typer.Argument(..., help="Artifact directories (or one directory of seed* runs)."),
    signals: list[Path] = typer.Option(..., "--signals", help="Signal event files (repeat the option)."),
    background: Optional[Path] = typer.Option(None, "--background", help="Held-out background (default: unused training events)."),
    rate_khz: float = typer.Option(10.0, "--rate-khz", help="Target trigger rate for TPR@rate."),
    bx_rate_mhz: float = typer.Option(40.0, "--bx-rate-mhz", help="Bunch-crossing rate (28.6 for filled bunches)."),
    max_events: Optional[int] = typer.Option(None, "--max-events"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """AUC and TPR at FPR 1e-5 / 1e-4 / target rate, float twin vs quantized."""
    from trigger_ml.evaluate import evaluate

    res = evaluate(runs, signals, background, max_events=max_events, target_rate_khz=rate_khz, bx_rate_hz=bx_rate_mhz * 1e6)
    if as_json:
        out.print_json(json.dumps(res))
        return
    t = Table("signal", "model", "AUC", "TPR@1e-5", "TPR@1e-4", f"TPR@{rate_khz:g} kHz", "bkg above (1e-4)")
    fmt = lambda d: "n/a" if d.get("tpr") is None else f"{d['tpr']:.4f}"  # noqa: E731
    if "ensemble" in res:
        for sig, kinds in res["ensemble"].items():
            for k, m in kinds.items():
                ms = lambda d: "n/a" if d["mean"] is None else f"{d['mean']:.4f} ± {d['std']:.4f}"  # noqa: E731
                t.add_row(sig, k, ms(m["auc"]), ms(m["tpr_at_fpr_1e-5"]), ms(m["tpr_at_fpr_1e-4"]), "", "")
    else:
        for sig, kinds in res["signals"].items():
            for k, m in kinds.items():
                t.add_row(sig, k, f"{m['auc']:.4f}", fmt(m["tpr_at_fpr_1e-5"]), fmt(m["tpr_at_fpr_1e-4"]),
                          fmt(m.get("tpr_at_rate", {})), str(m["tpr_at_fpr_1e-4"].get("n_background_above", "-")))
        out.print(f"background: {res['background']} ({res['n_background']:,} events)")
    out.print(t)


class Flavor(str, Enum):
    hls = "hls"
    verilog = "verilog"
    vhdl = "vhdl"


@app.command("convert")
def convert_cmd(
    run: Path = typer.Argument(..., help="Trained model artifact directory."),
    out_dir: Path = typer.Option(..., "--out", help="Firmware project directory to create."),
    flavor: Flavor = typer.Option(Flavor.hls, "--flavor", help="hls (hls4ml project) or verilog/vhdl (da4ml RTL)."),
    backend: str = typer.Option("Vitis", "--backend", help="hls4ml backend: Vitis, Vivado or oneAPI."),
    part: Optional[str] = typer.Option(None, "--part", help="FPGA part (default xcvu13p-flga2577-2-e)."),
    clock_ns: float = typer.Option(5.0, "--clock-ns", help="Clock period in ns."),
    strategy: str = typer.Option("Latency", "--strategy"),
    reuse: str = typer.Option("1", "--reuse", help="Reuse factor: N, or per layer 'enc0=2,enc1=4'."),
    latency_cutoff: float = typer.Option(5.0, "--latency-cutoff", help="alkaid pipelining: max adder depth per stage (RTL flavours)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Trigger threshold on the score."),
    rate_khz: Optional[float] = typer.Option(None, "--rate-khz", help="Calibrate the threshold to this rate instead."),
    bx_rate_mhz: float = typer.Option(40.0, "--bx-rate-mhz"),
    data: Optional[Path] = typer.Option(None, "--data", help="Background events for the rate calibration (held-out part) and test vectors (default: the training file)."),
    score: Optional[str] = typer.Option(None, "--score", help="Score output 'name' or 'name[i]' when the model has several output values."),
    force: bool = typer.Option(False, "--force"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write a firmware project: hls4ml (bit-exact precisions from HGQ2) or da4ml/alkaid RTL."""
    from trigger_ml.firmware.convert import convert_run
    from trigger_ml.firmware.spec import FirmwareSpec

    spec = FirmwareSpec.make(flavor=flavor.value, backend=backend, part=part, clock_ns=clock_ns, strategy=strategy,
                             reuse_factor=FirmwareSpec.parse_reuse(reuse), latency_cutoff=latency_cutoff,
                             threshold=threshold, rate_khz=rate_khz, bx_rate_hz=bx_rate_mhz * 1e6, score_output=score)
    res = convert_run(run, out_dir, spec, data=data, force=force, log=out.print)
    if as_json:
        out.print_json(json.dumps(res))


@app.command("verify")
def verify_cmd(
    run: Path = typer.Argument(..., help="Trained model artifact directory."),
    events: Path = typer.Option(..., "--events", help="Events file (ADC2021 layout)."),
    hls_dir: Optional[Path] = typer.Option(None, "--hls", help="hls4ml firmware directory (from convert)."),
    rtl_dir: Optional[Path] = typer.Option(None, "--rtl", help="RTL directory (from convert --flavor verilog)."),
    n_events: int = typer.Option(100_000, "--n-events", min=1),
    signals: list[Path] = typer.Option([], "--signals", help="Signal files for the TPR shift (optional)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON report here."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cross-check float, quantized Keras, C-sim, emulator, da4ml and RTL simulation; localize mismatches."""
    from trigger_ml.verify import verify, write_report

    res = verify(run, events, hls_dir=hls_dir, rtl_dir=rtl_dir, n_events=n_events, signals=signals, log=out.print)
    if report:
        write_report(res, report)
    if as_json:
        out.print_json(json.dumps(res))
    else:
        t = Table("pair (reference:other)", "events", "mismatching values", "max |diff|", "mean |diff|")
        for k, p in res["exact_pairs"].items():
            t.add_row(k, f"{p.get('n_events', 0):,}", f"{p.get('mismatches', '?'):,}", f"{p.get('max_abs_diff', 0):.3g}",
                      f"{p.get('mean_abs_diff', 0):.3g}")
        out.print(t)
        if "quantized_vs_float" in res:
            q = res["quantized_vs_float"]
            out.print(f"quantized vs float: pearson {q['pearson']:.4f}, spearman {q['spearman']:.4f}, "
                      f"KS {q['ks_statistic']:.4f} (p={q['ks_pvalue']:.2g}), sliced W1 {q['sliced_wasserstein']:.4g}")
        if "localization" in res:
            loc = res["localization"]
            out.print(f"[red]mismatch[/]: {loc.get('kind')} in layer {loc.get('layer')}: {loc.get('suggestion')}")
    if res["total_mismatches"]:
        raise TriggerMLError(f"{res['total_mismatches']} bit-exact mismatches (see the table above)")


@app.command("emulate")
def emulate_cmd(
    firmware: Path = typer.Argument(..., help="Firmware directory from convert: hls4ml project or RTL project."),
    background: list[Path] = typer.Option(..., "--background", help="Background event files (repeatable); the model's training file is scored only beyond the events training read."),
    signals: list[Path] = typer.Option([], "--signals", help="Signal event files (repeatable)."),
    menu: Optional[str] = typer.Option(None, "--menu", help="Working points NAME=RATE_KHZ,... (default VLoose..VTight)."),
    bx_rate_mhz: float = typer.Option(40.0, "--bx-rate-mhz", help="40 nominal, 28.6 for filled bunches."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Write triggered events here (.h5)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="'local' for a Dask LocalCluster or a scheduler address."),
    chunk_size: int = typer.Option(262_144, "--chunk-size", min=1),
    force: bool = typer.Option(False, "--force"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Emulate the trigger: thresholds per working point, rates, efficiencies, pure rate, catalog."""
    from trigger_ml.trigger.run import emulate, parse_menu

    with _progress() as prog:
        tasks: dict[str, int] = {}

        def cb(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total)
            prog.update(tasks[name], completed=done)

        res = emulate(firmware, background, signals, menu_khz=parse_menu(menu), bx_rate_hz=bx_rate_mhz * 1e6,
                      catalog=catalog, scheduler=scheduler, chunk_size=chunk_size, force=force, progress=cb)
    if as_json:
        out.print_json(json.dumps(res))
        return
    out.print(f"{res['events']:,} events emulated in {res['seconds']} s ({res['events_per_s']:,} events/s, "
              f"{res['scheduler']}); score type {res['score_type']}; reference menu rate {res['reference_menu_rate_khz']:.1f} kHz")
    out.print(f"background: {'; '.join(res['background'])}")
    ft = res.get("firmware_threshold")
    if ft:
        out.print(f"firmware built with threshold {ft['value']:.6g} (raw {ft['raw']}): "
                  f"{ft['rate_khz_here']:.3g} kHz on this background")
    sig_names = next((list(r["signals"]) for r in res["working_points"].values() if r["signals"]), [])
    t = Table("WP", "threshold", "rate [kHz]", "pure rate [kHz]", *[f"{s} eff (unique)" for s in sig_names])
    for wp, row in res["working_points"].items():
        th = row["threshold"]
        if th is None:  # not calibratable on this background (the reason is one line)
            t.add_row(wp, "-", f"not calibrated: {row['error']}", "-", *["-" for _ in sig_names])
            continue
        lo, hi = th["rate_interval_khz_68"]
        cells = [f"{row['signals'][s]['efficiency']:.4f} ({row['signals'][s]['unique_efficiency']:.4f})" for s in sig_names]
        t.add_row(wp, f"{th['value']:.6g}", f"{th['rate_khz']:.2f} [{lo:.2f}, {hi:.2f}]", f"{row['pure_rate_khz']:.2f}", *cells)
    out.print(t)
    if "catalog" in res:
        out.print(f"catalog: {res['catalog']['events']:,} triggered events → {res['catalog']['path']}")


_MEASURE_TOOL = {"resources": "yosys synth_xilinx", "latency": "Verilator"}


def _measure_progress():
    """(context, callback) showing `trigger-ml measure` progress on stderr: a rich status line (spinner,
    elapsed time, current Yosys pass) on a terminal, otherwise a plain line per step and every 30 s."""
    import contextlib

    status = console.status("measuring", spinner="dots") if console.is_terminal else None
    last: dict[str, float] = {}

    def progress(step: str, elapsed: float, detail: str | None) -> None:
        m, sec = divmod(int(elapsed), 60)
        text = f"{step}: {_MEASURE_TOOL.get(step, step)} {m}:{sec:02d}" + (f" · {detail[:70]}" if detail else "")
        if status is not None:
            status.update(text)
        elif step not in last or elapsed - last[step] >= 30:
            console.print(text, highlight=False, soft_wrap=True)
            last[step] = elapsed

    return (status if status is not None else contextlib.nullcontext()), progress


@app.command("measure")
def measure_cmd(
    firmware_dir: Path = typer.Argument(..., help="Firmware project: da4ml RTL (rtl_manifest.json) or hls4ml project."),
    timeout: float = typer.Option(1800.0, "--timeout", min=0.001,
                                  help="Stop Yosys after S seconds (recorded as 'not measured (timeout after S s)')."),
    part: Optional[str] = typer.Option(None, "--part", help="FPGA part or synth_xilinx family (default: the project's, else xcvu13p)."),
    what: str = typer.Option("resources,latency", "--what", help="resources (Yosys) and/or latency (Verilator), comma-separated."),
    force: bool = typer.Option(False, "--force", help="Measure again although measurements.json holds this design's figures."),
    as_json: bool = typer.Option(False, "--json", help="Print the recorded measurements as JSON."),
) -> None:
    """Measure resources (Yosys synth_xilinx) and latency (Verilator); writes measurements.json for `report`."""
    from trigger_ml.measure import measure

    shown, progress = _measure_progress()
    with shown:
        res = measure(firmware_dir, what=what, timeout_s=timeout, part=part, force=force, progress=progress)
    steps = list(res["cached"])
    if as_json:
        out.print_json(json.dumps(res))
    else:
        out.print(f"{res['path']} ({res['kind']}, top {res['top']}, design {res['design_hash'][:12]})", highlight=False,
                  soft_wrap=True)
        t = Table("figure", "value", "source")
        for step in steps:
            e = res[step]
            if e.get("status") != "measured":
                t.add_row(step, "—", e.get("source", "not measured"))
                continue
            for name, f in e["figures"].items():
                v = f["value"]
                t.add_row(name, f"{v:,}" if isinstance(v, int) else f"{v:g}", f["source"])
        out.print(t)
        for step in steps:
            e = res[step]
            if e.get("status") != "measured":
                continue
            when = ("recorded earlier for this design" if res["cached"][step]
                    else "from the yosys result cache" if e.get("synth_cache") == "hit" else "measured now")
            out.print(f"{step}: {when} ({e.get('tool')}, {e.get('seconds', 0):.1f} s)", highlight=False, soft_wrap=True)
        out.print(f"written to {res['file']}", highlight=False, soft_wrap=True)
    missing = [s for s in steps if res[s].get("status") != "measured"]
    for s in missing:
        if not res[s].get("measurable", True):  # e.g. the latency of an hls4ml project: not an open-tool figure
            console.print(f"note: {s} {res[s].get('source')}", highlight=False, soft_wrap=True)
    failed = [s for s in missing if res[s].get("measurable", True)]
    if failed or len(missing) == len(steps):
        reasons = [f"{s} {res[s].get('source', 'not measured')}" for s in (failed or missing)]
        raise TriggerMLError("; ".join(reasons) + f" (recorded in {res['file']})")


@app.command("report")
def report_cmd(
    path: Path = typer.Argument(..., help="A run, a firmware directory, or a parent holding them (e.g. a demo output)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Report directory (default PATH/report)."),
    budget_ns: Optional[float] = typer.Option(None, "--budget-ns", help="Latency budget in ns (wins over --budget-bx)."),
    budget_bx: float = typer.Option(2.0, "--budget-bx", help="Latency budget in bunch crossings (25 ns)."),
    part: Optional[str] = typer.Option(None, "--part", help="FPGA part for resource percentages."),
    signals: list[Path] = typer.Option([], "--signals", help="Signal files for ROC/score plots."),
    background: Optional[Path] = typer.Option(None, "--background"),
    measure: Optional[bool] = typer.Option(None, "--measure/--no-measure", hidden=True,
                                           help="Ignored: the report only reads; use `trigger-ml measure`."),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Latency/resource table from three sources (vendor, measurements.json, estimates), budget verdict, plots.

    Reads only: measured figures come from `trigger-ml measure` (measurements.json)."""
    from trigger_ml.reports.collect import collect_report
    from trigger_ml.reports.render import write_report

    if measure:
        console.print("note: `report --measure` no longer measures; run `trigger-ml measure FIRMWARE_DIR` first")
    rep = collect_report(path, budget_ns=budget_ns, budget_bx=budget_bx, part=part, signals=signals,
                         background=background, log=out.print)
    dest = write_report(rep, out_dir or Path(path) / "report", force=force)
    out.print(f"report written to {dest}")


@app.command("scan")
def scan_cmd(
    config: Path = typer.Argument(..., help="Scan YAML (base model config + grid/random space), e.g. models/scan-example.yaml."),
    out_dir: Path = typer.Option(..., "--out", help="Scan directory (results.parquet/csv, pareto.png/json); resumable."),
    background: Optional[Path] = typer.Option(None, "--background", help="Background events (or settings.background)."),
    signals: list[Path] = typer.Option([], "--signals", help="Signal files (or settings.signals)."),
    scheduler: str = typer.Option("local", "--scheduler", help="'local' (LocalCluster), 'none' (in-process) or an address."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    max_events: Optional[int] = typer.Option(None, "--max-events", min=1),
    flavor: Optional[str] = typer.Option(None, "--flavor", help="verilog (da4ml, default) or hls."),
    restart: bool = typer.Option(False, "--restart", help="Discard results of a different setup in OUT."),
) -> None:
    """Grid/random design-space scan on Dask; streams a resumable results table and draws the Pareto front."""
    from trigger_ml.scan import load_scan_config, pareto_front, run_scan

    with _progress() as prog:
        task = prog.add_task("scan points", total=None)
        df = run_scan(load_scan_config(config), out_dir, background=background, signals=signals or None,
                      scheduler=None if scheduler == "none" else scheduler, n_workers=workers, epochs=epochs,
                      max_events=max_events, flavor=flavor, restart=restart, log=out.print,
                      progress=lambda done, total, row: prog.update(task, completed=done, total=total))
    ok = df[df["status"] == "ok"] if "status" in df else df
    out.print(f"{len(ok)}/{len(df)} points ok; results in {out_dir}/results.parquet, front in {out_dir}/pareto.png")
    if len(ok):
        front = pareto_front(ok)
        cols = [c for c in ("key", "tpr", "auc", "luts", "latency_ns") if c in front]
        out.print(front[cols].to_string(index=False))


@app.command("demo")
def demo(
    out_dir: Path = typer.Option(Path("demo_out"), "--out", help="Output directory."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    seed: int = typer.Option(0, "--seed"),
    full: bool = typer.Option(False, "--full", help="Also train the ADC DNN autoencoder."),
    quick: bool = typer.Option(False, "--quick", help="Reduced sizes (CI smoke run)."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Run yosys synthesis (minutes on big designs)."),
) -> None:
    """Run the end-to-end job on the embedded synthetic dataset."""
    from trigger_ml.demo import run_demo

    kw = dict(n_background=40_000, n_signal=4_000, epochs=1, n_train=20_000, n_verify=20_000) if quick else {}
    m = run_demo(out_dir, seed=seed, force=force, full=full, measure=measure, log=out.print, **kw)
    t = Table("signal", "AUC float", "AUC firmware", "TPR@1e-5 float", "TPR@1e-5 firmware")
    f = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    for s in m["auc"]:
        t.add_row(s, f(m["auc"][s]["float"]), f(m["auc"][s]["firmware"]), f(m["tpr_at_fpr_1e-5"][s]["float"]),
                  f(m["tpr_at_fpr_1e-5"][s]["firmware"]))
    out.print(t)
    out.print("mismatches: " + ", ".join(f"{k} {v}" for k, v in m["mismatches"].items()))
    out.print(f"emulator {m['emulator_events_per_s']['value']:,} events/s; latency {m['latency_cycles']['value']} cycles = "
              f"{m['latency_ns']['value']} ns ({m['latency_ns']['source']}); LUT {m['luts']['value']}, FF {m['ffs']['value']}, "
              f"DSP {m['dsps']['value']} ({m['luts']['source']})")
    out.print(f"demo written to {out_dir} in {m['timings_s']['total']} s")


def main() -> None:
    """Console entry point with the exit-code policy (1 user error, 2 internal error)."""
    try:
        app(standalone_mode=False)
    except TriggerMLError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, never wrapped
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        sys.exit(getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0)
    except typer.Abort:
        console.print("aborted")
        sys.exit(1)
    except Exception as exc:  # click usage errors are user errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(1)
        console.print_exception()
        sys.exit(2)


if __name__ == "__main__":
    main()
