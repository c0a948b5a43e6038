"""Map QKeras-style fixed-point specs onto HGQ2 quantizer configurations.

QKeras ``quantized_bits(bits, integer, keep_negative)`` has ``bits`` total bits including the sign
and ``integer`` integer bits excluding it; HGQ2's KBI parametrisation counts bits *excluding* the
sign (b) and integer bits excluding the sign (i), with k the sign flag. So k = signed,
b = bits - k, i = integer, and the fractional bits are b - i. In ``fixed`` mode the widths are
non-trainable; in ``learned`` mode they start there and are trained under the EBOPs term.
"""

from __future__ import annotations

from hgq.config import QuantizerConfig

from trigger_ml.models.config import Quantization, QuantSpec


def qconf(spec: QuantSpec, place: str, learned: bool = False) -> QuantizerConfig:
    """HGQ2 KBI quantizer config for ``spec`` at ``place`` ('weight', 'bias', 'datalane')."""
    k = int(spec.signed)
    kw = dict(
        k0=bool(k), b0=spec.bits - k, i0=spec.integer, round_mode=spec.rounding, overflow_mode=spec.overflow,
        trainable=learned, bc=None, br=None, ir=None, ic=None,
    )
    if place == "datalane":
        kw["i_decay_speed"] = -1 if not learned else 0.01
    return QuantizerConfig("kbi", place, **kw)


def exact_input_conf(width: int, integer: int, signed: bool = True) -> QuantizerConfig:
    """Input quantizer for values already exactly representable in ``ap_fixed<width, integer>``.

    ``integer`` counts the sign bit here (hls4ml/ap_fixed convention).
    """
    k = int(signed)
    return QuantizerConfig(
        "kbi", "datalane", k0=bool(k), b0=width - k, i0=integer - k, round_mode="TRN", overflow_mode="WRAP",
        trainable=False, bc=None, br=None, ir=None, ic=None, i_decay_speed=-1,
    )


class LayerQuant:
    """Per-layer quantizer factory honouring ``Quantization.layers`` overrides."""

    def __init__(self, q: Quantization, quantized: bool = True) -> None:
        self.q = q
        self.learned = q.mode == "learned"
        self.quantized = quantized

    def _spec(self, layer: str, what: str) -> QuantSpec:
        return self.q.layers.get(layer, {}).get(what) or getattr(self.q, what)

    def dense_kwargs(self, layer: str, with_iq: bool = True) -> dict:
        """kq/bq/iq configs and beta for a QDense-like layer named ``layer``."""
        kw = dict(
            kq_conf=qconf(self._spec(layer, "weight"), "weight", self.learned),
            bq_conf=qconf(self._spec(layer, "bias"), "bias", self.learned),
            beta0=self.q.beta if self.learned else 0.0,
            name=layer,
        )
        if with_iq:
            kw["iq_conf"] = qconf(self._spec(layer, "activation"), "datalane", self.learned)
        return kw

    def act_conf(self, layer: str, signed: bool | None = None) -> QuantizerConfig:
        spec = self._spec(layer, "activation")
        if signed is not None:
            spec = spec.model_copy(update={"signed": signed})
        return qconf(spec, "datalane", self.learned)

    def score_conf(self, signed: bool = True) -> QuantizerConfig:
        return qconf(self.q.score.model_copy(update={"signed": signed}), "datalane", False)
