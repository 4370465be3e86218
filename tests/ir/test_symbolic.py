"""Size expressions of dynamic dimensions (hand-derived values)."""

import pytest

from lpcc.ir.symbolic import (
    ShapeError,
    bind,
    evaluate,
    format_dims,
    parse_dims,
    symbols,
)


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("s0", 7),
        ("2*s0 + 1", 15),
        ("(s0//2)", 3),
        ("s0**2 - s1", 46),
        ("Max(1, s0 - 10)", 1),
        ("Min(s0, s1)", 3),
        ("Mod(s0, 4)", 3),
        ("-s1 + 10", 7),
        (5, 5),
    ],
)
def test_evaluate(expr: str | int, value: int) -> None:
    assert evaluate(expr, {"s0": 7, "s1": 3}) == value


@pytest.mark.parametrize("bad", ["__import__('os')", "s0.real", "1.5", "s0 / 2", "("])
def test_evaluate_rejects_anything_else(bad: str) -> None:
    with pytest.raises(ShapeError, match="size expression"):
        evaluate(bad, {"s0": 1})


def test_unbound_symbol_is_named() -> None:
    with pytest.raises(ShapeError, match="'s9'"):
        evaluate("s9 + 1", {})


def test_dims_text_round_trip() -> None:
    dims = (2, "s0", "Max(1, s0)", "2*s1")
    assert parse_dims(format_dims(dims)) == (2, "s0", "Max(1,s0)", "2*s1")
    assert symbols("Max(1, s0) * s1") == {"s0", "s1"}


def test_bind_then_check() -> None:
    env: dict[str, int] = {}
    bind((2, "s0"), (2, 5), env, "ids")
    assert env == {"s0": 5}
    bind(("s0", "2*s0"), (5, 10), env, "mask")
    with pytest.raises(ShapeError, match=r"mask: dimension 1 is 9, expected 10"):
        bind(("s0", "2*s0"), (5, 9), env, "mask")
    with pytest.raises(ShapeError, match="expected rank 2"):
        bind((2, "s0"), (2, 5, 1), env, "ids")


@pytest.mark.parametrize("huge", ["2**2**2**99", "s0**100", "2**-1", "(s0*s0)**64"])
def test_huge_sizes_fail_fast(huge: str) -> None:
    with pytest.raises(ShapeError):
        evaluate(huge, {"s0": 1 << 20})
