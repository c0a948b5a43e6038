"""Bit-exactness of trigger_ml.core.fixed against the Xilinx ap_fixed headers shipped with hls4ml.

The reference is a small C++ program (tests/apfixed_ref/) compiled with g++ against
``hls4ml/templates/vivado/ap_types``.  ap_fixed types are templates, so the set of
(source type, destination type) conversions is fixed at compile time: ``make_cases``
draws a deterministic, broad grid (every signedness x rounding x overflow combination,
widths 1..64 with emphasis on edges, negative / >width integer bits, right and left
shifts of 0..80 bits, several source widths up to 96 bits), the tests then feed many
raw values per conversion through one process invocation and compare exactly.

The compiled binary is cached in pytest's cache directory keyed by the hash of every
input (sources, flags, compiler version, header contents); a cold build of the fast
grid takes ~20 s of CPU (~200 template instantiations at ~0.1 s each; spread over the cores),
the slow grid (``-m slow``) ~2 minutes.  pytest does not deselect ``slow`` tests by itself:
the fast suite is ``pytest -m "not slow"`` (what ``make test`` runs).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from trigger_ml.core import fixed
from trigger_ml.core.fixed import (
    OVERFLOW_MODES,
    ROUNDING_MODES,
    FixedType,
    from_float,
    requantize,
    to_float,
)

HARNESS_DIR = Path(__file__).resolve().parent / "apfixed_ref"
CXX = os.environ.get("CXX", "g++")
# -O0: the harness is compile-time bound (hundreds of template instantiations), not run-time bound.
# -DNDEBUG: ap_private::get_bit() asserts on an out-of-range index, and ap_fixed_base::operator=
#   unconditionally reads the guard bit `op.V[F2 - F - 1]` even when the shift exceeds the source
#   width (the value is then discarded in favour of the sign bit).  Without NDEBUG such conversions
#   (any rounding mode but AP_TRN) abort -- and hls4ml's own C-simulation build does not define NDEBUG.
CXXFLAGS = ["-std=c++14", "-O0", "-DNDEBUG", "-w"]


def ap_types_dir() -> Path:
    import hls4ml

    path = Path(hls4ml.__file__).resolve().parent / "templates" / "vivado" / "ap_types"
    assert (path / "ap_fixed.h").is_file(), path
    return path


# --------------------------------------------------------------------------------------
# conversion grid
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Src:
    """A source ap_fixed type (its Q/O modes do not influence an assignment)."""

    width: int
    integer: int
    signed: bool

    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def raw_min(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    def cpp(self) -> str:
        return f"ap_{'' if self.signed else 'u'}fixed<{self.width},{self.integer}>"

    def dtype(self):
        """numpy dtype used to hand raws of this source to requantize (exercises dtype handling)."""
        if self.width > 64:
            return object
        if self.signed:
            for bits, dt in ((8, np.int8), (16, np.int16), (32, np.int32)):
                if self.width <= bits:
                    return dt
            return np.int64
        for bits, dt in ((8, np.uint8), (16, np.uint16), (32, np.uint32)):
            if self.width <= bits:
                return dt
        return np.uint64 if self.width == 64 else np.int64


@dataclass(frozen=True)
class AssignCase:
    src: Src
    dst: FixedType

    @property
    def shift(self) -> int:
        """Right-shift amount src.frac - dst.frac (negative: left shift)."""
        return self.src.frac - self.dst.frac

    def __str__(self) -> str:
        return f"{self.src.cpp()} -> {self.dst.to_hls()} (shift {self.shift})"


def cpp_type(t: FixedType) -> str:
    return f"ap_{'' if t.signed else 'u'}fixed<{t.width},{t.integer},AP_{t.rounding},AP_{t.overflow},{t.sat_bits}>"


MAIN_SOURCES = [Src(64, 32, True), Src(64, 32, False), Src(64, 64, True), Src(64, 12, False)]
OTHER_SOURCES = [
    Src(40, 20, True),
    Src(24, 12, True),
    Src(17, 3, False),
    Src(9, 3, False),
    Src(8, 8, True),
    Src(5, -3, True),
    Src(2, 5, True),
    Src(1, 1, True),
    Src(1, 0, False),
    Src(33, 0, True),
    Src(63, 30, False),
    Src(96, 40, True),  # wider than 64 bits: object-dtype path
    Src(72, 10, False),
]
EDGE_WIDTHS = [1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 52, 53, 54, 62, 63, 64]
KAT_SRC = Src(64, 32, True)
INT_SRC = Src(64, 64, True)

# Hand-picked conversions with known answers, at fixed indices at the start of every grid.
ASSIGN_ANCHORS = (
    [AssignCase(KAT_SRC, FixedType(8, 8, True, q, "SAT")) for q in ROUNDING_MODES]  # rounding table
    + [AssignCase(INT_SRC, FixedType(8, 8, s, "TRN", o)) for s in (True, False) for o in OVERFLOW_MODES]
    + [AssignCase(KAT_SRC, FixedType(8, 8, True, "RND", o)) for o in ("WRAP", "SAT", "SAT_ZERO")]  # carry
    + [AssignCase(INT_SRC, FixedType(8, 8, s, "TRN", "WRAP", 2)) for s in (True, False)]
    + [AssignCase(INT_SRC, FixedType(1, 1, True, "TRN", "SAT_SYM"))]
)
DOUBLE_ANCHORS = [FixedType(8, 8, True, q, "SAT") for q in ROUNDING_MODES] + [
    FixedType(8, -1070, True, "RND", "SAT"),  # frac 1078: exposes the header's subnormal decoding
    FixedType(16, 6, True, "RND", "SAT"),
]


def _rand_width(rng: random.Random) -> int:
    return rng.choice(EDGE_WIDTHS) if rng.random() < 0.6 else rng.randint(1, 64)


def _rand_dst(rng: random.Random, src: Src, signed: bool, q: str, o: str, n: int | None = 0) -> FixedType:
    w = _rand_width(rng)
    how = rng.random()
    if how < 0.45:  # choose the shift
        d = rng.choice(
            [-70, -65, -64, -63, -33, -10, -3, -2, -1, 0, 0, 1, 1, 2, 2, 3, 4, 7, 62, 63, 64, 65, 66, 80]
            + [src.width + k for k in (-2, -1, 0, 1, 2)]
            + [rng.randint(-80, 80)]
        )
        integer = w - (src.frac - d)
    elif how < 0.75:  # integer bits near the source's: the header's overflow-check gate
        integer = src.integer + rng.randint(-2, 2)
    else:
        integer = rng.randint(-6, w + 6)
    if n is None:
        n = rng.choice([1, 2, w, rng.randint(1, w)])
    return FixedType(w, integer, signed, q, o, min(n, w))


def _rand_double_dst(rng: random.Random, signed: bool, q: str, o: str, n: int = 0) -> FixedType:
    w = _rand_width(rng)
    integer = rng.choice([rng.randint(-8, w + 8), rng.randint(-60, 120), w, 0, 1])
    return FixedType(w, integer, signed, q, o, min(n, w))


def make_cases(seed: int, per_combo: int, double_per_combo: int) -> tuple[list[AssignCase], list[FixedType]]:
    rng = random.Random(seed)
    assign: list[AssignCase] = list(ASSIGN_ANCHORS)
    double: list[FixedType] = list(DOUBLE_ANCHORS)
    for signed in (True, False):
        for q in ROUNDING_MODES:
            for o in OVERFLOW_MODES:
                for _ in range(per_combo):
                    src = rng.choice(MAIN_SOURCES) if rng.random() < 0.5 else rng.choice(OTHER_SOURCES)
                    assign.append(AssignCase(src, _rand_dst(rng, src, signed, q, o)))
                for _ in range(double_per_combo):
                    double.append(_rand_double_dst(rng, signed, q, o))
        # AP_WRAP with saturation bits
        for _ in range(max(3, per_combo)):
            src = rng.choice(MAIN_SOURCES + OTHER_SOURCES)
            assign.append(AssignCase(src, _rand_dst(rng, src, signed, rng.choice(ROUNDING_MODES), "WRAP", None)))
        for _ in range(max(2, double_per_combo)):
            q = rng.choice(ROUNDING_MODES)
            double.append(_rand_double_dst(rng, signed, q, "WRAP", rng.choice([1, 2, 64])))
    return assign, double


# --------------------------------------------------------------------------------------
# building and driving the C++ reference
# --------------------------------------------------------------------------------------


def _generate_sources(assign: list[AssignCase], double: list[FixedType], parts: int) -> dict[str, str]:
    entries = [f"  A[{i}] = &ref_assign<{c.src.cpp()}, {c.src.width}, {cpp_type(c.dst)} >;" for i, c in enumerate(assign)]
    entries += [f"  D[{i}] = &ref_double<{cpp_type(t)} >;" for i, t in enumerate(double)]
    files: dict[str, str] = {}
    for k in range(parts):
        body = "\n".join(entries[k::parts])
        files[f"ref_part_{k}.cpp"] = (
            '#include "ref_common.h"\n'
            f"void ref_register_part_{k}(ref_assign_fn* A, ref_double_fn* D) {{\n  (void)A;\n  (void)D;\n{body}\n}}\n"
        )
    decls = "".join(f"void ref_register_part_{k}(ref_assign_fn*, ref_double_fn*);\n" for k in range(parts))
    calls = " ".join(f"ref_register_part_{k}(A, D);" for k in range(parts))
    files["ref_tables.inc"] = (
        f"#define REF_N_ASSIGN {len(assign)}\n#define REF_N_DOUBLE {len(double)}\n{decls}"
        f"#define REF_REGISTER_ALL(A, D) do {{ {calls} }} while (0)\n"
    )
    return files


def _build_key(files: dict[str, str], ap_dir: Path) -> str:
    h = hashlib.sha256()
    version = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
    h.update(version.encode())
    h.update(" ".join(CXXFLAGS).encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    for path in sorted(HARNESS_DIR.glob("*")) + sorted(p for p in ap_dir.rglob("*") if p.is_file()):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:24]


def build_reference(assign, double, workdir: Path, cache_root: Path | None) -> Path:
    ap_dir = ap_types_dir()
    jobs = max(2, min(8, os.cpu_count() or 2))
    files = _generate_sources(assign, double, parts=jobs)
    key = _build_key(files, ap_dir)
    cached = cache_root / key / "apfixed_ref" if cache_root is not None else None
    if cached is not None and cached.is_file():
        return cached
    build = workdir / key
    build.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (build / name).write_text(text)
    inc = ["-I", str(ap_dir), "-I", str(HARNESS_DIR), "-I", str(build)]

    def compile_one(src: Path) -> Path:
        obj = build / (src.stem + ".o")  # also for ref_main.cpp: never write into the repo
        proc = subprocess.run([CXX, *CXXFLAGS, *inc, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {src.name} failed:\n{proc.stderr[-4000:]}")
        return obj

    sources = [build / n for n in files if n.endswith(".cpp")] + [HARNESS_DIR / "ref_main.cpp"]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        objs = list(pool.map(compile_one, sources))
    exe = build / "apfixed_ref"
    proc = subprocess.run([CXX, *[str(o) for o in objs], "-o", str(exe)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"linking failed:\n{proc.stderr[-4000:]}")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"apfixed_ref.{os.getpid()}.tmp")
        shutil.copy2(exe, tmp)
        os.replace(tmp, cached)  # atomic: concurrent sessions never see a partial binary
        return cached
    return exe


def _double_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


class ApFixedRef:
    """Runs batches of conversions through the compiled reference (one process per batch)."""

    def __init__(self, exe: Path, assign: list[AssignCase], double: list[FixedType]):
        self.exe = exe
        self.assign_cases = assign
        self.double_types = double

    @staticmethod
    def _decode(token: str, t: FixedType) -> int:
        u = int(token, 16) & ((1 << t.width) - 1)
        if t.signed and u >> (t.width - 1):
            u -= 1 << t.width
        return u

    def _run(self, blocks: list[tuple[str, int, list[str]]]) -> list[str]:
        text = "".join(f"{op} {idx} {len(toks)}\n" + "".join(tok + "\n" for tok in toks) for op, idx, toks in blocks)
        proc = subprocess.run([str(self.exe)], input=text, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"reference failed ({proc.returncode}): {proc.stderr[-2000:]}")
        out = proc.stdout.split()
        assert len(out) == sum(len(toks) for _, _, toks in blocks)
        return out

    def assign(self, batches: list[tuple[int, list[int]]]) -> list[list[int]]:
        """[(case index, source raws)] -> destination raws per batch."""
        blocks = []
        for idx, raws in batches:
            mask = (1 << self.assign_cases[idx].src.width) - 1
            blocks.append(("A", idx, [format(v & mask, "x") for v in raws]))
        out = iter(self._run(blocks))
        return [[self._decode(next(out), self.assign_cases[idx].dst) for _ in raws] for idx, raws in batches]

    def double(self, batches: list[tuple[int, list[int]]]) -> list[list[int]]:
        """[(type index, IEEE-754 bit patterns)] -> destination raws per batch."""
        blocks = [("D", idx, [format(b, "x") for b in bits]) for idx, bits in batches]
        out = iter(self._run(blocks))
        return [[self._decode(next(out), self.double_types[idx]) for _ in bits] for idx, bits in batches]


def _make_ref(request, tmp_path_factory, name: str, assign, double) -> ApFixedRef:
    if shutil.which(CXX) is None:
        pytest.skip(f"C++ compiler {CXX!r} not found: cannot build the ap_fixed reference")
    cache = getattr(request.config, "cache", None)
    cache_root = cache.mkdir("apfixed_ref") if cache is not None else None
    exe = build_reference(assign, double, tmp_path_factory.mktemp(name), cache_root)
    return ApFixedRef(exe, assign, double)


FAST_GRID = make_cases(seed=20240611, per_combo=2, double_per_combo=1)
SLOW_GRID = make_cases(seed=7, per_combo=20, double_per_combo=6)


@pytest.fixture(scope="session")
def apfixed_ref(request, tmp_path_factory) -> ApFixedRef:
    return _make_ref(request, tmp_path_factory, "apfixed_fast", *FAST_GRID)


@pytest.fixture(scope="session")
def apfixed_ref_slow(request, tmp_path_factory) -> ApFixedRef:
    return _make_ref(request, tmp_path_factory, "apfixed_slow", *SLOW_GRID)


# --------------------------------------------------------------------------------------
# input values concentrated where the semantics are delicate
# --------------------------------------------------------------------------------------


def _dst_bases(t: FixedType) -> list[int]:
    lo, hi = t.raw_min, t.raw_max
    near = [lo, hi, lo + 1, hi - 1, lo - 1, hi + 1, 0, 1, -1, 2, -2]  # limits, one past them, around 0
    far = [2 * lo, 2 * hi + 1, (hi + 1) // 2, lo // 2, -hi, -hi - 1]  # far outside, half range, symmetric
    return near + far


def edge_raws(case: AssignCase) -> list[int]:
    src, d = case.src, case.shift
    out = {src.raw_min, src.raw_max, src.raw_min + 1, src.raw_max - 1, 0, 1, -1}
    for b in _dst_bases(case.dst):
        if d > 0:
            h = 1 << (d - 1)
            for off in (0, 1, h - 1, h, h + 1, 2 * h - 1, -1, -h, -h + 1, -h - 1):
                out.add((b << d) + off)
        else:
            for off in (-1, 0, 1):
                out.add((b >> -d) + off)
    return sorted(v for v in out if src.raw_min <= v <= src.raw_max)


def random_raws(case: AssignCase, rng: random.Random, n: int) -> list[int]:
    src = case.src
    vals = [rng.randint(src.raw_min, src.raw_max) for _ in range(n // 2)]
    span = 1 << max(0, min(src.width, case.shift + case.dst.width + 2))  # around the destination's range
    vals += [min(max(rng.randint(-span, span), src.raw_min), src.raw_max) for _ in range(n - n // 2)]
    return vals


SPECIAL_DOUBLE_BITS = [
    0x0000000000000000,  # +0
    0x8000000000000000,  # -0
    0x7FF0000000000000,  # +inf
    0xFFF0000000000000,  # -inf
    0x7FF8000000000000,  # qNaN
    0xFFF8000000000000,  # -qNaN
    0x7FF0000000000001,  # sNaN
    0x0000000000000001,  # smallest subnormal
    0x8000000000000001,
    0x000FFFFFFFFFFFFF,  # largest subnormal
    0x0010000000000000,  # smallest normal
    0x7FEFFFFFFFFFFFFF,  # largest finite
    0xFFEFFFFFFFFFFFFF,
]


def edge_doubles(t: FixedType) -> list[int]:
    """IEEE bit patterns of doubles at / around grid points, half points and range limits of t."""
    out = set(SPECIAL_DOUBLE_BITS)
    for b in _dst_bases(t):
        for k in range(-3, 4):
            try:
                x = math.ldexp(float(4 * b + k), -t.frac - 2)
            except OverflowError:
                continue
            for y in (x, math.nextafter(x, math.inf), math.nextafter(x, -math.inf)):
                out.add(_double_bits(y))
    return sorted(out)


def random_doubles(t: FixedType, rng: random.Random, n: int) -> list[int]:
    vals = [rng.getrandbits(64) for _ in range(n // 4)]  # anything, including NaN payloads
    for _ in range(n - n // 4):
        e = rng.randint(-t.frac - 8, t.integer + 8)
        try:
            vals.append(_double_bits(math.ldexp(rng.uniform(-1.0, 1.0), e)))
        except OverflowError:
            vals.append(0)
    return vals


def bits_to_float64(bits: list[int]) -> np.ndarray:
    return np.array(bits, dtype=np.uint64).view(np.float64)


# --------------------------------------------------------------------------------------
# comparison helpers
# --------------------------------------------------------------------------------------


@pytest.fixture(params=["numpy", "numba"])
def backend(request, monkeypatch):
    """Run a test once with the numpy code and once with the fused numba kernels forced on."""
    if request.param == "numba":
        assert fixed._kernels() is not None, "numba kernels unavailable"
        monkeypatch.setattr(fixed, "NUMBA_MIN_SIZE", 0)
    else:
        monkeypatch.setattr(fixed, "NUMBA_MIN_SIZE", 1 << 62)
    return request.param


def _mismatch_report(what: str, inputs, got: np.ndarray, exp: np.ndarray, limit: int = 12) -> str:
    bad = np.flatnonzero(got != exp)
    lines = [f"{what}: {bad.size}/{exp.size} mismatches"]
    for i in bad[:limit]:
        lines.append(f"  input {inputs[i]!r}: got {int(got[i])}, ap_fixed gives {int(exp[i])}")
    return "\n".join(lines)


def check_assign_batches(ref: ApFixedRef, batches: list[tuple[int, list[int]]]) -> None:
    results = ref.assign(batches)
    failures = []
    for (idx, raws), exp_list in zip(batches, results):
        case = ref.assign_cases[idx]
        got = requantize(np.array(raws, dtype=case.src.dtype()), case.src.frac, case.dst)
        exp = np.array(exp_list, dtype=case.dst.raw_dtype)
        assert got.dtype == case.dst.raw_dtype, (str(case), got.dtype)
        assert got.shape == exp.shape
        if not np.array_equal(got, exp):
            failures.append(_mismatch_report(str(case), raws, got, exp))
    assert not failures, f"{len(failures)} conversions differ from ap_fixed:\n" + "\n".join(failures[:10])


def check_double_batches(ref: ApFixedRef, batches: list[tuple[int, list[int]]]) -> None:
    results = ref.double(batches)
    failures = []
    for (idx, bits), exp_list in zip(batches, results):
        t = ref.double_types[idx]
        x = bits_to_float64(bits)
        got = from_float(x, t)
        exp = np.array(exp_list, dtype=t.raw_dtype)
        assert got.dtype == t.raw_dtype
        if not np.array_equal(got, exp):
            failures.append(_mismatch_report(f"double -> {t.to_hls()}", [float(v) for v in x], got, exp))
    assert not failures, f"{len(failures)} double conversions differ from ap_fixed:\n" + "\n".join(failures[:10])


# --------------------------------------------------------------------------------------
# tests against the C++ reference
# --------------------------------------------------------------------------------------


# raw (value * 2) -> expected ap_fixed<8,8,Q,AP_SAT> for the 7 modes, the brief's definitions
KAT_VALUES = [5, -5, 3, -3, 1, -1, 7, -7, 2, -2, 0, 255, -257, 256]  # x2: 2.5, -2.5, 1.5, ...
KAT_EXPECTED = {
    #               2.5 -2.5 1.5 -1.5 .5  -.5 3.5 -3.5 1  -1  0  127.5 -128.5 128
    "TRN": [2, -3, 1, -2, 0, -1, 3, -4, 1, -1, 0, 127, -128, 127],
    "TRN_ZERO": [2, -2, 1, -1, 0, 0, 3, -3, 1, -1, 0, 127, -128, 127],
    "RND": [3, -2, 2, -1, 1, 0, 4, -3, 1, -1, 0, 127, -128, 127],
    "RND_ZERO": [2, -2, 1, -1, 0, 0, 3, -3, 1, -1, 0, 127, -128, 127],
    "RND_INF": [3, -3, 2, -2, 1, -1, 4, -4, 1, -1, 0, 127, -128, 127],
    "RND_MIN_INF": [2, -3, 1, -2, 0, -1, 3, -4, 1, -1, 0, 127, -128, 127],
    "RND_CONV": [2, -2, 2, -2, 0, 0, 4, -4, 1, -1, 0, 127, -128, 127],
}


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_rounding_known_answers(apfixed_ref, mode, backend):
    """Ties and near-ties: the documented meaning of each mode, from both implementations."""
    idx = ROUNDING_MODES.index(mode)  # the first anchors, in both lists
    case = apfixed_ref.assign_cases[idx]
    assert case.dst == FixedType(8, 8, True, mode, "SAT") and case.src == KAT_SRC
    src_raws = [v << (KAT_SRC.frac - 1) for v in KAT_VALUES]
    (from_cpp,) = apfixed_ref.assign([(idx, src_raws)])
    assert from_cpp == KAT_EXPECTED[mode]
    assert requantize(np.array(KAT_VALUES), 1, case.dst).tolist() == KAT_EXPECTED[mode]
    (from_cpp_d,) = apfixed_ref.double([(idx, [_double_bits(v / 2) for v in KAT_VALUES])])
    assert from_cpp_d == KAT_EXPECTED[mode]
    assert from_float(np.array(KAT_VALUES) / 2, case.dst).tolist() == KAT_EXPECTED[mode]


def test_requantize_sweep_vs_apfixed(apfixed_ref, backend):
    """Every compiled conversion, with edge values (range limits, ties +-1, carries) and random ones."""
    rng = random.Random(1)
    batches = [(i, edge_raws(c) + random_raws(c, rng, 48)) for i, c in enumerate(apfixed_ref.assign_cases)]
    check_assign_batches(apfixed_ref, batches)


def test_from_float_sweep_vs_apfixed(apfixed_ref, backend):
    rng = random.Random(2)
    batches = [(i, edge_doubles(t) + random_doubles(t, rng, 64)) for i, t in enumerate(apfixed_ref.double_types)]
    check_double_batches(apfixed_ref, batches)


def _raw_strategy(case: AssignCase):
    return st.one_of(st.sampled_from(edge_raws(case)), st.integers(case.src.raw_min, case.src.raw_max))


def hypo(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


def _hypothesis_assign(ref: ApFixedRef, data) -> None:
    idx = data.draw(st.integers(0, len(ref.assign_cases) - 1), label="case index")
    case = ref.assign_cases[idx]
    raws = data.draw(st.lists(_raw_strategy(case), min_size=1, max_size=48), label=str(case))
    check_assign_batches(ref, [(idx, raws)])


def _hypothesis_double(ref: ApFixedRef, data) -> None:
    idx = data.draw(st.integers(0, len(ref.double_types) - 1), label="type index")
    t = ref.double_types[idx]
    finite = st.floats(allow_nan=False, allow_infinity=False).map(_double_bits)
    exps = st.integers(-t.frac - 4, t.integer + 4)
    scaled = st.builds(lambda m, e: _double_bits(math.ldexp(m, e)), st.floats(-1, 1), exps)
    anything = st.integers(0, 2**64 - 1)
    bits = data.draw(
        st.lists(st.one_of(st.sampled_from(edge_doubles(t)), scaled, finite, anything), min_size=1, max_size=48),
        label=t.to_hls(),
    )
    check_double_batches(ref, [(idx, bits)])


@hypo(100)
@given(data=st.data())
def test_requantize_hypothesis_vs_apfixed(apfixed_ref, backend, data):
    _hypothesis_assign(apfixed_ref, data)


@hypo(60)
@given(data=st.data())
def test_from_float_hypothesis_vs_apfixed(apfixed_ref, backend, data):
    _hypothesis_double(apfixed_ref, data)


@pytest.mark.slow
def test_sweep_vs_apfixed_large_grid(apfixed_ref_slow, backend):
    rng = random.Random(3)
    ref = apfixed_ref_slow
    check_assign_batches(ref, [(i, edge_raws(c) + random_raws(c, rng, 400)) for i, c in enumerate(ref.assign_cases)])
    check_double_batches(ref, [(i, edge_doubles(t) + random_doubles(t, rng, 400)) for i, t in enumerate(ref.double_types)])


@pytest.mark.slow
@hypo(1500)
@given(data=st.data())
def test_requantize_hypothesis_vs_apfixed_large(apfixed_ref_slow, backend, data):
    _hypothesis_assign(apfixed_ref_slow, data)


@pytest.mark.slow
@hypo(800)
@given(data=st.data())
def test_from_float_hypothesis_vs_apfixed_large(apfixed_ref_slow, backend, data):
    _hypothesis_double(apfixed_ref_slow, data)


# --------------------------------------------------------------------------------------
# internal consistency over arbitrary types (no compiler needed)
# --------------------------------------------------------------------------------------


@st.composite
def fixed_types(draw, max_width: int = 64):
    w = draw(st.integers(1, max_width))
    o = draw(st.sampled_from(OVERFLOW_MODES))
    n = draw(st.integers(0, w)) if draw(st.booleans()) else 0
    return FixedType(
        width=w,
        integer=draw(st.integers(-80, 150)),
        signed=draw(st.booleans()),
        rounding=draw(st.sampled_from(ROUNDING_MODES)),
        overflow=o,
        sat_bits=n,
    )


def _near_boundaries(t: FixedType, d: int):
    """Strategy of int64 raws near t's limits / ties after a shift by d."""
    cands = set()
    for b in _dst_bases(t):
        if d > 0:
            h = 1 << (d - 1)
            cands.update((b << d) + off for off in (0, 1, -1, h, h - 1, h + 1, -h))
        else:
            cands.update((b >> -d) + off for off in (-1, 0, 1))
    cands = sorted(v for v in cands if fixed._I64_MIN <= v <= fixed._I64_MAX)
    return st.sampled_from(cands) if cands else st.just(0)


@hypo(200)
@given(data=st.data(), t=fixed_types(), src_frac=st.integers(-100, 200))
def test_int64_fast_path_matches_exact_python_ints(backend, data, t, src_frac):
    d = src_frac - t.frac
    any_i64 = st.integers(fixed._I64_MIN, fixed._I64_MAX)
    raws = data.draw(st.lists(st.one_of(any_i64, st.integers(-1000, 1000), _near_boundaries(t, d)), min_size=1, max_size=40))
    got = requantize(np.array(raws, dtype=np.int64), src_frac, t)
    exp = np.array([fixed._requantize_int(v, d, t) for v in raws], dtype=t.raw_dtype)
    assert got.dtype == t.raw_dtype
    assert np.array_equal(got, exp), _mismatch_report(f"{t} shift {d}", raws, got, exp)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), t=fixed_types())
def test_per_element_shift_path_matches_exact(data, t):
    n = data.draw(st.integers(1, 30))
    raws = data.draw(st.lists(st.integers(fixed._I64_MIN, fixed._I64_MAX) | st.integers(-70, 70), min_size=n, max_size=n))
    shifts = data.draw(st.lists(st.integers(-90, 90), min_size=n, max_size=n))
    got = fixed._requantize_var(np.array(raws, dtype=np.int64), np.array(shifts, dtype=np.int64), t)
    exp = np.array([fixed._requantize_int(v, d, t) for v, d in zip(raws, shifts)], dtype=t.raw_dtype)
    assert np.array_equal(got, exp), _mismatch_report(str(t), list(zip(raws, shifts)), got, exp)


@hypo(120)
@given(t=fixed_types(), xs=st.lists(st.floats(), min_size=1, max_size=30), scale=st.integers(-70, 70))
def test_from_float_fast_path_matches_bit_decoding(backend, t, xs, scale):
    with np.errstate(all="ignore"):
        x = np.ldexp(np.array(xs, dtype=np.float64), scale - t.frac)  # concentrate values near t's grid
        x = np.concatenate([x, np.round(x * 2) / 2, np.floor(x)])
    got = from_float(x, t)
    exp = fixed._from_float_bits(x.copy(), t)
    assert np.array_equal(got, exp), _mismatch_report(str(t), x.tolist(), got, exp)


@settings(max_examples=100, deadline=None)
@given(t=fixed_types(max_width=53), data=st.data())
def test_to_float_roundtrip(t, data):
    raws = data.draw(st.lists(st.integers(t.sat_min, t.raw_max), min_size=1, max_size=20))  # SAT_SYM never yields raw_min
    raw = np.array(raws, dtype=t.raw_dtype)
    x = to_float(raw, t)
    assume(np.all(np.isfinite(x)) and np.all((x == 0) == (raw == 0)))  # no float under/overflow
    assert np.array_equal(from_float(x, t), raw)
    assert [math.ldexp(float(v), -t.frac) for v in raws] == x.tolist()


def test_numba_and_numpy_agree_on_large_arrays(monkeypatch):
    """Default dispatch (numba for big arrays) vs the numpy code, every mode, several shifts."""
    assert fixed._kernels() is not None
    rng = np.random.default_rng(5)
    n = fixed.NUMBA_MIN_SIZE + 7
    a = np.concatenate([rng.integers(fixed._I64_MIN, fixed._I64_MAX, n, dtype=np.int64, endpoint=True),
                        rng.integers(-5000, 5000, n), np.array([fixed._I64_MIN, fixed._I64_MAX, 0, -1, 1])])
    x = np.concatenate([rng.normal(scale=40.0, size=n), np.round(rng.normal(scale=300.0, size=n)) / 8])
    cases = []
    for signed in (True, False):
        for q in ROUNDING_MODES:
            for o in OVERFLOW_MODES:
                for w, i in ((1, 1), (8, 3), (16, 6), (33, -2), (63, 70), (64, 20)):
                    cases.append(FixedType(w, i, signed, q, o))
    got_nb = {}
    for t in cases:
        got_nb[t] = [requantize(a, sf, t) for sf in (t.frac + 1, t.frac + 9, t.frac + 63, t.frac + 64, t.frac + 90)]
        got_nb[t].append(from_float(x, t))
    monkeypatch.setattr(fixed, "NUMBA_MIN_SIZE", 1 << 62)
    for t in cases:
        exp = [requantize(a, sf, t) for sf in (t.frac + 1, t.frac + 9, t.frac + 63, t.frac + 64, t.frac + 90)]
        exp.append(from_float(x, t))
        for g, e in zip(got_nb[t], exp):
            assert g.dtype == e.dtype == t.raw_dtype and np.array_equal(g, e), t


# --------------------------------------------------------------------------------------
# array handling
# --------------------------------------------------------------------------------------


def test_shapes_and_dtypes():
    t = FixedType(16, 6, True, "RND", "SAT")
    raw = np.arange(-(1 << 20), 1 << 20, 4096, dtype=np.int64).reshape(-1, 2)[:, ::-1]  # non-contiguous
    got = requantize(raw, 20, t)
    assert got.shape == raw.shape and got.dtype == np.int64
    assert np.array_equal(got, requantize(raw.copy(), 20, t))
    assert requantize(np.int64(5), 1, t).shape == ()
    assert requantize(7, 1, t) == 7 << 9
    assert requantize(np.array([], dtype=np.int32), 3, t).shape == (0,)
    for dt in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.uint64, bool):
        vals = np.array([0, 1, 3, 100], dtype=dt)
        assert np.array_equal(requantize(vals, 2, t), requantize(vals.astype(np.int64), 2, t))
    with pytest.raises(TypeError):
        requantize(np.array([1.5]), 2, t)
    # the input is never modified
    before = raw.copy()
    for q in ROUNDING_MODES:
        for o in OVERFLOW_MODES:
            requantize(raw, 20, FixedType(8, 2, True, q, o, 2 if o == "WRAP" else 0))
            requantize(raw, -3, FixedType(8, 2, True, q, o))
    assert np.array_equal(raw, before)


def test_uint64_and_python_int_sources():
    u64 = FixedType(64, 64, False)
    big = np.array([2**64 - 1, 2**63, 2**63 - 1, 0], dtype=np.uint64)
    assert requantize(big, 0, u64).tolist() == big.tolist()
    assert requantize(big, 0, u64).dtype == np.uint64
    assert requantize(big, 1, FixedType(64, 64, False, "RND")).tolist() == [2**63, 2**62, 2**62, 0]
    assert requantize(big, 1, FixedType(63, 63, False, "RND")).tolist() == [0, 2**62, 2**62, 0]  # 2**63 wraps
    assert requantize(big, 1, FixedType(63, 63, False, "RND", "SAT")).tolist() == [2**63 - 1, 2**62, 2**62, 0]
    assert requantize(big, 0, FixedType(64, 64, True, "TRN", "SAT")).tolist() == [2**63 - 1] * 3 + [0]
    huge = np.array([3 * 2**100 + 2**99, -(2**100)], dtype=object)
    assert requantize(huge, 100, FixedType(8, 8, True, "RND")).tolist() == [4, -1]
    assert requantize(huge, 0, FixedType(8, 8, True, "TRN", "SAT")).tolist() == [127, -128]
    assert requantize(np.array([5, -5], dtype=object), 1, FixedType(8, 8, True, "RND")).tolist() == [3, -2]
    with pytest.raises(TypeError):
        requantize(np.array([1.0], dtype=object), 0, u64)
    # left shifts far beyond 64 bits
    assert requantize(np.array([1, -1, 0]), 0, FixedType(8, -100)).tolist() == [0, 0, 0]
    assert requantize(np.array([1, -1, 0]), -200, FixedType(8, 4, True, "TRN", "SAT")).tolist() == [127, -128, 0]


def _anchor_index(case: AssignCase) -> int:
    return ASSIGN_ANCHORS.index(case)


def _both(ref: ApFixedRef, case: AssignCase, raws: list[int]) -> list[int]:
    """requantize result, after asserting the C++ reference agrees."""
    (cpp,) = ref.assign([(_anchor_index(case), raws)])
    py = requantize(np.array(raws), case.src.frac, case.dst).tolist()
    assert py == cpp, (str(case), raws, py, cpp)
    return py


def test_overflow_modes_known_answers(apfixed_ref, backend):
    # 200, -200, 127, -128 into ap_(u)fixed<8,8,AP_TRN,O>
    for signed, o, exp in [
        (True, "WRAP", [-56, 56, 127, -128]),
        (True, "SAT", [127, -128, 127, -128]),
        (True, "SAT_ZERO", [0, 0, 127, -128]),
        (True, "SAT_SYM", [127, -127, 127, -127]),
        (False, "WRAP", [200, 56, 127, 128]),
        (False, "SAT", [200, 0, 127, 0]),
        (False, "SAT_ZERO", [200, 0, 127, 0]),
        (False, "SAT_SYM", [200, 0, 127, 0]),
    ]:
        case = AssignCase(INT_SRC, FixedType(8, 8, signed, "TRN", o))
        assert _both(apfixed_ref, case, [200, -200, 127, -128]) == exp, (signed, o)
    # rounding carries past the top, then the overflow mode applies: 127.5 -> 128 with RND
    half = 1 << (KAT_SRC.frac - 1)
    for o, exp in (("WRAP", [-128]), ("SAT", [127]), ("SAT_ZERO", [0])):
        assert _both(apfixed_ref, AssignCase(KAT_SRC, FixedType(8, 8, True, "RND", o)), [255 * half]) == exp
    # AP_WRAP with N saturation bits: overflow forces 0 1..1 / 1 0..0 (signed), 1..1 (unsigned)
    wrap2 = [AssignCase(INT_SRC, FixedType(8, 8, s, "TRN", "WRAP", 2)) for s in (True, False)]
    assert _both(apfixed_ref, wrap2[0], [200, -200]) == [64 + 8, -128 + 56]
    assert _both(apfixed_ref, wrap2[1], [300, -1]) == [192 + 44, 255]
    # one-bit signed SAT_SYM: no symmetric negative code exists; the header yields -1 (= plain SAT)
    assert _both(apfixed_ref, AssignCase(INT_SRC, FixedType(1, 1, True, "TRN", "SAT_SYM")), [-5, 5, -1]) == [-1, 0, -1]


def test_from_float_header_quirks(apfixed_ref, backend):
    """+-inf behave like +-2**1024, NaN like a huge value of its sign bit, and subnormals are decoded
    with the implicit bit set (1.m * 2**-1023) -- visible only with ~1000+ fractional bits."""
    t16 = DOUBLE_ANCHORS.index(FixedType(16, 6, True, "RND", "SAT"))
    tiny = DOUBLE_ANCHORS.index(FixedType(8, -1070, True, "RND", "SAT"))
    specials = [0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000, 0xFFF8000000000000, 0x8000000000000000]
    cpp16, cpp_tiny = apfixed_ref.double([(t16, specials), (tiny, [0x0000000000000001, 0x0010000000000000])])
    assert cpp16 == [32767, -32768, 32767, -32768, 0]
    assert from_float(bits_to_float64(specials), DOUBLE_ANCHORS[t16]).tolist() == cpp16
    # 2**-1074 is 16 at frac 1078, but the header reads it as ~2**-1023 -> saturates; 2**-1022 -> 2**56 saturates too
    assert cpp_tiny == [127, 127]
    assert from_float(bits_to_float64([1, 0x0010000000000000]), DOUBLE_ANCHORS[tiny]).tolist() == cpp_tiny


# --------------------------------------------------------------------------------------
# type parsing / hls4ml interop
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ap_fixed<16,6>", FixedType(16, 6)),
        ("  ap_fixed < 16 , 6 , AP_RND , AP_SAT >  ", FixedType(16, 6, True, "RND", "SAT")),
        ("ap_ufixed<8,0,AP_RND_CONV,AP_SAT_SYM>", FixedType(8, 0, False, "RND_CONV", "SAT_SYM")),
        ("ap_fixed<12,4,AP_TRN,AP_WRAP,2>", FixedType(12, 4, True, "TRN", "WRAP", 2)),
        ("ap_fixed<8,10>", FixedType(8, 10)),
        ("ap_fixed<4,-3,AP_RND_ZERO>", FixedType(4, -3, True, "RND_ZERO")),
        ("ap_int<8>", FixedType(8, 8)),
        ("ap_uint<4>", FixedType(4, 4, False)),
        ("fixed<16,6,RND,SAT,0>", FixedType(16, 6, True, "RND", "SAT")),
        ("ufixed<8,-2,TRN_ZERO,SAT_ZERO,0>", FixedType(8, -2, False, "TRN_ZERO", "SAT_ZERO")),
        ("fixed<16, 6>", FixedType(16, 6)),
        ("int<8>", FixedType(8, 8)),
        ("uint<1>", FixedType(1, 1, False)),
        ("ap_fixed<64,64,ap_rnd_inf,ap_sat>", FixedType(64, 64, True, "RND_INF", "SAT")),
    ],
)
def test_parse(text, expected):
    t = FixedType.parse(text)
    assert t == expected
    assert FixedType.parse(t.to_hls()) == t


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ap_fixed",
        "ap_fixed<16>",
        "ap_fixed<16,6,AP_FOO>",
        "ap_fixed<16,6,AP_RND,AP_WRAP_SM>",
        "ap_fixed<0,0>",
        "ap_fixed<65,6>",
        "ap_int<8,4>",
        "ac_fixed<16,6,true>",
        "ap_fixed<16,6,AP_RND,AP_SAT,0,1>",
        "ap_fixed<a,b>",
        "ap_fixed<16,6,,AP_SAT>",
        "ap_fixed<8,4,AP_TRN,AP_WRAP,9>",
        "float",
        "ap_fixed<16,6>>",
    ],
)
def test_parse_rejects(text):
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        FixedType.parse(text)


def test_to_hls_canonical():
    assert FixedType(16, 6).to_hls() == "ap_fixed<16,6>"
    assert FixedType(16, 6, rounding="AP_RND").to_hls() == "ap_fixed<16,6,AP_RND>"
    assert FixedType(16, 6, overflow="SAT").to_hls() == "ap_fixed<16,6,AP_TRN,AP_SAT>"
    assert FixedType(8, 0, False, "RND_CONV", "SAT_SYM").to_hls() == "ap_ufixed<8,0,AP_RND_CONV,AP_SAT_SYM>"
    assert FixedType(12, 4, True, "TRN", "WRAP", 2).to_hls() == "ap_fixed<12,4,AP_TRN,AP_WRAP,2>"
    assert str(FixedType(8, 8)) == "ap_fixed<8,8>"


def test_fixedtype_validation_and_properties():
    t = FixedType(16, 6, True, "rnd", "ap_sat")
    assert (t.rounding, t.overflow, t.frac, t.raw_min, t.raw_max) == ("RND", "SAT", 10, -32768, 32767)
    u = FixedType(8, -2, False)
    assert (u.frac, u.raw_min, u.raw_max, u.lsb, u.max_value) == (10, 0, 255, 2**-10, 255 * 2**-10)
    assert FixedType(64, 64, False).raw_max == 2**64 - 1 and FixedType(64, 64, False).raw_dtype == np.uint64
    for bad in [dict(width=0, integer=0), dict(width=65, integer=1), dict(width=8, integer=1, rounding="RNDX"),
                dict(width=8, integer=1, overflow="WRAP_SM"), dict(width=8, integer=1, sat_bits=9),
                dict(width=8.0, integer=1), dict(width=True, integer=1), dict(width=8, integer=1, signed=1)]:
        with pytest.raises(ValueError):
            FixedType(**bad)
    with pytest.raises(AttributeError):
        t.width = 3  # frozen
    assert hash(FixedType(8, 8, True, "AP_RND")) == hash(FixedType(8, 8, True, "RND"))


def test_from_hls4ml_objects():
    from hls4ml.backends.fpga.fpga_backend import FPGABackend
    from hls4ml.model import types as ht

    p = ht.FixedPrecisionType(16, 6, True, ht.RoundingMode.RND, ht.SaturationMode.SAT)
    assert str(p) == "fixed<16,6,RND,SAT,0>"
    assert FixedType.from_hls4ml(p) == FixedType(16, 6, True, "RND", "SAT")
    assert FixedType.from_hls4ml(ht.FixedPrecisionType()) == FixedType(16, 6)
    assert FixedType.from_hls4ml(ht.FixedPrecisionType(8, 3, False, "AP_RND_CONV", "AP_SAT_SYM", 0)) == FixedType(
        8, 3, False, "RND_CONV", "SAT_SYM"
    )
    assert FixedType.from_hls4ml(ht.IntegerPrecisionType(8, False)) == FixedType(8, 8, False)
    assert FixedType.from_hls4ml(ht.XnorPrecisionType()) == FixedType(1, 1, False)
    assert FixedType.from_hls4ml(ht.ExponentPrecisionType(4, True)) == FixedType(4, 4, True)
    assert FixedType.from_hls4ml("ap_fixed<8,3,AP_RND>") == FixedType(8, 3, True, "RND")
    assert FixedType.from_hls4ml(FPGABackend.convert_precision_string("ap_ufixed<10,2,AP_RND,AP_SAT,3>")) == FixedType(
        10, 2, False, "RND", "SAT", 3
    )
    for bad in (ht.FloatPrecisionType(), ht.StandardFloatPrecisionType(), ht.UnspecifiedPrecisionType(), 3.0):
        with pytest.raises(ValueError):
            FixedType.from_hls4ml(bad)
    # functions accept hls4ml objects / strings for the type argument too
    assert requantize(np.array([5]), 1, p).tolist() == [5 << 9]
    assert from_float(np.array([2.5]), "ap_fixed<8,8,AP_RND_CONV>").tolist() == [2]


@settings(max_examples=150, deadline=None)
@given(t=fixed_types())
def test_text_and_hls4ml_roundtrips(t):
    from hls4ml.backends.fpga.fpga_backend import FPGABackend

    assert FixedType.parse(t.to_hls()) == t
    p = t.to_hls4ml()
    assert FixedType.from_hls4ml(p) == t
    assert FixedType.parse(str(p)) == t  # hls4ml's own "fixed<W,I,Q,O,N>" spelling
    assert FixedType.from_hls4ml(FPGABackend.convert_precision_string(t.to_hls())) == t
    assert FixedType.parse(" " + t.to_hls().replace(",", " , ").replace("<", " < ") + " ") == t
