"""Dense bit packing, checked against a big-integer reference packer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lpcc
from lpcc.ir.packing import pack_bits, packed_nbytes, unpack_bits


def reference_pack(codes: list[int], bits: int) -> bytes:
    """The definition: element i at bits [i*b, (i+1)*b) of one little-endian int."""
    stream = 0
    for i, c in enumerate(codes):
        stream |= c << (i * bits)
    return stream.to_bytes((len(codes) * bits + 7) // 8, "little")


@st.composite
def codes_and_bits(draw: st.DrawFn, max_bits: int = 16) -> tuple[np.ndarray, int]:
    bits = draw(st.integers(1, max_bits))
    count = draw(st.integers(0, 70))
    values = draw(st.lists(st.integers(0, 2**bits - 1), min_size=count, max_size=count))
    return np.array(values, dtype=np.uint64), bits


@given(codes_and_bits())
def test_pack_matches_reference_and_round_trips(case: tuple[np.ndarray, int]) -> None:
    codes, bits = case
    packed = pack_bits(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.tobytes() == reference_pack([int(c) for c in codes], bits)
    back = unpack_bits(packed, bits, codes.size)
    assert back.dtype == lpcc.uint_(bits).code_dtype
    assert np.array_equal(back, codes)


@pytest.mark.parametrize("bits", [17, 20, 23, 24, 31, 32, 33, 40, 57, 63, 64])
def test_wide_widths(bits: int) -> None:
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, 37, dtype=np.uint64, endpoint=False)
    packed = pack_bits(codes, bits)
    assert packed.tobytes() == reference_pack([int(c) for c in codes], bits)
    assert np.array_equal(unpack_bits(packed, bits, 37), codes)


def test_known_answer_uint3() -> None:
    """Worked by hand: 101 110 011 100 111 001 000 100 read LSB first."""
    t = lpcc.uint_(3)
    packed = t.pack(np.array([5, 3, 6, 1, 7, 2, 0, 4], np.uint8))
    assert packed.tolist() == [0x9D, 0x73, 0x81]
    assert t.unpack(packed, 8).tolist() == [5, 3, 6, 1, 7, 2, 0, 4]


@given(st.integers(1, 16), st.data())
def test_signed_values_round_trip_through_twos_complement(
    bits: int, data: st.DataObject
) -> None:
    t = lpcc.int_(bits)
    values = data.draw(st.lists(st.integers(t.min, t.max), max_size=50))
    codes = t.encode(np.array(values, np.int64))
    back = t.decode_int(t.unpack(t.pack(codes), len(values)))
    assert back.tolist() == values


def test_shapes_tail_and_extra_bytes() -> None:
    t = lpcc.uint_(5)
    codes = np.arange(30, dtype=np.uint8).reshape(5, 6) % 32
    packed = t.pack(codes)  # C order
    assert packed.size == packed_nbytes(30, 5) == 19
    assert np.array_equal(t.unpack(packed, 30).reshape(5, 6), codes)
    padded = np.concatenate([packed, np.array([0xFF, 0xFF], np.uint8)])
    assert np.array_equal(t.unpack(padded, 30), codes.reshape(-1))
    assert np.array_equal(t.unpack(packed.tobytes(), 7), codes.reshape(-1)[:7])
    # the unused high bits of the last byte are zero: 30 * 5 = 150 bits
    assert packed[-1] >> (150 % 8) == 0
    assert t.pack(np.zeros(0, np.uint8)).size == 0


def test_errors() -> None:
    t = lpcc.uint_(3)
    with pytest.raises(
        lpcc.CodecError, match="code 8 at flat index 2 does not fit in 3 bits"
    ):
        t.pack(np.array([1, 2, 8]))
    with pytest.raises(lpcc.CodecError, match="code -1 at flat index 0"):
        t.pack(np.array([-1, 2]))
    with pytest.raises(lpcc.CodecError, match="integer array"):
        t.pack(np.array([0.5]))
    with pytest.raises(
        lpcc.CodecError,
        match="9 elements of 3 bits need 4 bytes, but the buffer holds 3",
    ):
        t.unpack(np.zeros(3, np.uint8), 9)
    with pytest.raises(lpcc.CodecError, match="must be uint8"):
        t.unpack(np.zeros(3, np.int32), 2)
    with pytest.raises(lpcc.CodecError, match="count must be >= 0"):
        t.unpack(np.zeros(3, np.uint8), -1)
