"""Build the FirmwareModel IR from a converted hls4ml ``ModelGraph`` (the deployment truth).

Only this module of the IR imports hls4ml, lazily inside :func:`from_hls_model`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from trigger_ml.core.errors import UnsupportedLayerError
from trigger_ml.core.fixed import FixedType, from_float
from trigger_ml.ir.model import FirmwareModel, Layer, TensorSpec
from trigger_ml.ir.tables import _ceillog2, _softmax_tables, build_tables

# ----------------------------------------------------------------------------------------------
# from hls4ml
# ----------------------------------------------------------------------------------------------


def _ft(precision, where: str) -> FixedType:
    try:
        return FixedType.from_hls4ml(precision)
    except ValueError as exc:
        raise UnsupportedLayerError(f"{where}: unsupported precision {precision!r}: {exc}") from None


def _check_plain_fixed(precision, where: str) -> None:
    from hls4ml.model import types as ht

    if isinstance(precision, (ht.XnorPrecisionType, ht.ExponentPrecisionType)):
        raise UnsupportedLayerError(f"{where}: {type(precision).__name__} (binary / power-of-two) is not supported")


def _weights_raw(node, key: str) -> tuple[np.ndarray, FixedType]:
    """The raw integers the C-sim loads: hls4ml's decimal text (weights/*.txt), cast to the type."""
    var = node.get_weights(key)
    prec = var.type.precision
    where = f"layer {node.name!r} ({node.class_name}) {key}"
    _check_plain_fixed(prec, where)
    t = _ft(prec, where)
    text = list(iter(var))
    vals = np.array([float(s) for s in text], dtype=np.float64)
    raw = from_float(vals, t).astype(np.int64).reshape(np.asarray(var.data).shape)
    return raw, t


def _node_type(node, key: str) -> FixedType:
    t = node.types.get(key) if hasattr(node, "types") else None
    if t is None:
        t = node.get_attr(key)
    if t is None:
        raise UnsupportedLayerError(f"layer {node.name!r} ({node.class_name}) has no {key}")
    prec = getattr(t, "precision", t)
    _check_plain_fixed(prec, f"layer {node.name!r} {key}")
    return _ft(prec, f"layer {node.name!r} ({node.class_name}) {key}")


def _attr(node, key, default=None):
    v = node.get_attr(key, default)
    return default if v is None else v


def _config_cpp(node) -> str:
    """The C++ config struct hls4ml generated for this node (set by the backend template passes)."""
    cfg = node.get_attr("config_cpp", None)
    return str(cfg) if cfg else ""


def _parse_cfg_int(cfg: str, key: str) -> int | None:
    m = re.search(rf"\b{key}\s*=\s*(-?\d+)\s*;", cfg)
    return int(m.group(1)) if m else None


def _parse_cfg_typedef(cfg: str, role: str, node) -> FixedType | None:
    m = re.search(rf"typedef\s+([^;]+?)\s+{role}\s*;", cfg)
    if not m:
        return None
    rhs = m.group(1).strip()
    for nt in node.types.values():
        if getattr(nt, "name", None) == rhs:
            return _ft(nt.precision, f"layer {node.name!r} {role}")
    try:
        return FixedType.parse(rhs)
    except ValueError:
        return None


def _out_type(node) -> FixedType:
    prec = node.get_output_variable().type.precision
    where = f"layer {node.name!r} ({node.class_name}) result_t"
    _check_plain_fixed(prec, where)
    return _ft(prec, where)


def _out_shape(node) -> tuple[int, ...]:
    return tuple(int(s) for s in node.get_output_variable().shape)


def _in_shape(node, i: int = 0) -> tuple[int, ...]:
    return tuple(int(s) for s in node.get_input_variable(node.inputs[i]).shape)


def _unsupported(node, why: str = "") -> UnsupportedLayerError:
    msg = f"unsupported hls4ml layer {node.name!r} of class {type(node).__name__} ({node.class_name})"
    return UnsupportedLayerError(msg + (f": {why}" if why else ""))


def from_hls_model(hls_model, *, score_output: str | None = None, threshold: int | float | None = None, score_index: int = 0) -> FirmwareModel:
    """Build the FirmwareModel of a converted hls4ml ``ModelGraph`` (io_parallel, Latency strategy).

    ``score_output`` names the output (= producing layer) holding the anomaly score; ``threshold`` is
    a raw integer of that output's type (a float is converted with truncation)."""
    from hls4ml.model import layers as hl

    cfg = hls_model.config
    io_type = cfg.get_config_value("IOType")
    if io_type != "io_parallel":
        raise UnsupportedLayerError(f"only io_parallel firmware can be emulated, this model uses {io_type}")
    from hls4ml.model.optimizer.passes.hgq_proxy_model import (
        FixedPointQuantizer,
        UnaryLUT,
    )

    layers: list[Layer] = []
    by_name: dict[str, Layer] = {}
    # hls4ml names a node's inputs and the model's inputs/outputs by *output-variable* name (the
    # Keras front end uses the layer name, the ONNX front end e.g. ``MatMul_0_out0`` for layer
    # ``Dense_MatMul_0`` and ``global_out`` for the model output): variable name -> producing layer
    var_to_layer: dict[str, str] = {}
    for node in hls_model.get_layers():
        lay = _convert_node(node, hl, FixedPointQuantizer, UnaryLUT, by_name,
                            _resolve_inputs(node, hl, var_to_layer, layers))
        layers.append(lay)
        by_name[lay.name] = lay
        var_to_layer.setdefault(lay.name, lay.name)
        for var in getattr(node, "outputs", None) or ():
            if var:
                var_to_layer[str(var)] = lay.name

    def producer(var: str, what: str) -> Layer:
        name = var_to_layer.get(var)
        if name is None:
            raise UnsupportedLayerError(f"model {what} {var!r} is not produced by any layer of the hls4ml graph")
        return by_name[name]

    inputs = []
    for var in hls_model.inputs:
        lay = producer(var, "input")
        inputs.append(TensorSpec(lay.name, lay.shape, lay.type))
    outputs = []
    for var in hls_model.outputs:
        lay = producer(var, "output")
        outputs.append(TensorSpec(lay.name, lay.shape, lay.type))

    try:
        import hls4ml

        version = getattr(hls4ml, "__version__", "")
    except Exception:  # pragma: no cover
        version = ""
    meta = {
        "hls4ml_version": str(version),
        "backend": str(cfg.get_config_value("Backend") or cfg.backend.name),
        "io_type": str(io_type),
        "project_name": str(cfg.get_project_name()),
    }
    fm = FirmwareModel(
        name=str(cfg.get_project_name()),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        layers=tuple(_prune_unused(layers, [o.name for o in outputs])),
        meta=meta,
    )
    if score_output is not None or threshold is not None:
        fm = fm.with_score(score_output, score_index, threshold)
    return fm


def _resolve_inputs(node, hl, var_to_layer: Mapping[str, str], done: Sequence[Layer]) -> tuple[str, ...]:
    """The producing layers of ``node``'s inputs (hls4ml lists output-variable names).

    An empty name (the ONNX front end leaves one on some Reshape/Flatten nodes) means the
    preceding layer, as hls4ml's own graph wiring does for a node without named inputs."""
    if isinstance(node, hl.Input):
        return ()
    out = []
    for var in node.inputs:
        var = str(var) if var is not None else ""
        if not var:
            if not done:
                raise _unsupported(node, "empty input name on the first layer")
            out.append(done[-1].name)
            continue
        name = var_to_layer.get(var)
        if name is None:
            raise _unsupported(node, f"input {var!r} is not produced by a preceding layer")
        out.append(name)
    return tuple(out)


def _prune_unused(layers: list[Layer], outputs: Sequence[str]) -> list[Layer]:
    """Drop layers whose values never reach an output (hls4ml keeps e.g. duplicated quantizers)."""
    needed = set(outputs)
    for layer in reversed(layers):
        if layer.name in needed:
            needed.update(layer.inputs)
    return [layer for layer in layers if layer.name in needed or layer.kind == "input"]


def _convert_node(node, hl, FixedPointQuantizer, UnaryLUT, by_name: Mapping[str, Layer],  # noqa: C901
                  inputs: tuple[str, ...]) -> Layer:
    name = node.name
    hls_class = type(node).__name__
    shape = _out_shape(node)

    def mk(kind, type_=None, types=None, params=None, arrays=None, shape_=None):
        return Layer(
            name=name,
            kind=kind,
            inputs=inputs,
            shape=shape if shape_ is None else shape_,
            type=_out_type(node) if type_ is None else type_,
            types=types or {},
            params=params or {},
            arrays=arrays or {},
            hls_class=hls_class,
        )

    strategy = str(_attr(node, "strategy", "latency")).lower()

    if isinstance(node, hl.Input):
        return mk("input", shape_=shape)

    if isinstance(node, FixedPointQuantizer):
        in_shape = _in_shape(node)
        # generate_mask_fn: masks are (1, *shape) or (1,) arrays, broadcast to the input shape
        k, b, i = (np.broadcast_to(np.asarray(m)[0], in_shape) for m in node.mask_kbi)
        params = {"rounding": _ft_mode(node.RND, "rounding"), "overflow": _ft_mode(node.SAT, "overflow")}
        for bb, ii, kk in zip(b.reshape(-1), i.reshape(-1), k.reshape(-1)):
            if bb > 0:
                try:
                    FixedType(int(bb), int(ii), bool(kk), params["rounding"], params["overflow"])
                except ValueError as exc:
                    raise _unsupported(node, f"per-element type: {exc}") from None
        return mk("quantizer", params=params, arrays={"k": k.astype(np.int64), "b": b.astype(np.int64), "i": i.astype(np.int64)})

    if isinstance(node, UnaryLUT):
        raw, tt = _weights_raw(node, "table")
        return mk("unary_lut", types={"table": tt}, arrays={"table": raw.reshape(-1)}, params={"table_size": int(raw.size)})

    if isinstance(node, (hl.Conv1D, hl.Conv2D)) and not isinstance(
        node, tuple(getattr(hl, c) for c in ("DepthwiseConv1D", "DepthwiseConv2D") if hasattr(hl, c))
    ):
        if strategy not in ("latency", "distributed_arithmetic") and strategy != "resource":
            raise _unsupported(node, f"strategy {strategy}")
        if strategy == "distributed_arithmetic":
            raise _unsupported(node, "distributed_arithmetic strategy")
        w, wt = _weights_raw(node, "weight")
        b, bt = _weights_raw(node, "bias")
        types = {"weight": wt, "bias": bt, "accum": _node_type(node, "accum_t")}
        if strategy == "resource":
            _check_resource(node, types["accum"])
            if node.get_attr("_weights_transposed", False) is True:  # ApplyResourceStrategy: (F, ..., C)
                w = np.moveaxis(w, 0, -1)
        _check_product(node)
        for d in ("dilation", "dilation_height", "dilation_width"):
            if int(_attr(node, d, 1)) != 1:
                raise _unsupported(node, "dilated convolution")
        if isinstance(node, hl.Conv2D):
            params = {
                k: int(node.get_attr(k))
                for k in (
                    "in_height", "in_width", "n_chan", "out_height", "out_width", "n_filt", "filt_height",
                    "filt_width", "stride_height", "stride_width", "pad_top", "pad_bottom", "pad_left", "pad_right",
                )
            }
            w = w.reshape(params["filt_height"], params["filt_width"], params["n_chan"], params["n_filt"])
            return mk("conv2d", types=types, params=params, arrays={"weight": w, "bias": b.reshape(-1)})
        params = {
            k: int(node.get_attr(k))
            for k in ("in_width", "n_chan", "out_width", "n_filt", "filt_width", "stride_width", "pad_left", "pad_right")
        }
        w = w.reshape(params["filt_width"], params["n_chan"], params["n_filt"])
        return mk("conv1d", types=types, params=params, arrays={"weight": w, "bias": b.reshape(-1)})

    if isinstance(node, hl.Dense):
        if strategy == "distributed_arithmetic":
            raise _unsupported(node, "distributed_arithmetic strategy")
        if strategy not in ("latency", "resource"):
            raise _unsupported(node, f"strategy {strategy} (Latency and Resource are emulated)")
        if len(_in_shape(node)) != 1:
            raise _unsupported(node, f"dense on a {len(_in_shape(node))}-D input")
        _check_product(node)
        w, wt = _weights_raw(node, "weight")
        b, bt = _weights_raw(node, "bias")
        acc = _node_type(node, "accum_t")
        n_in, n_out = int(node.get_attr("n_in")), int(node.get_attr("n_out"))
        w = w.reshape(n_in, n_out)
        if strategy == "resource":
            _check_resource(node, acc)
            if node.get_attr("_weights_transposed", False) is True:  # ApplyResourceStrategy stores (n_out, n_in)
                w = w.reshape(n_out, n_in).T
        return mk(
            "dense",
            types={"weight": wt, "bias": bt, "accum": acc},
            params={"n_in": n_in, "n_out": n_out},
            arrays={"weight": w, "bias": b.reshape(n_out)},
        )

    if isinstance(node, hl.BatchNormalization):
        _check_product(node, "scale")
        s, st = _weights_raw(node, "scale")
        b, bt = _weights_raw(node, "bias")
        n_filt = int(_attr(node, "n_filt", -1))
        return mk("batchnorm", types={"scale": st, "bias": bt}, params={"n_filt": n_filt},
                  arrays={"scale": s.reshape(-1), "bias": b.reshape(-1)})

    if isinstance(node, (hl.Pooling1D, hl.Pooling2D)):
        op = str(node.get_attr("pool_op")).lower()
        op = "max" if op.startswith("max") else "average"
        types = {"accum": _node_type(node, "accum_t")}
        if isinstance(node, hl.Pooling2D):
            keys = ("in_height", "in_width", "n_filt", "out_height", "out_width", "pool_height", "pool_width",
                    "stride_height", "stride_width", "pad_top", "pad_bottom", "pad_left", "pad_right")
            params = {k: int(node.get_attr(k)) for k in keys}
            kind = "pooling2d"
        else:
            keys = ("n_in", "n_filt", "n_out", "pool_width", "stride_width", "pad_left", "pad_right")
            params = {k: int(node.get_attr(k)) for k in keys}
            kind = "pooling1d"
        if str(_attr(node, "data_format", "channels_last")) != "channels_last":
            raise _unsupported(node, "channels_first pooling")
        params["op"] = op
        params["count_pad"] = bool(_attr(node, "count_pad", False))
        return mk(kind, types=types, params=params)

    if isinstance(node, (hl.GlobalPooling1D, hl.GlobalPooling2D)):
        op = str(node.get_attr("pool_op")).lower()
        op = "max" if op.startswith("max") else "average"
        in_shape = _in_shape(node)
        if str(_attr(node, "data_format", "channels_last")) != "channels_last":
            raise _unsupported(node, "channels_first pooling")
        kind = "global_pooling2d" if isinstance(node, hl.GlobalPooling2D) else "global_pooling1d"
        if bool(_attr(node, "keep_dims", False)):
            pass  # output shape already reflects it; values identical
        return mk(kind, types={"accum": _node_type(node, "accum_t")},
                  params={"op": op, "n_pixels": int(math.prod(in_shape[:-1])), "n_filt": int(in_shape[-1])})

    if isinstance(node, hl.Softmax):
        return _convert_softmax(node, mk, by_name[inputs[0]])

    if isinstance(node, hl.PReLU):
        a, at = _weights_raw(node, "param")
        return mk("activation", types={"param": at}, params={"fn": "prelu"}, arrays={"alpha": a.reshape(-1)})

    if isinstance(node, hl.HardActivation):
        raise _unsupported(node, "hard_sigmoid / hard_tanh")

    if isinstance(node, hl.ParametrizedActivation):
        act = str(node.get_attr("activation")).lower()
        param = float(_attr(node, "activ_param", 1.0))
        pt = _node_type(node, "param_t")
        praw = int(from_float(np.array([param]), pt)[0])
        if act == "leakyrelu":
            return mk("activation", types={"param": pt}, params={"fn": "leaky_relu", "param_raw": praw})
        if act == "thresholdedrelu":
            return mk("activation", types={"param": pt}, params={"fn": "thresholded_relu", "param_raw": praw})
        if act == "elu":
            tt = _node_type(node, "table_t")
            n = int(node.get_attr("table_size"))
            return mk("elu", types={"table": tt, "param": pt}, params={"table_size": n, "param_raw": praw},
                      arrays={"table": build_tables("elu", n, tt)})
        raise _unsupported(node, f"parametrized activation {act!r}")

    if isinstance(node, hl.Activation):
        act = str(node.get_attr("activation")).lower()
        if act == "linear":
            return mk("activation", params={"fn": "linear"})
        if act == "relu":
            return mk("activation", params={"fn": "relu"})
        if act in ("relu6", "relu1"):
            return mk("activation", params={"fn": "relu_max", "max_int": 6 if act == "relu6" else 1})
        if act in ("sigmoid", "tanh", "softplus", "softsign"):
            tt = _node_type(node, "table_t")
            n = int(node.get_attr("table_size"))
            div = 8 if act == "tanh" else 16
            offset = (div // 2) * n // div
            return mk("table_activation", types={"table": tt},
                      params={"fn": act, "table_size": n, "range_div": div, "offset": offset},
                      arrays={"table": build_tables(act, n, tt)})
        if act == "elu":
            tt = _node_type(node, "table_t")
            n = int(node.get_attr("table_size"))
            return mk("elu", types={"table": tt, "param": FixedType(1, 1, False)},
                      params={"table_size": n, "param_raw": 1}, arrays={"table": build_tables("elu", n, tt)})
        if act == "selu":
            tt = _node_type(node, "table_t")
            n = int(node.get_attr("table_size"))
            return mk("selu", types={"table": tt}, params={"table_size": n}, arrays={"table": build_tables("selu", n, tt)})
        raise _unsupported(node, f"activation {act!r}")

    if isinstance(node, hl.Dot):
        if len(_in_shape(node, 0)) != 1:
            raise _unsupported(node, "dot of tensors with rank > 1")
        from hls4ml.backends import get_backend

        p1 = node.get_input_variable(node.inputs[0]).type.precision
        p2 = node.get_input_variable(node.inputs[1]).type.precision
        if get_backend("vivado").product_type(p1, p2) not in ("mult", "weight_ternary"):
            raise _unsupported(node, "binary / power-of-two product")
        return mk("dot", types={"accum": _node_type(node, "accum_t")}, params={"n_in": int(_in_shape(node)[0])})

    if isinstance(node, hl.Concatenate):
        rank = len(_in_shape(node, 0))
        axis = int(node.get_attr("axis"))
        if axis < 0:
            axis += rank
        else:
            axis -= 1
        if not 0 <= axis < rank:
            raise _unsupported(node, f"concatenation axis {node.get_attr('axis')}")
        if rank > 3:
            raise _unsupported(node, "concatenation of rank > 3 tensors")
        return mk("concatenate", params={"axis": axis})

    if isinstance(node, hl.Merge):
        op = str(node.get_attr("op")).lower()
        if op not in ("add", "subtract", "multiply", "average", "maximum", "minimum"):
            raise _unsupported(node, f"merge op {op!r}")
        n1 = int(math.prod(_in_shape(node, 0)))
        n2 = int(math.prod(_in_shape(node, 1)))
        return mk("merge", params={"op": op, "n_elem1": n1, "n_elem2": n2})

    if isinstance(node, hl.Reshape):
        src = by_name[inputs[0]]
        return mk("reshape", type_=src.type, params={"target_shape": list(shape)})

    if isinstance(node, hl.Transpose):
        perm = [int(p) for p in node.get_attr("perm")]
        return mk("transpose", params={"perm": perm})

    raise _unsupported(node)


def _ft_mode(v, what: str) -> str:
    s = getattr(v, "name", v)
    s = str(s).upper()
    if s.startswith("AP_"):
        s = s[3:]
    if s.startswith("S_"):
        s = s[2:]
    return s


def _check_resource(node, accum: FixedType) -> None:
    """Resource strategy computes the same products, cast to accum_t, as Latency, summed in another
    order: identical results when accum_t wraps (sums modulo 2**W), order-dependent when it saturates."""
    if accum.overflow != "WRAP":
        raise _unsupported(node, f"Resource strategy with a saturating accumulator {accum.to_hls()}: the sum "
                                 "depends on the reuse order, which is not emulated (use a wrapping accum_t)")


def _check_product(node, key: str = "weight") -> None:
    from hls4ml.backends import get_backend

    p_in = node.get_input_variable().type.precision
    p_w = node.get_weights(key).type.precision
    ptype = get_backend("vivado").product_type(p_in, p_w)
    if ptype not in ("mult", "weight_ternary"):  # weight_ternary computes exactly x*w too
        raise _unsupported(node, f"product type {ptype} (binary / power-of-two weights)")


def _convert_softmax(node, mk, src: Layer) -> Layer:
    in_type = src.type
    cfg = _config_cpp(node)
    impl = str(_attr(node, "implementation", "stable")).lower()
    m = re.search(r"softmax_implementation::(\w+)", cfg)
    if m:
        impl = m.group(1).lower()
    if impl not in ("latency", "stable", "legacy", "argmax"):
        raise _unsupported(node, f"softmax implementation {impl}")
    n_in = int(node.get_attr("n_in"))
    n_inner = int(_attr(node, "n_inner", 1))
    n_outer = int(_attr(node, "n_outer", 1))
    table_size = int(_attr(node, "table_size", 1024))
    exp_size = _parse_cfg_int(cfg, "exp_table_size") or int(_attr(node, "exp_table_size", table_size))
    inv_size = _parse_cfg_int(cfg, "inv_table_size") or int(_attr(node, "inv_table_size", table_size))
    exp_scale = float(_attr(node, "exp_scale", 1.0))
    m = re.search(r"exp_scale\s*=\s*([^;]+);", cfg)
    if m:
        try:
            exp_scale = float(m.group(1).strip().rstrip("fF"))
        except ValueError:
            pass
    if not cfg and impl == "stable" and node.types.get("inp_norm_t") is None and in_type.signed:
        # replicate SoftmaxConfigTemplate.format when no generated config is available
        exp_size = min(exp_size, 2 ** (in_type.width - 1))
    types: dict[str, FixedType] = {}
    if impl in ("latency", "stable"):
        for role in ("exp_table", "inv_table", "accum", "inv_inp"):
            t = _parse_cfg_typedef(cfg, f"{role}_t", node) if cfg else None
            types[role] = t if t is not None else _node_type(node, f"{role}_t")
        if impl == "stable":
            t = _parse_cfg_typedef(cfg, "inp_norm_t", node) if cfg else None
            if t is None:
                if node.types.get("inp_norm_t") is not None:
                    t = _node_type(node, "inp_norm_t")
                else:
                    w, iw = in_type.width - int(in_type.signed), in_type.integer - int(in_type.signed)
                    t = FixedType(w, iw, False)
            types["inp_norm"] = t
    elif impl == "legacy":
        types["table"] = _node_type(node, "table_t")
    n_slice = n_in // n_inner // n_outer
    params = {
        "implementation": impl,
        "n_in": n_in,
        "n_slice": n_slice,
        "n_inner": n_inner,
        "n_outer": n_outer,
        "exp_table_size": exp_size,
        "inv_table_size": inv_size,
        "exp_scale": exp_scale,
        "exp_bits": _ceillog2(exp_size),
        "inv_bits": _ceillog2(inv_size),
    }
    exp_table, inv_table = _softmax_tables(impl, types, exp_size, inv_size, exp_scale, in_type)
    arrays = {"exp_table": exp_table, "inv_table": inv_table} if impl != "argmax" else {}
    if impl == "latency" and _ceillog2(exp_size) > in_type.width:
        raise _unsupported(node, "exp table wider than the input type")
    return mk("softmax", types=types, params=params, arrays=arrays)

