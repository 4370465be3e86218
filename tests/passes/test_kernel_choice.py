"""The kernel-choice rule, override parsing, and the select-kernels pass.

The expected kinds are the table of lpcc/passes/kernel_choice.py written out
by hand, not computed from the module's constants.
"""

from __future__ import annotations

import pytest
from xdsl.dialects.builtin import StringAttr

from lpcc import dtype
from lpcc.errors import LpccError
from lpcc.ir.dialect import context, lowp, parse_module, verify_module
from lpcc.ir.dialect import ops as lp
from lpcc.passes import get_all_passes
from lpcc.passes.dequant_after_group_gemm import DequantAfterGroupGemm
from lpcc.passes.kernel_choice import (
    KernelChoiceError,
    choose_kernel,
    find_override,
    format_overrides,
    lut_unsupported_reason,
    match_override,
    normalize_overrides,
    parse_overrides,
)
from lpcc.passes.select_kernels import SelectKernels


@pytest.mark.parametrize(
    ("weight", "m", "cpu", "cuda"),
    [
        # int/uint of 1..7 bits: LUT at any m (measured faster on the CPU).
        ("int2", 1, "lut", "dequant"),
        ("uint1", None, "lut", "dequant"),
        ("i1", 4, "lut", "dequant"),  # uint1 is spelled i1
        ("int3", 8, "lut", "dequant"),
        ("uint3", 9, "lut", "dequant"),
        ("int2", 512, "lut", "dequant"),
        ("uint2", 0, "lut", "dequant"),
        ("int4", 1, "lut", "dequant"),
        ("uint4", None, "lut", "dequant"),
        ("uint5", 2, "lut", "dequant"),
        ("int7", 64, "lut", "dequant"),
        # 8 bits: dequant at any m (its int8 stream beats 8 bit planes).
        ("int8", 1, "dequant", "dequant"),
        ("uint8", None, "dequant", "dequant"),
        # Float weight types: dequant.
        ("f4e2m1", 1, "dequant", "dequant"),
        ("f8e4m3fn", None, "dequant", "dequant"),
        ("f6e2m3", 1, "dequant", "dequant"),
    ],
)
def test_rule_table(weight: str, m: int | None, cpu: str, cuda: str) -> None:
    dt = dtype(weight)
    assert choose_kernel(dt, m, "cpu") == cpu
    assert choose_kernel(dt, m, "reference") == cpu  # the same rule as cpu
    assert choose_kernel(dt, m, "cuda") == cuda


def test_rule_errors() -> None:
    with pytest.raises(KernelChoiceError, match="unknown target 'tpu'"):
        choose_kernel(dtype("int2"), 1, "tpu")
    with pytest.raises(KernelChoiceError, match="m must be >= 0"):
        choose_kernel(dtype("int2"), -1, "cpu")


def test_lut_support() -> None:
    for name in ("int2", "uint1", "int4", "uint8", "int8"):
        assert lut_unsupported_reason(dtype(name)) is None
    why = lut_unsupported_reason(dtype("f4e2m1"))
    assert why is not None and "not an integer type" in why and "dequant" in why
    why = lut_unsupported_reason(dtype("int16"))
    assert why is not None and "1..8 bits" in why


def test_parse_overrides() -> None:
    assert parse_overrides("") == []
    assert parse_overrides("  ") == []
    got = parse_overrides("layers.0.*=dense, *.mlp.* = lut,lm_head.weight=dequant")
    assert got == [
        ("layers.0.*", "dense"),
        ("*.mlp.*", "lut"),
        ("lm_head.weight", "dequant"),
    ]
    # First match wins.
    assert match_override("layers.0.mlp.w1.weight", got) == "dense"
    assert match_override("layers.1.mlp.w1.weight", got) == "lut"
    assert find_override("layers.1.mlp.w1.weight", got) == ("*.mlp.*", "lut")
    assert match_override("layers.1.attn.wq.weight", got) is None
    assert match_override("LM_HEAD.weight", got) is None  # case-sensitive


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("*.mlp.*", r"option override: entry '\*\.mlp\.\*' has no '='"),
        ("*.mlp.*=fast", "unknown kernel kind 'fast'.*lut, dequant, dense"),
        ("=lut", "empty pattern"),
        ("a=lut,,b=dense", "entry '' has no '='"),
        ("a=lut,", "entry '' has no '='"),
        ("a==lut", "holds ',' or '='"),
    ],
)
def test_malformed_overrides(text: str, match: str) -> None:
    with pytest.raises(KernelChoiceError, match=match) as err:
        parse_overrides(text)
    assert "select-kernels" in str(err.value)
    assert isinstance(err.value, LpccError) and isinstance(err.value, ValueError)


def test_overrides_from_the_python_api() -> None:
    d = {"layers.0.*": "dense", "*.mlp.*": "lut"}
    assert normalize_overrides(d) == [("layers.0.*", "dense"), ("*.mlp.*", "lut")]
    assert normalize_overrides(None) == []
    assert normalize_overrides("a=lut") == [("a", "lut")]
    assert normalize_overrides([("a", "dense")]) == [("a", "dense")]
    text = format_overrides(normalize_overrides(d))
    assert text == "layers.0.*=dense,*.mlp.*=lut"
    assert parse_overrides(text) == normalize_overrides(d)  # round trip
    with pytest.raises(KernelChoiceError, match="unknown kernel kind 'LUT'"):
        normalize_overrides({"a": "LUT"})
    with pytest.raises(KernelChoiceError, match="holds ',' or '='"):
        normalize_overrides({"a,b": "lut"})
    with pytest.raises(KernelChoiceError, match="expected str pattern and kind"):
        normalize_overrides({"a": 3})  # type: ignore[dict-item]
    with pytest.raises(KernelChoiceError, match="expected a dict"):
        normalize_overrides([("a", "lut", "x")])  # type: ignore[list-item]


# -- the pass -----------------------------------------------------------------------


def module_text() -> str:
    """Four quantized layers; x has 1 row, xp 16 rows, xd a dynamic count.

    a: int2 (LUT), b: int8 (dequant), c: uint3 (LUT), d: a float (dequant).
    """

    def layer(name: str, wt: str, x: str, xt: str, rows: str, dims: str = "") -> str:
        return f"""
  %{name}_q = lp.constant {{lp.name = "{name}.weight"}} splat 1 : tensor<2x8x{wt}>
  %{name}_dq = lp.dequantize %{name}_q scale %s block [1, 8] : (tensor<2x8x{wt}>, tensor<2x1xf16>) -> tensor<2x8xf32>
  %{name} = lp.matmul %{x}, %{name}_dq transpose_b{dims} : ({xt}, tensor<2x8xf32>) -> tensor<{rows}x2xf32>"""  # noqa: E501

    body = "".join(
        [
            layer("a", "!lp.int<2>", "x", "tensor<1x8xf32>", "1"),
            layer("b", "!lp.int<8>", "xp", "tensor<16x8xf32>", "16"),
            layer(
                "c", "!lp.uint<3>", "xd", "tensor<?x8xf32>", "?", ' {lp.dims = "s0,2"}'
            ),
            layer("d", "!lp.float<2,1,finite>", "x", "tensor<1x8xf32>", "1"),
        ]
    )
    return f"""
func.func @main(%x: tensor<1x8xf32>, %xp: tensor<16x8xf32>, %xd: tensor<?x8xf32> {{lp.dims = "s0,8"}}) -> (tensor<1x2xf32>, tensor<16x2xf32>, tensor<?x2xf32>, tensor<1x2xf32>) {{
  %s = lp.constant splat 0.5 : tensor<2x1xf16>{body}
  func.return %a, %b, %c, %d : tensor<1x2xf32>, tensor<16x2xf32>, tensor<?x2xf32>, tensor<1x2xf32>
}}
"""  # noqa: E501


def kernels(target: str = "cpu", override: str = "") -> dict[str, str | None]:
    module = parse_module(module_text())
    SelectKernels(target=target, override=override).apply(context(), module)
    verify_module(module)
    out = {}
    for op in module.walk():
        if isinstance(op, lp.MatmulOp):
            attr = op.attributes.get("lp.kernel")
            assert op.result.name_hint is not None
            out[op.result.name_hint] = (
                attr.data if isinstance(attr, StringAttr) else None
            )
    return out


def test_pass_applies_the_rule() -> None:
    want = {"a": "lut", "b": "dequant", "c": "lut", "d": "dequant"}
    assert kernels() == want
    assert kernels("reference") == want
    assert kernels("cuda") == dict.fromkeys(want, "dequant")


def test_pass_overrides() -> None:
    assert kernels(override="b.*=lut,a.*=dense, *=dequant") == {
        "a": "dense",
        "b": "lut",
        "c": "dequant",
        "d": "dequant",
    }
    # First match wins: "*" before "a.*" takes everything.
    assert set(kernels(override="*=dense,a.*=lut").values()) == {"dense"}


def test_pass_errors() -> None:
    with pytest.raises(KernelChoiceError, match="option target: unknown target"):
        SelectKernels(target="gpu")
    with pytest.raises(KernelChoiceError, match="option override"):
        SelectKernels(override="a.*=fastest")
    with pytest.raises(
        KernelChoiceError,
        match=r"'d\.\*'=lut matches weight d\.weight, which cannot use the LUT "
        r"kernel: f4e2m1 is not an integer type",
    ):
        kernels(override="d.*=lut")
    assert get_all_passes()["select-kernels"]() is SelectKernels


def test_dequant_after_group_gemm_follows_the_tags() -> None:
    """dense stays a matmul; the others become group GEMMs carrying lp.kernel."""
    module = parse_module(module_text())
    SelectKernels(override="b.*=dense").apply(context(), module)
    DequantAfterGroupGemm().apply(context(), module)
    (mm,) = [op for op in module.walk() if isinstance(op, lp.MatmulOp)]
    assert mm.result.name_hint == "b"
    tags = {
        op.attributes["lp.name"].data: op.attributes["lp.kernel"].data  # type: ignore[attr-defined]
        for op in module.walk()
        if isinstance(op, lowp.GroupMatmulOp)
    }
    assert tags == {"a.weight": "lut", "c.weight": "lut", "d.weight": "dequant"}


def test_short_last_group_never_gets_lut() -> None:
    """LUT needs whole groups (G | K; lut-gemm leaves the others as group GEMMs):
    the rule gives such a layer "dequant", so the tag on the group GEMM that
    remains says what runs; an explicit lut override fails, naming the weight."""
    text = """
func.func @main(%x: tensor<1x12xf32>) -> tensor<1x2xf32> {
  %s = lp.constant splat 0.5 : tensor<2x2xf16>
  %q = lp.constant {lp.name = "short.weight"} splat 1 : tensor<2x12x!lp.int<2>>
  %dq = lp.dequantize %q scale %s block [1, 8] : (tensor<2x12x!lp.int<2>>, tensor<2x2xf16>) -> tensor<2x12xf32>
  %y = lp.matmul %x, %dq transpose_b : (tensor<1x12xf32>, tensor<2x12xf32>) -> tensor<1x2xf32>
  func.return %y : tensor<1x2xf32>
}
"""  # noqa: E501
    module = parse_module(text)
    SelectKernels(target="cpu").apply(context(), module)
    (mm,) = [op for op in module.walk() if isinstance(op, lp.MatmulOp)]
    assert mm.attributes["lp.kernel"] == StringAttr("dequant")
    DequantAfterGroupGemm().apply(context(), module)
    get_all_passes()["lut-gemm"]()().apply(context(), module)
    (gm,) = [op for op in module.walk() if isinstance(op, lowp.GroupMatmulOp)]
    assert gm.attributes["lp.kernel"] == StringAttr("dequant")
    with pytest.raises(
        KernelChoiceError,
        match=r"'\*'=lut matches weight short\.weight, which cannot use the LUT "
        r"kernel: K = 12 is not a multiple of its group size 8",
    ):
        SelectKernels(override="*=lut").apply(context(), parse_module(text))
