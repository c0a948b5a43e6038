"""Fuzzing every command's inputs: malformed event files and malformed configs.

Every bad input must be refused the way a user can act on: exit 1, exactly one line ``error: ...``
on stderr naming the problem, no traceback, nothing written (no output directory or file, no
temporaries next to it or next to the inputs).

* event files (hypothesis-generated): wrong shapes ((N,19,3), (N,20,4), 2-D, 4-D, ...), wrong
  dtypes (int, string, complex, bool, compound), NaN/inf, float64 values float32 cannot hold,
  wrong type codes in column 3, negative pT, padding with pT, 0 events, no ``Particles`` dataset,
  ``Particles`` a group, truncated HDF5 (bytes cut), damaged bytes, not HDF5 at all, 0-byte files
  — fed to ``data inspect``, ``train``, ``evaluate`` (signals, background), ``convert --data``,
  ``verify --events/--signals``, ``emulate --background/--signals``, ``report --signals/--background``
  and ``scan --background/--signals``;
* model configs (``models/*.yaml`` with wrong types, unknown keys, missing fields, bad YAML/JSON,
  binary) fed to ``train``, and scan configs fed to ``scan``.

Most cases call ``trigger_ml.cli.main()`` in-process the way the console script does (argv,
``SystemExit``); a handful go through the real entry point ``python -m trigger_ml`` in a
subprocess. One tiny trained run with hls4ml and Verilog firmware is built per module and shared.
The counts of bad inputs tried and tracebacks seen are printed at the end of the module
(``pytest -s``). The larger sweep is marked ``slow``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "models"
MODULE = [sys.executable, "-m", "trigger_ml"]
ENV = {k: v for k, v in os.environ.items() if k != "TRIGGER_ML_DEBUG"} | {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}

#: bad inputs tried / tracebacks (exit 2 or a "Traceback") seen, over the whole module
COUNTS = {"tried": 0, "tracebacks": 0}

FAST = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))


# ============================================================================ running the CLI


@dataclass
class Result:
    code: int
    out: str
    err: str
    warned: list[str]


def run_cli(args) -> Result:
    """``trigger-ml ARGS`` in this process through ``cli.main()``: argv, stdout/stderr captured,
    exit code from ``SystemExit``. Python warnings raised meanwhile are collected (the console
    script would print them on stderr). Signal handlers are restored (main() ignores Ctrl-C at exit)."""
    from trigger_ml.cli import main

    argv, handlers = sys.argv, {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    code = 0
    sys.argv = ["trigger-ml", *map(str, args)]
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException as exc:  # noqa: BLE001 - escaped main(): a crash
                code, err = 2, io.StringIO(err.getvalue() + f"\nTraceback (escaped main): {exc!r}")
    finally:
        sys.argv = argv
        for s, h in handlers.items():
            signal.signal(s, h)
    return Result(code, out.getvalue(), err.getvalue(),
                  [f"{w.category.__name__}: {w.message}" for w in caught if _counts_as_output(w)])


def _counts_as_output(w) -> bool:
    # DeprecationWarnings are hidden by Python's default filters; everything else would reach stderr
    return not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))


def _snapshot(*dirs: Path) -> set[str]:
    return {str(p) for d in dirs for p in d.rglob("*")}


def _crashed(r: Result) -> bool:
    return r.code == 2 or "Traceback" in r.err or "Traceback" in r.out


def assert_refused(r: Result, before: set[str], after: set[str], *, what: str) -> str:
    """Exit 1, one line ``error: ...`` on stderr (and no warning printed), nothing written."""
    COUNTS["tried"] += 1
    if _crashed(r):
        COUNTS["tracebacks"] += 1
    assert not _crashed(r), (what, r.err[-3000:])
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert r.code == 1, (what, r.code, r.out[-1500:], r.err[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (what, r.err[-3000:])
    assert not r.warned, (what, r.warned)
    assert after == before, (what, sorted(after ^ before)[:10])
    return lines[0]


# ============================================================================ the shared pipeline


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, bkg_file):
    """A tiny trained run (adc-dnn-ae, 8/2 units, 1 epoch on 4000 events) with hls4ml (trigger at a
    rate) and Verilog firmware, a small signal file, a model config and a scan config."""
    from trigger_ml.data.synth import generate_file
    from trigger_ml.firmware.convert import convert_run
    from trigger_ml.models.config import load_model_config
    from trigger_ml.train import train

    root = tmp_path_factory.mktemp("fuzz_pipe")
    cfg = load_model_config(ZOO / "adc-dnn-ae.yaml").model_copy(update={"hidden": [8], "latent": 2})
    run = train(cfg, bkg_file, root / "run", epochs=1, max_events=4000, log=lambda s: None)
    convert_run(run, root / "hls", rate_khz=2000.0, tb_events=300, log=lambda s: None)
    convert_run(run, root / "rtl", flavor="verilog", log=lambda s: None)
    sig = generate_file(root / "Ato4l.h5", 1000, "Ato4l", seed=5)
    conf = root / "conf"
    conf.mkdir()
    small = yaml.safe_load((ZOO / "adc-dnn-ae.yaml").read_text()) | {"hidden": [8], "latent": 2}
    (conf / "small.yaml").write_text(yaml.safe_dump(small))
    scan = {"base": str(conf / "small.yaml"), "grid": {"quantization.weight.bits": [6]},
            "settings": {"epochs": 1, "max_events": 2000, "eval_events": 3000, "flavor": "verilog"}}
    (conf / "scan.yaml").write_text(yaml.safe_dump(scan))
    with h5py.File(bkg_file, "r") as f:
        good = np.asarray(f["Particles"][:64])
    # warm up: import-time warnings of the heavy libraries are not the commands' output
    r = run_cli(["evaluate", run, "--signals", sig, "--max-events", "200"])
    assert r.code == 0, r.err
    p = {"root": root, "run": run, "hls": root / "hls", "rtl": root / "rtl", "bkg": Path(bkg_file), "sig": sig,
         "cfg": conf / "small.yaml", "scan": conf / "scan.yaml", "small": small, "scan_dict": scan, "good": good}
    yield p
    print(f"\n[fuzz] bad inputs tried: {COUNTS['tried']}, tracebacks seen: {COUNTS['tracebacks']}")


# ============================================================================ malformed event files

#: kinds whose outcome may legitimately be success: damaged bytes the command never reads (HDF5 has no
#: checksums on raw data). (`data inspect` of an empty file is a summary with 0 events: see check_bad_file.)
MAY_PASS = {"damaged"}

BAD_KINDS = ("shape", "dtype", "nonfinite", "beyond_f32", "typecode", "negative_pt", "padding_pt", "empty",
             "no_dataset", "group", "dangling_link", "truncated", "damaged", "not_hdf5", "zero_bytes", "scalar")


def _write(path: Path, data=None, *, name: str = "Particles", group: bool = False, **kw) -> Path:
    with h5py.File(path, "w") as f:
        if group:
            f.create_group(name)
        elif data is not None:
            f.create_dataset(name, data=data, **kw)
    return path


@st.composite
def bad_event_file(draw, kinds=BAD_KINDS):
    """(kind, writer(path, good_events) -> path): one malformed events file."""
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(1, 48))
    i, r, c = draw(st.integers(0, n - 1)), draw(st.integers(0, 18)), draw(st.integers(0, 2))
    dt = draw(st.sampled_from(["f4", "f8"]))

    def events(good):
        return np.resize(good, (n, 19, 4)).astype(dt)

    if kind == "shape":
        shape = draw(st.sampled_from([(n, 19, 3), (n, 20, 4), (n, 18, 4), (n, 19, 5), (n, 76), (n, 4, 19),
                                      (n, 19, 4, 1), (n,), (n, 1, 19, 4)])
                     | st.lists(st.integers(0, 21), min_size=1, max_size=4).map(tuple).filter(
                         lambda s: not (len(s) == 3 and s[1:] == (19, 4))))
        return kind, lambda p, good: _write(p, np.zeros(shape, dt))
    if kind == "dtype":
        t = draw(st.sampled_from(["i1", "i4", "i8", "u1", "u8", "?", "c8", "c16", "S8", "vlen-str", "compound"]))

        def w(p, good):
            ev = events(good)
            if t == "vlen-str":
                return _write(p, ev.astype(str).astype(object), dtype=h5py.string_dtype())
            if t == "compound":
                rec = np.zeros(ev.shape, dtype=[("v", "f4"), ("w", "f4")])
                rec["v"] = ev
                return _write(p, rec)
            return _write(p, ev.astype(t))
        return kind, w
    if kind == "nonfinite":
        v = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        col = draw(st.integers(0, 3))

        def w(p, good):
            ev = events(good)
            ev[i, r, col] = v
            return _write(p, ev)
        return kind, w
    if kind == "beyond_f32":
        v = draw(st.floats(4e38, 1e308)) * draw(st.sampled_from([1, -1]))

        def w(p, good):
            ev = events(good).astype("f8")
            ev[i, r, c] = v
            return _write(p, ev)
        return kind, w
    if kind == "typecode":
        code = draw(st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0, 2.5, -1.0]))

        def w(p, good):
            ev = events(good)
            expected = 1 if r == 0 else 2 if r < 5 else 3 if r < 9 else 4
            ev[i, r, 3] = code  # (in the file's dtype: 2.0000001 may round to a valid code)
            if ev[i, r, 3] in (0.0, float(expected)):
                ev[i, r, 3] = expected + 1
            return _write(p, ev)
        return kind, w
    if kind == "negative_pt":
        v = -draw(st.floats(1e-30, 1e30))

        def w(p, good):
            ev = events(good)
            ev[i, r, 0] = v
            return _write(p, ev)
        return kind, w
    if kind == "padding_pt":
        v = draw(st.floats(1e-3, 1e4))

        def w(p, good):
            ev = events(good)
            ev[i, r, 3], ev[i, r, 0] = 0.0, v
            return _write(p, ev)
        return kind, w
    if kind == "empty":
        return kind, lambda p, good: _write(p, np.zeros((0, 19, 4), dt))
    if kind == "no_dataset":
        other = draw(st.sampled_from(["particles", "Particle", "events", "data/Particles", None]))
        return kind, lambda p, good: _write(p, events(good), name=other) if other else _write(p)
    if kind == "group":
        return kind, lambda p, good: _write(p, group=True)
    if kind == "dangling_link":
        external = draw(st.booleans())

        def w(p, good):
            with h5py.File(p, "w") as f:
                f["Particles"] = h5py.ExternalLink("missing.h5", "/Particles") if external else h5py.SoftLink("/nope")
            return p
        return kind, w
    if kind == "scalar":
        return kind, lambda p, good: _write(p, np.float32(1.0))
    if kind in ("truncated", "damaged"):
        frac = draw(st.floats(0.0, 0.999))
        junk = draw(st.binary(min_size=1, max_size=4096))
        chunked = draw(st.booleans())

        def w(p, good):
            _write(p, events(good), **({"chunks": (min(n, 4), 19, 4), "compression": "gzip"} if chunked else {}))
            raw = bytearray(p.read_bytes())
            at = int(len(raw) * frac)
            if kind == "truncated":
                p.write_bytes(bytes(raw[:at]))
            else:
                raw[at:at + len(junk)] = junk
                p.write_bytes(bytes(raw[:len(raw)]))
            return p
        return kind, w
    if kind == "not_hdf5":
        blob = draw(st.binary(min_size=1, max_size=2048).filter(lambda b: not b.startswith(b"\x89HDF"))
                    | st.text(min_size=1, max_size=200).map(str.encode))
        return kind, lambda p, good: (p.write_bytes(blob), p)[1]
    if kind == "zero_bytes":
        return kind, lambda p, good: (p.write_bytes(b""), p)[1]
    raise AssertionError(kind)


#: commands reading an events file; F is the bad file, O the output slot inside the case directory
def _commands(p: dict) -> dict[str, callable]:
    return {
        "inspect": lambda F, O: ["data", "inspect", F],
        "train": lambda F, O: ["train", p["cfg"], "--data", F, "--out", O / "run", "--epochs", "1", "--no-onnx"],
        "evaluate --signals": lambda F, O: ["evaluate", p["run"], "--signals", F, "--max-events", "3000"],
        "evaluate --background": lambda F, O: ["evaluate", p["run"], "--signals", p["sig"], "--background", F],
        "convert --data": lambda F, O: ["convert", p["run"], "--out", O / "fw", "--data", F],
        "convert --data --rate-khz": lambda F, O: ["convert", p["run"], "--out", O / "fw", "--data", F,
                                                   "--rate-khz", "2000"],
        "verify --events": lambda F, O: ["verify", p["run"], "--events", F, "--hls", p["hls"], "--rtl", p["rtl"],
                                         "--n-events", "500", "--report", O / "verify.json"],
        "verify --signals": lambda F, O: ["verify", p["run"], "--events", p["bkg"], "--n-events", "300",
                                          "--signals", F, "--report", O / "verify.json"],
        "emulate --background": lambda F, O: ["emulate", p["hls"], "--background", F, "--menu", "A=4000",
                                              "--catalog", O / "cat.h5"],
        "emulate --signals": lambda F, O: ["emulate", p["rtl"], "--background", p["bkg"], "--signals", F,
                                           "--menu", "A=4000", "--catalog", O / "cat.h5"],
        "report --signals": lambda F, O: ["report", p["root"], "--signals", F, "--out", O / "report"],
        "report --background": lambda F, O: ["report", p["root"], "--signals", p["sig"], "--background", F,
                                             "--out", O / "report"],
        "scan --background": lambda F, O: ["scan", p["scan"], "--out", O / "scan", "--background", F,
                                           "--signals", p["sig"], "--scheduler", "none"],
        "scan --signals": lambda F, O: ["scan", p["scan"], "--out", O / "scan", "--background", p["bkg"],
                                        "--signals", F, "--scheduler", "none"],
    }


COMMANDS = ("inspect", "train", "evaluate --signals", "evaluate --background", "convert --data",
            "convert --data --rate-khz", "verify --events", "verify --signals", "emulate --background",
            "emulate --signals", "report --signals", "report --background", "scan --background", "scan --signals")
#: the layout (not the values or the number of events) of report inputs is checked up front by the
#: CLI; such a file leaves the report's physics section absent, with the reason (see _check_report)
REPORT_CONTENT_KINDS = {"nonfinite", "beyond_f32", "typecode", "negative_pt", "padding_pt", "damaged", "empty"}


_case_no = [0]


def _case_dir(p: dict) -> Path:
    _case_no[0] += 1
    d = p["root"].parent / f"fuzz_case{_case_no[0]}"
    d.mkdir()
    return d


def check_bad_file(p: dict, kind: str, writer, command: str) -> None:
    d = _case_dir(p)
    bad = writer(d / "bad.h5", p["good"])
    out = d / "out"  # outputs go inside (a missing parent is refused by the output guards); stays empty
    out.mkdir()
    watched = (d, p["root"])
    before = _snapshot(*watched)
    r = run_cli(_commands(p)[command](bad, out))
    after = _snapshot(*watched)
    what = f"{command} <- {kind}"
    if kind == "empty" and command == "inspect":  # a summary of an empty file: 0 events, not an error
        COUNTS["tried"] += 1
        assert r.code == 0 and not _crashed(r) and " 0 events" in r.out, (what, r.out, r.err)
        return
    if command.startswith("report") and kind in REPORT_CONTENT_KINDS and r.code == 0:
        return _check_report(r, out, bad, what, before, after)
    if kind in MAY_PASS and r.code == 0:  # the damaged bytes were never read
        COUNTS["tried"] += 1
        assert not _crashed(r), (what, r.err[-3000:])
        return
    line = assert_refused(r, before, after, what=what)
    assert str(bad) in line or bad.name in line, (what, line)  # the message names the file


def _check_report(r: Result, out: Path, bad: Path, what: str, before, after) -> None:
    """The CLI checks the layout of report inputs up front; with `trigger_ml.data.adc2021.check_events`
    there the values would be refused up front too (exit 1). Until then: no traceback, the report
    is written without physics metrics and says which file is bad."""
    COUNTS["tried"] += 1
    assert not _crashed(r), (what, r.err[-3000:])
    rep = json.loads((out / "report" / "report.json").read_text())
    assert rep["metrics"]["status"] == "absent" and bad.name in rep["metrics"]["reason"], (what, rep["metrics"])


# ---- a deterministic matrix: every command x the classic bad files

CLASSIC = {
    "shape (N,19,3)": ("shape", lambda p, good: _write(p, good[:, :, :3])),
    "shape (N,20,4)": ("shape", lambda p, good: _write(p, np.zeros((8, 20, 4), "f4"))),
    "2-D": ("shape", lambda p, good: _write(p, good.reshape(len(good), -1))),
    "4-D": ("shape", lambda p, good: _write(p, good[..., None])),
    "int": ("dtype", lambda p, good: _write(p, good.astype("i4"))),
    "string": ("dtype", lambda p, good: _write(p, good.astype("S8"))),
    "complex": ("dtype", lambda p, good: _write(p, good.astype("c8"))),
    "bool": ("dtype", lambda p, good: _write(p, good.astype("?"))),
    "NaN": ("nonfinite", lambda p, good: _write(p, np.where(np.arange(good.size).reshape(good.shape) == 77, np.nan, good))),
    "inf": ("nonfinite", lambda p, good: _write(p, np.where(np.arange(good.size).reshape(good.shape) == 4, np.inf, good))),
    "type code 7": ("typecode", lambda p, good: _write(p, np.where((np.arange(good.size) == 4 * 22 + 3).reshape(good.shape), 7.0, good))),
    "0 events": ("empty", lambda p, good: _write(p, good[:0])),
    "no Particles": ("no_dataset", lambda p, good: _write(p, good, name="events")),
    "truncated": ("truncated", lambda p, good: (_write(p, good), p.write_bytes(p.read_bytes()[:3000]), p)[2]),
    "not HDF5": ("not_hdf5", lambda p, good: (p.write_text("pT,eta,phi\n1,2,3\n"), p)[1]),
}


#: the second option of a command reads the same file through the same check: slow suite only
_CLASSIC_SLOW = {"evaluate --background", "convert --data", "verify --signals"}


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c in _CLASSIC_SLOW else c
                                     for c in COMMANDS])
def test_classic_bad_files_every_command(pipe, command):
    """Every command refuses the classic malformed files with one line, exit 1, nothing written."""
    for label, (kind, writer) in CLASSIC.items():
        if command.startswith(("report", "convert --data --rate-khz")) and label not in (
                "2-D", "int", "NaN", "0 events", "truncated", "not HDF5"):
            continue  # (slow commands: a representative subset; the slow sweep runs them all)
        check_bad_file(pipe, kind, writer, command)


@FAST
@given(case=bad_event_file(), command=st.sampled_from([c for c in COMMANDS if not c.startswith("report")]))
def test_hypothesis_bad_event_files(pipe, case, command):
    kind, writer = case
    check_bad_file(pipe, kind, writer, command)


@pytest.mark.slow
@SLOW
@given(case=bad_event_file(), command=st.sampled_from(COMMANDS))
def test_hypothesis_bad_event_files_sweep(pipe, case, command):
    kind, writer = case
    check_bad_file(pipe, kind, writer, command)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_classic_bad_files_every_command_all(pipe, command):
    for kind, writer in CLASSIC.values():
        check_bad_file(pipe, kind, writer, command)


def test_odd_but_valid_files_are_read(pipe, tmp_path):
    """Optional extras a file may carry - array/bytes attributes, extra datasets of any dtype or
    shape, groups, dangling links next to ``Particles`` - never stop a command that reads it."""
    f = _write(tmp_path / "odd.h5", pipe["good"])
    with h5py.File(f, "a") as h:
        h.attrs["array"] = np.array([1, 2, 3])
        h.attrs["bytes"] = np.bytes_(b"\xff\xfe")
        h.attrs["strings"] = np.array(["a", "b"], dtype=h5py.string_dtype())
        h.create_dataset("process", data=np.array(["x"] * len(pipe["good"]), dtype="S2"))
        h.create_dataset("weights", data=np.zeros((len(pipe["good"]), 3)))
        h.create_group("meta")
        h["dangling"] = h5py.SoftLink("/nowhere")
        h["elsewhere"] = h5py.ExternalLink("missing.h5", "/x")
    for args in (["data", "inspect", f], ["data", "inspect", f, "--json"],
                 ["emulate", pipe["hls"], "--background", f, "--menu", "A=4000", "--json"]):
        COUNTS["tried"] += 1
        r = run_cli(args)
        assert r.code == 0 and not _crashed(r), (args, r.err[-2000:])


# ---- messages of the empty-file and too-few-events rules


def test_empty_and_tiny_files_messages(pipe):
    """0 events: every stage says which file holds none and what to do; training also refuses a
    sample the validation split leaves empty; a menu rate too small for the background is
    reported as not calibrated, with the reason."""
    d = _case_dir(pipe)
    empty = _write(d / "empty.h5", pipe["good"][:0])
    one = _write(d / "one.h5", pipe["good"][:1])
    (d / "o").mkdir()
    out = d / "o" / "out"
    cases = {
        "train": (["train", pipe["cfg"], "--data", empty, "--out", out], "holds 0 events"),
        "train (1 event)": (["train", pipe["cfg"], "--data", one, "--out", out], "too few to train"),
        "evaluate": (["evaluate", pipe["run"], "--signals", empty], "holds 0 events"),
        "evaluate bkg": (["evaluate", pipe["run"], "--signals", pipe["sig"], "--background", empty], "holds 0 events"),
        "convert": (["convert", pipe["run"], "--out", out, "--data", empty], "holds 0 events"),
        "verify": (["verify", pipe["run"], "--events", empty], "holds 0 events"),
        "emulate": (["emulate", pipe["hls"], "--background", empty], "holds 0 events"),
        "emulate sig": (["emulate", pipe["hls"], "--background", pipe["bkg"], "--signals", empty], "holds 0 events"),
    }
    for what, (args, text) in cases.items():
        before = _snapshot(d, pipe["root"])
        r = run_cli(args)
        line = assert_refused(r, before, _snapshot(d, pipe["root"]), what=what)
        assert text in line and ".h5" in line, (what, line)
    COUNTS["tried"] += 1
    r = run_cli(["emulate", pipe["hls"], "--background", pipe["bkg"], "--menu", "X=0.01,L=4000", "--json"])
    assert r.code == 0, r.err
    wp = json.loads(r.out)["working_points"]
    assert wp["X"]["threshold"] is None and "background events" in wp["X"]["error"]
    assert wp["L"]["threshold"] is not None


@pytest.mark.parametrize("args, text", [
    (["convert", "{run}", "--out", "{out}", "--rate-khz", "-5"], "--rate-khz: must be positive"),
    (["convert", "{run}", "--out", "{out}", "--rate-khz", "0"], "--rate-khz: must be positive"),
    (["convert", "{run}", "--out", "{out}", "--rate-khz", "nan"], "--rate-khz"),
    (["convert", "{run}", "--out", "{out}", "--rate-khz", "50000"], "--rate-khz"),
    (["convert", "{run}", "--out", "{out}", "--clock-ns", "0"], "--clock-ns"),
    (["emulate", "{hls}", "--background", "{bkg}", "--menu", "X=-1"], "positive"),
    (["emulate", "{hls}", "--background", "{bkg}", "--menu", "X=0"], "positive"),
    (["emulate", "{hls}", "--background", "{bkg}", "--menu", "X=nan"], "positive"),
    (["emulate", "{hls}", "--background", "{bkg}", "--menu", "X=fast"], "not a number"),
    (["emulate", "{hls}", "--background", "{bkg}", "--menu", "X"], "NAME=RATE_KHZ"),
    (["emulate", "{hls}", "--background", "{bkg}", "--menu", "=5"], "NAME=RATE_KHZ"),
    (["emulate", "{hls}", "--background", "{bkg}", "--menu", "A=5,A=2"], "twice"),
    (["emulate", "{hls}", "--background", "{bkg}", "--menu", "A=1e9"], "below the bunch-crossing rate"),
    (["emulate", "{hls}", "--background", "{bkg}", "--menu", ""], "--menu"),
    (["emulate", "{hls}", "--background", "{bkg}", "--bx-rate-mhz", "0"], "--bx-rate-mhz"),
    (["evaluate", "{run}", "--signals", "{sig}", "--rate-khz", "-5"], "--rate-khz"),
    (["evaluate", "{run}", "--signals", "{sig}", "--bx-rate-mhz", "0"], "--bx-rate-mhz"),
])
def test_rates_and_menus(pipe, tmp_path, args, text):
    args = [a.format(run=pipe["run"], hls=pipe["hls"], bkg=pipe["bkg"], sig=pipe["sig"], out=tmp_path / "o")
            for a in args]
    before = _snapshot(tmp_path, pipe["root"])
    line = assert_refused(run_cli(args), before, _snapshot(tmp_path, pipe["root"]), what=" ".join(args[3:]))
    assert text in line, line


# ============================================================================ malformed configs

#: per model-config field: values that make the config invalid (pydantic's lax mode accepts "3"
#: for an int, so none of these is a string spelling of a valid value)
BAD_FIELD_VALUES: dict[str, list] = {
    "name": [None, 5, [], {}, "", "   ", "a/b", "line\nbreak"],
    "kind": ["transformer", 3, None, ["autoencoder"]],
    "preprocessing": ["minmax", 1, "standardize"],
    "hidden": ["32", [0], [-1], [1.5], [[8]], {"a": 1}, None, ["x"]],
    "latent": [0, -3, 2.5, None, [3], "three"],
    "decoder": [[0], "x", [None]],
    "batchnorm": ["maybe", 2, [True]],
    "conv_filters": [[0], "16"],
    "n_features": [0, 56, 3.5, "many"],
    "n_classes": [1, "five"],
    "input_quant": ["8", {"bits": 0, "integer": 1}, {"bits": 8}, {"bits": 8, "integer": 1, "rounding": "UP"}],
    "quantization": ["fixed", {"mode": "sometimes"}, {"weight": {"bits": 0, "integer": 1}},
                     {"weight": {"bits": 8, "integer": 1, "extra": 1}}, {"beta": -1},
                     {"layers": {"enc0": {"kernel": {"bits": 8, "integer": 1}}}}, {"weight": "8"},
                     {"score": {"bits": 99, "integer": 1}}],
    "training": [{"epochs": 0}, {"batch_size": -1}, {"learning_rate": 0}, {"validation_split": 1},
                 {"validation_split": 0}, {"validation_split": 1.5}, {"patience": "x"}, {"max_events": 0},
                 {"optimizer": "sgd"}, "fast", {"epochs": 1.5}],
    "teacher": [5, ["a"]],
    "seed": [-1, "x", 1.5, 2**40],
}


@st.composite
def bad_model_config(draw, base: dict):
    """(file bytes, what): a model config that must be refused."""
    form = draw(st.sampled_from(["fields", "fields", "fields", "unknown", "missing", "yaml", "top", "binary",
                                 "json", "empty"]))
    cfg = json.loads(json.dumps(base))
    if form in ("fields", "json"):
        for f in draw(st.lists(st.sampled_from(sorted(BAD_FIELD_VALUES)), min_size=1, max_size=3, unique=True)):
            cfg[f] = draw(st.sampled_from(BAD_FIELD_VALUES[f]))
        text = json.dumps(cfg) if form == "json" else yaml.safe_dump(cfg)
        return text.encode(), f"{form}: {cfg}"
    if form == "unknown":
        key = draw(st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True).filter(lambda k: k not in _model_fields()))
        cfg[key] = draw(st.integers() | st.text(max_size=5) | st.none())
        return yaml.safe_dump(cfg).encode(), f"unknown key {key}"
    if form == "missing":
        key = draw(st.sampled_from(["name", "kind"]))
        del cfg[key]
        return yaml.safe_dump(cfg).encode(), f"missing {key}"
    if form == "yaml":
        text = draw(st.sampled_from(["name: [unclosed", "a: b: c", "- x\n y: 1", "name: x\n  kind: y\n bad",
                                     "{name: x, kind: autoencoder", "\t- tab", "key: @reserved", "? [a]: b"]))
        return text.encode(), f"yaml {text!r}"
    if form == "top":
        return yaml.safe_dump(draw(st.lists(st.integers(), max_size=3) | st.integers() | st.text(
            alphabet="abcxyz ", max_size=10))).encode(), "top level not a mapping"
    if form == "binary":
        return b"\xff\xfe\x00" + draw(st.binary(max_size=200)), "binary"
    return b"", "empty"


def _model_fields() -> set[str]:
    from trigger_ml.models.config import ModelConfig

    return set(ModelConfig.model_fields)


def _check_config(pipe: dict, blob: bytes, what: str, suffix: str, command) -> None:
    d = _case_dir(pipe)
    f = d / f"config{suffix}"
    f.write_bytes(blob)
    (d / "o").mkdir()
    out = d / "o" / "out"
    before = _snapshot(d, pipe["root"])
    r = run_cli(command(f, out))
    line = assert_refused(r, before, _snapshot(d, pipe["root"]), what=what)
    assert f.name in line, (what, line)


def _train_cmd(pipe):
    return lambda f, out: ["train", f, "--data", pipe["bkg"], "--out", out, "--epochs", "1", "--max-events", "300",
                           "--no-onnx"]


@FAST
@given(data=st.data())
def test_hypothesis_bad_model_configs(pipe, data):
    blob, what = data.draw(bad_model_config(pipe["small"]))
    _check_config(pipe, blob, what, ".yaml", _train_cmd(pipe))


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_hypothesis_bad_model_configs_sweep(pipe, data):
    blob, what = data.draw(bad_model_config(pipe["small"]))
    _check_config(pipe, blob, what, data.draw(st.sampled_from([".yaml", ".json", ".yml"])), _train_cmd(pipe))


def test_every_bad_field_value(pipe):
    """Each bad value of the table alone is refused naming the field (no training starts)."""
    for field, values in BAD_FIELD_VALUES.items():
        for v in values:
            cfg = dict(pipe["small"]) | {field: v}
            _check_config(pipe, yaml.safe_dump(cfg).encode(), f"{field}={v!r}", ".yaml", _train_cmd(pipe))


BAD_SCAN: dict[str, list] = {
    "grid": ["x", [1, 2], {"latent": []}, {"latent": "3"}, {"latent": [0]}, {"nonexistent.field": [1]},
             {"quantization.weight.bits": [0]}, {"clock_ns": [-1]}, {"reuse_factor": [1.5]}, {"hidden": [[0]]}],
    "random": ["x", {"latent": 3}, {"latent": {"low": 5, "high": 1}}, {"latent": {"choices": []}},
               {"latent": {"low": 1}}, {"training.learning_rate": {"low": 0, "high": 1, "log": True}},
               {"latent": {"low": 1, "high": 3, "bogus": 1}}, {"latent": {"low": "a", "high": 3}},
               {"latent": {"low": 1, "high": 10**400}}],
    "n_points": [-1, "x", 1.5, True],
    "seed": ["x", 1.5, None],
    "settings": ["x", [1], {"flavor": "asic"}, {"epochs": 0}, {"rate_khz": -1}, {"rate_khz": math.nan},
                 {"rate_khz": math.inf}, {"bogus": 1}, {"signals": "a.h5"}, {"background": 5}, {"measure": "yes"},
                 {"eval_events": 1.5}, {"rate_khz": 1e9}, {1: 2}, {"clock_ns": 0}],
    "base": [None, 5, "nonexistent.yaml", {"name": "x"}, ["a"], {"name": "x", "kind": "autoencoder", "latent": 0}],
    "bogus_key": [1],
}


@st.composite
def bad_scan_config(draw, base: dict):
    scan = json.loads(json.dumps(base))
    for k in draw(st.lists(st.sampled_from(sorted(BAD_SCAN)), min_size=1, max_size=2, unique=True)):
        scan[k] = draw(st.sampled_from(BAD_SCAN[k]))
    return yaml.safe_dump(scan, allow_unicode=True).encode(), f"scan {scan}"


def _scan_cmd(pipe):
    return lambda f, out: ["scan", f, "--out", out, "--background", pipe["bkg"], "--signals", pipe["sig"],
                           "--scheduler", "none"]


@FAST
@given(data=st.data())
def test_hypothesis_bad_scan_configs(pipe, data):
    blob, what = data.draw(bad_scan_config(pipe["scan_dict"]))
    _check_config(pipe, blob, what, ".yaml", _scan_cmd(pipe))


def test_every_bad_scan_value(pipe):
    for key, values in BAD_SCAN.items():
        for v in values:
            scan = dict(pipe["scan_dict"]) | {key: v}
            if key == "random" and "n_points" not in scan:
                scan["n_points"] = 1
            _check_config(pipe, yaml.safe_dump(scan).encode(), f"{key}={v!r}", ".yaml", _scan_cmd(pipe))
    for blob in (b"", b"- a\n- b\n", b"base: [unclosed", b"\xff\xfe\x00\x01"):
        _check_config(pipe, blob, repr(blob), ".yaml", _scan_cmd(pipe))


# ============================================================================ the real entry point


@pytest.mark.parametrize("case", ["emulate <- NaN", "scan <- truncated", "evaluate <- 0 events",
                                  "train <- bad config"])
def test_real_entry_point(pipe, tmp_path, case):
    """A handful of cases through ``python -m trigger_ml`` (the console script's code path and real
    stderr, where library warnings and TensorFlow's start-up lines would show)."""
    command, kind = case.split(" <- ")
    (tmp_path / "o").mkdir()
    if kind == "bad config":
        bad = tmp_path / "bad.yaml"
        bad.write_text("name: x\nkind: autoencoder\nhidden: [0]\n")
        args = ["train", bad, "--data", pipe["bkg"], "--out", tmp_path / "o" / "run"]
    else:
        bad = CLASSIC[kind][1](tmp_path / "bad.h5", pipe["good"])
        args = {"emulate": ["emulate", pipe["hls"], "--background", bad, "--catalog", tmp_path / "o" / "cat.h5"],
                "scan": ["scan", pipe["scan"], "--out", tmp_path / "o" / "scan", "--background", bad,
                         "--signals", pipe["sig"], "--scheduler", "none"],
                "evaluate": ["evaluate", pipe["run"], "--signals", bad]}[command]
    before = _snapshot(tmp_path, pipe["root"])
    p = subprocess.run([*MODULE, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300, check=False)
    line = assert_refused(Result(p.returncode, p.stdout, p.stderr, []), before, _snapshot(tmp_path, pipe["root"]),
                          what=case)
    assert bad.name in line, line
