"""Design-space scans: grid / random search over model hyper-parameters, one Dask task per point.

Every point of a scan trains the model (HGQ2, no float twin), converts it to firmware (da4ml RTL
by default, or hls4ml), scores background and signal events **bit-exactly** with the firmware
(da4ml's interpreter of the RTL graph / our hls4ml emulator), and estimates resources and
latency without a vendor tool (each figure carries its source, see
:mod:`trigger_ml.reports.estimate`). Points run as Dask tasks on a ``LocalCluster`` (process
workers, one thread each) or on an existing cluster (``scheduler="tcp://host:8786"``; the data
files and ``out_dir`` must then be visible to the workers under the same paths), or in this
process (``scheduler=None``).

Scan file (YAML)::

    base: models/adc-dnn-ae.yaml        # model config (relative to the scan file, else to the cwd) or a mapping
    grid:                               # cartesian product, in the order written
      quantization.weight.bits: [6, 8]
      quantization.activation.bits: [8, 12]
      latent: [3, 4]
    random:                             # optional: n_points draws (crossed with the grid if both are given)
      quantization.beta: {low: 1.0e-7, high: 1.0e-4, log: true}
      hidden: {choices: [[32, 16], [16, 8]]}
    n_points: 8
    seed: 0
    settings: {epochs: 10, max_events: 200000, rate_khz: 10, flavor: verilog, clock_ns: 5.0,
               background: data/bkg.h5, signals: [data/Ato4l.h5]}   # all optional

Parameter names are dotted paths into the model config (``quantization.weight.bits``, ``latent``,
``hidden``, ``training.learning_rate``, ``seed`` ...) or convert options (``reuse_factor``,
``clock_ns``, ``latency_cutoff``). A random spec is ``{choices: [...]}`` or ``{low, high}``
(integers when both bounds are integers or ``integer: true``; ``log: true`` for log-uniform).

Results (``out_dir``)
---------------------
* ``results.parquet`` and ``results.csv`` — one row per point, rewritten atomically (temporary
  file + ``os.replace``) as each point finishes; columns: ``key`` (sha256 prefix of the
  canonical JSON of the point's parameters), ``status`` (``ok``/``failed``), ``error``,
  ``param:<name>`` per parameter and ``params`` (canonical JSON), ``auc``/``tpr`` (mean over the
  signals of the ROC AUC / the TPR at ``rate_khz``) and ``auc:<signal>``/``tpr:<signal>``,
  ``luts``/``ffs``/``dsps`` with ``*_source``, ``latency_cycles``/``latency_ns`` with
  ``latency_source``, ``ebops``, timings (``seconds`` total, ``seconds_train`` ...), ``started``,
  ``finished``, ``attempt``, ``worker`` and ``context`` (hash of the base config and run settings).
* ``points/<key>/`` — the point's model artifact, firmware project, ``log.txt`` and ``row.json``.
* ``pareto.png`` and ``pareto.json`` — the Pareto front (max TPR, min LUTs, min latency).

Scripts: ``scheduler="local"`` spawns worker processes, so a script that calls :func:`run_scan`
needs the usual ``if __name__ == "__main__":`` guard (the CLI and pytest have it).

Resuming: a restarted scan reads the table (and any ``points/*/row.json`` whose row did not
reach the table) and skips every point whose key finished with ``status == "ok"`` under the same
context; failed points are retried (``attempt`` + 1). A point interrupted after training reuses
its model artifact. Results made with a different base config or settings are refused unless
``restart=True``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import itertools
import json
import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.artifacts import atomic_file, write_text_atomic
from trigger_ml.core.constants import BX_RATE_HZ, RTL_MANIFEST_FILE
from trigger_ml.core.errors import ConfigError, TriggerMLError

__all__ = [
    "CONVERT_PARAMS",
    "FLAVORS",
    "ScanSpace",
    "load_scan_config",
    "points",
    "point_key",
    "point_config",
    "run_point",
    "run_scan",
    "pareto_front",
    "plot_pareto",
    "read_results",
]

#: parameters that are options of the convert stage, not model-config fields
CONVERT_PARAMS: dict[str, type] = {"reuse_factor": int, "clock_ns": float, "latency_cutoff": float}
FLAVORS = ("verilog", "vhdl", "hls")
RESULTS_PARQUET, RESULTS_CSV = "results.parquet", "results.csv"
PARETO_PNG, PARETO_JSON = "pareto.png", "pareto.json"
ROW_FILE = "row.json"
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
}
#: environment of the worker processes: one thread per worker for TF / BLAS / OpenMP / numba
WORKER_ENV: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "KERAS_BACKEND": "tensorflow",
}
PARAM_PREFIX = "param:"


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


def _convert_value(name: str, value: Any, src: str) -> Any:
    typ = CONVERT_PARAMS[name]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (typ is float or float(value).is_integer())
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
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{where('.' + k)}: expected a number, got {v!r}")
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
        raise ConfigError(f"{src}: field 'settings.{sorted(unknown)[0]}': unknown setting; allowed: {', '.join(DEFAULT_SETTINGS)}")
    fl = settings.get("flavor")
    if fl is not None and fl not in FLAVORS:
        raise ConfigError(f"{src}: field 'settings.flavor': got {fl!r}; allowed: {', '.join(FLAVORS)}")
    for k in ("epochs", "max_events", "eval_events", "n_workers", "reuse_factor"):
        v = settings.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"{src}: field 'settings.{k}': expected a positive integer, got {v!r}")
    for k in ("rate_khz", "bx_rate_hz", "clock_ns"):
        v = settings.get(k)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0):
            raise ConfigError(f"{src}: field 'settings.{k}': expected a positive number, got {v!r}")
    sig = settings.get("signals")
    if sig is not None and (not isinstance(sig, list) or not all(isinstance(s, (str, os.PathLike)) for s in sig)):
        raise ConfigError(f"{src}: field 'settings.signals': expected a list of file paths, got {sig!r}")


_SCAN_KEYS = {"base", "grid", "random", "n_points", "n_random", "seed", "settings"}


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


# ============================================================================ one point


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _limit_threads(n: int) -> None:
    """Cap TF / BLAS / OpenMP threads of this process (effective only before TF is imported)."""
    for k, v in WORKER_ENV.items():
        os.environ.setdefault(k, str(n) if k.endswith("_THREADS") else v)


def _held_out_background(background: Path, cfg, eval_events: int | None) -> tuple[int, int | None, str]:
    """(start, stop, note) of the background events not used to fit the model."""
    from trigger_ml.data import adc2021

    n_all = adc2021.count_events(background)
    used = min(cfg.training.max_events or n_all, n_all)
    start = used if n_all > used else int(used * (1 - cfg.training.validation_split))
    stop = min(n_all, start + eval_events) if eval_events else n_all
    note = "events after the training sample" if n_all > used else "validation tail of the training sample"
    return start, stop, f"{background} events {start:,}-{stop:,} ({note})"


def _scorer(flavor: str, fw_dir: Path) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    if flavor == "hls":
        from trigger_ml.emulate.engine import Emulator
        from trigger_ml.scoring import load_firmware

        fm, _, _ = load_firmware(fw_dir)
        emu = Emulator(fm)
        return (lambda x: np.asarray(emu.predict(x), np.float64).reshape(len(x), -1)[:, 0]), "firmware emulator (hls4ml, bit-exact)"
    from trigger_ml.firmware.rtl import RTLProject, comb_predict

    comb = RTLProject.load(fw_dir).comb_logic()
    return (lambda x: comb_predict(comb, x, n_threads=1)[:, 0]), "da4ml interpreter of the RTL graph (bit-exact)"


def _rtl_figures(fw_dir: Path) -> dict[str, Any]:
    try:
        from trigger_ml.reports.estimate import da4ml_estimate

        f = da4ml_estimate(fw_dir)
        out = {"luts": f["LUT"].value, "luts_source": f["LUT"].source, "latency_cycles": f["latency_cycles"].value,
               "latency_ns": f["latency_ns"].value, "latency_source": f["latency_cycles"].source}
        if "FF" in f:
            out |= {"ffs": f["FF"].value, "ffs_source": f["FF"].source}
        else:
            out |= {"ffs": 0, "ffs_source": f["LUT"].source + " (combinational)"}
        return out
    except ImportError:  # estimate module unavailable: read da4ml's manifest directly
        d = json.loads((fw_dir / RTL_MANIFEST_FILE).read_text())
        cyc = int(d["latency_cycles"])
        return {"luts": int(round(float(d["da4ml_cost"]))), "luts_source": "estimated (da4ml)",
                "ffs": int(d.get("reg_bits", 0)), "ffs_source": "estimated (da4ml)",
                "latency_cycles": cyc, "latency_ns": cyc * float(d["clock_ns"]), "latency_source": "estimated (da4ml)"}


def _hls_figures(fw_dir: Path, clock_ns: float) -> dict[str, Any]:
    from trigger_ml.reports.estimate import analytic_hls_estimate

    est = analytic_hls_estimate(fw_dir, clock_ns=clock_ns)
    f = est.figures()
    return {"luts": f["LUT"].value, "luts_source": f["LUT"].source, "ffs": f["FF"].value, "ffs_source": f["FF"].source,
            "dsps": f["DSP"].value, "dsps_source": f["DSP"].source, "latency_cycles": f["latency_cycles"].value,
            "latency_ns": f["latency_ns"].value, "latency_source": f["latency_cycles"].source}


def _model_reusable(model_dir: Path, cfg, background: Path) -> bool:
    """An earlier (interrupted) attempt left a complete artifact trained with the same config and data."""
    mf = model_dir / "manifest.json"
    if not mf.is_file():
        return False
    try:
        man = json.loads(mf.read_text())
        same_cfg = man.get("config") == cfg.model_dump(mode="json")
        data = ((man.get("inputs") or {}).get("data") or {}).get("path")
        return bool(same_cfg and data and Path(data).resolve() == Path(background).resolve())
    except (OSError, ValueError):
        return False


def run_point(
    params: Mapping[str, Any],
    *,
    base_config: Path | str | dict | Any,
    background: str | Path,
    signals: Sequence[str | Path],
    workdir: str | Path,
    epochs: int | None = None,
    max_events: int | None = None,
    rate_khz: float = 10.0,
    flavor: str = "verilog",
    clock_ns: float = 5.0,
    latency_cutoff: float = 5.0,
    reuse_factor: int = 1,
    eval_events: int | None = 200_000,
    bx_rate_hz: float = BX_RATE_HZ,
    measure: bool = False,
    threads: int | None = None,
    context: str | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """Train, convert, score and estimate one point; return its (flat) results row.

    ``workdir`` is the point's own directory (model artifact, firmware project, ``log.txt``,
    ``row.json``). Never raises for a failing point: the row then has ``status == "failed"`` and
    ``error`` (``"<stage>: <type>: <message>"``; the traceback goes to ``workdir/error.txt``).
    ``threads`` caps the process's TF/BLAS threads (Dask workers: 1). Convert options among
    ``params`` (``reuse_factor``, ``clock_ns``, ``latency_cutoff``) override the keyword values.
    """
    if threads:
        _limit_threads(threads)
    t_start = time.perf_counter()
    params = _canonical(dict(params))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {
        "key": point_key(params), "status": "failed", "error": None, "params": _canonical_json(params),
        **{PARAM_PREFIX + k: (_canonical_json(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()},
        "flavor": flavor, "rate_khz": float(rate_khz), "started": _now(), "finished": None, "attempt": int(attempt),
        "worker": f"{socket.gethostname()}:{os.getpid()}", "context": context, "workdir": str(workdir),
    }
    stage = "config"
    log_f = open(workdir / "log.txt", "a")  # noqa: SIM115 - closed in finally

    def log(msg: str) -> None:
        log_f.write(msg + "\n")
        log_f.flush()

    try:
        log(f"[{_now()}] point {row['key']} {row['params']} (attempt {attempt})")
        cfg, conv = point_config(base_config, params, "point")
        clock_ns = float(conv.get("clock_ns", clock_ns))
        latency_cutoff = float(conv.get("latency_cutoff", latency_cutoff))
        reuse_factor = int(conv.get("reuse_factor", reuse_factor))
        if epochs is not None or max_events is not None:
            upd = {k: v for k, v in (("epochs", epochs), ("max_events", max_events)) if v is not None}
            cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update=upd)})
        background = Path(background).resolve()
        signals = [Path(s).resolve() for s in signals]
        row |= {"model": cfg.name, "clock_ns": clock_ns, "epochs": cfg.training.epochs,
                "max_events": cfg.training.max_events}

        stage = "train"
        from trigger_ml.train import load_artifact, train

        model_dir, fw_dir = workdir / "model", workdir / "firmware"
        t0 = time.perf_counter()
        reused = _model_reusable(model_dir, cfg, background)
        if reused:
            log("reusing the model artifact of an earlier attempt")
        else:
            train(cfg, background, model_dir, force=True, float_twin=False, log=log)
        row |= {"seconds_train": time.perf_counter() - t0, "model_reused": reused, "model_dir": str(model_dir)}
        art = load_artifact(model_dir)
        ebops = (art.manifest.get("figures") or {}).get("quantized", {}).get("ebops")
        row |= {"ebops": None if ebops is None else float(ebops), "ebops_source": "HGQ2 (training manifest)",
                "val_loss": (art.manifest.get("figures") or {}).get("quantized", {}).get("best_val_loss")}

        stage = "convert"
        from trigger_ml.firmware.convert import convert_run

        t0 = time.perf_counter()
        conv_kw: dict[str, Any] = {"reuse_factor": reuse_factor} if flavor == "hls" else {"latency_cutoff": latency_cutoff}
        convert_run(model_dir, fw_dir, flavor=flavor, clock_ns=clock_ns, data=background, force=True, log=log, **conv_kw)
        row |= {"seconds_convert": time.perf_counter() - t0, "firmware_dir": str(fw_dir)}

        stage = "estimate"
        if flavor == "hls":
            row |= _hls_figures(fw_dir, clock_ns) | {"reuse_factor": reuse_factor}
            if reuse_factor != 1:
                row["note"] = "the analytic estimate models the Latency strategy at reuse factor 1"
        else:
            row |= _rtl_figures(fw_dir)
            row |= {"dsps": 0, "dsps_source": "da4ml (distributed arithmetic: no DSP)", "latency_cutoff": latency_cutoff}
            if reuse_factor != 1:
                row["note"] = "reuse_factor only applies to the hls flavour"
        if measure and flavor == "verilog":
            from trigger_ml.reports.measure import synthesize

            t0 = time.perf_counter()
            sr = synthesize(fw_dir, "model")
            row |= {"luts": sr.luts, "luts_source": sr.source, "ffs": sr.ffs, "ffs_source": sr.source,
                    "dsps": sr.dsps, "dsps_source": sr.source, "seconds_measure": time.perf_counter() - t0}

        stage = "evaluate"
        from trigger_ml.core.metrics import signal_metrics

        t0 = time.perf_counter()
        score, score_src = _scorer(flavor, fw_dir)
        b0, b1, b_note = _held_out_background(background, cfg, eval_events)
        bkg = score(art.inputs_from_file(background, start=b0, stop=b1))
        detail: dict[str, Any] = {"background": b_note, "scores": score_src, "signals": {}}
        aucs, tprs = [], []
        for s in signals:
            name = s.stem
            sig = score(art.inputs_from_file(s, stop=eval_events))
            m = signal_metrics(bkg, sig, rate_khz, bx_rate_hz)
            detail["signals"][name] = m | {"n_signal": len(sig)}
            tpr = m["tpr_at_rate"]["tpr"]
            row[f"auc:{name}"] = m["auc"]
            row[f"tpr:{name}"] = tpr
            aucs.append(m["auc"])
            tprs.append(tpr)
        row |= {
            "auc": float(np.mean(aucs)) if aucs else None,
            "tpr": float(np.mean(tprs)) if tprs and all(t is not None for t in tprs) else None,
            "tpr_note": next((detail["signals"][Path(s).stem]["tpr_at_rate"].get("reason") for s in signals
                              if detail["signals"][Path(s).stem]["tpr_at_rate"]["tpr"] is None), None),
            "n_background": len(bkg), "scores_source": score_src, "metrics": _canonical_json(detail),
            "seconds_evaluate": time.perf_counter() - t0,
        }
        row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing point must not kill the scan
        msg = (str(exc).strip().splitlines() or [""])[0][:500]
        row["error"] = f"{stage}: {type(exc).__name__}: {msg}" if msg else f"{stage}: {type(exc).__name__}"
        (workdir / "error.txt").write_text(traceback.format_exc())
        log(f"FAILED in {stage}: {row['error']}")
    finally:
        row["seconds"] = time.perf_counter() - t_start
        row["finished"] = _now()
        log(f"[{row['finished']}] {row['status']} in {row['seconds']:.1f} s")
        log_f.close()
        _release_keras()
    write_text_atomic(workdir / ROW_FILE, json.dumps(_jsonable(row), indent=1))
    return row


def _release_keras() -> None:
    import sys

    if "keras" in sys.modules:
        try:
            sys.modules["keras"].backend.clear_session()
        except Exception:  # noqa: BLE001
            pass


# ============================================================================ the table


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


_FIRST_COLUMNS = ["key", "status", "tpr", "luts", "latency_ns", "auc", "ebops", "ffs", "dsps", "latency_cycles",
                  "seconds", "attempt", "error"]


def _frame(rows: Iterable[Mapping[str, Any]]):
    import pandas as pd

    df = pd.DataFrame([dict(r) for r in rows])
    if df.empty:
        return df
    params = sorted(c for c in df.columns if c.startswith(PARAM_PREFIX))
    first = [c for c in _FIRST_COLUMNS if c in df.columns]
    rest = [c for c in df.columns if c not in first and c not in params]
    df = df[["key", "status"] + params + [c for c in first if c not in ("key", "status")] + rest]
    for c in df.columns:  # all-None or mixed object columns: keep numbers numeric where possible
        if df[c].dtype == object:
            conv = pd.to_numeric(df[c], errors="coerce")
            if conv.notna().sum() == df[c].notna().sum() and df[c].notna().any() and not df[c].map(lambda v: isinstance(v, (str, bool))).any():
                df[c] = conv
    return df


def _write_table(out_dir: Path, rows: Iterable[Mapping[str, Any]]):
    """Rewrite results.parquet and results.csv atomically; return the DataFrame."""
    df = _frame(rows)
    for name, write in ((RESULTS_PARQUET, lambda p: df.to_parquet(p, index=False)),
                        (RESULTS_CSV, lambda p: df.to_csv(p, index=False))):
        with atomic_file(out_dir / name) as tmp:
            write(tmp)
    return df


def read_results(out_dir: str | Path):
    """The results table of a scan directory (parquet, else CSV), or an empty DataFrame."""
    import pandas as pd

    out_dir = Path(out_dir)
    readers = ((RESULTS_PARQUET, pd.read_parquet),
               (RESULTS_CSV, lambda p: pd.read_csv(p, dtype={"key": str, "params": str, "context": str})))
    for name, read in readers:
        p = out_dir / name
        if p.is_file():
            try:
                return read(p)
            except Exception:  # noqa: BLE001 - unreadable (e.g. truncated by hand): try the other copy
                continue
    return pd.DataFrame()


def _records(df) -> list[dict]:
    if df is None or df.empty:
        return []
    return [{k: (None if _isnan(v) else _jsonable(v)) for k, v in r.items()} for r in df.to_dict("records")]


def _isnan(v: Any) -> bool:
    try:
        return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))
    except TypeError:
        return False


# ============================================================================ Pareto front


def pareto_front(df, maximize: Sequence[str] = ("tpr",), minimize: Sequence[str] = ("luts", "latency_ns")):
    """Rows of ``df`` not dominated by any other row (rows with a missing objective, or a
    ``status`` other than ``ok`` when the column exists, are left out). Row ``b`` dominates ``a``
    when it is at least as good in every objective and strictly better in one; rows with equal
    objectives do not dominate each other. Sorted by the first minimised objective."""
    import pandas as pd

    cols = list(maximize) + list(minimize)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TriggerMLError(f"pareto_front: column(s) {', '.join(missing)} not in the table")
    d = df
    if "status" in d.columns:
        d = d[d["status"] == "ok"]
    vals = d[cols].apply(pd.to_numeric, errors="coerce")
    d = d[vals.notna().all(axis=1)]
    vals = vals.loc[d.index]
    if d.empty:
        return d.copy()
    # turn every objective into "smaller is better"
    m = np.column_stack([-vals[c].to_numpy(float) for c in maximize] + [vals[c].to_numpy(float) for c in minimize])
    le = (m[:, None, :] <= m[None, :, :]).all(axis=2)  # le[j, i]: j at least as good as i everywhere
    lt = (m[:, None, :] < m[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    front = d[~dominated]
    return front.sort_values(list(minimize[:1]) or cols[:1], kind="stable")


def plot_pareto(df, front, path: str | Path, *, tpr_col: str = "tpr", title: str = "", ylabel: str | None = None) -> Path:
    """Two panels: TPR vs LUTs (colour: latency) and TPR vs latency (colour: LUTs); the Pareto
    points are ringed and joined by the staircase of the best TPR so far. Uses matplotlib's Agg
    canvas (no display, no global pyplot state)."""
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d = df[df["status"] == "ok"] if "status" in df.columns else df
    cols = [tpr_col, "luts", "latency_ns"]
    d = d[d[cols].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)] if set(cols) <= set(d.columns) else d.iloc[:0]

    def source(col: str) -> str:
        src = d[col].dropna().unique() if col in d.columns else []
        return f" [{src[0]}]" if len(src) == 1 else (" [mixed sources]" if len(src) > 1 else "")

    fig = Figure(figsize=(11, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    ylabel = ylabel or (f"{tpr_col} (mean over signals)")
    panels = [("luts", "latency_ns", "LUTs" + source("luts_source"), "latency [ns]"),
              ("latency_ns", "luts", "latency [ns]" + source("latency_source"), "LUTs")]
    for ax, (xc, cc, xl, cl) in zip(axes, panels):
        if len(d):
            sc = ax.scatter(d[xc], d[tpr_col], c=d[cc], cmap="viridis", s=36, zorder=2)
            fig.colorbar(sc, ax=ax, label=cl)
        if len(front):
            f = front.sort_values(xc)
            ax.scatter(f[xc], f[tpr_col], s=110, facecolors="none", edgecolors="crimson", linewidths=1.5, zorder=3,
                       label=f"Pareto-optimal ({len(front)})")
            ax.plot(f[xc], f[tpr_col].cummax(), color="crimson", lw=1, ls="--", drawstyle="steps-post", zorder=1)
            ax.legend(loc="lower right", fontsize=8)
        if not len(d):
            ax.text(0.5, 0.5, "no finished points", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xl, fontsize=9)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path


# ============================================================================ the scan


def _context(base: dict, s: Mapping[str, Any], background: Path, signals: Sequence[Path]) -> str:
    """Hash of what, besides a point's parameters, determines its results."""
    keys = ("epochs", "max_events", "rate_khz", "bx_rate_hz", "flavor", "clock_ns", "latency_cutoff", "reuse_factor",
            "eval_events", "measure")
    blob = {"base": base, "settings": {k: s[k] for k in keys},
            "background": str(background), "signals": [str(p) for p in signals]}
    return hashlib.sha256(_canonical_json(blob).encode()).hexdigest()[:KEY_LEN]


def _connect(scheduler: str, n_workers: int):
    from dask.distributed import Client, LocalCluster

    if scheduler == "local":
        import logging

        # spawned worker processes: a script that calls run_scan needs an `if __name__ == "__main__":` guard
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               env=dict(WORKER_ENV), memory_limit=0, silence_logs=logging.ERROR)
        return Client(cluster), cluster
    return Client(scheduler), None


def _settings(space: ScanSpace, overrides: Mapping[str, Any]) -> dict[str, Any]:
    s = dict(DEFAULT_SETTINGS)
    s.update({k: v for k, v in (space.settings or {}).items() if v is not None})
    s.update({k: v for k, v in overrides.items() if v is not None})
    _check_settings({k: v for k, v in s.items() if k in DEFAULT_SETTINGS}, "run_scan")
    return s


def run_scan(
    space: ScanSpace | str | Path,
    out_dir: str | Path,
    *,
    background: str | Path | None = None,
    signals: Sequence[str | Path] | None = None,
    scheduler: str | None = "local",
    n_workers: int | None = None,
    epochs: int | None = None,
    max_events: int | None = None,
    rate_khz: float | None = None,
    flavor: str | None = None,
    clock_ns: float | None = None,
    eval_events: int | None = None,
    measure: bool | None = None,
    restart: bool = False,
    retry_failed: bool = True,
    progress: Callable[[int, int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
):
    """Run (or resume) the scan of ``space`` into ``out_dir``; return the results DataFrame.

    ``scheduler``: ``"local"`` (a Dask LocalCluster of ``n_workers`` single-threaded processes),
    a scheduler address (``"tcp://host:8786"``) or ``None`` (sequentially in this process).
    Keyword arguments left ``None`` come from the scan file's ``settings`` and then from
    :data:`DEFAULT_SETTINGS` (epochs / max_events ``None`` = the model config's own).
    ``progress(done, total, row)`` is called after every finished point (``done`` counts the
    points skipped as already finished too). See the module docstring for files and resuming.
    """
    say = log or (lambda _m: None)
    if not isinstance(space, ScanSpace):
        space = load_scan_config(space)
    s = _settings(space, {"background": background, "signals": list(signals) if signals is not None else None,
                          "epochs": epochs, "max_events": max_events, "rate_khz": rate_khz, "flavor": flavor,
                          "clock_ns": clock_ns, "eval_events": eval_events, "n_workers": n_workers, "measure": measure})
    if not s["background"]:
        raise ConfigError("run_scan: no background file (give background= or settings.background in the scan file)")
    if not s["signals"]:
        raise ConfigError("run_scan: no signal files (give signals= or settings.signals in the scan file)")
    bkg = Path(s["background"]).resolve()
    sigs = [Path(p).resolve() for p in s["signals"]]
    for p in [bkg, *sigs]:
        if not p.is_file():
            raise ConfigError(f"run_scan: data file {p} not found")
    if s["flavor"] not in FLAVORS:
        raise ConfigError(f"run_scan: flavor {s['flavor']!r}; allowed: {', '.join(FLAVORS)}")

    base = space.base_dict()
    pts = points(space)
    for p in pts:  # fail before starting anything
        point_config(base, p, space.source)
    ctx = _context(base, s, bkg, sigs)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    # ---- what is already done
    rows: dict[str, dict] = {}
    for r in _records(read_results(out_dir)):
        rows[str(r["key"])] = r
    for rf in sorted((out_dir / "points").glob(f"*/{ROW_FILE}")):  # finished but not yet in the table
        try:
            r = json.loads(rf.read_text())
        except (OSError, ValueError):
            continue
        k = str(r.get("key"))
        old = rows.get(k)
        if old is None or (old.get("status") != "ok" and r.get("status") == "ok" and (r.get("attempt") or 0) >= (old.get("attempt") or 0)):
            rows[k] = r
    other = {r.get("context") for r in rows.values()} - {ctx, None}
    if other and not restart:
        raise ConfigError(f"{out_dir}: holds results of a scan with a different base config or settings "
                          f"(context {sorted(other)[0]} != {ctx}); use another output directory or restart=True (--restart)")
    if restart:
        rows = {}
    wanted = {point_key(p): p for p in pts}
    done_keys = {k for k, r in rows.items() if r.get("status") == "ok" or (not retry_failed and k in wanted)}
    todo = [p for p in pts if point_key(p) not in done_keys]
    total, done = len(pts), len(pts) - len(todo)
    say(f"scan {space.source}: {total} points, {done} already finished, {len(todo)} to run "
        f"({'in process' if scheduler is None else scheduler}); results in {out_dir}")
    if rows:
        _write_table(out_dir, rows.values())

    kw = dict(base_config=base, background=bkg, signals=sigs, epochs=s["epochs"], max_events=s["max_events"],
              rate_khz=float(s["rate_khz"]), flavor=s["flavor"], clock_ns=float(s["clock_ns"]),
              latency_cutoff=float(s["latency_cutoff"]), reuse_factor=int(s["reuse_factor"]),
              eval_events=s["eval_events"], bx_rate_hz=float(s["bx_rate_hz"]), measure=bool(s["measure"]), context=ctx)

    def attempt_of(k: str) -> int:
        return int(rows[k].get("attempt") or 0) + 1 if k in rows else 1

    def finish(row: dict) -> None:
        nonlocal done
        rows[row["key"]] = row
        _write_table(out_dir, rows.values())
        done += 1
        say(f"[{done}/{total}] {row['key']} {row['status']} in {row.get('seconds') or 0:.1f} s"
            + (f": {row['error']}" if row.get("error") else ""))
        if progress:
            progress(done, total, row)

    if todo and scheduler is None:
        for p in todo:
            k = point_key(p)
            try:
                row = run_point(p, workdir=out_dir / "points" / k, attempt=attempt_of(k), **kw)
            except Exception as exc:  # noqa: BLE001 - belt and braces: run_point itself does not raise
                row = _failed_row(p, exc, ctx, attempt_of(k))
            finish(row)
    elif todo:
        from dask.distributed import as_completed

        client, cluster = _connect(scheduler, min(int(s["n_workers"]), len(todo)))
        try:
            futs, index = [], {}
            for p in todo:
                k = point_key(p)
                f = client.submit(run_point, p, workdir=out_dir / "points" / k, attempt=attempt_of(k), threads=1,
                                  pure=False, **kw)
                futs.append(f)
                index[f.key] = p
            for fut in as_completed(futs):
                p = index[fut.key]
                try:
                    row = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died (KilledWorker) or similar
                    row = _failed_row(p, exc, ctx, attempt_of(point_key(p)))
                finish(row)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()

    df = _frame(rows.values())
    _write_outputs(out_dir, df, title=f"{Path(space.source).name}: {base.get('name', '')}, {s['flavor']} flavour",
                   rate_khz=float(s["rate_khz"]), log=say)
    return df


def _failed_row(p: Mapping[str, Any], exc: BaseException, ctx: str, attempt: int) -> dict:
    msg = (str(exc).strip().splitlines() or [""])[0][:500]
    return {"key": point_key(p), "status": "failed", "error": f"worker: {type(exc).__name__}: {msg}",
            "params": _canonical_json(p),
            **{PARAM_PREFIX + k: (_canonical_json(v) if isinstance(v, (list, dict)) else v) for k, v in p.items()},
            "finished": _now(), "attempt": attempt, "context": ctx}


def _write_outputs(out_dir: Path, df, *, title: str = "", rate_khz: float | None = None,
                   log: Callable[[str], None] = lambda _m: None) -> list[dict]:
    """pareto.json and pareto.png of the table ``df``; returns the Pareto-optimal rows."""
    tpr_col = "tpr"
    if "tpr" not in df.columns or not df["tpr"].notna().any():
        tpr_col = "auc"  # too few background events for the target rate: fall back to the AUC
        if len(df):
            log("no point has a TPR at the target rate (too few background events?): Pareto front on the mean AUC")
    if df.empty or not {tpr_col, "luts", "latency_ns"} <= set(df.columns):
        front = df.iloc[:0] if not df.empty else df
    else:
        front = pareto_front(df, maximize=(tpr_col,), minimize=("luts", "latency_ns"))
    recs = _records(front)
    for r in recs:
        r["params"] = json.loads(r["params"]) if isinstance(r.get("params"), str) else r.get("params")
        if isinstance(r.get("metrics"), str):
            r["metrics"] = json.loads(r["metrics"])
    doc = {"objectives": {"maximize": [tpr_col], "minimize": ["luts", "latency_ns"]},
           "n_points": int(len(df)), "n_ok": int((df["status"] == "ok").sum()) if "status" in df.columns else 0,
           "pareto": recs}
    write_text_atomic(out_dir / PARETO_JSON, json.dumps(_jsonable(doc), indent=1))
    n_sig = len([c for c in df.columns if c.startswith("auc:")])
    what = f"TPR at {rate_khz:g} kHz" if tpr_col == "tpr" and rate_khz else tpr_col.upper()
    plot_pareto(df, front, out_dir / PARETO_PNG, tpr_col=tpr_col, title=title,
                ylabel=f"{what} (mean over {n_sig} signal{'s' if n_sig != 1 else ''})")
    return recs
