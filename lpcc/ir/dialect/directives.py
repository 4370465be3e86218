"""Custom directives of the lp declarative assembly formats.

They keep the printed IR close to what a reader expects:

* `custom<IntList>($p)`: `[1, 0]` for a dense i64 array property;
* `custom<Int>($p)`: a bare integer for an `IntAttr` property;
* `custom<Keyword>($p)`: a bare identifier for a `StringAttr` property;
* `custom<Signature>(type(operands), type(results))`: `T` when every operand
  and the result have type T, `T -> R` for one operand, else `(A, B) -> R`;
* `custom<Payload>($data, type($result))`: `splat <value> : T` or
  `dense "0x..." : T` for a constant's packed bytes (see `ConstantOp`).
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseArrayBase,
    IntAttr,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.irdl import IRDLOperation
from xdsl.irdl.declarative_assembly_format import (
    AttributeVariable,
    CustomDirective,
    ParsingState,
    PrintingState,
    TypeDirective,
    irdl_custom_directive,
)
from xdsl.parser import Parser
from xdsl.printer import Printer

from lpcc.errors import LpccError
from lpcc.ir.dialect.types import to_dtype
from lpcc.ir.dtypes import DType


def int_array(values: list[int] | tuple[int, ...]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, list(values))


@irdl_custom_directive
class IntList(CustomDirective):
    values: AttributeVariable

    def parse(self, parser: Parser, state: ParsingState) -> None:
        values = parser.parse_comma_separated_list(
            Parser.Delimiter.SQUARE, lambda: parser.parse_integer(allow_boolean=False)
        )
        self.values.set(state, int_array(values))

    def print(self, printer: Printer, state: PrintingState, op: IRDLOperation) -> None:
        state.print_whitespace(printer)
        attr = self.values.get(op)
        assert isinstance(attr, DenseArrayBase)
        printer.print_string("[" + ", ".join(str(v) for v in attr.get_values()) + "]")


@irdl_custom_directive
class Int(CustomDirective):
    value: AttributeVariable

    def parse(self, parser: Parser, state: ParsingState) -> None:
        self.value.set(state, IntAttr(parser.parse_integer(allow_boolean=False)))

    def print(self, printer: Printer, state: PrintingState, op: IRDLOperation) -> None:
        state.print_whitespace(printer)
        attr = self.value.get(op)
        assert isinstance(attr, IntAttr)
        printer.print_string(str(attr.data))


@irdl_custom_directive
class Keyword(CustomDirective):
    value: AttributeVariable

    def parse(self, parser: Parser, state: ParsingState) -> None:
        self.value.set(state, StringAttr(parser.parse_identifier()))

    def print(self, printer: Printer, state: PrintingState, op: IRDLOperation) -> None:
        state.print_whitespace(printer)
        attr = self.value.get(op)
        assert isinstance(attr, StringAttr)
        printer.print_string(attr.data)


@irdl_custom_directive
class Signature(CustomDirective):
    operands: TypeDirective
    results: TypeDirective

    def parse(self, parser: Parser, state: ParsingState) -> None:
        if parser.parse_optional_punctuation("(") is not None:
            ins = []
            if parser.parse_optional_punctuation(")") is None:
                ins = parser.parse_comma_separated_list(
                    Parser.Delimiter.NONE, parser.parse_type
                )
                parser.parse_punctuation(")")
            parser.parse_punctuation("->")
            result = parser.parse_type()
        else:
            count = sum(len(group) for group in state.operands if group)
            pos = parser.pos
            first = parser.parse_type()
            if parser.parse_optional_punctuation("->") is not None:
                if count != 1:
                    parser.raise_error(
                        f"{count} operands: write their types as (T1, T2, ...) -> R",
                        pos,
                    )
                ins, result = [first], parser.parse_type()
            else:
                ins, result = [first] * count, first
        self.operands.set(state, ins)
        self.results.set(state, [result])

    def print(self, printer: Printer, state: PrintingState, op: IRDLOperation) -> None:
        state.print_whitespace(printer)
        ins = list(self.operands.get(op))
        (result,) = self.results.get(op)
        if ins and all(t == result for t in ins):
            printer.print_attribute(result)
            return
        if len(ins) == 1:
            printer.print_attribute(ins[0])
        else:
            printer.print_string("(")
            printer.print_list(ins, printer.print_attribute)
            printer.print_string(")")
        printer.print_string(" -> ")
        printer.print_attribute(result)


@irdl_custom_directive
class Payload(CustomDirective):
    """A constant's packed bytes with its type: `splat V : T` or `dense "0x.." : T`.

    A splat holds one element and is printed as its value when that value
    parses back to the same code, otherwise as the element's hex bytes.
    """

    data: AttributeVariable
    result: TypeDirective

    def parse(self, parser: Parser, state: ParsingState) -> None:
        pos = parser.pos
        form = parser.parse_identifier()
        if form not in ("splat", "dense"):
            parser.raise_error("expected 'splat' or 'dense'", pos)
        literal_pos = parser.pos
        hex_text = parser.parse_optional_str_literal()
        number = None
        if hex_text is None:
            if form == "dense":
                parser.raise_error("dense payloads are hex strings", literal_pos)
            number = parser.parse_number()
        parser.parse_punctuation(":")
        result_type = parser.parse_type()
        if hex_text is not None:
            if not hex_text.startswith("0x"):
                parser.raise_error("hex payload must start with 0x", literal_pos)
            try:
                data = bytes.fromhex(hex_text[2:])
            except ValueError:
                parser.raise_error("payload is not valid hex", literal_pos)
        else:
            if not isinstance(result_type, TensorType):
                parser.raise_error(f"lp.constant makes a tensor, not {result_type}")
            try:
                dt = to_dtype(result_type.element_type)
                code = dt.encode(np.array([number], np.float64))
                data = dt.pack(code).tobytes()
            except LpccError as err:
                parser.raise_error(f"cannot encode {number}: {err}", literal_pos)
        self.data.set(state, BytesAttr(data))
        self.result.set(state, [result_type])

    def print(self, printer: Printer, state: PrintingState, op: IRDLOperation) -> None:
        state.print_whitespace(printer)
        attr = self.data.get(op)
        (result_type,) = self.result.get(op)
        assert isinstance(attr, BytesAttr) and isinstance(result_type, TensorType)
        data = attr.data
        dt = to_dtype(result_type.element_type)
        if is_splat_payload(data, dt, result_type):
            printer.print_string("splat ")
            printer.print_string(_splat_text(dt, data))
        else:
            printer.print_string(f'dense "0x{data.hex().upper()}"')
        printer.print_string(" : ")
        printer.print_attribute(result_type)


def is_splat_payload(data: bytes, dt: DType, t: TensorType) -> bool:
    """Whether a constant's payload is one element standing for all of them.

    The one definition `ConstantOp` and its printer share; a one-element
    tensor counts as a splat (both readings give the same values). When the
    dense payload is as short as one element (two int4 codes fit in the byte
    one needs), the payload is dense: `from_codes` never writes such a splat.
    """
    shape = t.get_shape()
    numel = int(np.prod(shape)) if all(d >= 0 for d in shape) else -1
    if numel > 1 and dt.nbytes(numel) == dt.nbytes(1):
        return False
    return numel != 0 and len(data) == dt.nbytes(1)


def _splat_text(dt: DType, data: bytes) -> str:
    """The shortest literal that encodes back to the splat's code."""
    code = dt.unpack(np.frombuffer(data, np.uint8), 1)
    value = dt.decode(code)[0]
    candidates = []
    if np.isfinite(value):
        if float(value).is_integer() and abs(value) < 2**53:
            suffix = "" if dt.kind == "int" else ".0"
            candidates.append(f"{int(value)}{suffix}")
        candidates += [str(value), repr(float(value))]
    # MLIR float literals need a '.': 1e-05 must print as 1.0e-05.
    candidates = [
        t.replace("e", ".0e", 1) if "e" in t and "." not in t else t for t in candidates
    ]
    for text in candidates:
        if np.array_equal(dt.encode(np.array([float(text)])), code):
            return text
    return f'"0x{data.hex().upper()}"'
