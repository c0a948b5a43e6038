"""``trigger-ml`` command line: a thin typer layer over the Python API.

The contract (see README "Exit codes"):

* exit 0 ok, 1 user error (one line ``error: ...`` on stderr, never a traceback; usage errors
  included), 2 internal error (one line naming the exception; ``TRIGGER_ML_DEBUG=1`` shows the
  traceback), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM; ``with`` blocks and ``finally``
  clauses run, so atomic writers remove their temporaries);
* ``--json``: stdout holds exactly one JSON document (the command's result); logs, progress and
  anything libraries or subprocesses print go to stderr;
* ``-h`` / ``--help`` on the app and on every command.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

import trigger_ml
from trigger_ml.core.constants import SCORE_CHUNK
from trigger_ml.core.errors import TriggerMLError

PROG = "trigger-ml"
DEBUG_ENV = "TRIGGER_ML_DEBUG"
EXIT_OK, EXIT_USER, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
_CONTEXT = {"help_option_names": ["-h", "--help"]}


def _plain_flags(params: list) -> list:
    """Flags take no value: show them without the ``<bool>`` type typer's rich help gives them."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx):
        return _plain_flags(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx):
        return _plain_flags(super().get_params(ctx))


app = typer.Typer(help="Quantized neural networks for the L1 trigger.", no_args_is_help=True, add_completion=False,
                  cls=_Group, context_settings=_CONTEXT, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Generate, inspect and compare L1 event files (ADC2021 layout).", no_args_is_help=True,
                       cls=_Group, context_settings=_CONTEXT, pretty_exceptions_enable=False)
app.add_typer(data_app, name="data")
console = Console(stderr=True, markup=False, soft_wrap=True)  # logs, progress, notes; markup off: paths and units keep their [...]
out = Console(markup=False, soft_wrap=True)  # results (human form)

JSON_HELP = "Print the result as one JSON document on stdout (logs and progress go to stderr)."
FORCE_HELP = "Overwrite existing outputs."


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
        TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal,
    )


def _table(*headers: str) -> Table:
    t = Table()
    for h in headers:  # Text: "[kHz]" is a unit, not rich markup
        t.add_column(Text(h))
    return t


def _row(t: Table, *cells: Any) -> None:
    t.add_row(*[c if isinstance(c, Text) else Text(str(c)) for c in cells])


# ---------------------------------------------------------------- --json: one document on stdout

def _jsonable(obj: Any) -> Any:
    """A JSON-clean copy: numpy scalars/arrays to Python, paths to str, NaN/inf to null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return _jsonable(obj.tolist())
    return str(obj)


def _emit_json(obj: Any) -> None:
    """Write the one JSON document of ``--json`` to stdout."""
    sys.stdout.write(json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """With ``--json``: everything written to stdout while the command works - our logs, library
    prints, C code and subprocesses writing to file descriptor 1 - goes to stderr instead, so that
    stdout ends up holding only the JSON document written after this block."""
    if not enabled:
        yield
        return
    saved = None
    try:
        sys.stdout.flush()
        if sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2:
            saved = os.dup(1)
            os.dup2(2, 1)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # captured streams (tests)
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _quiet_tensorflow() -> None:
    """Import TensorFlow with file descriptor 2 silenced: TF 2.21 writes absl/oneDNN start-up lines
    to stderr on import whatever TF_CPP_MIN_LOG_LEVEL says, which would break "one line on stderr"
    for the commands that load models. Import errors are not hidden: the stage imports it again
    and reports them."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return
    try:
        os.dup2(devnull, 2)
        with contextlib.suppress(Exception):
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _log(as_json: bool):
    """Where a stage's log lines go: stdout in human mode, stderr with ``--json``."""
    return console.print if as_json else out.print


def _require_new(path: Path, force: bool) -> None:
    """Refuse an existing output before any work."""
    if (path.exists() or path.is_symlink()) and not force:
        raise TriggerMLError(f"{path}: exists; pass --force to overwrite")


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


@data_app.command("generate", cls=_Command)
def data_generate(
    out_path: Path = typer.Option(..., "--out", help="Output .h5 file (with --signal all: one file per signal, suffixed)."),
    events: int = typer.Option(100_000, "--events", min=1, help="Number of events (after the lepton filter)."),
    signal: SignalChoice = typer.Option(SignalChoice.none, "--signal", help="Sample: 'none' for the background mixture, a signal name, or 'all' signals."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same bytes."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Generate synthetic L1 events in the ADC2021 layout."""
    from trigger_ml.data.synth import SIGNALS, generate_file

    if signal == SignalChoice.none:
        jobs = [("background", out_path)]
    elif signal == SignalChoice.all:
        jobs = [(s, out_path.with_name(f"{out_path.stem}_{s}{out_path.suffix or '.h5'}")) for s in SIGNALS]
    else:
        jobs = [(signal.value, out_path)]
    from trigger_ml.core.artifacts import check_output
    from trigger_ml.data.synth import STAGE as GENERATE_STAGE

    for sample, path in jobs:  # every output checked before the first is written
        check_output(path, [], GENERATE_STAGE, force, kind="file")
    written = []
    with _stdout_to_stderr(as_json):
        for sample, path in jobs:
            with _progress() as prog:
                task = prog.add_task(f"{sample} → {path.name}", total=events)
                generate_file(path, events, sample, seed, force=force, progress=lambda n, task=task: prog.update(task, completed=n))
            _log(as_json)(f"wrote {path} ({events:,} {sample} events, seed {seed})")
            written.append({"path": str(path), "sample": sample, "events": events, "seed": seed})
    if as_json:
        _emit_json({"files": written})


@data_app.command("inspect", cls=_Command)
def data_inspect(
    path: Path = typer.Argument(..., help="Events file in the ADC2021 layout."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Validate a file and print counts and per-object pT/eta/phi summaries."""
    from trigger_ml.data.summary import summarize

    with _stdout_to_stderr(as_json), _progress() as prog:
        task = prog.add_task(f"reading {path.name}", total=None)
        s = summarize(path, progress=lambda d, t: prog.update(task, completed=d, total=t))
    if as_json:
        _emit_json(s)
        return
    out.print(Text.assemble((str(s["path"]), "bold"), f": {s['n_events']:,} events ({s['dtype']})"))
    t = _table("object", "count", "per event", "pT mean [GeV]", "pT std [GeV]", "pT max [GeV]", "η std", "η min",
               "η max", "φ min", "φ max")
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for kind, o in s["objects"].items():
        _row(t, kind, f"{o['count']:,}", f"{o['per_event']:.2f}", f(o["pt_gev"]["mean"]), f(o["pt_gev"]["std"]),
             f(o["pt_gev"]["max"]), f(o["eta"]["std"]), f(o["eta"]["min"]), f(o["eta"]["max"]), f(o["phi"]["min"]),
             f(o["phi"]["max"]))
    out.print(t)
    if s["processes"]:
        n = s["n_events"]
        out.print("processes: " + ", ".join(f"{k} {v / n:.1%}" for k, v in s["processes"].items()))


@data_app.command("compare", cls=_Command)
def data_compare(
    a: Path = typer.Argument(..., help="Events file (ADC2021 layout)."),
    b: Optional[Path] = typer.Argument(None, help="Second events file for the two-sample tests (optional)."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Reference summary JSON to compare the per-object means/stds with; 'default' = the shipped real ADC2021 background summary (used anyway when B is not given)."),
    tolerance: float = typer.Option(0.10, "--tolerance", min=0.0, help="Relative tolerance of the reference comparison."),
    max_events: Optional[int] = typer.Option(200_000, "--max-events", min=1, help="Two-sample tests: read at most N events per file (seeded uniform subsample; memory ~ 230 B per event)."),
    perm_events: int = typer.Option(20_000, "--perm-events", min=10, help="Events per sample for the permutation tests (seeded subsample)."),
    permutations: int = typer.Option(100, "--permutations", min=0, help="Permutations for the p-values of the multivariate tests."),
    projections: int = typer.Option(64, "--projections", min=1, help="Random 1D projections of the sliced tests."),
    seed: int = typer.Option(0, "--seed", help="Seed of subsampling, projections and permutations."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Directory to write overlay plots (PNG per object type) into."),
    top: int = typer.Option(12, "--top", min=1, help="Per-feature rows shown (largest KS first; all in --json)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Compare event samples: two-sample tests of A vs B (per-feature KS/W1, sliced permutation tests) and/or A's per-object summary vs a reference."""
    from trigger_ml.data import compare as C

    if plots is not None and b is None:
        raise typer.BadParameter("--plots needs a second file B to overlay", param_hint="--plots")
    if plots is not None:  # the output guard up front, before any work
        from trigger_ml.core.artifacts import check_output

        check_output(plots, [a, b], C.STAGE, force)
    ref = None if reference in (None, "default") else Path(reference)
    res: dict[str, Any] = {}
    with _stdout_to_stderr(as_json):
        if b is None or reference is not None:
            res["reference"] = [C.compare_to_reference(p, ref, tolerance) for p in ([a] if b is None else [a, b])]
        if b is not None:
            _log(as_json)(f"two-sample tests: {a.name} vs {b.name}")
            res["two_sample"] = C.compare_files(a, b, max_events=max_events, perm_events=perm_events,
                                                n_projections=projections, n_permutations=permutations, seed=seed)
            if plots is not None:
                x = C.load_features(a, perm_events, seed)
                y = C.load_features(b, perm_events, seed + 1)
                res["plots"] = [str(p) for p in C.overlay_plots(x, y, plots, (a.stem, b.stem), force=force,
                                                                 inputs={"a": a, "b": b})]
    if as_json:
        _emit_json(res)
        return
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in res.get("reference", []):
        out.print(Text.assemble((r["path"], "bold"), f" vs {r['reference']} (tolerance ±{r['tolerance']:.0%})"))
        t = _table("object", "quantity", "stat", "sample", "reference", "rel. diff", "within")
        for row in r["rows"]:
            rel = "-" if row["rel_diff"] is None else f"{row['rel_diff']:+.1%}"
            _row(t, row["object"], row["quantity"], row["statistic"], f(row["sample"], 2), f(row["reference"], 2), rel,
                 "yes" if row["within"] else "NO")
        out.print(t)
        out.print("all within tolerance" if r["all_within"] else "NOT all within tolerance")
    ts = res.get("two_sample")
    if ts:
        for note in ts["notes"]:
            console.print(f"note: {note}")
        m = ts["multivariate"]
        t = _table("statistic", "value", "permutation p", "null mean")
        for name in C.STATISTICS:
            _row(t, name, f(m[name]["value"], 4), f(m[name]["p_value"], 3), f(m[name]["null_mean"], 4))
        out.print(f"{a.name} ({ts['n_a']:,}) vs {b.name} ({ts['n_b']:,}): {m['n_projections']} projections, "
                  f"{m['n_permutations']} permutations on {m['n_a']:,} + {m['n_b']:,} events")
        out.print(t)
        rows = sorted(ts["features"], key=lambda r: -r["ks"])
        t = _table("feature", "mean A", "mean B", "KS", "KS p", "W1")
        for r in rows[:top]:
            _row(t, r["feature"], f(r["mean_a"]), f(r["mean_b"]), f(r["ks"], 4), f"{r['ks_p_value']:.2g}", f(r["wasserstein"]))
        out.print(t)
        if len(rows) > top:
            out.print(f"({top} of {len(rows)} features, largest KS first; all with --json or --top {len(rows)})")
    for p in res.get("plots", []):
        _log(as_json)(f"wrote {p}")


@app.command("train", cls=_Command)
def train_cmd(
    config: Path = typer.Argument(..., help="Model config YAML (see models/)."),
    data: Path = typer.Option(..., "--data", help="Background events (.h5) or, for the classifier, a jets table (.csv/.parquet)."),
    out_dir: Path = typer.Option(..., "--out", help="Artifact directory to create."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the config seed."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Train an ensemble of k seeds into OUT/seed0..k-1."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override the config's number of training epochs."),
    max_events: Optional[int] = typer.Option(None, "--max-events", min=1, help="Read at most N events of --data (default: the config's)."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher artifact (cicada-student)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Export the float twin to ONNX and cross-check it."),
    force: bool = typer.Option(False, "--force", help="Replace an existing artifact directory."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Quantization-aware training of a zoo model (and its float twin)."""
    _quiet_tensorflow()
    from trigger_ml.models.config import load_model_config
    from trigger_ml.train import train

    cfg = load_model_config(config)
    base = cfg.seed if seed is None else seed
    runs = [(out_dir, base)] if seeds == 1 else [(out_dir / f"seed{i}", base + i) for i in range(seeds)]
    if seeds > 1 and out_dir.exists() and not force:
        raise TriggerMLError(f"{out_dir}: exists; pass --force to overwrite")
    if seeds > 1:  # OUT holds the seed runs; its parent must exist (outputs never create missing parents)
        from trigger_ml.core.artifacts import make_output_dir

        make_output_dir(out_dir)
    log = _log(as_json)
    results = []
    with _stdout_to_stderr(as_json):
        for path, s in runs:
            train(cfg, data, path, seed=s, epochs=epochs, max_events=max_events, teacher=teacher, force=force, log=log)
            entry: dict[str, Any] = {"path": str(path), "seed": s, "model": cfg.name, "kind": cfg.kind}
            with contextlib.suppress(Exception):  # the figures are a courtesy; the artifact is what counts
                entry["figures"] = json.loads((Path(path) / "manifest.json").read_text())["figures"]
            if onnx and cfg.kind != "classifier":
                from trigger_ml.onnx_export import export_float_onnx
                from trigger_ml.train import load_artifact

                x = load_artifact(path).inputs_from_file(data, stop=2000)
                r = export_float_onnx(path, x)
                entry["onnx"] = r
                log(f"ONNX float reference {r['path']}: max |diff| {r['max_abs_diff']:.3g} "
                    f"(rel {r['max_rel_diff']:.2g}) {'ok' if r['passed'] else 'FAILED'}")
            results.append(entry)
    if as_json:
        _emit_json({"runs": results})


@app.command("evaluate", cls=_Command)
def evaluate_cmd(
    runs: list[Path] = typer.Argument(..., help="Artifact directories (or one directory of seed* runs)."),
    signals: list[Path] = typer.Option(..., "--signals", help="Signal event files (repeat the option)."),
    background: Optional[Path] = typer.Option(None, "--background", help="Held-out background (default: unused training events)."),
    rate_khz: float = typer.Option(10.0, "--rate-khz", help="Target trigger rate for TPR@rate."),
    bx_rate_mhz: float = typer.Option(40.0, "--bx-rate-mhz", help="Bunch-crossing rate (28.6 for filled bunches)."),
    max_events: Optional[int] = typer.Option(None, "--max-events", min=1, help="Read at most N events per file."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """AUC and TPR at FPR 1e-5 / 1e-4 / target rate, float twin vs quantized, beside the HT / MET / lepton- and object-count baselines on the same events."""
    _quiet_tensorflow()
    from trigger_ml.evaluate import evaluate

    with _stdout_to_stderr(as_json):
        res = evaluate(runs, signals, background, max_events=max_events, target_rate_khz=rate_khz,
                       bx_rate_hz=bx_rate_mhz * 1e6)
    if as_json:
        _emit_json(res)
        return
    t = _table("signal", "model", "AUC", "TPR@1e-5", "TPR@1e-4", f"TPR@{rate_khz:g} kHz", "bkg above (1e-4)")
    fmt = lambda d: "n/a" if d.get("tpr") is None else f"{d['tpr']:.4f}"  # noqa: E731
    if "ensemble" in res:
        for sig, kinds in res["ensemble"].items():
            for k, m in kinds.items():
                ms = lambda d: "n/a" if d["mean"] is None else f"{d['mean']:.4f} ± {d['std']:.4f}"  # noqa: E731
                _row(t, sig, k, ms(m["auc"]), ms(m["tpr_at_fpr_1e-5"]), ms(m["tpr_at_fpr_1e-4"]), "", "")
    else:
        for sig, kinds in res["signals"].items():
            for k, m in kinds.items():
                _row(t, sig, k, f"{m['auc']:.4f}", fmt(m["tpr_at_fpr_1e-5"]), fmt(m["tpr_at_fpr_1e-4"]),
                     fmt(m.get("tpr_at_rate", {})), str(m["tpr_at_fpr_1e-4"].get("n_background_above", "-")))
        out.print(f"background: {res['background']} ({res['n_background']:,} events)")
    for sig, bases in res.get("baselines", {}).items():  # trivial cuts on the same events, beside the model
        for k, m in bases.items():
            _row(t, sig, f"baseline {k}", f"{m['auc']:.4f}", fmt(m["tpr_at_fpr_1e-5"]), fmt(m["tpr_at_fpr_1e-4"]),
                 fmt(m.get("tpr_at_rate", {})), str(m["tpr_at_fpr_1e-4"].get("n_background_above", "-")))
    out.print(t)


class Flavor(str, Enum):
    hls = "hls"
    verilog = "verilog"
    vhdl = "vhdl"


class Backend(str, Enum):
    Vitis = "Vitis"
    Vivado = "Vivado"
    oneAPI = "oneAPI"


class Strategy(str, Enum):
    Latency = "Latency"
    Resource = "Resource"


@app.command("convert", cls=_Command)
def convert_cmd(
    run: Path = typer.Argument(..., help="Trained model artifact directory."),
    out_dir: Path = typer.Option(..., "--out", help="Firmware project directory to create."),
    flavor: Flavor = typer.Option(Flavor.hls, "--flavor", help="hls (hls4ml project) or verilog/vhdl (da4ml RTL)."),
    backend: Backend = typer.Option(Backend.Vitis, "--backend", help="hls4ml backend (hls flavour)."),
    part: Optional[str] = typer.Option(None, "--part", help="FPGA part (default xcvu13p-flga2577-2-e)."),
    clock_ns: Optional[float] = typer.Option(None, "--clock-ns", help="Clock period in ns (default 5; with a budget: the only clock searched)."),
    clock_mhz: Optional[float] = typer.Option(None, "--clock-mhz", help="Clock frequency in MHz instead of --clock-ns (240 = CMS uGT)."),
    budget_ns: Optional[float] = typer.Option(None, "--budget-ns", help="Latency budget in ns: pick the cheapest RTL design meeting it (verilog/vhdl; depth measured in Verilator)."),
    budget_bx: Optional[float] = typer.Option(None, "--budget-bx", help="Latency budget in bunch crossings (25 ns each) instead of --budget-ns."),
    delay_constraint: int = typer.Option(-1, "--delay-constraint", help="alkaid CMVM adder-depth slack hard_dc (RTL; -1 unconstrained; searched under a budget)."),
    strategy: Strategy = typer.Option(Strategy.Latency, "--strategy", case_sensitive=False,
                                      help="hls4ml strategy (hls flavour): Latency (fully parallel) or Resource (reuses multipliers)."),
    reuse: str = typer.Option("1", "--reuse", help="Reuse factor: N, or per layer 'enc0=2,enc1=4'."),
    latency_cutoff: float = typer.Option(5.0, "--latency-cutoff", help="alkaid pipelining: max adder depth per stage (RTL flavours)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Trigger threshold on the score."),
    rate_khz: Optional[float] = typer.Option(None, "--rate-khz", help="Calibrate the threshold to this rate instead."),
    bx_rate_mhz: float = typer.Option(40.0, "--bx-rate-mhz", help="Bunch-crossing rate for --rate-khz (28.6 for filled bunches)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Background events for the rate calibration (held-out part) and test vectors (default: the training file)."),
    score: Optional[str] = typer.Option(None, "--score", help="Score output 'name' or 'name[i]' when the model has several output values."),
    force: bool = typer.Option(False, "--force", help="Replace an existing firmware directory."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Write a firmware project: hls4ml (bit-exact precisions from HGQ2) or da4ml/alkaid RTL."""
    from trigger_ml.firmware.convert import convert_run
    from trigger_ml.firmware.spec import FirmwareSpec

    from trigger_ml.core.errors import ConfigError
    from trigger_ml.reports.budget import resolve_budget_ns

    if clock_ns is not None and clock_mhz is not None:
        raise ConfigError("give the clock as --clock-ns or --clock-mhz, not both")
    if clock_mhz is not None and not clock_mhz > 0:
        raise ConfigError(f"--clock-mhz must be positive (got {clock_mhz})")
    clock = clock_ns if clock_ns is not None else (1e3 / clock_mhz if clock_mhz is not None else None)
    budget = (resolve_budget_ns(budget_ns=budget_ns, budget_bx=budget_bx)
              if budget_ns is not None or budget_bx is not None else None)
    spec = FirmwareSpec.make(flavor=flavor.value, backend=backend.value, part=part, clock_ns=5.0 if clock is None else clock,
                             strategy=strategy.value, reuse_factor=FirmwareSpec.parse_reuse(reuse),
                             latency_cutoff=latency_cutoff, threshold=threshold, rate_khz=rate_khz,
                             bx_rate_hz=bx_rate_mhz * 1e6, score_output=score, budget_ns=budget,
                             delay_constraint=delay_constraint,
                             clocks_mhz=(1e3 / clock,) if clock is not None and budget is not None else None)
    _quiet_tensorflow()  # convert_run checks --out against its inputs before any work
    with _stdout_to_stderr(as_json):
        res = convert_run(run, out_dir, spec, data=data, force=force, log=_log(as_json))
    if as_json:
        _emit_json(res)


@app.command("import", cls=_Command)
def import_cmd(
    source: Path = typer.Argument(..., help="Model to import: .onnx (ONNX/QONNX), Keras 2 .json (+ _weights.h5) or .h5 (Keras 2 / QKeras / HGQ-1), or an hls4ml project / firmware directory."),
    out_dir: Path = typer.Option(..., "--out", help="Firmware directory to create (an hls4ml project + IR, like convert)."),
    precision: Optional[Path] = typer.Option(None, "--precision", help="Per-layer precision config: hls4ml config YAML (Model/LayerName) or {default, layers}."),
    score: Optional[str] = typer.Option(None, "--score", help="Score output 'name' or 'name[i]' when the model has several output values."),
    preprocessing: Optional[Path] = typer.Option(None, "--preprocessing", help="Preprocessing JSON (events → model inputs); default: identity."),
    tb_events: int = typer.Option(1000, "--tb-events", min=1, help="Random events on which the emulator is checked against the C simulation."),
    force: bool = typer.Option(False, "--force", help="Replace an existing firmware directory."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Bring your own model: import a trained model or deployed hls4ml firmware into a firmware directory."""
    _quiet_tensorflow()
    from trigger_ml.importers import import_model

    with _stdout_to_stderr(as_json):
        res = import_model(source, out_dir, precision=precision, score=score, preprocessing=preprocessing,
                           force=force, tb_events=tb_events, log=_log(as_json))
    if as_json:
        _emit_json(res)


@app.command("verify", cls=_Command)
def verify_cmd(
    ctx: typer.Context,
    run: Path = typer.Argument(..., help="Trained model artifact directory, or a firmware directory from `import`/`convert` (checked on its own)."),
    events: Optional[Path] = typer.Option(None, "--events", help="Events file (ADC2021 layout); required for a training run."),
    hls_dir: Optional[Path] = typer.Option(None, "--hls", help="hls4ml firmware directory (from convert)."),
    rtl_dir: Optional[Path] = typer.Option(None, "--rtl", help="RTL directory (from convert --flavor verilog)."),
    n_events: int = typer.Option(100_000, "--n-events", min=1, help="Number of events (or --inputs rows) to compare."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="Firmware directory only: model inputs, an (n, features) float .npy array, instead of --events."),
    n_random: Optional[int] = typer.Option(None, "--random", min=1, help="Firmware directory only: N seeded random inputs (a third overflowing the input type) instead of --events."),
    seed: int = typer.Option(20261201, "--seed", help="Seed of the --random inputs."),
    signals: list[Path] = typer.Option([], "--signals", help="Signal files for the TPR shift (optional)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON report here."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Cross-check float, quantized Keras, C-sim, emulator, da4ml and RTL simulation; localize mismatches.

    A firmware directory (from `import`) is checked on its own: emulator vs C-sim (and its Keras model)
    on --events, --inputs X.npy or --random N, with the overflow report."""
    _quiet_tensorflow()
    from trigger_ml.emulate.emulator import firmware_plan_warning
    from trigger_ml.verify import firmware_stage, verify, write_report

    is_fw = firmware_stage(run) is not None
    if not is_fw and events is None and inputs is None and n_random is None:  # a training run needs --events
        ctx.fail("Missing option '--events' (a training run is verified on events).")
    fw_dir = run if is_fw else hls_dir
    plan_warning = firmware_plan_warning(fw_dir) if fw_dir is not None else None
    if plan_warning:  # one line if some layer runs on the slower reference path
        console.print(plan_warning, highlight=False)

    with _stdout_to_stderr(as_json):
        res = verify(run, events, hls_dir=hls_dir, rtl_dir=rtl_dir, n_events=n_events, signals=signals,
                     inputs=inputs, n_random=n_random, seed=seed, log=_log(as_json))
        if report:
            write_report(res, report, inputs=(inputs,) if inputs else ())
    if as_json:
        _emit_json(res)
    else:
        t = _table("pair (reference:other)", "events", "mismatching values", "max |diff|", "mean |diff|")
        num = lambda v, f: f"{v:{f}}" if isinstance(v, (int, float)) else str(v)  # noqa: E731
        for k, p in res["exact_pairs"].items():
            _row(t, k, num(p.get("n_events", 0), ","), num(p.get("mismatches", "?"), ","),
                 num(p.get("max_abs_diff", 0), ".3g"), num(p.get("mean_abs_diff", 0), ".3g"))
        out.print(t)
        if "quantized_vs_float" in res:
            q = res["quantized_vs_float"]
            out.print(f"quantized vs float: pearson {q['pearson']:.4f}, spearman {q['spearman']:.4f}, "
                      f"KS {q['ks_statistic']:.4f} (p={q['ks_pvalue']:.2g}), sliced W1 {q['sliced_wasserstein']:.4g}")
        if "keras_vs_csim" in res:  # an imported Keras model whose outputs are not quantized (float softmax)
            q = res["keras_vs_csim"]
            out.print(f"Keras vs C-sim (statistical: {q['note']}): pearson {q['pearson']:.4f}, KS {q['ks_statistic']:.4f}, "
                      f"max |diff| {q['max_abs_diff']:.3g}", highlight=False)
        if "input_source" in res:  # a firmware directory: which inputs, which C simulation, the overflow report
            ov = res["overflow"]
            out.print(f"inputs: {res['input_source']['note']}; C simulation: {res['csim']}", highlight=False)
            out.print(f"overflow report ({ov['n_events']:,} inputs): {ov['values']:,} values wrapped/saturated"
                      + "".join(f"; {k}: " + ", ".join(f"{s} {c:,}" for s, c in v.items() if c)
                                for k, v in ov["layers"].items()), highlight=False)
        if "localization" in res:
            loc = res["localization"]
            out.print(Text.assemble(("mismatch", "red"),
                                    f": {loc.get('kind')} in layer {loc.get('layer')}: {loc.get('suggestion')}"))
    if res["total_mismatches"]:
        where = "the JSON above" if as_json else "the table above"
        raise TriggerMLError(f"{res['total_mismatches']} bit-exact mismatches (see {where})")


def _interval(v: float, iv: Any, f: str) -> str:
    """``v [lo, hi]`` (a 68 % interval) or ``v`` when the interval is missing."""
    if isinstance(iv, (list, tuple)) and len(iv) == 2 and all(isinstance(x, (int, float)) for x in iv):
        return f"{v:{f}} [{iv[0]:{f}}, {iv[1]:{f}}]"
    return f"{v:{f}}"


#: the ``stage`` key of the menu file ``emulate --out`` writes (what lets --force replace an earlier one)
MENU_STAGE = "emulate.menu"


@app.command("emulate", cls=_Command)
def emulate_cmd(
    firmware: Path = typer.Argument(..., help="Firmware directory from convert: hls4ml project or RTL project."),
    background: list[Path] = typer.Option(..., "--background", help="Background event files (repeatable); the model's training file is scored only beyond the events training read."),
    signals: list[Path] = typer.Option([], "--signals", help="Signal event files (repeatable)."),
    menu: Optional[str] = typer.Option(None, "--menu", help="Working points NAME=RATE_KHZ,... (default VLoose..VTight)."),
    bx_rate_mhz: float = typer.Option(40.0, "--bx-rate-mhz", help="40 nominal, 28.6 for filled bunches."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Write triggered events here (.h5)."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Save the menu (thresholds, rates, efficiencies) to this JSON file."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="'local' for a Dask LocalCluster or a scheduler address (tcp://host:8786); default: in-process."),
    chunk_size: int = typer.Option(SCORE_CHUNK, "--chunk-size", min=1, help="Events scored per chunk (memory vs. overhead)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out / --catalog file."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Emulate the trigger: thresholds per working point, rates, efficiencies (68 % Clopper-Pearson), pure rate, catalog."""
    from trigger_ml.core.artifacts import write_json_atomic
    from trigger_ml.trigger.run import emulate, parse_menu

    menu_khz = parse_menu(menu)
    if out_file is not None:  # before any work: never over an input, only over an earlier menu (with --force)
        from trigger_ml.core.artifacts import check_output

        if out_file.is_dir():
            raise TriggerMLError(f"--out {out_file}: is a directory; give a file name (e.g. menu.json)")
        out_file = check_output(out_file, [firmware, *background, *signals, catalog], MENU_STAGE, force, kind="file")
    from trigger_ml.emulate.emulator import firmware_plan_warning

    plan_warning = firmware_plan_warning(firmware)  # one line if some layer runs on the slower reference path
    if plan_warning:
        console.print(plan_warning, highlight=False)
    with _stdout_to_stderr(as_json), _progress() as prog:
        tasks: dict[str, int] = {}

        def cb(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total)
            prog.update(tasks[name], completed=done)

        res = emulate(firmware, background, signals, menu_khz=menu_khz, bx_rate_hz=bx_rate_mhz * 1e6,
                      catalog=catalog, scheduler=scheduler, chunk_size=chunk_size, force=force, progress=cb)
        if plan_warning:
            res["emulator_warning"] = plan_warning
        if out_file is not None:
            write_json_atomic(out_file, {"stage": MENU_STAGE, **_jsonable(res)}, indent=2)
    if as_json:
        _emit_json(res)
        return
    out.print(f"{res['events']:,} events emulated in {res['seconds']} s ({res['events_per_s']:,} events/s, "
              f"{res['scheduler']}); score type {res['score_type']}; reference menu rate {res['reference_menu_rate_khz']:.1f} kHz")
    out.print(f"background: {'; '.join(res['background'])}")
    ft = res.get("firmware_threshold")
    if ft:
        here = ft.get("rate_khz_here")
        out.print(f"firmware built with threshold {ft['value']:.6g} (raw {ft['raw']}): "
                  + (f"{here:.3g} kHz on this background" if here is not None else "no background events"))
    out.print(_emulate_table(res))
    if "catalog" in res:
        out.print(f"catalog: {res['catalog']['events']:,} triggered events → {res['catalog']['path']}")
    if out_file is not None:
        out.print(f"menu written to {out_file}")


def _emulate_table(res: dict) -> Table:
    """The menu as a table; efficiencies with their 68 % Clopper-Pearson interval; working points
    whose threshold could not be calibrated are a row saying why."""
    sig_names = next((list(r["signals"]) for r in res["working_points"].values() if r.get("signals")), [])
    t = _table("WP", "threshold", "rate [kHz] (68% CL)", "pure rate [kHz]",
               *[f"{s} efficiency (68% CP) / unique" for s in sig_names])
    for wp, row in res["working_points"].items():
        th = row.get("threshold")
        if th is None:  # not calibratable on this background (the reason is one line)
            _row(t, wp, "-", f"not calibrated: {row.get('error', 'unknown reason')}", "-", *["-" for _ in sig_names])
            continue
        cells = []
        for s in sig_names:
            e = row["signals"].get(s)
            cells.append("-" if e is None else f"{_interval(e['efficiency'], e.get('efficiency_interval_68'), '.4f')}"
                                               f" / {e['unique_efficiency']:.4f}")
        _row(t, wp, f"{th['value']:.6g}", _interval(th["rate_khz"], th.get("rate_interval_khz_68"), ".2f"),
             f"{row['pure_rate_khz']:.2f}", *cells)
    return t


@app.command("export-emulator", cls=_Command)
def export_emulator_cmd(
    firmware: Path = typer.Argument(..., help="hls4ml firmware directory from convert (holds firmware_model.json)."),
    out_dir: Path = typer.Option(..., "--out", help="Directory to write the C++ emulator into."),
    name: Optional[str] = typer.Option(None, "--name", help="Library / class name (default: the model's name); CMSSW loads NAME.so."),
    ap_types: Optional[Path] = typer.Option(None, "--ap-types", help="Default AP_TYPES of the Makefile (default: the ap_types headers hls4ml ships)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export in --out."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Export the firmware as C++ for CMSSW: an hls4mlEmulator::Model (straight-line bit-exact integer code) and a Makefile."""
    from trigger_ml.emulate.export_cpp import export_cpp

    with _stdout_to_stderr(as_json):
        res = export_cpp(firmware, out_dir, name=name, force=force, ap_types_dir=ap_types)
    if as_json:
        _emit_json(res)
        return
    out.print(f"C++ emulator of {firmware} written to {res['path']}: class {res['class']} "
              f"(input_t {res['input_t']}[{res['n_input']}], result_t {res['result_t']}[{res['n_output']}], "
              f"{res['statements']:,} statements)")
    out.print(f"build: make -C {res['path']} EMULATOR_INCLUDE=<dir of CMSSW's hls4ml/emulator.h>  → {res['library']}")


_MEASURE_TOOL = {"resources": "yosys synth_xilinx", "latency": "Verilator"}


def _measure_progress():
    """(context, callback) showing `trigger-ml measure` progress on stderr: a rich status line (spinner,
    elapsed time, current Yosys pass) on a terminal, otherwise a plain line per step and every 30 s."""
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


@app.command("measure", cls=_Command)
def measure_cmd(
    firmware_dir: Path = typer.Argument(..., help="Firmware project: da4ml RTL (rtl_manifest.json) or hls4ml project."),
    timeout: float = typer.Option(1800.0, "--timeout", min=0.001,
                                  help="Stop Yosys after S seconds (recorded as 'not measured (timeout after S s)')."),
    part: Optional[str] = typer.Option(None, "--part", help="FPGA part or synth_xilinx family (default: the project's, else xcvu13p)."),
    what: str = typer.Option("resources,latency", "--what", help="resources (Yosys) and/or latency (Verilator), comma-separated."),
    force: bool = typer.Option(False, "--force", help="Measure again although measurements.json holds this design's figures."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Measure resources (Yosys synth_xilinx) and latency (Verilator); writes measurements.json for `report`."""
    from trigger_ml.measure import measure

    shown, progress = _measure_progress()
    with _stdout_to_stderr(as_json), shown:
        res = measure(firmware_dir, what=what, timeout_s=timeout, part=part, force=force, progress=progress)
    steps = list(res["cached"])
    if as_json:
        _emit_json(res)
    else:
        out.print(f"{res['path']} ({res['kind']}, top {res['top']}, design {res['design_hash'][:12]})", highlight=False,
                  soft_wrap=True)
        t = _table("figure", "value", "source")
        for step in steps:
            e = res[step]
            if e.get("status") != "measured":
                _row(t, step, "—", e.get("source", "not measured"))
                continue
            for name, f in e["figures"].items():
                v = f["value"]
                _row(t, name, f"{v:,}" if isinstance(v, int) else f"{v:g}", f["source"])
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


def _check_events_file(path: Path, option: str) -> None:
    """A readable ADC2021 events file, or a one-line error naming the option."""
    from trigger_ml.data import adc2021

    try:  # existence, directory, permissions, HDF5 layout and every event's values: one home (adc2021)
        adc2021.check_events(path, f"give a file with events ({option})")
    except TriggerMLError as exc:
        raise TriggerMLError(f"{option}: {exc}") from None


@app.command("report", cls=_Command)
def report_cmd(
    path: Path = typer.Argument(..., help="A run, a firmware directory, or a parent holding them (e.g. a demo output)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Report directory (default: PATH/report, or PATH_report next to PATH when PATH is itself a run or firmware directory)."),
    budget_ns: Optional[float] = typer.Option(None, "--budget-ns", help="Latency budget in ns (wins over --budget-bx)."),
    budget_bx: float = typer.Option(2.0, "--budget-bx", help="Latency budget in bunch crossings (25 ns)."),
    part: Optional[str] = typer.Option(None, "--part", help="FPGA part for resource percentages (e.g. xcvu13p)."),
    signals: list[Path] = typer.Option([], "--signals", help="Signal files for ROC/score plots (repeat the option)."),
    background: Optional[Path] = typer.Option(None, "--background", help="Held-out background for the physics metrics (default: the model's unused training events)."),
    rate_khz: Optional[float] = typer.Option(None, "--rate-khz", help="Trigger rate of the TPR column in kHz (default: the rate the firmware's threshold was calibrated to, else 10)."),
    menu: Optional[str] = typer.Option(None, "--menu", help="Working points NAME=RATE_KHZ,... of the menu table (default: the emulate stage's menu), as `trigger-ml emulate --menu`."),
    ensemble: list[Path] = typer.Option([], "--ensemble", help="Other training seeds of the model (runs or a `train --seeds k` directory; repeat): the physics table gets mean ± std over the seeds. Seeds found under PATH join automatically."),
    measure: Optional[bool] = typer.Option(None, "--measure/--no-measure", hidden=True,
                                           help="Ignored: the report only reads; use `trigger-ml measure`."),
    force: bool = typer.Option(False, "--force", help="Replace an existing report directory."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Latency/resource table from three sources (vendor, measurements.json, estimates), budget verdict, plots;
    with --signals: efficiencies, ROC curves with bands, the firmware's threshold and the working-point menu.

    Reads only: measured figures come from `trigger-ml measure` (measurements.json); the menu is
    the one `trigger-ml emulate` computes on the same files."""
    # every input is checked before any work: a broken input is a one-line error, not a note in the HTML
    if not path.exists():
        raise TriggerMLError(f"{path}: not found; give a run, a firmware directory or a parent holding them")
    if part is not None:
        from trigger_ml.reports.parts import lookup_part

        try:
            lookup_part(part)
        except TriggerMLError as exc:
            raise TriggerMLError(f"--part: {exc}") from None
    for s in signals:
        _check_events_file(s, "--signals")
    if background is not None:
        _check_events_file(background, "--background")
    for e in ensemble:
        if not e.is_dir():
            raise TriggerMLError(f"--ensemble {e}: not a directory; give a model run or a `trigger-ml train --seeds k` output")
    from trigger_ml.trigger.run import parse_menu

    menu_khz = parse_menu(menu) if menu is not None else None
    if rate_khz is not None:
        from trigger_ml.core.constants import BX_RATE_HZ
        from trigger_ml.evaluate import check_rates

        check_rates(rate_khz, BX_RATE_HZ)
    from trigger_ml.reports.render import report_destination  # the one output guard (never inside what it reads)

    dest = report_destination(path, out_dir, signals=signals, background=background, force=force)

    from trigger_ml.reports.collect import collect_report, discover
    from trigger_ml.reports.render import write_report

    if discover(path)["run"] is not None:  # the model and physics sections load Keras models
        _quiet_tensorflow()
    if measure:
        console.print("note: `report --measure` no longer measures; run `trigger-ml measure FIRMWARE_DIR` first")
    with _stdout_to_stderr(as_json):
        rep = collect_report(path, budget_ns=budget_ns, budget_bx=budget_bx, part=part, signals=signals,
                             background=background, target_rate_khz=rate_khz, menu_khz=menu_khz, ensemble=ensemble,
                             log=_log(as_json))
        dest = write_report(rep, dest, force=force, inputs=[*signals, background])
    if as_json:
        doc: dict[str, Any] = {"report": str(dest), "files": sorted(p.name for p in Path(dest).iterdir())}
        with contextlib.suppress(OSError, ValueError):
            doc["content"] = json.loads((Path(dest) / "report.json").read_text(encoding="utf-8"))
        _emit_json(doc)
        return
    out.print(f"report written to {dest}")


@app.command("scan", cls=_Command)
def scan_cmd(
    config: Path = typer.Argument(..., help="Scan YAML (base model config + grid/random space), e.g. models/scan-example.yaml."),
    out_dir: Path = typer.Option(..., "--out", help="Scan directory (results.parquet/csv, pareto.png/json); resumable."),
    background: Optional[Path] = typer.Option(None, "--background", help="Background events (or settings.background)."),
    signals: list[Path] = typer.Option([], "--signals", help="Signal files (or settings.signals)."),
    scheduler: str = typer.Option("local", "--scheduler", help="'local' (LocalCluster), 'none' (in-process) or an address (tcp://host:8786)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes of the LocalCluster (default: settings.n_workers)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override the training epochs of every point."),
    max_events: Optional[int] = typer.Option(None, "--max-events", min=1, help="Override the training events of every point."),
    flavor: Optional[str] = typer.Option(None, "--flavor", help="verilog (da4ml, default) or hls."),
    clock_ns: Optional[float] = typer.Option(None, "--clock-ns", help="Clock period of every point in ns (default: settings.clock_ns, 5 ns); a point's latency in ns is its cycles x this clock."),
    budget_ns: Optional[float] = typer.Option(None, "--budget-ns", help="Latency budget in ns: each point's verdict, the budget line and the best point in budget (or settings.budget_ns)."),
    budget_bx: Optional[float] = typer.Option(None, "--budget-bx", help="Latency budget in bunch crossings of 25 ns (instead of --budget-ns)."),
    restart: bool = typer.Option(False, "--restart", help="Discard results of a different setup in OUT."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Grid/random design-space scan on Dask; streams a resumable results table and draws the Pareto front.

    With a latency budget every point gets a verdict (meets_budget, slack, the clock used) and the
    best point meeting the budget is named (table, pareto.json, starred in pareto.png)."""
    _quiet_tensorflow()
    from trigger_ml.scan import load_scan_config, pareto_front, run_scan

    if budget_ns is not None and budget_bx is not None:
        raise TriggerMLError("give the latency budget as --budget-ns or --budget-bx, not both")
    with _stdout_to_stderr(as_json), _progress() as prog:
        task = prog.add_task("scan points", total=None)
        df = run_scan(load_scan_config(config), out_dir, background=background, signals=signals or None,
                      scheduler=None if scheduler == "none" else scheduler, n_workers=workers, epochs=epochs,
                      max_events=max_events, flavor=flavor, clock_ns=clock_ns, budget_ns=budget_ns, budget_bx=budget_bx,
                      restart=restart, log=_log(as_json),
                      progress=lambda done, total, row: prog.update(task, completed=done, total=total))
    ok = df[df["status"] == "ok"] if "status" in df else df
    front = pareto_front(ok) if len(ok) else None
    cols = [c for c in ("key", "tpr", "auc", "luts", "latency_ns", "clock_ns", "meets_budget", "budget_slack_ns")
            if front is not None and c in front]
    try:
        budget = json.loads((Path(out_dir) / "pareto.json").read_text(encoding="utf-8")).get("budget")
    except (OSError, ValueError):
        budget = None
    if as_json:
        _emit_json({"out": str(out_dir), "points": len(df), "ok": len(ok),
                    "results": str(Path(out_dir) / "results.parquet"), "pareto_plot": str(Path(out_dir) / "pareto.png"),
                    "pareto_front": [] if front is None else front.to_dict(orient="records"), "budget": budget})
        return
    out.print(f"{len(ok)}/{len(df)} points ok; results in {out_dir}/results.parquet, front in {out_dir}/pareto.png")
    if front is not None:
        out.print(front[cols].to_string(index=False))
    if budget:
        b = budget["best"]
        out.print(f"latency budget {budget['budget_ns']:g} ns ({budget['budget_bx']:g} BX): {budget['n_meeting']} of "
                  f"{budget['n_with_latency']} points meet it; "
                  + (f"best in budget: {b['key']} (TPR {b.get('tpr') if b.get('tpr') is not None else b.get('auc')}, "
                     f"{b.get('luts')} LUT, {b.get('latency_cycles')} cycles x {b.get('clock_ns')} ns = "
                     f"{b.get('latency_ns')} ns, {b.get('latency_source')})" if b else "no point meets it"))


@app.command("demo", cls=_Command)
def demo(
    out_dir: Path = typer.Option(Path("demo_out"), "--out", help="Output directory."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the generated data and the training."),
    full: bool = typer.Option(False, "--full", help="Also train the ADC DNN autoencoder."),
    quick: bool = typer.Option(False, "--quick", help="Reduced sizes (CI smoke run)."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Run yosys synthesis (minutes on big designs)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Train the flagship with k training seeds: metrics.json and the report carry the mean ± std over them (1: the spread is not measured)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Run the end-to-end job on the embedded synthetic dataset."""
    _quiet_tensorflow()
    from trigger_ml.demo import run_demo

    _require_new(out_dir, force)
    kw = dict(n_background=40_000, n_signal=4_000, epochs=1, n_train=20_000, n_verify=20_000) if quick else {}
    with _stdout_to_stderr(as_json):
        m = run_demo(out_dir, seed=seed, force=force, full=full, measure=measure, seeds=seeds, log=_log(as_json), **kw)
    if as_json:
        _emit_json({"out": str(out_dir), "metrics": m})
        return
    t = _table("signal", "AUC float", "AUC firmware", "TPR@1e-5 float", "TPR@1e-5 firmware", "best baseline (AUC, TPR@1e-5)")
    f = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    for s in m["auc"]:
        bases = m.get("baselines", {}).get(s) or {}
        bb = max(bases, key=lambda k: bases[k]["auc"], default=None)
        _row(t, s, f(m["auc"][s]["float"]), f(m["auc"][s]["firmware"]), f(m["tpr_at_fpr_1e-5"][s]["float"]),
             f(m["tpr_at_fpr_1e-5"][s]["firmware"]),
             f"{bb} {bases[bb]['auc']:.4f}, {f(bases[bb]['tpr_at_fpr_1e-5'])}" if bb else "—")
    out.print(t)
    st = m.get("statistics") or {}
    for name, q in (st.get("fpr") or {}).items():
        if not q["quoted"]:
            out.print(f"TPR at FPR {name} not quoted: {q['reason']} (held-out background: {st['background']})")
    sp = m.get("seed_spread") or {}
    if sp and not sp.get("measured"):
        out.print(f"seed spread: {sp.get('reason')}")
    elif sp:
        ms = lambda d: "n/a" if d["mean"] is None else f"{d['mean']:.4f} ± {d['std']:.4f}"  # noqa: E731
        out.print(f"seed spread over {sp['n_seeds']} training seeds, AUC (quantized): " + ", ".join(
            f"{s} {ms(v['quantized']['auc'])}" for s, v in sp["signals"].items() if "quantized" in v))
    out.print("mismatches: " + ", ".join(f"{k} {v}" for k, v in m["mismatches"].items()))
    out.print(f"emulator {m['emulator_events_per_s']['value']:,} events/s; latency {m['latency_cycles']['value']} cycles = "
              f"{m['latency_ns']['value']:.1f} ns ({m['latency_ns']['source']}); LUT {m['luts']['value']:.0f}, FF {m['ffs']['value']}, "
              f"DSP {m['dsps']['value']} ({m['luts']['source']})")
    out.print(f"demo written to {out_dir} in {m['timings_s']['total']} s")
    b = m.get("latency_budget")
    if b:
        out.print(f"latency budget {b['budget_bx']:g} BX ({b['budget_ns']:g} ns): {b['verdict']} — {b['stages']} stages × "
                  f"{1e3 / b['clock_mhz']:.3f} ns ({b['clock_mhz']:g} MHz) = {b['latency_ns']:.1f} ns ({b['source']}); "
                  f"worst stage {b['worst_stage_ns']['value']:.2f} ns (estimate; Vivado timing closure confirms the clock)")


# ---------------------------------------------------------------- entry point: the exit-code contract

class Terminated(BaseException):
    """Raised in the main thread on SIGTERM: like KeyboardInterrupt it is no ``Exception``, so it
    unwinds through ``with`` blocks and ``finally`` clauses (atomic writers remove their temporaries)."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _click_exceptions() -> tuple[type[BaseException], ...]:
    """ClickException of typer's bundled click (typer >= 0.29) and of the click package."""
    classes: list[type[BaseException]] = []
    with contextlib.suppress(ImportError, AttributeError):
        from typer._click.exceptions import ClickException as _TyperClickException

        classes.append(_TyperClickException)
    with contextlib.suppress(ImportError, AttributeError):
        import click

        classes.append(click.ClickException)
    return tuple(classes)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _say(message: str) -> None:
    """One line on stderr (plain print: never wrapped, no markup)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    print(_one_line(message), file=sys.stderr, flush=True)


def _usage_message(exc: BaseException) -> str:
    msg = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    cmd = getattr(ctx, "command_path", None) or PROG
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help was shown (stdout); still a usage error
        msg = "Missing command."
    msg = _one_line(msg).replace("Value error, ", "")  # pydantic's prefix in typer's messages
    if not msg.endswith((".", "?", "!")):
        msg += "."
    return f"{msg} Try '{cmd} --help'."


def _internal_error(exc: BaseException) -> int:
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    first = next(iter(str(exc).strip().splitlines()), "")
    _say(f"internal error: {type(exc).__name__}{': ' + first[:300] if first else ''} "
         f"(a bug in trigger_ml; rerun with {DEBUG_ENV}=1 for the traceback)")
    return EXIT_INTERNAL


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit code:
    0 ok, 1 user error, 2 internal error, 130 interrupted, 143 terminated."""
    previous = None
    with contextlib.suppress(ValueError, AttributeError):  # ValueError: not the main thread
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        try:
            rc = app(args=argv, prog_name=PROG, standalone_mode=False)
        except TriggerMLError as exc:
            _say(f"error: {exc}")
            return EXIT_USER
        except _click_exceptions() as exc:  # usage errors: unknown command/option, bad value, missing argument
            _say(f"error: {_usage_message(exc)}")
            return EXIT_USER
        except typer.Exit as exc:
            rc = exc.exit_code
        except typer.Abort:
            _say("error: aborted")
            return EXIT_USER
        except KeyboardInterrupt:
            _say("interrupted")
            return EXIT_INTERRUPTED
        except Terminated:
            _say("terminated (SIGTERM)")
            return EXIT_TERMINATED
        except SystemExit as exc:
            code = exc.code
            if code is None or isinstance(code, int):
                return code or 0
            _say(f"error: {code}")
            return EXIT_USER
        except BrokenPipeError:
            return _broken_pipe()
        except Exception as exc:  # noqa: BLE001 - anything else is a bug: one line, exit 2
            return _internal_error(exc)
        if rc == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into Exit(130)
            _say("interrupted")
            return EXIT_INTERRUPTED
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return _broken_pipe()
        return rc if isinstance(rc, int) else 0
    except KeyboardInterrupt:  # a second Ctrl-C while reporting the first
        return EXIT_INTERRUPTED
    except Terminated:
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)


def _broken_pipe() -> int:
    """stdout was closed by the reader (``| head``): stop quietly, without a traceback at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_USER


def main() -> None:
    """Console entry point (``trigger-ml``, ``python -m trigger_ml``): exits with :func:`run`'s code."""
    rc = run()
    # the command is over (its outputs are complete, or were abandoned cleanly): a Ctrl-C / SIGTERM during
    # interpreter shutdown (TensorFlow's can take a second) must not turn the exit code into -2 / -15
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_IGN)
    # CPython remembers a KeyboardInterrupt that propagated out of any exec(<string>) (dataclasses, namedtuple,
    # numba... during the imports of a stage) as "unhandled" and then exits via SIGINT (-2) although run()
    # handled it (exit 130); executing a string clears that mark
    exec("pass")  # noqa: S102
    sys.exit(rc)


if __name__ == "__main__":
    main()
