"""Quantization-aware training (HGQ2) of zoo models, with the float twin trained alongside.

``train(config, data, out)`` reads events, fits the preprocessing on background, trains the
quantized model and its float twin (same architecture, plain Keras layers) with early stopping and
best-weight checkpointing, and writes an artifact directory atomically:

* ``model.keras`` — the deployable quantized model (inputs → score / probabilities), Keras 3 native
* ``train_model.keras`` — the quantized training graph (e.g. the VAE with its decoder)
* ``float_model.keras`` — the float twin's deployable model
* ``preprocessing.json``, ``history.json``, ``manifest.json`` (config, data hash, seed, versions, metrics,
  and ``figures.numerics``: what besides them decides the bytes, see :func:`training_rng`)

The same config, data and seed give bit-identical weights in any process or thread (in-process,
LocalCluster, real ``dask worker``), whatever other threads draw from the process-wide random streams.

``load_artifact`` loads with Keras ``safe_mode=True`` and turns any failure into a one-line error.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from trigger_ml.core.constants import FLOAT_MODEL_FILE as FLOAT_FILE  # noqa: E402
from trigger_ml.core.constants import INPUT_INFO_FILE, MODEL_FILE, PREPROCESSING_FILE
from trigger_ml.core.constants import TRAIN_MODEL_FILE as TRAIN_FILE
from trigger_ml.core.errors import (
    ArtifactError,
    ConfigError,
    DataFormatError,
    TriggerMLError,
)
from trigger_ml.data import adc2021
from trigger_ml.data import preprocess as P
from trigger_ml.models.config import ModelConfig, load_model_config

#: the stage name in a training run's manifest.json
STAGE = "train"

@dataclass
class Prepared:
    """Model inputs and targets of one dataset, with the fitted preprocessing."""

    x: np.ndarray
    y: np.ndarray
    events: np.ndarray | None
    labels: np.ndarray | None
    preprocessing: Any
    input_info: dict


def _events_inputs(events: np.ndarray, pre) -> np.ndarray:
    return pre.transform(events).astype(np.float32)


def padding_mask(events: np.ndarray, pre) -> np.ndarray:
    """1 for features of present objects, 0 for padding: hardware pT == 0, as the firmware's in-graph mask sees it."""
    hq = pre.steps[0] if isinstance(pre, P.Pipeline) and isinstance(pre.steps[0], P.HardwareQuantizer) else None
    present = hq.transform(events).reshape(len(events), -1, 3)[:, :, 0] > 0 if hq else events[:, :, 0] > 0
    return np.repeat(present.astype(np.float32), 3, axis=1)


def fit_preprocessing(config: ModelConfig, events_or_x: np.ndarray):
    """Fit the preprocessing of ``config`` and describe the firmware input type (+ mask info)."""
    from trigger_ml.models.scores import mask_info_from_scaler

    if config.preprocessing == "axol1tl":
        pre = P.Pipeline([P.HardwareQuantizer(), P.IntegerScaler()]).fit(events_or_x)
        scaler = pre.steps[1]
        return pre, {**scaler.output_type(), "mask": mask_info_from_scaler(scaler)}
    pre = P.Standardizer().fit(events_or_x)
    q = config.input_quant
    if q is None:
        raise ConfigError(f"{config.name}: preprocessing 'standardize' needs 'input_quant' (bits, integer) for the firmware input type")
    return pre, {"width": q.bits, "integer": q.integer + int(q.signed), "signed": q.signed, "rounding": q.rounding,
                 "overflow": q.overflow}


def quantize_standardized(x: np.ndarray, info: dict) -> np.ndarray:
    """Round standardized float features onto the input fixed-point grid (what the firmware receives)."""
    frac = info["width"] - info["integer"]
    lo = -(2.0 ** (info["integer"] - 1)) if info["signed"] else 0.0
    hi = 2.0 ** (info["integer"] - int(info["signed"])) - 2.0**-frac
    return np.clip(np.floor(x * 2.0**frac + 0.5) / 2.0**frac, lo, hi).astype(np.float32)


def model_inputs(config: ModelConfig, pre, info: dict, data: np.ndarray) -> np.ndarray:
    """Preprocessed model inputs (exactly representable in the firmware input type)."""
    if config.preprocessing == "axol1tl":
        return _events_inputs(data, pre)
    return quantize_standardized(pre.transform(data), info)


def min_training_events(validation_split: float) -> int:
    """Fewest events a validation split leaves something on both sides of: Keras trains on the
    first ``floor(n * (1 - validation_split))`` events (at least 1) and validates on the rest (at least 1)."""
    n = max(2, math.ceil(1 / (1 - validation_split)) - 1)
    while math.floor(n * (1.0 - validation_split)) < 1 or math.floor(n * (1.0 - validation_split)) > n - 1:
        n += 1
    return n


def check_training_size(n: int, config: ModelConfig, data: Path, what: str = "events") -> None:
    """Refuse (one line) a training sample that the validation split leaves empty on either side."""
    vs = config.training.validation_split
    if n == 0:
        if what == "events":
            raise adc2021.empty_file_error(data, "training needs background events; give a file with events (--data)")
        raise DataFormatError(f"{data}: holds 0 {what}; training needs a table with {what}")
    need = min_training_events(vs)
    if n < need:
        n_fit = math.floor(n * (1.0 - vs))
        raise DataFormatError(
            f"{data}: {n:,} {what if n != 1 else what[:-1]} {'are' if n != 1 else 'is'} too few to train with "
            f"validation_split {vs:g} ({n_fit:,} for training, "
            f"{n - n_fit:,} for validation); give at least {need:,} {what} (--data, --max-events) or change "
            f"training.validation_split")


def read_training_data(config: ModelConfig, data: Path, max_events: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Background events (L1 models) or (features, labels) (classifier) from ``data``.

    Refused with a one-line DataFormatError when the file holds no events or too few for the
    validation split (:func:`check_training_size`)."""
    if config.kind == "classifier":
        from trigger_ml.data.jets import load_jets

        x, y = load_jets(data)
        x, y = (x[:max_events], y[:max_events]) if max_events else (x, y)
        check_training_size(len(x), config, Path(data), "jets")
        if x.shape[1] != config.n_features:
            raise ConfigError(f"{config.name}: n_features is {config.n_features} but {data} holds {x.shape[1]} "
                              f"features per jet; set n_features: {x.shape[1]}")
        if int(y.max()) >= config.n_classes:
            raise ConfigError(f"{config.name}: n_classes is {config.n_classes} but {data} holds class index "
                              f"{int(y.max())}; set n_classes: {int(y.max()) + 1} or more")
        return x, y
    n = adc2021.count_events(data)
    check_training_size(min(n, max_events) if max_events else n, config, Path(data))  # before reading anything
    return adc2021.read_events(data, stop=max_events), None


def _callbacks(config: ModelConfig, ckpt: Path, log: Callable[[str], None], quantized: bool) -> list:
    import keras

    cbs: list = [
        keras.callbacks.EarlyStopping(patience=config.training.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(ckpt), save_best_only=True, save_weights_only=True),
        _LogEpoch(log, config.training.epochs),
    ]
    if quantized:
        from hgq.utils.sugar import FreeEBOPs

        cbs.insert(0, FreeEBOPs())
        q = config.quantization
        if q.mode == "learned" and q.beta_final is not None and q.beta > 0:
            from hgq.utils.sugar import BetaScheduler

            b0, b1, n = q.beta, q.beta_final, config.training.epochs
            cbs.append(BetaScheduler(lambda e: float(b0 * (b1 / b0) ** (e / max(n - 1, 1)))))
    return cbs


class _LogEpoch:
    """Minimal epoch logger (a Keras callback) that prints one line per epoch."""

    def __new__(cls, log, epochs):
        import keras

        class _CB(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                items = "  ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, (int, float)))
                log(f"  epoch {epoch + 1}/{epochs}  {items}")

        return _CB()


def _targets(config: ModelConfig, x: np.ndarray, events: np.ndarray | None, labels, teacher_scores, pre) -> np.ndarray:
    if config.kind in ("autoencoder", "cnn_autoencoder", "vae"):
        return np.concatenate([x, padding_mask(events, pre)], axis=1)
    if config.kind == "classifier":
        return np.eye(config.n_classes, dtype=np.float32)[labels]
    return teacher_scores.reshape(-1, 1).astype(np.float32)


def teacher_target(scores: np.ndarray) -> np.ndarray:
    """Student regression target: log(1 + teacher score)."""
    return np.log1p(np.maximum(np.asarray(scores, dtype=np.float64), 0)).astype(np.float32)


def _fit(built, config: ModelConfig, x, y, workdir: Path, log, quantized: bool) -> dict:
    import keras

    t = config.training
    built.train.compile(optimizer=keras.optimizers.Adam(t.learning_rate), loss=built.loss)
    t0 = time.perf_counter()
    hist = built.train.fit(
        x, y, epochs=t.epochs, batch_size=t.batch_size, validation_split=t.validation_split, shuffle=True,
        callbacks=_callbacks(config, workdir / ("q" if quantized else "f") / "best.weights.h5", log, quantized),
        verbose=0,
    )
    seconds = time.perf_counter() - t0
    h = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    n_ep = len(h.get("loss", [])) or 1
    return {"history": h, "seconds": seconds, "seconds_per_epoch": seconds / n_ep, "epochs": n_ep,
            "best_val_loss": float(min(h.get("val_loss", [np.nan])))}


#: one training at a time per process: the streams :func:`training_rng` swaps in are process-wide
_RNG_LOCK = threading.RLock()


class _NumpyWithRandom(types.ModuleType):
    """``numpy`` as HGQ2's quantizer base module sees it, with ``random`` replaced by a private RandomState."""

    def __init__(self, rs: np.random.RandomState):
        super().__init__("numpy")
        self.random = rs

    def __getattr__(self, name: str):
        return getattr(np, name)


@contextlib.contextmanager
def training_rng(seed: int) -> Iterator[dict]:
    """Seed everything random in building and fitting a model from ``seed``, in streams of its own.

    Keras draws the seed of every initializer left unseeded from Python's process-wide ``random``
    stream and HGQ2 the seed of every quantizer from numpy's process-wide ``np.random`` stream. Other
    threads of the same process draw from these streams too: in a Dask worker, the event loop thread
    (``dask.sizeof`` of task data, ``random.sample``) runs while the task trains, so the initial weights
    of a scan point used to depend on timing and differed from run to run. Inside this context both
    draw from private generators seeded with ``seed`` (the same sequences ``random.seed(seed)`` /
    ``np.random.seed(seed)`` give, so an undisturbed process trains the same bytes as before), TF's
    global seed is set (``keras.utils.set_random_seed``, which also resets Keras' seed generator),
    and other trainings in this process wait. Yields the record of the numerics for the run's
    manifest (``figures.numerics``, :func:`numerics_record`).
    """
    import random

    import keras
    from hgq.quantizer.internal import base as hgq_base
    from keras.src.random import seed_generator as keras_seeds

    if not (hasattr(keras_seeds, "python_random") and getattr(hgq_base, "np", None) is not None):
        raise TriggerMLError("this Keras / HGQ2 version draws default seeds elsewhere than trigger_ml.train."
                             "training_rng expects; install the versions pyproject.toml pins (a training would "
                             "not be reproducible)")  # never train silently irreproducible
    with _RNG_LOCK:
        saved = keras_seeds.python_random, hgq_base.np
        keras.utils.set_random_seed(int(seed))
        keras_seeds.python_random = random.Random(int(seed))
        hgq_base.np = _NumpyWithRandom(np.random.RandomState(int(seed)))
        try:
            yield numerics_record(seed)
        finally:
            keras_seeds.python_random, hgq_base.np = saved


def numerics_record(seed: int) -> dict[str, Any]:
    """What decides a training's bytes besides config, data and package versions: the seed, where the
    random streams come from (:func:`training_rng`), TensorFlow's oneDNN setting (on/off changes the
    bytes) and the thread settings (1, 2 or 4 intra-op threads measured to give identical bytes for
    the zoo's models on CPU, so they are recorded, not pinned)."""
    import tensorflow as tf

    env = {k: os.environ.get(k) for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")}
    return {"seed": int(seed), "random_streams": "private (Python random, numpy RandomState, TF global seed)",
            "tf_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TensorFlow default: on)"),
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "environment": {k: v for k, v in env.items() if v is not None}}


def total_ebops(model) -> float:
    """Sum of HGQ2 EBOPs over the model's layers (an estimate of LUT cost for DA / LUT+DSP for HLS)."""
    import keras

    total = 0.0
    for layer in model._flatten_layers():
        if getattr(layer, "enable_ebops", False) and hasattr(layer, "ebops"):
            total += float(keras.ops.convert_to_numpy(layer.ebops))
    return total


def train(
    config: ModelConfig | str | Path,
    data: str | Path,
    out: str | Path,
    *,
    seed: int | None = None,
    epochs: int | None = None,
    max_events: int | None = None,
    teacher: str | Path | None = None,
    force: bool = False,
    float_twin: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Train ``config`` on ``data`` and write the model artifact directory ``out`` (see module doc)."""
    import keras

    from trigger_ml.core.artifacts import atomic_dir, check_output, write_manifest
    from trigger_ml.models import build

    cfg = config if isinstance(config, ModelConfig) else load_model_config(config)
    updates: dict = {}
    if seed is not None:
        updates["seed"] = seed
    if teacher is not None:
        updates["teacher"] = str(teacher)
    cfg = cfg.model_copy(update=updates)
    if epochs is not None or max_events is not None:
        tr = cfg.training.model_copy(update={k: v for k, v in (("epochs", epochs), ("max_events", max_events)) if v})
        cfg = cfg.model_copy(update={"training": tr})
    data = Path(data)
    # before any work: never over an input (data, teacher, the config file), only over an earlier run
    check_output(out, [data, cfg.teacher, None if isinstance(config, ModelConfig) else config], STAGE, force)
    keras.utils.set_random_seed(cfg.seed)

    raw, labels = read_training_data(cfg, data, cfg.training.max_events)
    n_fit = int(len(raw) * (1 - cfg.training.validation_split))
    pre, info = fit_preprocessing(cfg, raw[:n_fit])  # fitted on the training part only
    x = model_inputs(cfg, pre, info, raw)
    events = raw if cfg.kind != "classifier" else None
    teacher_scores = None
    if cfg.kind == "student":
        if not cfg.teacher:
            raise ConfigError(f"{cfg.name}: a student needs a teacher artifact (config 'teacher' or --teacher)")
        t_art = load_artifact(cfg.teacher)
        t_x = model_inputs(t_art.config, t_art.preprocessing, t_art.input_info, raw)
        teacher_scores = teacher_target(t_art.model.predict(t_x, batch_size=16384, verbose=0))
    y = _targets(cfg, x, events, labels, teacher_scores, pre)

    log(f"training {cfg.name} ({cfg.kind}, {cfg.quantization.mode} quantization) on {len(x):,} events, seed {cfg.seed}")
    # everything this stage writes - Keras checkpoints (.work/), models, JSON - is inside the
    # temporary directory, which an exception (KeyboardInterrupt, the CLI's SIGTERM) removes
    with atomic_dir(Path(out), force=force, stage=STAGE) as tmp:
        with training_rng(cfg.seed) as numerics:  # the same seed gives the same bytes in any process / thread
            built = build(cfg, info)
            fit_q = _fit(built, cfg, x, y, tmp / ".work", log, True)
        figures: dict[str, Any] = {"quantized": {k: v for k, v in fit_q.items() if k != "history"},
                                   "numerics": numerics}
        figures["quantized"]["ebops"] = total_ebops(built.deploy)
        history = {"quantized": fit_q["history"]}
        built.deploy.save(tmp / MODEL_FILE)
        built.train.save(tmp / TRAIN_FILE)
        if float_twin:
            log("training the float twin")
            with training_rng(cfg.seed):
                fb = build(cfg, info, quantized=False)
                fit_f = _fit(fb, cfg, x, y, tmp / ".work", log, False)
            figures["float"] = {k: v for k, v in fit_f.items() if k != "history"}
            history["float"] = fit_f["history"]
            fb.deploy.save(tmp / FLOAT_FILE)
        import shutil

        shutil.rmtree(tmp / ".work", ignore_errors=True)
        (tmp / PREPROCESSING_FILE).write_text(json.dumps(pre.to_json()))
        (tmp / INPUT_INFO_FILE).write_text(json.dumps(info))
        (tmp / "history.json").write_text(json.dumps(history))
        inputs = {"data": data}
        if cfg.teacher:
            inputs["teacher_model"] = Path(cfg.teacher) / MODEL_FILE
        write_manifest(tmp, STAGE, inputs=inputs, config=cfg.model_dump(mode="json"), figures=figures, seed=cfg.seed)
    log(f"wrote {out}  (quantized best val loss {figures['quantized']['best_val_loss']:.4g}, "
        f"EBOPs {figures['quantized']['ebops']:.0f}, {figures['quantized']['seconds_per_epoch']:.2f} s/epoch)")
    return Path(out)


@dataclass
class Artifact:
    """A loaded model artifact."""

    path: Path
    config: ModelConfig
    model: Any
    preprocessing: Any
    input_info: dict
    manifest: dict

    def float_model(self):
        """The float twin's deployable model (safe_mode load)."""
        return _load_keras(self.path / FLOAT_FILE)

    def held_out(self, background: str | Path | None = None, max_events: int | None = None) -> HeldOut:
        """The held-out background of this model (:func:`held_out_background`)."""
        return held_out_background(self.manifest, self.config, background, max_events)

    def inputs_from_file(self, path: str | Path, stop: int | None = None, start: int = 0) -> np.ndarray:
        """Model inputs for the events (or jets table) in ``path``."""
        if self.config.kind == "classifier":
            from trigger_ml.data.jets import load_jets

            x, _ = load_jets(path)
            n, x = len(x), x[start:stop]
            if not len(x):
                raise DataFormatError(f"{path}: no jets to read from row {start:,} (the table holds {n:,} rows)")
            return model_inputs(self.config, self.preprocessing, self.input_info, x)
        ev = adc2021.read_events(path, start=start, stop=stop)
        if not len(ev):  # nothing to score: say why instead of failing inside Keras
            n = adc2021.count_events(path)
            if n == 0:
                raise adc2021.empty_file_error(path)
            raise DataFormatError(f"{path}: no events in [{start:,}, {stop if stop is not None else n:,}) "
                                  f"(the file holds {n:,})")
        return model_inputs(self.config, self.preprocessing, self.input_info, ev)


@dataclass(frozen=True)
class HeldOut:
    """Background events a stage may score: ``path`` events ``[start, stop)``, and why those."""

    path: Path
    start: int
    stop: int
    note: str

    @property
    def n_events(self) -> int:
        return self.stop - self.start


def training_data_path(run_manifest: dict) -> Path | None:
    """The training events file a run's manifest records (``inputs.data.path``), or None."""
    inputs = run_manifest.get("inputs") if isinstance(run_manifest, dict) else None
    data = inputs.get("data") if isinstance(inputs, dict) else None
    path = data.get("path") if isinstance(data, dict) else None
    return Path(path) if isinstance(path, str) and path else None


def held_out_background(run_manifest: dict, config: ModelConfig, background: str | Path | None = None,
                        max_events: int | None = None) -> HeldOut:
    """The one held-out rule: which background events every stage (evaluate, convert's rate
    calibration, emulate, verify, report, scan, the demo) scores for a model.

    The training file's events beyond what training read (``training.max_events``) were never seen
    and are used first; when training read the whole file, only its validation tail is left (used
    for early stopping, so labelled as such). Any other background file is used whole. Passing the
    training file explicitly applies the same rule, so a training event is never scored as
    background. ``max_events`` caps the number of events (from the start of the held-out range).
    """
    train_data = training_data_path(run_manifest)
    path = Path(background) if background is not None else train_data
    if path is None:
        raise ArtifactError("no background file given and the run records no training data; pass --background")
    if max_events is not None and max_events < 1:
        raise ConfigError(f"max_events must be a positive number of events, got {max_events!r}")
    n_all = adc2021.require_events(path, "background events are needed; give a background file with events "
                                         "(--background)")
    if train_data and path.resolve() == Path(train_data).resolve():
        used = min(config.training.max_events or n_all, n_all)
        if n_all > used:
            start, why = used, "events after the training sample"
        else:
            start = int(used * (1 - config.training.validation_split))
            why = "validation tail of the training sample (used for early stopping)"
    else:
        start, why = 0, "independent file"
    stop = min(n_all, start + max_events) if max_events else n_all
    if stop <= start:
        raise ArtifactError(f"{path}: no held-out background events (training used all {n_all:,}); "
                            "pass an independent --background file")
    return HeldOut(path, start, stop, f"{path} events {start:,}-{stop:,} ({why})")


def _load_keras(path: Path):
    """Load a ``.keras`` model with ``safe_mode=True``; every failure is one ArtifactError line that
    says what is wrong: missing, not a Keras model archive, a layer refused by safe_mode, a layer
    unknown to trigger_ml/HGQ2, or otherwise unloadable."""
    import zipfile

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: model file missing; re-run `trigger-ml train`")
    if path.is_dir():
        raise ArtifactError(f"{path}: is a directory, not a Keras model archive; re-run `trigger-ml train`")
    if not os.access(path, os.R_OK):
        raise ArtifactError(f"{path}: cannot be read (permission denied)")
    redo = "re-run `trigger-ml train` (with --force) to write it again"
    # a .keras file is a zip archive holding config.json (+ weights); check before Keras says "File not found"
    try:
        with zipfile.ZipFile(path) as z:
            has_config = "config.json" in z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ArtifactError(f"{path}: not a Keras model archive (a .keras file is a zip archive; this one is "
                            f"not - truncated or overwritten?); {redo}") from None
    if not has_config:
        raise ArtifactError(f"{path}: not a Keras model archive (no config.json inside the zip); {redo}")

    import hgq  # noqa: F401  (registers the HGQ2 layers)
    import keras

    import trigger_ml.models.zoo  # noqa: F401  (registers our custom objects)

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - keras raises many types for corrupt/unknown content
        text = " ".join(str(exc).split())
        msg = text or type(exc).__name__
        low = text.lower()
        if "safe_mode" in low or "arbitrary code execution" in low or "unsafe_deserialization" in low:
            import re

            m = re.search(r"deserialization of an? `?(\w+)`? layer", text)
            what = f"a `{m.group(1)}` layer" if m else "a layer"
            raise ArtifactError(
                f"{path}: refused by Keras safe_mode: the model contains {what} that runs arbitrary Python code, "
                f"which trigger_ml never loads; rebuild the model from layers of the model zoo / HGQ2 (no Lambda "
                f"layers) and {redo}") from None
        if "could not locate" in low or "unknown layer" in low or "could not deserialize" in low:
            raise ArtifactError(f"{path}: uses a layer unknown to trigger_ml/HGQ2 ({type(exc).__name__}: {msg[:200]}); "
                                f"the model must be built from the model zoo's layers; {redo}") from None
        raise ArtifactError(f"{path}: cannot be loaded ({type(exc).__name__}: {msg[:300]}); the archive may be "
                            f"damaged or written by another Keras/HGQ2 version; {redo}") from None


def load_artifact(path: str | Path) -> Artifact:
    """Load a model artifact directory written by :func:`train` (safe_mode, verified manifest)."""
    from trigger_ml.core.artifacts import read_manifest

    p = Path(path)
    man = read_manifest(p, expect_stage="train", verify_inputs=False)
    try:
        cfg = ModelConfig.model_validate(man["config"])
        pre = P.preprocessing_from_json(json.loads((p / PREPROCESSING_FILE).read_text()))
        info = json.loads((p / INPUT_INFO_FILE).read_text())
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{p}: incomplete model artifact ({exc}); re-run `trigger-ml train`") from None
    return Artifact(p, cfg, _load_keras(p / MODEL_FILE), pre, info, man)
