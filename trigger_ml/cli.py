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
from trigger_ml.errors import TriggerMLError

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
    from trigger_ml.config import load_model_config
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


@app.command("demo")
def demo(
    out_dir: Path = typer.Option(Path("demo_out"), "--out", help="Output directory."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run the end-to-end job on the embedded synthetic dataset."""
    from trigger_ml.demo import run_demo

    run_demo(out_dir, seed=seed, force=force, log=out.print)
    out.print(f"demo written to {out_dir}")


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
