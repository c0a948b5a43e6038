"""Pydantic configurations loaded from YAML; an invalid config names the field, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trigger_ml.core.errors import ConfigError

Rounding = Literal["RND", "TRN", "RND_CONV"]
Overflow = Literal["WRAP", "SAT", "SAT_SYM"]
#: a layer width (units, filters): a positive integer
Width = Annotated[int, Field(ge=1)]
#: the features the ADC2021 models read: 19 objects x (pT, eta, phi)
ADC_FEATURES = 57


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantSpec(_Strict):
    """QKeras-style fixed-point spec: ``bits`` total (incl. sign), ``integer`` bits excl. sign."""

    bits: int = Field(ge=1, le=32)
    integer: int = Field(ge=-16, le=32)
    signed: bool = True
    rounding: Rounding = "RND"
    overflow: Overflow = "SAT"


class Quantization(_Strict):
    """Fixed (QKeras-like, non-trainable widths) or learned (HGQ2 with the EBOPs term ``beta``)."""

    mode: Literal["fixed", "learned"] = "fixed"
    weight: QuantSpec = QuantSpec(bits=8, integer=1, overflow="SAT_SYM")
    bias: QuantSpec = QuantSpec(bits=12, integer=5)
    activation: QuantSpec = QuantSpec(bits=12, integer=6)
    #: precision of the in-graph score arithmetic (differences, squares, sums)
    score: QuantSpec = QuantSpec(bits=24, integer=14)
    #: EBOPs regularisation strength (learned mode); scheduled from beta to beta_final
    beta: float = Field(default=1e-6, ge=0)
    beta_final: float | None = Field(default=None, ge=0)
    #: per-layer overrides: {layer_name: {weight|bias|activation: QuantSpec}}
    layers: dict[str, dict[Literal["weight", "bias", "activation"], QuantSpec]] = {}


class Training(_Strict):
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    validation_split: float = Field(default=0.2, gt=0, lt=1)
    patience: int = Field(default=5, ge=1)
    max_events: int | None = Field(default=None, ge=1)
    kl_weight: float = Field(default=0.5, ge=0)


class ModelConfig(_Strict):
    """One zoo architecture (see ``models/*.yaml``)."""

    #: also the Keras model's name: not blank, no '/' (Keras refuses it), no control characters
    name: str
    kind: Literal["autoencoder", "vae", "cnn_autoencoder", "classifier", "student"]
    preprocessing: Literal["axol1tl", "standardize"] = "axol1tl"
    hidden: list[Width] = [32, 16]
    latent: int = Field(default=3, ge=1)
    decoder: list[Width] | None = None
    batchnorm: bool = True
    conv_filters: list[Width] = [16, 32]
    n_features: int = Field(default=57, ge=1)
    n_classes: int = Field(default=5, ge=2)
    input_quant: QuantSpec | None = None
    quantization: Quantization = Quantization()
    training: Training = Training()
    teacher: str | None = None
    #: random seed (NumPy/Keras accept 0 .. 2**32 - 1)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the model name must not be blank")
        bad = next((c for c in v if c == "/" or ord(c) < 32 or ord(c) == 127), None)
        if bad is not None:
            raise ValueError(f"the model name must not contain {bad!r} (it names the Keras model)")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.kind == "classifier":
            if self.preprocessing != "standardize":
                raise ValueError("kind 'classifier' reads a jets table: preprocessing must be 'standardize'")
        else:
            if self.preprocessing != "axol1tl":
                raise ValueError(f"kind '{self.kind}' reads ADC2021 events: preprocessing must be 'axol1tl'")
            if self.n_features != ADC_FEATURES:
                raise ValueError(f"kind '{self.kind}' reads ADC2021 events: n_features must be {ADC_FEATURES} "
                                 f"(19 objects x pT, eta, phi), got {self.n_features}")
        if self.preprocessing == "standardize" and self.input_quant is None:
            raise ValueError("preprocessing 'standardize' needs 'input_quant' (bits, integer) for the firmware "
                             "input type")
        return self


def _format_error(src: str, exc: ValidationError) -> str:
    e = exc.errors()[0]
    loc = ".".join(str(x) for x in e["loc"])
    msg = " ".join(str(e["msg"]).split()).removeprefix("Value error, ")
    if not loc:  # a rule across fields (the message names them)
        return f"{src}: {msg}"
    allowed = ""
    ctx = e.get("ctx") or {}
    if "expected" in ctx:
        allowed = f"; allowed: {ctx['expected']}"
    got = repr(e.get("input"))
    if len(got) > 200:
        got = got[:200] + "..."
    return f"{src}: field '{loc}': {msg} (got {got}){allowed}"


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """A YAML file whose top level is a mapping; one-line ConfigError otherwise."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, expected a {what} file (YAML)")
    if not p.is_file():
        raise ConfigError(f"{p}: {what} file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a text file (byte {exc.start} is not UTF-8); a {what} file is YAML") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split("\n")[0].split())
        raise ConfigError(f"{p}: not valid YAML ({first})") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid YAML (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def load_model_config(path_or_dict: str | Path | dict) -> ModelConfig:
    """Load and validate a model config from a YAML file (or a dict)."""
    if isinstance(path_or_dict, dict):
        src, data = "config", path_or_dict
    else:
        src, data = str(path_or_dict), read_yaml_mapping(path_or_dict)
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(src, exc)) from None
