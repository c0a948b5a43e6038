"""Vendor (Vivado HLS / Vitis HLS / Vivado) synthesis results of an hls4ml project.

The numbers are read by hls4ml's own parser, ``hls4ml.report.parse_vivado_report``
(the one both the Vivado and the Vitis backends of hls4ml 1.x call after a build);
this module only locates the files, runs that parser quietly and normalises its
string-valued dict into a typed :class:`VendorReport` whose every figure names its source.

Why the parser is run on a small staging directory instead of the project itself:
``parse_vivado_report`` only works on a complete project - it needs ``project.tcl``
(and crashes with UnboundLocalError if that lacks ``set backend``), it needs the
``<name>_prj/vivado_hls.app`` / ``hls.app`` solution list (IndexError without it) and it
only looks for ``<top>_csynth.xml``. Reports copied out of a build, or a project whose
synthesis ran elsewhere, lack some of these. So each report file found is linked into
a throw-away directory with the layout hls4ml expects, one report at a time, which also
lets a parse failure name the exact file that caused it.

Layouts handled (``<out>`` is the hls4ml output directory, ``<top>`` the project name):

* Vivado HLS (<= 2020.1):  ``<out>/<top>_prj/solution1/syn/report/<top>_csynth.xml`` (+ ``.rpt``)
* Vitis HLS (2020.2+):     the same ``<top>_csynth.xml`` plus a ``csynth.xml`` copy (used as a
  fallback when only that one exists), ``hls.app`` instead of ``vivado_hls.app``, ``<DSP>`` instead
  of ``<DSP48E>``, and a ``<FlowTarget>`` element
* Vivado synthesis:        ``<out>/vivado_synth.rpt`` (``report_utilization`` written by hls4ml's
  ``vivado_synth.tcl``)
* C/RTL co-simulation:     ``<out>/<top>_prj/solution1/sim/report/<top>_cosim.rpt``
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trigger_ml.core.errors import ArtifactError

RESOURCE_KEYS: tuple[str, ...] = ("LUT", "FF", "DSP", "BRAM_18K", "URAM")

_SCALAR_UNITS: dict[str, str] = {
    "clock_target_ns": "ns",
    "clock_estimated_ns": "ns",
    "latency_min_cycles": "cycles",
    "latency_max_cycles": "cycles",
    "interval_min": "cycles",
    "interval_max": "cycles",
    "cosim_latency_min_cycles": "cycles",
    "cosim_latency_max_cycles": "cycles",
    "cosim_interval_min": "cycles",
    "cosim_interval_max": "cycles",
}

SOURCE_VIVADO_SYNTH = "parsed (Vivado synth)"
SOURCE_COSIM = "parsed (cosim)"


@dataclass(frozen=True)
class VendorFigure:
    """One number from a vendor report: its value, unit, and where it came from."""

    value: float | int
    unit: str
    source: str  # e.g. "parsed (Vivado HLS 2019.2.1 csynth)", "parsed (Vivado synth)", "parsed (cosim)"

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "source": self.source}


@dataclass(frozen=True)
class VendorReport:
    """Normalised synthesis results of one hls4ml project; a figure no report holds is None.

    ``resources`` holds the best figure per resource: post-synthesis Vivado utilisation when
    ``vivado_synth.rpt`` exists, otherwise the HLS estimate; ``csynth_resources`` always holds
    the HLS estimate. ``sources`` maps each figure name (``latency_max_cycles``, ``resources.LUT``,
    ...) to its source string.
    """

    project_dir: Path
    tool: str  # "Vivado HLS", "Vitis HLS" or "unknown"
    tool_version: str | None
    part: str | None
    clock_target_ns: float | None
    clock_estimated_ns: float | None
    latency_min_cycles: int | None
    latency_max_cycles: int | None
    interval_min: int | None
    interval_max: int | None
    resources: dict[str, int] = field(default_factory=dict)
    available: dict[str, int] = field(default_factory=dict)
    csynth_resources: dict[str, int] = field(default_factory=dict)
    cosim_status: str | None = None
    cosim_latency_min_cycles: int | None = None
    cosim_latency_max_cycles: int | None = None
    cosim_interval_min: int | None = None
    cosim_interval_max: int | None = None
    sources: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def figure(self, name: str) -> VendorFigure | None:
        """A scalar figure (``latency_max_cycles``) or a resource (``resources.LUT``) with unit and source."""
        if name.startswith("resources."):
            key = name.split(".", 1)[1]
            value = self.resources.get(key)
            unit = key
        elif name in _SCALAR_UNITS:
            value = getattr(self, name)
            unit = _SCALAR_UNITS[name]
        else:
            raise KeyError(f"unknown vendor figure {name!r}")
        if value is None:
            return None
        return VendorFigure(value=value, unit=unit, source=self.sources[name])

    def figures(self) -> dict[str, VendorFigure]:
        """All figures that are present, by name."""
        names = list(_SCALAR_UNITS) + [f"resources.{k}" for k in self.resources]
        return {n: f for n in names if (f := self.figure(n)) is not None}

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (paths as strings)."""
        return {
            "project_dir": str(self.project_dir),
            "tool": self.tool,
            "tool_version": self.tool_version,
            "part": self.part,
            "figures": {name: fig.to_json() for name, fig in self.figures().items()},
            "resources": dict(self.resources),
            "available": dict(self.available),
            "csynth_resources": dict(self.csynth_resources),
            "cosim_status": self.cosim_status,
            "files": {k: str(v) for k, v in self.files.items()},
        }


# ----------------------------------------------------------------------------- locating files


@dataclass(frozen=True)
class _Layout:
    top: str | None
    app: Path | None
    files: dict[str, Path]


def _read_project_tcl(path: Path) -> tuple[str | None, str | None]:
    """(project_name, backend) from hls4ml's project.tcl; either may be None."""
    text = path.read_text(errors="replace")
    name = re.search(r'^\s*set\s+project_name\s+"([^"]+)"', text, re.M)
    backend = re.search(r'^\s*set\s+backend\s+"([^"]+)"', text, re.M)
    return (name.group(1) if name else None), (backend.group(1) if backend else None)


def _find_prj_dir(project_dir: Path) -> tuple[Path | None, str | None]:
    """The ``<name>_prj`` HLS project directory and the top-function name."""
    tcl = project_dir / "project.tcl"
    if tcl.is_file():
        name, backend = _read_project_tcl(tcl)
        if name is not None:
            top = f"{name}_axi" if backend and "accelerator" in backend else name
            prj = project_dir / f"{name}_prj"
            return (prj if prj.is_dir() else None), top
    candidates = sorted(p for p in project_dir.glob("*_prj") if p.is_dir())
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ArtifactError(
            f"{project_dir}: several HLS projects ({names}) and no project.tcl saying which one; keep one"
        )
    if not candidates:
        return None, None
    return candidates[0], candidates[0].name[: -len("_prj")]


def _solution_dirs(prj: Path) -> tuple[list[Path], Path | None]:
    """Solution directories (hls4ml's own ``_find_solutions`` order first) and the .app file used."""
    from hls4ml.report.vivado_report import _find_solutions

    app = next((prj / n for n in ("vivado_hls.app", "hls.app") if (prj / n).is_file()), None)
    listed: list[Path] = []
    if app is not None:
        try:
            listed = [prj / s for s in _find_solutions(str(prj))]
        except ET.ParseError as err:
            raise ArtifactError(f"{app}: corrupt HLS project file ({_one_line(err)}); re-run the HLS build") from err
    others = sorted(p for p in prj.iterdir() if p.is_dir() and (p / "syn").is_dir() and p not in listed)
    return listed + others, app


def _first_file(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


def _locate(project_dir: Path) -> _Layout:
    prj, top = _find_prj_dir(project_dir)
    files: dict[str, Path] = {}
    app = None
    if (project_dir / "project.tcl").is_file():
        files["project_tcl"] = project_dir / "project.tcl"
    if prj is not None and top is not None:
        solutions, app = _solution_dirs(prj)
        if app is not None:
            files["app"] = app
        # the first solution holding any report wins (hls4ml uses the first listed one)
        for sln in solutions:
            rep = sln / "syn" / "report"
            found = {
                "csynth_xml": _first_file(rep / f"{top}_csynth.xml", rep / "csynth.xml"),
                "csynth_rpt": _first_file(rep / f"{top}_csynth.rpt", rep / "csynth.rpt"),
                "cosim_rpt": _first_file(sln / "sim" / "report" / f"{top}_cosim.rpt"),
            }
            if any(found.values()):
                files.update({k: v for k, v in found.items() if v is not None})
                break
    if (project_dir / "vivado_synth.rpt").is_file():
        files["vivado_synth_rpt"] = project_dir / "vivado_synth.rpt"
    return _Layout(top=top, app=app, files=files)


_REPORT_KEYS = ("csynth_xml", "vivado_synth_rpt", "cosim_rpt")


def find_vendor_reports(project_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Which report files exist: keys among ``project_tcl``, ``app``, ``csynth_xml``, ``csynth_rpt``,
    ``vivado_synth_rpt``, ``cosim_rpt``. Raises ArtifactError if the directory does not exist."""
    path = Path(project_dir)
    if not path.is_dir():
        raise ArtifactError(f"{path}: firmware project directory does not exist; run the convert stage first")
    return _locate(path).files


def missing_reports_message(project_dir: str | os.PathLike[str]) -> str:
    """The one-line explanation for a project without any synthesis report."""
    return (
        f"{project_dir}: no synthesis report (looked for <name>_prj/solution*/syn/report/<name>_csynth.xml, "
        "csynth.xml and vivado_synth.rpt); run csynth (a failed synthesis leaves no report)"
    )


# ----------------------------------------------------------------------------- running hls4ml's parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst, target_is_directory=src.is_dir())
    except OSError:  # no symlinks (e.g. Windows without privilege): copy
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def _hls4ml_parse(top: str, *, csynth: Path | None = None, vsynth: Path | None = None, sim: Path | None = None) -> dict:
    """Run ``hls4ml.report.parse_vivado_report`` on a staging directory holding only the given reports.

    Its progress prints ("CSynthesis report not found." ...) are captured and dropped.
    """
    from hls4ml.report import parse_vivado_report

    with tempfile.TemporaryDirectory(prefix="trigger_ml_hls_report_") as tmp:
        root = Path(tmp)
        (root / "project.tcl").write_text(f'set project_name "{top}"\nset backend "vivado"\n')
        prj = root / f"{top}_prj"
        (prj / "solution1").mkdir(parents=True)
        (prj / "vivado_hls.app").write_text('<project><solutions><solution name="solution1"/></solutions></project>')
        if csynth is not None:
            _link(csynth, prj / "solution1" / "syn" / "report" / f"{top}_csynth.xml")
        if vsynth is not None:
            _link(vsynth, root / "vivado_synth.rpt")
        if sim is not None:
            _link(sim, prj / "solution1" / "sim")
        with contextlib.redirect_stdout(io.StringIO()):
            return parse_vivado_report(str(root)) or {}


def _parse_csynth(top: str, path: Path) -> dict[str, str]:
    try:
        report = _hls4ml_parse(top, csynth=path)
    except ET.ParseError as err:
        raise ArtifactError(f"{path}: corrupt csynth XML ({_one_line(err)}); delete it and re-run csynth") from err
    except (AttributeError, TypeError) as err:  # hls4ml does root.find(...).text without checks
        raise ArtifactError(
            f"{path}: csynth XML lacks an expected element (UserAssignments, PerformanceEstimates or "
            "AreaEstimates); it is truncated or not a csynth report - re-run csynth"
        ) from err
    return report.get("CSynthesisReport", {})


def _parse_vivado_synth(top: str, path: Path) -> dict[str, str]:
    try:
        report = _hls4ml_parse(top, vsynth=path)
    except (OSError, UnicodeDecodeError, IndexError) as err:
        raise ArtifactError(f"{path}: unreadable Vivado utilisation report ({_one_line(err)}); re-run vsynth") from err
    return report.get("VivadoSynthReport", {})


def _parse_cosim(top: str, path: Path) -> dict[str, Any]:
    try:
        report = _hls4ml_parse(top, sim=path.parent.parent)
    except (KeyError, IndexError, ValueError, ET.ParseError) as err:  # KeyError: no Verilog/VHDL result row
        raise ArtifactError(
            f"{path}: co-simulation report has no usable Verilog/VHDL result row ({_one_line(err)}); re-run cosim"
        ) from err
    return report.get("CosimReport", {})


def _report_metadata(path: Path) -> dict[str, str | None]:
    """Fields hls4ml's parser does not read: tool version, part, and the tag hints telling Vitis from Vivado."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ArtifactError(f"{path}: corrupt csynth XML ({_one_line(err)}); delete it and re-run csynth") from err

    def text(xpath: str) -> str | None:
        node = root.find(xpath)
        return node.text.strip() if node is not None and node.text else None

    resources = root.find("./AreaEstimates/Resources")
    tags = {child.tag for child in resources} if resources is not None else set()
    return {
        "version": text("./ReportVersion/Version"),
        "part": text("./UserAssignments/Part"),
        "flow_target": text("./UserAssignments/FlowTarget"),
        "dsp_tag": "DSP48E" if "DSP48E" in tags else ("DSP" if "DSP" in tags else None),
    }


# ----------------------------------------------------------------------------- normalising


def _num(value: Any) -> float | None:
    """A report cell as a number; None for "undef", "NA", "" and the like."""
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(round(number))


def _tool_name(app: Path | None, meta: dict[str, str | None]) -> str:
    if app is not None:
        return "Vitis HLS" if app.name == "hls.app" else "Vivado HLS"
    if meta.get("flow_target") is not None or meta.get("dsp_tag") == "DSP":
        return "Vitis HLS"  # only Vitis HLS writes <FlowTarget> and calls the DSP tag <DSP>
    if meta.get("dsp_tag") == "DSP48E":
        return "Vivado HLS"
    return "unknown"


def _csynth_resources(csynth: dict[str, str], prefix: str = "") -> dict[str, int]:
    """Resource dict from hls4ml's CSynthesisReport (it already renamed DSP48E to DSP)."""
    out = {}
    for key in RESOURCE_KEYS:
        value = _int(csynth.get(prefix + key))
        if value is not None:
            out[key] = value
    return out


def _vivado_synth_resources(vsynth: dict[str, str]) -> dict[str, int]:
    """Resource dict from hls4ml's VivadoSynthReport.

    Quirks of hls4ml's dict: DSPs are under ``DSP48E``, and ``BRAM_18K`` holds Vivado's
    "Block RAM Tile" count, which is in 36 Kb tiles (a RAMB18 counts 0.5) - so it is doubled here.
    """
    out = {}
    mapping = (
        ("LUT", "LUT", 1), ("FF", "FF", 1), ("DSP", "DSP48E", 1), ("BRAM_18K", "BRAM_18K", 2), ("URAM", "URAM", 1)
    )
    for ours, theirs, scale in mapping:
        value = _num(vsynth.get(theirs))
        if value is not None:
            out[ours] = int(round(value * scale))
    return out


def parse_vendor_reports(project_dir: str | os.PathLike[str]) -> VendorReport | None:
    """Parse the synthesis reports of an hls4ml project; None when there is none at all.

    Figures of reports that are absent are None (e.g. csynth present, vivado_synth.rpt missing:
    resources are the HLS estimates). A corrupt report raises ArtifactError naming the file.
    For the None case, :func:`missing_reports_message` gives the message to show.
    """
    path = Path(project_dir)
    if not path.is_dir():
        raise ArtifactError(f"{path}: firmware project directory does not exist; run the convert stage first")
    layout = _locate(path)
    files = layout.files
    if not any(k in files for k in _REPORT_KEYS):
        return None
    top = layout.top or "myproject"

    csynth = _parse_csynth(top, files["csynth_xml"]) if "csynth_xml" in files else {}
    meta = _report_metadata(files["csynth_xml"]) if "csynth_xml" in files else {}
    vsynth = _parse_vivado_synth(top, files["vivado_synth_rpt"]) if "vivado_synth_rpt" in files else {}
    cosim = _parse_cosim(top, files["cosim_rpt"]) if "cosim_rpt" in files else {}

    tool = _tool_name(layout.app, meta)
    version = meta.get("version")
    csynth_source = f"parsed ({tool}{' ' + version if version else ''} csynth)"

    scalars: dict[str, Any] = {
        "clock_target_ns": _num(csynth.get("TargetClockPeriod")),
        "clock_estimated_ns": _num(csynth.get("EstimatedClockPeriod")),
        "latency_min_cycles": _int(csynth.get("BestLatency")),
        "latency_max_cycles": _int(csynth.get("WorstLatency")),
        "interval_min": _int(csynth.get("IntervalMin")),
        "interval_max": _int(csynth.get("IntervalMax")),
        "cosim_latency_min_cycles": _int(cosim.get("LatencyMin")),
        "cosim_latency_max_cycles": _int(cosim.get("LatencyMax")),
        "cosim_interval_min": _int(cosim.get("IntervalMin")),
        "cosim_interval_max": _int(cosim.get("IntervalMax")),
    }
    sources = {
        name: (SOURCE_COSIM if name.startswith("cosim_") else csynth_source)
        for name, value in scalars.items()
        if value is not None
    }

    hls_resources = _csynth_resources(csynth)
    synth_resources = _vivado_synth_resources(vsynth)
    resources = {**hls_resources, **synth_resources}
    for key in resources:
        sources[f"resources.{key}"] = SOURCE_VIVADO_SYNTH if key in synth_resources else csynth_source

    return VendorReport(
        project_dir=path,
        tool=tool,
        tool_version=version,
        part=meta.get("part"),
        resources=resources,
        available=_csynth_resources(csynth, prefix="Available"),
        csynth_resources=hls_resources,
        cosim_status=cosim.get("Status"),
        sources=sources,
        files=dict(files),
        **scalars,
    )


def require_vendor_reports(project_dir: str | os.PathLike[str]) -> VendorReport:
    """Like :func:`parse_vendor_reports` but raises ArtifactError when there is no report."""
    report = parse_vendor_reports(project_dir)
    if report is None:
        raise ArtifactError(missing_reports_message(project_dir))
    return report
