"""lp element types and attributes, and their mapping to `lpcc.ir.dtypes`.

The IR spells each element type once:

* f32, f16, bf16 and i1 (bool) are the builtin MLIR types;
* every other integer is `!lp.int<b>` / `!lp.uint<b>`;
* every other float is `!lp.float<e,m,variant>`, and the MX scale `!lp.e8m0`.

`to_attr` and `to_dtype` convert both ways; the `DType` they return is the
only thing that knows codecs and ranges. Tensors are builtin `tensor<...>`
whose optional encoding is a `#lp.layout<...>` (one tile of a Tilus layout,
repeated over the tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    BFloat16Type,
    Float16Type,
    Float32Type,
    IntAttr,
    IntegerType,
    NoneAttr,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Data, ParametrizedAttribute, TypeAttribute
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from lpcc.errors import DTypeError, IRError, LayoutError
from lpcc.ir.dtypes import VARIANTS, DType, E8M0Type, FloatType, IntType
from lpcc.ir.layout import Layout

DYNAMIC = DYNAMIC_INDEX  # a dynamic dimension ("?"); builders also take -1/None


class _LpIntBase(ParametrizedAttribute, TypeAttribute):
    width: IntAttr
    SIGNED: ClassVar[bool]

    def __init__(self, width: int) -> None:
        super().__init__(IntAttr(width))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        start = parser.pos
        with parser.in_angle_brackets():
            width = parser.parse_integer(allow_boolean=False, allow_negative=False)
        try:
            _check_int(width, cls.SIGNED)
        except VerifyException as err:
            parser.raise_error(str(err), start, parser.pos)
        return (IntAttr(width),)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.width.data}>")

    def verify(self) -> None:
        _check_int(self.width.data, self.SIGNED)


def _check_int(width: int, signed: bool) -> None:
    try:
        IntType(width, signed)
    except DTypeError as err:
        raise VerifyException(str(err)) from None
    if width == 1 and not signed:
        raise VerifyException("!lp.uint<1> is spelled i1")


@irdl_attr_definition
class LpIntType(_LpIntBase):
    """`!lp.int<b>`: a two's-complement integer of b bits."""

    name = "lp.int"
    SIGNED: ClassVar[bool] = True


@irdl_attr_definition
class LpUIntType(_LpIntBase):
    """`!lp.uint<b>`: an unsigned integer of b bits (b = 1 is spelled i1)."""

    name = "lp.uint"
    SIGNED: ClassVar[bool] = False


@irdl_attr_definition
class LpFloatType(ParametrizedAttribute, TypeAttribute):
    """`!lp.float<e,m,variant>`: see `lpcc.ir.dtypes.FloatType`."""

    name = "lp.float"
    exp: IntAttr
    man: IntAttr
    variant: StringAttr

    def __init__(self, exp: int, man: int, variant: str) -> None:
        super().__init__(IntAttr(exp), IntAttr(man), StringAttr(variant))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            exp = parser.parse_integer(allow_boolean=False, allow_negative=False)
            parser.parse_punctuation(",")
            man = parser.parse_integer(allow_boolean=False, allow_negative=False)
            parser.parse_punctuation(",")
            pos = parser.pos
            variant = parser.parse_identifier()
            if variant not in VARIANTS:
                parser.raise_error(
                    f"float variant must be one of {', '.join(VARIANTS)}", pos
                )
        try:
            _check_float((exp, man, variant))
        except VerifyException as err:
            parser.raise_error(str(err), pos, parser.pos)
        return (IntAttr(exp), IntAttr(man), StringAttr(variant))

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.exp.data},{self.man.data},{self.variant.data}>")

    def verify(self) -> None:
        _check_float((self.exp.data, self.man.data, self.variant.data))


def _check_float(spec: tuple[int, int, str]) -> None:
    try:
        FloatType(*spec)
    except DTypeError as err:
        raise VerifyException(str(err)) from None
    if spec in _BUILTIN_FLOATS:
        raise VerifyException(
            f"!lp.float<{spec[0]},{spec[1]},{spec[2]}> is spelled "
            f"{_BUILTIN_FLOATS[spec]}"
        )


@irdl_attr_definition
class LpE8M0Type(ParametrizedAttribute, TypeAttribute):
    """`!lp.e8m0`: the OCP MX power-of-two scale."""

    name = "lp.e8m0"


@irdl_attr_definition
class LayoutAttr(Data[Layout]):
    """`#lp.layout<shape=[..], modes=[[..], ..], spatial=[..], local=[..]>`."""

    name = "lp.layout"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> Layout:
        def int_list() -> list[int]:
            return parser.parse_comma_separated_list(
                parser.Delimiter.SQUARE, lambda: parser.parse_integer(False)
            )

        start = parser.pos
        with parser.in_angle_brackets():
            fields: dict[str, object] = {}
            for i, key in enumerate(("shape", "modes", "spatial", "local")):
                if i:
                    parser.parse_punctuation(",")
                parser.parse_keyword(key)
                parser.parse_punctuation("=")
                if key == "modes":
                    fields[key] = parser.parse_comma_separated_list(
                        parser.Delimiter.SQUARE, int_list
                    )
                else:
                    fields[key] = int_list()
        modes: list[list[int]] = fields["modes"]  # type: ignore[assignment]
        try:
            layout = Layout.from_modes(
                modes,
                fields["spatial"],  # type: ignore[arg-type]
                fields["local"],  # type: ignore[arg-type]
            )
            if list(layout.shape) != fields["shape"]:
                raise LayoutError(
                    f"shape {fields['shape']} is not the product of modes {modes}"
                )
        except LayoutError as err:
            parser.raise_error(str(err), start, parser.pos)
        return layout

    def print_parameter(self, printer: Printer) -> None:
        printer.print_string(str(self.data)[len("layout") :])


# -- DType <-> attribute ----------------------------------------------------------

_BUILTIN_FLOATS: dict[tuple[int, int, str], Attribute] = {
    (8, 23, "ieee"): Float32Type(),
    (5, 10, "ieee"): Float16Type(),
    (8, 7, "ieee"): BFloat16Type(),
}
_I1 = IntegerType(1)


def to_attr(dt: DType) -> Attribute:
    """The IR spelling of an element type."""
    if isinstance(dt, IntType):
        if dt.bits == 1 and not dt.signed:
            return _I1
        return LpIntType(dt.bits) if dt.signed else LpUIntType(dt.bits)
    if isinstance(dt, FloatType):
        builtin = _BUILTIN_FLOATS.get((dt.exp, dt.man, dt.variant))
        return (
            builtin if builtin is not None else LpFloatType(dt.exp, dt.man, dt.variant)
        )
    if isinstance(dt, E8M0Type):
        return LpE8M0Type()
    raise IRError(f"no IR spelling for element type {dt!r}")


def to_dtype(attr: Attribute) -> DType:
    """The element type an IR type attribute names, or `IRError`."""
    if isinstance(attr, LpIntType | LpUIntType):
        return IntType(attr.width.data, attr.SIGNED)
    if isinstance(attr, LpFloatType):
        return FloatType(attr.exp.data, attr.man.data, attr.variant.data)
    if isinstance(attr, LpE8M0Type):
        return E8M0Type()
    if attr == _I1:
        return IntType(1, False)
    for spec, builtin in _BUILTIN_FLOATS.items():
        if attr == builtin:
            return FloatType(*spec)
    raise IRError(
        f"{attr} is not an lp element type; use f32/f16/bf16, i1, !lp.int<b>, "
        "!lp.uint<b>, !lp.float<e,m,variant> or !lp.e8m0"
    )


def tensor_type(
    dt: DType | Attribute, shape: Sequence[int | None], layout: Layout | None = None
) -> TensorType:
    """`tensor<shape x dt>` with an optional layout encoding; -1 is dynamic."""
    elem = to_attr(dt) if isinstance(dt, DType) else dt
    encoding: Attribute = NoneAttr() if layout is None else LayoutAttr(layout)
    dims = [DYNAMIC if d is None or d in (-1, DYNAMIC) else int(d) for d in shape]
    return TensorType(elem, dims, encoding)


def layout_of(t: TensorType) -> Layout | None:
    """The layout a tensor type carries, if any."""
    return t.encoding.data if isinstance(t.encoding, LayoutAttr) else None


def check_tensor_type(t: Attribute, what: str) -> TensorType:
    """Raise VerifyException unless `t` is a well-formed lp tensor type."""
    if not isinstance(t, TensorType):
        raise VerifyException(f"{what} must be a tensor, got {t}")
    try:
        to_dtype(t.element_type)
    except IRError as err:
        raise VerifyException(f"{what}: {err}") from err
    shape = t.get_shape()
    if any(d < 0 and d != DYNAMIC for d in shape):
        raise VerifyException(f"{what}: negative dimension in {t}")
    if isinstance(t.encoding, NoneAttr):
        return t
    if not isinstance(t.encoding, LayoutAttr):
        raise VerifyException(
            f"{what}: tensor encoding must be #lp.layout, got {t.encoding}"
        )
    layout = t.encoding.data
    if layout.rank != len(shape):
        raise VerifyException(
            f"{what}: layout of rank {layout.rank} on a rank-{len(shape)} tensor"
        )
    for d, (n, tile) in enumerate(zip(shape, layout.shape, strict=True)):
        if n != DYNAMIC and n % tile:
            raise VerifyException(
                f"{what}: dimension {d} of size {n} is not a multiple of the "
                f"layout tile {tile}"
            )
    return t
