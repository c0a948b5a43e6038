"""Safe by default: no stage destroys its inputs or anything that is not its own earlier output.

Through the real entry point (``python -m trigger_ml`` in a subprocess): an output equal to,
containing or inside an input is refused with or without ``--force``; ``--force`` replaces only an
earlier output of the same stage; a missing parent directory is refused and not created; outputs
respect the umask. Every refusal is exit code 1 with one line on stderr, and leaves everything
byte-identical. In-process: the atomic writers remove their temporaries on KeyboardInterrupt, and
SIGINT inside :func:`~trigger_ml.core.artifacts.signals_deferred` is delivered at its end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ZOO = Path(__file__).resolve().parents[1] / "models"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
ENV.pop("TRIGGER_ML_DEBUG", None)


def cli(*args, cwd: Path, umask: int | None = None) -> subprocess.CompletedProcess:
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "trigger_ml", *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=900, preexec_fn=pre)


def ok(*args, cwd: Path, umask: int | None = None) -> subprocess.CompletedProcess:
    r = cli(*args, cwd=cwd, umask=umask)
    assert r.returncode == 0, (args, r.returncode, r.stderr[-3000:])
    return r


def refused(*args, cwd: Path, match: str) -> str:
    """The command fails as a user error: exit 1, one line on stderr containing ``match``."""
    r = cli(*args, cwd=cwd)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1, (args, r.returncode, r.stderr[-3000:])
    assert lines and lines[-1].startswith("error: ") and match in lines[-1], (args, lines[-3:])
    assert "Traceback" not in r.stderr
    return lines[-1]


def snapshot(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {p.relative_to(path).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(path.rglob("*"))}


def no_temporaries(root: Path) -> None:
    left = [p for p in root.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not left, left


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """bkg.h5, sig.h5, a tiny training run ``run`` and its RTL project ``rtl``, made through the CLI."""
    d = tmp_path_factory.mktemp("safety")
    cfg = yaml.safe_load((ZOO / "adc-dnn-ae.yaml").read_text()) | {"hidden": [8], "latent": 2}
    (d / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    ok("data", "generate", "--out", d / "bkg.h5", "--events", "12000", "--seed", "1", cwd=d)
    ok("data", "generate", "--out", d / "sig.h5", "--events", "1000", "--signal", "Ato4l", "--seed", "2", cwd=d)
    ok("train", d / "tiny.yaml", "--data", d / "bkg.h5", "--out", d / "run", "--epochs", "1", "--max-events", "3000",
       "--no-onnx", cwd=d)
    ok("convert", d / "run", "--out", d / "rtl", "--flavor", "verilog", cwd=d)
    return d


# ----------------------------------------------------------------------------- an output never over an input


def test_convert_onto_its_own_run_is_refused(work):
    before = snapshot(work / "run")
    refused("convert", work / "run", "--out", work / "run", "--force", cwd=work, match="is an input")
    refused("convert", work / "run", "--out", work / "run", cwd=work, match=str(work / "run"))  # refused either way
    link = work / "run_link"
    link.symlink_to(work / "run")  # the same directory under another name
    try:
        refused("convert", work / "run", "--out", link, "--force", cwd=work, match="is an input")
    finally:
        link.unlink()
    assert snapshot(work / "run") == before
    no_temporaries(work)


def test_convert_onto_another_run_is_refused(work, tmp_path):
    other = tmp_path / "other_run"
    shutil.copytree(work / "run", other)
    before = snapshot(other)
    line = refused("convert", work / "run", "--out", other, "--force", cwd=work, match="holds a training run")
    assert "--force only replaces an earlier output of the same stage" in line
    assert snapshot(other) == before


def test_report_onto_its_firmware_is_refused(work, tmp_path):
    before = snapshot(work / "rtl")
    refused("report", work / "rtl", "--out", work / "rtl", "--force", cwd=work, match="is an input")
    # `report fw --out fw --force` where fw holds the firmware projects: the report would swallow them
    fw = tmp_path / "fw"
    fw.mkdir()
    shutil.copytree(work / "rtl", fw / "rtl")
    fw_before = snapshot(fw)
    refused("report", fw, "--out", fw, "--force", cwd=work, match="contains the input")
    assert snapshot(fw) == fw_before and snapshot(work / "rtl") == before


def test_output_inside_or_around_an_input_is_refused(work):
    run_before, rtl_before, bkg_before = snapshot(work / "run"), snapshot(work / "rtl"), snapshot(work / "bkg.h5")
    refused("convert", work / "run", "--out", work / "run" / "fw", "--force", cwd=work, match="lies inside the input")
    refused("convert", work / "run", "--out", work, "--force", cwd=work, match="contains the input")
    refused("train", work / "tiny.yaml", "--data", work / "bkg.h5", "--out", work, "--force", cwd=work,
            match="contains the input")
    refused("emulate", work / "rtl", "--background", work / "bkg.h5", "--catalog", work / "rtl" / "cat.h5", cwd=work,
            match="lies inside the input")
    refused("emulate", work / "rtl", "--background", work / "bkg.h5", "--catalog", work / "bkg.h5", "--force",
            cwd=work, match="is an input")
    refused("report", work / "rtl", "--out", work / "rtl" / "report", cwd=work, match="lies inside the input")
    refused("verify", work / "run", "--events", work / "bkg.h5", "--n-events", "300", "--report", work / "bkg.h5",
            cwd=work, match="is an input")
    assert (snapshot(work / "run"), snapshot(work / "rtl"), snapshot(work / "bkg.h5")) == (run_before, rtl_before,
                                                                                         bkg_before)
    no_temporaries(work)


# ----------------------------------------------------------------------------- --force replaces only its own stage


def test_force_refuses_what_another_stage_or_a_user_wrote(work, tmp_path):
    user = tmp_path / "my_folder"
    user.mkdir()
    (user / "thesis.tex").write_text("do not delete")
    notes = tmp_path / "notes.h5"
    notes.write_bytes(b"my own bytes")
    before = (snapshot(user), snapshot(notes), snapshot(work / "sig.h5"), snapshot(work / "rtl"))
    refused("convert", work / "run", "--out", user, "--force", cwd=work, match="not a trigger_ml output")
    refused("train", work / "tiny.yaml", "--data", work / "bkg.h5", "--out", user, "--force", cwd=work,
            match="not a trigger_ml output")
    refused("data", "generate", "--out", notes, "--events", "100", "--force", cwd=work, match="not written by trigger_ml")
    refused("emulate", work / "rtl", "--background", work / "bkg.h5", "--catalog", notes, "--force", cwd=work,
            match="not written by trigger_ml")
    refused("report", work / "rtl", "--out", user, "--force", cwd=work, match="not a trigger_ml output")
    refused("demo", "--out", user, "--force", "--quick", cwd=work, match="not a trigger_ml output")
    # an events file of `data generate` is not a catalog, a firmware project is not a training run
    shutil.copy2(work / "sig.h5", tmp_path / "sig.h5")
    refused("emulate", work / "rtl", "--background", work / "bkg.h5", "--catalog", tmp_path / "sig.h5", "--force",
            cwd=work, match="not an event catalog")
    refused("train", work / "tiny.yaml", "--data", work / "bkg.h5", "--out", work / "rtl", "--force", cwd=work,
            match="holds an RTL firmware project")
    assert (snapshot(user), snapshot(notes), snapshot(work / "sig.h5"), snapshot(work / "rtl")) == before
    no_temporaries(tmp_path)


def test_scan_reuses_only_a_scan_directory(work, tmp_path):
    user = tmp_path / "results"
    user.mkdir()
    (user / "data.csv").write_text("a,b\n1,2\n")
    refused("scan", ZOO / "scan-example.yaml", "--out", user, "--background", work / "bkg.h5", "--signals",
            work / "sig.h5", "--scheduler", "none", cwd=work, match="not a trigger_ml output")
    assert (user / "data.csv").read_text() == "a,b\n1,2\n" and sorted(p.name for p in user.iterdir()) == ["data.csv"]


@pytest.mark.slow  # the fault-injection and CLI-contract tests replace outputs with --force in the fast suite
def test_force_replaces_an_earlier_output_of_the_same_stage(work, tmp_path):
    g = tmp_path / "g.h5"
    ok("data", "generate", "--out", g, "--events", "500", "--seed", "1", cwd=work)
    first = snapshot(g)
    refused("data", "generate", "--out", g, "--events", "500", "--seed", "2", cwd=work, match="pass --force")
    ok("data", "generate", "--out", g, "--events", "500", "--seed", "2", "--force", cwd=work)
    assert snapshot(g) != first
    # convert: either flavour replaces an earlier firmware project; an empty directory is fine too
    fw = tmp_path / "fw"
    fw.mkdir()
    ok("convert", work / "run", "--out", fw, "--flavor", "verilog", "--force", cwd=work)
    assert (fw / "rtl_manifest.json").is_file()
    ok("convert", work / "run", "--out", fw, "--flavor", "verilog", "--force", "--latency-cutoff", "3", cwd=work)
    assert (fw / "rtl_manifest.json").is_file() and (fw / "source_run.json").is_file()
    # report over an earlier report
    rep = tmp_path / "rep"
    ok("report", work / "rtl", "--out", rep, cwd=work)
    ok("report", work / "rtl", "--out", rep, "--force", cwd=work)
    assert (rep / "report.json").is_file()
    no_temporaries(tmp_path)


def test_report_of_a_stage_directory_goes_next_to_it(work, tmp_path):
    """`report RTL` without --out: not RTL/report (inside what it reads) but RTL_report beside it."""
    rtl = tmp_path / "rtl"
    shutil.copytree(work / "rtl", rtl)
    before = snapshot(rtl)
    ok("report", rtl, cwd=work)
    assert (tmp_path / "rtl_report" / "report.json").is_file() and snapshot(rtl) == before


# ----------------------------------------------------------------------------- parents and permissions


def test_missing_parent_directory_is_refused_not_created(work, tmp_path):
    missing = tmp_path / "nonexistent" / "dir"
    refused("emulate", work / "rtl", "--background", work / "bkg.h5", "--catalog", missing / "x.h5", cwd=work,
            match="parent directory")
    refused("data", "generate", "--out", missing / "x.h5", "--events", "100", cwd=work, match="does not exist")
    refused("convert", work / "run", "--out", missing / "fw", "--flavor", "verilog", cwd=work, match="parent directory")
    refused("train", work / "tiny.yaml", "--data", work / "bkg.h5", "--out", missing / "run", cwd=work,
            match="parent directory")
    refused("report", work / "rtl", "--out", missing / "rep", cwd=work, match="parent directory")
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.slow
def test_outputs_respect_the_umask(work, tmp_path):
    ok("data", "generate", "--out", tmp_path / "g.h5", "--events", "200", cwd=work, umask=0o027)
    assert (tmp_path / "g.h5").stat().st_mode & 0o777 == 0o640
    ok("emulate", work / "rtl", "--background", work / "bkg.h5", "--catalog", tmp_path / "cat.h5", "--menu", "A=4000",
       cwd=work, umask=0o002)
    assert (tmp_path / "cat.h5").stat().st_mode & 0o777 == 0o664
    ok("report", work / "rtl", "--out", tmp_path / "rep", cwd=work, umask=0o077)
    assert (tmp_path / "rep").stat().st_mode & 0o777 == 0o700
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "rep").iterdir() if p.is_file()} == {0o600}
    ok("report", work / "rtl", "--out", tmp_path / "rep", "--force", cwd=work, umask=0o022)
    assert (tmp_path / "rep").stat().st_mode & 0o777 == 0o755
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "rep").iterdir() if p.is_file()} == {0o644}


# ----------------------------------------------------------------------------- in-process: the atomic writers


def test_atomic_writers_clean_up_on_interrupt(tmp_path):
    from trigger_ml.core.artifacts import atomic_dir, atomic_file, write_manifest
    from trigger_ml.data.adc2021 import EventsWriter
    import numpy as np

    target = tmp_path / "out"
    with atomic_dir(target) as d:
        write_manifest(d, "train", {}, {}, {})
    before = snapshot(target)
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target, force=True, stage="train") as d:
            (d / "partial").write_text("x")
            raise KeyboardInterrupt
    f = tmp_path / "f.txt"
    f.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(f) as t:
            t.write_text("new")
            raise KeyboardInterrupt
    ev = tmp_path / "ev.h5"
    with pytest.raises(KeyboardInterrupt):
        with EventsWriter(ev) as w:
            w.append(np.zeros((10, 19, 4), np.float32))
            raise KeyboardInterrupt
    assert snapshot(target) == before and f.read_text() == "old" and not ev.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "out"]


def test_signals_deferred_delivers_at_the_end(tmp_path):
    from trigger_ml.core.artifacts import signals_deferred

    reached = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler would run here without the deferral
                pass
            reached.append(True)
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
