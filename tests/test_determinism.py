"""The same seed gives the same trained bytes in any process and thread.

A Dask worker trains a scan point in an executor thread while its event loop thread draws from
Python's process-wide ``random`` stream (``dask.sizeof`` uses ``random.sample``); Keras takes the
seeds of unseeded initializers from that stream and HGQ2 those of its quantizers from
``np.random``, so the weights of a point used to depend on timing. ``trigger_ml.train.training_rng``
gives training streams of its own. Here: a training disturbed by a thread that keeps drawing from
both streams, and a training in a fresh process with one thread for TF / OpenMP (as the Dask
workers run), give bit-identical weights to an undisturbed training in this process.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "models" / "adc-dnn-ae.yaml"
KW = {"epochs": 1, "max_events": 1500, "seed": 7, "float_twin": False}

_TRAIN = r"""
import sys
from trigger_ml.train import train
train(sys.argv[1], sys.argv[2], sys.argv[3], epochs=1, max_events=1500, seed=7, float_twin=False, log=lambda m: None)
"""


def _weights(run: Path) -> list[np.ndarray]:
    from trigger_ml.train import load_artifact

    return [np.asarray(w) for w in load_artifact(run).model.get_weights()]


def _mismatches(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    """Number of weight elements whose bits differ (every element, when the shapes differ)."""
    assert len(a) == len(b)
    n = 0
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype != y.dtype:
            n += max(x.size, y.size)
            continue
        u = f"u{x.itemsize}"
        n += int((x.reshape(-1).view(u) != y.reshape(-1).view(u)).sum())
    return n


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from trigger_ml.data.synth import generate_file

    return generate_file(tmp_path_factory.mktemp("det") / "bkg.h5", 2_000, "background", seed=3)


def test_same_seed_same_weights_in_a_disturbed_thread_and_in_a_single_threaded_process(data, tmp_path):
    """This process trains in a thread while another thread keeps drawing from ``random`` and
    ``np.random`` (what a Dask worker's event loop does); a fresh process with one TF / OpenMP thread
    and another hash seed trains the same config and seed: every weight is bit-identical."""
    from trigger_ml.train import train

    env = os.environ | {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                        "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    fresh = subprocess.Popen([sys.executable, "-c", _TRAIN, str(CONFIG), str(data), str(tmp_path / "fresh")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def draw():
        while not stop.is_set():
            random.random()
            np.random.random()
            time.sleep(1e-4)  # keep drawing all along, without starving the training of the GIL

    noise = threading.Thread(target=draw, daemon=True)
    out: dict = {}
    trainer = threading.Thread(target=lambda: out.setdefault("run", train(CONFIG, data, tmp_path / "here",
                                                                          log=lambda m: None, **KW)))
    try:
        noise.start()
        trainer.start()
        trainer.join()
    finally:
        stop.set()
        noise.join()
        _, err = fresh.communicate(timeout=300)
    assert "run" in out, "the training thread failed"
    assert fresh.returncode == 0, err[-2000:]
    assert _mismatches(_weights(tmp_path / "here"), _weights(tmp_path / "fresh")) == 0
    numerics = json.loads((tmp_path / "here" / "manifest.json").read_text())["figures"]["numerics"]
    assert numerics["seed"] == 7 and numerics["random_streams"].startswith("private")
