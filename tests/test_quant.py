"""lpcc.quant: config parsing, RTN math against an independent reference, the report.

The reference (`reference_rtn`) is written here with torch from the formulas
in the lpcc.quant docstrings, group by group in a Python loop: torch's own
float16 rounding for scales, torch.round (half to even) for codes,
ml_dtypes for the float formats, `math` for e8m0 exponents. It never calls
lpcc's codecs.
"""

from __future__ import annotations

import json
import math

import ml_dtypes
import numpy as np
import pytest
import torch

from lpcc import LpccError, dtype
from lpcc.ir import interp
from lpcc.ir.dialect import ops as lp
from lpcc.quant import (
    DEFAULT_GROUP_SIZE,
    LayerRow,
    QuantConfig,
    QuantError,
    QuantReport,
    parse_quant,
    quantize_weight,
)

ML_FLOATS = {
    "f4e2m1": (ml_dtypes.float4_e2m1fn, 6.0),
    "f6e3m2": (ml_dtypes.float6_e3m2fn, 28.0),
    "f6e2m3": (ml_dtypes.float6_e2m3fn, 7.5),
    "f8e4m3fn": (ml_dtypes.float8_e4m3fn, 448.0),
    "f8e5m2": (ml_dtypes.float8_e5m2, 57344.0),
}
SCALE_TORCH = {"f16": torch.float16, "f32": torch.float32}


def _round_scale(s: float, scale: str) -> float:
    """The scale as stored: f16/f32 nearest, e8m0 the next power of two up."""
    if s == 0:
        return 1.0
    if scale == "e8m0":
        return 2.0 ** max(math.ceil(math.log2(s)), -127)
    return float(torch.tensor(s, dtype=torch.float64).to(SCALE_TORCH[scale]))


def reference_rtn(
    w: np.ndarray,
    fmt: str,
    group: int | None,
    symmetric: bool,
    scale: str = "f16",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(Q values [N,K], scales [N,G], zero values [N,G] or None, W_dq [N,K])."""
    t = torch.from_numpy(w).double()
    n, k = t.shape
    g = k if group is None else min(group, k)
    q = torch.zeros(n, k, dtype=torch.float64)
    deq = torch.zeros(n, k, dtype=torch.float64)
    scales, zeros = [], []
    for start in range(0, k, g):
        blk = t[:, start : start + g]
        s_col, z_col = [], []
        for row in range(n):
            x = blk[row]
            if fmt in ML_FLOATS:
                ml, fmax = ML_FLOATS[fmt]
                s = _round_scale(float(x.abs().max()) / fmax, scale)
                y = np.clip((x / s).numpy(), -fmax, fmax)
                qv = torch.from_numpy(y.astype(ml).astype(np.float64))
                z = 0.0
            else:
                bits = int(fmt.lstrip("uint"))
                signed = not fmt.startswith("u")
                lo_t, hi_t = (
                    (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
                    if signed
                    else (
                        0,
                        2**bits - 1,
                    )
                )
                if symmetric:
                    s = _round_scale(
                        float(x.abs().max()) / (2 ** (bits - 1) - 1), scale
                    )
                    z = 0.0 if signed else float(2 ** (bits - 1))
                else:
                    lo = min(float(x.min()), 0.0)
                    hi = max(float(x.max()), 0.0)
                    s = _round_scale((hi - lo) / (2**bits - 1), scale)
                    z = float(
                        torch.round(torch.tensor(-lo / s + lo_t)).clamp(lo_t, hi_t)
                    )
                qv = torch.round(x / s + z).clamp(lo_t, hi_t)
            q[row, start : start + g] = qv
            deq[row, start : start + g] = (qv - z) * s
            s_col.append(s)
            z_col.append(z)
        scales.append(s_col)
        zeros.append(z_col)
    zero = None
    if fmt not in ML_FLOATS and (not symmetric or fmt.startswith("u")):
        zero = np.array(zeros).T
    return q.numpy(), np.array(scales).T, zero, deq.float().numpy()


def weights(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32) * 0.05
    w[0, :3] = [0.4, -0.7, 0.0]  # outliers and an exact zero
    return w


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "group", "sym", "zero", "scale", "short"),
    [
        ("int4", "int4", DEFAULT_GROUP_SIZE, True, False, "f16", "int4-g128"),
        ("int4-g128", "int4", 128, True, False, "f16", "int4-g128"),
        ("uint3-g64", "uint3", 64, False, True, "f16", "uint3-g64"),
        ("f4e2m1-g32", "f4e2m1", 32, True, False, "f16", "f4e2m1-g32"),
        ("int2-g64-asym", "int2", 64, False, True, "f16", "int2-g64-asym"),
        ("INT8-PC", "int8", None, True, False, "f16", "int8-pc"),
        ("f4e2m1-g32-se8m0", "f4e2m1", 32, True, False, "e8m0", "f4e2m1-g32-se8m0"),
        ("uint4-sym-g32", "uint4", 32, True, True, "f16", "uint4-g32-sym"),
        ("int5-sf32", "int5", 128, True, False, "f32", "int5-g128-sf32"),
        ("uint1", "uint1", 128, False, True, "f16", "uint1-g128"),
        ("f8e4m3fn-pc", "f8e4m3fn", None, True, False, "f16", "f8e4m3fn-pc"),
        ("float<3,2,finite>-g16", "f6e3m2", 16, True, False, "f16", "f6e3m2-g16"),
    ],
)
def test_parse_short_strings(
    text: str,
    fmt: str,
    group: int | None,
    sym: bool,
    zero: bool,
    scale: str,
    short: str,
) -> None:
    cfg = parse_quant(text)
    assert cfg is not None
    assert (cfg.weight, cfg.group_size, cfg.symmetric, cfg.zero_point) == (
        dtype(fmt),
        group,
        sym,
        zero,
    )
    assert cfg.scale_dtype == scale and cfg.scale_type == dtype(scale)
    assert str(cfg) == short
    assert parse_quant(short) == cfg  # the short string reads back


def test_parse_passes_configs_and_none_through() -> None:
    cfg = QuantConfig("int4", group_size=32)
    assert parse_quant(cfg) is cfg
    assert parse_quant(None) is None
    assert parse_quant(dtype("uint3")) == QuantConfig("uint3")
    # Resolved fields: equal settings compare equal.
    assert QuantConfig("int4") == QuantConfig(dtype("int4"), symmetric=True)
    assert QuantConfig("uint4") == QuantConfig(
        "uint4", symmetric=False, zero_point=True
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("int4-x", r"unknown part 'x'.*<dtype>\[-g<N>\|-pc\].*int4-g32"),
        ("int4-g32-pc", "repeats"),
        ("int4-sbf16", "scale type 'bf16'"),
        ("fp5", "not a weight format"),
        ("", "no weight format"),
        ("int1", "symmetric int1.*uint1.*int1-asym"),
        ("f4e2m1-asym", "float formats.*symmetric"),
        ("int4-g0", "group_size.*>= 1"),
        ("e8m0-g32", "scale format, not a weight format"),
        ("f32", "at most 16"),
        ("int12", "1..8 bits"),
    ],
)
def test_bad_strings_explain_the_grammar(text: str, match: str) -> None:
    with pytest.raises(QuantError, match=match) as err:
        parse_quant(text)
    assert f"quant={text!r}" in str(err.value)
    assert isinstance(err.value, LpccError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight": "int4", "group_size": 0}, r"QuantConfig\.group_size"),
        ({"weight": "int4", "group_size": True}, r"QuantConfig\.group_size"),
        ({"weight": "int4", "group_size": 3.5}, r"QuantConfig\.group_size"),
        ({"weight": "int4", "scale_dtype": "f8e4m3fn"}, r"scale_dtype.*f16, f32, e8m0"),
        ({"weight": "nope"}, r"QuantConfig\.weight"),
        ({"weight": "int4", "zero_point": True}, r"zero_point=True.*code 0"),
        ({"weight": "uint4", "zero_point": False}, r"zero_point=False.*one per group"),
        (
            {"weight": "uint4", "symmetric": True, "zero_point": False},
            r"z = 2\*\*\(b-1\)",
        ),
        ({"weight": "int1", "symmetric": True}, "uint1"),
        ({"weight": "uint1", "symmetric": True}, "no nonzero level"),
        ({"weight": "f4e2m1", "symmetric": False}, "float formats"),
        ({"weight": "int4", "include": [1]}, r"QuantConfig\.include"),
        ({"weight": "int4", "conv": "yes"}, r"QuantConfig\.conv"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(QuantError, match=match):
        QuantConfig(**kwargs)


def test_bad_spec_type() -> None:
    with pytest.raises(QuantError, match="expected None, a string or a QuantConfig"):
        parse_quant(4)  # type: ignore[arg-type]


def test_include_exclude_globs() -> None:
    cfg = QuantConfig("int4", include="layers.*.mlp.*", exclude=("*.w3.*", "lm_head*"))
    assert cfg.include == ("layers.*.mlp.*",)
    assert cfg.selects("layers.0.mlp.w1.weight")
    assert not cfg.selects("layers.0.mlp.w3.weight")
    assert not cfg.selects("layers.0.attn.wq.weight")
    assert not cfg.selects("lm_head.weight")
    everything = QuantConfig("int4", exclude=("lm_head*",))
    assert everything.selects("tok.weight") and not everything.selects("lm_head.weight")
    assert "exclude=['lm_head*']" in str(everything)
    assert str(everything).startswith("int4-g128 ")


# -- RTN math vs the reference ---------------------------------------------------------

INT_CASES = [
    # (format, group, symmetric, N, K)
    ("int8", 32, True, 5, 64),
    ("int4", 16, True, 4, 37),  # K not divisible: last group of 5
    ("int3", 8, True, 3, 24),
    ("int2", 64, True, 3, 50),  # group > K: one group
    ("int5", None, True, 3, 40),
    ("int4", 16, False, 4, 37),
    ("int2", 16, False, 3, 32),
    ("int1", 8, False, 3, 19),
    ("int7", 32, False, 2, 70),
    ("uint8", 32, False, 3, 64),
    ("uint4", 16, False, 4, 37),
    ("uint3", 16, False, 3, 48),
    ("uint2", 8, False, 3, 21),
    ("uint1", 8, False, 3, 16),
    ("uint6", None, False, 2, 33),
    ("uint4", 16, True, 3, 32),  # GPTQ-style symmetric uint: z = 8
    ("uint8", 32, True, 2, 40),
]


@pytest.mark.parametrize(("fmt", "group", "sym", "n", "k"), INT_CASES)
def test_int_rtn_matches_reference(
    fmt: str, group: int | None, sym: bool, n: int, k: int
) -> None:
    w = weights(n, k, seed=k)
    cfg = QuantConfig(fmt, group_size=group, symmetric=sym)
    qw = quantize_weight(w, cfg)
    q_ref, s_ref, z_ref, dq_ref = reference_rtn(w, fmt, group, sym)
    dt = dtype(fmt)
    np.testing.assert_array_equal(dt.decode(qw.codes), q_ref)
    np.testing.assert_array_equal(qw.scale, s_ref.astype(np.float32))
    np.testing.assert_array_equal(dtype("f16").decode(qw.scale_codes), qw.scale)
    if z_ref is None:
        assert qw.zero is None
    else:
        assert qw.zero is not None
        np.testing.assert_array_equal(dt.decode(qw.zero), z_ref)
    np.testing.assert_array_equal(qw.dequantize(), dq_ref)
    assert qw.codes.shape == (n, k) and qw.codes.dtype == dt.code_dtype
    assert qw.block == (1, k if group is None else min(group, k))


@pytest.mark.parametrize("fmt", sorted(ML_FLOATS))
@pytest.mark.parametrize("scale", ["f16", "f32", "e8m0"])
def test_float_rtn_matches_ml_dtypes(fmt: str, scale: str) -> None:
    w = weights(4, 45, seed=3)
    qw = quantize_weight(w, QuantConfig(fmt, group_size=16, scale_dtype=scale))
    q_ref, s_ref, z_ref, dq_ref = reference_rtn(w, fmt, 16, True, scale)
    assert z_ref is None and qw.zero is None
    np.testing.assert_array_equal(qw.scale, s_ref.astype(np.float32))
    np.testing.assert_array_equal(dtype(fmt).decode(qw.codes), q_ref)
    np.testing.assert_array_equal(qw.dequantize(), dq_ref)


@pytest.mark.parametrize("fmt", ["int4", "int8", "uint4"])
def test_e8m0_scales_are_powers_of_two_that_never_saturate(fmt: str) -> None:
    w = weights(6, 64, seed=9)
    cfg = QuantConfig(fmt, group_size=32, scale_dtype="e8m0")
    qw = quantize_weight(w, cfg)
    sym = bool(cfg.symmetric)
    _, s_ref, _, dq_ref = reference_rtn(w, fmt, 32, sym, "e8m0")
    np.testing.assert_array_equal(qw.scale, s_ref)
    mant, _ = np.frexp(qw.scale)
    assert np.all(mant == 0.5)  # powers of two
    np.testing.assert_array_equal(qw.dequantize(), dq_ref)
    np.testing.assert_array_equal(ml_dtypes_e8m0(qw.scale_codes), qw.scale)


def ml_dtypes_e8m0(codes: np.ndarray) -> np.ndarray:
    return codes.astype(np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float32)


def test_e8m0_rule_rounds_up_instead_of_clipping() -> None:
    # absmax 7.9: OCP's 2**(floor(log2 7.9) - emax) = 1 would clip 7.9 to 6;
    # 2**ceil(log2(7.9 / 6)) = 2 stores it as 4 * 2 = 8.
    w = np.array([[7.9, 1.0, -3.0, 0.5]], np.float32)
    qw = quantize_weight(w, "f4e2m1-g4-se8m0")
    assert qw.scale[0, 0] == 2.0
    # 3.95 -> 4, 0.5, -1.5, and 0.25 ties to the even 0 between 0 and 0.5.
    np.testing.assert_array_equal(qw.dequantize(), [[8.0, 1.0, -3.0, 0.0]])


def test_hand_derived_int4_codes() -> None:
    # Row 0: absmax 7 -> s = 1; 3.5 rounds half to even -> 4.
    # Row 1: absmax 1.75 -> s = 0.25 (exact in f16).
    w = np.array([[1, -2, 3.5, 7], [0.5, -0.25, 0, -1.75]], np.float32)
    qw = quantize_weight(w, "int4-g4")
    np.testing.assert_array_equal(
        dtype("int4").decode(qw.codes), [[1, -2, 4, 7], [2, -1, 0, -7]]
    )
    np.testing.assert_array_equal(qw.scale, [[1.0], [0.25]])
    assert dtype("int4").pack(qw.codes.reshape(-1)).tobytes() == bytes.fromhex(
        "E174F290"
    )
    # uint2 asym on [-1, 0, 1, 2]: s = 3/3 = 1, z = round(1) = 1, Q = w + 1.
    qa = quantize_weight(np.array([[-1, 0, 1, 2]], np.float32), "uint2-g4")
    np.testing.assert_array_equal(qa.codes, [[0, 1, 2, 3]])
    assert qa.zero is not None and qa.zero.tolist() == [[1]]
    assert qa.nmse == 0.0


@pytest.mark.parametrize(
    "spec", ["int4-g8", "uint3-g8", "int2-g8-asym", "f4e2m1-g8", "int8-g8-se8m0"]
)
def test_all_zero_groups_are_exact_and_finite(spec: str) -> None:
    w = weights(3, 24, seed=1)
    w[1] = 0.0
    w[2, 8:16] = 0.0
    qw = quantize_weight(w, spec)
    assert np.all(np.isfinite(qw.scale)) and np.all(qw.scale > 0)
    assert qw.scale[1, 0] == 1.0 and qw.scale[2, 1] == 1.0
    dq = qw.dequantize()
    assert np.all(dq[1] == 0.0) and np.all(dq[2, 8:16] == 0.0)
    zeros = quantize_weight(np.zeros((2, 8), np.float32), spec)
    assert zeros.nmse == 0.0 and np.all(zeros.dequantize() == 0.0)


def test_f16_scale_underflow_and_overflow() -> None:
    tiny = weights(2, 16, seed=2) * np.float32(1e-7)  # scale ~ 1e-8 < f16 subnormals
    qw = quantize_weight(tiny, "int4-g16")
    assert np.all(qw.scale >= 2.0**-24) and np.all(np.isfinite(qw.dequantize()))
    assert np.max(np.abs(qw.dequantize() - tiny)) <= np.max(np.abs(tiny))
    ok32 = quantize_weight(tiny, "int4-g16-sf32")  # f32 scales keep precision
    assert ok32.nmse < 0.05
    # A subnormal f16 scale rounds down by up to ~30%: w / s passes the format's
    # max, which must saturate (fn/ieee formats would give NaN/inf).
    for fmt in ("f8e4m3fn", "f8e5m2"):
        amax = 1.4 * 2.0**-24 * dtype(fmt).max
        qf = quantize_weight(np.array([[amax, -amax / 3]], np.float32), f"{fmt}-g2")
        assert qf.scale[0, 0] == 2.0**-24
        assert qf.dequantize()[0, 0] == np.float32(2.0**-24 * dtype(fmt).max)
    big = np.full((1, 4), 1e6, np.float32)
    with pytest.raises(QuantError, match=r"overflows f16.*-sf32"):
        quantize_weight(big, "int4-g4", name="fc.weight")
    np.testing.assert_allclose(quantize_weight(big, "int4-g4-sf32").dequantize(), big)


def test_bad_weights_are_errors_naming_the_layer() -> None:
    with pytest.raises(QuantError, match=r"quantize fc1\.weight: .*NaN"):
        quantize_weight(
            np.array([[np.nan, 1.0]], np.float32), "int4", name="fc1.weight"
        )
    with pytest.raises(QuantError, match=r"2-D float.*\[4\]"):
        quantize_weight(np.ones(4, np.float32), "int4")
    with pytest.raises(QuantError, match="2-D float"):
        quantize_weight(np.ones((2, 2), np.int32), "int4")


def test_stats_are_hand_derived() -> None:
    w = weights(4, 37, seed=5)
    qw = quantize_weight(w, "int4-g16")  # groups 16, 16, 5 -> G = 3
    assert qw.bits_per_weight == (4 * 37 * 4 + 4 * 3 * 16) / (4 * 37)
    assert qw.nbytes == 74 + 4 * 3 * 2  # ceil(148 * 4 / 8) + f16 scales
    dq = qw.dequantize().astype(np.float64)
    assert qw.nmse == pytest.approx(
        np.sum((w - dq) ** 2) / np.sum(w.astype(np.float64) ** 2), rel=1e-12
    )
    asym = quantize_weight(w, "uint3-g16")
    assert asym.bits_per_weight == (4 * 37 * 3 + 4 * 3 * (16 + 3)) / (4 * 37)
    assert asym.nbytes == math.ceil(148 * 3 / 8) + 24 + math.ceil(12 * 3 / 8)
    pc = quantize_weight(w, "int8-pc")
    assert pc.bits_per_weight == 8 + 16 / 37 and pc.scale.shape == (4, 1)
    # More bits, less error (same data, same groups).
    errs = [quantize_weight(w, f"int{b}-g16").nmse for b in (2, 3, 4, 6, 8)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-4


# -- agreement with the lp ops' semantics (the interpreter) ----------------------------


@pytest.mark.parametrize(
    "spec", ["int4-g16", "uint3-g8", "int2-g16-asym", "f4e2m1-g16", "f6e3m2-g8-se8m0"]
)
def test_dequantize_and_codes_agree_with_lp_ops(spec: str) -> None:
    w = weights(4, 40, seed=11)
    qw = quantize_weight(w, spec)
    q = lp.ConstantOp.from_codes(qw.codes, qw.dtype)
    s = lp.ConstantOp.from_codes(qw.scale_codes, qw.scale_dtype)
    z = None if qw.zero is None else lp.ConstantOp.from_codes(qw.zero, qw.dtype)
    zv = [] if z is None else [interp.run_op(z, [])]
    dq = lp.DequantizeOp(
        q.result, s.result, None if z is None else z.result, qw.block, dtype("f32")
    )
    args = [interp.run_op(q, []), interp.run_op(s, []), *zv]
    np.testing.assert_array_equal(interp.run_op(dq, args), qw.dequantize())
    # lp.quantize with the stored scale/zero reproduces the codes.
    wc = lp.ConstantOp.from_array(w, dtype("f32"))
    qop = lp.QuantizeOp(wc.result, s.result, dq.zero, qw.block, qw.dtype)
    got = interp.run_op(qop, [w, args[1], *zv])
    np.testing.assert_array_equal(got, qw.dtype.values(qw.codes))


# -- the report ----------------------------------------------------------------------


def _row(name: str, shape: tuple[int, ...], bpw: float, packed: int) -> LayerRow:
    return LayerRow(
        name=name,
        shape=shape,
        format="int4",
        group_size=32,
        per_channel=False,
        scale_dtype="f16",
        zero_point=False,
        bits_per_weight=bpw,
        nmse=1.5e-3,
        fp32_bytes=4 * math.prod(shape),
        packed_bytes=packed,
    )


def test_report_totals_table_and_json_round_trip() -> None:
    long = "model.layers.10.self_attention.query_key_value.projection.weight"
    report = QuantReport(
        "int4-g32",
        [_row("fc1.weight", (8, 64), 4.5, 288), _row(long, (16, 32), 4.5, 288)],
        skipped=["lm_head.weight"],
        kept_fp32=["fc1.weight"],
    )
    assert report.fp32_bytes == 4 * (512 + 512)
    assert report.packed_bytes == 576
    assert report.bits_per_weight == 4.5
    assert report.compression == pytest.approx(4096 / 576)
    text = str(report)
    lines = text.splitlines()
    assert (
        "2 layers" in lines[0]
        and "4.500 bits/weight" in lines[0]
        and "7.11x" in lines[0]
    )
    assert lines[1].split() == ["name", "shape", "format", "group", "bits/w", "nmse"]
    assert any(line.startswith("fc1.weight ") and "8x64" in line for line in lines)
    # Long names keep both ends; columns stay aligned.
    assert (
        long not in text and "model.layers.10" in text and "projection.weight" in text
    )
    assert len({len(line) for line in lines[1:5]}) == 1  # header, rule, rows
    assert "left out by include/exclude: lm_head.weight" in text
    assert "f32 copy kept" in text and "fc1.weight" in lines[-1]
    data = report.to_dict()
    again = QuantReport.from_dict(json.loads(json.dumps(data)))
    assert again == report and str(again) == text
    assert data["totals"]["packed_bytes"] == 576


def test_empty_report_says_why() -> None:
    none = QuantReport("int4-g128")
    assert none.bits_per_weight == 0.0 and none.compression == 0.0
    assert "no linear layers" in str(none)
    excluded = QuantReport(
        "int4-g128 (exclude=['*'])", skipped=["a.weight", "b.weight"]
    )
    assert "all 2 quantizable weights were left out" in str(excluded)
    assert "a.weight, b.weight" in str(excluded)
    with pytest.raises(QuantError, match="not a saved quantization report"):
        QuantReport.from_dict({"rows": [{"name": "x"}]})


# -- int8 activations (W4A8): the `-a8` suffix ------------------------------------


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("int4-g32-a8", "int4-g32-a8"),
        ("int4-a8-g32", "int4-g32-a8"),  # any order; printed in the canonical one
        ("uint3-g64-sf32-a8", "uint3-g64-sf32-a8"),
        ("int2-pc-asym-a8", "int2-pc-asym-a8"),
        ("uint1-A8", "uint1-g128-a8"),
    ],
)
def test_int8_activations_short_string(text: str, short: str) -> None:
    cfg = parse_quant(text)
    assert cfg is not None and cfg.activations == "int8"
    assert str(cfg) == short and parse_quant(short) == cfg
    # Everything else is what the string without -a8 says.
    plain = parse_quant(short.replace("-a8", ""))
    assert plain is not None and plain.activations == "float"
    assert cfg == QuantConfig(
        plain.weight,
        group_size=plain.group_size,
        symmetric=plain.symmetric,
        scale_dtype=plain.scale_dtype,
        activations="int8",
    )


def test_float_activations_are_the_default_and_unprinted() -> None:
    cfg = QuantConfig("int4")
    assert cfg.activations == "float" and "a8" not in str(cfg)
    assert QuantConfig("int4", activations="float") == cfg
    assert QuantConfig("int4", activations="int8") != cfg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight": "f4e2m1", "activations": "int8"}, "need integer weight codes"),
        ({"weight": "f8e4m3fn", "activations": "int8"}, "f8e4m3fn weights take float"),
        ({"weight": "int4", "activations": "int4"}, r"'int4' is not one of 'float'"),
        ({"weight": "int4", "activations": "a8"}, r"'int8': suffix -a8"),
    ],
)
def test_int8_activations_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(QuantError, match=rf"QuantConfig\.activations: .*{match}"):
        QuantConfig(**kwargs)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("f4e2m1-g32-a8", "int8 activations need integer weight codes"),
        ("int4-a8-a8", "repeats"),
        ("int4-a4", "unknown part 'a4'"),
    ],
)
def test_int8_activations_bad_strings(text: str, match: str) -> None:
    with pytest.raises(QuantError, match=match) as err:
        parse_quant(text)
    assert f"quant={text!r}" in str(err.value)
