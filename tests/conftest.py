"""Shared fixtures: small synthetic event files, made once per session."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest


@pytest.fixture(scope="session")
def bkg_file(tmp_path_factory):
    from trigger_ml.data.synth import generate_file

    return generate_file(tmp_path_factory.mktemp("data") / "bkg.h5", 20_000, "background", seed=11)


@pytest.fixture(scope="session")
def sig_files(tmp_path_factory):
    from trigger_ml.data.synth import SIGNALS, generate_file

    d = tmp_path_factory.mktemp("sig")
    return {s: generate_file(d / f"{s}.h5", 4_000, s, seed=21 + i) for i, s in enumerate(SIGNALS)}
