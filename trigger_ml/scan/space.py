"""What a scan covers: the scan file (:func:`load_scan_config`), its validation, the points of the
grid / random search (:func:`points`), their stable keys (:func:`point_key`) and the model config
and convert options of one point (:func:`point_config`). File format: :mod:`trigger_ml.scan`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.constants import BX_RATE_HZ
from trigger_ml.core.errors import ConfigError

#: parameters that are options of the convert stage, not model-config fields
CONVERT_PARAMS: dict[str, type] = {"reuse_factor": int, "clock_ns": float, "latency_cutoff": float}
FLAVORS = ("verilog", "vhdl", "hls")
KEY_LEN = 16
#: settings a scan file may give (``settings:``) and their defaults
DEFAULT_SETTINGS: dict[str, Any] = {
    "epochs": None,  # None: the config's training.epochs
    "max_events": None,  # None: the config's training.max_events (all events)
    "rate_khz": 10.0,
    "bx_rate_hz": BX_RATE_HZ,
    "flavor": "verilog",
    "clock_ns": 5.0,
    "latency_cutoff": 5.0,
    "reuse_factor": 1,
    "eval_events": 200_000,
    "n_workers": 2,
    "measure": False,
    "background": None,
    "signals": None,
    "budget_ns": None,  # latency budget for the verdict of each point (not part of a point's results)
    "budget_bx": None,  # the same in bunch crossings of 25 ns (give one of the two)
}


# ============================================================================ scan space


@dataclass
class ScanSpace:
    """What to scan: a base model config and a grid and/or random search over its parameters."""

    base_config: Path | dict
    grid: dict[str, list] | None = None
    random: dict[str, dict] | None = None
    n_random: int = 0
    seed: int = 0
    #: run settings from the scan file (see :data:`DEFAULT_SETTINGS`); run_scan's arguments win
    settings: dict[str, Any] = field(default_factory=dict)
    #: where the space came from (for error messages)
    source: str = "scan"

    def base_dict(self) -> dict:
        """The base model config as a validated, JSON-able dict."""
        return _base_dict(self.base_config, self.source)


def _base_dict(base: Path | str | dict | Any, src: str = "scan") -> dict:
    from trigger_ml.models.config import ModelConfig, load_model_config

    if isinstance(base, ModelConfig):
        return base.model_dump(mode="json")
    return load_model_config(base if isinstance(base, dict) else Path(base)).model_dump(mode="json")


def _canonical(value: Any) -> Any:
    """Plain JSON types (numpy scalars -> Python, tuples -> lists), for stable keys."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _canonical_json(obj: Any) -> str:
    return json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def point_key(params: Mapping[str, Any]) -> str:
    """Stable key of a point: the first 16 hex digits of sha256 of its parameters' canonical JSON."""
    return hashlib.sha256(_canonical_json(params).encode()).hexdigest()[:KEY_LEN]


def _set_path(d: dict, path: str, value: Any, src: str) -> None:
    parts = path.split(".")
    cur = d
    for i, p in enumerate(parts[:-1]):
        nxt = cur.get(p) if isinstance(cur, dict) else None
        if nxt is None and isinstance(cur, dict) and (cur == {} or _free_mapping(parts[:i])):
            nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{src}: parameter '{path}': '{'.'.join(parts[: i + 1])}' is not a section of the model "
                              f"config; use a field path like 'quantization.weight.bits' or a convert option "
                              f"({', '.join(CONVERT_PARAMS)})")
        cur = nxt
    last = parts[-1]
    if last not in cur and not (cur == {} or _free_mapping(parts[:-1])):
        raise ConfigError(f"{src}: parameter '{path}': unknown field '{last}' (fields here: {', '.join(sorted(cur))}); "
                          f"convert options: {', '.join(CONVERT_PARAMS)}")
    if isinstance(value, Mapping) and isinstance(cur.get(last), dict):
        cur[last] = {**cur[last], **copy.deepcopy(dict(value))}
    else:
        cur[last] = copy.deepcopy(value)


def _free_mapping(parts: Sequence[str]) -> bool:
    """Config sections whose keys are free (layer names): ``quantization.layers``."""
    return len(parts) >= 2 and tuple(parts[:2]) == ("quantization", "layers")


def _finite_number(v: Any) -> bool:
    """An int or float (not a bool) that a float holds finitely (YAML may give 1e999 or a 400-digit int)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _convert_value(name: str, value: Any, src: str) -> Any:
    typ = CONVERT_PARAMS[name]
    ok = _finite_number(value) and (typ is float or float(value).is_integer())
    if not ok or (name != "latency_cutoff" and value <= 0):
        allowed = "a positive integer" if typ is int else ("a number" if name == "latency_cutoff" else "a positive number")
        raise ConfigError(f"{src}: parameter '{name}': got {value!r}; allowed: {allowed}")
    return typ(value)


def point_config(base: Mapping | Path | str | Any, params: Mapping[str, Any], src: str = "scan"):
    """(ModelConfig, convert options) of one point: ``params`` applied to the base config.

    Invalid values raise a one-line :class:`ConfigError` naming the parameter and the field."""
    from pydantic import ValidationError

    from trigger_ml.models.config import ModelConfig, _format_error

    d = copy.deepcopy(dict(base)) if isinstance(base, Mapping) else _base_dict(base, src)
    conv: dict[str, Any] = {}
    for name, value in params.items():
        if name in CONVERT_PARAMS:
            conv[name] = _convert_value(name, value, src)
        else:
            _set_path(d, name, _canonical(value), src)
    try:
        cfg = ModelConfig.model_validate(d)
    except ValidationError as exc:
        desc = ", ".join(f"{k}={_canonical_json(v)}" for k, v in params.items() if k not in CONVERT_PARAMS)
        raise ConfigError(f"{_format_error(src, exc)} [point {desc}]") from None
    return cfg, conv


_RANDOM_KEYS = {"choices", "low", "high", "log", "integer"}


# ============================================================================ validation


def _check_random_spec(name: str, spec: Any, src: str) -> list:
    """Validate a random spec; return the values that must be valid configs (choices or bounds)."""
    def where(sub: str = "") -> str:
        return f"{src}: field 'random.{name}{sub}'"

    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where()}: expected {{choices: [...]}} or {{low, high, log}}, got {spec!r}")
    extra = set(spec) - _RANDOM_KEYS
    if extra:
        raise ConfigError(f"{where()}: unknown key(s) {', '.join(sorted(map(str, extra)))}; allowed: choices, low, high, log, integer")
    if "choices" in spec:
        if set(spec) - {"choices"}:
            raise ConfigError(f"{where()}: 'choices' cannot be combined with low/high/log/integer")
        ch = spec["choices"]
        if not isinstance(ch, list) or not ch:
            raise ConfigError(f"{where('.choices')}: expected a non-empty list, got {ch!r}")
        return list(ch)
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where()}: needs 'choices' or both 'low' and 'high'")
    lo, hi = spec["low"], spec["high"]
    for k, v in (("low", lo), ("high", hi)):
        if not _finite_number(v):
            raise ConfigError(f"{where('.' + k)}: expected a finite number, got {v!r}")
    if lo > hi:
        raise ConfigError(f"{where()}: low ({lo}) > high ({hi})")
    if not isinstance(spec.get("log", False), bool) or not isinstance(spec.get("integer", False), bool):
        raise ConfigError(f"{where()}: 'log' and 'integer' must be true or false")
    if spec.get("log") and lo <= 0:
        raise ConfigError(f"{where()}: log sampling needs low > 0, got {lo}")
    integer = _is_integer_spec(spec)
    return [int(lo), int(hi)] if integer else [float(lo), float(hi)]


def _is_integer_spec(spec: Mapping) -> bool:
    if "integer" in spec:
        return bool(spec["integer"])
    return isinstance(spec["low"], int) and isinstance(spec["high"], int)


def _validate_space(space: ScanSpace) -> None:
    src = space.source
    base = space.base_dict()
    if space.grid is not None and not isinstance(space.grid, Mapping):
        raise ConfigError(f"{src}: field 'grid': expected a mapping {{parameter: [values]}}, got {space.grid!r}")
    if space.random is not None and not isinstance(space.random, Mapping):
        raise ConfigError(f"{src}: field 'random': expected a mapping {{parameter: spec}}, got {space.random!r}")
    if not isinstance(space.n_random, int) or isinstance(space.n_random, bool) or space.n_random < 0:
        raise ConfigError(f"{src}: field 'n_points': expected a non-negative integer, got {space.n_random!r}")
    if space.random and space.n_random < 1:
        raise ConfigError(f"{src}: field 'n_points': a random search needs n_points >= 1")
    if not isinstance(space.seed, int) or isinstance(space.seed, bool):
        raise ConfigError(f"{src}: field 'seed': expected an integer, got {space.seed!r}")
    names: set[str] = set()
    checks: list[tuple[str, str, list]] = []
    for name, values in (space.grid or {}).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{src}: field 'grid.{name}': expected a non-empty list of values, got {values!r}")
        checks.append(("grid", str(name), values))
        names.add(str(name))
    for name, spec in (space.random or {}).items():
        if str(name) in names:
            raise ConfigError(f"{src}: field 'random.{name}': parameter is also in the grid")
        checks.append(("random", str(name), _check_random_spec(str(name), spec, src)))
    for section, name, values in checks:
        for v in values:  # every value on its own must give a valid config
            point_config(base, {name: v}, f"{src}: {section} '{name}'")
    _check_settings(space.settings, src)


def _check_settings(settings: Mapping[str, Any], src: str) -> None:
    if not isinstance(settings, Mapping):
        raise ConfigError(f"{src}: field 'settings': expected a mapping, got {settings!r}")
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ConfigError(f"{src}: field 'settings.{sorted(map(str, unknown))[0]}': unknown setting; allowed: "
                          f"{', '.join(DEFAULT_SETTINGS)}")
    fl = settings.get("flavor")
    if fl is not None and fl not in FLAVORS:
        raise ConfigError(f"{src}: field 'settings.flavor': got {fl!r}; allowed: {', '.join(FLAVORS)}")
    for k in ("epochs", "max_events", "eval_events", "n_workers", "reuse_factor"):
        v = settings.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"{src}: field 'settings.{k}': expected a positive integer, got {v!r}")
    for k in ("rate_khz", "bx_rate_hz", "clock_ns", "budget_ns", "budget_bx"):
        v = settings.get(k)
        if v is not None and (not _finite_number(v) or v <= 0):
            raise ConfigError(f"{src}: field 'settings.{k}': expected a positive number, got {v!r}")
    if settings.get("budget_ns") is not None and settings.get("budget_bx") is not None:
        raise ConfigError(f"{src}: field 'settings.budget_bx': give the latency budget as budget_ns or budget_bx, "
                          "not both")
    v = settings.get("latency_cutoff")
    if v is not None and not _finite_number(v):
        raise ConfigError(f"{src}: field 'settings.latency_cutoff': expected a number, got {v!r}")
    v = settings.get("measure")
    if v is not None and not isinstance(v, bool):
        raise ConfigError(f"{src}: field 'settings.measure': expected true or false, got {v!r}")
    rate, bx = settings.get("rate_khz"), settings.get("bx_rate_hz", BX_RATE_HZ)
    if _finite_number(rate) and _finite_number(bx) and rate * 1e3 >= bx:
        raise ConfigError(f"{src}: field 'settings.rate_khz': {rate!r} kHz is not below the bunch-crossing rate "
                          f"({bx / 1e3:g} kHz)")
    bkg = settings.get("background")
    if bkg is not None and not isinstance(bkg, (str, os.PathLike)):
        raise ConfigError(f"{src}: field 'settings.background': expected a file path, got {bkg!r}")
    sig = settings.get("signals")
    if sig is not None and (not isinstance(sig, list) or not all(isinstance(s, (str, os.PathLike)) for s in sig)):
        raise ConfigError(f"{src}: field 'settings.signals': expected a list of file paths, got {sig!r}")


_SCAN_KEYS = {"base", "grid", "random", "n_points", "n_random", "seed", "settings"}


# ============================================================================ the scan file


def load_scan_config(path: str | Path | Mapping) -> ScanSpace:
    """Read and validate a scan file (module docstring). Errors are one-line :class:`ConfigError`\\ s."""
    from trigger_ml.models.config import read_yaml_mapping

    if isinstance(path, Mapping):
        src, data, root = "scan", dict(path), Path.cwd()
    else:
        p = Path(path)
        src, data, root = str(p), read_yaml_mapping(p, "scan"), p.parent
    unknown = set(data) - _SCAN_KEYS
    if unknown:
        raise ConfigError(f"{src}: field '{sorted(map(str, unknown))[0]}': unknown key; allowed: {', '.join(sorted(_SCAN_KEYS))}")
    if "base" not in data:
        raise ConfigError(f"{src}: field 'base': missing (the model config to scan, e.g. models/adc-dnn-ae.yaml)")
    base = data["base"]
    if isinstance(base, str):
        cands = [root / base, Path(base)] if not Path(base).is_absolute() else [Path(base)]
        found = next((c for c in cands if c.is_file()), None)
        if found is None:
            raise ConfigError(f"{src}: field 'base': model config {base!r} not found (looked in {', '.join(map(str, dict.fromkeys(cands)))})")
        base = found.resolve()
    elif not isinstance(base, dict):
        raise ConfigError(f"{src}: field 'base': expected a model-config path or mapping, got {base!r}")
    if "n_points" in data and "n_random" in data:
        raise ConfigError(f"{src}: field 'n_random': give either n_points or n_random")
    n_random = data.get("n_points", data.get("n_random", 0 if not data.get("random") else None))
    if n_random is None:
        raise ConfigError(f"{src}: field 'n_points': a random search needs n_points")
    if data.get("settings") is not None and not isinstance(data["settings"], Mapping):
        raise ConfigError(f"{src}: field 'settings': expected a mapping, got {data['settings']!r}")
    settings = dict(data.get("settings") or {})
    for k in ("background",):
        if isinstance(settings.get(k), str):
            settings[k] = str(_resolve_data_path(settings[k], root))
    if isinstance(settings.get("signals"), list):
        settings["signals"] = [str(_resolve_data_path(s, root)) if isinstance(s, str) else s for s in settings["signals"]]
    try:
        _base_dict(base, src)
    except ConfigError as exc:
        raise ConfigError(f"{src}: field 'base': {exc}") from None
    space = ScanSpace(base_config=base, grid=data.get("grid"), random=data.get("random"), n_random=n_random,
                      seed=data.get("seed", 0), settings=settings, source=src)
    _validate_space(space)
    return space


def _resolve_data_path(p: str, root: Path) -> Path:
    pp = Path(p)
    if pp.is_absolute() or pp.exists() or not (root / pp).exists():
        return pp.resolve() if pp.exists() else pp
    return (root / pp).resolve()


# ============================================================================ points


def _draw(rng: np.random.Generator, spec: Mapping) -> Any:
    if "choices" in spec:
        return copy.deepcopy(spec["choices"][int(rng.integers(len(spec["choices"])))])
    lo, hi, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if _is_integer_spec(spec):
        lo_i, hi_i = int(math.ceil(lo)), int(math.floor(hi))
        if not log:
            return int(rng.integers(lo_i, hi_i + 1))
        v = math.exp(rng.uniform(math.log(lo_i - 0.5 if lo_i > 1 else lo_i), math.log(hi_i + 0.5)))
        return int(min(max(round(v), lo_i), hi_i))
    v = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
    return float(f"{v:.6g}")  # a readable, stable value


def points(space: ScanSpace) -> list[dict]:
    """The points of ``space`` in a deterministic order (grid in the order written; random draws
    from ``numpy.random.default_rng(seed)``, parameters in sorted order, duplicates dropped)."""
    grid = dict(space.grid or {})
    grid_pts = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
    if not space.random:
        return [_canonical(p) for p in grid_pts]
    rng = np.random.default_rng(space.seed)
    names = sorted(space.random)
    draws: list[dict] = []
    seen: set[str] = set()
    for _ in range(max(20 * space.n_random, 100)):
        if len(draws) >= space.n_random:
            break
        d = {n: _draw(rng, space.random[n]) for n in names}
        k = point_key(d)
        if k not in seen:
            seen.add(k)
            draws.append(d)
    out, keys = [], set()
    for d in draws:
        for g in grid_pts:
            p = _canonical({**g, **d})
            k = point_key(p)
            if k not in keys:
                keys.add(k)
                out.append(p)
    return out
