"""The one held-out-background rule (train.held_out_background), shared by every stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trigger_ml.core.errors import ArtifactError
from trigger_ml.data.adc2021 import write_events
from trigger_ml.models.config import load_model_config
from trigger_ml.train import held_out_background

ZOO = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture()
def files(tmp_path):
    ev = np.zeros((1000, 19, 4), np.float32)
    return write_events(tmp_path / "train.h5", ev), write_events(tmp_path / "other.h5", ev[:300])


def _cfg(max_events):
    cfg = load_model_config(ZOO / "adc-dnn-ae.yaml")
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_events": max_events,
                                                                              "validation_split": 0.2})})


def test_rule(files):
    train, other = files
    man = {"inputs": {"data": {"path": str(train)}}}
    ho = held_out_background(man, _cfg(600), None)  # default: the training file, after what training read
    assert (ho.path, ho.start, ho.stop) == (train, 600, 1000) and "after the training sample" in ho.note
    assert held_out_background(man, _cfg(600), train, max_events=100).stop == 700  # explicit file: same rule
    ho = held_out_background(man, _cfg(None), train)  # training read everything: validation tail only
    assert (ho.start, ho.stop) == (800, 1000) and "validation tail" in ho.note
    ho = held_out_background(man, _cfg(600), other)  # an independent file is used whole
    assert (ho.start, ho.stop, ho.n_events) == (0, 300, 300)
    with pytest.raises(ArtifactError, match="--background"):
        held_out_background({}, _cfg(600), None)
