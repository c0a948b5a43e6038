"""CLI smoke tests for the data commands and the exit-code policy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

import trigger_ml
from trigger_ml.cli import app
from trigger_ml.data import adc2021

runner = CliRunner()


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and trigger_ml.__version__ in r.stdout


def test_generate_and_inspect(tmp_path):
    out = tmp_path / "b.h5"
    r = runner.invoke(app, ["data", "generate", "--events", "1500", "--seed", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert adc2021.count_events(out) == 1500
    r = runner.invoke(app, ["data", "inspect", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert '"n_events": 1500' in r.stdout
    r = runner.invoke(app, ["data", "generate", "--events", "300", "--signal", "all", "--out", str(tmp_path / "s.h5")])
    assert r.exit_code == 0, r.output
    for s in ("Ato4l", "LQ_btau", "h0_tautau", "hplus_taunu"):
        assert adc2021.count_events(tmp_path / f"s_{s}.h5") == 300


def test_user_error_exit_code_and_message(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    p = subprocess.run([sys.executable, "-m", "trigger_ml", "data", "inspect", str(bad)], capture_output=True, text=True)
    assert p.returncode == 1
    assert "bad.h5: cannot be opened as HDF5" in p.stderr and "Traceback" not in p.stderr
    out = tmp_path / "x.h5"
    adc2021.write_events(out, np.zeros((1, 19, 4), np.float32))
    p = subprocess.run([sys.executable, "-m", "trigger_ml", "data", "generate", "--events", "10", "--out", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "--force" in p.stderr
