"""Fault injection: SIGINT / SIGTERM at seeded random moments of every stage, run as a real subprocess.

Each stage (``data generate``, ``train``, ``convert`` hls and verilog, ``emulate --catalog``,
``report``) is started with ``python -m trigger_ml`` and interrupted at moments drawn uniformly
from ``[T_MIN, typical duration]`` (the duration measured when the inputs were prepared), half of
the time over an existing earlier output (``--force``), half into a fresh path. Afterwards:

* the output is either absent (fresh case only) / the old one, byte-identical (sha256 of every
  file), or a complete new one (its manifest / marker readable, the stage's files present);
* no temporary is left: no ``.*.tmp-*`` / ``.*.old-*`` anywhere in the case directory, and no
  trigger_ml temporary in the process's private ``TMPDIR`` (caches there complete or absent);
* the inputs are byte-identical;
* the exit code is 130 (SIGINT) / 143 (SIGTERM), or 0 when the stage finished first.

``T_MIN`` (0.5 s) leaves the interpreter time to import the CLI and install its handlers: a signal
during the first imports ends the process by the default action (exit -2 / -15) before anything
is written, which is safe but not the CLI's exit-code contract.

The fast set interrupts the cheap stages 5 times each; the full sweep (every stage, more moments)
is ``@pytest.mark.slow``. The counts (interrupts injected, outputs lost, temporaries left, inputs
changed) are printed and, with ``TRIGGER_ML_FI_SUMMARY=path``, written there as JSON.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

ZOO = Path(__file__).resolve().parents[1] / "models"
T_MIN = 0.5
EXIT_CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}
TEMP_PATTERNS = (".*.tmp-*", ".*.old-*")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "PYTHONUNBUFFERED": "1",
       "CUDA_VISIBLE_DEVICES": ""}
ENV.pop("TRIGGER_ML_DEBUG", None)

SUMMARY: dict[str, int] = {"interrupts_injected": 0, "finished_first": 0, "signal_during_exit": 0, "old_output_kept": 0,
                           "new_output_complete": 0,
                           "output_absent_fresh": 0, "outputs_lost": 0, "temporaries_left": 0, "inputs_changed": 0}


# ----------------------------------------------------------------------------- helpers


def _cli(args: list, *, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trigger_ml", *map(str, args)], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def _ok(args: list, cwd: Path) -> float:
    t0 = time.monotonic()
    r = _cli(args, cwd=cwd)
    assert r.returncode == 0, (args, r.returncode, r.stderr[-3000:])
    return time.monotonic() - t0


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def snapshot(path: Path) -> dict[str, str] | None:
    """{relative path: sha256 | 'dir' | 'link:target'} of a file or directory tree; None when absent."""
    if not (path.exists() or path.is_symlink()):
        return None
    if path.is_symlink():
        return {"": f"link:{os.readlink(path)}"}
    if path.is_file():
        return {"": _sha(path)}
    out = {}
    for root, dirs, files in os.walk(path):
        r = Path(root)
        for d in dirs:
            p = r / d
            out[p.relative_to(path).as_posix()] = f"link:{os.readlink(p)}" if p.is_symlink() else "dir"
        for f in files:
            p = r / f
            out[p.relative_to(path).as_posix()] = f"link:{os.readlink(p)}" if p.is_symlink() else _sha(p)
    return out


def temporaries(root: Path) -> list[str]:
    """Our temporaries anywhere below ``root``: ``.NAME.tmp-*`` and ``.NAME.old-*``."""
    return sorted(str(p) for p in root.rglob(".*") if any(fnmatch.fnmatch(p.name, pat) for pat in TEMP_PATTERNS))


def tmpdir_leftovers(tmpdir: Path) -> list[str]:
    """trigger_ml temporaries left in the process's private TMPDIR (the C-simulation cache may stay,
    but only complete entries: no half-built sources / executables)."""
    left = []
    for p in tmpdir.iterdir() if tmpdir.exists() else ():
        if p.name.startswith("trigger_ml_hls_csim_"):
            left += [str(q) for q in p.iterdir() if q.suffix in (".cpp", ".tmp")]
        elif p.name.startswith(("tml_", "trigger_ml_")):
            left.append(str(p))
    return left


def assert_complete(out: Path, stages: tuple[str, ...], required: tuple[str, ...]) -> None:
    """``out`` is a finished output of one of ``stages``: marker/manifest readable, the stage's files present."""
    from trigger_ml.core.artifacts import identify, read_manifest

    held, desc = identify(out)
    assert held in stages, f"{out}: holds {desc}, expected {stages}"
    if out.is_file():
        from trigger_ml.data.adc2021 import count_events

        count_events(out)  # opens, checks the layout
        return
    if (out / "manifest.json").is_file():
        read_manifest(out, verify_inputs=False)
    for f in required:
        assert (out / f).exists(), f"{out}: {f} missing in a finished output"
    if held == "firmware.rtl":
        json.loads((out / "rtl_manifest.json").read_text())
    if held == "report":
        json.loads((out / "report.json").read_text())


@dataclass
class Stage:
    name: str
    args: Callable[[Path], list]           # CLI arguments writing to OUT (without --force)
    kind: str                              # "dir" or "file"
    stages: tuple[str, ...]                # what identify() must say of a finished output
    inputs: list[Path]
    old: Path                              # a finished output of the same stage: the "previous output"
    duration: float                        # typical run time [s] (measured when the inputs were made)
    required: tuple[str, ...] = ()
    outputs: list[str] = field(default_factory=list)


def inject(stage: Stage, root: Path, n: int, seed: int) -> list[dict]:
    """Interrupt ``stage`` ``n`` times at seeded random moments; assert the safety properties after each."""
    rng = random.Random(f"{stage.name}:{seed}")
    hi = max(T_MIN + 0.5, stage.duration)
    results = []
    for i in range(n):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        replace = i % 4 in (0, 3)  # both signals meet both cases
        at = rng.uniform(T_MIN, hi)
        case = root / f"{stage.name}-{seed}-{i}"
        case.mkdir()
        out = case / ("out.h5" if stage.kind == "file" else "out")
        if replace:
            (shutil.copytree(stage.old, out, symlinks=True) if stage.old.is_dir() else shutil.copy2(stage.old, out))
        old = snapshot(out)
        ins = {str(p): snapshot(p) for p in stage.inputs}
        tmpdir = case / "tmp"
        tmpdir.mkdir()
        env = {**ENV, "TMPDIR": str(tmpdir), "TRIGGER_ML_CACHE": str(case / "cache")}
        args = [*stage.args(out), *(["--force"] if replace else [])]
        proc = subprocess.Popen([sys.executable, "-m", "trigger_ml", *map(str, args)], cwd=case, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        try:
            sent = False
            while time.monotonic() - t0 < at:
                if proc.poll() is not None:
                    break
                time.sleep(0.01)
            if proc.poll() is None:
                proc.send_signal(sig)
                sent = True
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                pytest.fail(f"{stage.name}: still running 120 s after {sig.name} at {at:.2f} s")
        finally:
            if proc.poll() is None:
                proc.kill()
        rc = proc.returncode
        SUMMARY["interrupts_injected"] += int(sent)
        ctx = f"{stage.name} #{i}: {sig.name} at {at:.2f} s ({'over an old output' if replace else 'fresh'}), exit {rc}"
        # exit code
        if sent and rc != 0:
            assert rc == EXIT_CODE[sig], f"{ctx}; stderr: {err[-2000:]}"
        else:
            assert rc == 0, f"{ctx}; stderr: {err[-2000:]}"
            SUMMARY["finished_first" if not sent else "signal_during_exit"] += 1  # the latter: work done, exiting
        # temporaries
        stray = sorted(p.name for p in case.iterdir() if p.name not in (out.name, "tmp", "cache"))
        left = temporaries(case) + tmpdir_leftovers(tmpdir) + stray  # nothing but the output next to it
        SUMMARY["temporaries_left"] += len(left)
        assert not left, f"{ctx}: temporaries left: {left}"
        # inputs
        changed = [p for p, snap in ins.items() if snapshot(Path(p)) != snap]
        SUMMARY["inputs_changed"] += len(changed)
        assert not changed, f"{ctx}: inputs changed: {changed}"
        # the output: old (byte-identical), complete new, or absent when there was none
        now = snapshot(out)
        if now is None:
            SUMMARY["outputs_lost"] += int(replace)
            assert not replace, f"{ctx}: the previous output was lost"
            assert rc != 0, f"{ctx}: finished without writing its output"
            SUMMARY["output_absent_fresh"] += 1
            state = "absent"
        elif replace and now == old:
            SUMMARY["old_output_kept"] += 1
            state = "old"
        else:
            try:
                assert_complete(out, stage.stages, stage.required)
            except Exception:
                SUMMARY["outputs_lost"] += int(replace)
                raise
            SUMMARY["new_output_complete"] += 1
            state = "new"
        if rc == 0:  # finished: the new output (it may equal the old one byte for byte: emulate is deterministic)
            assert state != "absent", f"{ctx}: exit 0 but no output"
            assert_complete(out, stage.stages, stage.required)
        results.append({"signal": sig.name, "at": round(at, 2), "replace": replace, "rc": rc, "output": state})
        shutil.rmtree(case, ignore_errors=True)  # keep the disk footprint small
    print(f"\n{stage.name}: " + "; ".join(f"{r['signal']}@{r['at']}s {'force' if r['replace'] else 'fresh'} "
                                          f"→ {r['rc']} {r['output']}" for r in results))
    return results


# ----------------------------------------------------------------------------- inputs, made once per module


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    """Inputs and one finished output of every stage (through the CLI), with their run times."""
    d = tmp_path_factory.mktemp("fi_inputs")
    cfg = yaml.safe_load((ZOO / "adc-dnn-ae.yaml").read_text()) | {"hidden": [8], "latent": 2}
    (d / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    t: dict[str, float] = {}
    _ok(["data", "generate", "--out", d / "bkg.h5", "--events", "20000", "--seed", "1"], d)
    _ok(["data", "generate", "--out", d / "sig.h5", "--events", "2000", "--signal", "Ato4l", "--seed", "2"], d)
    t["generate"] = _ok(["data", "generate", "--out", d / "gen.h5", "--events", "400000", "--seed", "3"], d)
    t["train"] = _ok(["train", d / "tiny.yaml", "--data", d / "bkg.h5", "--out", d / "run", "--epochs", "1",
                      "--max-events", "4000"], d)
    t["convert_hls"] = _ok(["convert", d / "run", "--out", d / "hls", "--rate-khz", "2000"], d)
    t["convert_verilog"] = _ok(["convert", d / "run", "--out", d / "rtl", "--flavor", "verilog"], d)
    return {"dir": d, "t": t}


def _emulate_args(d: Path):
    return lambda out: ["emulate", d / "hls", "--background", d / "bkg.h5", "--signals", d / "sig.h5",
                        "--menu", "A=4000,B=1000", "--catalog", out]


def _report_args(d: Path):
    return lambda out: ["report", d / "hls", "--out", out, "--signals", d / "sig.h5"]


def stage_of(name: str, pipe: dict) -> Stage:
    d, t = pipe["dir"], pipe["t"]
    if name == "generate":
        return Stage("generate", lambda out: ["data", "generate", "--out", out, "--events", "400000", "--seed", "4"],
                     "file", ("data.generate",), [], d / "gen.h5", t["generate"])
    if name == "train":
        return Stage("train", lambda out: ["train", d / "tiny.yaml", "--data", d / "bkg.h5", "--out", out, "--epochs", "1",
                                           "--max-events", "4000", "--seed", "5"],
                     "dir", ("train",), [d / "bkg.h5", d / "tiny.yaml"], d / "run", t["train"],
                     required=("model.keras", "train_model.keras", "float_model.keras", "preprocessing.json"))
    if name == "convert_hls":
        return Stage("convert_hls", lambda out: ["convert", d / "run", "--out", out, "--rate-khz", "2000"],
                     "dir", ("firmware.hls",), [d / "run", d / "bkg.h5"], d / "hls", t["convert_hls"],
                     required=("firmware_model.json", "source_run.json", "preprocessing.json"))
    if name == "convert_verilog":
        return Stage("convert_verilog", lambda out: ["convert", d / "run", "--out", out, "--flavor", "verilog"],
                     "dir", ("firmware.rtl",), [d / "run", d / "bkg.h5"], d / "rtl", t["convert_verilog"],
                     required=("rtl_manifest.json", "source_run.json", "preprocessing.json"))
    if name == "emulate":
        if "emulate" not in t:
            t["emulate"] = _ok(_emulate_args(d)(d / "cat.h5"), d)
        return Stage("emulate", _emulate_args(d), "file", ("emulate.catalog",),
                     [d / "hls", d / "run", d / "bkg.h5", d / "sig.h5"], d / "cat.h5", t["emulate"])
    if name == "report":
        if "report" not in t:
            t["report"] = _ok(_report_args(d)(d / "report"), d)
        return Stage("report", _report_args(d), "dir", ("report",), [d / "hls", d / "run", d / "sig.h5", d / "bkg.h5"],
                     d / "report", t["report"], required=("report.json", "report.html", "report.md"))
    raise KeyError(name)


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    print("\nfault injection summary: " + json.dumps(SUMMARY))
    path = os.environ.get("TRIGGER_ML_FI_SUMMARY")
    if path:
        Path(path).write_text(json.dumps(SUMMARY, indent=1))


# ----------------------------------------------------------------------------- the tests


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["generate", pytest.param("emulate", marks=pytest.mark.slow), "convert_verilog"])
def test_interrupt_cheap_stages(pipeline, tmp_path, name):
    """5 interrupts each (SIGINT/SIGTERM, fresh/over an old output) of the quick stages."""
    inject(stage_of(name, pipeline), tmp_path, n=5, seed=0)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", ["generate", "train", "convert_hls", "convert_verilog", "emulate", "report"])
def test_interrupt_every_stage(pipeline, tmp_path, name):
    """The full sweep: 8 interrupts of every stage at other seeded moments."""
    inject(stage_of(name, pipeline), tmp_path, n=8, seed=1)
