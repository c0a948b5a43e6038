"""C simulation: hls4ml's own bridge (``compile()``/``predict()``), the tb_data files, and the
standalone g++ build of the trigger wrapper's test bench.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.errors import ArtifactError, ConfigError, TriggerMLError
from trigger_ml.firmware.hls.project import _quiet, load_project

# --------------------------------------------------------------------------------------------
# C simulation through hls4ml's bridge
# --------------------------------------------------------------------------------------------


def _flat_outputs(pred, n: int) -> np.ndarray:
    if isinstance(pred, (list, tuple)):
        return np.concatenate([np.asarray(p, dtype=np.float64).reshape(n, -1) for p in pred], axis=1)
    return np.asarray(pred, dtype=np.float64).reshape(n, -1)


def _predict_hls(hls_model, x) -> np.ndarray:
    if isinstance(x, (list, tuple)):  # multi-input model: one array per input
        n = np.asarray(x[0]).shape[0]
        xin = [np.ascontiguousarray(np.asarray(xi).reshape(n, -1), dtype=np.float64) for xi in x]
    else:
        x = np.asarray(x)
        n = x.shape[0]
        xin = np.ascontiguousarray(x.reshape(n, -1), dtype=np.float64)  # double bridge: no float32 rounding
    if n == 0:
        return np.zeros((0, sum(int(v.size()) for v in hls_model.get_output_variables())), dtype=np.float64)
    return _flat_outputs(hls_model.predict(xin), n)


_CSIM_CACHE: dict[tuple[str, str], Any] = {}


def _project_stamp(path: Path) -> str | None:
    cfg = path / "hls4ml_config.yml"
    if not cfg.is_file():
        return None
    m = re.search(r"^Stamp:\s*'?([0-9A-Za-z]+)'?\s*$", cfg.read_text(encoding="utf-8"), re.M)
    return m.group(1) if m else None


def _sources_newer_than(path: Path, project_name: str, lib: Path) -> bool:
    """True if a source that hls4ml's build_lib.sh compiles is newer than the built library."""
    t = lib.stat().st_mtime
    fw = path / "firmware"
    srcs = [
        fw / f"{project_name}.cpp",
        fw / f"{project_name}.h",
        fw / "defines.h",
        fw / "parameters.h",
        path / f"{project_name}_bridge.cpp",
        *fw.glob("weights/*.h"),
    ]
    return any(p.is_file() and p.stat().st_mtime > t for p in srcs)


def csim_predict(project_or_model, x: np.ndarray) -> np.ndarray:
    """hls4ml C simulation of ``x`` → float64 array (n_events, total output size).

    ``project_or_model`` is a ModelGraph (compiled if it is not yet) or the path of a project
    written by :func:`convert`. For a path, hls4ml's ``link_existing_project`` gives a lightweight
    ModelGraph; the project's already-built ``firmware/<name>-<stamp>.so`` is loaded when it is up to
    date (no g++ run), otherwise ``build_lib.sh`` is run once. Linked projects are cached per
    process. Outputs are read through the double-precision bridge, so every fixed-point value up to
    53 bits arrives exactly; multiple outputs are concatenated in order.
    """
    if isinstance(project_or_model, (str, os.PathLike)):
        path = Path(project_or_model).resolve()
        project = load_project(path)
        key = (str(path), str(_project_stamp(path)))
        g = _CSIM_CACHE.get(key)
        if g is None:
            import hls4ml

            g = hls4ml.converters.link_existing_project(str(path))
            lib = path / "firmware" / f"{project.project_name}-{key[1]}.so"
            with _quiet() as buf:
                if lib.is_file() and not _sources_newer_than(path, project.project_name, lib):
                    g._top_function_lib = ctypes.cdll.LoadLibrary(str(lib))
                else:
                    try:
                        g._compile()
                    except Exception as e:  # noqa: BLE001
                        raise ArtifactError(f"{path}: C simulation build failed ({_last_line(buf, e)}); check g++") from None
            _CSIM_CACHE[key] = g
        return _predict_hls(g, x)
    g = project_or_model
    if getattr(g, "_top_function_lib", None) is None:
        with _quiet() as buf:
            try:
                g.compile()
            except Exception as e:  # noqa: BLE001
                raise ArtifactError(f"C simulation build failed ({_last_line(buf, e)}); check g++") from None
    return _predict_hls(g, x)


def _last_line(buf: io.StringIO, e: BaseException) -> str:
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    err = [ln for ln in lines if "error" in ln.lower()]
    return (err[0] if err else (lines[-1] if lines else str(e))).strip()[:300]


# --------------------------------------------------------------------------------------------
# test-bench data
# --------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    # Shortest round-trip decimal of the double: parses back (atof/strtod) to exactly the same value.
    v = float(v)
    return repr(v) if v != int(v) or abs(v) >= 1e16 else str(int(v))


def write_tb_file(path: Path, rows: np.ndarray) -> None:
    """hls4ml's ``.dat`` format: one event per line, values separated by a space (trailing space)."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows.reshape(rows.shape[0], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii") as f:
        for r in rows:
            f.write(" ".join(_fmt(v) for v in r) + " \n")


def read_tb_file(path: Path) -> np.ndarray:
    rows = [[float(t) for t in ln.split()] for ln in Path(path).read_text(encoding="ascii").splitlines() if ln.strip()]
    return np.asarray(rows, dtype=np.float64)


def _check_tb_inputs(tb_inputs, hls_model) -> np.ndarray:
    x = np.asarray(tb_inputs)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConfigError(f"tb_inputs must be a non-empty (events, features...) array, got shape {x.shape}")
    n_in = sum(int(v.size()) for v in hls_model.get_input_variables())
    if int(np.prod(x.shape[1:])) != n_in:
        raise ConfigError(f"tb_inputs has {int(np.prod(x.shape[1:]))} values per event, the model takes {n_in}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("tb_inputs contains non-finite values; pass preprocessed, finite model inputs")
    x64 = x.astype(np.float64)
    if not np.array_equal(x64.astype(np.float32).astype(np.float64), x64):
        raise ConfigError(
            "tb_inputs are not exact in float32 (hls4ml's test bench reads floats); pass the quantized model inputs"
        )
    return x64


def _expected_rows(expected_fn, x: np.ndarray, n_out: int) -> np.ndarray:
    y = expected_fn(x)
    if isinstance(y, (list, tuple)):
        y = np.concatenate([np.asarray(v, dtype=np.float64).reshape(x.shape[0], -1) for v in y], axis=1)
    y = np.asarray(y, dtype=np.float64).reshape(x.shape[0], -1)
    if y.shape[1] != n_out:
        raise ConfigError(f"expected_fn returned {y.shape[1]} values per event, the model has {n_out} outputs")
    return y


# --------------------------------------------------------------------------------------------
# trigger C simulation (g++, standalone test bench)
# --------------------------------------------------------------------------------------------


def _csim_cache_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"trigger_ml_hls_csim_{os.getuid() if hasattr(os, 'getuid') else 'u'}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _trigger_sources(path: Path, project_name: str) -> list[Path]:
    fw = path / "firmware"
    return [
        fw / f"{project_name}.cpp",
        fw / f"{project_name}_trigger.cpp",
        path / f"{project_name}_trigger_test.cpp",
    ]


def build_trigger_csim(path: str | os.PathLike, opt_level: str = "-O0") -> Path:
    """Compile the project's trigger test bench (wrapper + network) with g++; cached by source hash
    and ``opt_level`` in the temp directory (one translation unit; -O0 compiles fastest)."""
    if opt_level not in ("-O0", "-O1", "-O2", "-O3"):
        raise ConfigError(f"opt_level must be one of -O0..-O3, got {opt_level!r}")
    project = load_project(path)
    p = project.path
    if not project.threshold:
        raise ConfigError(f"{p}: project has no trigger bit; convert with threshold=...")
    srcs = _trigger_sources(p, project.project_name)
    for s in srcs:
        if not s.is_file():
            raise ArtifactError(f"{s}: missing; re-run the conversion with --force")
    h = hashlib.sha256()
    fw = p / "firmware"
    for f in sorted([*srcs, *fw.glob("*.h"), *fw.glob("weights/*.h")]):
        h.update(f.relative_to(p).as_posix().encode() + b"\0" + f.read_bytes())
    h.update(opt_level.encode())
    key = h.hexdigest()[:24]
    exe = _csim_cache_dir() / f"{project.project_name}_trigger_{key}"
    if exe.is_file():
        return exe
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        raise TriggerMLError("g++ not found on PATH; install g++ to run the trigger C simulation")
    unity = exe.with_name(exe.name + f".{os.getpid()}.cpp")
    tmp_exe = exe.with_name(exe.name + f".{os.getpid()}.tmp")
    cmd = [gxx, opt_level, "-std=c++17", "-w", f"-I{fw / 'ap_types'}", f"-I{fw}", f"-I{p}", str(unity), "-o", str(tmp_exe)]
    try:  # the finally removes both temporaries whatever happens (signals included); the cache entry is complete or absent
        unity.write_text("".join(f'#include "{s}"\n' for s in srcs), encoding="utf-8")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            err = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr.strip()[-300:])
            raise ArtifactError(f"{p}: g++ failed on the trigger test bench ({err.strip()[:300]})")
        os.replace(tmp_exe, exe)
    finally:
        unity.unlink(missing_ok=True)
        tmp_exe.unlink(missing_ok=True)
    return exe


def trigger_csim(
    project_path: str | os.PathLike, x: np.ndarray, opt_level: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run the trigger wrapper's C++ (``<project>_trigger``) on ``x`` → (scores float64, bits uint8).

    Compiles the project's ``<project>_trigger_test.cpp`` + ``firmware/<project>.cpp`` +
    ``firmware/<project>_trigger.cpp`` with g++ (cached per source hash in the temp directory) and
    runs it on ``x`` written in the tb_data format; scores are the score output read through
    ``to_double()`` (exact), bits the wrapper's ``trigger`` output. ``opt_level`` None: -O0 (fastest
    build) up to 20k events, -O2 above.
    """
    project = load_project(project_path)
    x = np.asarray(x, dtype=np.float64)
    exe = build_trigger_csim(project.path, opt_level or ("-O0" if x.shape[0] <= 20_000 else "-O2"))
    n = x.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="trigger_ml_tcsim_") as d:
        inp, res = Path(d) / "in.dat", Path(d) / "out.log"
        write_tb_file(inp, x)
        r = subprocess.run([str(exe), str(inp), str(Path(d) / "none.dat"), str(res)], capture_output=True, text=True)
        if r.returncode != 0:
            msg = (r.stderr.strip() or r.stdout.strip()).splitlines()
            raise ArtifactError(f"{project.path}: trigger C simulation failed ({msg[-1] if msg else r.returncode})")
        rows = read_tb_file(res)
    if rows.shape[0] != n:
        raise ArtifactError(f"{project.path}: trigger C simulation returned {rows.shape[0]} events for {n} inputs")
    flat = int(project.threshold["score_flat_index"])
    return rows[:, flat].copy(), rows[:, -1].astype(np.uint8)
