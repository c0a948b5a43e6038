"""Deployed firmware published only as hls4ml-generated C++ → FirmwareModel IR (+ its own C-sim).

Reads what hls4ml 0.8 … 1.3 writes for an ``io_parallel`` Vivado/Vitis project, nothing else:
``firmware/defines.h`` (``typedef ap_fixed<W,I,Q,O,N> name;``, ``ap_ufixed``, ``ap_int``/``ap_uint``),
``firmware/parameters.h`` (one ``struct configN : nnet::..._config`` per layer: ``n_in``, ``n_out``,
``strategy``, ``reuse_factor``, ``accum_t``, ``weight_t``, ``bias_t``, ``table_t``, ``kernel``,
``product``), ``firmware/weights/*.h`` (or ``*.txt``) and ``firmware/<project>.cpp`` (the top
function's arguments, the layer arrays and the ``nnet::`` calls in order). Supported calls: ``dense``
(Latency and Resource kernels, plain ``mult`` products), ``relu``, ``linear``, ``sigmoid``/``tanh``
tables, ``normalize`` (batch-norm scale/bias), ``add``/``subtract``/``multiply``/``average``/
``maximum``/``minimum``, ``dot1d``, and the io_parallel reshape alias (``auto& a = b;``).

:func:`build_csim` compiles the project's own C++ with g++ (the headers it ships, or hls4ml's
``ap_types``) with a small C harness: the reference the emulator is compared with.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.errors import ArtifactError, DataFormatError, UnsupportedLayerError
from trigger_ml.core.fixed import FixedType, from_float

__all__ = ["CSim", "HLSProjectSource", "build_csim", "project_to_ir", "read_project"]

_SUPPORTED_CALLS = ("dense", "relu", "linear", "sigmoid", "tanh", "normalize", "add", "subtract", "multiply",
                    "average", "maximum", "minimum", "dot1d")


@dataclass
class Call:
    func: str
    targs: list[str]
    args: list[str]
    name: str  # layer name (hls4ml's trailing comment, else the output array)


@dataclass
class HLSProjectSource:
    """The parsed C++ of an hls4ml project."""

    root: Path
    project: str
    typedefs: dict[str, str]
    configs: dict[str, dict[str, Any]]
    top_inputs: list[tuple[str, str, int]]  # (type, name, size)
    top_outputs: list[tuple[str, str, int]]
    arrays: dict[str, tuple[str, int]]  # local arrays: name -> (type, size)
    aliases: dict[str, str]  # reshape: new name -> existing name
    calls: list[Call]
    txt_loaded: frozenset = frozenset()  # weight arrays the C-sim loads from weights/<name>.txt
    signature: tuple = ()  # top-function argument names in order (with hls4ml 0.8's ``unsigned short &`` sizes)
    refs: tuple = ()  # (type, name) of scalar reference arguments (hls4ml 0.8: const_size_in_1, ...)


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


def _strip_comments(text: str, keep_line_comments: bool = False) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    return text if keep_line_comments else re.sub(r"//[^\n]*", "", text)


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _find_project(root: Path) -> tuple[Path, str]:
    fw = root / "firmware" if (root / "firmware").is_dir() else root
    for need in ("defines.h", "parameters.h"):
        if not (fw / need).is_file():
            raise DataFormatError(f"{root}: no firmware/{need}; not an hls4ml-generated project (needs firmware/"
                                  "defines.h, parameters.h, <project>.cpp, weights/)")
    for cpp in sorted(fw.glob("*.cpp")):
        text = cpp.read_text(errors="replace")
        if re.search(rf"\bvoid\s+{re.escape(cpp.stem)}\s*\(", text) and "nnet::" in text:
            return fw, cpp.stem
    raise DataFormatError(f"{fw}: no <project>.cpp defining the top function 'void <project>(...)'")


def _parse_typedefs(text: str) -> dict[str, str]:
    return {m.group(2): " ".join(m.group(1).split())
            for m in re.finditer(r"typedef\s+([^;{}]+?)\s+(\w+)\s*;", _strip_comments(text))}


def _parse_configs(text: str) -> dict[str, dict[str, Any]]:
    out = {}
    for m in re.finditer(r"struct\s+(\w+)\s*:\s*nnet::(\w+)\s*\{(.*?)\n\s*\};", _strip_comments(text), re.DOTALL):
        body = m.group(3)
        d: dict[str, Any] = {"_base": m.group(2)}
        for km in re.finditer(r"static\s+(?:const|constexpr)\s+[\w:]+\s+(\w+)\s*=\s*([^;]+);", body):
            v = km.group(2).strip()
            try:
                d[km.group(1)] = int(v)
            except ValueError:
                d[km.group(1)] = v
        for tm in re.finditer(r"typedef\s+([^;]+?)\s+(\w+)\s*;", body):
            d[tm.group(2)] = " ".join(tm.group(1).split())
        km = re.search(r"using\s+kernel\s*=\s*nnet::(\w+)", body)
        if km:
            d["kernel"] = km.group(1)
        pm = re.search(r"using\s+product\s*=\s*nnet::product::(\w+)", body)
        if pm:
            d["product"] = pm.group(1)
        out[m.group(1)] = d
    return out


def read_project(path: str | os.PathLike) -> HLSProjectSource:
    """Parse the C++ of the hls4ml project at ``path`` (its root or its ``firmware/`` folder)."""
    root = Path(path)
    fw, project = _find_project(root)
    typedefs = _parse_typedefs((fw / "defines.h").read_text(errors="replace"))
    params = (fw / "parameters.h").read_text(errors="replace")
    typedefs.update({k: v for k, v in _parse_typedefs(re.sub(r"struct\s+\w+\s*:[^{]*\{.*?\n\s*\};", "",
                                                              _strip_comments(params), flags=re.DOTALL)).items()})
    configs = _parse_configs(params)
    src = _strip_comments((fw / f"{project}.cpp").read_text(errors="replace"), keep_line_comments=True)
    m = re.search(rf"\bvoid\s+{re.escape(project)}\s*\((.*?)\)\s*\{{(.*)\}}", src, re.DOTALL)
    if m is None:
        raise DataFormatError(f"{fw / (project + '.cpp')}: cannot find the body of the top function {project}()")
    sig, body = _strip_comments(m.group(1)), m.group(2)
    ports, order, refs = [], [], []
    for p in _split_top(sig):
        rm_ = re.fullmatch(r"([\w:<>, ]+?)\s*&\s*(\w+)", p.strip())
        if rm_ and "stream" not in p:
            refs.append((" ".join(rm_.group(1).split()), rm_.group(2)))
            order.append(rm_.group(2))
            continue
        pm = re.fullmatch(r"([\w:<>, ]+?)\s+(\w+)\s*\[\s*(\d+)\s*\]", p.strip())
        if pm:
            ports.append((" ".join(pm.group(1).split()), pm.group(2), int(pm.group(3))))
            order.append(pm.group(2))
        elif "&" in p or "hls::stream" in p:
            if "hls::stream" in p:
                raise UnsupportedLayerError(f"{fw}: io_stream top function ({p.strip()}); only io_parallel projects "
                                            "can be imported")
        else:
            raise DataFormatError(f"{fw}: cannot read top-function argument {p.strip()!r}")
    arrays, aliases, calls = {}, {}, []
    for line in body.splitlines():
        code, _, comment = line.partition("//")
        code = code.strip()
        am = re.fullmatch(r"([\w:<>, ]+?)\s+(\w+)\s*\[\s*(\d+)\s*\]\s*;", code)
        if am:
            arrays[am.group(2)] = (" ".join(am.group(1).split()), int(am.group(3)))
            continue
        rm = re.fullmatch(r"auto\s*&\s*(\w+)\s*=\s*(\w+)\s*;", code)
        if rm:
            aliases[rm.group(1)] = rm.group(2)
            continue
        cm = re.match(r"nnet::(\w+)\s*<(.*)>\s*\((.*)\)\s*;", code)
        if cm and cm.group(1) not in ("load_weights_from_txt", "load_compressed_weights_from_txt",
                                      "load_exponent_weights_from_txt"):
            calls.append(Call(cm.group(1), _split_top(cm.group(2)), _split_top(cm.group(3)),
                              comment.strip() or ""))
    txt_loaded = frozenset(re.findall(r"load_weights_from_txt\s*<[^>]*>\s*\(\s*(\w+)\s*,", body))
    # hls4ml writes each port once: inputs first, then outputs (they are the arrays no call reads)
    written = {c.args[-1] if c.func not in ("dense", "normalize") else c.args[1] for c in calls}
    outs = [p for p in ports if p[1] in written or p[1] in aliases]
    ins = [p for p in ports if p not in outs]
    return HLSProjectSource(root, project, typedefs, configs, ins, outs, arrays, aliases, calls, txt_loaded,
                            tuple(order), tuple(refs))


def _resolve_type(src: HLSProjectSource, name: str, where: str) -> FixedType:
    seen = set()
    t = name.strip()
    while t in src.typedefs and t not in seen:
        seen.add(t)
        t = src.typedefs[t]
    try:
        return FixedType.parse(t)
    except ValueError:
        raise UnsupportedLayerError(f"{where}: type {name!r} = {t!r} is not an ap_fixed/ap_ufixed/ap_int type") from None


def _weights(src: HLSProjectSource, name: str, where: str) -> tuple[np.ndarray, FixedType]:
    """Raw integers of the weight array ``name`` (``weights/<name>.h``, else ``weights/<name>.txt``),
    converted like the C++ does: ``weight_t w = <decimal literal>``."""
    wdir = src.root / "firmware" / "weights" if (src.root / "firmware").is_dir() else src.root / "weights"
    h = wdir / f"{name}.h"
    decl = None
    use_txt = name in src.txt_loaded and (wdir / f"{name}.txt").is_file()  # what the C simulation loads
    if h.is_file() and not use_txt:
        text = _strip_comments(h.read_text(errors="replace"))
        decl = re.search(rf"([\w:<>, ]+?)\s+{re.escape(name)}\s*\[\s*(\d+)\s*\]\s*=\s*\{{(.*?)\}}\s*;", text, re.DOTALL)
    if decl is not None:
        tname, n, body = " ".join(decl.group(1).split()), int(decl.group(2)), decl.group(3)
        tname = tname.replace("static", "").replace("const", "").strip()
    else:
        txt = wdir / f"{name}.txt"
        if not txt.is_file():
            raise DataFormatError(f"{where}: weights {name!r} not found ({h.name} or {txt.name} in {wdir})")
        text = h.read_text(errors="replace") if h.is_file() else ""
        dm = re.search(rf"([\w:<>, ]+?)\s+{re.escape(name)}\s*\[\s*(\d+)\s*\]", _strip_comments(text))
        tname = " ".join(dm.group(1).split()) if dm else None
        n = int(dm.group(2)) if dm else None
        body = txt.read_text()
    vals = [v for v in re.split(r"[,\s]+", body.strip()) if v]
    try:
        arr = np.array([float(v.rstrip("fF")) for v in vals], dtype=np.float64)
    except ValueError as exc:
        raise DataFormatError(f"{where}: cannot read weights {name!r}: {exc}") from None
    if n is not None and arr.size != n:
        raise DataFormatError(f"{where}: weights {name!r} hold {arr.size} values for [{n}]")
    if tname is None:
        raise DataFormatError(f"{where}: no declaration of the type of weights {name!r}")
    t = _resolve_type(src, tname, f"{where} weights {name}")
    return from_float(arr, t).astype(np.int64), t


def _cfg(src: HLSProjectSource, call: Call, where: str) -> dict[str, Any]:
    name = call.targs[-1]
    if name not in src.configs:
        raise DataFormatError(f"{where}: config struct {name!r} not found in parameters.h")
    return src.configs[name]


def project_to_ir(src: HLSProjectSource):
    """The FirmwareModel of a parsed hls4ml C++ project (see the module doc for what is supported)."""
    from trigger_ml.ir import FirmwareModel, Layer, TensorSpec
    from trigger_ml.ir.tables import build_tables

    layers: list[Layer] = []
    producer: dict[str, Layer] = {}
    inputs = []
    for tname, name, size in src.top_inputs:
        t = _resolve_type(src, tname, f"input {name}")
        lay = Layer(name, "input", (), (size,), t, hls_class="Input")
        layers.append(lay)
        producer[name] = lay
        inputs.append(TensorSpec(name, (size,), t))
    port_types = {n: (t, s) for t, n, s in src.top_outputs}
    used_names = set(producer)

    def var(v: str, where: str) -> Layer:
        v = v.strip()
        while v in src.aliases and v not in producer:
            v = src.aliases[v]
        if v not in producer:
            raise UnsupportedLayerError(f"{where}: reads {v!r}, which no supported layer before it writes")
        return producer[v]

    for call in src.calls:
        where = f"{src.project}.cpp: layer {call.name or call.args[-1]!r} (nnet::{call.func})"
        if call.func not in _SUPPORTED_CALLS:
            raise UnsupportedLayerError(f"{where} is not supported; supported nnet calls: {', '.join(_SUPPORTED_CALLS)}")
        cfg = _cfg(src, call, where)
        out_var = call.args[1] if call.func in ("dense", "normalize") or len(call.args) == 2 else call.args[2]
        t_out_name = call.targs[-2]
        if out_var in src.arrays:
            size = src.arrays[out_var][1]
        elif out_var in port_types:
            size = port_types[out_var][1]
        else:
            raise DataFormatError(f"{where}: output array {out_var!r} is not declared")
        t_out = _resolve_type(src, t_out_name, where)
        name = call.name if call.name and call.name not in used_names else out_var
        used_names.add(name)
        kw: dict[str, Any] = dict(types={}, params={}, arrays={})
        if call.func == "dense":
            x = var(call.args[0], where)
            strategy = str(cfg.get("strategy", "nnet::latency")).split("::")[-1].lower()
            kernel = str(cfg.get("kernel", "DenseLatency"))
            if "Latency" not in kernel and "Resource" not in kernel and strategy not in ("latency", "resource"):
                raise UnsupportedLayerError(f"{where}: dense kernel {kernel} is not supported (Latency/Resource)")
            if cfg.get("product", "mult") != "mult":
                raise UnsupportedLayerError(f"{where}: product {cfg.get('product')} (binary / power-of-two weights) is "
                                            "not supported; only plain multiplications")
            n_in, n_out = int(cfg["n_in"]), int(cfg["n_out"])
            w, wt = _weights(src, call.args[2], where)
            b, bt = _weights(src, call.args[3], where)
            acc = _resolve_type(src, cfg["accum_t"], where)
            resource = "Resource" in kernel or strategy == "resource"
            if resource and acc.overflow != "WRAP":
                raise UnsupportedLayerError(f"{where}: Resource dense with a saturating accum_t ({acc.to_hls()}): the "
                                            "sum depends on the reuse order, which is not emulated")
            w = w.reshape(n_out, n_in).T if resource else w.reshape(n_in, n_out)
            kw = dict(types={"weight": wt, "bias": bt, "accum": acc}, params={"n_in": n_in, "n_out": n_out},
                      arrays={"weight": w, "bias": b.reshape(n_out)})
            kind, ins = "dense", (x,)
        elif call.func in ("relu", "linear"):
            kind, ins = "activation", (var(call.args[0], where),)
            kw["params"] = {"fn": call.func}
        elif call.func in ("sigmoid", "tanh"):
            n = int(cfg.get("table_size", 1024))
            tt = _resolve_type(src, cfg.get("table_t", "ap_fixed<18,8>"), where)
            div = 8 if call.func == "tanh" else 16
            kind, ins = "table_activation", (var(call.args[0], where),)
            kw = dict(types={"table": tt}, params={"fn": call.func, "table_size": n, "range_div": div,
                                                   "offset": (div // 2) * n // div},
                      arrays={"table": build_tables(call.func, n, tt)})
        elif call.func == "normalize":
            s, st = _weights(src, call.args[2], where)
            b, bt = _weights(src, call.args[3], where)
            kind, ins = "batchnorm", (var(call.args[0], where),)
            kw = dict(types={"scale": st, "bias": bt}, params={"n_filt": int(cfg.get("n_filt", -1))},
                      arrays={"scale": s.reshape(-1), "bias": b.reshape(-1)})
        elif call.func == "dot1d":
            a, b_ = var(call.args[0], where), var(call.args[1], where)
            kind, ins = "dot", (a, b_)
            kw = dict(types={"accum": _resolve_type(src, cfg["accum_t"], where)}, params={"n_in": a.size})
        else:  # merge
            a, b_ = var(call.args[0], where), var(call.args[1], where)
            kind, ins = "merge", (a, b_)
            kw["params"] = {"op": call.func, "n_elem1": a.size, "n_elem2": b_.size}
        lay = Layer(name, kind, tuple(i.name for i in ins), (size,), t_out, hls_class=call.func, **kw)
        layers.append(lay)
        producer[out_var] = lay
    outputs = []
    for tname, name, size in src.top_outputs:
        lay = var(name, f"output {name}")
        outputs.append(TensorSpec(lay.name, lay.shape, lay.type))
    return FirmwareModel(name=src.project, inputs=tuple(inputs), outputs=tuple(outputs), layers=tuple(layers),
                         meta={"source_format": "hls4ml C++", "project_name": src.project, "io_type": "io_parallel"})


# --------------------------------------------------------------------------------------------
# the project's own C simulation
# --------------------------------------------------------------------------------------------


def _ap_types_dir(fw: Path) -> Path:
    if (fw / "ap_types" / "ap_fixed.h").is_file():
        return fw / "ap_types"
    import hls4ml

    d = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    if not (d / "ap_fixed.h").is_file():  # pragma: no cover
        raise ArtifactError(f"{fw}: no ap_types headers (neither in the project nor in hls4ml)")
    return d


class CSim:
    """The project's C++ compiled with a C harness: ``predict(x)`` → float64 (n, total outputs)."""

    def __init__(self, lib: Path, src: HLSProjectSource) -> None:
        self._lib = ctypes.cdll.LoadLibrary(str(lib))
        self.src = src

    def predict(self, x) -> np.ndarray:
        xs = x if isinstance(x, (list, tuple)) else [x]
        n = len(xs[0])
        xs = [np.ascontiguousarray(np.asarray(a, np.float64).reshape(n, -1)) for a in xs]
        ys = [np.zeros((n, s), np.float64) for _, _, s in self.src.top_outputs]
        ptr = ctypes.POINTER(ctypes.c_double)
        args = [ctypes.c_int(n)] + [a.ctypes.data_as(ptr) for a in xs] + [y.ctypes.data_as(ptr) for y in ys]
        self._lib.trigger_ml_run(*args)
        return np.concatenate(ys, axis=1)


def build_csim(src: HLSProjectSource, work: str | os.PathLike | None = None) -> CSim:
    """Compile the project's ``<project>.cpp`` with g++ and a harness calling the top function
    event by event (inputs assigned from double, outputs read with ``to_double()``)."""
    fw = src.root / "firmware" if (src.root / "firmware").is_dir() else src.root
    ins, outs = src.top_inputs, src.top_outputs
    params = ["int n"] + [f"const double* x{i}" for i in range(len(ins))] + [f"double* y{i}" for i in range(len(outs))]
    body = [f"    {t} in{i}[{s}];" for i, (t, _, s) in enumerate(ins)]
    body += [f"    {t} out{i}[{s}];" for i, (t, _, s) in enumerate(outs)]
    body += [f"    for (int j = 0; j < {s}; j++) in{i}[j] = x{i}[(long)e * {s} + j];" for i, (_, _, s) in enumerate(ins)]
    names = {n: f"in{i}" for i, (_, n, _) in enumerate(ins)} | {n: f"out{i}" for i, (_, n, _) in enumerate(outs)}
    body += [f"    {t} {n} = 0;" for t, n in src.refs]
    names |= {n: n for _, n in src.refs}
    call_args = [names[n] for n in src.signature] if src.signature else list(names.values())
    body.append(f"    {src.project}({', '.join(call_args)});")
    body += [f"    for (int j = 0; j < {s}; j++) y{i}[(long)e * {s} + j] = out{i}[j].to_double();"
             for i, (_, _, s) in enumerate(outs)]
    harness = (f'#include "{src.project}.h"\nextern "C" void trigger_ml_run({", ".join(params)}) {{\n'
               f"  for (int e = 0; e < n; e++) {{\n" + "\n".join(body) + "\n  }\n}\n")
    key = hashlib.sha256(harness.encode() + b"".join(p.read_bytes() for p in sorted(fw.rglob("*"))
                                                     if p.is_file() and p.suffix in (".h", ".cpp", ".txt"))).hexdigest()[:16]
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="trigger_ml_csim_"))
    lib = work / f"csim-{key}.so"
    if not lib.is_file():
        cxx = shutil.which("g++")
        if cxx is None:
            raise ArtifactError("g++ not found: needed to compile the project's C simulation")
        (work / "harness.cpp").write_text(harness)
        inc = [f"-I{fw}", f"-I{_ap_types_dir(fw)}"]
        if not (fw / "nnet_utils").is_dir():  # published without the library: hls4ml's own (this version's)
            import hls4ml

            inc.append(f"-I{Path(hls4ml.__file__).parent / 'templates' / 'vivado'}")
        cmd = [cxx, "-O2", "-std=c++14", "-fPIC", "-shared", *inc,
               f'-DWEIGHTS_DIR="{fw / "weights"}"', str(fw / f"{src.project}.cpp"), str(work / "harness.cpp"),
               "-o", str(lib)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["?"])[0]
            raise ArtifactError(f"{fw}: g++ failed to build the project's C simulation ({last[:300]})")
    return CSim(lib, src)


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------


def import_hls4ml_project(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    precision: str | os.PathLike | None = None,
    score: str | None = None,
    preprocessing: str | os.PathLike | None = None,
    force: bool = False,
    tb_events: int = 1000,
    seed: int = 20261201,
    log=print,
) -> dict[str, Any]:
    """Import an hls4ml project from its generated C++ alone into the firmware directory ``out``:
    the project's ``firmware/`` tree is copied, the IR is parsed from it, and the emulator must
    equal the project's own C simulation (g++) on ``tb_events`` random, heavily overflowing events."""
    import json
    import time

    from trigger_ml.core.artifacts import (
        atomic_dir,
        check_output,
        sha256_dir,
        write_manifest,
    )
    from trigger_ml.core.constants import INPUT_INFO_FILE, IR_FILE, PREPROCESSING_FILE
    from trigger_ml.core.errors import ConfigError
    from trigger_ml.core.threshold import resolve_score
    from trigger_ml.emulate import Emulator
    from trigger_ml.firmware.hls import STAGE, write_tb_file
    from trigger_ml.firmware.convert import FIRMWARE_STAGES
    from trigger_ml.importers.common import _preprocessing_json, random_inputs

    if precision is not None:
        raise ConfigError("--precision does not apply to generated C++: the types are read from defines.h/parameters.h")
    root = Path(source)
    src = read_project(root)
    fm = project_to_ir(src)
    out = check_output(out, [root, preprocessing], FIRMWARE_STAGES, force)
    pre_json, pre_src = _preprocessing_json(preprocessing, log)
    if score is not None or sum(o.size for o in fm.outputs) == 1:
        name, idx, _ = resolve_score([(o.name, o.size) for o in fm.outputs], score)
        fm = fm.with_score(name, idx)
    fm = type(fm)(fm.name, fm.inputs, fm.outputs, fm.layers, fm.score, fm.threshold,
                  dict(fm.meta) | {"imported_from": str(root.resolve())})
    t0 = time.perf_counter()
    fw_src = src.root / "firmware" if (src.root / "firmware").is_dir() else src.root
    with atomic_dir(out, force=force) as tmp:
        shutil.copytree(fw_src, tmp / "firmware", ignore=shutil.ignore_patterns("*.so", "*.o"))
        copied = read_project(tmp)
        csim = build_csim(copied, tmp / "firmware")
        x = random_inputs([s.type for s in fm.inputs], [s.shape for s in fm.inputs], tb_events, seed)
        xin = x if len(x) > 1 else x[0]
        ref = csim.predict(xin)
        got = Emulator(fm).predict(xin)
        if isinstance(got, list):
            got = np.concatenate([np.asarray(g, np.float64).reshape(tb_events, -1) for g in got], axis=1)
        got = np.asarray(got, np.float64).reshape(tb_events, -1)
        bad = int((got != ref).sum())
        if bad:
            raise ArtifactError(f"{root}: the emulator of the parsed IR differs from the project's own C simulation on "
                                f"{int((got != ref).any(axis=1).sum())}/{tb_events} random events; please report it")
        if len(x) == 1:
            write_tb_file(tmp / "tb_data" / "tb_input_features.dat", x[0])
            write_tb_file(tmp / "tb_data" / "tb_output_predictions.dat", ref)
        fm.save(tmp / IR_FILE)
        (tmp / PREPROCESSING_FILE).write_text(json.dumps(pre_json))
        t_in = fm.inputs[0].type
        (tmp / INPUT_INFO_FILE).write_text(json.dumps({"width": t_in.width, "integer": t_in.integer,
                                                       "signed": bool(t_in.signed), "n_features": fm.inputs[0].size,
                                                       "source": "import"}))
        strategies = sorted({str(c.get("strategy", "")).split("::")[-1] for c in src.configs.values()
                             if c.get("strategy")}) or ["latency"]
        config = {
            "model_sha256": sha256_dir(fw_src), "model_sha256_of": "firmware directory", "model_path": str(root.resolve()),
            "source_format": "hls4ml C++", "backend": "Vitis", "part": "unknown (not in the generated C++)",
            "clock_ns": 0.0, "io_type": "io_parallel", "strategy": ",".join(strategies), "reuse_factor": 1,
            "project_name": src.project, "hls_top": src.project, "bit_exact": False, "hls_config": {},
            "precisions": {lay.name: {"result": lay.type.to_hls(), **{k: v.to_hls() for k, v in lay.types.items()}}
                           for lay in fm.layers},
            "outputs": [[n, s] for _, n, s in src.top_outputs], "threshold": None,
            "tb_files": ["tb_data/tb_input_features.dat", "tb_data/tb_output_predictions.dat"] if len(x) == 1 else [],
            "preprocessing": pre_src,
            "notes": ["C simulation = the project's own C++ compiled with g++ (no hls4ml_config.yml: hls4ml's "
                      "compile()/predict() and `verify --hls` need the original hls4ml project)"],
        }
        figures = {"tb_events": tb_events, "emulator_vs_csim_mismatching_values": 0,
                   "seconds": round(time.perf_counter() - t0, 2)}
        write_manifest(tmp, STAGE, {}, config, figures, seed=seed)
    log(f"wrote firmware directory {out} from the hls4ml C++ of {root} ({len(fm.layers)} IR layers; emulator == the "
        f"project's own C-sim on {tb_events} random events)")
    return {"path": str(out), "source": str(root), "format": "hls4ml C++", "layers": len(fm.layers),
            "inputs": [s.to_dict() for s in fm.inputs], "outputs": [s.to_dict() for s in fm.outputs],
            "score": None if fm.score is None else fm.score.to_dict(), "tb_events": tb_events,
            "emulator_vs_csim_mismatches": 0, "notes": config["notes"], "seconds": figures["seconds"]}
