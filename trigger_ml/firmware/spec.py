"""FirmwareSpec: every knob of a firmware build in one typed object, validated once.

The CLI builds it from its options, ``convert_run`` takes it, the backends read it, and a design
search (e.g. for a latency budget) varies it with ``spec.model_copy(update={...})``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trigger_ml.core.constants import BX_RATE_HZ
from trigger_ml.core.errors import ConfigError

Flavor = Literal["hls", "verilog", "vhdl"]
FLAVORS: tuple[str, ...] = ("hls", "verilog", "vhdl")
#: the ``trigger-ml convert`` option of each field, named in error messages
CLI_OPTIONS: dict[str, str] = {
    "flavor": "--flavor", "backend": "--backend", "part": "--part", "clock_ns": "--clock-ns", "strategy": "--strategy",
    "reuse_factor": "--reuse", "latency_cutoff": "--latency-cutoff", "threshold": "--threshold",
    "rate_khz": "--rate-khz", "score_output": "--score", "bx_rate_hz": "--bx-rate-mhz",
    "budget_ns": "--budget-ns", "clocks_mhz": "--clock-mhz", "delay_constraint": "--delay-constraint",
}


class FirmwareSpec(BaseModel):
    """What to build: backend and its knobs, target part and clock, and the trigger threshold.

    ``threshold`` (a score value, rounded down onto the score grid) and ``rate_khz`` (calibrated
    on held-out background with the firmware's own integer scores) are alternatives; ``score_output``
    names the score (``'name'`` / ``'name[i]'``) when the model has several output values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flavor: Flavor = "hls"
    #: hls4ml backend (HLS flavour)
    backend: Literal["Vitis", "Vivado", "oneAPI"] = "Vitis"
    #: FPGA part; None → the backend's default (``core.constants.DEFAULT_PART`` for Vitis/Vivado)
    part: str | None = None
    clock_ns: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    #: hls4ml strategy (HLS flavour)
    strategy: Literal["Latency", "Resource", "latency", "resource"] = "Latency"
    #: hls4ml reuse factor: one for all layers, or {layer name: factor}
    reuse_factor: int | dict[str, int] = 1
    #: da4ml/alkaid pipelining: maximum adder depth per pipeline stage (RTL flavours; <= 0: combinational)
    latency_cutoff: float = Field(default=5.0, allow_inf_nan=False)
    #: alkaid CMVM delay constraint (``hard_dc``, RTL flavours): adder levels beyond the minimum; -1 unconstrained
    delay_constraint: int = Field(default=-1, ge=-1)
    #: latency budget in ns: search the RTL knobs for the cheapest design that meets it
    #: (:mod:`trigger_ml.firmware.rtl.search`); ``latency_cutoff``/``clock_ns``/``delay_constraint`` are then chosen
    budget_ns: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    #: clocks the budget search may use (MHz); None: ``rtl.search.CLOCKS_MHZ``
    clocks_mhz: tuple[float, ...] | None = None
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    rate_khz: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    score_output: str | None = None
    bx_rate_hz: float = Field(default=BX_RATE_HZ, gt=0, allow_inf_nan=False)
    #: test vectors written into the hls4ml project (and checked against the emulator)
    tb_events: int = Field(default=1000, ge=1)
    #: held-out background events used to calibrate ``rate_khz`` (the firmware's integer scores)
    calibration_events: int = Field(default=1_000_000, ge=1)

    @field_validator("reuse_factor")
    @classmethod
    def _positive_reuse(cls, v):
        vals = v.values() if isinstance(v, dict) else [v]
        if any(int(r) < 1 for r in vals):
            raise ValueError("reuse factors must be positive integers")
        return v

    @field_validator("clocks_mhz")
    @classmethod
    def _positive_clocks(cls, v):
        if v is not None and (not v or any(not (c > 0 and c < float("inf")) for c in v)):
            raise ValueError("clock frequencies must be positive numbers of MHz")
        return v

    @model_validator(mode="after")
    def _one_threshold(self):
        if self.threshold is not None and self.rate_khz is not None:
            raise ValueError("give a threshold (--threshold) or a rate (--rate-khz), not both")
        if self.rate_khz is not None and self.rate_khz * 1e3 >= self.bx_rate_hz:
            raise ValueError(f"the rate (--rate-khz) {self.rate_khz:g} kHz is not below the bunch-crossing rate "
                             f"{self.bx_rate_hz / 1e6:g} MHz; choose a smaller rate")
        return self

    @property
    def has_trigger(self) -> bool:
        return self.threshold is not None or self.rate_khz is not None

    @classmethod
    def make(cls, **knobs) -> FirmwareSpec:
        """Validated spec; an invalid knob is a one-line :class:`ConfigError` naming it."""
        try:
            return cls(**knobs)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(str(p) for p in err.get("loc", ()))
            where = ".".join(loc) or "spec"
            opt = CLI_OPTIONS.get(loc[0]) if loc else None
            msg = " ".join(str(err.get("msg")).split()).removeprefix("Value error, ")
            if err.get("type") == "greater_than" and (err.get("ctx") or {}).get("gt") == 0:
                msg = "must be positive"
            elif err.get("type") == "finite_number":
                msg = "must be a finite number"
            if not loc:  # a rule across options (the message names them)
                raise ConfigError(f"firmware options: {msg}") from None
            got = f" (got {err.get('input')!r})"
            if opt:
                raise ConfigError(f"{opt}: {msg}{got} (firmware option {where})") from None
            raise ConfigError(f"firmware option {where}: {msg}{got}") from None

    @staticmethod
    def parse_reuse(text: str) -> int | dict[str, int]:
        """'4' → 4; 'enc0=2,enc1=4' → {'enc0': 2, 'enc1': 4} (the CLI's ``--reuse``)."""
        try:
            if "=" not in text:
                return int(text)
            return {k.strip(): int(v) for k, v in (i.split("=") for i in text.split(","))}
        except ValueError:
            raise ConfigError(f"--reuse {text!r}: expected an integer or NAME=N,NAME=N") from None
